//! A channel between this test process and a peer process (`bypass-shm-peer`): large and many
//! messages with every byte checked, a peer killed mid-stream, a stale region of a dead
//! creator, and a peer that writes garbage into the region.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bypass_runtime::Sga;
use bypass_shm::testing::{check_numbered, check_pattern, numbered, pattern, test_config};
use bypass_shm::{object_path, Channel, ErrorKind, TrySendError, WaitMode};

fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "p{}-{}-{label}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The peer process; killed and reaped on drop, so a failing test leaves none behind.
struct Peer(Child);

impl Peer {
    fn start(args: &[&str]) -> Peer {
        let child = Command::new(env!("CARGO_BIN_EXE_bypass-shm-peer"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start bypass-shm-peer");
        Peer(child)
    }

    /// Waits for the peer to exit by itself; returns its exit code.
    fn wait(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < limit,
                "the peer did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A channel end that sleeps when idle: the tests share two cores with other tests.
fn create(name: &str) -> Channel {
    let mut ch = Channel::create(name, &test_config()).unwrap();
    ch.set_wait_mode(WaitMode::Block { spins: 2000 });
    ch
}

fn recv(ch: &mut Channel) -> Sga {
    ch.recv(Some(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("receive: {e}"))
}

#[test]
fn messages_of_1_byte_to_1_mib_echo_back_intact() {
    let name = unique("echo");
    let mut ch = create(&name);
    let mut peer = Peer::start(&["echo", &name]);
    let mut sizes = vec![
        1,
        2,
        7,
        8,
        63,
        64,
        65,
        4095,
        4096,
        4097,
        8192,
        65536,
        100_000,
        1 << 20,
    ];
    sizes.extend((0..20).map(|i| 1 + (i * 52_361) % (1 << 20)));
    for (seq, &len) in sizes.iter().enumerate() {
        let seq = seq as u64;
        let msg = ch.alloc_message(&pattern(seq, len)).unwrap();
        ch.send(msg, Some(Duration::from_secs(20))).unwrap();
        let back = recv(&mut ch);
        assert_eq!(back.len(), len, "message {seq}");
        assert_eq!(
            check_pattern(seq, &back.to_vec()),
            None,
            "message {seq} of {len} B"
        );
    }
    assert_eq!(ch.peer_pid(), Some(peer.0.id()));
    drop(ch);
    assert_eq!(
        peer.wait(Duration::from_secs(10)),
        0,
        "the echo peer saw the close"
    );
    assert!(!object_path(&name).unwrap().exists());
}

#[test]
fn ten_million_small_messages_arrive_in_order() {
    let count: u64 = 10_000_000;
    let name = unique("many");
    let mut ch = create(&name);
    let count_arg = count.to_string();
    let mut peer = Peer::start(&["sink", &name, &count_arg]);
    let start = Instant::now();
    let mut seq = 0;
    let mut msg = None;
    while seq < count {
        let m = match msg.take() {
            Some(m) => m,
            None => match ch.alloc() {
                Some(mut buf) => {
                    buf.extend_from_slice(&numbered(seq, 16));
                    Sga::from(buf)
                }
                None => {
                    ch.flush().unwrap();
                    std::thread::yield_now();
                    continue;
                }
            },
        };
        match ch.stage(m) {
            Ok(()) => {
                seq += 1;
                if seq % 32 == 0 {
                    ch.flush().unwrap();
                }
            }
            Err(TrySendError::Full(back)) => {
                ch.flush().unwrap();
                msg = Some(back);
                // The sink may be waiting for a core this process holds.
                std::thread::yield_now();
            }
            Err(TrySendError::Failed(e)) => panic!("after {seq} messages: {e}"),
        }
    }
    ch.flush().unwrap();
    let reply = recv(&mut ch).to_vec();
    let elapsed = start.elapsed();
    assert_eq!(reply, count.to_le_bytes(), "the sink counted every message");
    eprintln!(
        "{count} messages of 16 B in {elapsed:?}: {:.1} M/s",
        count as f64 / elapsed.as_secs_f64() / 1e6
    );
    // 16 B messages travel inside their ring slots.
    assert_eq!(ch.stats().inline_messages, count);
    drop(ch);
    assert_eq!(peer.wait(Duration::from_secs(30)), 0);
}

#[test]
fn a_killed_peer_is_reported_within_a_bound_and_leaves_nothing_behind() {
    let name = unique("kill");
    let config = test_config();
    let mut ch = create(&name);
    let chunk = config.chunk_size.to_string();
    let mut peer = Peer::start(&["stream", &name, &chunk]);
    let mut next = 0u64;
    let check = |msg: Sga, next: &mut u64| {
        let seq = check_numbered(&msg.to_vec()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seq, *next, "messages arrive whole, in order, once");
        let len = 8 + (seq as usize * 7919) % (3 * config.chunk_size as usize);
        assert_eq!(msg.len(), len, "message {seq}");
        *next += 1;
    };
    while next < 2000 {
        let msg = recv(&mut ch);
        check(msg, &mut next);
    }
    let path = object_path(&name).unwrap();
    assert!(!path.exists(), "the name is gone once both sides are in");
    peer.0.kill().unwrap();
    let killed = Instant::now();
    peer.0.wait().unwrap();
    let err = loop {
        match ch.recv(Some(Duration::from_secs(5))) {
            Ok(msg) => check(msg, &mut next),
            Err(e) => break e,
        }
    };
    let took = killed.elapsed();
    assert_eq!(err.kind(), ErrorKind::PeerGone, "{err}");
    assert!(err.message().contains("died"), "{err}");
    eprintln!("peer death seen {took:?} after SIGKILL, after {next} whole messages");
    assert!(
        took < Duration::from_millis(500),
        "peer death took {took:?} to see"
    );
    assert_eq!(ch.try_recv().unwrap_err().kind(), ErrorKind::PeerGone);
    drop(ch);
    assert!(!path.exists());
    // The name can be made again at once.
    let again = Channel::create(&name, &config).unwrap();
    drop(again);
    assert!(!path.exists());
}

#[test]
fn a_stale_region_of_a_dead_creator_is_replaced() {
    let name = unique("stale");
    let path = object_path(&name).unwrap();
    let mut peer = Peer::start(&["create", &name]);
    let mut line = String::new();
    BufReader::new(peer.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let e = Channel::create(&name, &test_config()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InUse, "the creator still runs: {e}");
    assert!(e.message().contains(&peer.0.id().to_string()), "{e}");
    peer.0.kill().unwrap();
    peer.0.wait().unwrap();
    assert!(
        path.exists(),
        "a SIGKILLed creator leaves its region behind"
    );

    // Opening it says the creator is gone and clears the name...
    let e = Channel::open(&name, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerGone, "{e}");
    assert!(!path.exists());

    // ...and creating over a stale region replaces it.
    let mut peer = Peer::start(&["create", &name]);
    let mut line = String::new();
    BufReader::new(peer.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    peer.0.kill().unwrap();
    peer.0.wait().unwrap();
    let mut a = Channel::create(&name, &test_config()).unwrap();
    let mut b = Channel::open(&name, Duration::ZERO).unwrap();
    let msg = a.alloc_message(&pattern(3, 5000)).unwrap();
    a.try_send(msg).unwrap();
    assert_eq!(recv(&mut b).to_vec(), pattern(3, 5000));
    drop((a, b));
    assert!(!path.exists());
}

#[test]
fn a_peer_writing_garbage_gets_an_error_not_a_panic_or_a_hang() {
    for seed in 1..=3u64 {
        let name = unique("hostile");
        let mut ch = create(&name);
        let seed_arg = seed.to_string();
        let mut peer = Peer::start(&["hostile", &name, &seed_arg]);
        let start = Instant::now();
        let mut received = 0u64;
        let err = loop {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "seed {seed}: no error reported"
            );
            match ch.try_recv() {
                Ok(Some(msg)) => {
                    received += 1;
                    assert!(msg.len() <= 1024 * 4096);
                }
                Ok(None) => {}
                Err(e) => break e,
            }
            if let Some(msg) = ch.alloc_message(&numbered(received, 100)) {
                match ch.try_send(msg) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Failed(e)) => break e,
                }
            }
        };
        assert!(err.is_fatal(), "seed {seed}: {err}");
        eprintln!(
            "seed {seed}: {received} messages, then after {:?}: {err}",
            start.elapsed()
        );
        drop(ch);
        assert_eq!(
            peer.wait(Duration::from_secs(10)),
            0,
            "seed {seed}: the hostile peer itself must not panic either"
        );
    }
}

#[test]
fn a_killed_creator_is_reported_to_the_opener() {
    let name = unique("creator");
    let path = object_path(&name).unwrap();
    let mut peer = Peer::start(&["create", &name]);
    let mut line = String::new();
    BufReader::new(peer.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let mut ch = Channel::open(&name, Duration::from_secs(5)).unwrap();
    ch.set_wait_mode(WaitMode::Block { spins: 100 });
    assert_eq!(ch.side(), 1);
    assert_eq!(ch.peer_pid(), Some(peer.0.id()));
    assert!(!path.exists(), "the opener removed the name");
    let e = ch.recv(Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    peer.0.kill().unwrap();
    let killed = Instant::now();
    peer.0.wait().unwrap();
    let e = ch.recv(Some(Duration::from_secs(5))).unwrap_err();
    let took = killed.elapsed();
    assert_eq!(e.kind(), ErrorKind::PeerGone, "{e}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    let msg = ch.alloc_message(b"anyone?").unwrap();
    match ch.try_send(msg) {
        Err(TrySendError::Failed(e)) => assert_eq!(e.kind(), ErrorKind::PeerGone),
        other => panic!("send to a dead creator gave {other:?}"),
    }
}
