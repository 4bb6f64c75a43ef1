//! Scripted scenarios in the spirit of packetdrill: the test plays the peer, injects segments
//! into one stack and checks every segment the stack sends back, field by field, while moving
//! a virtual clock.
//!
//! Sequence numbers in scripts are relative: `us(n)` is the peer's ISS + n, `them(n)` the
//! stack's ISS + n (learned from its SYN or SYN-ACK).

use std::net::SocketAddrV4;
use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimWire};
use bypass_devices::Device;
use bypass_inet::{Error, SocketHandle, Stack, StackConfig, TcpConfig, TcpState};
use bypass_runtime::{Buffer, Clock, Instant};
use bypass_wire::{
    ChecksumCapabilities, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr, TcpFlags, TcpPacket,
    TcpRepr, TcpSeqNumber, TcpTimestamp,
};

const STACK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const STACK_IP: Ipv4Address = Ipv4Address::new(192, 168, 7, 1);
const PEER_IP: Ipv4Address = Ipv4Address::new(192, 168, 7, 2);
const PEER_ISS: u32 = 1_000_000;
const PEER_PORT: u16 = 40_000;
const PORT: u16 = 80;

/// A segment the peer sends: built with [`seg`] and its modifiers.
#[derive(Clone, Debug)]
struct Seg {
    flags: TcpFlags,
    seq: u32,
    ack: Option<u32>,
    win: u16,
    payload: Vec<u8>,
    mss: Option<u16>,
    ws: Option<u8>,
    sack_perm: bool,
    sack: [Option<(u32, u32)>; 3],
    ts: Option<(u32, u32)>,
    src_port: u16,
    dst_port: u16,
}

/// `flags` like packetdrill: "S", "S.", ".", "P.", "F.", "R", "R.".
fn seg(flags: &str, seq: u32, ack: Option<u32>) -> Seg {
    let mut f = TcpFlags::EMPTY;
    for c in flags.chars() {
        f |= match c {
            'S' => TcpFlags::SYN,
            'F' => TcpFlags::FIN,
            'R' => TcpFlags::RST,
            'P' => TcpFlags::PSH,
            '.' => TcpFlags::ACK,
            _ => panic!("unknown flag {c}"),
        };
    }
    Seg {
        flags: f,
        seq,
        ack,
        win: 65535,
        payload: Vec::new(),
        mss: None,
        ws: None,
        sack_perm: false,
        sack: [None; 3],
        ts: None,
        src_port: PEER_PORT,
        dst_port: PORT,
    }
}

impl Seg {
    fn win(mut self, w: u16) -> Seg {
        self.win = w;
        self
    }
    fn data(mut self, d: &[u8]) -> Seg {
        self.payload = d.to_vec();
        self
    }
    fn mss(mut self, m: u16) -> Seg {
        self.mss = Some(m);
        self
    }
    fn ws(mut self, s: u8) -> Seg {
        self.ws = Some(s);
        self
    }
    fn sack_perm(mut self) -> Seg {
        self.sack_perm = true;
        self
    }
    fn ts(mut self, val: u32, ecr: u32) -> Seg {
        self.ts = Some((val, ecr));
        self
    }
    fn ports(mut self, src: u16, dst: u16) -> Seg {
        self.src_port = src;
        self.dst_port = dst;
        self
    }
}

/// A segment the stack sent, parsed.
#[derive(Clone, Debug)]
struct Out {
    flags: TcpFlags,
    seq: u32,
    ack: Option<u32>,
    win: u16,
    payload: Vec<u8>,
    mss: Option<u16>,
    ws: Option<u8>,
    sack_perm: bool,
    sack: Vec<(u32, u32)>,
    ts: Option<TcpTimestamp>,
}

impl Out {
    fn flags_str(&self) -> String {
        let f = self.flags;
        let mut s = String::new();
        for (flag, c) in [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, '.'),
        ] {
            if f.contains(flag) {
                s.push(c);
            }
        }
        s
    }
}

struct Script {
    clock: Clock,
    #[allow(dead_code)]
    wire: SimWire,
    stack: Stack<SimPort>,
    peer: SimPort,
    /// The stack's ISS, learned from its first SYN.
    their_iss: u32,
}

fn us(n: u32) -> u32 {
    PEER_ISS.wrapping_add(n)
}

impl Script {
    fn new(tcp: TcpConfig) -> Script {
        let clock = Clock::virtual_at(Instant::from_millis(1000));
        let wire = SimWire::new(clock.clone(), SimConfig::default()).unwrap();
        let port = wire.port(STACK_MAC).unwrap();
        let peer = wire.port(PEER_MAC).unwrap();
        let mut cfg = StackConfig::new(Ipv4Cidr::new(STACK_IP, 24));
        cfg.static_arp = vec![(PEER_IP, EthernetAddress(PEER_MAC))];
        cfg.secret = Some([9; 16]);
        cfg.tcp = tcp;
        let mut stack = Stack::new(port, cfg);
        stack.poll(clock.now());
        Script {
            clock,
            wire,
            stack,
            peer,
            their_iss: 0,
        }
    }

    /// A configuration with fixed, easy timings: RTO 1 s min 200 ms, no delayed ACK, no quick
    /// ACK games, 2 s TIME-WAIT.
    fn config() -> TcpConfig {
        TcpConfig {
            delayed_ack: None,
            time_wait: Duration::from_secs(2),
            min_rto: Duration::from_millis(200),
            initial_rto: Duration::from_secs(1),
            ..TcpConfig::default()
        }
    }

    fn them(&self, n: u32) -> u32 {
        self.their_iss.wrapping_add(n)
    }

    fn poll(&mut self) {
        for _ in 0..10 {
            self.stack.poll(self.clock.now());
        }
    }

    fn advance(&mut self, d: Duration) {
        self.clock.advance(d);
        self.poll();
    }

    fn inject(&mut self, s: Seg) {
        let repr = TcpRepr {
            src_port: s.src_port,
            dst_port: s.dst_port,
            flags: s.flags,
            seq_number: TcpSeqNumber(s.seq),
            ack_number: s.ack.map(TcpSeqNumber),
            window_len: s.win,
            window_scale: s.ws,
            max_seg_size: s.mss,
            sack_permitted: s.sack_perm,
            sack_ranges: s.sack,
            timestamp: s.ts.map(|(tsval, tsecr)| TcpTimestamp { tsval, tsecr }),
            payload: &s.payload,
        };
        let mut frame = self.peer.pool().alloc().unwrap();
        let tcp_len = repr.buffer_len();
        let total = 14 + 20 + tcp_len;
        frame.append(total);
        let caps = ChecksumCapabilities::default();
        {
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
                next_header: IpProtocol::Tcp,
                payload_len: tcp_len,
                hop_limit: 64,
            }
            .emit(&mut Ipv4Packet::new_unchecked(&mut bytes[14..34]), &caps);
            repr.emit(
                &mut TcpPacket::new_unchecked(&mut bytes[34..]),
                PEER_IP,
                STACK_IP,
                &caps,
            );
        }
        let mut v = vec![frame];
        self.peer.tx_burst(&mut v);
        self.poll();
    }

    /// Everything the stack sent since the last look.
    fn sent(&mut self) -> Vec<Out> {
        self.poll();
        let mut frames: Vec<Buffer> = Vec::new();
        while self.peer.rx_burst(&mut frames, 64) > 0 {}
        frames.iter().filter_map(|f| parse(f)).collect()
    }

    /// Exactly one segment was sent; returns it.
    fn expect_one(&mut self) -> Out {
        let mut v = self.sent();
        assert_eq!(v.len(), 1, "expected one segment, got {v:?}");
        v.remove(0)
    }

    /// Exactly one segment with these flags, sequence and acknowledgment numbers.
    fn expect(&mut self, flags: &str, seq: u32, ack: Option<u32>) -> Out {
        let o = self.expect_one();
        // PSH is not compared (the parse drops it).
        assert_eq!(o.flags_str(), flags.replace('P', ""), "flags of {o:?}");
        assert_eq!(o.seq, seq, "seq of {o:?}");
        assert_eq!(o.ack, ack, "ack of {o:?}");
        o
    }

    fn expect_nothing(&mut self) {
        let v = self.sent();
        assert!(v.is_empty(), "expected silence, got {v:?}");
    }

    fn buf(&self, data: &[u8]) -> Buffer {
        self.stack.device().pool().alloc_copy(data).unwrap()
    }

    /// Passive open on PORT: SYN (with `syn` options) -> SYN-ACK -> ACK; returns the accepted
    /// connection and the SYN-ACK.
    fn accept_with(&mut self, syn: Seg) -> (SocketHandle, Out) {
        let l = self
            .stack
            .tcp_listen(SocketAddrV4::new(STACK_IP.into(), PORT), 4)
            .unwrap();
        let syn_ts = syn.ts;
        self.inject(syn);
        let synack = self.expect_one();
        assert_eq!(synack.flags_str(), "S.");
        assert_eq!(synack.ack, Some(us(1)));
        self.their_iss = synack.seq;
        let mut ack = seg(".", us(1), Some(self.them(1)));
        if let (Some(ts), Some((val, _))) = (synack.ts, syn_ts) {
            ack = ack.ts(val + 1, ts.tsval);
        }
        self.inject(ack);
        self.expect_nothing();
        let (h, peer) = self
            .stack
            .tcp_accept(l)
            .unwrap()
            .expect("a connection to accept");
        assert_eq!(peer, SocketAddrV4::new(PEER_IP.into(), PEER_PORT));
        assert_eq!(self.stack.tcp_state(h).unwrap(), TcpState::Established);
        (h, synack)
    }

    /// A plain passive open: no options but an MSS of 1000.
    fn accept(&mut self) -> SocketHandle {
        self.accept_with(seg("S", PEER_ISS, None).mss(1000)).0
    }
}

fn parse(frame: &[u8]) -> Option<Out> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let ipp = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let ip = Ipv4Repr::parse(&ipp, &ChecksumCapabilities::default())
        .expect("the stack sends valid IPv4");
    assert_eq!(ip.src_addr, STACK_IP);
    if ip.next_header != IpProtocol::Tcp {
        return None;
    }
    let body = &ipp.payload()[..ip.payload_len];
    let tcpp = TcpPacket::new_checked(body).unwrap();
    let t = TcpRepr::parse(
        &tcpp,
        ip.src_addr,
        ip.dst_addr,
        &ChecksumCapabilities::default(),
    )
    .expect("the stack sends valid TCP with a correct checksum");
    Some(Out {
        flags: t.flags & !TcpFlags::PSH,
        seq: t.seq_number.0,
        ack: t.ack_number.map(|a| a.0),
        win: t.window_len,
        payload: t.payload.to_vec(),
        mss: t.max_seg_size,
        ws: t.window_scale,
        sack_perm: t.sack_permitted,
        sack: t.sack_ranges.iter().flatten().copied().collect(),
        ts: t.timestamp,
    })
}

// ---------------------------------------------------------------------------- handshakes

#[test]
fn passive_open_negotiates_every_option_the_peer_offers() {
    let mut s = Script::new(Script::config());
    let (_h, synack) = s.accept_with(
        seg("S", PEER_ISS, None)
            .mss(1200)
            .ws(7)
            .sack_perm()
            .ts(77, 0)
            .win(65535),
    );
    assert_eq!(synack.mss, Some(1460));
    assert_eq!(
        synack.ws,
        Some(3),
        "256 KiB receive buffer needs a shift of 3"
    );
    assert!(synack.sack_perm);
    let ts = synack.ts.expect("timestamps echoed");
    assert_eq!(ts.tsecr, 77);
    assert_eq!(synack.win, 65535, "a SYN-ACK window is never scaled");
    assert!(synack.payload.is_empty());
}

#[test]
fn passive_open_without_options_leaves_them_off() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    for _ in 0..2 {
        let b = s.buf(&[7u8; 1500]);
        assert_eq!(s.stack.tcp_send(h, &b).unwrap(), 1500);
    }
    let segs = s.sent();
    // MSS 1000 from the peer, no options: 1000 + 1000 + 1000.
    assert_eq!(segs.len(), 3, "{segs:?}");
    for (i, o) in segs.iter().enumerate() {
        assert_eq!(o.seq, s.them(1 + 1000 * i as u32));
        assert_eq!(o.payload, vec![7u8; 1000]);
        assert!(o.ts.is_none() && o.sack.is_empty() && o.ws.is_none());
        // No window scaling: the raw field is the window, at most 65535.
        assert_eq!(o.win, 65535);
    }
}

#[test]
fn active_open_sends_options_and_completes_on_syn_ack() {
    let mut s = Script::new(Script::config());
    let c = s
        .stack
        .tcp_connect(Some(5555), SocketAddrV4::new(PEER_IP.into(), PEER_PORT))
        .unwrap();
    let syn = s.expect_one();
    assert_eq!(syn.flags_str(), "S");
    assert_eq!(syn.ack, None);
    assert_eq!(syn.mss, Some(1460));
    assert!(syn.ws.is_some() && syn.sack_perm && syn.ts.is_some());
    s.their_iss = syn.seq;
    s.inject(
        seg("S.", PEER_ISS, Some(s.them(1)))
            .ports(PEER_PORT, 5555)
            .mss(536),
    );
    s.expect(".", s.them(1), Some(us(1)));
    assert_eq!(s.stack.tcp_state(c).unwrap(), TcpState::Established);
    // The peer's MSS of 536 bounds our segments; no options were agreed.
    let b = s.buf(&[1u8; 600]);
    s.stack.tcp_send(c, &b).unwrap();
    let segs = s.sent();
    assert_eq!(
        segs.iter().map(|o| o.payload.len()).collect::<Vec<_>>(),
        vec![536, 64]
    );
    assert!(segs.iter().all(|o| o.ts.is_none()));
}

#[test]
fn simultaneous_open_goes_through_syn_received() {
    let mut s = Script::new(Script::config());
    let c = s
        .stack
        .tcp_connect(Some(PORT), SocketAddrV4::new(PEER_IP.into(), PEER_PORT))
        .unwrap();
    let syn = s.expect_one();
    s.their_iss = syn.seq;
    // The peer's SYN crosses ours (RFC 9293 figure 8).
    s.inject(seg("S", PEER_ISS, None).mss(1460));
    s.expect("S.", s.them(0), Some(us(1)));
    assert_eq!(s.stack.tcp_state(c).unwrap(), TcpState::SynReceived);
    s.inject(seg("S.", PEER_ISS, Some(s.them(1))));
    s.expect_nothing();
    assert_eq!(s.stack.tcp_state(c).unwrap(), TcpState::Established);
}

#[test]
fn a_lost_syn_ack_is_sent_again_when_the_syn_repeats() {
    let mut s = Script::new(Script::config());
    let _l = s
        .stack
        .tcp_listen(SocketAddrV4::new(STACK_IP.into(), PORT), 4)
        .unwrap();
    s.inject(seg("S", PEER_ISS, None));
    let first = s.expect_one();
    s.inject(seg("S", PEER_ISS, None));
    let again = s.expect_one();
    assert_eq!(again.flags_str(), "S.");
    assert_eq!(again.seq, first.seq);
}

#[test]
fn segments_to_a_closed_port_get_resets() {
    let mut s = Script::new(Script::config());
    // RFC 9293 §3.10.7.1: no ACK -> <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
    s.inject(seg("S", PEER_ISS, None).ports(PEER_PORT, 9));
    s.expect("R.", 0, Some(us(1)));
    // ACK -> <SEQ=SEG.ACK><CTL=RST>.
    s.inject(seg(".", us(1), Some(4242)).ports(PEER_PORT, 9).data(b"abc"));
    s.expect("R", 4242, None);
    // A RST is never answered.
    s.inject(seg("R", us(1), None).ports(PEER_PORT, 9));
    s.expect_nothing();
    assert_eq!(s.stack.stats().tcp_no_socket, 3);
}

// ---------------------------------------------------------------------------- close paths

#[test]
fn active_close_goes_through_fin_wait_and_time_wait() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.stack.tcp_shutdown(h).unwrap();
    s.expect("F.", s.them(1), Some(us(1)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::FinWait1);
    s.inject(seg(".", us(1), Some(s.them(2))));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::FinWait2);
    s.inject(seg("F.", us(1), Some(s.them(2))));
    s.expect(".", s.them(2), Some(us(2)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::TimeWait);
    // A retransmitted FIN in TIME-WAIT is acknowledged again.
    s.advance(Duration::from_secs(1));
    s.inject(seg("F.", us(1), Some(s.them(2))));
    s.expect(".", s.them(2), Some(us(2)));
    s.advance(Duration::from_millis(1999));
    assert_eq!(
        s.stack.tcp_state(h).unwrap(),
        TcpState::TimeWait,
        "2 s from the last FIN"
    );
    s.advance(Duration::from_millis(2));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Closed);
    assert_eq!(s.stack.tcp_recv(h).unwrap_err(), Error::EndOfStream);
}

#[test]
fn passive_close_goes_through_close_wait_and_last_ack() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.inject(seg("F.", us(1), Some(s.them(1))).data(b"bye"));
    s.expect(".", s.them(1), Some(us(5)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::CloseWait);
    assert_eq!(&s.stack.tcp_recv(h).unwrap().unwrap()[..], b"bye");
    assert_eq!(s.stack.tcp_recv(h).unwrap_err(), Error::EndOfStream);
    s.stack.tcp_shutdown(h).unwrap();
    s.expect("F.", s.them(1), Some(us(5)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::LastAck);
    s.inject(seg(".", us(5), Some(s.them(2))));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Closed);
    s.stack.tcp_close(h).unwrap();
    assert_eq!(s.stack.socket_count(), 1, "only the listener is left");
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.stack.tcp_shutdown(h).unwrap();
    s.expect("F.", s.them(1), Some(us(1)));
    // The peer's FIN crosses ours: it has not seen our FIN.
    s.inject(seg("F.", us(1), Some(s.them(1))));
    s.expect(".", s.them(2), Some(us(2)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Closing);
    s.inject(seg(".", us(2), Some(s.them(2))));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::TimeWait);
}

#[test]
fn close_with_unread_data_resets_the_connection() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.inject(seg("P.", us(1), Some(s.them(1))).data(b"unread"));
    s.expect(".", s.them(1), Some(us(7)));
    s.stack.tcp_close(h).unwrap();
    s.expect("R", s.them(1), None);
    assert_eq!(s.stack.tcp_state(h).unwrap_err(), Error::InvalidHandle);
}

// ---------------------------------------------------------------------------- resets (RFC 5961)

#[test]
fn an_exact_rst_resets_and_an_inexact_one_gets_a_challenge_ack() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    // In the window but not at RCV.NXT: challenge ACK (RFC 5961 §3.2).
    s.inject(seg("R", us(100), None));
    s.expect(".", s.them(1), Some(us(1)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Established);
    // Outside the window: dropped silently.
    s.inject(seg("R", us(1).wrapping_add(10_000_000), None));
    s.expect_nothing();
    // Exactly RCV.NXT: reset.
    s.inject(seg("R", us(1), None));
    s.expect_nothing();
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Closed);
    assert_eq!(s.stack.tcp_recv(h).unwrap_err(), Error::ConnectionReset);
    assert_eq!(s.stack.stats().tcp_challenge_acks, 1);
    assert_eq!(s.stack.stats().tcp_connections_reset, 1);
}

#[test]
fn a_syn_on_an_established_connection_gets_a_challenge_ack() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.inject(seg("S", us(500), None));
    s.expect(".", s.them(1), Some(us(1)));
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Established);
}

#[test]
fn an_ack_for_unsent_data_is_answered_and_dropped() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.inject(seg("P.", us(1), Some(s.them(1000))).data(b"xyz"));
    s.expect(".", s.them(1), Some(us(1)));
    assert!(
        s.stack.tcp_recv(h).unwrap().is_none(),
        "the data of a bad ACK is not taken"
    );
    assert_eq!(s.stack.stats().tcp_ack_unacceptable, 1);
}

// ---------------------------------------------------------------------------- timers

#[test]
fn retransmissions_back_off_exponentially_then_time_out() {
    let mut cfg = Script::config();
    cfg.max_retries = 3;
    let mut s = Script::new(cfg);
    let h = s.accept();
    let b = s.buf(b"data");
    s.stack.tcp_send(h, &b).unwrap();
    s.expect("P.", s.them(1), Some(us(1)));
    // Initial RTO 1 s (no sample yet), then 2 s, 4 s.
    for wait in [1000u64, 2000, 4000] {
        s.advance(Duration::from_millis(wait - 1));
        s.expect_nothing();
        s.advance(Duration::from_millis(1));
        let o = s.expect("P.", s.them(1), Some(us(1)));
        assert_eq!(o.payload, b"data");
    }
    s.advance(Duration::from_millis(8000));
    s.expect("R", s.them(5), None);
    assert_eq!(s.stack.tcp_state(h).unwrap(), TcpState::Closed);
    assert_eq!(s.stack.tcp_recv(h).unwrap_err(), Error::TimedOut);
    assert_eq!(s.stack.stats().tcp_rto_expired, 3);
}

#[test]
fn zero_window_is_probed_until_it_opens() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    // The peer closes its window.
    s.inject(seg(".", us(1), Some(s.them(1))).win(0));
    let b = s.buf(b"waiting");
    s.stack.tcp_send(h, &b).unwrap();
    s.expect_nothing();
    // Probe after one RTO: an old sequence number forces an answer.
    s.advance(Duration::from_millis(1000));
    s.expect(".", s.them(0), Some(us(1)));
    s.inject(seg(".", us(1), Some(s.them(1))).win(0));
    s.expect_nothing();
    // The next probe backs off: 2 s.
    s.advance(Duration::from_millis(1999));
    s.expect_nothing();
    s.advance(Duration::from_millis(1));
    s.expect(".", s.them(0), Some(us(1)));
    // The window opens: the data goes.
    s.inject(seg(".", us(1), Some(s.them(1))).win(100));
    let o = s.expect("P.", s.them(1), Some(us(1)));
    assert_eq!(o.payload, b"waiting");
    assert_eq!(s.stack.stats().tcp_zero_window_probes, 2);
}

#[test]
fn delayed_ack_waits_its_bound_and_every_second_segment_is_acked_at_once() {
    let mut cfg = Script::config();
    cfg.delayed_ack = Some(Duration::from_millis(40));
    cfg.quick_acks = 0;
    let mut s = Script::new(cfg);
    let h = s.accept();
    s.inject(seg("P.", us(1), Some(s.them(1))).data(&[1; 100]));
    s.expect_nothing();
    s.advance(Duration::from_millis(39));
    s.expect_nothing();
    s.advance(Duration::from_millis(1));
    s.expect(".", s.them(1), Some(us(101)));
    s.inject(seg("P.", us(101), Some(s.them(1))).data(&[2; 100]));
    s.expect_nothing();
    s.inject(seg("P.", us(201), Some(s.them(1))).data(&[3; 100]));
    s.expect(".", s.them(1), Some(us(301)));
    let mut got = Vec::new();
    while let Some(b) = s.stack.tcp_recv(h).unwrap() {
        got.extend_from_slice(&b);
    }
    assert_eq!(got.len(), 300);
    assert!(got[..100].iter().all(|&b| b == 1) && got[100..200].iter().all(|&b| b == 2));
    assert!(got[200..].iter().all(|&b| b == 3));
}

#[test]
fn nagle_holds_small_segments_while_data_is_unacknowledged() {
    let mut cfg = Script::config();
    cfg.nagle = true;
    let mut s = Script::new(cfg);
    let h = s.accept();
    let a = s.buf(b"a");
    s.stack.tcp_send(h, &a).unwrap();
    s.expect("P.", s.them(1), Some(us(1)));
    let b = s.buf(b"b");
    s.stack.tcp_send(h, &b).unwrap();
    let c = s.buf(b"c");
    s.stack.tcp_send(h, &c).unwrap();
    s.expect_nothing();
    s.inject(seg(".", us(1), Some(s.them(2))));
    let o = s.expect("P.", s.them(2), Some(us(1)));
    assert_eq!(o.payload, b"bc");
}

#[test]
fn without_nagle_small_segments_go_at_once() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    for (i, d) in [b"a", b"b"].iter().enumerate() {
        let b = s.buf(*d);
        s.stack.tcp_send(h, &b).unwrap();
        let o = s.expect("P.", s.them(1 + i as u32), Some(us(1)));
        assert_eq!(o.payload, *d);
    }
}

// ---------------------------------------------------------------------------- loss recovery

#[test]
fn three_duplicate_acks_trigger_a_fast_retransmit() {
    let mut cfg = Script::config();
    cfg.congestion = bypass_inet::CongestionKind::NewReno;
    let mut s = Script::new(cfg);
    let h = s.accept();
    let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    let b = s.buf(&data[..1900]);
    s.stack.tcp_send(h, &b).unwrap();
    let b = s.buf(&data[1900..3800]);
    s.stack.tcp_send(h, &b).unwrap();
    let b = s.buf(&data[3800..]);
    s.stack.tcp_send(h, &b).unwrap();
    let segs = s.sent();
    assert_eq!(segs.len(), 5, "1000-byte segments: {segs:?}");
    // The second segment is lost: the peer acknowledges the first, then three duplicates.
    s.inject(seg(".", us(1), Some(s.them(1001))));
    s.expect_nothing();
    for _ in 0..2 {
        s.inject(seg(".", us(1), Some(s.them(1001))));
        s.expect_nothing();
    }
    s.inject(seg(".", us(1), Some(s.them(1001))));
    let o = s.expect(".", s.them(1001), Some(us(1)));
    assert_eq!(o.payload, &data[1000..2000]);
    assert_eq!(s.stack.stats().tcp_fast_retransmits, 1);
    // A partial ACK (RFC 6582) retransmits the next hole at once.
    s.inject(seg(".", us(1), Some(s.them(2001))));
    let o = s.sent();
    assert!(
        o.iter()
            .any(|o| o.seq == s.them(2001) && o.payload == data[2000..3000]),
        "{o:?}"
    );
    // The full ACK ends recovery.
    s.inject(seg(".", us(1), Some(s.them(5001))));
    assert_eq!(s.stack.tcp_info(h).unwrap().in_flight, 0);
}

#[test]
fn out_of_order_data_is_held_and_sacked_then_delivered_in_order() {
    let mut s = Script::new(Script::config());
    let (h, _) = s.accept_with(seg("S", PEER_ISS, None).mss(1000).sack_perm());
    s.inject(seg("P.", us(101), Some(s.them(1))).data(&[2; 100]));
    let o = s.expect(".", s.them(1), Some(us(1)));
    assert_eq!(o.sack, vec![(us(101), us(201))]);
    s.inject(seg("P.", us(301), Some(s.them(1))).data(&[4; 100]));
    let o = s.expect(".", s.them(1), Some(us(1)));
    assert_eq!(
        o.sack,
        vec![(us(301), us(401)), (us(101), us(201))],
        "the newest block first"
    );
    assert!(
        s.stack.tcp_recv(h).unwrap().is_none(),
        "nothing in order yet"
    );
    s.inject(seg("P.", us(1), Some(s.them(1))).data(&[1; 100]));
    let o = s.expect(".", s.them(1), Some(us(201)));
    assert_eq!(o.sack, vec![(us(301), us(401))]);
    s.inject(seg("P.", us(201), Some(s.them(1))).data(&[3; 100]));
    let o = s.expect(".", s.them(1), Some(us(401)));
    assert!(o.sack.is_empty());
    let mut got = Vec::new();
    while let Some(b) = s.stack.tcp_recv(h).unwrap() {
        got.extend_from_slice(&b);
    }
    let want: Vec<u8> = (1..=4u8).flat_map(|v| [v; 100]).collect();
    assert_eq!(got, want);
}

#[test]
fn paws_drops_a_segment_with_an_old_timestamp() {
    let mut s = Script::new(Script::config());
    let (h, synack) = s.accept_with(seg("S", PEER_ISS, None).ts(1000, 0));
    let ecr = synack.ts.unwrap().tsval;
    s.inject(seg("P.", us(1), Some(s.them(1))).data(b"new").ts(1005, ecr));
    s.expect(".", s.them(1), Some(us(4)));
    // RFC 7323 §5.3: TSval older than TS.Recent: drop, and acknowledge.
    s.inject(seg("P.", us(4), Some(s.them(1))).data(b"old").ts(900, ecr));
    s.expect(".", s.them(1), Some(us(4)));
    assert_eq!(&s.stack.tcp_recv(h).unwrap().unwrap()[..], b"new");
    assert!(s.stack.tcp_recv(h).unwrap().is_none());
    assert_eq!(s.stack.stats().tcp_paws_rejected, 1);
}

#[test]
fn the_listen_backlog_is_bounded() {
    let mut s = Script::new(Script::config());
    let l = s
        .stack
        .tcp_listen(SocketAddrV4::new(STACK_IP.into(), PORT), 1)
        .unwrap();
    // The SYN queue takes at most 2 * backlog pending handshakes.
    for i in 0..3u16 {
        s.inject(seg("S", PEER_ISS, None).ports(PEER_PORT + i, PORT));
    }
    let synacks = s.sent();
    assert_eq!(synacks.len(), 2);
    assert_eq!(s.stack.stats().tcp_syn_queue_full, 1);
    let _ = l;
}

#[test]
fn icmp_echo_is_answered_byte_for_byte() {
    let mut s = Script::new(Script::config());
    let req = Icmpv4Repr::EchoRequest {
        ident: 0x1234,
        seq_no: 7,
        data: b"ping payload",
    };
    let mut frame = s.peer.pool().alloc().unwrap();
    let len = req.buffer_len();
    frame.append(14 + 20 + len);
    let caps = ChecksumCapabilities::default();
    {
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
            next_header: IpProtocol::Icmp,
            payload_len: len,
            hop_limit: 64,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut bytes[14..34]), &caps);
        req.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[34..]), &caps);
    }
    s.peer.tx_burst(&mut vec![frame]);
    s.poll();
    let mut frames = Vec::new();
    s.peer.rx_burst(&mut frames, 8);
    assert_eq!(frames.len(), 1);
    let eth = EthernetFrame::new_checked(&frames[0][..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.dst_addr(), PEER_IP);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let reply = Icmpv4Repr::parse(&icmp, &caps).unwrap();
    assert_eq!(
        reply,
        Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 7,
            data: b"ping payload"
        }
    );
}

#[test]
fn corrupted_segments_are_counted_by_reason_and_dropped() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    // A data segment whose checksum is wrong.
    let mut frame = s.peer.pool().alloc().unwrap();
    let repr = TcpRepr {
        src_port: PEER_PORT,
        dst_port: PORT,
        flags: TcpFlags::ACK,
        seq_number: TcpSeqNumber(us(1)),
        ack_number: Some(TcpSeqNumber(s.them(1))),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: b"evil",
    };
    let tcp_len = repr.buffer_len();
    frame.append(14 + 20 + tcp_len);
    let caps = ChecksumCapabilities::default();
    {
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
            next_header: IpProtocol::Tcp,
            payload_len: tcp_len,
            hop_limit: 64,
        }
        .emit(&mut Ipv4Packet::new_unchecked(&mut bytes[14..34]), &caps);
        repr.emit(
            &mut TcpPacket::new_unchecked(&mut bytes[34..]),
            PEER_IP,
            STACK_IP,
            &caps,
        );
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
    }
    s.peer.tx_burst(&mut vec![frame]);
    s.poll();
    s.expect_nothing();
    assert!(s.stack.tcp_recv(h).unwrap().is_none());
    assert_eq!(
        s.stack
            .stats()
            .parse_errors(bypass_inet::Layer::Tcp, bypass_wire::Error::BadChecksum),
        1
    );
    assert_eq!(
        s.stack.stats().parse_error_counts(),
        vec![("tcp", "bad_checksum", 1)]
    );
}

#[test]
fn sack_recovery_retransmits_only_the_holes() {
    let mut cfg = Script::config();
    cfg.congestion = bypass_inet::CongestionKind::NewReno;
    let mut s = Script::new(cfg);
    let (h, _) = s.accept_with(seg("S", PEER_ISS, None).mss(1000).sack_perm());
    let data: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
    for part in data.chunks(1500) {
        let b = s.buf(part);
        s.stack.tcp_send(h, &b).unwrap();
    }
    let segs = s.sent();
    assert_eq!(segs.len(), 6, "{segs:?}");
    let t = |n: u32| s.them(n);
    let (t1001, t2001, t3001, t4001, t5001, t6001) =
        (t(1001), t(2001), t(3001), t(4001), t(5001), t(6001));
    // Segments 2 and 4 are lost; the peer acknowledges 1 and SACKs 3, 5 and 6.
    s.inject(seg(".", us(1), Some(t1001)));
    let dup = |sack: &[(u32, u32)]| {
        let mut d = seg(".", us(1), Some(t1001));
        for (i, r) in sack.iter().enumerate() {
            d.sack[i] = Some(*r);
        }
        d
    };
    let d1 = dup(&[(t2001, t3001)]);
    let d2 = dup(&[(t4001, t5001), (t2001, t3001)]);
    let d3 = dup(&[(t4001, t6001), (t2001, t3001)]);
    s.inject(d1);
    s.expect_nothing();
    s.inject(d2);
    s.expect_nothing();
    s.inject(d3);
    // Recovery: the first hole only (segment 2).
    let o = s.expect(".", t1001, Some(us(1)));
    assert_eq!(o.payload, &data[1000..2000]);
    // The partial ACK covers segments 2 and 3; segment 4 is the last hole and goes next
    // (no new data is left to send).
    let mut partial = seg(".", us(1), Some(t3001));
    partial.sack[0] = Some((t4001, t6001));
    s.inject(partial);
    let o = s.expect(".", t3001, Some(us(1)));
    assert_eq!(o.payload, &data[3000..4000]);
    s.inject(seg(".", us(1), Some(t6001)));
    s.expect_nothing();
    let info = s.stack.tcp_info(h).unwrap();
    assert_eq!(info.in_flight, 0);
    assert_eq!(
        s.stack.stats().tcp_retransmits,
        2,
        "segments 3, 5 and 6 were never sent again"
    );
    assert_eq!(s.stack.stats().tcp_fast_retransmits, 1);
}

#[test]
fn three_sacked_small_segments_mark_a_hole_lost_without_three_duplicates() {
    // RFC 6675 IsLost(): DupThresh discontiguous SACKed sequences above a hole mean it was
    // lost, even when they hold far fewer than (DupThresh - 1) * SMSS bytes: an RPC flow of
    // small messages recovers by fast retransmit, not by the timer.
    let mut cfg = Script::config();
    cfg.congestion = bypass_inet::CongestionKind::NewReno;
    let mut s = Script::new(cfg);
    let (h, _) = s.accept_with(seg("S", PEER_ISS, None).mss(1000).sack_perm());
    let data: Vec<u8> = (0..700u32).map(|i| (i * 3) as u8).collect();
    let mut segs = Vec::new();
    for part in data.chunks(100) {
        let b = s.buf(part);
        s.stack.tcp_send(h, &b).unwrap();
        segs.extend(s.sent());
    }
    assert_eq!(segs.len(), 7, "one segment per 100-byte message: {segs:?}");
    let [t1, t101, t201, t301, t401, t501, t701] =
        [1, 101, 201, 301, 401, 501, 701].map(|n| s.them(n));
    // Segments 1, 3 and 5 are lost; two duplicate ACKs reach us (the others were lost too),
    // the second SACKing 2, 4 and 6-7: three ranges, 400 bytes.
    let mut d1 = seg(".", us(1), Some(t1));
    d1.sack[0] = Some((t101, t201));
    s.inject(d1);
    s.expect_nothing();
    let mut d2 = seg(".", us(1), Some(t1));
    d2.sack[0] = Some((t501, t701));
    d2.sack[1] = Some((t301, t401));
    d2.sack[2] = Some((t101, t201));
    s.inject(d2);
    let out = s.sent();
    assert_eq!(
        (out[0].seq, &out[0].payload[..]),
        (t1, &data[..100]),
        "the first hole goes again at once: {out:?}"
    );
    assert_eq!(s.stack.stats().tcp_fast_retransmits, 1);
    // With no new data to send, the other holes follow (RFC 6675 NextSeg() rule 3).
    let again: Vec<_> = out.iter().map(|o| (o.seq, o.payload.len())).collect();
    assert_eq!(again, vec![(t1, 100), (t201, 100), (t401, 100)]);
    s.inject(seg(".", us(1), Some(t701)));
    assert_eq!(s.stack.tcp_info(h).unwrap().in_flight, 0);
}

#[test]
fn the_peers_window_scale_is_applied() {
    let mut s = Script::new(Script::config());
    let (h, _) = s.accept_with(seg("S", PEER_ISS, None).mss(1000).ws(2).win(1000));
    // The SYN's window is never scaled; this ACK's field of 300 means 1200 bytes.
    s.inject(seg(".", us(1), Some(s.them(1))).win(300));
    let b = s.buf(&[9u8; 1500]);
    s.stack.tcp_send(h, &b).unwrap();
    let segs = s.sent();
    let lens: Vec<usize> = segs.iter().map(|o| o.payload.len()).collect();
    // 1200 bytes of window: one full segment; the 200 bytes left would be a silly window
    // (RFC 9293 §3.8.6.2.1) and wait.
    assert_eq!(lens, vec![1000]);
    s.inject(seg(".", us(1), Some(s.them(1001))).win(300));
    let lens: Vec<usize> = s.sent().iter().map(|o| o.payload.len()).collect();
    assert_eq!(
        lens,
        vec![500],
        "the rest fits the reopened 1200-byte window"
    );
    assert_eq!(s.stack.tcp_info(h).unwrap().snd_wnd, 1200);
}

#[test]
fn keepalive_probes_an_idle_peer_then_gives_up() {
    let mut cfg = Script::config();
    cfg.keepalive = Some(Duration::from_secs(10));
    cfg.keepalive_interval = Duration::from_secs(1);
    cfg.keepalive_probes = 2;
    let mut s = Script::new(cfg);
    let h = s.accept();
    s.advance(Duration::from_millis(9999));
    s.expect_nothing();
    s.advance(Duration::from_millis(1));
    // RFC 1122 §4.2.3.6: SEG.SEQ = SND.NXT - 1.
    s.expect(".", s.them(0), Some(us(1)));
    // An answer restarts the idle time.
    s.inject(seg(".", us(1), Some(s.them(1))));
    s.advance(Duration::from_secs(10));
    s.expect(".", s.them(0), Some(us(1)));
    s.advance(Duration::from_secs(1));
    s.expect(".", s.them(0), Some(us(1)));
    s.advance(Duration::from_secs(1));
    s.expect("R", s.them(1), None);
    assert_eq!(s.stack.tcp_recv(h).unwrap_err(), Error::TimedOut);
    assert_eq!(s.stack.stats().tcp_keepalive_probes, 3);
}

#[test]
fn the_window_restarts_after_an_idle_period() {
    let mut cfg = Script::config();
    cfg.congestion = bypass_inet::CongestionKind::NewReno;
    let mut s = Script::new(cfg);
    let h = s.accept();
    let iw = s.stack.tcp_info(h).unwrap().cwnd;
    assert_eq!(iw, 10 * 1000, "RFC 6928: ten segments of the peer's MSS");
    // Grow the window in slow start.
    for i in 0..10u32 {
        let b = s.buf(&[1u8; 1000]);
        s.stack.tcp_send(h, &b).unwrap();
        s.sent();
        s.inject(seg(".", us(1), Some(s.them(1 + 1000 * (i + 1)))));
    }
    assert_eq!(s.stack.tcp_info(h).unwrap().cwnd, 20 * 1000);
    // RFC 5681 §4.1: idle for longer than an RTO, the window goes back to the initial one.
    s.advance(Duration::from_secs(5));
    let b = s.buf(&[2u8; 10]);
    s.stack.tcp_send(h, &b).unwrap();
    s.sent();
    assert_eq!(s.stack.tcp_info(h).unwrap().cwnd, iw);
}

#[test]
fn closing_a_listener_resets_connections_not_yet_accepted() {
    let mut s = Script::new(Script::config());
    let l = s
        .stack
        .tcp_listen(SocketAddrV4::new(STACK_IP.into(), PORT), 4)
        .unwrap();
    s.inject(seg("S", PEER_ISS, None));
    let synack = s.expect_one();
    s.their_iss = synack.seq;
    s.inject(seg(".", us(1), Some(s.them(1))));
    s.expect_nothing();
    s.stack.tcp_close_listener(l).unwrap();
    s.expect("R", s.them(1), None);
    assert_eq!(s.stack.socket_count(), 0);
    // The port is closed now.
    s.inject(seg("S", us(100), None).ports(PEER_PORT + 1, PORT));
    s.expect("R.", 0, Some(us(101)));
}

#[test]
fn challenge_acks_are_rate_limited() {
    let mut cfg = Script::config();
    cfg.challenge_ack_limit = 2;
    let mut s = Script::new(cfg);
    let _h = s.accept();
    for _ in 0..2 {
        s.inject(seg("S", us(500), None));
        s.expect(".", s.them(1), Some(us(1)));
    }
    s.inject(seg("S", us(500), None));
    s.expect_nothing();
    assert_eq!(s.stack.stats().tcp_challenge_acks_limited, 1);
    s.advance(Duration::from_secs(1));
    s.inject(seg("S", us(500), None));
    s.expect(".", s.them(1), Some(us(1)));
}

#[test]
fn unanswered_window_probes_fail_the_connection() {
    let mut cfg = Script::config();
    cfg.max_retries = 2;
    let mut s = Script::new(cfg);
    let h = s.accept();
    s.inject(seg(".", us(1), Some(s.them(1))).win(0));
    let b = s.buf(b"stuck");
    s.stack.tcp_send(h, &b).unwrap();
    s.expect_nothing();
    // Probes at 1 s and 2 s later; the third expiry gives up.
    s.advance(Duration::from_secs(1));
    s.expect(".", s.them(0), Some(us(1)));
    s.advance(Duration::from_secs(2));
    s.expect(".", s.them(0), Some(us(1)));
    s.advance(Duration::from_secs(4));
    s.expect("R", s.them(1), None);
    assert_eq!(s.stack.tcp_send(h, &b).unwrap_err(), Error::TimedOut);
}

#[test]
fn a_held_back_small_segment_goes_when_the_override_timer_fires() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.inject(seg(".", us(1), Some(s.them(1))).win(1500));
    let b = s.buf(&[5u8; 1800]);
    s.stack.tcp_send(h, &b).unwrap();
    let lens: Vec<usize> = s.sent().iter().map(|o| o.payload.len()).collect();
    assert_eq!(
        lens,
        vec![1000],
        "500 bytes of window left: too small to use at once"
    );
    // The peer acknowledges but its window stays at 500 beyond: a silly window.
    s.inject(seg(".", us(1), Some(s.them(1001))).win(500));
    s.expect_nothing();
    // RFC 9293 §3.8.6.2.1: the override timeout sends what fits.
    s.advance(Duration::from_secs(1));
    let o = s.expect_one();
    assert_eq!(o.seq, s.them(1001));
    assert_eq!(o.payload.len(), 500);
}

#[test]
fn an_orphan_in_fin_wait_2_does_not_wait_forever() {
    let mut s = Script::new(Script::config());
    let h = s.accept();
    s.stack.tcp_close(h).unwrap();
    s.expect("F.", s.them(1), Some(us(1)));
    s.inject(seg(".", us(1), Some(s.them(2))));
    assert_eq!(
        s.stack.socket_count(),
        2,
        "listener and the connection in FIN-WAIT-2"
    );
    // The peer never closes; after one TIME-WAIT period (2 s here) the connection goes.
    s.advance(Duration::from_millis(1999));
    assert_eq!(s.stack.socket_count(), 2);
    s.advance(Duration::from_millis(1));
    assert_eq!(s.stack.socket_count(), 1);
}

#[test]
fn the_congestion_algorithm_sets_the_threshold_after_a_loss() {
    for (kind, name, ssthresh) in [
        (bypass_inet::CongestionKind::NewReno, "newreno", 2000),
        (bypass_inet::CongestionKind::Cubic, "cubic", 7700),
    ] {
        let mut cfg = Script::config();
        cfg.congestion = kind;
        let mut s = Script::new(cfg);
        let h = s.accept();
        assert_eq!(s.stack.tcp_info(h).unwrap().congestion, name);
        for _ in 0..5 {
            let b = s.buf(&[3u8; 1000]);
            s.stack.tcp_send(h, &b).unwrap();
        }
        assert_eq!(s.sent().len(), 5);
        // One segment acknowledged (slow start: cwnd 10000 -> 11000), then three duplicates.
        for _ in 0..4 {
            s.inject(seg(".", us(1), Some(s.them(1001))));
        }
        s.expect(".", s.them(1001), Some(us(1)));
        let info = s.stack.tcp_info(h).unwrap();
        // NewReno: half the 4000 bytes in flight (RFC 5681 eq. 4); CUBIC: 0.7 of the 11000-byte
        // window (RFC 9438 §4.6).
        assert_eq!(info.ssthresh, ssthresh, "{name}");
    }
}

#[test]
fn options_turned_off_in_the_config_are_not_offered() {
    let cfg = TcpConfig {
        window_scaling: false,
        timestamps: false,
        sack: false,
        mss: 900,
        ..Script::config()
    };
    let mut s = Script::new(cfg);
    let _c = s
        .stack
        .tcp_connect(Some(5555), SocketAddrV4::new(PEER_IP.into(), PEER_PORT))
        .unwrap();
    let syn = s.expect_one();
    assert_eq!(syn.mss, Some(900));
    assert_eq!(
        (syn.ws, syn.sack_perm, syn.ts.is_some()),
        (None, false, false)
    );
    assert_eq!(
        syn.win, 65535,
        "a 256 KiB buffer without scaling advertises 65535"
    );
}

#[test]
fn quick_acks_answer_the_first_segments_at_once() {
    let mut cfg = Script::config();
    cfg.delayed_ack = Some(Duration::from_millis(40));
    cfg.quick_acks = 2;
    let mut s = Script::new(cfg);
    let _h = s.accept();
    s.inject(seg("P.", us(1), Some(s.them(1))).data(&[1; 10]));
    s.expect(".", s.them(1), Some(us(11)));
    s.inject(seg("P.", us(11), Some(s.them(1))).data(&[1; 10]));
    s.expect(".", s.them(1), Some(us(21)));
    // Quick ACKs used up: the third waits for the delayed-ACK timer.
    s.inject(seg("P.", us(21), Some(s.them(1))).data(&[1; 10]));
    s.expect_nothing();
    s.advance(Duration::from_millis(40));
    s.expect(".", s.them(1), Some(us(31)));
}
