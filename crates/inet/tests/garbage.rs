//! Hostile input: random frames and random well-formed segments at a stack with a listener and
//! live connections. Nothing may panic, and every invariant the stack asserts in debug builds
//! must hold throughout.

use std::net::SocketAddrV4;
use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimRng, SimWire};
use bypass_devices::Device;
use bypass_inet::{Stack, StackConfig};
use bypass_runtime::{Buffer, Clock, Instant};
use bypass_wire::{
    ChecksumCapabilities, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpProtocol,
    Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr, TcpFlags, TcpPacket, TcpRepr, TcpSeqNumber,
    TcpTimestamp,
};
use proptest::prelude::*;

const STACK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const STACK_IP: Ipv4Address = Ipv4Address::new(10, 1, 0, 1);
const PEER_IP: Ipv4Address = Ipv4Address::new(10, 1, 0, 2);

fn frame_for(peer: &SimPort, repr: &TcpRepr, protocol: IpProtocol) -> Buffer {
    let caps = ChecksumCapabilities::default();
    let mut frame = peer.pool().alloc().unwrap();
    let len = repr.buffer_len();
    frame.append(14 + 20 + len);
    let bytes = frame.as_mut_slice();
    EthernetRepr {
        src_addr: EthernetAddress(PEER_MAC),
        dst_addr: EthernetAddress(STACK_MAC),
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut bytes[..14]));
    Ipv4Repr {
        src_addr: PEER_IP,
        dst_addr: STACK_IP,
        next_header: protocol,
        payload_len: len,
        hop_limit: 64,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut bytes[14..34]), &caps);
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut bytes[34..]),
        PEER_IP,
        STACK_IP,
        &caps,
    );
    frame
}

/// One step of the attack.
#[derive(Debug, Clone)]
enum Step {
    /// Random bytes as a frame to our MAC.
    Junk(Vec<u8>),
    /// A well-formed segment with random fields, near the live connection's numbers or not.
    Segment {
        port: u16,
        flags: u8,
        seq_delta: i32,
        ack_delta: i32,
        window: u16,
        ws: Option<u8>,
        mss: Option<u16>,
        ts: Option<(u32, u32)>,
        sack: Option<(i32, i32)>,
        payload: usize,
    },
    /// A valid frame with one byte flipped.
    Flip(usize, u8),
    /// Time passes.
    Wait(u32),
    /// The application sends, reads or closes.
    App(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120).prop_map(Step::Junk),
        (
            prop_oneof![Just(80u16), Just(81u16), Just(5000u16)],
            any::<u8>(),
            -70_000i32..70_000,
            -70_000i32..70_000,
            any::<u16>(),
            proptest::option::of(0u8..20),
            proptest::option::of(any::<u16>()),
            proptest::option::of((any::<u32>(), any::<u32>())),
            proptest::option::of((-5000i32..5000, -5000i32..5000)),
            0usize..1500,
        )
            .prop_map(
                |(port, flags, seq_delta, ack_delta, window, ws, mss, ts, sack, payload)| {
                    Step::Segment {
                        port,
                        flags,
                        seq_delta,
                        ack_delta,
                        window,
                        ws,
                        mss,
                        ts,
                        sack,
                        payload,
                    }
                }
            ),
        (0usize..80, 1u8..=255).prop_map(|(at, x)| Step::Flip(at, x)),
        (0u32..3_000_000).prop_map(Step::Wait),
        any::<u8>().prop_map(Step::App),
    ]
}

struct Target {
    clock: Clock,
    _wire: SimWire,
    stack: Stack<SimPort>,
    peer: SimPort,
    /// The live connection's numbers as the peer knows them (roughly).
    their_next: u32,
    our_next: u32,
    listener: bypass_inet::SocketHandle,
    conn: bypass_inet::SocketHandle,
    accepted: Vec<bypass_inet::SocketHandle>,
}

fn target(seed: u64) -> Target {
    let clock = Clock::virtual_at(Instant::from_millis(1));
    let wire = SimWire::new(clock.clone(), SimConfig::default()).unwrap();
    let port = wire.port(STACK_MAC).unwrap();
    let peer = wire.port(PEER_MAC).unwrap();
    let mut cfg = StackConfig::new(Ipv4Cidr::new(STACK_IP, 24));
    cfg.static_arp = vec![(PEER_IP, EthernetAddress(PEER_MAC))];
    cfg.secret = Some([seed as u8; 16]);
    cfg.tcp.keepalive = Some(Duration::from_secs(1));
    cfg.tcp.recv_buffer = 8000;
    cfg.tcp.send_buffer = 8000;
    cfg.tcp.max_out_of_order_pieces = 4;
    let mut stack = Stack::new(port, cfg);
    let listener = stack
        .tcp_listen(SocketAddrV4::new(STACK_IP.into(), 80), 2)
        .unwrap();
    let conn = stack
        .tcp_connect(Some(5000), SocketAddrV4::new(PEER_IP.into(), 5000))
        .unwrap();
    let mut t = Target {
        clock,
        _wire: wire,
        stack,
        peer,
        their_next: 0,
        our_next: 7777,
        listener,
        conn,
        accepted: Vec::new(),
    };
    t.poll();
    // Answer the stack's SYN so one connection is established.
    let mut frames = Vec::new();
    t.peer.rx_burst(&mut frames, 8);
    if let Some(f) = frames.first() {
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        t.their_next = tcp.seq_number().0.wrapping_add(1);
    }
    let synack = TcpRepr {
        src_port: 5000,
        dst_port: 5000,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        seq_number: TcpSeqNumber(t.our_next),
        ack_number: Some(TcpSeqNumber(t.their_next)),
        window_len: 4000,
        window_scale: Some(1),
        max_seg_size: Some(1000),
        sack_permitted: true,
        sack_ranges: [None; 3],
        timestamp: Some(TcpTimestamp { tsval: 5, tsecr: 0 }),
        payload: &[],
    };
    t.our_next = t.our_next.wrapping_add(1);
    let f = frame_for(&t.peer, &synack, IpProtocol::Tcp);
    t.peer.tx_burst(&mut vec![f]);
    t.poll();
    t
}

impl Target {
    fn poll(&mut self) {
        for _ in 0..3 {
            self.stack.poll(self.clock.now());
        }
        // Whatever the stack sends is read and dropped.
        let mut frames = Vec::new();
        while self.peer.rx_burst(&mut frames, 64) > 0 {
            frames.clear();
        }
    }

    fn apply(&mut self, s: Step, rng: &mut SimRng) {
        match s {
            Step::Junk(bytes) => {
                let mut f = self.peer.pool().alloc().unwrap();
                f.extend_from_slice(&STACK_MAC);
                f.extend_from_slice(&PEER_MAC);
                f.extend_from_slice(&bytes);
                self.peer.tx_burst(&mut vec![f]);
            }
            Step::Segment {
                port,
                flags,
                seq_delta,
                ack_delta,
                window,
                ws,
                mss,
                ts,
                sack,
                payload,
            } => {
                let data = vec![0x61u8; payload];
                let seq = self.our_next.wrapping_add(seq_delta as u32);
                let ack = self.their_next.wrapping_add(ack_delta as u32);
                let flags = TcpFlags::from_bits(flags & 0x3f);
                let sack_ranges = match sack {
                    Some((l, r)) => [
                        Some((ack.wrapping_add(l as u32), ack.wrapping_add(r as u32))),
                        None,
                        None,
                    ],
                    None => [None; 3],
                };
                let repr = TcpRepr {
                    src_port: 5000,
                    dst_port: port,
                    flags,
                    seq_number: TcpSeqNumber(seq),
                    ack_number: flags.ack().then_some(TcpSeqNumber(ack)),
                    window_len: window,
                    window_scale: ws,
                    max_seg_size: mss,
                    sack_permitted: rng.chance(0.2),
                    sack_ranges,
                    timestamp: ts.map(|(tsval, tsecr)| TcpTimestamp { tsval, tsecr }),
                    payload: &data,
                };
                if repr.buffer_len() + 34 > 1514 {
                    return;
                }
                if !flags.rst() && seq_delta == 0 {
                    self.our_next = self.our_next.wrapping_add(payload as u32);
                }
                let f = frame_for(&self.peer, &repr, IpProtocol::Tcp);
                self.peer.tx_burst(&mut vec![f]);
            }
            Step::Flip(at, x) => {
                let repr = TcpRepr {
                    src_port: 5000,
                    dst_port: 5000,
                    flags: TcpFlags::ACK,
                    seq_number: TcpSeqNumber(self.our_next),
                    ack_number: Some(TcpSeqNumber(self.their_next)),
                    window_len: 1000,
                    window_scale: None,
                    max_seg_size: None,
                    sack_permitted: false,
                    sack_ranges: [None; 3],
                    timestamp: None,
                    payload: b"0123456789",
                };
                let mut f = frame_for(&self.peer, &repr, IpProtocol::Tcp);
                let n = f.len();
                f.as_mut_slice()[at % n] ^= x;
                self.peer.tx_burst(&mut vec![f]);
            }
            Step::Wait(us) => self.clock.advance(Duration::from_micros(us as u64)),
            Step::App(what) => {
                // The application acts; errors are expected and ignored, panics are not.
                let c = self.conn;
                match what % 5 {
                    0 => {
                        let b = self.stack.device().pool().alloc_copy(&[7u8; 700]).unwrap();
                        let _ = self.stack.tcp_send(c, &b);
                    }
                    1 => while let Ok(Some(_)) = self.stack.tcp_recv(c) {},
                    2 => {
                        while let Ok(Some((h, _))) = self.stack.tcp_accept(self.listener) {
                            self.accepted.push(h);
                        }
                        for &h in &self.accepted {
                            while let Ok(Some(_)) = self.stack.tcp_recv(h) {}
                        }
                    }
                    3 => {
                        let _ = self.stack.tcp_shutdown(c);
                    }
                    _ => {
                        if let Some(h) = self.accepted.pop() {
                            let _ = self.stack.tcp_close(h);
                        }
                    }
                }
            }
        }
        self.poll();
    }
}

proptest! {
    #[test]
    fn random_input_never_panics_or_breaks_an_invariant(
        seed in any::<u64>(),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut t = target(seed);
        let mut rng = SimRng::new(seed);
        for s in steps {
            t.apply(s, &mut rng);
        }
        // Everything closes cleanly in the end.
        t.clock.advance(Duration::from_secs(600));
        t.poll();
        let stats = t.stack.stats();
        prop_assert!(stats.rx_frames > 0);
    }
}
