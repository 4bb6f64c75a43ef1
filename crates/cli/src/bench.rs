//! `bypass bench echo`: 1-connection TCP ping-pong on each listed libOS, side by side with a
//! plain `std::net` ping-pong (`linux`) as the reference, in one run.
//!
//! Every target runs the same way: an echo server thread and a client thread, pinned to two
//! different CPUs (when there are two), both busy-polling; a warm-up before measuring; and the
//! targets take turns over several rounds so a slow patch of the machine does not land on one
//! target only. The latency histograms of the rounds are merged.

use std::io;
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bypass::{LibOsName, PollMode};
use bypass_echo::{Latency, Limit, ServeOptions, Server};
use clap::Subcommand;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::FileConfig;
use crate::echo::{ephemeral_listen, libos, seconds};
use crate::error::CliError;
use crate::ping_pong::{new_histogram, socket_echo, socket_ping_pong, PingPong};
use crate::{sys, Global};

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// TCP echo ping-pong latency of libOSes next to plain Linux sockets.
    Echo(EchoArgs),
    /// redis-benchmark SET/GET against redis-server and the bypass kv server.
    Kv(crate::kv::BenchArgs),
    /// Shared-memory queue round trip and throughput next to a raw cache-line ping-pong, a
    /// Unix socket pair and a pipe.
    Shm(ShmArgs),
    /// 4 KiB random O_DIRECT reads with our io_uring queue next to fio's engines.
    Storage(StorageArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct ShmArgs {
    /// About a second instead of a minute: fewer samples.
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct StorageArgs {
    /// The test file (default: a new file in the current directory, removed at the end).
    #[arg(long, value_name = "FILE")]
    path: Option<std::path::PathBuf>,
    /// Size of the test file in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    size_mib: u64,
    /// Seconds per measured point.
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    runtime: f64,
    /// Leave out the fio rows.
    #[arg(long)]
    no_fio: bool,
    /// Measure every row this many times, taking turns, and report medians.
    #[arg(long, value_name = "N", default_value_t = 1)]
    rounds: u32,
    /// Queue depths to measure, comma-separated.
    #[arg(
        long,
        value_name = "QD",
        value_delimiter = ',',
        default_value = "1,8,32,128"
    )]
    depths: Vec<u32>,
    /// Leave out the page-cache rows.
    #[arg(long)]
    no_page_cache: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub(crate) struct EchoArgs {
    /// Comma-separated libOSes to measure, e.g. kernel,uring (plus `linux`, always).
    #[arg(long, value_delimiter = ',', value_parser = parse_bench_libos, default_value = "kernel")]
    libos: Vec<Option<LibOsName>>,
    /// Bytes per message.
    #[arg(long, value_name = "B", default_value_t = 64)]
    size: usize,
    /// Messages measured per target (default 30000).
    #[arg(long, value_name = "N", conflicts_with = "duration")]
    count: Option<u64>,
    /// Seconds measured per target instead of a count.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Rounds the targets take turns in; each round measures count/rounds messages.
    #[arg(long, value_name = "R", default_value_t = 3)]
    rounds: u32,
    /// Messages each target sends before every round's measurement.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    warmup: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Run across two network namespaces joined by a veth pair (made and removed here): each
    /// libOS's echo server in namespace A with a spinning kernel-socket client in B, and xdp
    /// and packet also at both ends; adds a bulk echo throughput column. Needs root.
    #[arg(long, value_enum, value_name = "KIND")]
    topo: Option<crate::veth_bench::TopoKind>,
    /// MiB sent over one connection for the throughput column: echoed with --topo; from client
    /// to server on `sim` (one thread).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    bulk_mib: u64,
    /// With --topo veth: leave checksum and segmentation offloads on along the veth pair
    /// (off by default), so that TCP packets of up to 64 KiB cross it whole, the kernel's and
    /// those of the packet libOS's offloading device alike. Rows with xdp are refused (an
    /// AF_XDP frame cannot hold such a packet).
    #[arg(long)]
    veth_offloads: bool,
    #[command(flatten)]
    net: crate::topo::NetArgs,
}

/// A libOS name for `bench echo --libos`, where `linux` (plain sockets, always measured)
/// is accepted too and gives `None`.
fn parse_bench_libos(s: &str) -> Result<Option<LibOsName>, String> {
    if s == "linux" {
        return Ok(None);
    }
    crate::config::parse_libos(s).map(Some)
}

/// What was measured of one target, over all rounds.
struct Sample {
    target: String,
    messages: u64,
    elapsed_ns: u64,
    histogram: Histogram<u64>,
    /// One-connection bulk (measured on `sim` only): bytes and nanoseconds over the rounds.
    bulk_bytes: u64,
    bulk_ns: u64,
}

#[derive(Serialize)]
struct Row {
    target: String,
    messages: u64,
    msgs_per_s: f64,
    latency_us: Latency,
    /// This target's p50 over the `linux` reference's p50.
    p50_vs_linux: f64,
    /// One-connection bulk throughput, client to server, in GB/s (`sim` only: one thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    bulk_gb_per_s: Option<f64>,
}

#[derive(Serialize)]
struct BenchReport {
    benchmark: &'static str,
    message_size: usize,
    rounds: u32,
    /// CPUs of the client and the server, or null when not pinned.
    pinned: Option<(usize, usize)>,
    /// Whether the `sim` wire offloaded checksums (`sim.checksum_offload`); absent without a
    /// `sim` row.
    #[serde(skip_serializing_if = "Option::is_none")]
    sim_checksum_offload: Option<bool>,
    results: Vec<Row>,
}

pub(crate) fn run(global: &Global, cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Echo(args) => echo(global, args),
        Command::Kv(args) => crate::kv::bench_kv(global, args),
        Command::Shm(args) => bench_shm(args),
        Command::Storage(args) => bench_storage(args),
    }
}

fn bench_shm(args: ShmArgs) -> Result<(), CliError> {
    let opts = if args.quick {
        bypass_shm::bench::BenchOptions::quick()
    } else {
        bypass_shm::bench::BenchOptions::default()
    };
    let mut report = bypass_shm::bench::run(&opts)
        .map_err(|e| CliError::new(format!("shm benchmark failed: {e}")))?;
    let api = shm_api_round_trips(report.cores, opts.round_trips, opts.warmup)?;
    let floor = report.latency.iter().find(|r| r.path.starts_with("raw"));
    let unix = report.latency.iter().find(|r| r.path.starts_with("unix"));
    let ratios = floor.zip(unix).map(|(f, u)| {
        (
            api.p50_ns as f64 / f.p50_ns.max(1) as f64,
            api.p50_ns as f64 / u.p50_ns.max(1) as f64,
        )
    });
    report.latency.insert(2, api);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
        if let Some((floor, unix)) = ratios {
            println!(
                "through the queue API (LibOs push, pop, wait): p50 = {floor:.2} x the floor, {unix:.3} x the Unix socket"
            );
        }
    }
    Ok(())
}

/// The 64 B shm round trip through the queue API: two LibOses on threads pinned to `cores`,
/// busy-polling; the client pushes an Sga from `shm_alloc` and pops the echo, the server pops
/// and pushes what it got back. Every echo is compared.
fn shm_api_round_trips(
    cores: (usize, usize),
    round_trips: u64,
    warmup: u64,
) -> Result<bypass_shm::bench::LatencyRow, CliError> {
    use bypass::{Config, LibOs, QValue};
    const SIZE: usize = 64;
    let name = format!("bench-api-{}", std::process::id());
    let total = warmup + round_trips;
    let config = || Config {
        poll: PollMode::Spin,
        ..Config::with_libos(LibOsName::Kernel)
    };
    let api =
        |e: bypass::Error| CliError::from(e).context(format_args!("shm queue API round trip"));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    thread::scope(|sc| {
        let (name, config, api) = (&name, &config, &api);
        let server = sc.spawn(move || -> Result<(), CliError> {
            sys::pin(cores.1)?;
            let mut libos = LibOs::new(config()).map_err(api)?;
            let qd = libos.shm_create(name).map_err(api)?;
            let _ = ready_tx.send(());
            for _ in 0..total {
                let qt = libos.pop(qd).map_err(api)?;
                let sga = libos
                    .wait(qt, None)
                    .and_then(|r| r.into_sga())
                    .map_err(api)?;
                let qt = libos.push(qd, sga).map_err(api)?;
                libos.wait(qt, None).and_then(|r| r.ok()).map_err(api)?;
            }
            libos.close(qd).map_err(api)
        });
        let client = sc.spawn(move || -> Result<Histogram<u64>, CliError> {
            ready_rx
                .recv()
                .map_err(|_| CliError::new("the shm API server did not start"))?;
            sys::pin(cores.0)?;
            let mut libos = LibOs::new(config()).map_err(api)?;
            let qd = libos.shm_open(name).map_err(api)?;
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
                .expect("static histogram bounds");
            for seq in 0..total {
                let mut sga = libos.shm_alloc(qd, SIZE).map_err(api)?;
                let first = sga.first_mut().expect("one segment");
                first.as_mut_slice().fill(seq as u8);
                let t0 = Instant::now();
                let push = libos.push(qd, sga).map_err(api)?;
                let pop = libos.pop(qd).map_err(api)?;
                libos.wait(push, None).and_then(|r| r.ok()).map_err(api)?;
                let back = libos.wait(pop, None).map_err(api)?;
                let rtt = t0.elapsed();
                let QValue::Popped { sga, .. } = back.value else {
                    return Err(CliError::new(format!(
                        "the echo of message {seq} is {:?}",
                        back.value
                    )));
                };
                let bytes = sga.to_vec();
                if bytes.len() != SIZE || bytes.iter().any(|&b| b != seq as u8) {
                    return Err(CliError::new(format!("the echo of message {seq} differs")));
                }
                if seq >= warmup {
                    histogram.saturating_record((rtt.as_nanos() as u64).max(1));
                }
            }
            libos.close(qd).map_err(api)?;
            Ok(histogram)
        });
        let histogram = client
            .join()
            .unwrap_or_else(|_| Err(CliError::new("the shm API client panicked")))?;
        server
            .join()
            .unwrap_or_else(|_| Err(CliError::new("the shm API server panicked")))?;
        Ok(bypass_shm::bench::LatencyRow {
            path: "shm queue, LibOs push/pop/wait",
            samples: histogram.len(),
            p50_ns: histogram.value_at_quantile(0.5),
            p99_ns: histogram.value_at_quantile(0.99),
            p999_ns: histogram.value_at_quantile(0.999),
            max_ns: histogram.max(),
        })
    })
}

fn bench_storage(args: StorageArgs) -> Result<(), CliError> {
    if !args.runtime.is_finite() || args.runtime <= 0.0 {
        return Err(CliError::new(
            "--runtime must be a positive number of seconds",
        ));
    }
    if args.rounds == 0 {
        return Err(CliError::new("--rounds must be at least 1"));
    }
    let opts = bypass_storage::BenchOptions {
        path: args.path,
        size: args.size_mib << 20,
        runtime: Duration::from_secs_f64(args.runtime),
        fio: !args.no_fio,
        rounds: args.rounds,
        depths: args.depths,
        page_cache: !args.no_page_cache,
        ..bypass_storage::BenchOptions::default()
    };
    let report = bypass_storage::bench(&opts)
        .map_err(|e| CliError::new(format!("storage benchmark failed: {e}")))?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{report}");
    }
    Ok(())
}

fn echo(global: &Global, args: EchoArgs) -> Result<(), CliError> {
    if args.rounds == 0 {
        return Err(CliError::new("--rounds must be at least 1"));
    }
    if args.size == 0 {
        return Err(CliError::new("--size must be at least 1 byte"));
    }
    let per_round = match args.duration {
        Some(s) => Limit::Duration(seconds(s, "--duration")? / args.rounds),
        None => {
            let n = args.count.unwrap_or(30_000) / u64::from(args.rounds);
            if n == 0 {
                return Err(CliError::new("--count must be at least --rounds"));
            }
            Limit::Count(n)
        }
    };
    let mut libs: Vec<LibOsName> = args.libos.iter().flatten().copied().collect();
    libs.dedup();
    if args.veth_offloads && args.topo.is_none() {
        return Err(CliError::new("--veth-offloads goes with --topo veth"));
    }
    if args.topo.is_some() {
        if args.duration.is_some() {
            return Err(CliError::new("--topo veth takes --count, not --duration"));
        }
        if !args.net.is_empty() {
            return Err(CliError::new(
                "--topo veth makes its own namespaces and addresses; drop --netns, --iface, --ip and --gateway",
            ));
        }
        if args.veth_offloads && libs.contains(&LibOsName::Xdp) {
            return Err(CliError::new(
                "--veth-offloads lets 64 KiB packets cross the pair whole, and an AF_XDP frame \
                 cannot hold one: measure xdp without it",
            ));
        }
        return crate::veth_bench::bench_veth(
            &global.file,
            &crate::veth_bench::VethBench {
                libs,
                size: args.size,
                count: args.count.unwrap_or(30_000),
                rounds: args.rounds,
                warmup: args.warmup,
                bulk_bytes: args.bulk_mib << 20,
                pair_offloads: args.veth_offloads,
                json: args.json,
            },
        );
    }
    // Busy-poll whatever the file says: blocking across CPUs costs tens of µs per wake-up.
    let mut file = crate::topo::with_net(&global.file, &args.net)?;
    file.bypass.poll = PollMode::Spin;

    let original = sys::affinity().map_err(|e| CliError::new(format!("sched_getaffinity: {e}")))?;
    let cpus = original.cpus();
    let pinned = if cpus.len() >= 2 {
        Some((cpus[0], cpus[1]))
    } else {
        eprintln!("note: this process may use only one CPU: client and server are not pinned and share it");
        None
    };
    if let Some((client, _)) = pinned {
        sys::pin(client)?;
    }
    let result = measure(&file, &libs, &args, per_round, pinned);
    let _ = sys::set_affinity(&original);
    let samples = result?;

    let reference = samples[0].histogram.value_at_quantile(0.5).max(1) as f64;
    let results: Vec<Row> = samples
        .into_iter()
        .map(|s| {
            let secs = s.elapsed_ns as f64 / 1e9;
            Row {
                p50_vs_linux: s.histogram.value_at_quantile(0.5) as f64 / reference,
                msgs_per_s: if secs > 0.0 {
                    s.messages as f64 / secs
                } else {
                    0.0
                },
                latency_us: Latency::from_histogram(&s.histogram),
                bulk_gb_per_s: (s.bulk_ns > 0).then(|| s.bulk_bytes as f64 / s.bulk_ns as f64),
                messages: s.messages,
                target: s.target,
            }
        })
        .collect();
    let report = BenchReport {
        benchmark: "tcp echo ping-pong, 1 connection, loopback",
        message_size: args.size,
        rounds: args.rounds,
        pinned,
        sim_checksum_offload: results
            .iter()
            .any(|row| row.target == "sim")
            .then_some(file.bypass.sim.checksum_offload),
        results,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serialises")
        );
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &BenchReport) {
    println!(
        "{}, {} B messages, {} rounds",
        r.benchmark, r.message_size, r.rounds
    );
    match r.pinned {
        Some((c, s)) => println!("client on CPU {c}, server on CPU {s}, both busy-polling"),
        None => println!("not pinned (one CPU), both busy-polling"),
    }
    if let Some(offload) = r.sim_checksum_offload {
        println!(
            "sim: client and server in one thread on the client's CPU, over the in-process wire; \
             checksums {}",
            if offload {
                "offloaded to the wire (sim.checksum_offload)"
            } else {
                "computed by the stack"
            }
        );
    }
    println!(
        "{:<8} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9} {:>12}",
        "target", "messages", "msgs/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "p50 / linux"
    );
    for row in &r.results {
        let l = &row.latency_us;
        println!(
            "{:<8} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>9.2} {:>9.1} {:>12.3}",
            row.target, row.messages, row.msgs_per_s, l.p50, l.p99, l.p999, l.max, row.p50_vs_linux
        );
    }
    for row in &r.results {
        if let Some(gbps) = row.bulk_gb_per_s {
            println!(
                "{} bulk: {:.2} GB/s, client to server over one connection, every byte checked",
                row.target, gbps
            );
        }
    }
}

/// Runs every target `rounds` times, in turn; the first sample is `linux`.
fn measure(
    file: &FileConfig,
    libs: &[LibOsName],
    args: &EchoArgs,
    per_round: Limit,
    pinned: Option<(usize, usize)>,
) -> Result<Vec<Sample>, CliError> {
    let mut samples: Vec<Sample> = std::iter::once("linux".to_string())
        .chain(libs.iter().map(|l| l.to_string()))
        .map(|target| Sample {
            target,
            messages: 0,
            elapsed_ns: 0,
            histogram: new_histogram(),
            bulk_bytes: 0,
            bulk_ns: 0,
        })
        .collect();
    let server_cpu = pinned.map(|(_, s)| s);
    for round in 0..args.rounds {
        for (i, sample) in samples.iter_mut().enumerate() {
            tracing::info!(round, target = %sample.target, "measuring");
            let (messages, elapsed_ns, h) = if i == 0 {
                linux_ping_pong(args.size, per_round, args.warmup, server_cpu)
                    .map_err(|e| CliError::new(format!("linux reference: {e}")))?
            } else if libs[i - 1] == LibOsName::Sim {
                let bulk = (args.bulk_mib << 20) / u64::from(args.rounds);
                let (ping_pong, bulk_ns) =
                    sim_one_thread(file, args.size, per_round, args.warmup, bulk)?;
                sample.bulk_bytes += bulk;
                sample.bulk_ns += bulk_ns;
                ping_pong
            } else {
                bypass_ping_pong(
                    file,
                    libs[i - 1],
                    args.size,
                    per_round,
                    args.warmup,
                    server_cpu,
                )?
            };
            sample.messages += messages;
            sample.elapsed_ns += elapsed_ns;
            sample
                .histogram
                .add(&h)
                .expect("histograms with the same bounds merge");
        }
    }
    Ok(samples)
}

/// One round over `sim`: client and server LibOs both in this thread (pinned to the client's
/// CPU), joined by the in-process wire, so the round trip is the stack and the queue API alone;
/// then `bulk` bytes over a second connection (0: none). Returns the ping-pong's result and the
/// bulk's nanoseconds.
fn sim_one_thread(
    file: &FileConfig,
    size: usize,
    limit: Limit,
    warmup: u64,
    bulk: u64,
) -> Result<(PingPong, u64), CliError> {
    let mut server = libos(file, Some(LibOsName::Sim))?;
    let mut client = libos(file, Some(LibOsName::Sim))?;
    let listen = ephemeral_listen(LibOsName::Sim);
    let ping_pong = crate::ping_pong::one_thread_ping_pong(
        &mut server,
        &mut client,
        listen,
        size,
        limit,
        warmup,
    )
    .map_err(|e| CliError::from(e).context("sim ping-pong (one thread)"))?;
    let bulk_ns = if bulk == 0 {
        0
    } else {
        crate::ping_pong::one_thread_bulk(&mut server, &mut client, listen, bulk)
            .map_err(|e| CliError::from(e).context("sim bulk (one thread)"))?
    };
    Ok((ping_pong, bulk_ns))
}

/// One round over a libOS: the `bypass-echo` server and client, 1 TCP connection.
fn bypass_ping_pong(
    file: &FileConfig,
    name: LibOsName,
    size: usize,
    limit: Limit,
    warmup: u64,
    server_cpu: Option<usize>,
) -> Result<PingPong, CliError> {
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        let stop = &stop;
        let server = s.spawn(move || -> Result<(), CliError> {
            if let Some(cpu) = server_cpu {
                sys::pin(cpu)?;
            }
            let started = libos(file, Some(name)).and_then(|mut libos| {
                let opts = ServeOptions {
                    max_connections: Some(1),
                    ..ServeOptions::tcp(ephemeral_listen(name))
                };
                let server = Server::bind(&mut libos, opts)?;
                Ok((libos, server))
            });
            let (mut libos, server) = match started {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(None);
                    return Err(e);
                }
            };
            let _ = tx.send(Some(server.local_addr()));
            server.run(&mut libos, Some(stop))?;
            Ok(())
        });
        let client = || -> Result<_, CliError> {
            let Ok(Some(addr)) = rx.recv() else {
                return Err(CliError::new(format!(
                    "the {name} echo server did not start"
                )));
            };
            let mut libos = libos(file, Some(name))?;
            crate::ping_pong::api_ping_pong(&mut libos, addr, size, limit, warmup)
                .map_err(|e| CliError::from(e).context(format_args!("{name} client")))
        };
        let result = client();
        stop.store(true, Ordering::Relaxed);
        let served = server
            .join()
            .map_err(|_| CliError::new(format!("the {name} echo server thread panicked")))?;
        served?;
        result
    })
}

/// One round of the reference: plain non-blocking `std::net` sockets with TCP_NODELAY, both
/// ends spinning on `read`, no bypass code at all.
fn linux_ping_pong(
    size: usize,
    limit: Limit,
    warmup: u64,
    server_cpu: Option<usize>,
) -> io::Result<PingPong> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let std::net::SocketAddr::V4(addr) = listener.local_addr()? else {
        return Err(io::Error::other("bound to a non-IPv4 address"));
    };
    thread::scope(|s| {
        let server = s.spawn(move || -> io::Result<()> {
            if let Some(cpu) = server_cpu {
                sys::set_affinity(&sys::CpuSet::single(cpu))?;
            }
            let (mut stream, _) = listener.accept()?;
            socket_echo(&mut stream, &mut vec![0u8; size.max(64 * 1024)], None)
        });
        let result = linux_client(addr, size, limit, warmup);
        let served = server
            .join()
            .map_err(|_| io::Error::other("the reference server thread panicked"))?;
        served?;
        result
    })
}

fn linux_client(
    addr: SocketAddrV4,
    size: usize,
    limit: Limit,
    warmup: u64,
) -> io::Result<PingPong> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    socket_ping_pong(&mut stream, size, limit, warmup)
}
