//! Shared-memory queues through the queue API: two LibOs instances (in this process, or in a
//! peer process started from this test binary) joined by a named channel.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bypass::{Config, ErrorKind, LibOs, LibOsName, OpCode, QValue, SocketKind};

const LONG: Option<Duration> = Some(Duration::from_secs(20));
/// Set in the environment of this binary re-run as the peer process: the channel's name.
const PEER_ENV: &str = "BYPASS_SHM_TEST_PEER";

fn libos() -> LibOs {
    LibOs::new(Config::with_libos(LibOsName::Kernel)).expect("kernel libOS starts")
}

fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "api{}-{}-{label}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn push_and_pop_carry_whole_messages_both_ways() {
    let name = unique("pp");
    let mut a = libos();
    let mut b = libos();
    let qa = a.shm_create(&name).unwrap();
    let qb = b.shm_open(&name).unwrap();
    for (i, len) in [1usize, 100, 2000, 5000, 70_000].into_iter().enumerate() {
        let data = pattern(i as u8, len);
        // From the channel's own memory (no copy) and from the LibOs pools (copied).
        let sga = if i % 2 == 0 {
            let mut sga = a.shm_alloc(qa, len).unwrap();
            let mut at = 0;
            for seg in sga.segments_mut() {
                let n = seg.len();
                seg.as_mut_slice().copy_from_slice(&data[at..at + n]);
                at += n;
            }
            sga
        } else {
            a.sga_from_slice(&data).unwrap()
        };
        let pushed = a.push(qa, sga).unwrap();
        let r = a.wait(pushed, LONG).unwrap();
        assert!(
            matches!(r.value, QValue::Pushed { bytes } if bytes == len),
            "{r:?}"
        );
        let popped = b.pop(qb).unwrap();
        let r = b.wait(popped, LONG).unwrap();
        assert_eq!((r.opcode, r.qd), (OpCode::Pop, qb));
        assert_eq!(r.into_sga().unwrap().to_vec(), data, "message {i}");

        let back = b.sga_from_slice(&data[..len.min(3000)]).unwrap();
        let qt = b.push(qb, back).unwrap();
        b.wait(qt, LONG).unwrap().ok().unwrap();
        let qt = a.pop(qa).unwrap();
        let got = a.wait(qt, LONG).unwrap().into_sga().unwrap();
        assert_eq!(got.to_vec(), &data[..len.min(3000)]);
    }
    // Closing one side ends the other's stream.
    a.close(qa).unwrap();
    let qt = b.pop(qb).unwrap();
    assert!(matches!(
        b.wait(qt, LONG).unwrap().value,
        QValue::EndOfStream
    ));
    b.close(qb).unwrap();
}

#[test]
fn pops_complete_in_order_and_mix_with_sockets_in_wait_any() {
    let name = unique("mix");
    let mut a = libos();
    let mut b = libos();
    let qa = a.shm_create(&name).unwrap();
    let e = b.shm_create(&name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let qb = b.shm_open(&name).unwrap();
    let udp = b.socket(SocketKind::Datagram).unwrap();
    b.bind(udp, "127.0.0.1:0".parse().unwrap()).unwrap();
    let udp_addr = b.local_addr(udp).unwrap();

    let pops = [b.pop(qb).unwrap(), b.pop(qb).unwrap()];
    let udp_pop = b.pop(udp).unwrap();
    let e = b
        .wait(pops[0], Some(Duration::from_millis(10)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);

    // A datagram completes the socket's token first.
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(b"over udp", udp_addr).unwrap();
    let tokens = [pops[0], pops[1], udp_pop];
    let (i, r) = b.wait_any(&tokens, LONG).unwrap();
    assert_eq!(i, 2, "{r:?}");
    assert_eq!(r.into_sga().unwrap().to_vec(), b"over udp");

    // Two shm messages complete the two pops in the order they were issued.
    for (seed, len) in [(1u8, 10usize), (2, 20)] {
        let qt = a
            .push(qa, a.sga_from_slice(&pattern(seed, len)).unwrap())
            .unwrap();
        a.wait(qt, LONG).unwrap().ok().unwrap();
    }
    let (i, r) = b.wait_any(&pops, LONG).unwrap();
    assert_eq!(i, 0);
    assert_eq!(r.into_sga().unwrap().to_vec(), pattern(1, 10));
    let r = b.wait(pops[1], LONG).unwrap();
    assert_eq!(r.into_sga().unwrap().to_vec(), pattern(2, 20));

    // Socket calls on a shm queue are refused with a reason.
    let e = b.bind(qb, "127.0.0.1:0".parse().unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongQueueKind);
    let e = b.shm_alloc(udp, 10).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongQueueKind);
    let e = b.shm_open(&unique("missing")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn closing_a_queue_cancels_its_pending_pop() {
    let name = unique("cancel");
    let mut a = libos();
    let qa = a.shm_create(&name).unwrap();
    let qt = a.pop(qa).unwrap();
    a.close(qa).unwrap();
    // A queue opened in the closed one's place must not serve the old pop.
    let name2 = unique("cancel2");
    let qa2 = a.shm_create(&name2).unwrap();
    let mut b = libos();
    let qb = b.shm_open(&name2).unwrap();
    let push = b
        .push(qb, b.sga_from_slice(b"for the new queue").unwrap())
        .unwrap();
    b.wait(push, LONG).unwrap().ok().unwrap();
    let r = a.wait(qt, LONG).unwrap();
    assert_eq!(
        r.error().map(|e| e.kind()),
        Some(ErrorKind::Canceled),
        "{r:?}"
    );
    let qt2 = a.pop(qa2).unwrap();
    let got = a.wait(qt2, LONG).unwrap().into_sga().unwrap();
    assert_eq!(got.to_vec(), b"for the new queue");
}

/// The peer process killed while a pop waits: the pop fails with `PeerGone`, promptly.
#[test]
fn a_pop_from_a_killed_peer_completes_with_peer_gone() {
    let name = unique("gone");
    let mut a = libos();
    let qa = a.shm_create(&name).unwrap();
    let mut peer = PeerProcess(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "peer_process_entry",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PEER_ENV, &name)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let qt = a.pop(qa).unwrap();
    let first = a.wait(qt, LONG).unwrap().into_sga().unwrap();
    assert_eq!(first.to_vec(), pattern(9, 3000));
    let qt = a.pop(qa).unwrap();
    peer.0.kill().unwrap();
    let killed = Instant::now();
    peer.0.wait().unwrap();
    let r = a.wait(qt, LONG).unwrap();
    let took = killed.elapsed();
    assert_eq!(
        r.error().map(|e| e.kind()),
        Some(ErrorKind::PeerGone),
        "{r:?}"
    );
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let qt = a.pop(qa).unwrap();
    assert_eq!(
        a.wait(qt, LONG).unwrap().error().map(|e| e.kind()),
        Some(ErrorKind::PeerGone),
        "later pops fail the same way"
    );
}

struct PeerProcess(Child);

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run normally, checks that pushing on a closed queue is refused; run as the peer process of
/// `a_pop_from_a_killed_peer_completes_with_peer_gone`, opens the channel, pushes one message
/// and waits to be killed.
#[test]
fn peer_process_entry() {
    let Ok(name) = std::env::var(PEER_ENV) else {
        let mut a = libos();
        let qa = a.shm_create(&unique("closed")).unwrap();
        a.close(qa).unwrap();
        let e = a.push(qa, a.sga_from_slice(b"x").unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadQueue);
        return;
    };
    let mut b = libos();
    let deadline = Instant::now() + Duration::from_secs(10);
    let qb = loop {
        match b.shm_open(&name) {
            Ok(qd) => break qd,
            Err(e) if e.kind() == ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    };
    let qt = b
        .push(qb, b.sga_from_slice(&pattern(9, 3000)).unwrap())
        .unwrap();
    b.wait(qt, LONG).unwrap().ok().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}
