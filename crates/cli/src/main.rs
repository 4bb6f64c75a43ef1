//! `bypass`: the command-line tool of the bypass datapath OS.
//!
//! `main` only parses arguments, sets up logging and the configuration, and dispatches to one
//! module per command group. Adding a command group takes a module with an `Args` type (clap
//! `Args` or `Subcommand`) and a `run(&Global, Args) -> Result<(), CliError>`, a variant in
//! [`Command`], and one arm in [`run`].

mod bench;
mod config;
mod demo;
mod doctor;
mod echo;
mod error;
mod kv;
mod ping_pong;
mod sys;
mod topo;
mod veth_bench;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::FileConfig;
use crate::error::CliError;

/// bypass: kernel-bypass networking through one queue API.
#[derive(Parser, Debug)]
#[command(name = "bypass", version, about, propagate_version = true)]
struct Cli {
    /// TOML configuration file (keys of bypass::Config, plus a [cli] section; see docs/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log level on stderr: error, warn, info, debug, trace (or a tracing filter such as
    /// "bypass=debug").
    #[arg(long, global = true, value_name = "LEVEL", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Echo server and client in one process on loopback; prints a latency summary.
    Demo(demo::Args),
    /// Run an echo server or an echo load client.
    #[command(subcommand)]
    Echo(echo::Command),
    /// Benchmarks, side by side with plain Linux sockets.
    #[command(subcommand)]
    Bench(bench::Command),
    /// A Redis-protocol key-value server.
    #[command(subcommand)]
    Kv(kv::Command),
    /// What this machine supports (io_uring, AF_XDP, huge pages, privileges, tools).
    Doctor(doctor::Args),
    /// A two-namespace veth topology to run bypass against the kernel on one machine.
    #[command(subcommand)]
    Topo(topo::Command),
}

/// Settings every command sees.
pub(crate) struct Global {
    /// The configuration file's contents (defaults without `--config`).
    pub file: FileConfig,
}

fn run(cli: Cli) -> Result<(), CliError> {
    let file = match &cli.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let global = Global { file };
    match cli.command {
        Command::Demo(args) => demo::run(&global, args),
        Command::Echo(cmd) => echo::run(&global, cmd),
        Command::Bench(cmd) => bench::run(&global, cmd),
        Command::Doctor(args) => doctor::run(&global, args),
        Command::Kv(cmd) => kv::run(&global, cmd),
        Command::Topo(cmd) => topo::run(&global, cmd),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli.log) {
        e.print();
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) -> Result<(), CliError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
        CliError::new(format!("--log {level}: {e}"))
            .hint("use one of error, warn, info, debug, trace")
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    Ok(())
}
