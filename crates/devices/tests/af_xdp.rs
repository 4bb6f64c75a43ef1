//! AF_XDP over a veth pair between two namespaces, in generic and driver mode (needs root;
//! skipped otherwise).

mod common;

use bypass_devices::af_xdp::{self, AfXdp, XdpConfig, XdpFilter, XdpMode, XdpProgram};
use bypass_devices::topo::{link_show, Topology, TopologySpec};
use bypass_devices::{netns, Device, ErrorKind};
use common::{exchange, frames, median, ping_pong, root_or_skip, Sides};

fn config(dev: &str, mode: XdpMode) -> XdpConfig {
    XdpConfig {
        mode,
        mode_fallback: false,
        // Small rings and UMEM keep the tests light; they still hold a whole test run.
        frames: 2048,
        fill_size: 1024,
        ..XdpConfig::new(dev)
    }
}

fn open(config: XdpConfig) -> AfXdp {
    AfXdp::open(&config).unwrap_or_else(|e| panic!("{e}"))
}

fn frames_intact_both_ways(mode: XdpMode) {
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let stats = exchange(Sides::of(&topo), || {
        let d = open(config(&dev, mode));
        assert_eq!(d.mode(), mode);
        d
    });
    assert_eq!(stats.tx_frames, frames() as u64);
    assert!(stats.rx_frames >= frames() as u64);
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
}

#[test]
fn generic_mode_carries_frames_intact_both_ways() {
    if root_or_skip("generic_mode_carries_frames_intact_both_ways") {
        frames_intact_both_ways(XdpMode::Generic);
    }
}

#[test]
fn driver_mode_carries_frames_intact_both_ways() {
    if root_or_skip("driver_mode_carries_frames_intact_both_ways") {
        frames_intact_both_ways(XdpMode::Driver);
    }
}

fn ping_pong_in(mode: XdpMode) {
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let rtts = ping_pong(Sides::of(&topo), || open(config(&dev, mode)), 200);
    eprintln!(
        "AF_XDP {mode:?} L2 ping-pong against a raw socket: p50 {:?}",
        median(rtts)
    );
}

#[test]
fn generic_mode_ping_pong_echoes_every_byte() {
    if root_or_skip("generic_mode_ping_pong_echoes_every_byte") {
        ping_pong_in(XdpMode::Generic);
    }
}

#[test]
fn driver_mode_ping_pong_echoes_every_byte() {
    if root_or_skip("driver_mode_ping_pong_echoes_every_byte") {
        ping_pong_in(XdpMode::Driver);
    }
}

fn ipv4_frame(dst_mac: [u8; 6], src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0, 8, 0, 0]);
    f.resize(60, 0);
    f
}

fn arp_request(src_mac: [u8; 6], src: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

#[test]
fn the_ipv4_filter_takes_only_the_stacks_traffic() {
    if !root_or_skip("the_ipv4_filter_takes_only_the_stacks_traffic") {
        return;
    }
    // With `Ipv4Dst(ip_a)`, IPv4 to ip_a and ARP asking for ip_a go to the socket; other IPv4,
    // ARP for other addresses and other ethertypes go to the kernel, where a raw socket (which
    // taps the kernel's receive path, after generic XDP) sees them.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let a_mac = common::if_mac_in(&spec.ns_a, &spec.dev_a);
    let b_mac = common::if_mac_in(&spec.ns_b, &spec.dev_b);
    let (ip_a, ip_b) = (spec.ip_a(), spec.ip_b());
    let other = [ip_a[0], ip_a[1], ip_a[2], 9];
    let ours = vec![
        ipv4_frame(a_mac, b_mac, ip_b, ip_a),
        arp_request(b_mac, ip_b, ip_a),
    ];
    let theirs = vec![
        ipv4_frame(a_mac, b_mac, ip_b, other),
        arp_request(b_mac, ip_b, other),
        common::test_frame(a_mac, b_mac, 7, 100),
    ];
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (spec_a, ours_a, theirs_a) = (spec.clone(), ours.clone(), theirs.clone());
        s.spawn(move || {
            netns::enter(&spec_a.ns_a).unwrap();
            let mut cfg = config(&spec_a.dev_a, XdpMode::Generic);
            cfg.filter = XdpFilter::Ipv4Dst(ip_a);
            let mut dev = open(cfg);
            let kernel_view = common::RawSocket::bind(&spec_a.dev_a).unwrap();
            ready_tx.send(()).unwrap();
            sent_rx.recv().unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
            let mut got = Vec::new();
            while std::time::Instant::now() < deadline {
                dev.rx_burst(&mut got, 32);
            }
            let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
            assert_eq!(got, ours_a, "the socket got exactly the stack's frames");
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 2048];
            while let Some(n) = kernel_view.try_recv(&mut buf) {
                if buf[6..12] == b_mac {
                    seen.push(buf[..n].to_vec());
                }
            }
            assert_eq!(seen, theirs_a, "the kernel got everything else");
        });
        let spec_b = spec.clone();
        s.spawn(move || {
            netns::enter(&spec_b.ns_b).unwrap();
            let sock = common::RawSocket::bind(&spec_b.dev_b).unwrap();
            ready_rx.recv().unwrap();
            for f in ours.iter().chain(theirs.iter()) {
                sock.send(f);
            }
            sent_tx.send(()).unwrap();
        });
    });
}

#[test]
fn the_program_is_detached_on_drop() {
    if !root_or_skip("the_program_is_detached_on_drop") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    topo.in_a(|| {
        let dev = open(config(&spec.dev_a, XdpMode::Generic));
        let shown = link_show(&spec.ns_a, &spec.dev_a).unwrap();
        assert!(
            shown.contains(&format!("prog/xdp id {}", dev.program_id())),
            "program not attached: {shown}"
        );
        assert_eq!(
            af_xdp::attached_program(&spec.dev_a).unwrap(),
            Some((dev.program_id(), XdpMode::Generic))
        );
        drop(dev);
        let shown = link_show(&spec.ns_a, &spec.dev_a).unwrap();
        assert!(
            !shown.contains("xdp"),
            "program still attached after drop: {shown}"
        );
        assert_eq!(af_xdp::attached_program(&spec.dev_a).unwrap(), None);
    })
    .unwrap();
}

#[test]
fn a_leftover_program_of_ours_is_replaced() {
    if !root_or_skip("a_leftover_program_of_ours_is_replaced") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    topo.in_a(|| {
        // What a killed process leaves behind: a program attached, nobody holding it.
        let ifindex = netns::if_index(&spec.dev_a).unwrap();
        let mut stale = XdpProgram::load(XdpFilter::All, 1).unwrap();
        stale.attach(ifindex, XdpMode::Driver).unwrap();
        let stale_id = stale.id();
        stale.leak();
        assert_eq!(
            af_xdp::attached_program(&spec.dev_a).unwrap(),
            Some((stale_id, XdpMode::Driver))
        );

        let dev = open(config(&spec.dev_a, XdpMode::Generic));
        assert_eq!(dev.replaced_leftover(), Some(stale_id));
        assert_ne!(dev.program_id(), stale_id);
        assert_eq!(
            af_xdp::attached_program(&spec.dev_a).unwrap(),
            Some((dev.program_id(), XdpMode::Generic))
        );
        drop(dev);
        assert_eq!(af_xdp::attached_program(&spec.dev_a).unwrap(), None);
    })
    .unwrap();
}

#[test]
fn a_leftover_is_refused_when_replacing_is_off() {
    if !root_or_skip("a_leftover_is_refused_when_replacing_is_off") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    topo.in_a(|| {
        let ifindex = netns::if_index(&spec.dev_a).unwrap();
        let mut stale = XdpProgram::load(XdpFilter::All, 1).unwrap();
        stale.attach(ifindex, XdpMode::Generic).unwrap();
        let stale_id = stale.id();
        stale.leak();
        let mut cfg = config(&spec.dev_a, XdpMode::Generic);
        cfg.replace_leftover = false;
        let err = AfXdp::open(&cfg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy);
        eprintln!("expected error: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("XDP program id {stale_id}")),
            "{text}"
        );
        assert!(text.contains("xdp off"), "{text}");
        assert_eq!(
            af_xdp::attached_program(&spec.dev_a).unwrap(),
            Some((stale_id, XdpMode::Generic))
        );
    })
    .unwrap();
}

#[test]
fn reopening_the_same_queue_right_after_close_succeeds() {
    if !root_or_skip("reopening_the_same_queue_right_after_close_succeeds") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    topo.in_a(|| {
        for _ in 0..3 {
            let dev = open(config(&spec.dev_a, XdpMode::Generic));
            drop(dev);
        }
    })
    .unwrap();
}

#[test]
fn errors_name_the_missing_interface_queue_or_privilege() {
    if !root_or_skip("errors_name_the_missing_interface_queue_or_privilege") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    topo.in_a(|| {
        let err = AfXdp::open(&XdpConfig::new("bx-missing0")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoSuchInterface);
        eprintln!("expected error: {err}");
        assert!(err.to_string().contains("bx-missing0"), "{err}");

        let mut cfg = config(&spec.dev_a, XdpMode::Generic);
        cfg.queue = 5; // veth has one queue
        let err = AfXdp::open(&cfg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        eprintln!("expected error: {err}");
        assert!(err.to_string().contains("queue 5"), "{err}");
        assert_eq!(
            af_xdp::attached_program(&spec.dev_a).unwrap(),
            None,
            "a failed open left a program"
        );

        common::drop_all_capabilities();
        let err = AfXdp::open(&config(&spec.dev_a, XdpMode::Generic)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        eprintln!("expected error: {err}");
        let text = err.to_string();
        assert!(
            text.contains("AF_XDP socket creation") && text.contains("permission denied"),
            "{text}"
        );
        assert!(
            text.contains("CAP_NET_RAW") && text.contains("--libos packet"),
            "{text}"
        );
    })
    .unwrap();
}

#[test]
fn driver_mode_falls_back_to_generic_where_the_driver_has_no_xdp() {
    if !root_or_skip("driver_mode_falls_back_to_generic_where_the_driver_has_no_xdp") {
        return;
    }
    // A bridge (or an ifb, if this kernel has no bridge module) has no native XDP support.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let bridge = format!("bnx{}", std::process::id());
    let made = ["bridge", "ifb"].iter().any(|kind| {
        std::process::Command::new("ip")
            .args(["-n", &spec.ns_a, "link", "add", &bridge, "up", "type", kind])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        made,
        "this kernel can make neither a bridge nor an ifb interface"
    );
    topo.in_a(|| {
        let mut cfg = config(&bridge, XdpMode::Driver);
        let err = AfXdp::open(&cfg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        eprintln!("expected error: {err}");
        let text = err.to_string();
        assert!(
            text.contains("driver mode") && text.contains("--libos packet"),
            "{text}"
        );
        assert_eq!(af_xdp::attached_program(&bridge).unwrap(), None);

        cfg.mode_fallback = true;
        let dev = open(cfg);
        assert_eq!(dev.mode(), XdpMode::Generic);
        assert_eq!(
            af_xdp::attached_program(&bridge).unwrap(),
            Some((dev.program_id(), XdpMode::Generic))
        );
    })
    .unwrap();
}

#[test]
fn an_af_xdp_echo_sends_received_buffers_back() {
    if !root_or_skip("an_af_xdp_echo_sends_received_buffers_back") {
        return;
    }
    // Our own devices at both ends: AF_PACKET on A pings, AF_XDP on B echoes each received
    // buffer itself (it lies in B's UMEM, so it is transmitted from where it was received).
    use bypass_devices::af_packet::{AfPacket, PacketConfig};
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let a_mac = common::if_mac_in(&spec.ns_a, &spec.dev_a);
    let b_mac = common::if_mac_in(&spec.ns_b, &spec.dev_b);
    const ROUNDS: u32 = 200;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let spec_b = spec.clone();
        let echo = s.spawn(move || {
            netns::enter(&spec_b.ns_b).unwrap();
            let mut dev = open(config(&spec_b.dev_b, XdpMode::Generic));
            ready_tx.send(()).unwrap();
            let before = dev.pool().available();
            for _ in 0..ROUNDS {
                let mut got =
                    common::recv_test_frames(&mut dev, a_mac, 1, std::time::Duration::from_secs(5));
                let mut f = got.pop().expect("no ping arrived at the echo");
                assert!(f.is_unique() && dev.pool().owns(&f));
                let bytes = f.as_mut_slice();
                let (dst, src) = bytes[..12].split_at_mut(6);
                dst.swap_with_slice(src);
                common::send_all(&mut dev, vec![f]);
            }
            // Every chunk comes home: the echoed frames completed and went back to the pool
            // or the fill ring, which is refilled from the pool on the next call.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while dev.pool().available() < before && std::time::Instant::now() < deadline {
                dev.rx_burst(&mut Vec::new(), 0);
            }
            assert!(dev.pool().available() >= before);
            dev.stats()
        });
        let spec_a = spec.clone();
        let ping = s.spawn(move || {
            netns::enter(&spec_a.ns_a).unwrap();
            let mut dev = AfPacket::open(&PacketConfig::new(&spec_a.dev_a)).unwrap();
            ready_rx.recv().unwrap();
            for seq in 0..ROUNDS {
                let len = common::frame_len(seq);
                let ping = common::test_frame(b_mac, a_mac, seq, len);
                let buf = common::buffer(&dev, &ping);
                common::send_all(&mut dev, vec![buf]);
                let echo =
                    common::recv_test_frames(&mut dev, b_mac, 1, std::time::Duration::from_secs(5));
                assert_eq!(echo.len(), 1, "no echo of {seq}");
                assert_eq!(
                    &echo[0][..],
                    &common::test_frame(a_mac, b_mac, seq, len)[..]
                );
            }
        });
        ping.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let stats = echo.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        assert_eq!(
            (stats.rx_frames, stats.tx_frames),
            (ROUNDS as u64, ROUNDS as u64)
        );
    });
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
            open(XdpConfig {
                rx_size: 64,
                ..config(&dev, XdpMode::Generic)
            })
        },
        200,
    );
    assert_eq!(seqs, (0..64).collect::<Vec<u32>>());
    assert_eq!(stats.rx_dropped, 200 - 64);
}

#[test]
fn without_need_wakeup_and_with_zero_copy_asked_on_veth_frames_still_flow() {
    if !root_or_skip("without_need_wakeup_and_with_zero_copy_asked_on_veth_frames_still_flow") {
        return;
    }
    // veth has no zero-copy support: the socket falls back to copy mode.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let stats = exchange(Sides::of(&topo), || {
        let d = open(XdpConfig {
            need_wakeup: false,
            zero_copy: true,
            huge_pages: false,
            ..config(&dev, XdpMode::Generic)
        });
        assert!(!d.zero_copy());
        assert!(!d.pool().memory().huge_pages());
        d
    });
    assert_eq!(stats.tx_frames, frames() as u64);
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
}

/// Set in the child process of `a_program_left_by_a_killed_process_is_replaced`: "NS DEV".
const CHILD_ENV: &str = "BYPASS_TEST_XDP_CHILD";

#[test]
fn a_program_left_by_a_killed_process_is_replaced() {
    if let Ok(where_) = std::env::var(CHILD_ENV) {
        // The child: open a device, report its program, and wait to be killed.
        let (ns, dev) = where_.split_once(' ').unwrap();
        netns::enter(ns).unwrap();
        let d = open(config(dev, XdpMode::Generic));
        println!("\nCHILD-PROGRAM {}", d.program_id());
        std::thread::sleep(std::time::Duration::from_secs(30));
        return;
    }
    if !root_or_skip("a_program_left_by_a_killed_process_is_replaced") {
        return;
    }
    use std::io::BufRead;
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_program_left_by_a_killed_process_is_replaced",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{} {}", spec.ns_a, spec.dev_a))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the child whatever happens below.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let id: u32 = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("CHILD-PROGRAM ")
                .map(|id| id.parse().unwrap())
        })
        .expect("the child never opened its device");
    child.0.kill().unwrap(); // SIGKILL: no destructor runs.
    child.0.wait().unwrap();
    topo.in_a(|| {
        assert_eq!(
            af_xdp::attached_program(&spec.dev_a).unwrap(),
            Some((id, XdpMode::Generic)),
            "the killed process's program is still attached"
        );
        // Its socket's queue may still be in deferred teardown: `open` retries the bind.
        let dev = open(config(&spec.dev_a, XdpMode::Generic));
        assert_eq!(dev.replaced_leftover(), Some(id));
        drop(dev);
        assert_eq!(af_xdp::attached_program(&spec.dev_a).unwrap(), None);
    })
    .unwrap();
}

#[test]
fn a_burst_larger_than_one_kick_is_sent_whole() {
    if !root_or_skip("a_burst_larger_than_one_kick_is_sent_whole") {
        return;
    }
    // The kernel takes at most 32 descriptors per kick in copy mode: 100 frames need 4.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    common::one_burst(
        Sides::of(&topo),
        || open(config(&dev, XdpMode::Generic)),
        100,
        100,
    );
}

#[test]
fn a_burst_larger_than_the_tx_ring_is_taken_in_part() {
    if !root_or_skip("a_burst_larger_than_the_tx_ring_is_taken_in_part") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let small_tx = || {
        open(XdpConfig {
            tx_size: 64,
            ..config(&dev, XdpMode::Generic)
        })
    };
    common::one_burst(Sides::of(&topo), small_tx, 100, 64);
}

#[test]
fn small_rings_wrap_refill_and_push_back_without_loss() {
    if !root_or_skip("small_rings_wrap_refill_and_push_back_without_loss") {
        return;
    }
    // Every ring wraps several times; the fill ring is refilled from a pool only 4 times its size.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let dev = topo.spec().dev_a.clone();
    let stats = exchange(Sides::of(&topo), || {
        open(XdpConfig {
            rx_size: 64,
            tx_size: 64,
            fill_size: 64,
            completion_size: 64,
            frames: 256,
            ..config(&dev, XdpMode::Generic)
        })
    });
    assert_eq!(stats.tx_frames, frames() as u64);
    assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
}
