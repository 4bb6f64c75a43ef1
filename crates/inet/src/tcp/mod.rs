//! TCP (RFC 9293) with window scaling and timestamps (RFC 7323), SACK (RFC 2018, receiver
//! side), RFC 6298 retransmission timing, RFC 5961 protections, RFC 6528 initial sequence
//! numbers and pluggable congestion control ([`cc`]).
//!
//! A connection's state lives in a `conn::Tcb` (transmission control block); the stack
//! demultiplexes segments to it and drives its timers. Names follow the RFC: `snd_una` is the
//! oldest unacknowledged sequence number, `snd_nxt` the next to send, `rcv_nxt` the next
//! expected, `snd_wnd`/`rcv_wnd` the windows.

use std::time::Duration;

pub mod assembler;
pub mod cc;
pub(crate) mod conn;
pub mod isn;
pub mod rtt;

pub use cc::{CongestionControl, CongestionKind, Cubic, NewReno};

/// The states of RFC 9293 §3.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpState {
    Closed,
    Listen,
    SynSent,
    SynReceived,
    Established,
    FinWait1,
    FinWait2,
    CloseWait,
    Closing,
    LastAck,
    TimeWait,
}

impl TcpState {
    /// RFC 9293 §3.3.2: the states after the handshake.
    pub fn is_synchronized(self) -> bool {
        !matches!(
            self,
            TcpState::Closed | TcpState::Listen | TcpState::SynSent | TcpState::SynReceived
        )
    }
}

/// Tunables of every TCP connection of a stack. Every field is applied; tests show each.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Largest segment payload we accept and send (clamped to the link MTU minus 40).
    pub mss: u16,
    /// Bytes the application may queue for sending per connection.
    pub send_buffer: usize,
    /// Bytes received and not yet read, per connection: bounds the receive window and the
    /// out-of-order data together.
    pub recv_buffer: usize,
    /// Most out-of-order pieces held per connection.
    pub max_out_of_order_pieces: usize,
    /// Offer window scaling (RFC 7323 §2).
    pub window_scaling: bool,
    /// Offer timestamps (RFC 7323 §3): RTT measurement and PAWS.
    pub timestamps: bool,
    /// Offer SACK (RFC 2018): we then send SACK blocks for out-of-order data.
    pub sack: bool,
    /// Nagle's algorithm (RFC 9293 §3.7.4): hold small segments while data is unacknowledged.
    pub nagle: bool,
    /// RTO before the first measurement (RFC 6298 §2.1 says 1 s).
    pub initial_rto: Duration,
    /// Lower bound of the RTO (RFC 6298 §2.4 says 1 s; Linux uses 200 ms).
    pub min_rto: Duration,
    /// Upper bound of the RTO (RFC 6298 §2.5).
    pub max_rto: Duration,
    /// Retransmissions of one segment before the connection fails with `TimedOut`.
    pub max_retries: u32,
    /// Retransmissions of a SYN before a connect fails with `TimedOut`.
    pub syn_retries: u32,
    /// Longest an ACK is delayed (RFC 9293 §3.8.6.3 allows up to 500 ms); `None` acks every
    /// segment at once.
    pub delayed_ack: Option<Duration>,
    /// Segments acknowledged at once at the start of a connection (quick ACKs help the
    /// sender's slow start).
    pub quick_acks: u32,
    /// How long a connection stays in TIME-WAIT (2 MSL, RFC 9293 §3.4.2).
    pub time_wait: Duration,
    /// The congestion-control algorithm.
    pub congestion: CongestionKind,
    /// Initial window in segments (RFC 6928).
    pub initial_window_segments: usize,
    /// Challenge ACKs per second, all connections together (RFC 5961 §7).
    pub challenge_ack_limit: u32,
    /// Pending (SYN-RECEIVED) connections per listener, at most.
    pub syn_queue: usize,
    /// Keep-alive (RFC 1122 §4.2.3.6): after this long without hearing from the peer, probe
    /// it; `None` (the default, as RFC 1122 requires) never probes.
    pub keepalive: Option<Duration>,
    /// Time between keep-alive probes.
    pub keepalive_interval: Duration,
    /// Unanswered keep-alive probes before the connection fails with `TimedOut`.
    pub keepalive_probes: u32,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            mss: 1460,
            send_buffer: 256 << 10,
            recv_buffer: 256 << 10,
            max_out_of_order_pieces: 256,
            window_scaling: true,
            timestamps: true,
            sack: true,
            nagle: false,
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            max_retries: 12,
            syn_retries: 6,
            delayed_ack: Some(Duration::from_millis(1)),
            quick_acks: 16,
            time_wait: Duration::from_secs(60),
            congestion: CongestionKind::Cubic,
            initial_window_segments: 10,
            challenge_ack_limit: 1000,
            syn_queue: 256,
            keepalive: None,
            keepalive_interval: Duration::from_secs(75),
            keepalive_probes: 9,
        }
    }
}

/// Sends a RST that belongs to no connection (RFC 9293 §3.10.7.1, segment to CLOSED, and
/// §3.10.7.2, an ACK to LISTEN).
pub(crate) fn send_reset(
    iface: &mut crate::iface::Iface,
    local: conn::Endpoint,
    remote: conn::Endpoint,
    seq: bypass_wire::TcpSeqNumber,
    ack: Option<bypass_wire::TcpSeqNumber>,
) {
    use bypass_wire::{ChecksumCapabilities, IpProtocol, TcpFlags, TcpPacket, TcpRepr};
    let Some(mut frame) = iface.alloc() else {
        return;
    };
    let mut flags = TcpFlags::RST;
    if ack.is_some() {
        flags |= TcpFlags::ACK;
    }
    let repr = TcpRepr {
        src_port: local.1,
        dst_port: remote.1,
        flags,
        seq_number: seq,
        ack_number: ack,
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let header = frame.append(repr.header_len());
    let caps = if iface.caps.tcp.tx() {
        ChecksumCapabilities::default()
    } else {
        ChecksumCapabilities::ignored()
    };
    repr.emit(
        &mut TcpPacket::new_unchecked(header),
        local.0,
        remote.0,
        &caps,
    );
    iface.stats.tcp_rst_sent += 1;
    iface.stats.tcp_tx_segments += 1;
    iface.send_ipv4(frame, remote.0, IpProtocol::Tcp);
}
