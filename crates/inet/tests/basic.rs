//! End-to-end behaviour of two stacks over a simulated wire, through the socket API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use bypass_devices::sim::SimConfig;
use bypass_devices::Device;
use bypass_inet::{Error, Interest, TcpState};
use bypass_runtime::Buffer;
use common::*;

fn buf(p: &Pair, data: &[u8]) -> Buffer {
    p.a.device().pool().alloc_copy(data).unwrap()
}

struct Counter(AtomicUsize);
impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn handshake_data_both_ways_and_graceful_close() {
    let mut p = Pair::simple(SimConfig {
        delay: Duration::from_micros(20),
        ..SimConfig::default()
    });
    let l = p.b.tcp_listen(addr(IP_B, 80), 8).unwrap();
    let c = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.a.tcp_state(c).unwrap()
            == TcpState::Established)
    );
    let (s, peer) = {
        let mut got = None;
        p.run_until(Duration::from_secs(1), |p| {
            got = p.b.tcp_accept(l).unwrap();
            got.is_some()
        });
        got.expect("accepted")
    };
    assert_eq!(*peer.ip(), std::net::Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(p.b.tcp_state(s).unwrap(), TcpState::Established);

    let msg = buf(&p, b"hello, bypass");
    assert_eq!(p.a.tcp_send(c, &msg).unwrap(), 13);
    let mut got = Vec::new();
    p.run_until(Duration::from_secs(1), |p| {
        while let Ok(Some(b)) = p.b.tcp_recv(s) {
            got.extend_from_slice(&b);
        }
        got.len() == 13
    });
    assert_eq!(got, b"hello, bypass");

    let reply = p.b.device().pool().alloc_copy(b"hi back").unwrap();
    assert_eq!(p.b.tcp_send(s, &reply).unwrap(), 7);
    let mut got = Vec::new();
    p.run_until(Duration::from_secs(1), |p| {
        while let Ok(Some(b)) = p.a.tcp_recv(c) {
            got.extend_from_slice(&b);
        }
        got.len() == 7
    });
    assert_eq!(got, b"hi back");

    // A closes first: A goes to FIN-WAIT-2, B to CLOSE-WAIT and reads end of stream.
    p.a.tcp_shutdown(c).unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.a.tcp_state(c).unwrap(), TcpState::FinWait2);
    assert_eq!(p.b.tcp_state(s).unwrap(), TcpState::CloseWait);
    assert_eq!(p.b.tcp_recv(s).unwrap_err(), Error::EndOfStream);
    // Half-close: B can still send.
    let late = p.b.device().pool().alloc_copy(b"late").unwrap();
    assert_eq!(p.b.tcp_send(s, &late).unwrap(), 4);
    p.run_for(Duration::from_millis(10));
    assert_eq!(&p.a.tcp_recv(c).unwrap().unwrap()[..], b"late");
    p.b.tcp_close(s).unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.a.tcp_state(c).unwrap(), TcpState::TimeWait);
    assert_eq!(p.a.tcp_recv(c).unwrap_err(), Error::EndOfStream);
    assert_eq!(
        p.b.socket_count(),
        1,
        "B's connection is gone; the listener stays"
    );
    p.run_for(Duration::from_secs(61));
    assert_eq!(p.a.tcp_state(c).unwrap(), TcpState::Closed);
    p.a.tcp_close(c).unwrap();
    assert_eq!(p.a.socket_count(), 0);
    assert_eq!(p.a.stats().tcp_retransmits, 0);
    assert_eq!(p.b.stats().tcp_retransmits, 0);
}

#[test]
fn connecting_to_a_closed_port_is_refused() {
    let mut p = Pair::simple(SimConfig::default());
    let c = p.a.tcp_connect(Some(5000), addr(IP_B, 81)).unwrap();
    p.run_for(Duration::from_millis(10));
    assert_eq!(p.a.tcp_state(c).unwrap(), TcpState::Closed);
    assert_eq!(p.a.tcp_error(c).unwrap(), Some(Error::ConnectionRefused));
    assert_eq!(p.a.tcp_recv(c).unwrap_err(), Error::ConnectionRefused);
    assert_eq!(p.b.stats().tcp_no_socket, 1);
    assert_eq!(p.a.stats().tcp_connections_refused, 1);
}

#[test]
fn connect_times_out_after_syn_retries_when_nothing_answers() {
    let mut p = Pair::simple(SimConfig::default());
    p.wire.partition();
    let c = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    let mut cfg_retries = 0;
    p.run_until(Duration::from_secs(600), |p| {
        cfg_retries = p.a.stats().tcp_rto_expired;
        p.a.tcp_state(c).unwrap() == TcpState::Closed
    });
    assert_eq!(p.a.tcp_error(c).unwrap(), Some(Error::TimedOut));
    assert_eq!(p.a.stats().tcp_connections_timed_out, 1);
    assert_eq!(cfg_retries, p.a.tcp_config().syn_retries as u64);
}

#[test]
fn wakers_fire_on_connect_accept_and_data() {
    let mut p = Pair::simple(SimConfig::default());
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    let l = p.b.tcp_listen(addr(IP_B, 80), 8).unwrap();
    p.b.register_waker(l, Interest::Acceptable, &waker).unwrap();
    let c = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    p.a.register_waker(c, Interest::Connected, &waker).unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    p.run_for(Duration::from_millis(5));
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        2,
        "connected and acceptable"
    );
    let (s, _) = p.b.tcp_accept(l).unwrap().unwrap();
    p.b.register_waker(s, Interest::Readable, &waker).unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 2);
    let m = buf(&p, b"x");
    p.a.tcp_send(c, &m).unwrap();
    p.run_for(Duration::from_millis(5));
    assert_eq!(counter.0.load(Ordering::SeqCst), 3, "readable");
    // Registering while ready wakes at once.
    p.b.register_waker(s, Interest::Readable, &waker).unwrap();
    assert_eq!(counter.0.load(Ordering::SeqCst), 4);
}

#[test]
fn udp_datagrams_and_arp_resolution() {
    let mut p = Pair::simple(SimConfig::default());
    let ua = p.a.udp_bind(addr(IP_A, 1000)).unwrap();
    let ub = p.b.udp_bind(addr(IP_B, 2000)).unwrap();
    assert_eq!(p.a.udp_send_to(ua, addr(IP_B, 2000), b"ping").unwrap(), 4);
    p.run_for(Duration::from_millis(5));
    let (d, from) = p.b.udp_recv_from(ub).unwrap().unwrap();
    assert_eq!(&d[..], b"ping");
    assert_eq!(from, addr(IP_A, 1000));
    assert_eq!(p.a.stats().arp_requests_sent, 1);
    assert_eq!(p.b.stats().arp_replies_sent, 1);
    p.b.udp_send_to(ub, from, b"pong").unwrap();
    p.run_for(Duration::from_millis(5));
    let (d, _) = p.a.udp_recv_from(ua).unwrap().unwrap();
    assert_eq!(&d[..], b"pong");
    assert_eq!(
        p.b.stats().arp_requests_sent,
        0,
        "B learned A from A's request"
    );
    assert_eq!(
        p.a.udp_send_to(ua, addr(IP_B, 2000), &[0; 1473]),
        Err(Error::MessageTooLong)
    );
    assert_eq!(p.a.udp_bind(addr(IP_A, 1000)), Err(Error::AddressInUse));
    assert_eq!(p.a.udp_send_to(ua, addr(IP_B, 2001), b"x").unwrap(), 1);
    p.run_for(Duration::from_millis(5));
    assert_eq!(p.b.stats().udp_no_socket, 1);
}

#[test]
fn a_first_burst_to_a_new_neighbour_waits_for_arp_within_its_bounds() {
    let mut a_cfg = config(IP_A, 1);
    a_cfg.arp.queue_per_entry = 64;
    a_cfg.arp.queue_total = 80;
    let mut p = Pair::new(SimConfig::default(), a_cfg, config(IP_B, 1));
    let ua = p.a.udp_bind(addr(IP_A, 1000)).unwrap();
    let ub = p.b.udp_bind(addr(IP_B, 2000)).unwrap();
    // 64 datagrams before B's address is known: all wait for the one ARP answer.
    for i in 0..64u8 {
        p.a.udp_send_to(ua, addr(IP_B, 2000), &[i; 32]).unwrap();
    }
    // 20 more to an address nobody has: 16 fit under the total bound, 4 are dropped.
    let nobody = bypass_wire::Ipv4Address::new(10, 0, 0, 99);
    for i in 0..20u8 {
        p.a.udp_send_to(ua, addr(nobody, 9), &[i; 8]).unwrap();
    }
    assert_eq!(p.a.stats().arp_queue_full, 4);
    assert_eq!(p.a.stats().arp_requests_sent, 2);
    p.run_for(Duration::from_millis(5));
    for i in 0..64u8 {
        let (d, _) =
            p.b.udp_recv_from(ub)
                .unwrap()
                .expect("every datagram of the burst");
        assert_eq!(&d[..], &[i; 32], "in order");
    }
    assert!(p.b.udp_recv_from(ub).unwrap().is_none());
    // The unanswered address gives up after its retries and counts what waited.
    p.run_for(Duration::from_secs(5));
    assert_eq!(p.a.stats().arp_unresolved_drops, 16);
}

#[test]
fn bulk_transfer_checks_every_byte() {
    // `transfer` checks that every byte arrived, in order.
    transfer(
        SimConfig {
            delay: Duration::from_micros(50),
            bandwidth_bps: Some(10_000_000_000),
            ..SimConfig::default()
        },
        4 << 20,
    );
}

#[test]
fn arp_retries_then_gives_up_and_counts_the_drops() {
    let mut p = Pair::simple(SimConfig::default());
    let u = p.a.udp_bind(addr(IP_A, 1000)).unwrap();
    let nobody = bypass_wire::Ipv4Address::new(10, 0, 0, 99);
    p.a.udp_send_to(u, addr(nobody, 9), b"one").unwrap();
    p.a.udp_send_to(u, addr(nobody, 9), b"two").unwrap();
    p.run_for(Duration::from_secs(10));
    let cfg = bypass_inet::ArpConfig::default();
    assert_eq!(p.a.stats().arp_requests_sent, cfg.max_requests as u64);
    assert_eq!(p.a.stats().arp_unresolved_drops, 2);
    assert_eq!(
        p.b.stats().arp_not_for_us,
        cfg.max_requests as u64,
        "B hears but does not answer"
    );
    // The next datagram starts a new resolution.
    p.a.udp_send_to(u, addr(nobody, 9), b"three").unwrap();
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.a.stats().arp_requests_sent, cfg.max_requests as u64 + 1);
}

#[test]
fn arp_entries_expire_and_static_entries_never_ask() {
    let mut ca = config(IP_A, 1);
    ca.arp.ttl = Duration::from_secs(5);
    let mut cb = config(IP_B, 1);
    cb.static_arp = vec![(IP_A, bypass_wire::EthernetAddress(MAC_A))];
    let mut p = Pair::new(SimConfig::default(), ca, cb);
    let ua = p.a.udp_bind(addr(IP_A, 1000)).unwrap();
    let ub = p.b.udp_bind(addr(IP_B, 2000)).unwrap();
    p.b.udp_send_to(ub, addr(IP_A, 1000), b"static").unwrap();
    p.run_for(Duration::from_millis(1));
    assert_eq!(&p.a.udp_recv_from(ua).unwrap().unwrap().0[..], b"static");
    assert_eq!(p.b.stats().arp_requests_sent, 0);
    p.a.udp_send_to(ua, addr(IP_B, 2000), b"x").unwrap();
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.a.stats().arp_requests_sent, 1);
    p.a.udp_send_to(ua, addr(IP_B, 2000), b"y").unwrap();
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.a.stats().arp_requests_sent, 1, "cached");
    p.run_for(Duration::from_secs(6));
    p.a.udp_send_to(ua, addr(IP_B, 2000), b"z").unwrap();
    p.run_for(Duration::from_millis(1));
    assert_eq!(p.a.stats().arp_requests_sent, 2, "expired after the TTL");
    let mut got = Vec::new();
    while let Some((d, _)) = p.b.udp_recv_from(ub).unwrap() {
        got.push(d.to_vec());
    }
    assert_eq!(got, vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
}

#[test]
fn off_subnet_traffic_goes_to_the_gateway_or_is_unreachable() {
    let outside = std::net::SocketAddrV4::new(std::net::Ipv4Addr::new(192, 0, 2, 7), 53);
    let mut p = Pair::simple(SimConfig::default());
    let u = p.a.udp_bind(addr(IP_A, 1000)).unwrap();
    assert_eq!(p.a.udp_send_to(u, outside, b"q"), Err(Error::Unreachable));
    assert_eq!(
        p.a.tcp_connect(None, outside).unwrap_err(),
        Error::Unreachable
    );

    let mut ca = config(IP_A, 2);
    ca.gateway = Some(IP_B);
    let mut p = Pair::new(SimConfig::default(), ca, config(IP_B, 2));
    let u = p.a.udp_bind(addr(IP_A, 1000)).unwrap();
    p.a.udp_send_to(u, outside, b"q").unwrap();
    p.run_for(Duration::from_millis(1));
    // A resolved the gateway (B) and sent it the datagram; B is not 192.0.2.7 and drops it.
    assert_eq!(p.a.stats().arp_requests_sent, 1);
    assert_eq!(p.b.stats().arp_replies_sent, 1);
    assert_eq!(p.b.stats().ipv4_not_for_us, 1);
}

#[test]
fn socket_calls_reject_bad_arguments_with_errors() {
    let mut p = Pair::simple(SimConfig::default());
    let l = p.b.tcp_listen(addr(IP_B, 80), 4).unwrap();
    assert_eq!(
        p.b.tcp_listen(addr(IP_B, 80), 4).unwrap_err(),
        Error::AddressInUse
    );
    assert_eq!(
        p.b.tcp_listen(addr(IP_A, 81), 4).unwrap_err(),
        Error::InvalidArgument
    );
    assert_eq!(
        p.b.tcp_listen(addr(IP_B, 0), 4).unwrap_err(),
        Error::InvalidArgument
    );
    let m = p.b.device().pool().alloc_copy(b"x").unwrap();
    assert_eq!(p.b.tcp_send(l, &m).unwrap_err(), Error::WrongSocketKind);
    let u = p.b.udp_bind(addr(IP_B, 5000)).unwrap();
    assert_eq!(p.b.tcp_recv(u).unwrap_err(), Error::WrongSocketKind);
    assert_eq!(p.b.tcp_accept(u).unwrap_err(), Error::WrongSocketKind);
    p.b.udp_close(u).unwrap();
    assert_eq!(
        p.b.udp_recv_from(u).unwrap_err(),
        Error::InvalidHandle,
        "stale handle"
    );
    let bcast = addr(bypass_wire::Ipv4Address::new(10, 0, 0, 255), 80);
    assert_eq!(
        p.a.tcp_connect(None, bcast).unwrap_err(),
        Error::InvalidArgument
    );
    assert_eq!(
        p.a.tcp_connect(None, addr(IP_A, 80)).unwrap_err(),
        Error::InvalidArgument
    );
    let c = p.a.tcp_connect(Some(7000), addr(IP_B, 80)).unwrap();
    assert_eq!(
        p.a.tcp_connect(Some(7000), addr(IP_B, 80)).unwrap_err(),
        Error::AddressInUse
    );
    // Sending before the handshake completes is queued.
    let early = p.a.device().pool().alloc_copy(b"early").unwrap();
    assert_eq!(p.a.tcp_send(c, &early).unwrap(), 5);
    p.run_for(Duration::from_millis(5));
    let (s, _) = p.b.tcp_accept(l).unwrap().unwrap();
    assert_eq!(&p.b.tcp_recv(s).unwrap().unwrap()[..], b"early");
    p.a.tcp_abort(c).unwrap();
    assert_eq!(p.a.tcp_state(c).unwrap_err(), Error::InvalidHandle);
    p.run_for(Duration::from_millis(5));
    assert_eq!(p.b.tcp_recv(s).unwrap_err(), Error::ConnectionReset);
    assert!(Error::ConnectionReset.to_string().contains("reset"));
}

#[test]
fn socket_and_queue_limits_hold() {
    let mut ca = config(IP_A, 3);
    ca.max_sockets = 2;
    let mut cb = config(IP_B, 3);
    cb.udp_queue = 3;
    let mut p = Pair::new(SimConfig::default(), ca, cb);
    let a1 = p.a.udp_bind(addr(IP_A, 1)).unwrap();
    let _a2 = p.a.udp_bind(addr(IP_A, 2)).unwrap();
    assert_eq!(
        p.a.udp_bind(addr(IP_A, 3)).unwrap_err(),
        Error::TooManySockets
    );
    assert_eq!(
        p.a.tcp_connect(None, addr(IP_B, 80)).unwrap_err(),
        Error::TooManySockets
    );
    let ub = p.b.udp_bind(addr(IP_B, 9)).unwrap();
    for i in 0..5u8 {
        p.a.udp_send_to(a1, addr(IP_B, 9), &[i]).unwrap();
    }
    p.run_for(Duration::from_millis(5));
    let mut got = Vec::new();
    while let Some((d, _)) = p.b.udp_recv_from(ub).unwrap() {
        got.push(d[0]);
    }
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(p.b.stats().udp_queue_full, 2);
    // Closing frees the slot.
    p.a.udp_close(a1).unwrap();
    assert!(p.a.udp_bind(addr(IP_A, 3)).is_ok());
}

/// A device whose transmit ring never has room.
struct Stuck(bypass_devices::sim::SimPort);

impl Device for Stuck {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        self.0.rx_burst(frames, max)
    }
    fn tx_burst(&mut self, _frames: &mut Vec<Buffer>) -> usize {
        0
    }
    fn pool(&self) -> &bypass_runtime::BufferPool {
        self.0.pool()
    }
    fn mac(&self) -> [u8; 6] {
        self.0.mac()
    }
    fn caps(&self) -> bypass_devices::DeviceCaps {
        self.0.caps()
    }
    fn stats(&self) -> bypass_devices::DeviceStats {
        self.0.stats()
    }
}

#[test]
fn a_full_transmit_ring_keeps_frames_up_to_the_queue_limit() {
    let clock = bypass_runtime::Clock::virtual_at(bypass_runtime::Instant::ZERO);
    let wire = bypass_devices::sim::SimWire::new(clock.clone(), SimConfig::default()).unwrap();
    let mut cfg = config(IP_A, 4);
    cfg.tx_queue = 4;
    cfg.static_arp = vec![(IP_B, bypass_wire::EthernetAddress(MAC_B))];
    let mut stack = bypass_inet::Stack::new(Stuck(wire.port(MAC_A).unwrap()), cfg);
    let u = stack.udp_bind(addr(IP_A, 1)).unwrap();
    for _ in 0..6 {
        stack.udp_send_to(u, addr(IP_B, 9), b"x").unwrap();
    }
    stack.poll(clock.now());
    assert_eq!(stack.stats().tx_frames, 4);
    assert_eq!(stack.stats().tx_queue_full, 2);
    assert_eq!(
        stack.poll_at(),
        Some(bypass_runtime::Instant::ZERO),
        "frames wait to go"
    );
}

/// Sends `total` bytes from A to B over `wire` and returns the pair once all arrived intact.
fn transfer(wire: SimConfig, total: usize) -> Pair {
    let mut p = Pair::simple(wire);
    let l = p.b.tcp_listen(addr(IP_B, 80), 8).unwrap();
    let c = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    let mut accepted = None;
    assert!(p.run_until(Duration::from_secs(10), |p| {
        accepted = p.b.tcp_accept(l).unwrap();
        accepted.is_some()
    }));
    let (s, _) = accepted.unwrap();
    let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut sent, mut got) = (0, Vec::with_capacity(total));
    p.run_until(Duration::from_secs(60), |p| {
        while sent < total {
            let end = (sent + 1000).min(total);
            let Some(b) = p.a.device().pool().alloc_copy(&data[sent..end]) else {
                break;
            };
            match p.a.tcp_send(c, &b) {
                Ok(n) => sent += n,
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("{e}"),
            }
        }
        while let Ok(Some(b)) = p.b.tcp_recv(s) {
            got.extend_from_slice(&b);
        }
        got.len() == total
    });
    assert!(got == data, "the stream differs");
    p
}

#[test]
fn with_checksum_offload_the_device_drops_corrupt_frames_and_the_stack_trusts_it() {
    let wire = |checksum_offload| SimConfig {
        seed: 5,
        corrupt: 0.02,
        delay: Duration::from_micros(20),
        checksum_offload,
        ..SimConfig::default()
    };
    let bad = |p: &Pair| {
        let (a, b) = (p.a.stats(), p.b.stats());
        a.parse_errors(bypass_inet::Layer::Tcp, bypass_wire::Error::BadChecksum)
            + a.parse_errors(bypass_inet::Layer::Ipv4, bypass_wire::Error::BadChecksum)
            + b.parse_errors(bypass_inet::Layer::Tcp, bypass_wire::Error::BadChecksum)
            + b.parse_errors(bypass_inet::Layer::Ipv4, bypass_wire::Error::BadChecksum)
    };
    // Software checksums: corrupt frames reach the stacks, which find them bad.
    let p = transfer(wire(false), 300_000);
    assert!(p.wire.stats().corrupted > 0);
    assert!(bad(&p) > 0);
    // Offload: the ports drop corrupt frames themselves; the stacks check nothing.
    let p = transfer(wire(true), 300_000);
    let dropped = p.a.device().stats().rx_dropped + p.b.device().stats().rx_dropped;
    assert_eq!(dropped, p.wire.stats().corrupted);
    assert!(dropped > 0);
    assert_eq!(bad(&p), 0);
}

#[test]
fn the_timers_of_many_connections_each_fire() {
    let mut p = Pair::simple(SimConfig {
        delay: Duration::from_micros(100),
        ..SimConfig::default()
    });
    let l = p.b.tcp_listen(addr(IP_B, 80), 64).unwrap();
    let n = 40;
    let clients: Vec<_> = (0..n)
        .map(|_| p.a.tcp_connect(None, addr(IP_B, 80)).unwrap())
        .collect();
    let mut servers = Vec::new();
    assert!(p.run_until(Duration::from_secs(5), |p| {
        while let Some((s, _)) = p.b.tcp_accept(l).unwrap() {
            servers.push(s);
        }
        servers.len() == n
    }));
    // Every first transmission is lost: each connection recovers by its own timeout, at its
    // own time (the sends are spread over 20 ms).
    p.wire.partition();
    for (i, &c) in clients.iter().enumerate() {
        let msg = buf(&p, &[i as u8; 100]);
        assert_eq!(p.a.tcp_send(c, &msg).unwrap(), 100);
        p.run_for(Duration::from_micros(500));
    }
    p.wire.heal();
    let mut got = vec![0usize; n];
    assert!(p.run_until(Duration::from_secs(10), |p| {
        for (k, &s) in servers.iter().enumerate() {
            while let Ok(Some(b)) = p.b.tcp_recv(s) {
                got[k] += b.len();
            }
        }
        got.iter().all(|&g| g == 100)
    }));
    assert!(p.a.stats().tcp_rto_expired >= n as u64);
}

#[test]
fn a_connection_resolves_its_peer_again_when_the_neighbour_entry_expires() {
    let with_ttl = |ip| {
        let mut c = config(ip, 3);
        c.arp.ttl = Duration::from_millis(20);
        c
    };
    let mut p = Pair::new(
        SimConfig {
            delay: Duration::from_micros(50),
            ..SimConfig::default()
        },
        with_ttl(IP_A),
        with_ttl(IP_B),
    );
    let l = p.b.tcp_listen(addr(IP_B, 80), 8).unwrap();
    let c = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    let mut accepted = None;
    assert!(p.run_until(Duration::from_secs(1), |p| {
        accepted = p.b.tcp_accept(l).unwrap();
        accepted.is_some()
    }));
    let (s, _) = accepted.unwrap();
    let requests = |p: &Pair| p.a.stats().arp_requests_sent + p.b.stats().arp_requests_sent;
    let requests_at_start = requests(&p);
    // A message every 5 ms for 100 ms: the entry for B expires several times meanwhile.
    let mut got = 0;
    for i in 0..20u8 {
        let msg = buf(&p, &[i; 10]);
        assert_eq!(p.a.tcp_send(c, &msg).unwrap(), 10);
        p.run_for(Duration::from_millis(5));
        while let Ok(Some(b)) = p.b.tcp_recv(s) {
            assert!(b.iter().all(|&x| x == i));
            got += b.len();
        }
    }
    assert_eq!(got, 200);
    // Each resolution refreshes both ends' entries (each learns from the other's ARP).
    assert!(
        requests(&p) >= requests_at_start + 3,
        "segments after an expiry wait for a new resolution"
    );
}

/// A connection from A to B, whose every received data segment calls for an acknowledgment
/// at once (no delayed ACK); `seed` picks the stacks' ISN keys.
fn connected_without_delayed_ack(
    seed: u64,
) -> (Pair, bypass_inet::SocketHandle, bypass_inet::SocketHandle) {
    let mut b_config = config(IP_B, seed);
    b_config.tcp.delayed_ack = None;
    let mut p = Pair::new(SimConfig::default(), config(IP_A, seed), b_config);
    let l = p.b.tcp_listen(addr(IP_B, 80), 8).unwrap();
    let c = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    let mut accepted = None;
    assert!(p.run_until(Duration::from_secs(1), |p| {
        accepted = accepted.or_else(|| p.b.tcp_accept(l).unwrap());
        accepted.is_some() && p.a.tcp_state(c).unwrap() == TcpState::Established
    }));
    (p, c, accepted.unwrap().0)
}

#[test]
fn after_poll_input_the_acknowledgment_rides_on_the_reply() {
    let (mut p, c, s) = connected_without_delayed_ack(7);

    let ping = buf(&p, b"ping");
    assert_eq!(p.a.tcp_send(c, &ping).unwrap(), 4);
    p.a.flush();
    let sent_before = p.b.device().stats().tx_frames;
    // The request arrives; what it calls for waits for the reply.
    assert!(p.b.poll_input(p.now()));
    assert_eq!(p.b.device().stats().tx_frames, sent_before);
    assert_eq!(&p.b.tcp_recv(s).unwrap().unwrap()[..], b"ping");
    let pong = p.b.device().pool().alloc_copy(b"pong").unwrap();
    assert_eq!(p.b.tcp_send(s, &pong).unwrap(), 4);
    p.b.flush();
    // One frame: the reply, carrying the acknowledgment.
    assert_eq!(p.b.device().stats().tx_frames, sent_before + 1);
    let mut got = Vec::new();
    assert!(p.run_until(Duration::from_millis(1), |p| {
        while let Ok(Some(b)) = p.a.tcp_recv(c) {
            got.extend_from_slice(&b);
        }
        got == b"pong"
    }));
    assert_eq!(
        p.a.tcp_info(c).unwrap().in_flight,
        0,
        "the ping is acknowledged"
    );
}

#[test]
fn after_poll_input_a_flush_sends_the_lone_acknowledgment() {
    let (mut p, c, _) = connected_without_delayed_ack(8);

    let data = buf(&p, b"no reply to this");
    p.a.tcp_send(c, &data).unwrap();
    p.a.flush();
    let sent_before = p.b.device().stats().tx_frames;
    assert!(p.b.poll_input(p.now()));
    assert_eq!(p.b.device().stats().tx_frames, sent_before);
    p.b.flush();
    assert_eq!(p.b.device().stats().tx_frames, sent_before + 1);
    assert!(p.run_until(Duration::from_millis(1), |p| p
        .a
        .tcp_info(c)
        .unwrap()
        .in_flight
        == 0));
}

#[test]
fn tcp_recv_sga_takes_what_arrived_up_to_its_limit_then_end_of_stream() {
    let (mut p, c, s) = connected_without_delayed_ack(9);
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        let piece = data[sent..].len().min(1_000);
        let b = buf(&p, &data[sent..sent + piece]);
        sent += p.a.tcp_send(c, &b).unwrap();
    }
    assert!(
        p.run_until(Duration::from_secs(1), |p| p.b.tcp_recv_queued(s).unwrap()
            == data.len())
    );
    // Up to the limit, from several received segments, a segment split at the limit.
    let first = p.b.tcp_recv_sga(s, 4_000).unwrap().expect("data queued");
    assert_eq!(first.len(), 4_000);
    assert!(first.num_segments() > 1, "gathered from several segments");
    let rest = p.b.tcp_recv_sga(s, 1 << 20).unwrap().expect("data queued");
    assert_eq!(rest.len(), 6_000);
    let mut got = first.to_vec();
    got.extend_from_slice(&rest.to_vec());
    assert!(got == data, "the bytes came back different");
    assert!(
        p.b.tcp_recv_sga(s, 1 << 20).unwrap().is_none(),
        "nothing left"
    );
    // The peer's FIN behind more data: the data first, then end of stream.
    let last = buf(&p, b"last words");
    p.a.tcp_send(c, &last).unwrap();
    p.a.tcp_shutdown(c).unwrap();
    p.run_for(Duration::from_millis(10));
    let tail = p.b.tcp_recv_sga(s, 1 << 20).unwrap().expect("data queued");
    assert_eq!(tail.to_vec(), b"last words");
    assert_eq!(
        p.b.tcp_recv_sga(s, 1 << 20).unwrap_err(),
        Error::EndOfStream
    );
}
