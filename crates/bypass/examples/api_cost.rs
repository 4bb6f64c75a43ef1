//! Instructions the queue API (and, on `sim`, the user-space stack) spend per 64-byte TCP echo
//! round trip: two LibOses driven from one thread with `poll`, so nothing spins while waiting
//! and `valgrind --tool=callgrind` counts only the work. On `sim` the two meet on an
//! in-process wire; on `kernel` over loopback (the kernel's share is not counted); on `shm`
//! over a shared-memory queue (no system call at all: everything counted is the queue API and
//! the channel).
//!
//! ```text
//! cargo build --release -p bypass --example api_cost
//! valgrind --tool=callgrind target/release/examples/api_cost 20000 [sim|kernel|shm]
//! valgrind --tool=callgrind target/release/examples/api_cost 20000 idle-[sim|kernel]
//! ```
//! The `idle-` modes count one turn of a spinning wait that finds nothing (a pop parked on a
//! connection nobody writes to), per turn instead of per round trip.
//! Subtract a run with fewer round trips to remove the set-up.

use std::net::SocketAddrV4;

use bypass::{Config, LibOs, LibOsName, QDesc, QToken, QValue, SocketKind};

fn drive(a: &mut LibOs, b: &mut LibOs, qt: QToken, on_a: bool) -> bypass::QResult {
    loop {
        a.poll().expect("poll");
        b.poll().expect("poll");
        let owner = if on_a { &mut *a } else { &mut *b };
        if owner.is_done(qt).expect("token") {
            return owner.wait(qt, None).expect("wait");
        }
    }
}

fn main() {
    let round_trips: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let mode = std::env::args().nth(2).unwrap_or_else(|| "sim".into());
    if let Some(libos) = mode.strip_prefix("idle-") {
        return idle_turns(round_trips, libos);
    }
    let (mut server, mut client, s, c) = match mode.as_str() {
        "shm" => shm_pair(),
        "kernel" | "sim" => socket_pair(mode == "kernel"),
        other => panic!("unknown mode {other}: use sim, kernel, shm, idle-sim or idle-kernel"),
    };
    let msg = [7u8; 64];
    let t0 = std::time::Instant::now();
    for _ in 0..round_trips {
        let out = if mode == "shm" {
            let mut sga = client.shm_alloc(c, msg.len()).unwrap();
            let first = sga.first_mut().expect("one segment");
            first.as_mut_slice().copy_from_slice(&msg);
            sga
        } else {
            client.sga_from_slice(&msg).unwrap()
        };
        let push = client.push(c, out).unwrap();
        let spop = server.pop(s).unwrap();
        let sga = drive(&mut server, &mut client, spop, true)
            .into_sga()
            .unwrap();
        let echo = server.push(s, sga).unwrap();
        let cpop = client.pop(c).unwrap();
        let back = drive(&mut client, &mut server, cpop, true)
            .into_sga()
            .unwrap();
        assert_eq!(back.len(), 64);
        client.wait(push, None).unwrap();
        server.wait(echo, None).unwrap();
    }
    let ns = t0.elapsed().as_nanos() as f64 / round_trips as f64;
    println!("{round_trips} round trips, {ns:.0} ns each (one thread, both ends)");
    if mode == "shm" {
        let _ = client.close(c);
        let _ = server.close(s);
    }
}

/// `turns` polls of a LibOs whose only operation is a pop on a connection the peer never
/// writes to: what one turn of a spinning wait costs when it finds nothing, which is how far
/// apart a spinning end looks for the next message.
fn idle_turns(turns: u64, libos: &str) {
    let (_server, mut client, _s, c) = match libos {
        "sim" | "kernel" => socket_pair(libos == "kernel"),
        other => panic!("unknown mode idle-{other}: use idle-sim or idle-kernel"),
    };
    let pop = client.pop(c).unwrap();
    let t0 = std::time::Instant::now();
    for _ in 0..turns {
        client.poll().expect("poll");
    }
    assert!(!client.is_done(pop).unwrap(), "nothing was sent");
    let ns = t0.elapsed().as_nanos() as f64 / turns as f64;
    println!("{turns} idle turns, {ns:.0} ns each");
}

/// A TCP connection between two LibOses: over an in-process wire, or kernel sockets on loopback.
fn socket_pair(kernel: bool) -> (LibOs, LibOs, QDesc, QDesc) {
    let wire = format!("api-cost-{}", std::process::id());
    let config = |ip: &str| {
        if kernel {
            return Config::with_libos(LibOsName::Kernel);
        }
        let mut c = Config::with_libos(LibOsName::Sim);
        c.sim.wire = wire.clone();
        c.net.ip = Some(ip.to_string());
        c
    };
    let mut server = LibOs::new(config("10.9.0.1/24")).expect("server");
    let mut client = LibOs::new(config("10.9.0.2/24")).expect("client");
    let mut addr: SocketAddrV4 = "10.9.0.1:7".parse().unwrap();
    if kernel {
        addr = "127.0.0.1:0".parse().unwrap();
    }
    let l = server.socket(SocketKind::Stream).unwrap();
    server.bind(l, addr).unwrap();
    server.listen(l, 4).unwrap();
    let addr = server.local_addr(l).unwrap();
    let accept = server.accept(l).unwrap();
    let c = client.socket(SocketKind::Stream).unwrap();
    let connect = client.connect(c, addr).unwrap();
    drive(&mut client, &mut server, connect, true);
    let QValue::Accepted { qd: s, .. } = drive(&mut server, &mut client, accept, true).value else {
        panic!("accept failed")
    };
    (server, client, s, c)
}

/// A shared-memory queue between two LibOses (both ends in this process).
fn shm_pair() -> (LibOs, LibOs, QDesc, QDesc) {
    let name = format!("bypass-api-cost-{}", std::process::id());
    let mut server = LibOs::new(Config::with_libos(LibOsName::Kernel)).expect("server");
    let mut client = LibOs::new(Config::with_libos(LibOsName::Kernel)).expect("client");
    let s = server.shm_create(&name).expect("shm_create");
    let c = client.shm_open(&name).expect("shm_open");
    (server, client, s, c)
}
