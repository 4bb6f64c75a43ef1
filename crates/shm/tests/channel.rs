//! Both ends of a channel in one process: the protocol, zero-copy, naming, closing, waiting,
//! and garbage written into the region.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bypass_runtime::{BufferPool, PoolConfig, Sga};
use bypass_shm::testing::{check_pattern, pattern, scribble, Rng};
use bypass_shm::{object_path, Channel, ChannelConfig, ErrorKind, TrySendError, WaitMode};

fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{label}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn small() -> ChannelConfig {
    ChannelConfig {
        ring_slots: 16,
        chunk_size: 256,
        chunks: 32,
        headroom: 16,
    }
}

fn pair(label: &str, config: &ChannelConfig) -> (Channel, Channel, String) {
    let name = unique(label);
    let a = Channel::create(&name, config).unwrap();
    let b = Channel::open(&name, Duration::ZERO).unwrap();
    (a, b, name)
}

fn recv_now(ch: &mut Channel) -> Sga {
    ch.recv(Some(Duration::from_secs(5))).unwrap()
}

#[test]
fn messages_of_every_size_arrive_whole_and_in_order() {
    let (mut a, mut b, _) = pair("sizes", &small());
    let sizes = [0usize, 1, 2, 63, 64, 239, 240, 241, 256, 500, 1000, 3000];
    for (seq, &len) in sizes.iter().enumerate() {
        let msg = a.alloc_message(&pattern(seq as u64, len)).unwrap();
        a.try_send(msg).unwrap();
        let got = recv_now(&mut b);
        assert_eq!(got.len(), len, "message {seq}");
        assert_eq!(
            check_pattern(seq as u64, &got.to_vec()),
            None,
            "message {seq}"
        );
        // And back the other way, from b's own arena.
        let back = b.alloc_message(&got.to_vec()).unwrap();
        drop(got);
        b.try_send(back).unwrap();
        let echoed = recv_now(&mut a);
        assert_eq!(echoed.to_vec(), pattern(seq as u64, len));
    }
    assert_eq!(a.stats().sent, sizes.len() as u64);
    assert_eq!(b.stats().received, sizes.len() as u64);
}

#[test]
fn buffers_of_the_channel_pool_travel_without_a_copy() {
    let (mut a, mut b, _) = pair("zerocopy", &small());
    // Larger than what travels inline.
    let data = pattern(1, a.inline_max() + 1);
    let mut buf = a.alloc().unwrap();
    buf.extend_from_slice(&data);
    let (chunk, offset) = (buf.chunk(), buf.chunk_offset());
    a.try_send(Sga::from(buf)).unwrap();
    let got = recv_now(&mut b);
    let seg = got.segments().next().unwrap();
    assert_eq!(&seg[..], &data[..]);
    assert_eq!(
        (seg.chunk(), seg.chunk_offset()),
        (chunk, offset),
        "the same bytes"
    );
    assert!(
        !b.pool().owns(seg),
        "the sender's memory, not the receiver's"
    );
    assert_eq!(seg.headroom(), 16, "the sender's headroom is still there");
    assert_eq!(a.stats().zero_copy_segments, 1);
    assert_eq!(a.stats().copied_segments, 0);
    assert_eq!(a.stats().inline_messages, 0);

    // A buffer from elsewhere, or one the sender still shares, is copied.
    let outside = BufferPool::new(&PoolConfig::frames(1)).unwrap();
    let copied = pattern(2, 200);
    a.try_send(Sga::from(outside.alloc_copy(&copied).unwrap()))
        .unwrap();
    let shared = a.alloc_message(&pattern(3, 150)).unwrap();
    let keep = shared.clone();
    a.try_send(shared).unwrap();
    assert_eq!(recv_now(&mut b).to_vec(), copied);
    assert_eq!(recv_now(&mut b).to_vec(), pattern(3, 150));
    assert_eq!(keep.to_vec(), pattern(3, 150));
    assert_eq!(a.stats().copied_segments, 2);
}

#[test]
fn small_messages_travel_inside_the_ring_and_free_the_senders_buffers_at_once() {
    let (mut a, mut b, _) = pair("inline", &small());
    let max = a.inline_max();
    assert!(max > 0 && max <= 240, "{max}");
    let free = a.pool().available();
    let mut sent_inline = 0;
    for (seq, len) in [0usize, 1, 3, 4, 15, 16, 17, 64, max - 1, max, max + 1]
        .into_iter()
        .enumerate()
    {
        let data = pattern(seq as u64, len);
        let mut msg = Sga::new();
        // Small messages of two segments (one from outside the arena) are inlined too.
        if len >= 2 && seq % 2 == 0 {
            let outside = BufferPool::new(&PoolConfig::frames(1)).unwrap();
            msg.push(
                a.alloc_message(&data[..len / 2])
                    .unwrap()
                    .take_segments()
                    .next()
                    .unwrap(),
            );
            msg.push(outside.alloc_copy(&data[len / 2..]).unwrap());
        } else if len > 0 {
            msg = a.alloc_message(&data).unwrap();
        }
        a.try_send(msg).unwrap();
        if len <= max {
            sent_inline += 1;
            assert_eq!(
                a.pool().available(),
                free,
                "message {seq}: the buffers are free again"
            );
        }
        assert_eq!(a.stats().inline_messages, sent_inline, "message {seq}");
        let got = recv_now(&mut b);
        assert_eq!(got.to_vec(), data, "message {seq} of {len} B");
        if len > 0 && len <= max {
            let seg = got.segments().next().unwrap();
            assert!(
                b.pool().owns(seg),
                "an inline message lands in the receiver's own arena"
            );
            assert_eq!(got.num_segments(), 1);
        }
    }
    assert_eq!(b.stats().received, 11);
}

#[test]
fn chunks_come_home_when_the_receiver_drops_them() {
    let (mut a, mut b, _) = pair("returns", &small());
    let mut held = Vec::new();
    let mut seq = 0u64;
    // Exhaust a's half: 32 chunks in flight, held by b.
    while let Some(mut buf) = a.alloc() {
        buf.extend_from_slice(&pattern(seq, 200));
        a.try_send(Sga::from(buf)).unwrap();
        held.push((seq, recv_now(&mut b)));
        seq += 1;
    }
    assert_eq!(seq, 32);
    assert!(a.alloc().is_none());
    for (seq, msg) in &held {
        assert_eq!(check_pattern(*seq, &msg.to_vec()), None);
    }
    drop(held);
    assert!(b.try_recv().unwrap().is_none());
    b.return_chunks().unwrap();
    assert_eq!(
        a.alloc_message(&pattern(99, 32 * 240)).unwrap().len(),
        32 * 240
    );
}

#[test]
fn a_staged_message_is_invisible_until_flush() {
    let (mut a, mut b, _) = pair("flush", &small());
    let first = a.alloc_message(&pattern(1000, 1000)).unwrap();
    let second = a.alloc_message(&pattern(10, 10)).unwrap();
    a.stage(first).unwrap();
    a.stage(second).unwrap();
    assert!(b.try_recv().unwrap().is_none());
    a.flush().unwrap();
    assert_eq!(recv_now(&mut b).to_vec(), pattern(1000, 1000));
    assert_eq!(recv_now(&mut b).to_vec(), pattern(10, 10));
}

#[test]
fn a_full_ring_gives_the_message_back_and_an_oversized_one_is_refused() {
    let (mut a, mut b, _) = pair("full", &small());
    let mut sent = 0u64;
    loop {
        let msg = a.alloc_message(&pattern(sent, 8)).unwrap();
        match a.try_send(msg) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(back)) => {
                assert_eq!(
                    back.to_vec(),
                    pattern(sent, 8),
                    "the message comes back intact"
                );
                break;
            }
            Err(TrySendError::Failed(e)) => panic!("{e}"),
        }
    }
    assert_eq!(sent, 16, "one message per ring slot");
    for seq in 0..sent {
        assert_eq!(recv_now(&mut b).to_vec(), pattern(seq, 8));
    }
    // 16 chunks fill the 16-slot ring exactly; 17 can never fit.
    let big = pattern(7, 17 * 240);
    let fits = a.alloc_message(&big[..16 * 240]).unwrap();
    assert_eq!(fits.num_segments(), 16);
    a.try_send(fits).unwrap();
    assert_eq!(recv_now(&mut b).to_vec(), &big[..16 * 240]);
    let outside = BufferPool::new(&PoolConfig::large(1)).unwrap();
    match a.try_send(Sga::copy_from(&outside, &big).unwrap()) {
        Err(TrySendError::Failed(e)) => {
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
            assert!(e.message().contains("ring_slots"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_name_lives_only_until_both_sides_are_in() {
    let name = unique("name");
    let path = object_path(&name).unwrap();
    let a = Channel::create(&name, &small()).unwrap();
    assert!(path.exists());
    let e = Channel::create(&name, &small()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InUse, "{e}");
    let b = Channel::open(&name, Duration::ZERO).unwrap();
    assert!(!path.exists(), "the opener removes the name");
    assert_eq!(b.peer_pid(), Some(std::process::id()));
    drop((a, b));

    // A creator that goes away before anyone opens removes its name too.
    let a = Channel::create(&name, &small()).unwrap();
    drop(a);
    assert!(!path.exists());
    let e = Channel::open(&name, Duration::ZERO).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.message().contains("creates it first"), "{e}");

    for bad in ["", "a/b", ".hidden", &"x".repeat(201)] {
        let e = Channel::create(bad, &small()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let e = Channel::create(
        &name,
        &ChannelConfig {
            ring_slots: 5,
            ..small()
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[test]
fn closing_one_side_ends_the_other_after_what_was_sent() {
    let (mut a, mut b, _) = pair("close", &small());
    for seq in 0..3 {
        let msg = a.alloc_message(&pattern(seq, 300)).unwrap();
        a.try_send(msg).unwrap();
    }
    drop(a);
    for seq in 0..3 {
        assert_eq!(recv_now(&mut b).to_vec(), pattern(seq, 300));
    }
    let e = b.recv(Some(Duration::from_secs(1))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerClosed, "{e}");
    assert_eq!(
        b.try_recv().unwrap_err().kind(),
        ErrorKind::PeerClosed,
        "it stays failed"
    );
    let msg = b.alloc_message(b"x").unwrap();
    assert!(
        matches!(b.try_send(msg), Err(TrySendError::Failed(e)) if e.kind() == ErrorKind::PeerClosed)
    );
}

#[test]
fn a_blocking_receive_sleeps_and_wakes_on_a_message() {
    let name = unique("block");
    let mut a = Channel::create(&name, &small()).unwrap();
    a.set_wait_mode(WaitMode::Block { spins: 100 });
    let e = a.recv(Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let sender = std::thread::spawn({
        let name = name.clone();
        move || {
            let mut b = Channel::open(&name, Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            let msg = b.alloc_message(&pattern(5, 100)).unwrap();
            b.try_send(msg).unwrap();
            // Stay until the message is taken, then close.
            std::thread::sleep(Duration::from_millis(50));
            b.stats()
        }
    });
    let start = Instant::now();
    let got = a.recv(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(got.to_vec(), pattern(5, 100));
    assert!(
        start.elapsed() >= Duration::from_millis(40),
        "it waited for the message"
    );
    let stats = sender.join().unwrap();
    assert_eq!(
        stats.wakeups, 1,
        "the sleeping receiver was woken by a futex"
    );
    let e = a.recv(Some(Duration::from_secs(5))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerClosed, "{e}");
}

/// Garbage written into every part of the region while both ends run: neither end may panic
/// or hang, and a broken protocol must be reported as an error.
#[test]
fn garbage_in_the_region_is_reported_never_a_panic_or_a_hang() {
    let seeds = if std::env::var_os("BYPASS_LONG").is_some() {
        2000
    } else {
        150
    };
    let config = ChannelConfig {
        ring_slots: 8,
        chunk_size: 128,
        chunks: 8,
        headroom: 0,
    };
    let mut corrupt = 0;
    let start = Instant::now();
    for seed in 0..seeds {
        let name = unique("garbage");
        let mut a = Channel::create(&name, &config).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(object_path(&name).unwrap())
            .unwrap();
        let mut b = Channel::open(&name, Duration::ZERO).unwrap();
        let mut rng = Rng::new(seed);
        let control = 4096 + 4 * 1024;
        let mut errors = Vec::new();
        for step in 0..200u64 {
            if step % 10 == 5 {
                let writes = 1 + rng.below(4) as usize;
                scribble(&file, &mut rng, control, writes);
            }
            for turn in 0..2 {
                let (tx, rx) = if turn == 0 {
                    (&mut a, &mut b)
                } else {
                    (&mut b, &mut a)
                };
                if let Some(msg) = tx.alloc_message(&pattern(step, rng.below(600) as usize)) {
                    match tx.try_send(msg) {
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Failed(e)) => errors.push(e),
                    }
                }
                match rx.try_recv() {
                    Ok(Some(msg)) => assert!(msg.len() <= 8 * 128, "a message beyond the arena"),
                    Ok(None) => {}
                    Err(e) => errors.push(e),
                }
            }
            if a.failure().is_some() && b.failure().is_some() {
                break;
            }
        }
        for e in &errors {
            assert!(e.is_fatal(), "seed {seed}: unexpected error {e}");
        }
        if errors.iter().any(|e| e.kind() == ErrorKind::Corrupt) {
            corrupt += 1;
        }
    }
    assert!(
        corrupt > seeds / 4,
        "only {corrupt} of {seeds} seeds reported corruption"
    );
    assert!(start.elapsed() < Duration::from_secs(60), "no hang");
}

/// A peer that publishes part of a message and leaves: the part is never delivered, and the
/// receiver learns that the peer left instead of waiting for the rest forever.
#[test]
fn a_half_published_message_of_a_departed_peer_is_dropped_and_the_departure_reported() {
    use std::os::unix::fs::FileExt;

    let config = small();
    let name = unique("partial");
    let mut a = Channel::create(&name, &config).unwrap();
    // Opened before the peer attaches (attaching removes the name).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(object_path(&name).unwrap())
        .unwrap();
    let mut b = Channel::open(&name, Duration::ZERO).unwrap();
    let layout = config.geometry().layout();
    let msg_whole = b"whole".to_vec();
    let m = b.alloc_message(&msg_whole).unwrap();
    b.try_send(m).unwrap();
    // Side 1's ring: one whole message published (slot 0); add a descriptor that says "more
    // follows" in slot 1 and publish it (its stamp, and tail = 2), with no rest.
    let ring = layout.data[1];
    let slot_bytes = (ring.slot_words * 4) as u64;
    let desc: Vec<u8> = [3u32, 0, 10, 1]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    file.write_at(&desc, ring.slots as u64 + slot_bytes)
        .unwrap();
    let stamp = 1u32 | 1; // the stamp of index 1
    file.write_at(&stamp.to_le_bytes(), ring.slots as u64 + 2 * slot_bytes - 4)
        .unwrap();
    file.write_at(&2u32.to_le_bytes(), ring.tail as u64)
        .unwrap();

    assert_eq!(recv_now(&mut a).to_vec(), msg_whole);
    assert!(
        a.try_recv().unwrap().is_none(),
        "half a message is not delivered"
    );
    drop(b);
    let e = a.recv(Some(Duration::from_secs(5))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PeerClosed, "{e}");
}

/// Inline descriptors that break the rules (too long, naming a chunk, with other flags) are
/// reported as corruption, whatever their bytes.
#[test]
fn a_bad_inline_descriptor_is_reported_as_corruption() {
    use bypass_shm::layout;
    use std::os::unix::fs::FileExt;

    let config = small();
    let layout = config.geometry().layout();
    let inline = layout::FLAG_INLINE;
    let too_long = layout::INLINE_MAX as u32 + 1;
    for bad in [
        [layout::NO_CHUNK, 0, too_long, inline],
        [0, 0, 8, inline],
        [layout::NO_CHUNK, 4, 8, inline],
        [layout::NO_CHUNK, 0, 8, inline | layout::FLAG_MORE],
    ] {
        let name = unique("badinline");
        let mut a = Channel::create(&name, &config).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(object_path(&name).unwrap())
            .unwrap();
        let _b = Channel::open(&name, Duration::ZERO).unwrap();
        // Slot 0 of side 1's ring, stamped as published.
        let ring = layout.data[1];
        let desc: Vec<u8> = bad.iter().flat_map(|w| w.to_le_bytes()).collect();
        file.write_at(&desc, ring.slots as u64).unwrap();
        let stamp_at = ring.slots + ring.slot_words * 4 - 4;
        file.write_at(&1u32.to_le_bytes(), stamp_at as u64).unwrap();
        let e = a.try_recv().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{bad:?}: {e}");
        assert_eq!(a.failure().map(|e| e.kind()), Some(ErrorKind::Corrupt));
    }
}

/// A receiver that waited keeps a buffer ready for the next small message; it still gets
/// every chunk of its half from `alloc` when it needs them.
#[test]
fn a_receivers_spare_buffer_never_costs_it_a_chunk() {
    let (mut a, mut b, _) = pair("spare", &small());
    let e = b.recv(Some(Duration::from_millis(5))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TimedOut);
    let mut held = Vec::new();
    while let Some(buf) = b.alloc() {
        held.push(buf);
    }
    assert_eq!(
        held.len(),
        small().chunks as usize,
        "every chunk of the half"
    );
    drop(held);
    // Receiving works on after the spare went out with the rest.
    assert!(b.recv(Some(Duration::from_millis(5))).is_err());
    let msg = a.alloc_message(&pattern(4, 40)).unwrap();
    a.try_send(msg).unwrap();
    assert_eq!(recv_now(&mut b).to_vec(), pattern(4, 40));
}

/// With buffers smaller than a slot's room, only what fits one buffer travels inline (the
/// receiver copies an inline message into one buffer of its own).
#[test]
fn a_channel_with_small_buffers_inlines_only_what_fits_one() {
    let config = ChannelConfig {
        ring_slots: 16,
        chunk_size: 64,
        chunks: 16,
        headroom: 16,
    };
    let (mut a, mut b, _) = pair("tinybuf", &config);
    assert_eq!(a.inline_max(), 48);
    for (seq, len) in [47usize, 48, 49, 100].into_iter().enumerate() {
        let msg = a.alloc_message(&pattern(seq as u64, len)).unwrap();
        a.try_send(msg).unwrap();
        let got = recv_now(&mut b);
        assert_eq!(got.to_vec(), pattern(seq as u64, len), "{len} B");
        let inline = len <= 48;
        assert_eq!(got.num_segments(), len.div_ceil(48), "{len} B");
        assert_eq!(
            got.segments().all(|s| b.pool().owns(s)),
            inline,
            "{len} B: inline lands in the receiver's arena, the rest is the sender's"
        );
    }
    assert_eq!(a.stats().inline_messages, 2);
}
