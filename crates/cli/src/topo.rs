//! `bypass topo up|down`: a two-namespace veth topology to run bypass against the kernel on
//! one machine; the `--netns/--iface/--ip/--gateway` flags shared by `echo` and `bench`; and
//! `bypass bench echo --topo veth`, which measures each libOS across such a topology.
//!
//! ```text
//!   namespace bypass-N-a                     namespace bypass-N-b
//!   bypass-N-a (no kernel IPv4 address) <-veth-> bypass-N-b 10.77.S.2/24 (the kernel's)
//!   the user-space stack owns 10.77.S.1
//! ```
//!
//! Side A carries no kernel address on purpose: the user-space stack (AF_XDP, AF_PACKET)
//! sees frames *as well as* the kernel there, and a kernel owning the same address would answer
//! ARP and reset our TCP connections. S is derived from N (or `--subnet`), so `up` twice makes
//! the same topology.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bypass::{LibOs, LibOsName, PollMode};
use bypass_devices::netns;
use bypass_devices::topo::{fmt_ip, Topology, TopologySpec};
use bypass_echo::{Latency, ServeOptions, Server};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::FileConfig;
use crate::error::CliError;
use crate::{sys, Global};

// ----- shared network flags ------------------------------------------------------------------

/// Where a libOS's network lives: `net.*` of the configuration, from flags.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct NetArgs {
    /// Network namespace (under /run/netns) to run in (config key `net.netns`). For kernel
    /// and uring the thread that runs the libOS enters it; for xdp/packet/tap the libOS opens
    /// its interface there.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Interface driven by xdp/packet/tap (config key `net.iface`).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// The user-space stack's address and prefix, e.g. 10.77.1.1/24 (config key `net.ip`).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<String>,
    /// Where the user-space stack sends traffic outside its subnet (config key `net.gateway`).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
}

impl NetArgs {
    /// Whether no network flag was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.netns.is_none() && self.iface.is_none() && self.ip.is_none() && self.gateway.is_none()
    }

    /// Writes the given flags into `config.net` (flags win over the file) and checks them.
    pub(crate) fn apply(&self, config: &mut bypass::Config) -> Result<(), CliError> {
        let net = &mut config.net;
        if let Some(ns) = &self.netns {
            net.netns = Some(ns.clone());
        }
        if let Some(iface) = &self.iface {
            net.iface = Some(iface.clone());
        }
        if let Some(ip) = &self.ip {
            net.ip = Some(ip.clone());
        }
        if let Some(gw) = &self.gateway {
            net.gateway = Some(gw.clone());
        }
        config.validate().map_err(CliError::from)
    }

    /// Moves the calling thread into `config.net.netns`, if one is set. Threads it spawns
    /// afterwards start there too.
    pub(crate) fn enter(config: &bypass::Config) -> Result<(), CliError> {
        match &config.net.netns {
            Some(ns) => netns::enter(ns).map_err(|e| {
                CliError::new(format!("cannot enter network namespace '{ns}': {e}"))
                    .hint("create it with `bypass topo up` or `ip netns add NAME`; needs root")
            }),
            None => Ok(()),
        }
    }
}

/// The file's configuration with the network flags applied; enters `--netns` (or the file's
/// `net.netns`) on the calling thread, so kernel-socket libOSes run there too.
pub(crate) fn with_net(file: &FileConfig, net: &NetArgs) -> Result<FileConfig, CliError> {
    let mut file = file.clone();
    net.apply(&mut file.bypass)?;
    NetArgs::enter(&file.bypass)?;
    Ok(file)
}

/// `bench echo --topo`: where the benchmark runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TopoKind {
    /// Two network namespaces joined by a veth pair, made and removed by the benchmark.
    Veth,
}

/// A libOS name for `bench echo --libos`, where `linux` (plain sockets, always measured)
/// is accepted too and gives `None`.
pub(crate) fn parse_bench_libos(s: &str) -> Result<Option<LibOsName>, String> {
    if s == "linux" {
        return Ok(None);
    }
    crate::config::parse_libos(s).map(Some)
}

// ----- bypass topo ---------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create (or complete) the two-namespace veth topology and print how to use it.
    Up(TopoArgs),
    /// Remove the topology's namespaces (and with them the veth pair).
    Down(TopoArgs),
}

#[derive(Args, Debug)]
pub(crate) struct TopoArgs {
    /// Name of the topology: namespaces and interfaces are bypass-NAME-a and bypass-NAME-b
    /// (NAME: at most 6 letters, digits or '-').
    #[arg(long, value_name = "NAME", default_value = "demo")]
    name: String,
    /// N of the subnet 10.77.N.0/24 (1-254; default derived from the name).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    subnet: Option<u8>,
}

pub(crate) fn run(_global: &Global, cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Up(args) => up(&args),
        Command::Down(args) => down(&args),
    }
}

/// A subnet number in 1..=250 that depends only on the name (FNV-1a).
fn subnet_of(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h % 250) as u8 + 1
}

fn spec_of(args: &TopoArgs) -> Result<TopologySpec, CliError> {
    let subnet = args.subnet.unwrap_or_else(|| subnet_of(&args.name));
    TopologySpec::named(&format!("bypass-{}", args.name), subnet).map_err(|e| {
        CliError::new(format!("--name {}: {e}", args.name))
            .hint("use at most 6 letters, digits or '-', e.g. --name demo")
    })
}

fn need_root(what: &str) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            CliError::new(format!("{what} needs root (network namespaces and veth)"))
                .hint("run it with sudo"),
        );
    }
    Ok(())
}

fn up(args: &TopoArgs) -> Result<(), CliError> {
    need_root("bypass topo up")?;
    let spec = spec_of(args)?;
    let topo = Topology::up(spec).map_err(|e| {
        CliError::new(format!("cannot create the topology: {e}"))
            .hint("it needs iproute2 and ethtool (apt-get install iproute2 ethtool)")
    })?;
    let s = topo.keep();
    let (a, b) = (fmt_ip(s.ip_a()), fmt_ip(s.ip_b()));
    println!("topology '{}' is up (10.77.{}.0/24):", args.name, s.subnet);
    println!(
        "  namespace {:<16} interface {:<16} no kernel address: the user-space stack owns {a}",
        s.ns_a, s.dev_a
    );
    println!(
        "  namespace {:<16} interface {:<16} {b}/24, the kernel's",
        s.ns_b, s.dev_b
    );
    println!("try:");
    println!(
        "  bypass echo serve --libos xdp --netns {} --iface {} --ip {a}/24 --listen {a}:7000",
        s.ns_a, s.dev_a
    );
    println!("  ip netns exec {} ping -c 3 {a}", s.ns_b);
    println!(
        "  bypass echo run --libos kernel --netns {} --connect {a}:7000",
        s.ns_b
    );
    println!("  (--libos packet works the same way; tap needs no topology)");
    println!("remove it with: bypass topo down --name {}", args.name);
    Ok(())
}

fn down(args: &TopoArgs) -> Result<(), CliError> {
    need_root("bypass topo down")?;
    let spec = spec_of(args)?;
    let existed = [&spec.ns_a, &spec.ns_b]
        .iter()
        .filter(|ns| bypass_devices::topo::netns_exists(ns))
        .count();
    Topology::down(&spec).map_err(|e| CliError::new(format!("cannot remove the topology: {e}")))?;
    if existed == 0 {
        println!("topology '{}' was not up; nothing to remove", args.name);
    } else {
        println!(
            "topology '{}' removed (namespaces {} and {})",
            args.name, spec.ns_a, spec.ns_b
        );
    }
    Ok(())
}

// ----- bypass bench echo --topo veth ---------------------------------------------------------

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
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Plain `std::net` sockets on both sides.
    Linux,
    /// A bypass libOS as the echo server in namespace A.
    Bypass(LibOsName),
}

impl Target {
    fn name(self) -> String {
        match self {
            Target::Linux => "linux".into(),
            Target::Bypass(l) => l.to_string(),
        }
    }
    /// Whether side A needs a kernel address (kernel sockets serve there).
    fn kernel_side_a(self) -> bool {
        matches!(
            self,
            Target::Linux | Target::Bypass(LibOsName::Kernel | LibOsName::Uring)
        )
    }
}

struct Sample {
    target: Target,
    histogram: Histogram<u64>,
    messages: u64,
    bulk_bytes: u64,
    bulk_ns: u64,
}

#[derive(Serialize)]
struct VethRow {
    target: String,
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
    /// CPUs of the client (namespace B) and the server (namespace A), or null.
    pinned: Option<(usize, usize)>,
    results: Vec<VethRow>,
}

const PORT: u16 = 7000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

/// Runs the veth benchmark: for each target and round a fresh topology, the target's echo
/// server in namespace A, a spinning kernel-socket client in namespace B.
pub(crate) fn bench_veth(file: &FileConfig, b: &VethBench) -> Result<(), CliError> {
    need_root("bypass bench echo --topo veth")?;
    if b.size == 0 || b.rounds == 0 || b.count < u64::from(b.rounds) {
        return Err(CliError::new(
            "--size must be positive and --count at least --rounds",
        ));
    }
    let mut file = file.clone();
    file.bypass.poll = PollMode::Spin;
    let mut targets = vec![Target::Linux];
    for l in &b.libs {
        if matches!(l, LibOsName::Sim | LibOsName::Tap) {
            return Err(CliError::new(format!(
                "--topo veth measures kernel, uring, xdp and packet; {l} has no veth side"
            )));
        }
        if !targets.contains(&Target::Bypass(*l)) {
            targets.push(Target::Bypass(*l));
        }
    }
    let cpus = sys::affinity()
        .map_err(|e| CliError::new(format!("sched_getaffinity: {e}")))?
        .cpus();
    let pinned = (cpus.len() >= 2).then(|| (cpus[0], cpus[1]));
    if pinned.is_none() {
        eprintln!("note: one CPU only: client and server share it, not pinned");
    }
    let mut samples: Vec<Sample> = targets
        .iter()
        .map(|&target| Sample {
            target,
            histogram: new_histogram(),
            messages: 0,
            bulk_bytes: 0,
            bulk_ns: 0,
        })
        .collect();
    let per_round = b.count / u64::from(b.rounds);
    let bulk_per_round = (b.bulk_bytes / u64::from(b.rounds)).max(1);
    for round in 0..b.rounds {
        for s in samples.iter_mut() {
            tracing::info!(round, target = %s.target.name(), "measuring over veth");
            let r = one_round(&file, s.target, b, per_round, bulk_per_round, pinned)
                .map_err(|e| e.context(format_args!("{} over veth", s.target.name())))?;
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
    let results = samples
        .iter()
        .map(|s| VethRow {
            target: s.target.name(),
            messages: s.messages,
            latency_us: Latency::from_histogram(&s.histogram),
            p50_vs_linux: s.histogram.value_at_quantile(0.5) as f64 / ref_p50,
            bulk_mb_per_s: mbps(s),
            bulk_vs_linux: mbps(s) / ref_bulk,
        })
        .collect();
    let report = VethReport {
        benchmark:
            "tcp echo over a veth pair: target's server in namespace A, kernel-socket client in B",
        message_size: b.size,
        rounds: b.rounds,
        bulk_bytes: b.bulk_bytes,
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
    println!(
        "{:<8} {:>9} {:>8} {:>8} {:>9} {:>11} {:>10} {:>11}",
        "target",
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
            "{:<8} {:>9} {:>8.2} {:>8.2} {:>9.2} {:>11.3} {:>10.1} {:>11.3}",
            row.target,
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

/// One measurement of one target on a topology of its own.
fn one_round(
    file: &FileConfig,
    target: Target,
    b: &VethBench,
    count: u64,
    bulk_bytes: u64,
    pinned: Option<(usize, usize)>,
) -> Result<Sample, CliError> {
    let topo = Topology::up(TopologySpec::unique())
        .map_err(|e| CliError::new(format!("cannot create a veth topology: {e}")))?;
    let spec = topo.spec().clone();
    let ip_a = Ipv4Addr::from(spec.ip_a());
    let server_addr = SocketAddrV4::new(ip_a, PORT);
    if target.kernel_side_a() {
        // Kernel sockets serve in A: that side needs the kernel address the stack owns
        // otherwise.
        let addr = format!("{ip_a}/24");
        let out = std::process::Command::new("ip")
            .args(["-n", &spec.ns_a, "addr", "add", &addr, "dev", &spec.dev_a])
            .output()
            .map_err(|e| CliError::new(format!("cannot run ip: {e}")))?;
        if !out.status.success() {
            return Err(CliError::new(format!(
                "ip addr add {addr} in {}: {}",
                spec.ns_a,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let stop = AtomicBool::new(false);
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), CliError>>();
    thread::scope(|sc| {
        let stop = &stop;
        let spec = &spec;
        let server = sc.spawn(move || -> Result<(), CliError> {
            let started = (|| -> Result<Box<dyn FnOnce() -> Result<(), CliError>>, CliError> {
                if let Some((_, cpu)) = pinned {
                    sys::set_affinity(&sys::CpuSet::single(cpu))
                        .map_err(|e| CliError::new(format!("cannot pin to CPU {cpu}: {e}")))?;
                }
                match target {
                    Target::Linux => {
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
                    Target::Bypass(name) => {
                        let mut config = file.bypass.clone();
                        config.libos = name;
                        config.net.netns = Some(spec.ns_a.clone());
                        config.net.iface = Some(spec.dev_a.clone());
                        config.net.ip = Some(format!("{ip_a}/24"));
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
            if let Some((cpu, _)) = pinned {
                sys::set_affinity(&sys::CpuSet::single(cpu))
                    .map_err(|e| CliError::new(format!("cannot pin to CPU {cpu}: {e}")))?;
            }
            netns::enter(&spec.ns_b)
                .map_err(|e| CliError::new(format!("entering {}: {e}", spec.ns_b)))?;
            kernel_client(target, server_addr, b.size, count, b.warmup, bulk_bytes)
                .map_err(|e| CliError::new(format!("kernel client in {}: {e}", spec.ns_b)))
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
        let mut s = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            write_all_spinning(&mut s, &buf[..n], stop)?;
        }
    }
    Ok(())
}

fn write_all_spinning(s: &mut TcpStream, mut data: &[u8], stop: &AtomicBool) -> io::Result<()> {
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::other("stopped while sending"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The kernel-socket client in namespace B: a ping-pong connection, then a bulk connection.
fn kernel_client(
    target: Target,
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
    let never = AtomicBool::new(false);
    let deadline = Duration::from_secs(60);
    let mut s = connect()?;
    let mut histogram = new_histogram();
    let mut msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; size];
    let start = Instant::now();
    for seq in 0..warmup + count {
        msg[0] = seq as u8;
        let t0 = Instant::now();
        write_all_spinning(&mut s, &msg, &never)?;
        let mut got = 0;
        while got < size {
            match s.read(&mut back[got..]) {
                Ok(0) => return Err(io::Error::other("the server closed the connection")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start.elapsed() > deadline {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo for 60 s"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let rtt = t0.elapsed();
        if back != msg {
            return Err(io::Error::other(format!(
                "the echo of message {seq} differs"
            )));
        }
        if seq >= warmup {
            histogram.saturating_record((rtt.as_nanos() as u64).max(1));
        }
    }
    drop(s);
    // Bulk: send and read back at once over a second connection, every byte checked.
    let mut s = connect()?;
    let chunk: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 256 << 10];
    let (mut sent, mut received) = (0u64, 0u64);
    let t0 = Instant::now();
    while received < bulk_bytes {
        if sent < bulk_bytes {
            let off = (sent % 251) as usize;
            let n = ((bulk_bytes - sent) as usize).min(chunk.len() - 251);
            match s.write(&chunk[off..off + n]) {
                Ok(n) => sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(io::Error::other("the server closed during the bulk echo")),
            Ok(n) => {
                for (i, &byte) in buf[..n].iter().enumerate() {
                    if byte != ((received + i as u64) % 251) as u8 {
                        return Err(io::Error::other(format!(
                            "bulk echo byte {} differs",
                            received + i as u64
                        )));
                    }
                }
                received += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        if t0.elapsed() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("bulk echo: {received} of {bulk_bytes} B after 60 s"),
            ));
        }
    }
    let bulk_ns = t0.elapsed().as_nanos() as u64;
    Ok(Sample {
        target,
        histogram,
        messages: count,
        bulk_bytes,
        bulk_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_and_subnets_follow_the_name() {
        let args = TopoArgs {
            name: "demo".into(),
            subnet: None,
        };
        let s = spec_of(&args).unwrap();
        assert_eq!(s.ns_a, "bypass-demo-a");
        assert_eq!(s.dev_b, "bypass-demo-b");
        assert_eq!(s.subnet, subnet_of("demo"));
        assert_eq!(
            spec_of(&args).unwrap(),
            s,
            "the same name gives the same topology"
        );
        assert!((1..=250).contains(&subnet_of("x")));
        let e = spec_of(&TopoArgs {
            name: "far-too-long".into(),
            subnet: Some(3),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("far-too-long"), "{e}");
        let s = spec_of(&TopoArgs {
            name: "x".into(),
            subnet: Some(3),
        })
        .unwrap();
        assert_eq!(s.ip_a(), [10, 77, 3, 1]);
    }

    /// Removes a topology when dropped, also when the test fails.
    struct Down(TopologySpec);

    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Topology::down(&self.0);
        }
    }

    #[test]
    fn up_is_idempotent_and_down_removes_everything() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED up_is_idempotent_and_down_removes_everything: needs root");
            return;
        }
        let args = TopoArgs {
            name: format!("t{}", std::process::id() % 100_000),
            subnet: None,
        };
        let spec = spec_of(&args).unwrap();
        let _guard = Down(spec.clone());
        up(&args).unwrap();
        up(&args).unwrap();
        for ns in [&spec.ns_a, &spec.ns_b] {
            assert!(bypass_devices::topo::netns_exists(ns), "{ns} exists");
        }
        let b = bypass_devices::topo::link_show(&spec.ns_b, &spec.dev_b).unwrap();
        assert!(b.contains("UP"), "{b}");
        let addrs = std::process::Command::new("ip")
            .args(["-n", &spec.ns_a, "-4", "addr", "show", "dev", &spec.dev_a])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&addrs.stdout).contains("inet "),
            "side A must have no kernel IPv4 address"
        );
        down(&args).unwrap();
        down(&args).unwrap();
        for ns in [&spec.ns_a, &spec.ns_b] {
            assert!(!bypass_devices::topo::netns_exists(ns), "{ns} is gone");
        }
    }

    #[test]
    fn net_flags_set_the_configuration_and_bad_ones_are_named() {
        let mut config = bypass::Config::default();
        let args = NetArgs {
            netns: Some("bypass-demo-a".into()),
            iface: Some("bypass-demo-a".into()),
            ip: Some("10.77.3.1/24".into()),
            gateway: Some("10.77.3.254".into()),
        };
        args.apply(&mut config).unwrap();
        assert_eq!(config.net.netns.as_deref(), Some("bypass-demo-a"));
        assert_eq!(config.net.iface.as_deref(), Some("bypass-demo-a"));
        assert_eq!(config.net.ip.as_deref(), Some("10.77.3.1/24"));
        assert_eq!(config.net.gateway.as_deref(), Some("10.77.3.254"));
        let bad = NetArgs {
            ip: Some("10.77.3.1".into()),
            ..NetArgs::default()
        };
        let e = bad
            .apply(&mut bypass::Config::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.77.3.1"), "{e}");
    }
}
