//! Behaviour of the simulated wire through its public API.

use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimRng, SimWire};
use bypass_devices::Device;
use bypass_runtime::{Buffer, Clock, Instant};

const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const C: [u8; 6] = [2, 0, 0, 0, 0, 3];

fn frame(port: &SimPort, dst: [u8; 6], n: u32) -> Buffer {
    let mut b = port.pool().alloc().unwrap();
    b.extend_from_slice(&dst);
    b.extend_from_slice(&port.mac());
    b.extend_from_slice(&[0x88, 0xb5]);
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&[0xab; 50]);
    b
}

fn seq_of(f: &Buffer) -> u32 {
    u32::from_be_bytes(f[14..18].try_into().unwrap())
}

fn send(port: &mut SimPort, frames: Vec<Buffer>) {
    let mut v = frames;
    let n = v.len();
    assert_eq!(port.tx_burst(&mut v), n);
    assert!(v.is_empty());
}

fn recv_all(port: &mut SimPort) -> Vec<Buffer> {
    let mut v = Vec::new();
    while port.rx_burst(&mut v, 32) > 0 {}
    v
}

fn setup(config: SimConfig) -> (Clock, SimWire, SimPort, SimPort) {
    let clock = Clock::virtual_at(Instant::ZERO);
    let wire = SimWire::new(clock.clone(), config).unwrap();
    let a = wire.port(A).unwrap();
    let b = wire.port(B).unwrap();
    (clock, wire, a, b)
}

#[test]
fn a_perfect_wire_delivers_every_frame_in_order_byte_for_byte() {
    let (_clock, wire, mut a, mut b) = setup(SimConfig::default());
    let sent: Vec<Buffer> = (0..100).map(|i| frame(&a, B, i)).collect();
    let copies: Vec<Vec<u8>> = sent.iter().map(|f| f.to_vec()).collect();
    let out = sent;
    send(&mut a, out);
    let got = recv_all(&mut b);
    assert_eq!(got.len(), 100);
    for (g, c) in got.iter().zip(&copies) {
        assert_eq!(&g[..], &c[..]);
    }
    assert!(
        recv_all(&mut a).is_empty(),
        "a frame never comes back to its sender"
    );
    assert_eq!(wire.stats().delivered, 100);
    assert_eq!(b.stats().rx_frames, 100);
    assert_eq!(a.stats().tx_frames, 100);
}

#[test]
fn delay_holds_frames_until_the_clock_passes_it() {
    let (clock, wire, mut a, mut b) = setup(SimConfig {
        delay: Duration::from_micros(50),
        ..SimConfig::default()
    });
    let out = vec![frame(&a, B, 7)];
    send(&mut a, out);
    assert!(recv_all(&mut b).is_empty());
    assert_eq!(wire.next_delivery(), Some(Instant::from_nanos(50_000)));
    clock.advance(Duration::from_micros(49));
    assert!(recv_all(&mut b).is_empty());
    clock.advance(Duration::from_micros(1));
    let got = recv_all(&mut b);
    assert_eq!(got.len(), 1);
    assert_eq!(seq_of(&got[0]), 7);
}

#[test]
fn bandwidth_spaces_frames_by_their_serialization_time() {
    // 1 Gbit/s: a 68 B frame (+24 B overhead) takes 736 ns.
    let (clock, wire, mut a, mut b) = setup(SimConfig {
        bandwidth_bps: Some(1_000_000_000),
        ..SimConfig::default()
    });
    let out = (0..3).map(|i| frame(&a, B, i)).collect();
    send(&mut a, out);
    assert_eq!(wire.next_delivery(), Some(Instant::from_nanos(736)));
    clock.advance_to(Instant::from_nanos(1471));
    assert_eq!(recv_all(&mut b).len(), 1);
    clock.advance_to(Instant::from_nanos(1472));
    assert_eq!(recv_all(&mut b).len(), 1);
    clock.advance_to(Instant::from_nanos(2208));
    assert_eq!(recv_all(&mut b).len(), 1);
}

#[test]
fn frames_are_switched_by_destination_and_broadcast_to_all_others() {
    let clock = Clock::virtual_at(Instant::ZERO);
    let wire = SimWire::new(clock, SimConfig::default()).unwrap();
    let mut a = wire.port(A).unwrap();
    let mut b = wire.port(B).unwrap();
    let mut c = wire.port(C).unwrap();
    let out = vec![frame(&a, C, 1), frame(&a, [0xff; 6], 2)];
    send(&mut a, out);
    let at_b = recv_all(&mut b);
    let at_c = recv_all(&mut c);
    assert_eq!(at_b.iter().map(seq_of).collect::<Vec<_>>(), vec![2]);
    assert_eq!(at_c.iter().map(seq_of).collect::<Vec<_>>(), vec![1, 2]);
    assert!(recv_all(&mut a).is_empty());
}

fn faulty_run(seed: u64) -> (Vec<u32>, Vec<Vec<u8>>) {
    let (clock, wire, mut a, mut b) = setup(SimConfig {
        seed,
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        corrupt: 0.1,
        delay: Duration::from_micros(10),
        jitter: Duration::from_micros(5),
        ..SimConfig::default()
    });
    let mut got = Vec::new();
    for i in 0..500 {
        let out = vec![frame(&a, B, i)];
        send(&mut a, out);
        clock.advance(Duration::from_micros(1));
        got.extend(recv_all(&mut b));
    }
    clock.advance(Duration::from_millis(10));
    got.extend(recv_all(&mut b));
    assert_eq!(wire.in_flight(), 0);
    (
        got.iter().map(seq_of).collect(),
        got.iter().map(|f| f.to_vec()).collect(),
    )
}

#[test]
fn faults_replay_exactly_from_the_seed() {
    let first = faulty_run(42);
    assert_eq!(first, faulty_run(42));
    assert_ne!(first, faulty_run(43));
}

#[test]
fn faults_happen_at_about_their_configured_rates() {
    let (clock, wire, mut a, mut b) = setup(SimConfig {
        seed: 9,
        loss: 0.2,
        duplicate: 0.1,
        reorder: 0.1,
        corrupt: 0.05,
        delay: Duration::from_micros(10),
        ..SimConfig::default()
    });
    let n = 10_000u32;
    let mut got = Vec::new();
    for i in 0..n {
        let out = vec![frame(&a, B, i)];
        send(&mut a, out);
        clock.advance(Duration::from_micros(1));
        got.extend(recv_all(&mut b).iter().map(|f| f.to_vec()));
    }
    clock.advance(Duration::from_millis(10));
    got.extend(recv_all(&mut b).iter().map(|f| f.to_vec()));
    let s = wire.stats();
    let near = |x: u64, p: f64, of: u64| (x as f64 - p * of as f64).abs() < 0.02 * of as f64;
    assert!(near(s.lost, 0.2, n as u64), "lost {}", s.lost);
    let kept = n as u64 - s.lost;
    assert!(near(s.duplicated, 0.1, kept), "duplicated {}", s.duplicated);
    assert!(
        near(s.reordered, 0.1, s.delivered),
        "reordered {}",
        s.reordered
    );
    assert!(
        near(s.corrupted, 0.05, s.delivered),
        "corrupted {}",
        s.corrupted
    );
    assert_eq!(s.delivered as usize, got.len());
    assert_eq!(got.len() as u64, kept + s.duplicated);
    // Corrupted frames differ from the original in exactly one bit.
    let mut flipped = 0;
    let original = frame(&a, B, 0).to_vec();
    for f in &got {
        let diff: u32 = f
            .iter()
            .zip(original.iter())
            .enumerate()
            .filter(|(i, _)| !(14..18).contains(i))
            .map(|(_, (x, y))| (x ^ y).count_ones())
            .sum();
        assert!(diff <= 1);
        flipped += diff;
    }
    assert!(flipped as u64 <= s.corrupted);
    // Some frames overtook others.
    let seqs: Vec<u32> = got
        .iter()
        .map(|f| u32::from_be_bytes(f[14..18].try_into().unwrap()))
        .collect();
    assert!(seqs.windows(2).any(|w| w[0] > w[1]));
}

#[test]
fn a_partition_loses_frames_until_healed() {
    let (_clock, wire, mut a, mut b) = setup(SimConfig::default());
    wire.partition();
    let out = vec![frame(&a, B, 1)];
    send(&mut a, out);
    assert!(recv_all(&mut b).is_empty());
    wire.heal();
    let out = vec![frame(&a, B, 2)];
    send(&mut a, out);
    assert_eq!(
        recv_all(&mut b).iter().map(seq_of).collect::<Vec<_>>(),
        vec![2]
    );
    assert_eq!(wire.stats().partitioned, 1);
}

#[test]
fn frames_in_flight_and_receive_queues_are_bounded() {
    let (clock, wire, mut a, mut b) = setup(SimConfig {
        delay: Duration::from_micros(1),
        max_in_flight: 10,
        rx_queue: 4,
        ..SimConfig::default()
    });
    let out = (0..20).map(|i| frame(&a, B, i)).collect();
    send(&mut a, out);
    assert_eq!(wire.in_flight(), 10);
    assert_eq!(wire.stats().overflow, 10);
    clock.advance(Duration::from_micros(1));
    let got = recv_all(&mut b);
    assert_eq!(got.iter().map(seq_of).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    assert_eq!(wire.stats().rx_overflow, 6);
    assert_eq!(b.stats().rx_dropped, 6);
}

#[test]
fn pcap_tee_writes_a_readable_capture() {
    let path = std::env::temp_dir().join(format!("bypass-sim-{}.pcap", std::process::id()));
    let clock = Clock::virtual_at(Instant::from_nanos(1_500_000_123));
    let wire = SimWire::new(
        clock,
        SimConfig {
            pcap: Some(path.clone()),
            ..SimConfig::default()
        },
    )
    .unwrap();
    let mut a = wire.port(A).unwrap();
    let f = frame(&a, B, 5);
    let bytes = f.to_vec();
    let out = vec![f];
    send(&mut a, out);
    wire.flush_pcap().unwrap();
    let data = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(&data[0..4], &0xa1b2_3c4du32.to_le_bytes());
    assert_eq!(&data[20..24], &1u32.to_le_bytes());
    assert_eq!(&data[24..28], &1u32.to_le_bytes(), "seconds");
    assert_eq!(&data[28..32], &500_000_123u32.to_le_bytes(), "nanoseconds");
    assert_eq!(&data[32..36], &(bytes.len() as u32).to_le_bytes());
    assert_eq!(&data[40..], &bytes[..]);
}

#[test]
fn rng_is_deterministic_and_spreads() {
    let mut r = SimRng::new(1);
    let mut s = SimRng::new(1);
    let xs: Vec<u64> = (0..100).map(|_| r.next_u64()).collect();
    let ys: Vec<u64> = (0..100).map(|_| s.next_u64()).collect();
    assert_eq!(xs, ys);
    let mut buckets = [0u32; 10];
    for _ in 0..10_000 {
        buckets[r.below(10) as usize] += 1;
    }
    assert!(
        buckets.iter().all(|&b| (800..1200).contains(&b)),
        "{buckets:?}"
    );
    for _ in 0..1000 {
        let x = r.range(5, 7);
        assert!((5..=7).contains(&x));
    }
}
