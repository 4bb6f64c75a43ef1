//! `bypass kv serve`: the Redis-protocol key-value server of `bypass-kv` on any libOS, and
//! `bypass bench kv`: redis-benchmark against redis-server and it, side by side.

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::PathBuf;

use bypass::{LibOsName, PollMode};
use bypass_kv::bench::{bench, BenchOptions};
use bypass_kv::{AofFormat, AofOptions, FsyncPolicy, ServeOptions, Server, ServerLimits};
use clap::Subcommand;

use crate::config::{parse_addr, parse_libos};
use crate::echo::libos;
use crate::error::CliError;
use crate::{sys, Global};

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Serve RESP2 (redis-cli, redis-benchmark, Redis clients) until Ctrl-C.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// The libOS (config key `libos`): kernel, uring, sim, xdp, packet, tap.
    #[arg(long, value_parser = parse_libos)]
    libos: Option<LibOsName>,
    /// Address to listen on, IP:PORT.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr, default_value = "127.0.0.1:6380")]
    listen: SocketAddrV4,
    /// Append-only file: every write is logged here before its reply, and replayed at start.
    #[arg(long, value_name = "PATH")]
    aof: Option<PathBuf>,
    /// When the append-only file is synced: always (before each reply), everysec, no.
    #[arg(long, value_name = "POLICY", value_parser = parse_fsync, default_value = "everysec", requires = "aof")]
    fsync: FsyncPolicy,
    /// Layout of the append-only file: log (checksummed records, crash-safe recovery) or resp
    /// (plain RESP requests, as Redis writes them).
    #[arg(long, value_name = "FORMAT", value_parser = parse_format, default_value = "log", requires = "aof")]
    aof_format: AofFormat,
    /// Most clients connected at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_clients: usize,
}

#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// Comma-separated libOSes to run the bypass server on, in this process.
    #[arg(long, value_delimiter = ',', value_parser = parse_libos, default_value = "kernel")]
    libos: Vec<LibOsName>,
    /// A server already running elsewhere to include, as NAME=IP:PORT (e.g. bypass kv serve
    /// --libos xdp in a namespace); repeatable.
    #[arg(long, value_name = "NAME=IP:PORT", value_parser = parse_external)]
    external: Vec<(String, SocketAddrV4)>,
    /// Requests per redis-benchmark run.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    requests: u64,
    /// Requests per durable (fsync always) run.
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    durable_requests: u64,
    /// Comma-separated client counts (redis-benchmark -c).
    #[arg(long, value_delimiter = ',', default_value = "1,50")]
    clients: Vec<u32>,
    /// Comma-separated pipeline depths (redis-benchmark -P).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pipelines: Vec<u32>,
    /// Value size in bytes (redis-benchmark -d).
    #[arg(long, value_name = "B", default_value_t = 64)]
    size: usize,
    /// Skip the durable rows.
    #[arg(long)]
    no_durable: bool,
    /// Layout of the bypass server's append-only file in the durable rows: log or resp.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format, default_value = "log")]
    aof_format: AofFormat,
    /// Let the bypass server busy-poll a core instead of sleeping in epoll when idle (as
    /// redis-server does).
    #[arg(long)]
    spin: bool,
    /// Directory for the durable runs' append-only files (default: the temp directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run each server across a veth pair between two network namespaces (made and removed
    /// here) instead of on loopback: the server in namespace A pinned to one CPU,
    /// redis-benchmark in B pinned to another. Needed by --libos xdp and packet. Needs root.
    #[arg(long, value_enum, value_name = "KIND")]
    topo: Option<crate::veth_bench::TopoKind>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
        .map_err(|e: bypass::Error| e.message().to_string())
}

fn parse_format(s: &str) -> Result<AofFormat, String> {
    s.parse()
        .map_err(|e: bypass::Error| e.message().to_string())
}

fn parse_external(s: &str) -> Result<(String, SocketAddrV4), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not NAME=IP:PORT"))?;
    Ok((name.to_string(), parse_addr(addr)?))
}

pub(crate) fn run(global: &Global, cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Serve(args) => serve(global, args),
    }
}

fn serve(global: &Global, args: ServeArgs) -> Result<(), CliError> {
    let mut libos = libos(&global.file, args.libos)?;
    let stop = sys::interrupt_flag();
    let opts = ServeOptions {
        listen: args.listen,
        aof: args.aof.map(|path| AofOptions {
            path,
            fsync: args.fsync,
            format: args.aof_format,
        }),
        limits: ServerLimits {
            max_clients: args.max_clients,
            ..ServerLimits::default()
        },
        stop,
        stats: None,
    };
    let durability = match &opts.aof {
        Some(a) => format!("append-only file {} (fsync {})", a.path.display(), a.fsync),
        None => "no persistence".to_string(),
    };
    let server = Server::bind(&mut libos, opts)?;
    println!(
        "kv server listening on {} ({} libOS, {durability}); Ctrl-C stops it",
        server.local_addr(),
        libos.name()
    );
    let _ = std::io::stdout().flush();
    let summary = server.run(&mut libos, stop)?;
    println!(
        "served {} connections, {} commands; {} keys",
        summary.connections, summary.commands, summary.keys
    );
    Ok(())
}

pub(crate) fn bench_kv(_global: &Global, args: BenchArgs) -> Result<(), CliError> {
    if args.clients.contains(&0) || args.pipelines.contains(&0) || args.size == 0 {
        return Err(CliError::new(
            "--clients, --pipelines and --size must all be at least 1",
        ));
    }
    let veth = args.topo.is_some();
    if let Some(l) = args.libos.iter().find(|l| match l {
        LibOsName::Kernel | LibOsName::Uring => false,
        LibOsName::Xdp | LibOsName::Packet => !veth,
        LibOsName::Sim | LibOsName::Tap => true,
    }) {
        let hint = match l {
            LibOsName::Xdp | LibOsName::Packet => "add --topo veth to run it across a veth pair",
            _ => "redis-benchmark reaches kernel and uring (and with --topo veth xdp and packet)",
        };
        return Err(CliError::new(format!("bench kv cannot run --libos {l}")).hint(hint));
    }
    if veth {
        crate::topo::need_root("bypass bench kv --topo veth")?;
    }
    let cpus = if veth {
        let cpus = sys::affinity()
            .map_err(|e| CliError::new(format!("sched_getaffinity: {e}")))?
            .cpus();
        (cpus.len() >= 2).then(|| (cpus[0], cpus[1]))
    } else {
        None
    };
    let opts = BenchOptions {
        veth,
        cpus,
        requests: args.requests,
        durable_requests: args.durable_requests,
        clients: args.clients,
        pipelines: args.pipelines,
        value_size: args.size,
        libos: args.libos,
        poll: if args.spin {
            PollMode::Spin
        } else {
            PollMode::Block
        },
        external: args.external,
        durable: !args.no_durable,
        aof_format: args.aof_format,
        dir: args.dir.unwrap_or_else(std::env::temp_dir),
        ..BenchOptions::default()
    };
    let report = bench(&opts).map_err(|e| {
        CliError::from(e).hint("bench kv needs redis-server and redis-benchmark (apt-get install redis-server redis-tools)")
    })?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.command);
        print!("{report}");
    }
    Ok(())
}
