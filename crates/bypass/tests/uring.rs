//! What is particular to the `uring` libOS: the provided-buffer ring recycling hundreds of
//! receive buffers, zero-copy pushes, and closing sockets with submissions in flight.

use std::time::Duration;

use bypass::{Config, ErrorKind, LibOs, LibOsName, QDesc, QValue, SocketKind};

const LONG: Option<Duration> = Some(Duration::from_secs(30));

fn uring() -> LibOs {
    LibOs::new(Config::with_libos(LibOsName::Uring)).expect("the uring libOS starts")
}

fn pair(libos: &mut LibOs) -> (QDesc, QDesc) {
    let l = libos.socket(SocketKind::Stream).unwrap();
    libos.bind(l, "127.0.0.1:0".parse().unwrap()).unwrap();
    libos.listen(l, 16).unwrap();
    let addr = libos.local_addr(l).unwrap();
    let c = libos.socket(SocketKind::Stream).unwrap();
    let cqt = libos.connect(c, addr).unwrap();
    let aqt = libos.accept(l).unwrap();
    let QValue::Accepted { qd: s, .. } = libos.wait(aqt, LONG).unwrap().value else {
        panic!("accept failed")
    };
    libos.wait(cqt, LONG).unwrap().ok().unwrap();
    libos.close(l).unwrap();
    (c, s)
}

#[test]
fn a_32_mib_stream_recycles_the_receive_ring_and_keeps_every_byte() {
    let mut libos = uring();
    let (c, s) = pair(&mut libos);
    let total = 32 << 20;
    let piece = 1 << 20; // zero-copy pushes (above the threshold), 16 pool chunks each
    let data: Vec<u8> = (0..total)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    let mut pushes = Vec::new();
    let mut got = Vec::with_capacity(total);
    let mut next_push = 0;
    // Keep up to four pushes in flight while popping, so the receive side drains as it goes.
    while got.len() < total {
        while next_push < total && pushes.len() < 4 {
            let sga = libos
                .sga_from_slice(&data[next_push..next_push + piece])
                .unwrap();
            pushes.push(libos.push(c, sga).unwrap());
            next_push += piece;
        }
        let pop = libos.pop(s).unwrap();
        let mut waiting = pushes.clone();
        waiting.push(pop);
        loop {
            let (i, r) = libos.wait_any(&waiting, LONG).unwrap();
            let qt = waiting.swap_remove(i);
            if qt == pop {
                got.extend_from_slice(&r.into_sga().unwrap().to_vec());
                break;
            }
            assert!(
                matches!(r.value, QValue::Pushed { bytes } if bytes == piece),
                "{r:?}"
            );
            pushes.retain(|&p| p != qt);
        }
    }
    for qt in pushes {
        libos.wait(qt, LONG).unwrap().ok().unwrap();
    }
    assert_eq!(got.len(), total);
    assert!(got == data, "the bytes differ");
}

#[test]
fn closing_sockets_with_submissions_in_flight_cancels_them_and_the_libos_carries_on() {
    let mut libos = uring();
    for _ in 0..3 {
        let (c, s) = pair(&mut libos);
        // A pop armed on the client, and a large push the server never reads in full.
        let pop = libos.pop(c).unwrap();
        let big = libos.sga_from_slice(&vec![7u8; 8 << 20]).unwrap();
        let push = libos.push(c, big).unwrap();
        libos.poll().unwrap();
        libos.close(c).unwrap();
        for qt in [pop, push] {
            let r = libos.wait(qt, LONG).unwrap();
            match &r.value {
                QValue::Failed(e) => assert!(
                    matches!(e.kind(), ErrorKind::Canceled | ErrorKind::ConnectionReset),
                    "{e}"
                ),
                QValue::Pushed { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        // The other end sees the data that made it, then the end of the stream or a reset.
        loop {
            let qt = libos.pop(s).unwrap();
            match libos.wait(qt, LONG).unwrap().value {
                QValue::Popped { sga, .. } => assert!(sga.to_vec().iter().all(|&b| b == 7)),
                QValue::EndOfStream => break,
                QValue::Failed(e) => {
                    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        libos.close(s).unwrap();
    }
    // Still working: a fresh pair exchanges data.
    let (c, s) = pair(&mut libos);
    let qt = libos
        .push(c, libos.sga_from_slice(b"after").unwrap())
        .unwrap();
    libos.wait(qt, LONG).unwrap().ok().unwrap();
    let qt = libos.pop(s).unwrap();
    assert_eq!(
        libos.wait(qt, LONG).unwrap().into_sga().unwrap().to_vec(),
        b"after"
    );
}

#[test]
fn blocking_waits_sleep_in_the_ring_and_still_see_every_completion() {
    let mut config = Config::with_libos(LibOsName::Uring);
    config.poll = bypass::PollMode::Block;
    let mut libos = LibOs::new(config).unwrap();
    let (c, s) = pair(&mut libos);
    for round in 0..20u8 {
        let pop = libos.pop(s).unwrap();
        // Nothing to receive yet: a short wait times out and leaves the pop pending.
        let e = libos.wait(pop, Some(Duration::from_millis(5))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
        let msg = vec![round; 100 + usize::from(round)];
        let push = libos.push(c, libos.sga_from_slice(&msg).unwrap()).unwrap();
        let (i, r) = libos.wait_any(&[pop, push], LONG).unwrap();
        let other = if i == 0 { push } else { pop };
        let r2 = libos.wait(other, LONG).unwrap();
        let popped = if i == 0 { r } else { r2 };
        assert_eq!(popped.into_sga().unwrap().to_vec(), msg);
    }
}

#[test]
fn data_sent_by_another_thread_reaches_a_spinning_and_a_sleeping_libos() {
    // Every receive here is completed by the kernel on behalf of a peer on another thread
    // while the LibOs spins on its ring (or sleeps in it): the LibOs must notice the task work
    // the kernel leaves it and collect the completion, round trip after round trip.
    for mode in [bypass::PollMode::Spin, bypass::PollMode::Block] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let rounds = 200u32;
        let len = |round: u32| 16 + round as usize % 200;
        let total: usize = (0..rounds).map(len).sum();
        let peer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            let mut buf = [0u8; 512];
            let mut echoed = 0;
            while echoed < total {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the LibOs closed the connection early");
                echoed += n;
                // Echo each byte plus one, so an echo cannot pass for the message itself.
                let reply: Vec<u8> = buf[..n].iter().map(|b| b.wrapping_add(1)).collect();
                stream.write_all(&reply).unwrap();
            }
        });
        let mut config = Config::with_libos(LibOsName::Uring);
        config.poll = mode;
        let mut libos = LibOs::new(config).unwrap();
        let c = libos.socket(SocketKind::Stream).unwrap();
        let qt = libos.connect(c, addr).unwrap();
        libos.wait(qt, LONG).unwrap().ok().unwrap();
        for round in 0..rounds {
            let msg: Vec<u8> = (0..len(round)).map(|i| (i as u32 + round) as u8).collect();
            let push = libos.push(c, libos.sga_from_slice(&msg).unwrap()).unwrap();
            libos.wait(push, LONG).unwrap().ok().unwrap();
            let want: Vec<u8> = msg.iter().map(|b| b.wrapping_add(1)).collect();
            let mut got = Vec::new();
            while got.len() < want.len() {
                let pop = libos.pop(c).unwrap();
                got.extend(libos.wait(pop, LONG).unwrap().into_sga().unwrap().to_vec());
            }
            assert_eq!(got, want, "{mode:?}, round {round}");
        }
        libos.close(c).unwrap();
        peer.join().unwrap();
    }
}

#[test]
fn closing_a_connection_with_a_receive_armed_sends_the_fin_at_once() {
    use std::io::Read;
    let mut libos = uring();
    let l = libos.socket(SocketKind::Stream).unwrap();
    libos.bind(l, "127.0.0.1:0".parse().unwrap()).unwrap();
    libos.listen(l, 4).unwrap();
    let addr = libos.local_addr(l).unwrap();
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let aqt = libos.accept(l).unwrap();
    let QValue::Accepted { qd: s, .. } = libos.wait(aqt, LONG).unwrap().value else {
        panic!("accept failed")
    };
    // A pop arms the multishot receive; nothing arrives for it.
    let pop = libos.pop(s).unwrap();
    assert!(libos.wait(pop, Some(Duration::from_millis(20))).is_err());
    libos.close(s).unwrap();
    // No further poll of the LibOs: the peer still sees end of stream.
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let n = peer
        .read(&mut buf)
        .expect("end of stream, not a timeout: the FIN was sent at close");
    assert_eq!(n, 0);
    libos.close(l).unwrap();
}
