//! The veth test topology itself (needs root; skipped otherwise).

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use bypass_devices::topo::{fmt_ip, netns_exists, Topology, TopologySpec};
use common::{root_or_skip, RawSocket};

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn up_and_down_are_idempotent_and_only_side_b_has_a_kernel_address() {
    if !root_or_skip("up_and_down_are_idempotent_and_only_side_b_has_a_kernel_address") {
        return;
    }
    let spec = TopologySpec::unique();
    let topo = Topology::up(spec.clone()).unwrap();
    let again = Topology::up(spec.clone()).unwrap().keep();
    assert_eq!(again, spec);
    assert!(netns_exists(&spec.ns_a) && netns_exists(&spec.ns_b));
    let a = ip(&[
        "-n",
        &spec.ns_a,
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        &spec.dev_a,
    ]);
    assert_eq!(a.trim(), "", "side A must have no kernel IPv4 address");
    let b = ip(&[
        "-n",
        &spec.ns_b,
        "-4",
        "-o",
        "addr",
        "show",
        "dev",
        &spec.dev_b,
    ]);
    assert!(b.contains(&format!("{}/24", fmt_ip(spec.ip_b()))), "{b}");
    let a6 = ip(&[
        "-n",
        &spec.ns_a,
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        &spec.dev_a,
    ]);
    assert_eq!(a6.trim(), "", "IPv6 must be off (no link-local chatter)");
    let features = Command::new("ip")
        .args(["netns", "exec", &spec.ns_b, "ethtool", "-k", &spec.dev_b])
        .output()
        .unwrap();
    let features = String::from_utf8_lossy(&features.stdout);
    assert!(features.contains("tx-checksumming: off"), "{features}");
    drop(topo);
    assert!(!netns_exists(&spec.ns_a) && !netns_exists(&spec.ns_b));
    Topology::down(&spec).unwrap();
}

#[test]
fn a_topology_is_removed_when_its_owner_panics() {
    if !root_or_skip("a_topology_is_removed_when_its_owner_panics") {
        return;
    }
    let spec = TopologySpec::unique();
    let s = spec.clone();
    let result = std::panic::catch_unwind(move || {
        let _topo = Topology::up(s).unwrap();
        panic!("test failure inside a topology");
    });
    assert!(result.is_err());
    assert!(!netns_exists(&spec.ns_a) && !netns_exists(&spec.ns_b));
}

/// The Internet checksum (RFC 1071) of `data`, starting from `sum`.
fn checksum(mut sum: u32, data: &[u8]) -> u16 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends a UDP datagram from the kernel of B to A's (user-space) address and returns the
/// frame as a raw socket on A sees it, plus any frame A's kernel sent back within 200 ms.
fn udp_from_b(spec: &TopologySpec) -> (Vec<u8>, Option<Vec<u8>>) {
    let a_mac = common::if_mac_in(&spec.ns_a, &spec.dev_a);
    let b_mac = common::if_mac_in(&spec.ns_b, &spec.dev_b);
    // Nobody answers ARP for A's address (the stack would): tell B's kernel the MAC.
    let lladdr = a_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip(&[
        "-n",
        &spec.ns_b,
        "neigh",
        "replace",
        &fmt_ip(spec.ip_a()),
        "lladdr",
        &lladdr,
        "dev",
        &spec.dev_b,
    ]);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let a = s.spawn(move || {
            bypass_devices::netns::enter(&spec.ns_a).unwrap();
            let sock = RawSocket::bind(&spec.dev_a).unwrap();
            tx.send(()).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let mut buf = vec![0u8; 2048];
            loop {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no UDP frame arrived at A"
                );
                if let Some(n) = sock.try_recv(&mut buf) {
                    if n > 34 && buf[12..14] == [0x08, 0x00] && buf[23] == 17 {
                        return buf[..n].to_vec();
                    }
                }
            }
        });
        let b = s.spawn(move || {
            bypass_devices::netns::enter(&spec.ns_b).unwrap();
            let raw = RawSocket::bind(&spec.dev_b).unwrap();
            rx.recv().unwrap();
            let udp = UdpSocket::bind((std::net::Ipv4Addr::from(spec.ip_b()), 0)).unwrap();
            udp.send_to(&[0x5a; 100], (std::net::Ipv4Addr::from(spec.ip_a()), 9999))
                .unwrap();
            let reply = raw.recv_any_from(a_mac, Duration::from_millis(200));
            let _ = b_mac;
            reply
        });
        (a.join().unwrap(), b.join().unwrap())
    })
}

trait RecvAny {
    fn recv_any_from(&self, src: [u8; 6], timeout: Duration) -> Option<Vec<u8>>;
}

impl RecvAny for RawSocket {
    fn recv_any_from(&self, src: [u8; 6], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        while std::time::Instant::now() < deadline {
            match self.try_recv(&mut buf) {
                Some(n) if buf[6..12] == src => return Some(buf[..n].to_vec()),
                _ => std::thread::yield_now(),
            }
        }
        None
    }
}

#[test]
fn kernel_frames_arrive_with_complete_checksums_and_side_a_stays_silent() {
    if !root_or_skip("kernel_frames_arrive_with_complete_checksums_and_side_a_stays_silent") {
        return;
    }
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let (frame, reply) = udp_from_b(&spec);
    let ip_header = &frame[14..34];
    assert_eq!(checksum(0, ip_header), 0, "IPv4 header checksum");
    let udp = &frame[34..];
    let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    assert_eq!(udp_len, 108);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&frame[26..34]); // source and destination addresses
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let sum = checksum(0, &[pseudo, udp[..udp_len].to_vec()].concat());
    assert_eq!(
        sum, 0,
        "UDP checksum must be complete (tx offload off on B)"
    );
    assert_eq!(&udp[8..udp_len], &[0x5a; 100][..]);
    // A's kernel has no address: no ICMP port unreachable, no ARP, nothing comes back.
    assert_eq!(reply, None, "side A's kernel answered");
}

/// An Ethernet + IPv4 + UDP frame from A's address to B's port 7777, with a correct IPv4
/// header checksum and a UDP checksum that is correct or off by one.
fn udp_frame(
    spec: &TopologySpec,
    a_mac: [u8; 6],
    b_mac: [u8; 6],
    payload: &[u8],
    good: bool,
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    ip.extend_from_slice(&spec.ip_a());
    ip.extend_from_slice(&spec.ip_b());
    let sum = checksum(0, &ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut udp = Vec::new();
    udp.extend_from_slice(&4444u16.to_be_bytes());
    udp.extend_from_slice(&7777u16.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&spec.ip_a());
    pseudo.extend_from_slice(&spec.ip_b());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let mut sum = checksum(0, &[pseudo, udp.clone()].concat());
    if !good {
        sum = sum.wrapping_add(1);
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&b_mac);
    f.extend_from_slice(&a_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

#[test]
fn side_b_drops_frames_from_a_with_bad_checksums() {
    if !root_or_skip("side_b_drops_frames_from_a_with_bad_checksums") {
        return;
    }
    // What a user-space stack sends must be checked by the kernel peer, so checksum bugs show.
    let topo = Topology::up(TopologySpec::unique()).unwrap();
    let spec = topo.spec().clone();
    let a_mac = common::if_mac_in(&spec.ns_a, &spec.dev_a);
    let b_mac = common::if_mac_in(&spec.ns_b, &spec.dev_b);
    let (tx, rx) = std::sync::mpsc::channel();
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let received = std::thread::scope(|s| {
        let spec_b = spec.clone();
        let b = s.spawn(move || {
            bypass_devices::netns::enter(&spec_b.ns_b).unwrap();
            let udp = UdpSocket::bind((std::net::Ipv4Addr::from(spec_b.ip_b()), 7777)).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            tx.send(()).unwrap();
            sent_rx.recv().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while let Ok(n) = udp.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
            got
        });
        let spec_a = spec.clone();
        s.spawn(move || {
            bypass_devices::netns::enter(&spec_a.ns_a).unwrap();
            let raw = RawSocket::bind(&spec_a.dev_a).unwrap();
            rx.recv().unwrap();
            raw.send(&udp_frame(&spec_a, a_mac, b_mac, b"bad", false));
            raw.send(&udp_frame(&spec_a, a_mac, b_mac, b"good", true));
            sent_tx.send(()).unwrap();
        });
        b.join().unwrap()
    });
    assert_eq!(received, vec![b"good".to_vec()]);
}
