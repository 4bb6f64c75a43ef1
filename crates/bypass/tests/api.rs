//! The queue API's contract, exercised on loopback through every libOS over Linux sockets:
//! `kernel` (epoll) and `uring` (io_uring). Each contract test is a function of the libOS name;
//! the macro at the end runs it once per libOS, in modules named after them.

use std::net::SocketAddrV4;
use std::time::Duration;

use bypass::{Config, ErrorKind, LibOs, LibOsName, OpCode, QDesc, QValue, SocketKind};

const LOOPBACK_ANY: &str = "127.0.0.1:0";
const LONG: Option<Duration> = Some(Duration::from_secs(20));

fn libos(name: LibOsName) -> LibOs {
    LibOs::new(Config::with_libos(name)).unwrap_or_else(|e| panic!("the {name} libOS starts: {e}"))
}

/// A listening TCP socket on an ephemeral loopback port.
fn listener(libos: &mut LibOs) -> (QDesc, SocketAddrV4) {
    let qd = libos.socket(SocketKind::Stream).unwrap();
    libos.bind(qd, LOOPBACK_ANY.parse().unwrap()).unwrap();
    libos.listen(qd, 128).unwrap();
    let addr = libos.local_addr(qd).unwrap();
    (qd, addr)
}

/// A connected pair (client, server side) within one LibOs.
fn pair(libos: &mut LibOs) -> (QDesc, QDesc) {
    let (lqd, addr) = listener(libos);
    let c = libos.socket(SocketKind::Stream).unwrap();
    let cqt = libos.connect(c, addr).unwrap();
    let aqt = libos.accept(lqd).unwrap();
    let accepted = libos.wait(aqt, LONG).unwrap();
    assert_eq!(accepted.opcode, OpCode::Accept);
    let QValue::Accepted { qd: s, peer } = accepted.value else {
        panic!("accept gave {:?}", accepted.value)
    };
    assert_eq!(peer.ip(), addr.ip());
    assert!(matches!(
        libos.wait(cqt, LONG).unwrap().value,
        QValue::Connected
    ));
    libos.close(lqd).unwrap();
    (c, s)
}

/// Pops from `qd` until `len` bytes have arrived; returns them.
fn pop_exact(libos: &mut LibOs, qd: QDesc, len: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        let qt = libos.pop(qd).unwrap();
        let r = libos.wait(qt, LONG).unwrap();
        match r.value {
            QValue::Popped { sga, .. } => got.extend_from_slice(&sga.to_vec()),
            other => panic!("pop gave {other:?} after {} of {len} bytes", got.len()),
        }
    }
    assert_eq!(got.len(), len, "more bytes than were sent");
    got
}

fn stream_transfer_delivers_every_byte_in_both_directions(name: LibOsName) {
    let mut libos = libos(name);
    let (c, s) = pair(&mut libos);
    for len in [1usize, 100, 1460, 65_536, 1 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let qt = libos.push(c, libos.sga_from_slice(&data).unwrap()).unwrap();
        // Read while the push is in flight: a 1 MiB push does not fit the socket buffers.
        let got = pop_exact(&mut libos, s, len);
        let r = libos.wait(qt, LONG).unwrap();
        assert!(
            matches!(r.value, QValue::Pushed { bytes } if bytes == len),
            "{r:?}"
        );
        assert!(got == data, "bytes differ for a {len} B message");
        let qt = libos.push(s, libos.sga_from_slice(&got).unwrap()).unwrap();
        let back = pop_exact(&mut libos, c, len);
        libos.wait(qt, LONG).unwrap().ok().unwrap();
        assert!(back == data, "bytes differ on the way back for {len} B");
    }
}

fn two_pops_on_one_stream_complete_in_issue_order(name: LibOsName) {
    let mut libos = libos(name);
    let (c, s) = pair(&mut libos);
    let first = libos.pop(s).unwrap();
    let second = libos.pop(s).unwrap();
    let qt = libos
        .push(c, libos.sga_from_slice(b"one").unwrap())
        .unwrap();
    libos.wait(qt, LONG).unwrap().ok().unwrap();
    let r = libos.wait(first, LONG).unwrap();
    assert_eq!(r.into_sga().unwrap().to_vec(), b"one");
    assert!(!libos.is_done(second).unwrap());
    let qt = libos
        .push(c, libos.sga_from_slice(b"two").unwrap())
        .unwrap();
    libos.wait(qt, LONG).unwrap().ok().unwrap();
    assert_eq!(
        libos
            .wait(second, LONG)
            .unwrap()
            .into_sga()
            .unwrap()
            .to_vec(),
        b"two"
    );
}

fn wait_any_returns_the_completed_token_and_leaves_the_others_valid(name: LibOsName) {
    let mut libos = libos(name);
    let (c1, s1) = pair(&mut libos);
    let (_c2, s2) = pair(&mut libos);
    let pops: Vec<_> = (0..8)
        .map(|i| {
            if i == 5 {
                libos.pop(s1).unwrap()
            } else {
                libos.pop(s2).unwrap()
            }
        })
        .collect();
    // Only s1 gets data: the token at index 5 completes.
    let qt = libos.push(c1, libos.sga_from_slice(b"x").unwrap()).unwrap();
    libos.wait(qt, LONG).unwrap();
    let (i, r) = libos.wait_any(&pops, LONG).unwrap();
    assert_eq!(i, 5);
    assert_eq!(r.qd, s1);
    assert_eq!(r.qt, pops[5]);
    assert_eq!(r.into_sga().unwrap().to_vec(), b"x");
    for (j, qt) in pops.iter().enumerate() {
        if j != 5 {
            assert!(!libos.is_done(*qt).unwrap(), "token {j} is still pending");
        }
    }
    let e = libos.wait(pops[5], Some(Duration::ZERO)).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::UnknownToken,
        "a spent token is an error: {e}"
    );
}

fn a_timeout_leaves_the_token_valid(name: LibOsName) {
    let mut libos = libos(name);
    let (c, s) = pair(&mut libos);
    let qt = libos.pop(s).unwrap();
    let e = libos.wait(qt, Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let e = libos.wait_any(&[qt], Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let push = libos
        .push(c, libos.sga_from_slice(b"late").unwrap())
        .unwrap();
    libos.wait(push, LONG).unwrap();
    assert_eq!(
        libos.wait(qt, LONG).unwrap().into_sga().unwrap().to_vec(),
        b"late"
    );
}

fn wait_next_n_delivers_completions_of_any_token(name: LibOsName) {
    let mut libos = libos(name);
    let (c, s) = pair(&mut libos);
    let pop = libos.pop(s).unwrap();
    let push = libos
        .push(c, libos.sga_from_slice(b"abc").unwrap())
        .unwrap();
    let mut seen = Vec::new();
    let n = libos
        .wait_next_n(2, LONG, |r| {
            seen.push((r.qt, r.opcode));
            true
        })
        .unwrap();
    assert_eq!(n, 2);
    assert!(seen.contains(&(pop, OpCode::Pop)) && seen.contains(&(push, OpCode::Push)));
    assert_eq!(
        libos.wait(pop, None).unwrap_err().kind(),
        ErrorKind::UnknownToken
    );
    let e = libos
        .wait_next_n(1, Some(Duration::from_millis(10)), |_| true)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
}

fn pop_after_the_peer_closes_is_end_of_stream(name: LibOsName) {
    let mut libos = libos(name);
    let (c, s) = pair(&mut libos);
    let qt = libos
        .push(c, libos.sga_from_slice(b"last words").unwrap())
        .unwrap();
    libos.wait(qt, LONG).unwrap();
    libos.close(c).unwrap();
    assert_eq!(pop_exact(&mut libos, s, 10), b"last words");
    let qt = libos.pop(s).unwrap();
    assert!(matches!(
        libos.wait(qt, LONG).unwrap().value,
        QValue::EndOfStream
    ));
}

fn closing_a_queue_cancels_its_pending_operations(name: LibOsName) {
    let mut libos = libos(name);
    let (_c, s) = pair(&mut libos);
    let qt = libos.pop(s).unwrap();
    libos.close(s).unwrap();
    let r = libos.wait(qt, LONG).unwrap();
    assert_eq!(r.error().map(|e| e.kind()), Some(ErrorKind::Canceled));
    assert_eq!(libos.pop(s).unwrap_err().kind(), ErrorKind::BadQueue);
}

fn udp_datagrams_carry_their_sender(name: LibOsName) {
    let mut libos = libos(name);
    let a = libos.socket(SocketKind::Datagram).unwrap();
    let b = libos.socket(SocketKind::Datagram).unwrap();
    libos.bind(a, LOOPBACK_ANY.parse().unwrap()).unwrap();
    libos.bind(b, LOOPBACK_ANY.parse().unwrap()).unwrap();
    let (aa, ba) = (libos.local_addr(a).unwrap(), libos.local_addr(b).unwrap());
    for len in [1usize, 512, 9000, 65_507] {
        let data: Vec<u8> = (0..len).map(|i| (i ^ len) as u8).collect();
        let pop = libos.pop(b).unwrap();
        let push = libos
            .pushto(a, libos.sga_from_slice(&data).unwrap(), ba)
            .unwrap();
        libos.wait(push, LONG).unwrap().ok().unwrap();
        let r = libos.wait(pop, LONG).unwrap();
        let QValue::Popped { sga, from } = r.value else {
            panic!("{:?}", r.value)
        };
        assert_eq!(from, Some(aa));
        assert!(sga.to_vec() == data, "datagram of {len} B differs");
    }
    let too_big = libos.sga_alloc(65_508).unwrap();
    assert_eq!(
        libos.pushto(a, too_big, ba).unwrap_err().kind(),
        ErrorKind::MessageTooLong
    );
}

fn errors_are_typed_and_say_what_to_do(name: LibOsName) {
    let mut libos = libos(name);
    // Unknown queue descriptor.
    let e = libos.pop(QDesc::from_u32(12345)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadQueue);
    assert!(e.message().contains("not an open queue"), "{e}");
    // A call on the wrong kind of queue.
    let udp = libos.socket(SocketKind::Datagram).unwrap();
    libos.bind(udp, LOOPBACK_ANY.parse().unwrap()).unwrap();
    assert_eq!(
        libos.accept(udp).unwrap_err().kind(),
        ErrorKind::WrongQueueKind
    );
    assert_eq!(
        libos.listen(udp, 16).unwrap_err().kind(),
        ErrorKind::WrongQueueKind
    );
    // An address in use.
    let (_l, addr) = listener(&mut libos);
    let other = libos.socket(SocketKind::Stream).unwrap();
    let e = libos.bind(other, addr).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AddressInUse);
    assert!(e.message().contains(&addr.to_string()), "{e}");
    // Connection refused: an address nobody listens on (bound then closed, so it is free).
    let probe = libos.socket(SocketKind::Stream).unwrap();
    libos.bind(probe, LOOPBACK_ANY.parse().unwrap()).unwrap();
    let free = libos.local_addr(probe).unwrap();
    libos.close(probe).unwrap();
    let c = libos.socket(SocketKind::Stream).unwrap();
    let qt = libos.connect(c, free).unwrap();
    let r = libos.wait(qt, LONG).unwrap();
    let e = r.error().expect("connect fails");
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert!(e.message().contains("refused"), "{e}");
    // An empty push.
    let (c2, _s2) = pair(&mut libos);
    assert_eq!(
        libos.push(c2, bypass::Sga::new()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    // Push on an unconnected stream.
    let fresh = libos.socket(SocketKind::Stream).unwrap();
    assert_eq!(
        libos
            .push(fresh, libos.sga_from_slice(b"x").unwrap())
            .unwrap_err()
            .kind(),
        ErrorKind::NotConnected
    );
    // Listen before bind.
    assert_eq!(
        libos.listen(fresh, 1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn malformed_configuration_and_unknown_libos_are_config_errors() {
    let e = Config::from_toml("libos = 'kernel'\n[pool]\nframes = 'many'\n").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.message().contains("frames"), "{e}");
    let e = Config::from_toml("libos = 'warp'").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = Config::from_toml("lbios = 'kernel'").unwrap_err();
    assert!(e.message().contains("lbios"), "a typo is named: {e}");
    let e = "warp".parse::<LibOsName>().unwrap_err();
    assert!(e.message().contains("kernel"), "lists the choices: {e}");
    let e = Config::from_toml("[pool]\nframes = 1").unwrap_err();
    assert!(e.message().contains("pool.frames"), "{e}");
    let e = Config::load(std::path::Path::new("/nonexistent/bypass.toml")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.message().contains("/nonexistent/bypass.toml"), "{e}");
    let ok =
        Config::from_toml("libos = 'kernel'\npoll = 'block'\n[pool]\nframes = 1024\n").unwrap();
    assert_eq!(ok.pool.frames, 1024);
}

fn many_concurrent_connections_each_get_their_own_bytes(name: LibOsName) {
    let mut libos = libos(name);
    let mut pairs = Vec::new();
    for _ in 0..64 {
        pairs.push(pair(&mut libos));
    }
    let mut pops = Vec::new();
    for (i, (c, s)) in pairs.iter().enumerate() {
        let msg = format!("connection {i} says hello").into_bytes();
        let qt = libos.push(*c, libos.sga_from_slice(&msg).unwrap()).unwrap();
        libos.wait(qt, LONG).unwrap().ok().unwrap();
        pops.push((libos.pop(*s).unwrap(), msg));
    }
    let mut pending: Vec<_> = pops.iter().map(|(qt, _)| *qt).collect();
    while !pending.is_empty() {
        let (i, r) = libos.wait_any(&pending, LONG).unwrap();
        let qt = pending.swap_remove(i);
        let expected = &pops.iter().find(|(t, _)| *t == qt).unwrap().1;
        // Small messages over loopback arrive whole.
        assert_eq!(&r.into_sga().unwrap().to_vec(), expected);
    }
}

/// Runs each contract test against every libOS over Linux sockets.
macro_rules! on_socket_liboses {
    ($($test:ident),* $(,)?) => {
        mod kernel {
            $( #[test] fn $test() { super::$test(bypass::LibOsName::Kernel) } )*
        }
        mod uring {
            $( #[test] fn $test() { super::$test(bypass::LibOsName::Uring) } )*
        }
    };
}

on_socket_liboses!(
    stream_transfer_delivers_every_byte_in_both_directions,
    two_pops_on_one_stream_complete_in_issue_order,
    wait_any_returns_the_completed_token_and_leaves_the_others_valid,
    a_timeout_leaves_the_token_valid,
    wait_next_n_delivers_completions_of_any_token,
    pop_after_the_peer_closes_is_end_of_stream,
    closing_a_queue_cancels_its_pending_operations,
    udp_datagrams_carry_their_sender,
    errors_are_typed_and_say_what_to_do,
    many_concurrent_connections_each_get_their_own_bytes,
);
