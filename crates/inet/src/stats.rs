//! Counters of everything the stack did and every reason it dropped something.
//!
//! Every drop has its own counter, so a lost frame is always explained by one of them. Parse
//! errors are counted per layer and per [`bypass_wire::Error::as_str`] reason.

use bypass_wire::Error as WireError;

/// The layer a frame failed to parse at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Ethernet,
    Arp,
    Ipv4,
    Icmpv4,
    Udp,
    Tcp,
}

impl Layer {
    pub const ALL: [Layer; 6] = [
        Layer::Ethernet,
        Layer::Arp,
        Layer::Ipv4,
        Layer::Icmpv4,
        Layer::Udp,
        Layer::Tcp,
    ];

    pub const fn as_str(&self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Icmpv4 => "icmpv4",
            Layer::Udp => "udp",
            Layer::Tcp => "tcp",
        }
    }
}

const REASONS: usize = WireError::ALL.len();

fn reason_index(e: WireError) -> usize {
    WireError::ALL
        .iter()
        .position(|&x| x == e)
        .expect("Error::ALL lists every variant")
}

/// Counters of one stack. Read with [`crate::Stack::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    // Frames.
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames addressed to another MAC.
    pub eth_not_for_us: u64,
    /// Frames of an EtherType the stack does not speak.
    pub eth_unknown_ethertype: u64,
    /// Frames not sent because the buffer pool was empty.
    pub tx_no_buffer: u64,
    /// Frames dropped because the device's transmit queue stayed full.
    pub tx_queue_full: u64,

    // ARP (RFC 826).
    pub arp_requests_sent: u64,
    pub arp_replies_sent: u64,
    pub arp_requests_received: u64,
    pub arp_replies_received: u64,
    /// ARP packets for another protocol address.
    pub arp_not_for_us: u64,
    /// Frames dropped because their next hop never answered ARP.
    pub arp_unresolved_drops: u64,
    /// Frames dropped because too many were already waiting for ARP.
    pub arp_queue_full: u64,
    /// Resolutions refused because every cache slot held a static or pending entry.
    pub arp_cache_full: u64,

    // IPv4 (RFC 791, RFC 1122).
    pub ipv4_not_for_us: u64,
    pub ipv4_unknown_protocol: u64,
    /// Datagrams from a source that cannot be a host (broadcast, multicast, ours).
    pub ipv4_bad_source: u64,
    pub ipv4_no_route: u64,

    // ICMPv4 (RFC 792).
    pub icmp_echo_requests: u64,
    pub icmp_echo_replies_sent: u64,
    /// ICMP messages other than echo request, counted and ignored.
    pub icmp_ignored: u64,

    // UDP (RFC 768).
    pub udp_rx: u64,
    pub udp_tx: u64,
    /// Datagrams to a port with no socket.
    pub udp_no_socket: u64,
    /// Datagrams dropped because the socket's receive queue was full.
    pub udp_queue_full: u64,

    // TCP (RFC 9293 and friends).
    pub tcp_rx_segments: u64,
    pub tcp_tx_segments: u64,
    /// Segments larger than one MSS handed to the device to cut (TCP segmentation offload;
    /// counted in `tcp_tx_segments` once each).
    pub tcp_tx_large_segments: u64,
    /// In-order segments received holding more than one MSS of ours (a sender's
    /// segmentation offload left them whole).
    pub tcp_rx_large_segments: u64,
    /// Segments carrying data sent again.
    pub tcp_retransmits: u64,
    pub tcp_rto_expired: u64,
    pub tcp_fast_retransmits: u64,
    pub tcp_zero_window_probes: u64,
    pub tcp_keepalive_probes: u64,
    pub tcp_rst_sent: u64,
    pub tcp_rst_received: u64,
    /// Segments to a port or connection that does not exist (answered with RST).
    pub tcp_no_socket: u64,
    /// Challenge ACKs sent (RFC 5961).
    pub tcp_challenge_acks: u64,
    /// Challenge ACKs not sent because of the rate limit (RFC 5961 §7).
    pub tcp_challenge_acks_limited: u64,
    /// Segments rejected by PAWS (RFC 7323 §5).
    pub tcp_paws_rejected: u64,
    /// Segments outside the receive window (RFC 9293 §3.10.7.4, first check).
    pub tcp_out_of_window: u64,
    /// ACKs for data not yet sent, or too old (RFC 5961 §5).
    pub tcp_ack_unacceptable: u64,
    /// Segments that arrived ahead of a hole and were kept.
    pub tcp_out_of_order: u64,
    /// Out-of-order data dropped because the assembler was at its byte or hole limit.
    pub tcp_out_of_order_dropped: u64,
    /// Segments whose data had all been received already.
    pub tcp_duplicate_segments: u64,
    /// SYNs dropped because the listener's SYN queue was full.
    pub tcp_syn_queue_full: u64,
    /// Handshakes that completed while the accept queue was full (answered with RST).
    pub tcp_backlog_full: u64,
    /// Segments dropped in a state that takes none (e.g. a stray segment to a listener).
    pub tcp_dropped_in_state: u64,
    pub tcp_connections_established: u64,
    pub tcp_connections_reset: u64,
    pub tcp_connections_timed_out: u64,
    pub tcp_connections_refused: u64,

    /// Parse errors by layer and reason: see [`Stats::parse_errors`].
    parse_errors: [[u64; REASONS]; 6],
}

impl Stats {
    /// Frames rejected at `layer` for `reason`.
    pub fn parse_errors(&self, layer: Layer, reason: WireError) -> u64 {
        self.parse_errors[layer as usize][reason_index(reason)]
    }

    /// Total parse errors over all layers and reasons.
    pub fn parse_errors_total(&self) -> u64 {
        self.parse_errors.iter().flatten().sum()
    }

    /// Every non-zero parse-error counter as `(layer, reason, count)`, e.g.
    /// `("tcp", "bad_checksum", 3)`.
    pub fn parse_error_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for layer in Layer::ALL {
            for reason in WireError::ALL {
                let n = self.parse_errors(layer, reason);
                if n > 0 {
                    out.push((layer.as_str(), reason.as_str(), n));
                }
            }
        }
        out
    }

    pub(crate) fn parse_error(&mut self, layer: Layer, reason: WireError) {
        self.parse_errors[layer as usize][reason_index(reason)] += 1;
    }
}
