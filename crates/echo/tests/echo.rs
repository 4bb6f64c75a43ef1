//! Echo over loopback: a server thread with its own LibOs, a client on the test thread, every
//! echoed byte checked by the client and every count checked here.
//!
//! The tests run for every libOS in [`LIBOSES`] that `LibOs::new` accepts in this build; the
//! kernel libOS must run. Adding a libOS to the list runs the same tests on it.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bypass::{Config, LibOs, LibOsName};
use bypass_echo::{
    run_load, Error, Limit, LoadOptions, Protocol, Report, ServeOptions, Server, ServerStats,
};

/// The libOSes these tests run on, where available.
const LIBOSES: &[LibOsName] = &[LibOsName::Kernel, LibOsName::Uring, LibOsName::Sim];

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Runs `f` for every available libOS of [`LIBOSES`]; the kernel libOS must be available.
fn each_libos(mut f: impl FnMut(LibOsName)) {
    for &name in LIBOSES {
        match LibOs::new(Config::with_libos(name)) {
            Ok(_) => f(name),
            Err(e) => {
                assert_ne!(name, LibOsName::Kernel, "the kernel libOS must start: {e}");
                println!("skipping libOS '{name}': {e}");
            }
        }
    }
}

fn libos(name: LibOsName) -> LibOs {
    let mut config = Config::with_libos(name);
    // 64 connections of 1 MiB messages: the user-space stack's per-connection buffers (256 KiB
    // each way) and the echoes in flight need more than the default 32 MiB of frames.
    config.pool.frames = 64 * 1024;
    LibOs::new(config).expect("libOS starts")
}

/// An echo server on its own thread; stops (and returns its stats) when dropped via `stop`.
struct ServerThread {
    addr: SocketAddrV4,
    stop: std::sync::Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<Result<ServerStats, Error>>>,
}

impl ServerThread {
    fn start(name: LibOsName, opts: ServeOptions) -> ServerThread {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut libos = libos(name);
            let server = Server::bind(&mut libos, opts)?;
            tx.send(server.local_addr()).unwrap();
            server.run(&mut libos, Some(&flag))
        });
        let addr = rx.recv().expect("server binds");
        ServerThread {
            addr,
            stop,
            handle: Some(handle),
        }
    }

    /// Raises the stop flag and returns the server's stats.
    fn stop(self) -> ServerStats {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the server to return by itself (after `max_connections`).
    fn join(mut self) -> ServerStats {
        let handle = self.handle.take().expect("stopped once");
        handle.join().expect("server thread").expect("server ran")
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Where a test server listens: loopback for libOSes over Linux sockets; any address for the
/// user-space stack, whose own address `Server::local_addr` then reports.
fn listen_on(name: LibOsName) -> SocketAddrV4 {
    if over_linux_sockets(name) {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    }
}

/// Whether the libOS talks through Linux sockets, so it can reach a `std::net` peer.
fn over_linux_sockets(name: LibOsName) -> bool {
    matches!(name, LibOsName::Kernel | LibOsName::Uring)
}

/// Runs a closed-loop load and checks the report's counts.
fn load(
    name: LibOsName,
    addr: SocketAddrV4,
    protocol: Protocol,
    conns: usize,
    size: usize,
    count: u64,
) -> Report {
    let opts = LoadOptions {
        connections: conns,
        message_size: size,
        limit: Limit::Count(count),
        reply_timeout: Duration::from_secs(20),
        ..LoadOptions::new(addr, protocol)
    };
    let report = run_load(&mut libos(name), &opts)
        .unwrap_or_else(|e| panic!("{name} {protocol} {conns}x{size} B: {e}"));
    assert_eq!(report.messages, count, "{report}");
    assert_eq!(report.bytes, count * size as u64);
    assert_eq!(report.histogram.len(), count);
    assert_eq!(report.libos, name.as_str());
    assert_eq!(report.connections, conns);
    assert!(report.latency_us.p50 > 0.0 && report.latency_us.max >= report.latency_us.p99);
    report
}

/// Messages per size: enough to cover many round trips without making large sizes slow.
fn count_for(size: usize, conns: usize) -> u64 {
    let per_conn = match size {
        s if s >= MIB => 2,
        s if s >= 64 * KIB => 8,
        _ if conns > 1 => 20,
        _ => 100,
    };
    per_conn * conns as u64
}

fn tcp_echo(conns: usize) {
    each_libos(|name| {
        // The server returns once every connection was served: its counts are then final.
        let opts = ServeOptions {
            max_connections: Some(5 * conns as u64),
            ..ServeOptions::tcp(listen_on(name))
        };
        let server = ServerThread::start(name, opts);
        let mut expected = 0u64;
        for size in [1, 64, 1460, 64 * KIB, MIB] {
            let count = count_for(size, conns);
            load(name, server.addr, Protocol::Tcp, conns, size, count);
            expected += count * size as u64;
        }
        let stats = server.join();
        assert_eq!(stats.bytes_echoed, expected, "{stats:?}");
        assert_eq!(stats.connections_accepted, 5 * conns as u64);
        assert_eq!(stats.connections_closed, 5 * conns as u64, "{stats:?}");
        assert_eq!(stats.connection_errors, 0);
    });
}

#[test]
fn tcp_echo_one_connection_every_size() {
    tcp_echo(1);
}

#[test]
fn tcp_echo_64_connections_every_size() {
    tcp_echo(64);
}

/// The largest UDP payload a libOS carries: Linux fragments IP datagrams up to 64 KiB; the
/// user-space stack does not fragment, so its datagrams fit one 1500 B frame.
fn max_datagram(name: LibOsName) -> usize {
    if over_linux_sockets(name) {
        65_507
    } else {
        1472
    }
}

/// Sizes for one socket go up to the largest datagram; with 64 sockets they stay small enough
/// that 64 datagrams in flight at once fit the server's default socket receive buffer
/// (212 KiB): UDP may drop, and a lost datagram fails the run.
fn udp_echo(conns: usize, sizes: &[usize]) {
    each_libos(|name| {
        // The user-space stack queues at most 8 packets per neighbour while ARP resolves it
        // (RFC 1122 asks for at least one) and drops the rest, as UDP may: the first burst of
        // 64 datagrams of a fresh client would lose most of its messages.
        if conns > 8 && !over_linux_sockets(name) {
            println!("skipping {conns}-socket UDP echo on '{name}': ARP queues only 8 packets");
            return;
        }
        let server = ServerThread::start(name, ServeOptions::udp(listen_on(name)));
        let mut expected = 0u64;
        for &size in sizes.iter().filter(|&&s| s <= max_datagram(name)) {
            let count = 20 * conns as u64;
            load(name, server.addr, Protocol::Udp, conns, size, count);
            expected += count * size as u64;
        }
        let stats = server.stop();
        assert_eq!(stats.bytes_echoed, expected, "{stats:?}");
        assert_eq!(stats.connection_errors, 0);
    });
}

#[test]
fn udp_echo_one_socket_every_size() {
    udp_echo(1, &[1, 64, 1460, 9000, 65_507]);
}

#[test]
fn udp_echo_64_sockets_every_size() {
    udp_echo(64, &[1, 64, 512, 1460]);
}

#[test]
fn open_loop_keeps_its_schedule_and_measures_from_it() {
    each_libos(|name| {
        let opts = ServeOptions {
            max_connections: Some(4),
            ..ServeOptions::tcp(listen_on(name))
        };
        let server = ServerThread::start(name, opts);
        let opts = LoadOptions {
            connections: 4,
            message_size: 256,
            limit: Limit::Count(400),
            rate: Some(4000.0),
            warmup: Limit::Count(40),
            ..LoadOptions::new(server.addr, Protocol::Tcp)
        };
        let report = run_load(&mut libos(name), &opts).unwrap();
        assert_eq!(report.messages, 400);
        assert_eq!(report.mode, "open");
        // 400 messages at 4000/s take 0.1 s: the client must not run ahead of its schedule.
        assert!(report.elapsed_s >= 0.099, "{report}");
        assert!(report.msgs_per_s <= 4000.0 * 1.02, "{report}");
        let stats = server.join();
        assert_eq!(stats.bytes_echoed, 440 * 256);
    });
}

#[test]
fn a_duration_limit_sends_for_that_long_and_drains() {
    each_libos(|name| {
        let opts = ServeOptions {
            max_connections: Some(2),
            ..ServeOptions::tcp(listen_on(name))
        };
        let server = ServerThread::start(name, opts);
        let opts = LoadOptions {
            connections: 2,
            limit: Limit::Duration(Duration::from_millis(200)),
            ..LoadOptions::new(server.addr, Protocol::Tcp)
        };
        let report = run_load(&mut libos(name), &opts).unwrap();
        assert!(report.messages > 0, "{name}: {report}");
        assert!(report.elapsed_s >= 0.2, "{report}");
        assert_eq!(report.histogram.len(), report.messages);
        let stats = server.join();
        assert_eq!(stats.bytes_echoed, report.bytes);
    });
}

#[test]
fn the_server_stops_after_max_connections() {
    each_libos(|name| {
        let (tx, rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            let mut libos = libos(name);
            let opts = ServeOptions {
                max_connections: Some(3),
                ..ServeOptions::tcp(listen_on(name))
            };
            let server = Server::bind(&mut libos, opts)?;
            tx.send(server.local_addr()).unwrap();
            server.run(&mut libos, None)
        });
        let addr = rx.recv().unwrap();
        load(name, addr, Protocol::Tcp, 2, 100, 10);
        load(name, addr, Protocol::Tcp, 1, 100, 10);
        let stats = handle.join().unwrap().unwrap();
        assert_eq!(stats.connections_accepted, 3);
        assert_eq!(stats.connections_closed, 3);
        assert_eq!(stats.bytes_echoed, 2000);
    });
}

#[test]
fn the_report_is_a_table_and_json() {
    each_libos(|name| {
        let server = ServerThread::start(name, ServeOptions::tcp(listen_on(name)));
        let report = load(name, server.addr, Protocol::Tcp, 1, 64, 50);
        let table = report.to_string();
        let mut lines = table.lines();
        assert!(lines.next().unwrap().contains("p99.9 µs"));
        let row = lines.next().unwrap();
        assert!(
            row.starts_with(name.as_str()) && row.contains(" tcp "),
            "{row}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["libos"], name.as_str());
        assert_eq!(json["protocol"], "tcp");
        assert_eq!(json["messages"], 50);
        assert_eq!(json["bytes"], 50 * 64);
        assert_eq!(json["mode"], "closed");
        assert!(
            json["latency_us"]["p999"].as_f64().unwrap()
                >= json["latency_us"]["p50"].as_f64().unwrap()
        );
        server.stop();
    });
}

/// A "server" that echoes correctly except for one flipped byte at stream offset `bad`.
fn corrupting_server(bad: usize) -> (SocketAddrV4, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        unreachable!("bound to an IPv4 address")
    };
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut at = 0;
        let mut buf = [0u8; 4096];
        loop {
            let n = match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if (at..at + n).contains(&bad) {
                buf[bad - at] ^= 0xff;
            }
            at += n;
            if s.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    });
    (addr, handle)
}

#[test]
fn a_corrupted_echo_names_the_connection_message_and_offset() {
    each_libos(|name| {
        if !over_linux_sockets(name) {
            return;
        }
        // Message 2 (0-based) of 100 B messages, byte 37.
        let (addr, handle) = corrupting_server(237);
        let opts = LoadOptions {
            message_size: 100,
            limit: Limit::Count(5),
            ..LoadOptions::new(addr, Protocol::Tcp)
        };
        let e = run_load(&mut libos(name), &opts).unwrap_err();
        match e {
            Error::Mismatch {
                connection,
                message,
                offset,
                expected,
                got,
            } => {
                assert_eq!((connection, message, offset), (0, 2, 37));
                assert_eq!(got, expected ^ 0xff);
            }
            other => panic!("expected a mismatch, got {other}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("connection 0") && text.contains("byte 37"),
            "{text}"
        );
        handle.join().unwrap();
    });
}

#[test]
fn connection_refused_and_bad_options_are_errors_not_panics() {
    each_libos(|name| {
        // A port nobody listens on: bound, then closed.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let std::net::SocketAddr::V4(free) = free else {
            unreachable!()
        };
        if over_linux_sockets(name) {
            let e = run_load(&mut libos(name), &LoadOptions::new(free, Protocol::Tcp)).unwrap_err();
            assert_eq!(
                e.api_kind(),
                Some(bypass::ErrorKind::ConnectionRefused),
                "{e}"
            );
            assert!(e.to_string().contains(&free.to_string()), "{e}");
        }

        let too_big = LoadOptions {
            message_size: 70_000,
            ..LoadOptions::new(free, Protocol::Udp)
        };
        let e = run_load(&mut libos(name), &too_big).unwrap_err();
        assert!(
            matches!(e, Error::Options(_)) && e.to_string().contains("65507"),
            "{e}"
        );

        let mut l = libos(name);
        let server = Server::bind(&mut l, ServeOptions::tcp(listen_on(name))).unwrap();
        let e = Server::bind(&mut l, ServeOptions::tcp(server.local_addr()))
            .err()
            .expect("second bind fails");
        assert_eq!(e.api_kind(), Some(bypass::ErrorKind::AddressInUse), "{e}");
        let udp_max = ServeOptions {
            max_connections: Some(1),
            ..ServeOptions::udp(listen_on(name))
        };
        assert!(matches!(
            Server::bind(&mut l, udp_max),
            Err(Error::Options(_))
        ));
    });
}

#[test]
fn warm_up_messages_are_echoed_but_not_reported() {
    each_libos(|name| {
        let server = ServerThread::start(name, ServeOptions::udp(listen_on(name)));
        let opts = LoadOptions {
            connections: 3,
            message_size: 512,
            limit: Limit::Count(30),
            warmup: Limit::Count(12),
            ..LoadOptions::new(server.addr, Protocol::Udp)
        };
        let report = run_load(&mut libos(name), &opts).unwrap();
        assert_eq!(report.messages, 30);
        assert_eq!(report.histogram.len(), 30);
        let stats = server.stop();
        assert_eq!(stats.bytes_echoed, 42 * 512);
        assert_eq!(stats.pops, 42);
    });
}
