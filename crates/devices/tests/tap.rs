//! TAP devices inside a private network namespace (needs root; skipped otherwise). The peer is
//! a raw socket on the kernel's side of the same interface.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use bypass_devices::tap::{Tap, TapConfig};
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_devices::{netns, ErrorKind};
use common::{exchange, frames, median, ping_pong, root_or_skip, Sides};

/// A TAP name unique to this process and call.
fn tap_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "bt{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn open(name: &str) -> Tap {
    Tap::open(&TapConfig::new(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `f` with a TAP device in namespace A of a fresh topology, the raw socket on the same
/// interface and namespace. The TAP must exist before the raw socket binds to it, so it is
/// created (persistently) first, then attached by the device under test.
fn with_tap<T>(f: impl FnOnce(Sides, &str) -> T) -> T {
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let ns = topo.spec().ns_a.clone();
    let name = tap_name();
    let out = std::process::Command::new("ip")
        .args(["-n", &ns, "tuntap", "add", "dev", &name, "mode", "tap"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip tuntap add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let up = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "set", "dev", &name, "up"])
        .output()
        .unwrap();
    assert!(up.status.success());
    f(
        Sides {
            a_ns: &ns,
            b_ns: &ns,
            b_iface: &name,
        },
        &name,
    )
}

#[test]
fn frames_cross_a_tap_intact_both_ways() {
    if !root_or_skip("frames_cross_a_tap_intact_both_ways") {
        return;
    }
    with_tap(|sides, name| {
        let stats = exchange(sides, || open(name));
        assert_eq!(stats.tx_frames, frames() as u64);
        assert!(stats.rx_frames >= frames() as u64);
        assert_eq!((stats.rx_dropped, stats.tx_dropped), (0, 0));
    });
}

#[test]
fn tap_ping_pong_echoes_every_byte() {
    if !root_or_skip("tap_ping_pong_echoes_every_byte") {
        return;
    }
    with_tap(|sides, name| {
        let rtts = ping_pong(sides, || open(name), 200);
        eprintln!(
            "TAP L2 ping-pong against a raw socket: p50 {:?}",
            median(rtts)
        );
    });
}

#[test]
fn a_tap_we_create_is_removed_on_drop_and_an_existing_one_is_kept() {
    if !root_or_skip("a_tap_we_create_is_removed_on_drop_and_an_existing_one_is_kept") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    topo.in_a(|| {
        let name = tap_name();
        let tap = open(&name);
        assert!(tap.created());
        assert_eq!(tap.name(), name);
        assert!(netns::if_index(&name).is_some());
        let kernel_mac = tap.kernel_mac().unwrap();
        assert_ne!(
            bypass_devices::Device::mac(&tap),
            kernel_mac,
            "the stack has its own MAC"
        );
        drop(tap);
        assert!(
            netns::if_index(&name).is_none(),
            "{name} survived its device"
        );
    })
    .unwrap();
    with_tap(|sides, name| {
        netns::run_in(sides.a_ns, || {
            let tap = open(name);
            assert!(!tap.created());
            drop(tap);
            assert!(
                netns::if_index(name).is_some(),
                "a persistent TAP was removed"
            );
        })
        .unwrap();
    });
}

#[test]
fn without_cap_net_admin_the_error_says_so() {
    if !root_or_skip("without_cap_net_admin_the_error_says_so") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let err = topo
        .in_a(|| {
            common::drop_all_capabilities();
            Tap::open(&TapConfig::new(&tap_name())).unwrap_err()
        })
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    eprintln!("expected error: {err}");
    let text = err.to_string();
    assert!(
        text.contains("permission denied") && text.contains("CAP_NET_ADMIN"),
        "{text}"
    );
}

#[test]
fn the_configured_mac_is_used_and_bring_up_can_be_left_to_the_caller() {
    if !root_or_skip("the_configured_mac_is_used_and_bring_up_can_be_left_to_the_caller") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let ns = topo.spec().ns_a.clone();
    topo.in_a(|| {
        let name = tap_name();
        let mac = [0x02, 0xbb, 0, 0, 0, 7];
        let tap = Tap::open(&TapConfig {
            mac: Some(mac),
            bring_up: false,
            ..TapConfig::new(&name)
        })
        .unwrap();
        assert_eq!(bypass_devices::Device::mac(&tap), mac);
        let shown = bypass_devices::topo::link_show(&ns, &name).unwrap();
        let flags = shown.split_whitespace().nth(2).unwrap_or_default();
        assert!(!flags.contains(",UP") && !flags.contains("<UP"), "{shown}");
        drop(tap);
        let tap = open(&name);
        let shown = bypass_devices::topo::link_show(&ns, &name).unwrap();
        assert!(
            shown
                .split_whitespace()
                .nth(2)
                .unwrap_or_default()
                .contains("UP"),
            "{shown}"
        );
        drop(tap);
    })
    .unwrap();
}

#[test]
fn a_burst_is_sent_whole_by_one_call() {
    if !root_or_skip("a_burst_is_sent_whole_by_one_call") {
        return;
    }
    with_tap(|sides, name| common::one_burst(sides, || open(name), 100, 100));
}
