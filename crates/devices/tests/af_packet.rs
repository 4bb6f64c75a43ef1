//! AF_PACKET rings over a veth pair between two namespaces (needs root; skipped otherwise).

mod common;

use std::time::Duration;

use bypass_devices::af_packet::{AfPacket, Offload, PacketConfig};
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_devices::{netns, Device, ErrorKind, FrameChecksum, FrameOffload};
use bypass_runtime::Buffer;
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

/// Bytes of TCP payload in the large test segment, and the segment size it asks to be cut at.
const LARGE_PAYLOAD: usize = 20_000;
const SEGMENT_SIZE: u16 = 1400;
/// Ethernet, IPv4 and TCP headers (no options) of the large test segment.
const HEADERS: usize = 14 + 20 + 20;

/// A TCP/IPv4 frame from `src` to `dst` carrying [`LARGE_PAYLOAD`] bytes (byte `i` is
/// `i % 251`), as a stack with segmentation offload hands it to the device: the IPv4 header
/// complete, the TCP checksum holding only the pseudo-header sum.
fn large_tcp_frame(
    (src_mac, src_ip): ([u8; 6], [u8; 4]),
    (dst_mac, dst_ip): ([u8; 6], [u8; 4]),
) -> Vec<u8> {
    use bypass_wire::{checksum, IpProtocol, Ipv4Address};
    let tcp_len = 20 + LARGE_PAYLOAD;
    let mut f = Vec::with_capacity(HEADERS + LARGE_PAYLOAD);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src_ip);
    ip[16..20].copy_from_slice(&dst_ip);
    let sum = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH, ACK
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let pseudo = checksum::pseudo_header(
        Ipv4Address(src_ip),
        Ipv4Address(dst_ip),
        IpProtocol::Tcp,
        tcp_len as u32,
    );
    tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
    f.extend_from_slice(&tcp);
    f.extend((0..LARGE_PAYLOAD).map(|i| (i % 251) as u8));
    f
}

/// The offload a stack asks for with [`large_tcp_frame`].
fn large_tcp_offload() -> FrameOffload {
    FrameOffload {
        checksum: FrameChecksum::Partial {
            start: 34,
            offset: 16,
        },
        tcp_segment_size: SEGMENT_SIZE,
        header_len: HEADERS as u16,
    }
}

/// Whether `frame` (Ethernet, IPv4, TCP) has valid IPv4 and TCP checksums; returns its TCP
/// sequence number and payload.
fn checked_tcp(frame: &[u8]) -> (u32, &[u8]) {
    use bypass_wire::{checksum, IpProtocol, Ipv4Address};
    let ip = &frame[14..34];
    assert_eq!(checksum::data(ip), 0xffff, "IPv4 header checksum");
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let tcp = &frame[34..14 + total];
    let src = Ipv4Address(ip[12..16].try_into().unwrap());
    let dst = Ipv4Address(ip[16..20].try_into().unwrap());
    assert!(
        checksum::verify_ipv4_upper(src, dst, IpProtocol::Tcp, tcp),
        "TCP checksum of a {}-byte segment",
        tcp.len()
    );
    let seq = u32::from_be_bytes(tcp[4..8].try_into().unwrap());
    let data_off = (tcp[12] >> 4) as usize * 4;
    (seq, &tcp[data_off..])
}

fn offloading(config: PacketConfig) -> AfPacket {
    let dev = open(PacketConfig {
        offload: Offload::Required,
        ..config
    });
    assert!(dev.caps().frame_offloads && dev.caps().tcp_segmentation_max >= 60_000);
    dev
}

/// Sends the large test segment from side A's device to side B's address.
fn send_large_segment(topo: &Topology, b_mac: [u8; 6]) {
    let spec = topo.spec().clone();
    topo.in_a(|| {
        let mut dev = offloading(PacketConfig::new(&spec.dev_a));
        let frame = large_tcp_frame((dev.mac(), spec.ip_a()), (b_mac, spec.ip_b()));
        let large = dev.large_frame_pool().expect("a large-frame pool");
        let mut frames = vec![large.alloc_copy(&frame).unwrap()];
        let mut offloads = vec![large_tcp_offload()];
        assert_eq!(dev.tx_burst_offload(&mut frames, &mut offloads), 1);
        assert!(frames.is_empty() && offloads.is_empty());
        assert_eq!(dev.stats().tx_dropped, 0);
        assert_eq!(dev.stats().tx_frames, 1);
    })
    .unwrap();
}

#[test]
fn a_large_tcp_segment_leaves_cut_at_its_segment_size_with_complete_checksums() {
    if !root_or_skip("a_large_tcp_segment_leaves_cut_at_its_segment_size_with_complete_checksums") {
        return;
    }
    // Offloads off along the pair: the kernel cuts the segment at the sending end.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let b_mac = common::if_mac_in(&spec.ns_b, &spec.dev_b);
    let segments = std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let b = s.spawn(|| {
            topo.in_b(move || {
                let sock = common::RawSocket::bind(&spec.dev_b).unwrap();
                ready_tx.send(()).unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 2048];
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let mut payload = 0;
                while payload < LARGE_PAYLOAD && std::time::Instant::now() < deadline {
                    match sock.try_recv(&mut buf) {
                        // Ours: IPv4, TCP, to port 9.
                        Some(n) if n > 54 && buf[12..14] == [8, 0] && buf[36..38] == [0, 9] => {
                            payload += n - HEADERS;
                            got.push(buf[..n].to_vec());
                        }
                        Some(_) => {}
                        None => std::thread::yield_now(),
                    }
                }
                got
            })
            .unwrap()
        });
        ready_rx.recv().unwrap();
        send_large_segment(&topo, b_mac);
        b.join().unwrap()
    });
    let want = LARGE_PAYLOAD.div_ceil(SEGMENT_SIZE as usize);
    assert_eq!(segments.len(), want, "segments on the wire");
    let mut at = 0;
    for (k, f) in segments.iter().enumerate() {
        assert!(f.len() <= 1514, "segment {k} is {} bytes", f.len());
        let (seq, data) = checked_tcp(f);
        assert_eq!(seq, 1000 + at as u32, "segment {k} in order");
        assert!(data.len() <= SEGMENT_SIZE as usize);
        for (i, &byte) in data.iter().enumerate() {
            assert_eq!(
                byte,
                ((at + i) % 251) as u8,
                "byte {} of the payload",
                at + i
            );
        }
        // PSH (and FIN) only on the last one.
        assert_eq!(f[47] & 0x08 != 0, k + 1 == want, "PSH of segment {k}");
        at += data.len();
    }
    assert_eq!(at, LARGE_PAYLOAD);
}

#[test]
fn a_large_tcp_segment_crosses_an_offloading_pair_whole_and_is_delivered_whole() {
    if !root_or_skip("a_large_tcp_segment_crosses_an_offloading_pair_whole_and_is_delivered_whole")
    {
        return;
    }
    // Offloads on along the pair: the segment reaches side B as it left, checksum partial.
    let topo = Topology::up(TopologySpec {
        offloads_off: false,
        ..TopologySpec::unique()
    })
    .unwrap();
    let spec = topo.spec().clone();
    let b_mac = common::if_mac_in(&spec.ns_b, &spec.dev_b);
    // Two devices on side B see the same packet: a V2 ring read with `rx_burst` (the
    // packet does not fit a slot and is read from the socket's queue; its checksum is
    // completed), a V3 ring read with `rx_burst_offload` (it fits a block; the partial
    // checksum is reported).
    let (plain, reported) = std::thread::scope(|s| {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let b = s.spawn(|| {
            topo.in_b(move || {
                let mut v2 = offloading(PacketConfig::new(&spec.dev_b));
                let mut v3 = offloading(PacketConfig::throughput(&spec.dev_b));
                ready_tx.send(()).unwrap();
                let is_ours =
                    |f: &Buffer| f.len() > 54 && f[12..14] == [8, 0] && f[36..38] == [0, 9];
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                let (mut plain, mut reported) = (None, None);
                let (mut frames, mut offloads) = (Vec::new(), Vec::new());
                while (plain.is_none() || reported.is_none())
                    && std::time::Instant::now() < deadline
                {
                    v2.rx_burst(&mut frames, 32);
                    if let Some(f) = frames.drain(..).find(is_ours) {
                        plain = Some(f.to_vec());
                    }
                    v3.rx_burst_offload(&mut frames, &mut offloads, 32);
                    for (f, o) in frames.drain(..).zip(offloads.drain(..)) {
                        if is_ours(&f) {
                            reported = Some((f.to_vec(), o));
                        }
                    }
                }
                assert_eq!(v2.stats().rx_dropped, 0);
                (
                    plain.expect("the V2 device got it"),
                    reported.expect("the V3 device got it"),
                )
            })
            .unwrap()
        });
        ready_rx.recv().unwrap();
        send_large_segment(&topo, b_mac);
        b.join().unwrap()
    });
    assert_eq!(plain.len(), HEADERS + LARGE_PAYLOAD, "delivered whole");
    let (seq, data) = checked_tcp(&plain);
    assert_eq!(seq, 1000);
    assert!(data.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    let (frame, offload) = reported;
    assert_eq!(frame.len(), HEADERS + LARGE_PAYLOAD, "delivered whole");
    assert_eq!(
        offload.checksum,
        FrameChecksum::Partial {
            start: 34,
            offset: 16
        }
    );
    assert!(offload.checksum_trusted());
    assert_eq!(offload.tcp_segment_size, SEGMENT_SIZE);
}
