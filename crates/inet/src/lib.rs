//! The user-space TCP/UDP/IPv4/ARP stack of bypass.
//!
//! Sans-I/O and generic over a [`bypass_devices::Device`]: a [`Stack`] owns the device and its
//! sockets; [`Stack::poll`] receives a burst of frames, runs them up the layers, fires due
//! timers and sends a burst back; [`Stack::poll_at`] says when to poll next. Time is an
//! argument, so the same code runs on the machine's clock or, in the simulator, on a virtual
//! clock from a seed.
//!
//! A frame goes up through one module per layer, each citing the RFC it implements next to
//! the code:
//!
//! ```text
//! device -> ethernet -> arp
//!                    -> ipv4 -> icmp
//!                            -> udp  -> UDP sockets
//!                            -> tcp  -> listeners, connections (tcp::conn)
//! ```
//!
//! and down through `iface` (IPv4 header, next hop, ARP, Ethernet header),
//! built in the headroom of one buffer from the device's pool, checksummed once. A connection
//! keeps the Ethernet and IPv4 headers of its route while the neighbour entry behind them
//! holds, so its segments skip the lookup and take all their headers in one step. Timers
//! wait in one queue ordered by deadline: a timer run looks only at the connections due.
//!
//! # Socket API
//!
//! Sockets are named by [`SocketHandle`]s. TCP: [`Stack::tcp_listen`], [`Stack::tcp_accept`],
//! [`Stack::tcp_connect`], [`Stack::tcp_send`] (takes what fits, shares the buffer),
//! [`Stack::tcp_recv`] (zero-copy slices of received frames; `Err(EndOfStream)` after the
//! peer's FIN), [`Stack::tcp_shutdown`] (half-close), [`Stack::tcp_close`], [`Stack::tcp_abort`].
//! UDP: [`Stack::udp_bind`], [`Stack::udp_send_to`], [`Stack::udp_recv_from`]. A task that
//! cannot progress registers a [`std::task::Waker`] for an [`Interest`] with
//! [`Stack::register_waker`] and is woken when it can.
//!
//! # What TCP does
//!
//! RFC 9293 state machine (simultaneous open and close, half-close, TIME-WAIT), RFC 5961
//! challenge ACKs (rate limited), RFC 6298 retransmission timer with Karn's rule, backoff and
//! a retry limit that fails the connection with `TimedOut`, RFC 7323 window scaling,
//! timestamps and PAWS, RFC 2018 SACK with RFC 6675 recovery (NewReno, RFC 6582, without
//! SACK), CUBIC (RFC 9438, default) or NewReno behind [`tcp::CongestionControl`], zero-window
//! probes, silly window avoidance on both sides, optional Nagle, delayed ACKs with quick ACKs
//! at the start, RFC 6528 initial sequence numbers, optional keep-alive (RFC 1122 §4.2.3.6).
//!
//! # Testing
//!
//! `tests/scenario.rs` plays the peer segment by segment (packetdrill style);
//! `tests/sim.rs` runs random workloads over random faults on a virtual clock, many seeds per
//! fault profile (`BYPASS_SIM_SEEDS=N`, replay one with `BYPASS_SIM_SEED=S`; set
//! `BYPASS_PCAP=file.pcap` to capture a replayed run for Wireshark).
//!
//! # Limits
//!
//! Every table and queue is bounded by the configuration: sockets, listen backlog and SYN
//! queue, send and receive buffers (the receive buffer bounds in-order and out-of-order data
//! together), out-of-order pieces, ARP cache and its per-address queue, transmit queue.
//! Nothing grows because a peer sent something. Every drop is counted in [`Stats`].
//!
//! Received data stays in the frames it arrived in (segments of up to 256 bytes are gathered
//! into one buffer: the frame of the first, when the stack holds it alone, or a copy): a
//! connection's receive buffer of N bytes can pin about N / MSS frames of the device's pool,
//! and sent data pins the application's buffers until it is acknowledged. Size the pool for
//! the connections it serves.
//!
//! Checksums: what the device offloads (`DeviceCaps::rx_checksum_offload`,
//! `tx_checksum_offload`: IPv4, TCP and UDP) the stack neither verifies nor fills; ICMP
//! checksums are always computed in software.
//!
//! # Per-frame offloads and TCP segmentation offload
//!
//! On a device with `DeviceCaps::frame_offloads` (AF_PACKET with virtio-net headers) each
//! frame travels with a `bypass_devices::FrameOffload`. TCP segments on a resolved route carry
//! only the pseudo-header sum in their checksum field and ask the device to complete it; a
//! received frame the device vouches for (verified, or sent by this host's kernel without a
//! checksum) skips TCP and UDP verification. With `DeviceCaps::tcp_segmentation_max` above
//! the MTU, a connection's new data may leave in one segment of up to that size (a whole
//! number of MSS, and only as the congestion and peer windows allow, exactly as the same
//! bytes in MSS-sized segments would), built in a chunk of the device's large-frame pool; the
//! device cuts it into MSS-sized segments. A short last piece is held back when Nagle or
//! sender silly-window avoidance would hold it as a segment of its own. Segments with SACK
//! blocks, those off the cached route (SYNs, the first segment to a neighbour not yet
//! resolved) and retransmissions of holes and of the first unacknowledged segment stay at one
//! MSS; after a timeout the window is one MSS, and data sent again grows with it like new
//! data. Timing (Karn's rule, timestamps) treats a large segment as one. On receive, a
//! segment longer than the MSS (a sender's segmentation left it whole) is taken like any
//! other, and counts as the MSS-sized segments it holds for the every-second-segment ACK.

pub mod arp;
mod error;
mod ethernet;
mod icmp;
mod iface;
mod ipv4;
mod socket;
mod stack;
pub mod stats;
pub mod tcp;
mod udp;

pub use arp::ArpConfig;
pub use error::{Error, Result};
pub use socket::{Interest, SocketHandle};
pub use stack::{Stack, StackConfig, TcpInfo};
pub use stats::{Layer, Stats};
pub use tcp::{CongestionKind, TcpConfig, TcpState};
