//! The `sim` libOS: the user-space stack over the in-process wire, through the public API.
//! Each test uses its own wire (named after the process and test) and two threads, each with
//! its own LibOs, like two hosts.

use std::net::SocketAddrV4;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bypass::{Config, ErrorKind, LibOs, LibOsName, QValue, SocketKind};

mod common;

const LONG: Option<Duration> = Some(Duration::from_secs(30));

fn sim(wire: &str, ip: &str) -> LibOs {
    let mut config = Config::with_libos(LibOsName::Sim);
    config.sim.wire = format!("{wire}-{}", std::process::id());
    config.net.ip = Some(ip.to_string());
    LibOs::new(config).expect("sim libOS starts")
}

/// A server thread on 10.0.0.1 that echoes every connection until end of stream, for `conns`
/// connections; sends `()` once listening.
fn echo_server(
    wire: &'static str,
    conns: usize,
    ready: mpsc::Sender<()>,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut libos = sim(wire, "10.0.0.1/24");
        let l = libos.socket(SocketKind::Stream).unwrap();
        libos.bind(l, "10.0.0.1:7".parse().unwrap()).unwrap();
        libos.listen(l, 64).unwrap();
        ready.send(()).unwrap();
        let echoed = common::echo_server(&mut libos, l, conns, LONG.unwrap());
        // Let the last FIN/ACKs out before the stack goes away.
        common::linger(&mut libos, Duration::from_millis(50));
        echoed
    })
}

fn pop_exact(libos: &mut LibOs, qd: bypass::QDesc, len: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        let qt = libos.pop(qd).unwrap();
        match libos.wait(qt, LONG).unwrap().value {
            QValue::Popped { sga, .. } => got.extend_from_slice(&sga.to_vec()),
            other => panic!("pop gave {other:?} after {} of {len} B", got.len()),
        }
    }
    assert_eq!(got.len(), len, "more bytes than were sent");
    got
}

#[test]
fn echo_over_the_user_space_stack_returns_every_byte() {
    let (tx, rx) = mpsc::channel();
    let server = echo_server("echo", 1, tx);
    rx.recv().unwrap();
    let mut libos = sim("echo", "10.0.0.2/24");
    let c = libos.socket(SocketKind::Stream).unwrap();
    let qt = libos.connect(c, "10.0.0.1:7".parse().unwrap()).unwrap();
    assert!(matches!(
        libos.wait(qt, LONG).unwrap().value,
        QValue::Connected
    ));
    let mut total = 0;
    for len in [1usize, 64, 1460, 1461, 65_536, 1 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        let push = libos.push(c, libos.sga_from_slice(&data).unwrap()).unwrap();
        let back = pop_exact(&mut libos, c, len);
        libos.wait(push, LONG).unwrap().ok().unwrap();
        assert!(back == data, "a {len} B message came back different");
        total += len as u64;
    }
    libos.close(c).unwrap();
    let _ = libos.wait_next_n(1, Some(Duration::from_millis(50)), |_| true);
    assert_eq!(server.join().unwrap(), total);
}

#[test]
fn many_connections_over_the_user_space_stack() {
    let (tx, rx) = mpsc::channel();
    let server = echo_server("many", 16, tx);
    rx.recv().unwrap();
    let mut libos = sim("many", "10.0.0.2/24");
    let server_addr: SocketAddrV4 = "10.0.0.1:7".parse().unwrap();
    let mut qds = Vec::new();
    for _ in 0..16 {
        let c = libos.socket(SocketKind::Stream).unwrap();
        let qt = libos.connect(c, server_addr).unwrap();
        libos.wait(qt, LONG).unwrap().ok().unwrap();
        qds.push(c);
    }
    for round in 0..4 {
        for (i, c) in qds.iter().enumerate() {
            let msg = format!("round {round} connection {i}").into_bytes();
            let qt = libos.push(*c, libos.sga_from_slice(&msg).unwrap()).unwrap();
            libos.wait(qt, LONG).unwrap().ok().unwrap();
        }
        for (i, c) in qds.iter().enumerate() {
            let msg = format!("round {round} connection {i}").into_bytes();
            assert_eq!(pop_exact(&mut libos, *c, msg.len()), msg);
        }
    }
    for c in qds {
        libos.close(c).unwrap();
    }
    let _ = libos.wait_next_n(1, Some(Duration::from_millis(50)), |_| true);
    server.join().unwrap();
}

#[test]
fn connecting_where_nobody_listens_is_refused() {
    let (tx, rx) = mpsc::channel();
    // A host on the wire that listens on port 7 only.
    let server = echo_server("refused", 1, tx);
    rx.recv().unwrap();
    let mut libos = sim("refused", "10.0.0.2/24");
    let c = libos.socket(SocketKind::Stream).unwrap();
    let qt = libos.connect(c, "10.0.0.1:9".parse().unwrap()).unwrap();
    let r = libos.wait(qt, LONG).unwrap();
    assert_eq!(
        r.error().map(|e| e.kind()),
        Some(ErrorKind::ConnectionRefused),
        "{r:?}"
    );
    // Let the server finish: one real connection.
    let c = libos.socket(SocketKind::Stream).unwrap();
    let qt = libos.connect(c, "10.0.0.1:7".parse().unwrap()).unwrap();
    libos.wait(qt, LONG).unwrap().ok().unwrap();
    libos.close(c).unwrap();
    let _ = libos.wait_next_n(1, Some(Duration::from_millis(50)), |_| true);
    server.join().unwrap();
}

#[test]
fn udp_over_the_user_space_stack() {
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let mut libos = sim("udp", "10.0.0.1/24");
        let s = libos.socket(SocketKind::Datagram).unwrap();
        libos.bind(s, "10.0.0.1:9".parse().unwrap()).unwrap();
        tx.send(()).unwrap();
        for _ in 0..3 {
            let qt = libos.pop(s).unwrap();
            let r = libos.wait(qt, LONG).unwrap();
            let QValue::Popped { sga, from } = r.value else {
                panic!("{:?}", r.value)
            };
            let qt = libos.pushto(s, sga, from.unwrap()).unwrap();
            libos.wait(qt, LONG).unwrap().ok().unwrap();
        }
        let _ = libos.wait_next_n(1, Some(Duration::from_millis(20)), |_| true);
    });
    rx.recv().unwrap();
    let mut libos = sim("udp", "10.0.0.2/24");
    let s = libos.socket(SocketKind::Datagram).unwrap();
    let e = libos.pop(s).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidArgument,
        "pop before bind or send: {e}"
    );
    let server_addr: SocketAddrV4 = "10.0.0.1:9".parse().unwrap();
    for len in [1usize, 100, 1472] {
        let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
        let qt = libos
            .pushto(s, libos.sga_from_slice(&data).unwrap(), server_addr)
            .unwrap();
        libos.wait(qt, LONG).unwrap().ok().unwrap();
        let qt = libos.pop(s).unwrap();
        let r = libos.wait(qt, LONG).unwrap();
        let QValue::Popped { sga, from } = r.value else {
            panic!("{:?}", r.value)
        };
        assert_eq!(from, Some(server_addr));
        assert!(
            sga.to_vec() == data,
            "a {len} B datagram came back different"
        );
    }
    server.join().unwrap();
}

#[test]
fn binding_an_address_that_is_not_ours_names_ours() {
    let mut libos = sim("bind", "10.0.0.5/24");
    let s = libos.socket(SocketKind::Stream).unwrap();
    let e = libos.bind(s, "10.0.0.6:80".parse().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddressNotAvailable);
    assert!(e.message().contains("10.0.0.5"), "{e}");
    libos.bind(s, "10.0.0.5:80".parse().unwrap()).unwrap();
    let t = libos.socket(SocketKind::Stream).unwrap();
    assert_eq!(
        libos
            .bind(t, "0.0.0.0:80".parse().unwrap())
            .unwrap_err()
            .kind(),
        ErrorKind::AddressInUse
    );
}

/// Polls both LibOses (one thread, like `bypass bench echo --libos sim`) until `qt` of `owner`
/// completes.
fn drive(owner: &mut LibOs, other: &mut LibOs, qt: bypass::QToken) -> QValue {
    let deadline = std::time::Instant::now() + LONG.unwrap();
    while !owner.is_done(qt).unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "{qt:?} never completed"
        );
        owner.poll().unwrap();
        other.poll().unwrap();
    }
    owner.wait(qt, None).unwrap().value
}

#[test]
fn one_pop_gathers_the_segments_already_received_then_end_of_stream_follows() {
    // Both LibOses in this thread: frames cross the wire as moved buffers.
    let mut server = sim("gather", "10.0.0.1/24");
    let mut client = sim("gather", "10.0.0.2/24");
    let l = server.socket(SocketKind::Stream).unwrap();
    server.bind(l, "10.0.0.1:7".parse().unwrap()).unwrap();
    server.listen(l, 4).unwrap();
    let accept = server.accept(l).unwrap();
    let c = client.socket(SocketKind::Stream).unwrap();
    let connect = client.connect(c, "10.0.0.1:7".parse().unwrap()).unwrap();
    assert!(matches!(
        drive(&mut client, &mut server, connect),
        QValue::Connected
    ));
    let QValue::Accepted { qd: s, .. } = drive(&mut server, &mut client, accept) else {
        panic!("accept failed");
    };
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let push = client
        .push(c, client.sga_from_slice(&data).unwrap())
        .unwrap();
    drive(&mut client, &mut server, push);
    client.close(c).unwrap();
    // Let every segment and the FIN arrive before the server pops.
    let settle = std::time::Instant::now() + Duration::from_millis(100);
    while std::time::Instant::now() < settle {
        server.poll().unwrap();
        client.poll().unwrap();
    }
    let pop = server.pop(s).unwrap();
    let QValue::Popped { sga: first, .. } = drive(&mut server, &mut client, pop) else {
        panic!("first pop failed");
    };
    assert_eq!(
        first.len(),
        64 * 1024,
        "one pop takes up to 64 KiB of what arrived"
    );
    assert!(first.num_segments() > 1, "gathered from several segments");
    let pop = server.pop(s).unwrap();
    let QValue::Popped { sga: rest, .. } = drive(&mut server, &mut client, pop) else {
        panic!("second pop failed");
    };
    let mut got = first.to_vec();
    got.extend_from_slice(&rest.to_vec());
    assert!(got == data, "the bytes came back different");
    let pop = server.pop(s).unwrap();
    assert!(matches!(
        drive(&mut server, &mut client, pop),
        QValue::EndOfStream
    ));
}
