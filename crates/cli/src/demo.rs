//! `bypass demo`: an echo server and a client in one process, no privileges needed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bypass::LibOsName;
use bypass_echo::{Limit, LoadOptions, Protocol, ServeOptions, Server};

use crate::config::parse_libos;
use crate::echo::{ephemeral_listen, libos, seconds};
use crate::error::CliError;
use crate::{sys, Global};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The libOS (default sim: our TCP/IP stack over the in-process simulated wire, no
    /// privileges needed); kernel and uring run on loopback.
    #[arg(long, value_parser = parse_libos, default_value = "sim")]
    libos: LibOsName,
    /// Seconds to measure (after a 0.2 s warm-up): the demo takes this long however busy the
    /// machine is.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    duration: f64,
    /// Bytes per message.
    #[arg(long, value_name = "B", default_value_t = 64)]
    size: usize,
}

pub(crate) fn run(global: &Global, args: Args) -> Result<(), CliError> {
    let file = &global.file;
    let name = args.libos;
    let listen = ephemeral_listen(name);
    let duration = seconds(args.duration, "--duration")?;
    // Both ends spin: on one CPU each round trip would wait for the other's time slice, so
    // they get a CPU each where there are two (best effort: a demo runs unpinned otherwise).
    let original = sys::affinity().ok();
    let cpus = original.as_ref().map(sys::CpuSet::cpus).unwrap_or_default();
    let pins = (cpus.len() >= 2).then(|| (cpus[0], cpus[1]));
    if let Some((client, _)) = pins {
        let _ = sys::set_affinity(&sys::CpuSet::single(client));
    }
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    let report = thread::scope(|s| {
        let stop = &stop;
        let server = s.spawn(move || -> Result<(), CliError> {
            if let Some((_, cpu)) = pins {
                let _ = sys::set_affinity(&sys::CpuSet::single(cpu));
            }
            let mut libos = libos(file, Some(name))?;
            let bound = Server::bind(&mut libos, ServeOptions::tcp(listen));
            let server = match bound {
                Ok(server) => {
                    let _ = tx.send(Some(server.local_addr()));
                    server
                }
                Err(e) => {
                    let _ = tx.send(None);
                    return Err(e.into());
                }
            };
            server.run(&mut libos, Some(stop))?;
            Ok(())
        });
        let client = || -> Result<_, CliError> {
            let Ok(Some(addr)) = rx.recv() else {
                return Err(CliError::new("the demo's echo server did not start"));
            };
            let opts = LoadOptions {
                message_size: args.size,
                limit: Limit::Duration(duration),
                warmup: Limit::Duration(Duration::from_millis(200)),
                ..LoadOptions::new(addr, Protocol::Tcp)
            };
            let mut libos = libos(file, Some(name))?;
            Ok(bypass_echo::run_load(&mut libos, &opts)?)
        };
        let report = client();
        stop.store(true, Ordering::Relaxed);
        let served = server
            .join()
            .map_err(|_| CliError::new("the demo's echo server thread panicked"))?;
        // The server's own error (e.g. no libOS) explains a client failure best.
        served?;
        report
    });
    if let Some(set) = &original {
        let _ = sys::set_affinity(set);
    }
    let report = report?;
    let where_ = match name {
        LibOsName::Kernel => "kernel libOS on loopback; `--libos sim` runs it on the user-space \
             stack over the simulated wire"
            .to_string(),
        LibOsName::Uring => "uring libOS (Linux sockets through io_uring) on loopback".to_string(),
        LibOsName::Sim => {
            "sim libOS: the user-space TCP/IP stack over the in-process simulated wire".to_string()
        }
        other => format!("{other} libOS"),
    };
    println!("bypass demo: TCP echo, server and client on two threads of this process");
    println!("ran on: {where_}");
    if let Some((c, sv)) = pins {
        println!("client on CPU {c}, server on CPU {sv}, both busy-polling");
    }
    let l = &report.latency_us;
    println!(
        "{} messages of {} B, every byte checked: {:.0} msgs/s",
        report.messages, report.message_size, report.msgs_per_s
    );
    println!(
        "round trip: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs (max {:.1} µs)",
        l.p50, l.p99, l.p999, l.max
    );
    println!("next: `bypass bench echo --libos kernel` compares it with plain Linux sockets");
    Ok(())
}
