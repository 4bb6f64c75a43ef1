//! `bypass echo serve` and `bypass echo run`: the echo server and load client of
//! `bypass-echo`, on any libOS.

use std::io::Write;
use std::net::SocketAddrV4;
use std::time::Duration;

use bypass::{LibOs, LibOsName};
use bypass_echo::{Limit, LoadOptions, Protocol, ServeOptions, Server};
use clap::Subcommand;

use crate::config::{parse_addr, parse_libos, FileConfig};
use crate::error::CliError;
use crate::{sys, Global};

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Echo every byte (TCP) or datagram (UDP) back until Ctrl-C.
    Serve(ServeArgs),
    /// Send messages to an echo server, check every echoed byte, report latency.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// The libOS (config key `libos`): kernel, uring, sim, xdp, packet, tap.
    #[arg(long, value_parser = parse_libos)]
    libos: Option<LibOsName>,
    /// Address to listen on, IP:PORT (config key `cli.listen`; default 127.0.0.1:7000).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    listen: Option<SocketAddrV4>,
    /// Echo UDP datagrams instead of TCP streams (config key `cli.udp`).
    #[arg(long)]
    udp: bool,
    /// Exit after serving this many TCP connections (flag only).
    #[arg(long, value_name = "N")]
    max_conns: Option<u64>,
    #[command(flatten)]
    net: crate::topo::NetArgs,
}

#[derive(clap::Args, Debug)]
pub(crate) struct RunArgs {
    /// The libOS (config key `libos`): kernel, uring, sim, xdp, packet, tap.
    #[arg(long, value_parser = parse_libos)]
    libos: Option<LibOsName>,
    /// The echo server, IP:PORT (config key `cli.connect`; default 127.0.0.1:7000).
    #[arg(long, value_name = "IP:PORT", value_parser = parse_addr)]
    connect: Option<SocketAddrV4>,
    /// Bytes per message (config key `cli.size`; default 64).
    #[arg(long, value_name = "B")]
    size: Option<usize>,
    /// Messages in total over all connections (config key `cli.count`; default 10000).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Concurrent connections (UDP: sockets) (config key `cli.conns`; default 1).
    #[arg(long, value_name = "C")]
    conns: Option<usize>,
    /// Send for this many seconds instead of a count (config key `cli.duration`).
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
    /// Open loop: messages per second over all connections (config key `cli.rate`).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Messages sent before measuring, not reported (flag only; default 10% of --count, at
    /// most 1000; 0 with --duration).
    #[arg(long, value_name = "N")]
    warmup: Option<u64>,
    /// Echo over UDP (config key `cli.udp`).
    #[arg(long)]
    udp: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    net: crate::topo::NetArgs,
}

pub(crate) fn run(global: &Global, cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Serve(args) => serve(global, args),
        Command::Run(args) => run_client(global, args),
    }
}

const DEFAULT_ADDR: &str = "127.0.0.1:7000";

fn addr_or(flag: Option<SocketAddrV4>, key: &Option<String>) -> SocketAddrV4 {
    // Config addresses were checked when the file was loaded.
    flag.or_else(|| key.as_deref().and_then(|a| parse_addr(a).ok()))
        .unwrap_or_else(|| DEFAULT_ADDR.parse().expect("valid default address"))
}

fn protocol(udp_flag: bool, file: &FileConfig) -> Protocol {
    if udp_flag || file.cli.udp == Some(true) {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

/// A LibOs as the configuration says, with `--libos` winning over the file.
pub(crate) fn libos(file: &FileConfig, name: Option<LibOsName>) -> Result<LibOs, CliError> {
    let mut config = file.bypass.clone();
    if let Some(name) = name {
        config.libos = name;
    }
    LibOs::new(config)
        .map_err(|e| CliError::from(e).context(format_args!("cannot start the libOS")))
}

fn serve(global: &Global, args: ServeArgs) -> Result<(), CliError> {
    let file = &crate::topo::with_net(&global.file, &args.net)?;
    let listen = addr_or(args.listen, &file.cli.listen);
    let protocol = protocol(args.udp, file);
    let mut libos = libos(file, args.libos)?;
    let opts = ServeOptions {
        max_connections: args.max_conns,
        ..match protocol {
            Protocol::Tcp => ServeOptions::tcp(listen),
            Protocol::Udp => ServeOptions::udp(listen),
        }
    };
    let server = Server::bind(&mut libos, opts)?;
    // A server outlives whoever reads its output: a closed stdout must not stop it.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "echo server listening on {} ({protocol}, {} libOS); Ctrl-C stops it",
        server.local_addr(),
        libos.name()
    );
    let _ = out.flush();
    let stats = server.run(&mut libos, Some(sys::interrupt_flag()))?;
    let _ = writeln!(
        out,
        "served {} connections, {} pops, {} B echoed, {} connection errors",
        stats.connections_accepted, stats.pops, stats.bytes_echoed, stats.connection_errors
    );
    Ok(())
}

fn run_client(global: &Global, args: RunArgs) -> Result<(), CliError> {
    let file = &crate::topo::with_net(&global.file, &args.net)?;
    let cli = &file.cli;
    let remote = addr_or(args.connect, &cli.connect);
    let protocol = protocol(args.udp, file);
    let size = args.size.or(cli.size).unwrap_or(64);
    let conns = args.conns.or(cli.conns).unwrap_or(1);
    let rate = args.rate.or(cli.rate);
    let duration = args.duration.or(cli.duration);
    let count = args.count.or(cli.count).unwrap_or(10_000);
    let limit = match duration {
        Some(s) => Limit::Duration(seconds(s, "--duration")?),
        None => Limit::Count(count),
    };
    let warmup = match (args.warmup, limit) {
        (Some(n), _) => n,
        (None, Limit::Count(n)) => (n / 10).min(1000),
        (None, Limit::Duration(_)) => 0,
    };
    let opts = LoadOptions {
        connections: conns,
        message_size: size,
        limit,
        rate,
        warmup: Limit::Count(warmup),
        ..LoadOptions::new(remote, protocol)
    };
    let mut libos = libos(file, args.libos)?;
    let report = bypass_echo::run_load(&mut libos, &opts)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    Ok(())
}

/// Where an in-process server listens on a port the system picks: loopback for the libOSes
/// over Linux sockets; any address for the user-space stack, which then reports its own.
pub(crate) fn ephemeral_listen(name: LibOsName) -> SocketAddrV4 {
    match name {
        LibOsName::Kernel | LibOsName::Uring => SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0),
        _ => SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
    }
}

/// A positive number of seconds from a flag or key.
pub(crate) fn seconds(s: f64, what: &str) -> Result<Duration, CliError> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| CliError::new(format!("{what} {s} is not a positive number of seconds")))
}
