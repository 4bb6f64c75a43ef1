//! `bypass bench echo --topo veth`: each libOS measured across a veth pair between two network
//! namespaces, next to plain Linux sockets on the same pair, in one run.
//!
//! Every target is a pair of ends: the echo server in namespace A and the client in namespace
//! B. The reference, `linux`, is plain `std::net` sockets at both ends. Each libOS is measured
//! as the server with a spinning kernel-socket client (half of each round trip is then the
//! kernel's), and the user-space-stack libOSes (`xdp`, `packet`) also at *both* ends: the
//! comparison the datapath is for, kernel TCP against our stack on both sides of the wire.
//!
//! Each target and round gets a fresh topology ([`Topology::up`]): no state carries over from
//! one target to the next, and a kernel address exists only on a side whose end uses kernel
//! sockets (the user-space stack owns the address otherwise; see `crate::topo`).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bypass::{LibOs, LibOsName, PollMode, QToken, QValue, SocketKind};
use bypass_devices::netns;
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_echo::{Latency, Limit, ServeOptions, Server};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::FileConfig;
use crate::error::CliError;
use crate::ping_pong::{
    api_ping_pong, bulk_pattern, check_bulk, fill_bulk, new_histogram, socket_echo,
    socket_ping_pong, BULK_CHUNK, BULK_PERIOD,
};
use crate::sys;
use crate::topo::{need_root, NetArgs};

/// `bench echo --topo`: where the benchmark runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopoKind {
    /// Two network namespaces joined by a veth pair, made and removed by the benchmark.
    Veth,
}

/// What `bench echo --topo veth` measures.
pub(crate) struct VethBench {
    /// User-space stack or kernel libOSes; `linux` (plain sockets) is always measured first.
    pub libs: Vec<LibOsName>,
    pub size: usize,
    pub count: u64,
    pub rounds: u32,
    pub warmup: u64,
    /// Bytes echoed in the bulk measurement.
    pub bulk_bytes: u64,
    /// Leave checksum and segmentation offloads on along the veth pair
    /// ([`TopologySpec::offloads_off`] false): TCP packets of up to 64 KiB cross it whole.
    pub pair_offloads: bool,
    pub json: bool,
}

/// One end of a measured pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// Plain `std::net` sockets, spinning.
    Linux,
    /// A bypass libOS.
    Bypass(LibOsName),
}

impl End {
    fn name(self) -> String {
        match self {
            End::Linux => "linux".into(),
            End::Bypass(l) => l.to_string(),
        }
    }

    /// Whether this end uses the kernel's TCP/IP, so its side of the pair needs the kernel
    /// address (the user-space stack owns it otherwise).
    fn kernel_stack(self) -> bool {
        matches!(
            self,
            End::Linux | End::Bypass(LibOsName::Kernel | LibOsName::Uring)
        )
    }
}

/// The echo server (namespace A) and client (namespace B) of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Target {
    server: End,
    client: End,
}

struct Sample {
    histogram: Histogram<u64>,
    messages: u64,
    bulk_bytes: u64,
    bulk_ns: u64,
}

#[derive(Serialize)]
struct VethRow {
    /// The echo server's end (namespace A).
    server: String,
    /// The client's end (namespace B).
    client: String,
    messages: u64,
    latency_us: Latency,
    /// p50 over the `linux` reference's p50.
    p50_vs_linux: f64,
    bulk_mb_per_s: f64,
    /// Bulk throughput over the `linux` reference's.
    bulk_vs_linux: f64,
}

#[derive(Serialize)]
struct VethReport {
    benchmark: &'static str,
    message_size: usize,
    rounds: u32,
    bulk_bytes: u64,
    /// Checksum and segmentation offloads were on along the veth pair.
    pair_offloads: bool,
    /// CPUs of the client (namespace B) and the server (namespace A), or null.
    pinned: Option<(usize, usize)>,
    results: Vec<VethRow>,
}

const PORT: u16 = 7000;
/// Pushes a bypass client's bulk echo keeps in flight, [`BULK_CHUNK`] bytes each.
const BULK_PUSHES: usize = 4;
/// Longest a client waits for the echo it is owed before it gives up.
const DEADLINE: Duration = Duration::from_secs(60);

/// The rows to measure: the `linux` reference, each libOS as the server with a kernel client,
/// and each user-space-stack libOS at both ends.
fn targets(libs: &[LibOsName]) -> Vec<Target> {
    let mut targets = vec![Target {
        server: End::Linux,
        client: End::Linux,
    }];
    let mut add = |t: Target| {
        if !targets.contains(&t) {
            targets.push(t);
        }
    };
    for &l in libs {
        add(Target {
            server: End::Bypass(l),
            client: End::Linux,
        });
    }
    for &l in libs {
        if !End::Bypass(l).kernel_stack() {
            add(Target {
                server: End::Bypass(l),
                client: End::Bypass(l),
            });
        }
    }
    targets
}

/// Runs the veth benchmark: for each target and round a fresh topology, the target's echo
/// server in namespace A and its client in namespace B.
pub(crate) fn bench_veth(file: &FileConfig, b: &VethBench) -> Result<(), CliError> {
    need_root("bypass bench echo --topo veth")?;
    if b.size == 0 || b.rounds == 0 || b.count < u64::from(b.rounds) {
        return Err(CliError::new(
            "--size must be positive and --count at least --rounds",
        ));
    }
    for l in &b.libs {
        if matches!(l, LibOsName::Sim | LibOsName::Tap) {
            return Err(CliError::new(format!(
                "--topo veth measures kernel, uring, xdp and packet; {l} has no veth side"
            )));
        }
    }
    let mut file = file.clone();
    file.bypass.poll = PollMode::Spin;
    let targets = targets(&b.libs);
    let cpus = sys::affinity()
        .map_err(|e| CliError::new(format!("sched_getaffinity: {e}")))?
        .cpus();
    let pinned = (cpus.len() >= 2).then(|| (cpus[0], cpus[1]));
    if pinned.is_none() {
        eprintln!("note: one CPU only: client and server share it, not pinned");
    }
    let mut samples: Vec<Sample> = targets
        .iter()
        .map(|_| Sample {
            histogram: new_histogram(),
            messages: 0,
            bulk_bytes: 0,
            bulk_ns: 0,
        })
        .collect();
    let per_round = b.count / u64::from(b.rounds);
    let bulk_per_round = (b.bulk_bytes / u64::from(b.rounds)).max(1);
    for round in 0..b.rounds {
        for (t, s) in targets.iter().zip(samples.iter_mut()) {
            let label = format!("{} server, {} client", t.server.name(), t.client.name());
            tracing::info!(round, target = %label, "measuring over veth");
            let r = one_round(&file, *t, b, per_round, bulk_per_round, pinned)
                .map_err(|e| e.context(format_args!("{label}, over veth")))?;
            s.histogram
                .add(&r.histogram)
                .expect("histograms with the same bounds merge");
            s.messages += r.messages;
            s.bulk_bytes += r.bulk_bytes;
            s.bulk_ns += r.bulk_ns;
        }
    }
    let mbps = |s: &Sample| s.bulk_bytes as f64 / (s.bulk_ns.max(1) as f64 / 1e9) / 1e6;
    let ref_p50 = samples[0].histogram.value_at_quantile(0.5).max(1) as f64;
    let ref_bulk = mbps(&samples[0]).max(f64::MIN_POSITIVE);
    let results = targets
        .iter()
        .zip(&samples)
        .map(|(t, s)| VethRow {
            server: t.server.name(),
            client: t.client.name(),
            messages: s.messages,
            latency_us: Latency::from_histogram(&s.histogram),
            p50_vs_linux: s.histogram.value_at_quantile(0.5) as f64 / ref_p50,
            bulk_mb_per_s: mbps(s),
            bulk_vs_linux: mbps(s) / ref_bulk,
        })
        .collect();
    let report = VethReport {
        benchmark: "tcp echo over a veth pair: server in namespace A, client in namespace B",
        message_size: b.size,
        rounds: b.rounds,
        bulk_bytes: b.bulk_bytes,
        pair_offloads: b.pair_offloads,
        pinned,
        results,
    };
    if b.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serialises")
        );
    } else {
        print_veth(&report);
    }
    Ok(())
}

fn print_veth(r: &VethReport) {
    println!(
        "{}\n{} B messages, {} rounds, bulk: {} MiB echoed over one connection",
        r.benchmark,
        r.message_size,
        r.rounds,
        r.bulk_bytes >> 20
    );
    match r.pinned {
        Some((c, s)) => println!("client on CPU {c}, server on CPU {s}, both busy-polling"),
        None => println!("not pinned (one CPU), both busy-polling"),
    }
    if r.pair_offloads {
        println!("veth pair with checksum and segmentation offloads on (64 KiB packets cross it)");
    }
    println!(
        "{:<7} {:<7} {:>9} {:>8} {:>8} {:>9} {:>10} {:>10} {:>11}",
        "server",
        "client",
        "messages",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "p50/linux",
        "bulk MB/s",
        "bulk/linux"
    );
    for row in &r.results {
        let l = &row.latency_us;
        println!(
            "{:<7} {:<7} {:>9} {:>8.2} {:>8.2} {:>9.2} {:>10.3} {:>10.1} {:>11.3}",
            row.server,
            row.client,
            row.messages,
            l.p50,
            l.p99,
            l.p999,
            row.p50_vs_linux,
            row.bulk_mb_per_s,
            row.bulk_vs_linux
        );
    }
}

/// The configuration of a bypass end on `iface` in `netns` owning `ip`/24.
fn end_config(
    file: &FileConfig,
    name: LibOsName,
    netns: &str,
    iface: &str,
    ip: Ipv4Addr,
) -> bypass::Config {
    let mut config = file.bypass.clone();
    config.libos = name;
    config.net.netns = Some(netns.to_string());
    config.net.iface = Some(iface.to_string());
    config.net.ip = Some(format!("{ip}/24"));
    config
}

fn pin(pinned: Option<usize>) -> Result<(), CliError> {
    pinned.map_or(Ok(()), sys::pin)
}

/// One measurement of one target on a topology of its own.
fn one_round(
    file: &FileConfig,
    target: Target,
    b: &VethBench,
    count: u64,
    bulk_bytes: u64,
    pinned: Option<(usize, usize)>,
) -> Result<Sample, CliError> {
    let spec = TopologySpec {
        offloads_off: !b.pair_offloads,
        ..TopologySpec::unique()
    };
    let topo = Topology::up(spec)
        .map_err(|e| CliError::new(format!("cannot create a veth topology: {e}")))?;
    let spec = topo.spec().clone();
    let ip_a = Ipv4Addr::from(spec.ip_a());
    let ip_b = Ipv4Addr::from(spec.ip_b());
    let server_addr = SocketAddrV4::new(ip_a, PORT);
    let addressing = |e: io::Error| CliError::new(format!("cannot set up addresses: {e}"));
    if target.server.kernel_stack() {
        topo.add_kernel_address_a().map_err(addressing)?;
    }
    if !target.client.kernel_stack() {
        topo.remove_kernel_address_b().map_err(addressing)?;
    }
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), CliError>>();
    thread::scope(|sc| {
        let stop = &stop;
        let spec = &spec;
        let server = sc.spawn(move || -> Result<(), CliError> {
            let started = (|| -> Result<Box<dyn FnOnce() -> Result<(), CliError>>, CliError> {
                pin(pinned.map(|(_, s)| s))?;
                match target.server {
                    End::Linux => {
                        netns::enter(&spec.ns_a)
                            .map_err(|e| CliError::new(format!("entering {}: {e}", spec.ns_a)))?;
                        let l = TcpListener::bind(server_addr).map_err(|e| {
                            CliError::new(format!("linux server on {server_addr}: {e}"))
                        })?;
                        Ok(Box::new(move || {
                            linux_echo_server(&l, stop)
                                .map_err(|e| CliError::new(format!("linux server: {e}")))
                        }))
                    }
                    End::Bypass(name) => {
                        let config = end_config(file, name, &spec.ns_a, &spec.dev_a, ip_a);
                        NetArgs::enter(&config)?;
                        let mut libos = LibOs::new(config).map_err(|e| {
                            CliError::from(e).context(format_args!("cannot start the libOS"))
                        })?;
                        let opts = ServeOptions {
                            max_connections: Some(2),
                            ..ServeOptions::tcp(server_addr)
                        };
                        let server = Server::bind(&mut libos, opts)?;
                        Ok(Box::new(move || {
                            server.run(&mut libos, Some(stop))?;
                            Ok(())
                        }))
                    }
                }
            })();
            match started {
                Ok(serve) => {
                    let _ = ready_tx.send(Ok(()));
                    serve()
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(CliError::new("the server did not start")));
                    Err(e)
                }
            }
        });
        let client = sc.spawn(move || -> Result<Sample, CliError> {
            let ready = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(CliError::new("the server thread ended")));
            ready?;
            pin(pinned.map(|(c, _)| c))?;
            match target.client {
                End::Linux => {
                    netns::enter(&spec.ns_b)
                        .map_err(|e| CliError::new(format!("entering {}: {e}", spec.ns_b)))?;
                    kernel_client(server_addr, b.size, count, b.warmup, bulk_bytes)
                        .map_err(|e| CliError::new(format!("kernel client in {}: {e}", spec.ns_b)))
                }
                End::Bypass(name) => {
                    let config = end_config(file, name, &spec.ns_b, &spec.dev_b, ip_b);
                    NetArgs::enter(&config)?;
                    let mut libos = LibOs::new(config).map_err(|e| {
                        CliError::from(e).context(format_args!("cannot start the client's libOS"))
                    })?;
                    bypass_client(&mut libos, server_addr, b.size, count, b.warmup, bulk_bytes)
                }
            }
        });
        let result = client
            .join()
            .unwrap_or_else(|_| Err(CliError::new("the client thread panicked")));
        stop.store(true, Ordering::Relaxed);
        let served = server
            .join()
            .unwrap_or_else(|_| Err(CliError::new("the server thread panicked")));
        let sample = result?;
        served?;
        drop(topo);
        Ok(sample)
    })
}

/// Plain sockets, spinning: echoes connections one after the other until `stop`.
fn linux_echo_server(l: &TcpListener, stop: &AtomicBool) -> io::Result<()> {
    l.set_nonblocking(true)?;
    let mut buf = vec![0u8; 256 << 10];
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => socket_echo(&mut s, &mut buf, Some(stop))?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The kernel-socket client in namespace B: a ping-pong connection, then a bulk connection.
fn kernel_client(
    server: SocketAddrV4,
    size: usize,
    count: u64,
    warmup: u64,
    bulk_bytes: u64,
) -> io::Result<Sample> {
    let connect = || -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&SocketAddr::V4(server), Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(s)
    };
    let mut s = connect()?;
    let (_, _, histogram) = socket_ping_pong(&mut s, size, Limit::Count(count), warmup)?;
    drop(s);
    // Bulk: send and read back at once over a second connection, every byte checked.
    let mut s = connect()?;
    let chunk = bulk_pattern();
    let mut buf = vec![0u8; 256 << 10];
    let (mut sent, mut received) = (0u64, 0u64);
    let t0 = Instant::now();
    while received < bulk_bytes {
        if sent < bulk_bytes {
            let off = (sent % BULK_PERIOD as u64) as usize;
            let n = ((bulk_bytes - sent) as usize).min(BULK_CHUNK);
            match s.write(&chunk[off..off + n]) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(io::Error::other("the server closed during the bulk echo")),
            Ok(n) => {
                check_bulk(&buf[..n], received)?;
                received += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if t0.elapsed() > DEADLINE {
            return Err(bulk_timeout(received, bulk_bytes));
        }
    }
    Ok(Sample {
        histogram,
        messages: count,
        bulk_bytes,
        bulk_ns: t0.elapsed().as_nanos() as u64,
    })
}

fn bulk_timeout(received: u64, total: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "bulk echo: {received} of {total} B after {} s",
            DEADLINE.as_secs()
        ),
    )
}

/// A bypass client in namespace B, doing what the kernel-socket client does through the queue
/// API: a ping-pong connection (push a message, pop until its echo is back, compare, record),
/// then a bulk echo with every byte checked.
fn bypass_client(
    libos: &mut LibOs,
    server: SocketAddrV4,
    size: usize,
    count: u64,
    warmup: u64,
    bulk_bytes: u64,
) -> Result<Sample, CliError> {
    let (_, _, histogram) = api_ping_pong(libos, server, size, Limit::Count(count), warmup)
        .map_err(|e| CliError::from(e).context(format_args!("ping-pong")))?;
    let bulk_ns = bypass_bulk(libos, server, bulk_bytes)
        .map_err(|e| CliError::from(e).context(format_args!("bulk echo")))?;
    Ok(Sample {
        histogram,
        messages: count,
        bulk_bytes,
        bulk_ns,
    })
}

/// Echoes `total` bytes over a new connection, up to [`BULK_PUSHES`] pushes of
/// [`BULK_CHUNK`] in flight while one pop waits; returns the nanoseconds it took.
fn bypass_bulk(libos: &mut LibOs, server: SocketAddrV4, total: u64) -> bypass::Result<u64> {
    let qd = libos.socket(SocketKind::Stream)?;
    let result = (|| {
        let qt = libos.connect(qd, server)?;
        libos.wait(qt, Some(DEADLINE))?.ok()?;
        let t0 = Instant::now();
        let (mut sent, mut received) = (0u64, 0u64);
        let mut pushes: Vec<QToken> = Vec::with_capacity(BULK_PUSHES + 1);
        let mut pop = libos.pop(qd)?;
        while received < total {
            while pushes.len() < BULK_PUSHES && sent < total {
                let n = (total - sent).min(BULK_CHUNK as u64) as usize;
                let mut sga = libos.sga_alloc(n)?;
                let mut at = sent;
                for seg in sga.segments_mut() {
                    let bytes = seg.as_mut_slice();
                    fill_bulk(bytes, at);
                    at += bytes.len() as u64;
                }
                pushes.push(libos.push(qd, sga)?);
                sent += n as u64;
            }
            pushes.push(pop);
            let (i, r) = libos.wait_any(&pushes, Some(DEADLINE))?;
            pop = pushes.pop().expect("the pop was pushed last");
            if i < pushes.len() {
                pushes.swap_remove(i);
                r.ok()?;
                continue;
            }
            match r.value {
                QValue::Popped { sga, .. } => {
                    let mut at = received;
                    for seg in sga.segments() {
                        check_bulk(seg.as_slice(), at).map_err(|e| {
                            bypass::Error::new(bypass::ErrorKind::InvalidArgument, e.to_string())
                        })?;
                        at += seg.len() as u64;
                    }
                    received = at;
                }
                QValue::EndOfStream => {
                    return Err(bypass::Error::new(
                        bypass::ErrorKind::ConnectionReset,
                        format!("the server closed after {received} of {total} B"),
                    ))
                }
                QValue::Failed(e) => return Err(e),
                other => {
                    return Err(bypass::Error::new(
                        bypass::ErrorKind::InvalidArgument,
                        format!("a pop completed with {other:?}"),
                    ))
                }
            }
            if received < total {
                pop = libos.pop(qd)?;
            }
        }
        for qt in pushes {
            libos.wait(qt, Some(DEADLINE))?.ok()?;
        }
        Ok(t0.elapsed().as_nanos() as u64)
    })();
    let _ = libos.close(qd);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_space_stacks_are_also_measured_at_both_ends() {
        let t = targets(&[LibOsName::Kernel, LibOsName::Xdp, LibOsName::Packet]);
        let pairs: Vec<(String, String)> = t
            .iter()
            .map(|t| (t.server.name(), t.client.name()))
            .collect();
        let expect = [
            ("linux", "linux"),
            ("kernel", "linux"),
            ("xdp", "linux"),
            ("packet", "linux"),
            ("xdp", "xdp"),
            ("packet", "packet"),
        ];
        assert_eq!(
            pairs,
            expect
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
    }
}
