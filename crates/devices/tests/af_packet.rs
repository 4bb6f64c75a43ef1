//! AF_PACKET rings over a veth pair between two namespaces (needs root; skipped otherwise).

mod common;

use std::time::Duration;

use bypass_devices::af_packet::{AfPacket, PacketConfig};
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_devices::{netns, Device, ErrorKind};
use common::{exchange, frames, median, ping_pong, root_or_skip, Sides};

fn open(config: PacketConfig) -> AfPacket {
    AfPacket::open(&config).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn v2_rings_carry_frames_intact_both_ways() {
    if !root_or_skip("v2_rings_carry_frames_intact_both_ways") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let stats = exchange(Sides::of(&topo), || open(PacketConfig::new(&dev)));
    assert_eq!(stats.tx_frames, frames() as u64);
    assert!(stats.rx_frames >= frames() as u64);
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
}

#[test]
fn v3_rx_ring_carries_frames_intact_both_ways() {
    if !root_or_skip("v3_rx_ring_carries_frames_intact_both_ways") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let stats = exchange(Sides::of(&topo), || open(PacketConfig::throughput(&dev)));
    assert_eq!(stats.tx_frames, frames() as u64);
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
}

#[test]
fn v2_ping_pong_echoes_every_byte() {
    if !root_or_skip("v2_ping_pong_echoes_every_byte") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let rtts = ping_pong(Sides::of(&topo), || open(PacketConfig::new(&dev)), 200);
    eprintln!(
        "AF_PACKET V2 L2 ping-pong against a raw socket: p50 {:?}",
        median(rtts)
    );
}

#[test]
fn v3_ping_pong_waits_for_the_block_timeout_but_works() {
    if !root_or_skip("v3_ping_pong_waits_for_the_block_timeout_but_works") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let rtts = ping_pong(
        Sides::of(&topo),
        || open(PacketConfig::throughput(&dev)),
        20,
    );
    let p50 = median(rtts);
    eprintln!("AF_PACKET V3 L2 ping-pong: p50 {p50:?}");
    // A lone frame waits for its block to retire (1 ms timer): V3 is not a latency option.
    assert!(p50 >= Duration::from_micros(500), "p50 {p50:?}");
}

#[test]
fn oversized_and_runt_frames_are_dropped_not_sent() {
    if !root_or_skip("oversized_and_runt_frames_are_dropped_not_sent") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev_name = topo.spec().dev_a.clone();
    topo.in_a(|| {
        let mut dev = open(PacketConfig::new(&dev_name));
        let runt = dev.pool().alloc_copy(&[0u8; 10]).unwrap();
        let big = dev.pool().alloc_copy(&[0u8; 1515]).unwrap();
        let mut frames = vec![runt, big];
        assert_eq!(dev.tx_burst(&mut frames), 2);
        assert!(frames.is_empty());
        assert_eq!(dev.stats().tx_dropped, 2);
        assert_eq!(dev.stats().tx_frames, 0);
    })
    .unwrap();
}

#[test]
fn without_capabilities_the_error_says_what_is_missing() {
    if !root_or_skip("without_capabilities_the_error_says_what_is_missing") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let err = netns::run_in(&topo.spec().ns_a, || {
        common::drop_all_capabilities();
        AfPacket::open(&PacketConfig::new(&dev)).unwrap_err()
    })
    .unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    eprintln!("expected error: {err}");
    let text = err.to_string();
    assert!(
        text.contains("permission denied") && text.contains("CAP_NET_RAW"),
        "{text}"
    );
    assert!(text.contains("--libos"), "{text}");
}

#[test]
fn a_full_rx_ring_keeps_the_oldest_frames_and_counts_the_rest() {
    if !root_or_skip("a_full_rx_ring_keeps_the_oldest_frames_and_counts_the_rest") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let (seqs, stats) = common::overflow(
        Sides::of(&topo),
        || {
            open(PacketConfig {
                rx: bypass_devices::af_packet::RxRing::V2 { frames: 32 },
                ..PacketConfig::new(&dev)
            })
        },
        200,
    );
    assert_eq!(seqs, (0..32).collect::<Vec<u32>>());
    assert_eq!(stats.rx_dropped, 200 - 32);
}

#[test]
fn a_small_tx_ring_through_the_qdisc_wraps_without_loss() {
    if !root_or_skip("a_small_tx_ring_through_the_qdisc_wraps_without_loss") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let stats = exchange(Sides::of(&topo), || {
        open(PacketConfig {
            tx_frames: 32,
            qdisc_bypass: false,
            ..PacketConfig::new(&dev)
        })
    });
    assert_eq!(stats.tx_frames, frames() as u64);
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
}

#[test]
fn a_burst_is_sent_whole_by_one_call() {
    if !root_or_skip("a_burst_is_sent_whole_by_one_call") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    common::one_burst(Sides::of(&topo), || open(PacketConfig::new(&dev)), 100, 100);
}

#[test]
fn a_burst_larger_than_the_tx_ring_is_taken_in_part() {
    if !root_or_skip("a_burst_larger_than_the_tx_ring_is_taken_in_part") {
        return;
    }
    // 32 slots (one ring block of 2 KiB frames); the kernel frees slots only after sending.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let small_tx = || {
        open(PacketConfig {
            tx_frames: 32,
            ..PacketConfig::new(&dev)
        })
    };
    common::one_burst(Sides::of(&topo), small_tx, 100, 32);
}

/// Does side B's kernel get an answer to one ping of side A's address within a second?
fn ping_answered(topo: &Topology) -> bool {
    let spec = topo.spec();
    let [a, b, c, d] = spec.ip_a();
    std::process::Command::new("ip")
        .args(["netns", "exec", &spec.ns_b, "ping", "-c", "1", "-W", "1"])
        .arg(format!("{a}.{b}.{c}.{d}"))
        .output()
        .expect("ping runs")
        .status
        .success()
}

#[test]
fn the_owned_address_is_kept_from_the_kernel_while_the_socket_sees_its_frames() {
    if !root_or_skip("the_owned_address_is_kept_from_the_kernel_while_the_socket_sees_its_frames") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    // Side A's kernel owns the address too, so it would answer a ping if it saw one.
    topo.add_kernel_address_a().unwrap();
    assert!(
        ping_answered(&topo),
        "the kernel answers without the filter"
    );
    let dev_name = topo.spec().dev_a.clone();
    let owned = topo.spec().ip_a();
    let (filtered, echo_requests) = std::thread::scope(|s| {
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let device = s.spawn(|| {
            topo.in_a(move || {
                let mut dev = open(PacketConfig {
                    owned_address: Some(owned),
                    ..PacketConfig::new(&dev_name)
                });
                opened_tx.send(dev.ingress_filter()).unwrap();
                // Count the ICMP echo requests to our address the socket receives until the
                // ping is over.
                let mut seen = 0;
                let mut frames = Vec::new();
                while done_rx.try_recv().is_err() {
                    dev.rx_burst(&mut frames, 32);
                    for f in frames.drain(..) {
                        let is_ipv4 = f.len() >= 35 && f[12..14] == [0x08, 0x00];
                        if is_ipv4 && f[23] == 1 && f[30..34] == owned && f[34] == 8 {
                            seen += 1;
                        }
                    }
                }
                seen
            })
            .unwrap()
        });
        let filtered = opened_rx.recv().unwrap();
        let answered = ping_answered(&topo);
        done_tx.send(()).unwrap();
        let seen = device.join().unwrap();
        assert!(
            !answered,
            "the kernel answered a ping of the address our device owns"
        );
        (filtered, seen)
    });
    assert!(filtered, "the tcx ingress filter is attached");
    assert!(echo_requests >= 1, "the socket saw the echo request");
    // The filter went with the device.
    assert!(
        ping_answered(&topo),
        "the kernel answers again once the device is gone"
    );
}
