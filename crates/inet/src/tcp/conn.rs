//! One TCP connection: the transmission control block and its state machine (RFC 9293 §3.10).

use std::collections::VecDeque;
use std::time::Duration;

use bypass_devices::{FrameChecksum, FrameOffload};
use bypass_runtime::{Buffer, Instant};
use bypass_wire::{
    checksum, IpProtocol, Ipv4Address, TcpFlags, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestamp,
    ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, TCP_HEADER_LEN,
};

use super::assembler::{Assembler, Inserted};
use super::cc::CongestionControl;
use super::rtt::RttEstimator;
use super::{TcpConfig, TcpState};
use crate::error::Error;
use crate::iface::{Iface, Route, ROUTE_HEADERS_LEN};
use crate::socket::{Interest, Wakers};

/// An IPv4 address and port.
pub type Endpoint = (Ipv4Address, u16);

/// Bytes of a received segment at most copied into the tail of the receive queue instead of
/// kept as a slice of its frame (keeps small segments from pinning a frame each).
const COALESCE_MAX: usize = 256;

/// RFC 5681 / RFC 6675 DupThresh: duplicate ACKs (or SACKed sequences above a hole) that
/// mean the hole was lost.
const DUP_THRESH: usize = 3;

/// The transmission control block.
pub(crate) struct Tcb {
    pub state: TcpState,
    pub local: Endpoint,
    pub remote: Endpoint,
    /// Passive opens remember their listener's slot (to queue the connection for accept).
    pub listener: Option<crate::SocketHandle>,
    /// The application holds a handle on this connection.
    pub app_owned: bool,
    /// Why the connection failed, reported to the application.
    pub error: Option<Error>,
    pub wakers: Wakers,
    /// Ethernet and IPv4 headers of our segments while the next hop stays resolved.
    route: Option<Route>,

    // Send sequence space (RFC 9293 §3.3.1).
    iss: TcpSeqNumber,
    snd_una: TcpSeqNumber,
    snd_nxt: TcpSeqNumber,
    /// The highest sequence number sent (snd_nxt goes back to snd_una on a timeout).
    snd_max: TcpSeqNumber,
    /// Send window, bytes (scaled).
    snd_wnd: usize,
    max_snd_wnd: usize,
    snd_wl1: TcpSeqNumber,
    snd_wl2: TcpSeqNumber,
    /// Shift of the peer's window field (RFC 7323 §2.2).
    snd_wscale: u8,
    /// Effective MSS of our segments.
    snd_mss: usize,
    /// The MSS we announce in our SYN (what fits our link and buffers).
    adv_mss: usize,

    // Receive sequence space.
    irs: TcpSeqNumber,
    rcv_nxt: TcpSeqNumber,
    /// Right edge of the window the peer was last told about.
    rcv_adv: TcpSeqNumber,
    /// Shift of our window field.
    rcv_wscale: u8,

    // Send buffer: bytes from snd_una on (sent-unacknowledged, then unsent).
    sndq: VecDeque<Buffer>,
    sndq_len: usize,
    /// Where the last segment's data ended in `sndq`: (buffer index, offset from snd_una of
    /// that buffer's first byte). Lets the next segment start there instead of scanning.
    snd_cursor: (usize, usize),
    snd_buf: usize,
    /// The application shut the sending side: a FIN follows the queued data.
    fin_queued: bool,
    fin_acked: bool,

    // Receive buffer: in-order bytes not yet read.
    rcvq: VecDeque<Buffer>,
    rcvq_len: usize,
    rcv_buf: usize,
    fin_received: bool,
    assembler: Assembler,
    /// A FIN that arrived ahead of a hole: its sequence number.
    ooo_fin: Option<TcpSeqNumber>,
    /// Start of the out-of-order piece received last (first SACK block, RFC 2018 §4).
    last_ooo: Option<TcpSeqNumber>,

    // Timers.
    rto_at: Option<Instant>,
    delack_at: Option<Instant>,
    persist_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// Keep-alive probes sent since the peer was last heard.
    keepalive_sent: u32,
    timewait_at: Option<Instant>,

    // RTT and retransmission (RFC 6298).
    rtt: RttEstimator,
    /// Consecutive timeouts (backoff exponent) and retransmissions without progress.
    retries: u32,
    /// A segment being timed: (sequence number it ends at, when it was sent). Karn's rule:
    /// never a retransmitted one.
    rtt_timed: Option<(TcpSeqNumber, Instant)>,
    last_send: Instant,
    /// Window probes sent without any answer.
    probes: u32,

    // Congestion control.
    cc: Box<dyn CongestionControl>,
    dupacks: u32,
    in_recovery: bool,
    /// RFC 6582 "recover" / RFC 6675 "RecoveryPoint": snd_max when recovery started.
    recover: TcpSeqNumber,
    /// RFC 6675 scoreboard: ranges above snd_una the peer has SACKed, sorted, disjoint.
    sacked: Vec<(TcpSeqNumber, TcpSeqNumber)>,
    /// RFC 6675 "HighRxt": the end of the highest retransmission of this recovery.
    high_rxt: TcpSeqNumber,

    // Options.
    ts_enabled: bool,
    ts_recent: u32,
    ts_offset: u32,
    sack_enabled: bool,
    /// Whether our SYN offers each option (we offer what the config says; a passive open
    /// answers with what the peer offered too).
    offer_wscale: bool,
    offer_ts: bool,
    offer_sack: bool,
    last_ack_sent: TcpSeqNumber,

    // ACK policy.
    ack_now: bool,
    unacked_segments: u32,
    quick_acks: u32,
    /// Send a SYN (or SYN-ACK) at the next output.
    syn_due: bool,
    /// Longest delay of an ACK; `None` acknowledges every segment at once.
    delayed_ack: Option<Duration>,
    /// Exponent of the persist timer's backoff.
    persist_backoff: u32,
    /// Send a small segment even though silly window avoidance would wait.
    force_send: bool,
}

/// A snapshot of one connection (for diagnostics and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub state: TcpState,
    /// The application holds a handle (false once closed, or before accept).
    pub app_owned: bool,
    /// Bytes queued to send and not yet acknowledged.
    pub send_queued: usize,
    pub send_space: usize,
    /// Sequence space sent and not acknowledged.
    pub in_flight: usize,
    /// The peer's window, bytes.
    pub snd_wnd: usize,
    pub recv_queued: usize,
    /// The window we advertise now, bytes.
    pub rcv_wnd: usize,
    /// Out-of-order bytes held.
    pub out_of_order: usize,
    pub cwnd: usize,
    pub ssthresh: usize,
    pub srtt: Option<Duration>,
    /// Consecutive retransmission timeouts.
    pub retries: u32,
    pub rto_at: Option<Instant>,
    pub persist_at: Option<Instant>,
    pub fin_queued: bool,
    pub fin_acked: bool,
    pub fin_received: bool,
    /// Name of the congestion-control algorithm.
    pub congestion: &'static str,
}

/// Parameters of a new connection.
pub(crate) struct Open {
    pub local: Endpoint,
    pub remote: Endpoint,
    pub iss: TcpSeqNumber,
    pub ts_offset: u32,
    pub mss: usize,
}

impl Tcb {
    fn new(cfg: &TcpConfig, open: Open, state: TcpState, now: Instant) -> Tcb {
        let rcv_wscale = if cfg.window_scaling {
            // RFC 7323 §2.3: the smallest shift that lets the window field cover the buffer.
            let mut s = 0u8;
            while (cfg.recv_buffer >> s) > 65535 && s < 14 {
                s += 1;
            }
            s
        } else {
            0
        };
        let iw = cfg.initial_window_segments;
        Tcb {
            state,
            local: open.local,
            remote: open.remote,
            listener: None,
            app_owned: false,
            error: None,
            wakers: Wakers::default(),
            route: None,
            iss: open.iss,
            snd_una: open.iss,
            snd_nxt: open.iss,
            snd_max: open.iss,
            snd_wnd: 0,
            max_snd_wnd: 0,
            snd_wl1: TcpSeqNumber(0),
            snd_wl2: TcpSeqNumber(0),
            snd_wscale: 0,
            snd_mss: open.mss,
            adv_mss: open.mss,
            irs: TcpSeqNumber(0),
            rcv_nxt: TcpSeqNumber(0),
            rcv_adv: TcpSeqNumber(0),
            rcv_wscale,
            sndq: VecDeque::new(),
            sndq_len: 0,
            snd_cursor: (0, 0),
            snd_buf: cfg.send_buffer,
            fin_queued: false,
            fin_acked: false,
            rcvq: VecDeque::new(),
            rcvq_len: 0,
            rcv_buf: cfg.recv_buffer,
            fin_received: false,
            assembler: Assembler::new(cfg.max_out_of_order_pieces.max(1)),
            ooo_fin: None,
            last_ooo: None,
            rto_at: None,
            delack_at: None,
            persist_at: None,
            keepalive_at: None,
            keepalive_sent: 0,
            timewait_at: None,
            rtt: RttEstimator::new(cfg.initial_rto, cfg.min_rto, cfg.max_rto),
            retries: 0,
            rtt_timed: None,
            last_send: now,
            probes: 0,
            cc: cfg.congestion.build(open.mss, iw),
            dupacks: 0,
            in_recovery: false,
            recover: open.iss,
            sacked: Vec::new(),
            high_rxt: open.iss,
            ts_enabled: false,
            ts_recent: 0,
            ts_offset: open.ts_offset,
            sack_enabled: false,
            offer_wscale: cfg.window_scaling,
            offer_ts: cfg.timestamps,
            offer_sack: cfg.sack,
            last_ack_sent: TcpSeqNumber(0),
            ack_now: false,
            unacked_segments: 0,
            quick_acks: cfg.quick_acks,
            syn_due: false,
            delayed_ack: cfg.delayed_ack,
            persist_backoff: 0,
            force_send: false,
        }
    }

    /// An active open (RFC 9293 §3.10.1): SYN-SENT, the SYN goes out at the next output.
    pub fn connect(cfg: &TcpConfig, open: Open, now: Instant) -> Tcb {
        let mut t = Tcb::new(cfg, open, TcpState::SynSent, now);
        t.syn_due = true;
        t.app_owned = true;
        t
    }

    /// A passive open from a listener that received `syn` (RFC 9293 §3.10.7.2): SYN-RECEIVED,
    /// the SYN-ACK goes out at the next output.
    pub fn accept_syn(cfg: &TcpConfig, open: Open, syn: &TcpRepr, now: Instant) -> Tcb {
        let mut t = Tcb::new(cfg, open, TcpState::SynReceived, now);
        t.irs = syn.seq_number;
        t.rcv_nxt = syn.seq_number + 1;
        t.rcv_adv = t.rcv_nxt;
        t.snd_wl1 = syn.seq_number;
        t.negotiate(syn, cfg);
        // RFC 7323 §2.2: the window of a SYN is never scaled.
        t.snd_wnd = syn.window_len as usize;
        t.max_snd_wnd = t.snd_wnd;
        if let Some(ts) = syn.timestamp {
            t.ts_recent = ts.tsval;
        }
        t.syn_due = true;
        t
    }

    /// Takes the options of the peer's SYN: each is on only if both sides offered it.
    fn negotiate(&mut self, syn: &TcpRepr, cfg: &TcpConfig) {
        // RFC 9293 §3.7.1: send no segment larger than the peer's MSS (536 if it sent none).
        let peer_mss = syn.max_seg_size.unwrap_or(536) as usize;
        self.snd_mss = self.snd_mss.min(peer_mss).max(64);
        // RFC 7323 §2.2: scaling is on only if both SYNs carried the option.
        match syn.window_scale {
            Some(s) if self.offer_wscale => self.snd_wscale = s.min(14),
            _ => {
                self.snd_wscale = 0;
                self.rcv_wscale = 0;
                self.offer_wscale = false;
            }
        }
        // RFC 7323 §3.2: timestamps only if both SYNs carried them.
        self.ts_enabled = self.offer_ts && syn.timestamp.is_some();
        self.offer_ts = self.ts_enabled;
        // RFC 2018 §2.
        self.sack_enabled = self.offer_sack && syn.sack_permitted && cfg.sack;
        self.offer_sack = self.sack_enabled;
        // RFC 6691: the MSS counts no options; every segment carries timestamps (12 bytes).
        if self.ts_enabled {
            self.snd_mss -= 12;
        }
        self.cc = cfg
            .congestion
            .build(self.snd_mss, cfg.initial_window_segments);
    }

    // ---------------------------------------------------------------- queries

    pub fn can_read(&self) -> bool {
        !self.rcvq.is_empty() || self.fin_received || self.error.is_some()
    }

    pub fn send_space(&self) -> usize {
        self.snd_buf.saturating_sub(self.sndq_len)
    }

    /// Bytes received and not yet read.
    pub fn recv_queued(&self) -> usize {
        self.rcvq_len
    }

    pub fn info(&self) -> TcpInfo {
        TcpInfo {
            state: self.state,
            app_owned: self.app_owned,
            send_queued: self.sndq_len,
            send_space: self.send_space(),
            in_flight: self.snd_max - self.snd_una,
            snd_wnd: self.snd_wnd,
            recv_queued: self.rcvq_len,
            rcv_wnd: self.rcv_adv.checked_sub(self.rcv_nxt).unwrap_or(0),
            out_of_order: self.assembler.bytes(),
            cwnd: self.cc.cwnd(),
            ssthresh: self.cc.ssthresh(),
            srtt: self.rtt.srtt(),
            retries: self.retries,
            rto_at: self.rto_at,
            persist_at: self.persist_at,
            fin_queued: self.fin_queued,
            fin_acked: self.fin_acked,
            fin_received: self.fin_received,
            congestion: self.cc.name(),
        }
    }

    /// The earliest timer deadline.
    #[inline]
    pub fn poll_at(&self) -> Option<Instant> {
        // Branch-free: an unset timer is the largest value.
        let at = |t: Option<Instant>| t.map_or(u64::MAX, Instant::as_nanos);
        let min = at(self.rto_at)
            .min(at(self.delack_at))
            .min(at(self.persist_at))
            .min(at(self.timewait_at))
            .min(at(self.keepalive_at));
        (min != u64::MAX).then(|| Instant::from_nanos(min))
    }

    /// Whether the next output would send something.
    pub fn wants_output(&self) -> bool {
        if self.syn_due || self.ack_now {
            return true;
        }
        if !self.state.is_synchronized() {
            return false;
        }
        let in_flight = self.snd_nxt - self.snd_una;
        let unsent = self.sndq_len.saturating_sub(in_flight);
        let fin_unsent = self.fin_queued && !self.fin_acked && in_flight <= self.sndq_len;
        (unsent > 0 && self.snd_wnd.min(self.cc.cwnd()) > in_flight) || fin_unsent
    }

    fn ts_now(&self, now: Instant) -> u32 {
        // RFC 7323 §5.4: a 1 ms timestamp clock, offset per connection (§7.1).
        (now.as_millis() as u32).wrapping_add(self.ts_offset)
    }

    // ---------------------------------------------------------------- application calls

    /// Queues as much of `data` as fits; returns the bytes taken.
    pub fn send(&mut self, data: &Buffer) -> Result<usize, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            TcpState::SynSent
            | TcpState::SynReceived
            | TcpState::Established
            | TcpState::CloseWait => {}
            _ => return Err(Error::InvalidState),
        }
        if self.fin_queued {
            return Err(Error::InvalidState);
        }
        let take = self.send_space().min(data.len());
        if take == 0 {
            return if data.is_empty() {
                Ok(0)
            } else {
                Err(Error::WouldBlock)
            };
        }
        // Small writes are copied into the tail of the queue when it has room, so a stream of
        // tiny messages does not pin one pool chunk each.
        if take <= COALESCE_MAX {
            if let Some(tail) = self.sndq.back_mut() {
                if tail.is_unique() && tail.tailroom() >= take {
                    tail.extend_from_slice(&data[..take]);
                    self.sndq_len += take;
                    return Ok(take);
                }
            }
        }
        let piece = if take == data.len() {
            data.clone()
        } else {
            data.slice(0..take)
        };
        self.sndq.push_back(piece);
        self.sndq_len += take;
        Ok(take)
    }

    /// The next piece of received data, `Ok(None)` if nothing yet.
    pub fn recv(&mut self, max: usize) -> Result<Option<Buffer>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let Some(front) = self.rcvq.front_mut() else {
            if self.fin_received {
                return Err(Error::EndOfStream);
            }
            return match self.state {
                TcpState::Closed | TcpState::Listen => Err(Error::InvalidState),
                _ => Ok(None),
            };
        };
        let piece = if front.len() <= max {
            self.rcvq.pop_front().expect("front exists")
        } else {
            front.split_to(max)
        };
        self.rcvq_len -= piece.len();
        // RFC 9293 §3.8.6.2.2: tell the peer about the opened window once it grew enough.
        if self.state.is_synchronized() && self.window_update_worth_sending() {
            self.ack_now = true;
        }
        Ok(Some(piece))
    }

    /// Shuts the sending side (RFC 9293 §3.10.4 CLOSE): a FIN follows the queued data.
    pub fn shutdown(&mut self) -> Result<(), Error> {
        if self.fin_queued {
            return Ok(());
        }
        match self.state {
            TcpState::SynSent => {
                self.state = TcpState::Closed;
                self.syn_due = false;
                self.rto_at = None;
                self.wakers.wake_all();
                return Ok(());
            }
            TcpState::SynReceived | TcpState::Established => self.state = TcpState::FinWait1,
            TcpState::CloseWait => self.state = TcpState::LastAck,
            TcpState::Closed => return self.error.map_or(Ok(()), Err),
            _ => return Ok(()),
        }
        self.fin_queued = true;
        Ok(())
    }

    /// Aborts (RFC 9293 §3.10.5): a RST if the peer knows the connection, then CLOSED.
    pub fn abort(&mut self, iface: &mut Iface) {
        if matches!(
            self.state,
            TcpState::SynReceived
                | TcpState::Established
                | TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::CloseWait
        ) {
            self.send_rst(iface, self.snd_nxt);
        }
        self.enter_closed(None);
    }

    pub fn register(&mut self, interest: Interest, waker: &std::task::Waker) {
        self.wakers.register(interest, waker);
    }

    // ---------------------------------------------------------------- segment arrival

    /// Processes a segment for this connection (RFC 9293 §3.10.7.3 and §3.10.7.4).
    /// `payload` is the segment's data (a slice of the received frame).
    pub fn on_segment(
        &mut self,
        iface: &mut Iface,
        cfg: &TcpConfig,
        seg: &TcpRepr,
        payload: Buffer,
    ) {
        match self.state {
            TcpState::SynSent => self.on_segment_syn_sent(iface, cfg, seg),
            TcpState::Closed | TcpState::Listen => {
                iface.stats.tcp_dropped_in_state += 1;
            }
            _ => self.on_segment_synchronized(iface, cfg, seg, payload),
        }
        // Anything from the peer shows it is alive (RFC 1122 §4.2.3.6).
        self.keepalive_sent = 0;
        self.keepalive_at = match cfg.keepalive {
            Some(idle) if self.state.is_synchronized() && self.state != TcpState::TimeWait => {
                Some(iface.now + idle)
            }
            _ => None,
        };
        self.check();
    }

    /// RFC 9293 §3.10.7.3: SEGMENT ARRIVES in SYN-SENT.
    fn on_segment_syn_sent(&mut self, iface: &mut Iface, cfg: &TcpConfig, seg: &TcpRepr) {
        let f = seg.flags;
        // First: the ACK bit.
        if let Some(ack) = seg.ack_number {
            // SEG.ACK =< ISS or SEG.ACK > SND.NXT: not for our SYN.
            if ack <= self.iss || ack > self.snd_max {
                if !f.rst() {
                    // <SEQ=SEG.ACK><CTL=RST>
                    self.send_rst(iface, ack);
                }
                iface.stats.tcp_ack_unacceptable += 1;
                return;
            }
        }
        // Second: RST. Only with an acceptable ACK (RFC 5961 §3.2 for SYN-SENT).
        if f.rst() {
            iface.stats.tcp_rst_received += 1;
            if seg.ack_number.is_some() {
                iface.stats.tcp_connections_refused += 1;
                self.enter_closed(Some(Error::ConnectionRefused));
            }
            return;
        }
        // Fourth: SYN.
        if !f.syn() {
            iface.stats.tcp_dropped_in_state += 1;
            return;
        }
        self.irs = seg.seq_number;
        self.rcv_nxt = seg.seq_number + 1;
        self.rcv_adv = self.rcv_nxt;
        self.negotiate(seg, cfg);
        if let Some(ts) = seg.timestamp {
            self.ts_recent = ts.tsval;
        }
        match seg.ack_number {
            Some(ack) => {
                self.snd_una = ack;
                if self.snd_nxt < ack {
                    self.snd_nxt = ack;
                }
                self.take_rtt_sample(iface.now, seg);
                // RFC 7323 §2.2: the SYN's window is unscaled.
                self.snd_wnd = seg.window_len as usize;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq_number;
                self.snd_wl2 = ack;
                self.retries = 0;
                self.rto_at = None;
                self.syn_due = false;
                self.establish(iface);
                self.ack_now = true;
            }
            None => {
                // Simultaneous open (RFC 9293 §3.5, figure 8): SYN-RECEIVED, send SYN-ACK
                // with our original ISS.
                self.state = TcpState::SynReceived;
                self.snd_wnd = seg.window_len as usize;
                self.max_snd_wnd = self.snd_wnd;
                self.snd_wl1 = seg.seq_number;
                self.snd_nxt = self.iss;
                self.syn_due = true;
            }
        }
    }

    fn establish(&mut self, iface: &mut Iface) {
        self.state = TcpState::Established;
        iface.stats.tcp_connections_established += 1;
        self.wakers.wake(Interest::Connected);
        self.wakers.wake(Interest::Writable);
    }

    /// RFC 9293 §3.10.7.4: SEGMENT ARRIVES in the other states.
    fn on_segment_synchronized(
        &mut self,
        iface: &mut Iface,
        cfg: &TcpConfig,
        seg: &TcpRepr,
        payload: Buffer,
    ) {
        let now = iface.now;
        let mut f = seg.flags;
        let mut seq = seg.seq_number;
        if self.state == TcpState::SynReceived && f.syn() && f.ack() && seq == self.irs {
            // Simultaneous open (RFC 9293 figure 8): the peer's SYN-ACK repeats its SYN; the
            // SYN is old news, its ACK is what matters.
            f.remove(TcpFlags::SYN);
            seq += 1;
        }
        let seg_len = payload.len() + f.syn() as usize + f.fin() as usize;

        // RFC 7323 §5.3 R1: PAWS, before the sequence number check.
        if self.ts_enabled && !f.rst() {
            if let Some(ts) = seg.timestamp {
                if (ts.tsval.wrapping_sub(self.ts_recent) as i32) < 0 {
                    iface.stats.tcp_paws_rejected += 1;
                    self.ack_now = true;
                    return;
                }
            }
        }

        // First: the sequence number (RFC 9293 §3.10.7.4, the four cases of the table).
        let rcv_wnd = self.rcv_adv.checked_sub(self.rcv_nxt).unwrap_or(0);
        let in_window = |s: TcpSeqNumber| s.checked_sub(self.rcv_nxt).is_some_and(|d| d < rcv_wnd);
        let acceptable = match (seg_len, rcv_wnd) {
            (0, 0) => seq == self.rcv_nxt,
            (0, _) => in_window(seq),
            (_, 0) => {
                // Also take a bare FIN at RCV.NXT into a closed window, as common stacks do.
                payload.is_empty() && f.fin() && seq == self.rcv_nxt
            }
            (_, _) => in_window(seq) || in_window(seq + (seg_len - 1)),
        };
        if !acceptable {
            if self.state == TcpState::SynReceived && f.syn() && !f.ack() && seq == self.irs {
                // The peer did not get our SYN-ACK and sent its SYN again: answer it again.
                self.snd_nxt = self.iss;
                self.syn_due = true;
                return;
            }
            if self.state == TcpState::TimeWait && f.fin() {
                // RFC 9293 §3.10.7.4 eighth, TIME-WAIT: a retransmitted FIN restarts 2 MSL.
                self.timewait_at = Some(now + cfg.time_wait);
            }
            iface.stats.tcp_out_of_window += 1;
            if !f.rst() {
                self.ack_now = true;
            }
            return;
        }

        // RFC 7323 §4.3 R3: remember the timestamp of the segment that covers last_ack_sent.
        if self.ts_enabled {
            if let Some(ts) = seg.timestamp {
                if seq <= self.last_ack_sent {
                    self.ts_recent = ts.tsval;
                }
            }
        }

        // Second: RST (RFC 5961 §3.2).
        if f.rst() {
            iface.stats.tcp_rst_received += 1;
            if seq != self.rcv_nxt {
                if iface.allow_challenge_ack() {
                    self.ack_now = true;
                }
                return;
            }
            match self.state {
                TcpState::SynReceived => {
                    if self.listener.is_some() {
                        // From LISTEN: back to listening, i.e. this connection just goes.
                        self.enter_closed(None);
                    } else {
                        iface.stats.tcp_connections_refused += 1;
                        self.enter_closed(Some(Error::ConnectionRefused));
                    }
                }
                TcpState::Established
                | TcpState::FinWait1
                | TcpState::FinWait2
                | TcpState::CloseWait => {
                    iface.stats.tcp_connections_reset += 1;
                    self.enter_closed(Some(Error::ConnectionReset));
                }
                _ => self.enter_closed(None),
            }
            return;
        }

        // Fourth: SYN in a synchronized state (RFC 5961 §4.2): challenge ACK.
        if f.syn() {
            if iface.allow_challenge_ack() {
                self.ack_now = true;
            }
            return;
        }

        // Fifth: ACK.
        let Some(ack) = seg.ack_number else {
            iface.stats.tcp_dropped_in_state += 1;
            return;
        };
        // In SYN-RECEIVED our SYN is unacknowledged: an acceptable ACK covers it too.
        let acks_syn = self.state == TcpState::SynReceived;
        if self.state == TcpState::SynReceived {
            if ack > self.snd_una && ack <= self.snd_max {
                self.snd_wnd = (seg.window_len as usize) << self.snd_wscale;
                self.max_snd_wnd = self.max_snd_wnd.max(self.snd_wnd);
                self.snd_wl1 = seq;
                self.snd_wl2 = ack;
                self.syn_due = false;
                if self.fin_queued {
                    self.state = TcpState::FinWait1;
                    iface.stats.tcp_connections_established += 1;
                    self.wakers.wake(Interest::Connected);
                } else {
                    self.establish(iface);
                }
            } else {
                // <SEQ=SEG.ACK><CTL=RST>
                iface.stats.tcp_ack_unacceptable += 1;
                self.send_rst(iface, ack);
                return;
            }
        }
        if !self.process_ack(iface, cfg, seg, ack, payload.is_empty(), acks_syn) {
            return;
        }
        if self.state == TcpState::Closed {
            return;
        }

        // Seventh: segment text.
        let data_len = payload.len();
        if data_len > 0 {
            match self.state {
                TcpState::Established | TcpState::FinWait1 | TcpState::FinWait2 => {
                    let fin_kept = self.receive_data(iface, seq, payload, f.fin());
                    if !fin_kept {
                        return;
                    }
                }
                _ => {
                    // The peer's FIN came already; nothing more can be data.
                    iface.stats.tcp_dropped_in_state += 1;
                }
            }
        }

        // Eighth: FIN (it follows all of the segment's data, trimmed or not).
        if f.fin() {
            let fin_seq = seq + data_len;
            if fin_seq == self.rcv_nxt {
                self.receive_fin(cfg, now);
            } else if fin_seq > self.rcv_nxt {
                self.ooo_fin = Some(fin_seq);
            }
        }
    }

    /// The fifth check: an acceptable ACK moves `snd_una`. Returns false if the segment must
    /// be dropped.
    fn process_ack(
        &mut self,
        iface: &mut Iface,
        cfg: &TcpConfig,
        seg: &TcpRepr,
        ack: TcpSeqNumber,
        no_data: bool,
        acks_syn: bool,
    ) -> bool {
        let now = iface.now;
        // RFC 5961 §5.2: acceptable iff SND.UNA - MAX.SND.WND <= SEG.ACK <= SND.NXT (we use
        // the highest number sent: SND.NXT goes back after a timeout).
        if ack > self.snd_max {
            iface.stats.tcp_ack_unacceptable += 1;
            self.ack_now = true;
            return false;
        }
        let oldest = self.snd_una - self.max_snd_wnd.min(i32::MAX as usize);
        if ack < oldest {
            iface.stats.tcp_ack_unacceptable += 1;
            if iface.allow_challenge_ack() {
                self.ack_now = true;
            }
            return false;
        }
        let window = (seg.window_len as usize) << self.snd_wscale;
        let mss = self.snd_mss;

        // Any acceptable ACK shows the peer is alive.
        self.probes = 0;
        if ack > self.snd_una {
            let mut acked = ack - self.snd_una;
            if acks_syn {
                // The ACK of our SYN (it takes one sequence number, no data). Not told by
                // `snd_una == iss`: after 2^32 bytes the data reaches that number again.
                acked -= 1;
            }
            let flight_before = self.snd_max - self.snd_una;
            self.drop_acked(acked);
            self.snd_una = ack;
            if self.snd_nxt < ack {
                self.snd_nxt = ack;
            }
            self.take_rtt_sample(now, seg);
            self.retries = 0;
            self.probes = 0;
            self.trim_scoreboard();
            self.update_scoreboard(seg);
            if self.in_recovery && self.sack_enabled {
                if ack >= self.recover {
                    // RFC 6675 §5: recovery ends when RecoveryPoint is acknowledged.
                    self.in_recovery = false;
                    self.cc.set_cwnd(self.cc.ssthresh().max(mss));
                } else {
                    if self.high_rxt < self.snd_una {
                        self.high_rxt = self.snd_una;
                    }
                    self.sack_retransmit(iface);
                }
            } else if self.in_recovery {
                if ack >= self.recover {
                    // RFC 6582 §3.2 step 3, full ACK: deflate to min(ssthresh, flight + MSS).
                    let flight = self.snd_max - self.snd_una;
                    let w = self.cc.ssthresh().min(flight.max(mss) + mss);
                    self.cc.set_cwnd(w);
                    self.in_recovery = false;
                } else {
                    // RFC 6582 §3.2 step 4, partial ACK: retransmit the first unacknowledged
                    // segment, deflate by the amount acknowledged, add back one MSS.
                    self.retransmit_first(iface, cfg);
                    let w = self.cc.cwnd().saturating_sub(acked);
                    let w = if acked >= mss { w + mss } else { w };
                    self.cc.set_cwnd(w.max(mss));
                    self.rto_at = Some(now + self.rtt.rto(0));
                }
            } else if acked > 0 {
                self.cc
                    .on_ack(acked.min(flight_before), mss, now, self.rtt.srtt());
            }
            self.dupacks = 0;
            // RFC 6298 §5.2 and §5.3.
            self.rto_at = if self.snd_una == self.snd_max {
                None
            } else {
                Some(now + self.rtt.rto(0))
            };
            self.persist_at = None;
            self.wakers.wake(Interest::Writable);
        } else if ack == self.snd_una
            && no_data
            && !seg.flags.fin()
            // RFC 5681 §2 (e) wants an unchanged window, but with SACK an ACK whose blocks
            // report data is a duplicate whatever its window (RFC 6675 §2): a receiver whose
            // buffer drains (Linux's) opens its window on nearly every ACK, and its duplicates
            // would never count, leaving every loss to the retransmission timer.
            && (window == self.snd_wnd
                || (self.sack_enabled && seg.sack_ranges.iter().flatten().next().is_some()))
            && self.snd_max > self.snd_una
        {
            // RFC 5681 §2: a duplicate ACK.
            self.dupacks += 1;
            self.update_scoreboard(seg);
            if self.sack_enabled {
                // RFC 6675 §5: enter recovery on the third duplicate or once the first
                // unacknowledged segment counts as lost; then send by the pipe estimate.
                if !self.in_recovery
                    && (self.dupacks >= DUP_THRESH as u32 || self.is_lost(self.snd_una))
                    && ack >= self.recover
                {
                    let flight = self.snd_max - self.snd_una;
                    self.cc.on_congestion(flight, mss, now);
                    self.cc.set_cwnd(self.cc.ssthresh());
                    self.recover = self.snd_max;
                    self.in_recovery = true;
                    self.high_rxt = self.snd_una;
                    self.rtt_timed = None;
                    iface.stats.tcp_fast_retransmits += 1;
                    // RFC 6675 §5 step 4.3: the first unacknowledged segment goes at once.
                    self.retransmit_hole(iface, self.snd_una);
                }
                if self.in_recovery {
                    self.sack_retransmit(iface);
                }
            } else if self.in_recovery {
                // RFC 6582 §3.2 step 5 (RFC 5681 §3.2 step 4): inflate by one MSS.
                self.cc.set_cwnd(self.cc.cwnd() + mss);
            } else if self.dupacks == 3 && ack >= self.recover {
                // RFC 6582 §3.2 steps 1-2: fast retransmit and enter recovery, unless this
                // is a leftover of the previous recovery.
                let flight = self.snd_max - self.snd_una;
                self.cc.on_congestion(flight, mss, now);
                self.recover = self.snd_max;
                self.in_recovery = true;
                self.rtt_timed = None;
                iface.stats.tcp_fast_retransmits += 1;
                self.retransmit_first(iface, cfg);
                self.cc.set_cwnd(self.cc.ssthresh() + 3 * mss);
            }
        }

        // RFC 9293 §3.10.7.4 fifth: update the send window from segments not older than the
        // last update.
        if self.snd_wl1 < seg.seq_number || (self.snd_wl1 == seg.seq_number && self.snd_wl2 <= ack)
        {
            if window > self.snd_wnd {
                self.wakers.wake(Interest::Writable);
            }
            self.snd_wnd = window;
            self.max_snd_wnd = self.max_snd_wnd.max(window);
            self.snd_wl1 = seg.seq_number;
            self.snd_wl2 = ack;
            if window > 0 {
                self.persist_at = None;
                self.persist_backoff = 0;
            }
        }

        // The states where our FIN may now be acknowledged.
        if self.fin_acked {
            match self.state {
                TcpState::FinWait1 => {
                    self.state = TcpState::FinWait2;
                    self.rto_at = None;
                    if !self.app_owned {
                        self.orphan_timeout(cfg, now);
                    }
                }
                TcpState::Closing => self.enter_time_wait(cfg, now),
                TcpState::LastAck => {
                    self.enter_closed(None);
                    return false;
                }
                _ => {}
            }
        }
        true
    }

    /// Removes `acked` sequence numbers from the front of the send queue (data, then FIN).
    fn drop_acked(&mut self, acked: usize) {
        let data = acked.min(self.sndq_len);
        let mut left = data;
        let mut popped = 0;
        while left > 0 {
            let front = self.sndq.front_mut().expect("sndq_len counts the queue");
            if front.len() <= left {
                left -= front.len();
                self.sndq.pop_front();
                popped += 1;
            } else {
                front.advance(left);
                left = 0;
            }
        }
        let (idx, base) = self.snd_cursor;
        self.snd_cursor = if base >= data && idx >= popped {
            (idx - popped, base - data)
        } else {
            (0, 0)
        };
        self.sndq_len -= data;
        if acked > data {
            debug_assert!(self.fin_queued, "only a FIN follows the data");
            debug_assert_eq!(acked, data + 1);
            self.fin_acked = true;
        }
    }

    fn take_rtt_sample(&mut self, now: Instant, seg: &TcpRepr) {
        let Some(ack) = seg.ack_number else { return };
        if let Some((end, sent)) = self.rtt_timed {
            if ack >= end {
                self.rtt.sample(now - sent);
                self.rtt_timed = None;
                return;
            }
        }
        // RFC 7323 §4.1: with timestamps, the echoed value times any segment, retransmitted
        // ones included.
        if self.ts_enabled && self.rtt_timed.is_none() {
            if let Some(ts) = seg.timestamp {
                let ms = self.ts_now(now).wrapping_sub(ts.tsecr);
                if ts.tsecr != 0 && ms < 60_000 {
                    self.rtt.sample(Duration::from_millis(ms as u64));
                }
            }
        }
    }

    /// Takes in-window data at `seq`. Returns whether a FIN on the same segment still counts
    /// (not if the data was cut at the window's edge).
    fn receive_data(
        &mut self,
        iface: &mut Iface,
        mut seq: TcpSeqNumber,
        mut payload: Buffer,
        fin: bool,
    ) -> bool {
        // Trim what we have already (RFC 9293 §3.10.7.4: the acceptable part of the segment).
        if seq < self.rcv_nxt {
            let skip = self.rcv_nxt - seq;
            if skip >= payload.len() {
                iface.stats.tcp_duplicate_segments += 1;
                self.ack_now = true;
                return fin;
            }
            payload.advance(skip);
            seq = self.rcv_nxt;
        }
        // Trim what lies beyond the window we advertised.
        let room = self.rcv_adv.checked_sub(seq).unwrap_or(0);
        let mut fin_kept = fin;
        if payload.len() > room {
            payload.truncate(room);
            fin_kept = false;
        }
        if payload.is_empty() {
            self.ack_now = true;
            return fin_kept;
        }
        if seq == self.rcv_nxt {
            let filled_hole = !self.assembler.is_empty();
            // A large segment (a sender's segmentation offload left it whole) counts as the
            // segments of our MSS it holds, for the ACK-every-second-segment rule below (the
            // division only for such a segment: the common one is one).
            let segments = if payload.len() <= self.adv_mss {
                1
            } else {
                iface.stats.tcp_rx_large_segments += 1;
                payload.len().div_ceil(self.adv_mss.max(1)) as u32
            };
            self.push_rcv(iface, payload);
            if filled_hole {
                while let Some(b) = self.assembler.pop_ready(self.rcv_nxt) {
                    self.push_rcv(iface, b);
                }
            }
            if let Some(fs) = self.ooo_fin {
                if fs < self.rcv_nxt {
                    self.ooo_fin = None;
                }
            }
            self.unacked_segments += segments;
            // RFC 9293 §3.8.6.3 / RFC 5681 §4.2: ACK at least every second full segment and
            // at once when a hole fills; quick ACKs at the start help slow start.
            match self.delayed_ack {
                Some(delay)
                    if !filled_hole && self.unacked_segments < 2 && self.quick_acks == 0 =>
                {
                    if self.delack_at.is_none() {
                        self.delack_at = Some(iface.now + delay);
                    }
                }
                _ => {
                    self.quick_acks = self.quick_acks.saturating_sub(1);
                    self.ack_now = true;
                }
            }
            self.wakers.wake(Interest::Readable);
        } else {
            iface.stats.tcp_out_of_order += 1;
            let end = seq + payload.len();
            match self.assembler.insert(seq, payload) {
                Inserted::New => self.last_ooo = Some(seq),
                Inserted::Duplicate => iface.stats.tcp_duplicate_segments += 1,
                Inserted::Full => iface.stats.tcp_out_of_order_dropped += 1,
            }
            let _ = end;
            // RFC 5681 §4.2: an out-of-order segment is acknowledged at once (duplicate ACK).
            self.ack_now = true;
        }
        fin_kept
    }

    fn push_rcv(&mut self, iface: &mut Iface, data: Buffer) {
        let n = data.len();
        debug_assert!(n > 0);
        let merged = n <= COALESCE_MAX
            && match self.rcvq.back_mut() {
                Some(tail) if tail.is_unique() && tail.tailroom() >= n => {
                    tail.extend_from_slice(&data);
                    true
                }
                _ => false,
            };
        if !merged {
            // A small piece in a frame somebody else holds too is copied into a buffer of
            // its own, which the next small pieces join; a frame only we hold serves as that
            // buffer itself (the next pieces join it in its tailroom).
            let copy = if n <= COALESCE_MAX && !data.is_unique() {
                iface.pool.alloc_copy(&data)
            } else {
                None
            };
            self.rcvq.push_back(copy.unwrap_or(data));
        }
        self.rcvq_len += n;
        self.rcv_nxt += n;
    }

    /// The FIN at `rcv_nxt` (RFC 9293 §3.10.7.4 eighth).
    fn receive_fin(&mut self, cfg: &TcpConfig, now: Instant) {
        self.rcv_nxt += 1;
        self.fin_received = true;
        self.ooo_fin = None;
        self.ack_now = true;
        self.wakers.wake(Interest::Readable);
        match self.state {
            TcpState::SynReceived | TcpState::Established => self.state = TcpState::CloseWait,
            TcpState::FinWait1 => {
                if self.fin_acked {
                    self.enter_time_wait(cfg, now);
                } else {
                    self.state = TcpState::Closing;
                }
            }
            TcpState::FinWait2 => self.enter_time_wait(cfg, now),
            TcpState::TimeWait => self.timewait_at = Some(now + cfg.time_wait),
            _ => {}
        }
    }

    /// The application gave the connection up. In FIN-WAIT-2 nothing but the peer's FIN
    /// would ever end it, so an orphan there waits at most one TIME-WAIT period for it (as
    /// Linux's `tcp_fin_timeout` does); the other states end by their own timers.
    pub fn release(&mut self, cfg: &TcpConfig, now: Instant) {
        self.app_owned = false;
        if self.state == TcpState::FinWait2 {
            self.orphan_timeout(cfg, now);
        }
    }

    fn orphan_timeout(&mut self, cfg: &TcpConfig, now: Instant) {
        self.timewait_at = Some(now + cfg.time_wait);
    }

    fn enter_time_wait(&mut self, cfg: &TcpConfig, now: Instant) {
        self.state = TcpState::TimeWait;
        self.rto_at = None;
        self.persist_at = None;
        self.delack_at = None;
        self.keepalive_at = None;
        self.timewait_at = Some(now + cfg.time_wait);
        self.sndq.clear();
        self.sndq_len = 0;
        self.wakers.wake(Interest::Closed);
    }

    fn enter_closed(&mut self, error: Option<Error>) {
        self.state = TcpState::Closed;
        if error.is_some() && self.error.is_none() {
            self.error = error;
        }
        self.rto_at = None;
        self.persist_at = None;
        self.delack_at = None;
        self.timewait_at = None;
        self.keepalive_at = None;
        self.syn_due = false;
        self.ack_now = false;
        self.sndq.clear();
        self.sndq_len = 0;
        self.assembler.clear();
        if self.error.is_some() {
            // RFC 9293 §3.10.7.4 (RST): queues are flushed.
            self.rcvq.clear();
            self.rcvq_len = 0;
        }
        self.wakers.wake_all();
    }

    // ---------------------------------------------------------------- timers

    /// Runs the timers due at `now`.
    pub fn on_timer(&mut self, iface: &mut Iface, cfg: &TcpConfig) {
        let now = iface.now;
        if self.timewait_at.is_some_and(|t| t <= now) {
            self.timewait_at = None;
            self.enter_closed(None);
            return;
        }
        if self.delack_at.is_some_and(|t| t <= now) {
            self.delack_at = None;
            self.ack_now = true;
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            self.rto_at = None;
            self.on_rto(iface, cfg);
        }
        if self.persist_at.is_some_and(|t| t <= now) {
            self.persist_at = None;
            self.on_persist(iface, cfg);
        }
        if self.keepalive_at.is_some_and(|t| t <= now) && self.state != TcpState::Closed {
            self.keepalive_at = None;
            if self.keepalive_sent >= cfg.keepalive_probes {
                iface.stats.tcp_connections_timed_out += 1;
                self.send_rst(iface, self.snd_nxt);
                self.enter_closed(Some(Error::TimedOut));
                return;
            }
            // RFC 1122 §4.2.3.6: a segment with SEG.SEQ = SND.NXT-1 makes the peer answer.
            self.keepalive_sent += 1;
            iface.stats.tcp_keepalive_probes += 1;
            self.emit(iface, TcpFlags::ACK, self.snd_nxt - 1, 0, 0, false);
            self.keepalive_at = Some(now + cfg.keepalive_interval);
        }
        self.check();
    }

    /// RFC 6298 §5.4-5.7: the retransmission timer expired.
    fn on_rto(&mut self, iface: &mut Iface, cfg: &TcpConfig) {
        let now = iface.now;
        let limit = match self.state {
            TcpState::SynSent | TcpState::SynReceived => cfg.syn_retries,
            _ => cfg.max_retries,
        };
        if self.retries >= limit {
            iface.stats.tcp_connections_timed_out += 1;
            if self.state != TcpState::SynSent {
                self.send_rst(iface, self.snd_nxt);
            }
            self.enter_closed(Some(Error::TimedOut));
            return;
        }
        self.retries += 1;
        iface.stats.tcp_rto_expired += 1;
        let flight = self.snd_max - self.snd_una;
        if self.state.is_synchronized() {
            self.cc.on_timeout(flight, self.snd_mss, now);
        }
        self.in_recovery = false;
        self.dupacks = 0;
        // RFC 6582 §3.2 step 1 after a timeout: no fast retransmit for data sent before it.
        self.recover = self.snd_max;
        // Karn's rule: nothing sent before the timeout is timed.
        self.rtt_timed = None;
        // RFC 2018 §8: after a timeout, SACK information is not trusted.
        self.sacked.clear();
        // Go back: everything from snd_una is sent again as the window allows.
        self.snd_nxt = self.snd_una;
        if matches!(self.state, TcpState::SynSent | TcpState::SynReceived) {
            self.syn_due = true;
        }
        // RFC 6298 §5.5-5.6: back off and restart the timer.
        self.rto_at = Some(now + self.rtt.rto(self.retries));
    }

    /// The persist timer: probe a zero window (RFC 9293 §3.8.6.1).
    fn on_persist(&mut self, iface: &mut Iface, cfg: &TcpConfig) {
        let now = iface.now;
        if self.sndq_len == 0 {
            return;
        }
        if self.snd_wnd > 0 {
            // The override timeout of sender silly window avoidance: send what fits now.
            self.force_send = true;
            return;
        }
        if self.probes >= cfg.max_retries {
            iface.stats.tcp_connections_timed_out += 1;
            self.send_rst(iface, self.snd_nxt);
            self.enter_closed(Some(Error::TimedOut));
            return;
        }
        self.probes += 1;
        self.persist_backoff += 1;
        iface.stats.tcp_zero_window_probes += 1;
        // A segment with an old sequence number forces the peer to answer with its window.
        let seq = self.snd_una - 1;
        self.emit(iface, TcpFlags::ACK, seq, 0, 0, false);
        self.persist_at = Some(now + self.rtt.rto(self.persist_backoff));
    }

    // ---------------------------------------------------------------- output

    /// Sends what is due: a SYN, data as the windows allow, a FIN, a RST, an ACK.
    pub fn output(&mut self, iface: &mut Iface, cfg: &TcpConfig) {
        let now = iface.now;
        match self.state {
            TcpState::Closed | TcpState::Listen => {
                self.ack_now = false;
                return;
            }
            TcpState::SynSent | TcpState::SynReceived => {
                if self.syn_due {
                    self.syn_due = false;
                    let flags = if self.state == TcpState::SynSent {
                        TcpFlags::SYN
                    } else {
                        TcpFlags::SYN | TcpFlags::ACK
                    };
                    self.emit(iface, flags, self.iss, 0, 0, true);
                    self.snd_nxt = self.iss + 1;
                    if self.snd_max < self.snd_nxt {
                        self.snd_max = self.snd_nxt;
                    }
                    if self.rto_at.is_none() {
                        self.rto_at = Some(now + self.rtt.rto(self.retries));
                    }
                }
                if self.ack_now && self.state == TcpState::SynReceived {
                    self.emit_ack(iface);
                }
                self.ack_now = false;
                return;
            }
            TcpState::TimeWait => {
                if self.ack_now {
                    self.emit_ack(iface);
                }
                self.ack_now = false;
                return;
            }
            _ => {}
        }
        let sent = self.output_data(iface, cfg);
        if self.ack_now && !sent {
            self.emit_ack(iface);
        }
        self.ack_now = false;
    }

    /// Sends data and the FIN as the send and congestion windows allow. Returns whether
    /// anything went out.
    fn output_data(&mut self, iface: &mut Iface, cfg: &TcpConfig) -> bool {
        let in_flight = self.snd_nxt - self.snd_una;
        let fin_unsent = self.fin_queued && !self.fin_acked;
        if in_flight > self.sndq_len || (in_flight == self.sndq_len && !fin_unsent) {
            // Nothing unsent: no data, and the FIN is out or not queued.
            return false;
        }
        let now = iface.now;
        let mss = self.payload_max();
        let mut sent_any = false;
        // RFC 5681 §4.1: restart from the initial window after an idle period over one RTO.
        if self.snd_nxt == self.snd_una
            && self.snd_una == self.snd_max
            && self.sndq_len > 0
            && now - self.last_send > self.rtt.rto(0)
        {
            self.cc.on_idle_restart(mss, cfg.initial_window_segments);
        }
        loop {
            let in_flight = self.snd_nxt - self.snd_una;
            if in_flight > self.sndq_len {
                break; // the FIN is out; nothing follows it
            }
            let unsent = self.sndq_len - in_flight;
            // RFC 6675 §5: in SACK recovery the congestion window limits the pipe estimate,
            // not the sequence space outstanding.
            let flight = if self.in_recovery && self.sack_enabled {
                self.pipe()
            } else {
                in_flight
            };
            let usable = self
                .snd_wnd
                .saturating_sub(in_flight)
                .min(self.cc.cwnd().saturating_sub(flight));
            let mut len = unsent.min(usable).min(self.segment_max(iface, mss));
            if len > mss && len % mss != 0 {
                // A segment the device cuts: its full-sized pieces go, and its short last
                // piece only if it could go as a segment of its own behind them.
                let short = len % mss;
                let short_at = self.snd_nxt + (len - short);
                let all_queued = len == unsent;
                let ahead = in_flight + (len - short);
                if !self.short_segment_may_go(cfg, short, short_at, all_queued, ahead) {
                    len -= short;
                }
            }
            let fin = self.fin_queued && !self.fin_acked && len == unsent;
            if len == 0 && !fin {
                break;
            }
            if len > 0
                && len < mss
                && !fin
                && !self.short_segment_may_go(cfg, len, self.snd_nxt, len == unsent, in_flight)
            {
                break;
            }
            let seq = self.snd_nxt;
            let mut flags = TcpFlags::ACK;
            if len > 0 && len == unsent {
                flags |= TcpFlags::PSH;
            }
            if fin {
                flags |= TcpFlags::FIN;
            }
            if seq < self.snd_max {
                iface.stats.tcp_retransmits += 1;
            }
            if !self.emit(iface, flags, seq, in_flight, len, false) {
                break; // no buffer: the timers try again
            }
            sent_any = true;
            let end = seq + (len + fin as usize);
            if end > self.snd_max {
                // Karn's rule: time only segments sent for the first time.
                if self.rtt_timed.is_none() && seq >= self.snd_max {
                    self.rtt_timed = Some((end, now));
                }
                self.snd_max = end;
            }
            self.snd_nxt = end;
            if self.rto_at.is_none() {
                self.rto_at = Some(now + self.rtt.rto(self.retries));
            }
            self.force_send = false;
            if fin {
                break;
            }
        }
        // RFC 9293 §3.8.6.1: a zero window with data waiting and nothing in flight needs the
        // persist timer; so does data held back by silly window avoidance (§3.8.6.2.1, the
        // override timeout), else a lost window update would stall the connection.
        let in_flight = self.snd_nxt - self.snd_una;
        if self.sndq_len > in_flight
            && in_flight == 0
            && self.rto_at.is_none()
            && self.persist_at.is_none()
        {
            self.persist_at = Some(now + self.rtt.rto(self.persist_backoff));
        }
        sent_any
    }

    /// Whether a segment of `len` bytes, less than one MSS, at `seq` may go now, with
    /// `in_flight` bytes sent and unacknowledged ahead of it; `all_queued`: it carries the
    /// last byte queued. RFC 9293 §3.8.6.2.1 (sender silly window avoidance) and §3.7.4
    /// (Nagle).
    fn short_segment_may_go(
        &self,
        cfg: &TcpConfig,
        len: usize,
        seq: TcpSeqNumber,
        all_queued: bool,
        in_flight: usize,
    ) -> bool {
        let nagle_ok = !cfg.nagle || in_flight == 0;
        let half_window = len >= self.max_snd_wnd / 2 && self.max_snd_wnd > 0;
        // Data sent before (a retransmission after a timeout) never waits.
        let resend = seq < self.snd_max;
        (all_queued && nagle_ok) || half_window || self.force_send || resend
    }

    /// The most data the next segment of [`Tcb::output_data`] may carry (new data, or data
    /// sent again after a timeout): one MSS (`mss`), or, when the device cuts segments itself
    /// (TCP segmentation offload), as many whole MSS as its limit and a large chunk allow.
    /// Only a segment that takes the resolved route without SACK blocks (`emit`'s fast path,
    /// the one that asks the device for offloads) may be large, and only while a large chunk
    /// is free; otherwise segments stay at the MSS, as without the offload. Retransmissions
    /// of holes and of the first unacknowledged segment do not come here: they stay at the
    /// MSS.
    fn segment_max(&self, iface: &Iface, mss: usize) -> usize {
        if iface.tcp_large_payload_max < 2 * mss {
            return mss;
        }
        let sack_blocks = self.sack_enabled && !self.assembler.is_empty();
        let route_holds = self.route.as_ref().is_some_and(|r| iface.route_holds(r));
        let chunk_free = iface.large_pool.as_ref().is_some_and(|p| p.available() > 0);
        if sack_blocks || !route_holds || !chunk_free {
            return mss;
        }
        iface.tcp_large_payload_max / mss * mss
    }

    /// The most data one segment can carry now: the MSS less the SACK blocks it would carry
    /// (RFC 2018 §3: two NOPs, 2 bytes, 8 per block; at most 3 next to the timestamps).
    fn payload_max(&self) -> usize {
        let mut mss = self.snd_mss;
        if self.sack_enabled && !self.assembler.is_empty() {
            let blocks = self.assembler.ranges().take(3).count();
            mss = mss.saturating_sub(4 + 8 * blocks).max(1);
        }
        mss
    }

    /// Adds the SACK blocks of `seg` to the scoreboard (RFC 6675 §4 Update()).
    fn update_scoreboard(&mut self, seg: &TcpRepr) {
        if !self.sack_enabled || seg.sack_ranges[0].is_none() {
            return;
        }
        for &(l, r) in seg.sack_ranges.iter().flatten() {
            let (mut l, r) = (TcpSeqNumber(l), TcpSeqNumber(r));
            // RFC 2018 §4: blocks below snd_una or beyond what was sent are ignored.
            if r <= self.snd_una || r > self.snd_max || l >= r {
                continue;
            }
            if l < self.snd_una {
                l = self.snd_una;
            }
            let mut merged = (l, r);
            self.sacked.retain(|&(a, b)| {
                if b < merged.0 || a > merged.1 {
                    true
                } else {
                    merged = (merged.0.min(a), merged.1.max(b));
                    false
                }
            });
            let at = self.sacked.partition_point(|&(a, _)| a < merged.0);
            self.sacked.insert(at, merged);
            // A bounded scoreboard: the highest ranges matter least for loss detection.
            self.sacked.truncate(32);
        }
    }

    /// Drops what the cumulative ACK covered.
    fn trim_scoreboard(&mut self) {
        if self.sacked.is_empty() {
            return;
        }
        let una = self.snd_una;
        self.sacked.retain(|&(_, b)| b > una);
        if let Some(first) = self.sacked.first_mut() {
            if first.0 < una {
                first.0 = una;
            }
        }
    }

    /// SACKed bytes above `seq`.
    fn sacked_above(&self, seq: TcpSeqNumber) -> usize {
        self.sacked
            .iter()
            .filter(|&&(_, b)| b > seq)
            .map(|&(a, b)| b - a.max(seq))
            .sum()
    }

    /// RFC 6675 §4 IsLost(): DupThresh discontiguous SACKed sequences lie above `seq`, or
    /// more than (DupThresh - 1) * SMSS SACKed bytes do. Scoreboard ranges stand in for
    /// sequences: DupThresh ranges hold at least DupThresh segments, which is what lets a
    /// flow of small segments (well under an SMSS each) recover without the timer.
    fn is_lost(&self, seq: TcpSeqNumber) -> bool {
        let above = self.sacked.iter().filter(|&&(_, b)| b > seq).count();
        above >= DUP_THRESH || self.sacked_above(seq) > (DUP_THRESH - 1) * self.snd_mss
    }

    /// The unSACKed ranges from snd_una to the highest SACKed byte.
    fn holes(&self) -> impl Iterator<Item = (TcpSeqNumber, TcpSeqNumber)> + '_ {
        let mut at = self.snd_una;
        self.sacked.iter().filter_map(move |&(a, b)| {
            let hole = (at < a).then_some((at, a));
            at = b;
            hole
        })
    }

    /// RFC 6675 §4 SetPipe(): bytes thought to be in the network.
    fn pipe(&self) -> usize {
        let outstanding = self.snd_max - self.snd_una;
        let sacked: usize = self.sacked.iter().map(|&(a, b)| b - a).sum();
        let mut lost = 0;
        let mut retransmitted = 0;
        for (s, e) in self.holes() {
            if self.is_lost(s) {
                lost += e - s;
            }
            if self.high_rxt > s {
                retransmitted += self.high_rxt.min(e) - s;
            }
        }
        (outstanding.saturating_sub(sacked + lost)) + retransmitted
    }

    /// RFC 6675 §5 step (C): while the pipe leaves room, retransmit lost holes above HighRxt
    /// (NextSeg() rule 1); new data (rule 2) follows in the next output; without new data,
    /// any hole above HighRxt (rule 3).
    fn sack_retransmit(&mut self, iface: &mut Iface) {
        for _ in 0..64 {
            if self.cc.cwnd() < self.pipe() + self.snd_mss {
                return;
            }
            let above_high_rxt = |(s, e): (TcpSeqNumber, TcpSeqNumber)| {
                let from = s.max(self.high_rxt);
                (from < e).then_some(from)
            };
            let rule1 = self
                .holes()
                .filter(|&(s, _)| self.is_lost(s))
                .find_map(above_high_rxt);
            let new_data = self.sndq_len > self.snd_nxt - self.snd_una;
            let next = match rule1 {
                Some(s) => Some(s),
                None if !new_data => self.holes().find_map(above_high_rxt),
                None => None,
            };
            let Some(from) = next else { return };
            if !self.retransmit_hole(iface, from) {
                return;
            }
        }
    }

    /// Retransmits up to one MSS of the hole starting at `from`; returns whether it sent.
    fn retransmit_hole(&mut self, iface: &mut Iface, from: TcpSeqNumber) -> bool {
        let off = from - self.snd_una;
        let hole_end = self
            .sacked
            .iter()
            .map(|&(a, _)| a)
            .find(|&a| a > from)
            .unwrap_or(self.snd_max);
        let len = (hole_end - from)
            .min(self.payload_max())
            .min(self.sndq_len.saturating_sub(off));
        if len == 0 {
            return false;
        }
        iface.stats.tcp_retransmits += 1;
        if !self.emit(iface, TcpFlags::ACK, from, off, len, false) {
            return false;
        }
        let end = from + len;
        if end > self.high_rxt {
            self.high_rxt = end;
        }
        true
    }

    /// Sends the first unacknowledged segment again (fast retransmit, partial ACK).
    fn retransmit_first(&mut self, iface: &mut Iface, _cfg: &TcpConfig) {
        let outstanding = self.snd_max - self.snd_una;
        let len = outstanding.min(self.sndq_len).min(self.payload_max());
        let fin = self.fin_queued && !self.fin_acked && len == self.sndq_len && outstanding > len;
        if len == 0 && !fin {
            return;
        }
        let mut flags = TcpFlags::ACK;
        if fin {
            flags |= TcpFlags::FIN;
        }
        iface.stats.tcp_retransmits += 1;
        self.emit(iface, flags, self.snd_una, 0, len, false);
    }

    fn emit_ack(&mut self, iface: &mut Iface) {
        self.emit(iface, TcpFlags::ACK, self.snd_nxt, 0, 0, false);
    }

    fn send_rst(&mut self, iface: &mut Iface, seq: TcpSeqNumber) {
        self.emit(iface, TcpFlags::RST, seq, 0, 0, false);
    }

    fn window_update_worth_sending(&self) -> bool {
        let avail = self.rcv_buf.saturating_sub(self.rcvq_len);
        let edge = self.rcv_nxt + avail;
        let grown = edge.checked_sub(self.rcv_adv).unwrap_or(0);
        grown >= (self.rcv_buf / 2).min(self.snd_mss.max(536))
            || (self.rcv_adv == self.rcv_nxt && grown > 0)
    }

    /// The window field to send, and the right edge it advertises (never left of the last
    /// one, RFC 9293 §3.8.6.2.2; grown only in steps of at least min(buffer/2, MSS)).
    fn window_to_advertise(&mut self, syn: bool) -> u16 {
        let avail = self.rcv_buf.saturating_sub(self.rcvq_len);
        if syn {
            // RFC 7323 §2.2: the window in a SYN is never scaled.
            let w = avail.min(65535);
            self.rcv_adv = self.rcv_nxt + w;
            return w as u16;
        }
        let shift = self.rcv_wscale;
        let max = 65535usize << shift;
        let candidate = self.rcv_nxt + (avail.min(max) >> shift << shift);
        if candidate > self.rcv_adv && self.window_update_worth_sending() {
            self.rcv_adv = candidate;
        }
        let current = self.rcv_adv.checked_sub(self.rcv_nxt).unwrap_or(0);
        // Round up so the edge we announce is never left of the one before.
        let field = current.div_ceil(1 << shift).min(65535);
        self.rcv_adv = self.rcv_nxt + (field << shift);
        field as u16
    }

    /// Builds one segment and hands it to the interface. `data_off..data_off+len` are bytes
    /// of the send queue (relative to `snd_una`); more than one MSS makes a large segment
    /// for the device to cut ([`Tcb::segment_max`] allowed it). Returns false if no buffer
    /// was free.
    fn emit(
        &mut self,
        iface: &mut Iface,
        flags: TcpFlags,
        seq: TcpSeqNumber,
        data_off: usize,
        len: usize,
        syn_options: bool,
    ) -> bool {
        // Only a device that cuts segments itself can take one above the MSS (and then the
        // size it cuts at is needed); elsewhere this costs one comparison.
        let segment_size = if iface.tcp_large_payload_max > 0 {
            self.payload_max()
        } else {
            usize::MAX
        };
        let large = len > segment_size;
        let frame = if large {
            iface.alloc_large()
        } else {
            iface.alloc()
        };
        let Some(mut frame) = frame else {
            return false;
        };
        let now = iface.now;
        let is_rst = flags.rst();
        let syn = flags.syn();
        let ack_number = if is_rst || self.state == TcpState::SynSent && !flags.ack() {
            None
        } else {
            Some(self.rcv_nxt)
        };
        let window_len = if is_rst {
            0
        } else {
            self.window_to_advertise(syn)
        };
        let mut sack_ranges = [None; 3];
        if self.sack_enabled && !syn && !is_rst && !self.assembler.is_empty() {
            self.fill_sack(&mut sack_ranges);
        }
        let timestamp =
            ((syn_options && self.offer_ts) || (self.ts_enabled && !is_rst)).then(|| {
                TcpTimestamp {
                    tsval: self.ts_now(now),
                    tsecr: if flags.ack() { self.ts_recent } else { 0 },
                }
            });
        // Payload first, then the headers in front of it (no copy of the payload afterwards).
        if len > 0 {
            let (mut idx, mut base) = self.snd_cursor;
            if data_off < base || idx >= self.sndq.len() {
                (idx, base) = (0, 0);
            }
            let mut left = len;
            let mut at = data_off;
            while left > 0 {
                let b = &self.sndq[idx];
                if at >= base + b.len() {
                    base += b.len();
                    idx += 1;
                    continue;
                }
                let skip = at - base;
                let take = (b.len() - skip).min(left);
                frame.extend_from_slice(&b[skip..skip + take]);
                left -= take;
                at += take;
            }
            self.snd_cursor = (idx, base);
        }
        if let Some(a) = ack_number {
            self.last_ack_sent = a;
            self.unacked_segments = 0;
            self.delack_at = None;
        }
        if is_rst {
            iface.stats.tcp_rst_sent += 1;
        }
        iface.stats.tcp_tx_segments += 1;
        if len > 0 {
            // RFC 5681 §4.1 counts idleness from the last data sent.
            self.last_send = now;
        }
        let plain = !syn_options && !syn && !is_rst && sack_ranges[0].is_none();
        debug_assert!(
            !large || (plain && self.route.as_ref().is_some_and(|r| iface.route_holds(r))),
            "a large segment off the fast path"
        );
        match &self.route {
            Some(route) if plain && iface.route_holds(route) => {
                // The usual segment on a resolved route: all three headers written at once,
                // the TCP header field by field (RFC 9293 §3.1), its options as RFC 7323
                // Appendix A lays them out.
                let tcp_len = TCP_HEADER_LEN
                    + if timestamp.is_some() {
                        TcpTimestamp::ALIGNED_OPTION_LEN
                    } else {
                        0
                    };
                let payload_len = frame.len();
                let headers = frame.prepend(ROUTE_HEADERS_LEN + tcp_len);
                iface.write_routed_headers(route, headers, tcp_len + payload_len);
                let mut tcp = TcpPacket::new_unchecked(&mut headers[ROUTE_HEADERS_LEN..]);
                tcp.set_src_port(self.local.1);
                tcp.set_dst_port(self.remote.1);
                tcp.set_seq_number(seq);
                tcp.set_ack_number(ack_number.unwrap_or(TcpSeqNumber(0)));
                tcp.set_header_len(tcp_len as u8);
                // The ACK bit goes with the acknowledgment number, as TcpRepr::emit has it.
                let mut bits = flags;
                bits.set(TcpFlags::ACK, ack_number.is_some());
                tcp.set_flags(bits);
                tcp.set_window_len(window_len);
                tcp.set_checksum(0);
                tcp.set_urgent_at(0);
                if let Some(ts) = timestamp {
                    tcp.options_mut().copy_from_slice(&ts.aligned_option());
                }
                if iface.frame_offloads {
                    // The device completes the checksum: the field holds the pseudo-header
                    // sum (RFC 9293 §3.1), the device adds header and payload to it, and cuts
                    // a large segment into segments of `segment_size` bytes.
                    let tcp_total = tcp_len + payload_len;
                    let pseudo = checksum::pseudo_header(
                        self.local.0,
                        self.remote.0,
                        IpProtocol::Tcp,
                        tcp_total as u32,
                    );
                    tcp.set_checksum(pseudo);
                    let offload = FrameOffload {
                        checksum: FrameChecksum::Partial {
                            start: ROUTE_HEADERS_LEN as u16,
                            offset: 16,
                        },
                        tcp_segment_size: if large { segment_size as u16 } else { 0 },
                        header_len: if large {
                            (ROUTE_HEADERS_LEN + tcp_len) as u16
                        } else {
                            0
                        },
                    };
                    if large {
                        iface.stats.tcp_tx_large_segments += 1;
                    }
                    debug_assert!(
                        frame.len() - ETHERNET_HEADER_LEN <= iface.mtu
                            || tcp_total - tcp_len <= iface.tcp_large_payload_max
                    );
                    iface.queue_frame_offload(frame, offload);
                } else {
                    if iface.caps.tcp.tx() {
                        TcpPacket::new_unchecked(&mut frame.as_mut_slice()[ROUTE_HEADERS_LEN..])
                            .fill_checksum(self.local.0, self.remote.0);
                    }
                    debug_assert!(frame.len() - ETHERNET_HEADER_LEN <= iface.mtu);
                    iface.queue_frame(frame);
                }
            }
            _ => {
                let mss_opt = self.adv_mss.min(u16::MAX as usize) as u16;
                let repr = TcpRepr {
                    src_port: self.local.1,
                    dst_port: self.remote.1,
                    flags,
                    seq_number: seq,
                    ack_number,
                    window_len,
                    window_scale: (syn_options && self.offer_wscale).then_some(self.rcv_wscale),
                    max_seg_size: syn_options.then_some(mss_opt),
                    sack_permitted: syn_options && self.offer_sack,
                    sack_ranges,
                    timestamp,
                    payload: &[],
                };
                let header_len = repr.header_len();
                repr.emit_header(frame.prepend(header_len));
                if iface.caps.tcp.tx() {
                    // Over header and payload at once (the payload is already behind it).
                    TcpPacket::new_unchecked(frame.as_mut_slice())
                        .fill_checksum(self.local.0, self.remote.0);
                }
                debug_assert!(frame.len() + IPV4_HEADER_LEN <= iface.mtu);
                let route = Some(&mut self.route);
                iface.send_ipv4_routed(frame, self.remote.0, IpProtocol::Tcp, route);
            }
        }
        true
    }

    /// RFC 2018 §4: the block holding the most recent out-of-order segment first, then others.
    fn fill_sack(&self, out: &mut [Option<(u32, u32)>; 3]) {
        let mut n = 0;
        if let Some(last) = self.last_ooo {
            if let Some((l, r)) = self
                .assembler
                .ranges()
                .find(|(l, r)| *l <= last && last < *r)
            {
                out[0] = Some((l.0, r.0));
                n = 1;
            }
        }
        for (l, r) in self.assembler.ranges() {
            if n >= 3 {
                break;
            }
            if out[0] == Some((l.0, r.0)) {
                continue;
            }
            out[n] = Some((l.0, r.0));
            n += 1;
        }
    }

    /// Invariants, checked after every event in debug builds.
    fn check(&self) {
        if cfg!(debug_assertions) {
            assert!(self.snd_una <= self.snd_nxt, "snd_una past snd_nxt");
            assert!(self.snd_nxt <= self.snd_max, "snd_nxt past snd_max");
            assert_eq!(
                self.sndq_len,
                self.sndq.iter().map(|b| b.len()).sum::<usize>()
            );
            assert_eq!(
                self.rcvq_len,
                self.rcvq.iter().map(|b| b.len()).sum::<usize>()
            );
            if self.state.is_synchronized() && self.state != TcpState::TimeWait {
                let in_flight = self.snd_max - self.snd_una;
                assert!(
                    in_flight <= self.sndq_len + 1,
                    "more in flight ({in_flight}) than queued ({})",
                    self.sndq_len
                );
            }
        }
    }
}
