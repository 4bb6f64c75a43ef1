//! The baseline: the bench's workload on [smoltcp](https://crates.io/crates/smoltcp).
//!
//! Two smoltcp `Interface`s (Ethernet medium, MTU 1500, 10.0.0.1/24 and 10.0.0.2/24) are joined
//! back to back by [`Wire`], an in-memory `phy::Device` with one queue of frames per direction,
//! all in this thread. Checksums are computed and verified (the device reports smoltcp's
//! default `ChecksumCapabilities`); ARP resolves the neighbours while the connection is set up,
//! which is not measured. The TCP sockets have Nagle and delayed ACK off and 4 MiB send and
//! receive buffers, as our stacks do in the bench. Congestion control is smoltcp's default
//! for these features (none) and TCP timestamps are off (smoltcp's default), so a full
//! segment carries 1,460 bytes. Like our side's buffer pool, the socket buffers and the
//! wire's frame buffers are allocated and touched before anything is measured.
//!
//! With delayed ACK off, smoltcp sends a pure ACK from the poll that receives data, so an
//! echo round trip puts four frames on the wire (our stacks: two, the ACKs ride on the data).
//!
//! The workload and the timing are those of our side of the bench: the same clock, 1,000
//! warm-up round trips, the same polling pattern (A then B, B echoes, B then A, A reads).

use std::collections::VecDeque;

use ::smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use ::smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use ::smoltcp::socket::tcp;
use ::smoltcp::time::Instant;
use ::smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};
use bypass_runtime::Clock;

use super::{cpu_seconds, new_histogram, Params, Run, WARMUP_ROUND_TRIPS};

/// The IP MTU of both interfaces.
const MTU: usize = 1500;
/// The largest frame on the wire: the IP MTU plus the Ethernet header (no FCS).
const MAX_FRAME: usize = MTU + 14;
/// Send and receive buffer of each TCP socket, as in our stacks.
const SOCKET_BUFFER: usize = 4 << 20;
/// The port B listens on.
const PORT: u16 = 7;

/// A frame in flight: a reused buffer of at least [`MAX_FRAME`] bytes and the length used.
struct Frame {
    buf: Box<[u8]>,
    len: usize,
}

/// One direction of the wire: the frames in flight, in order, and the buffers of frames
/// already received, kept for the sender to reuse (no allocation once warm).
struct Lane {
    frames: VecDeque<Frame>,
    spare: Vec<Box<[u8]>>,
    /// Frames sent in this direction so far.
    sent: u64,
}

impl Lane {
    /// A lane with `spare` frame buffers ready, written once so that their pages are
    /// mapped (as the buffer pool of our simulated wire is allocated up front).
    fn new(spare: usize) -> Lane {
        Lane {
            frames: VecDeque::with_capacity(spare),
            spare: (0..spare)
                .map(|_| vec![1; MAX_FRAME].into_boxed_slice())
                .collect(),
            sent: 0,
        }
    }
}

/// A perfect wire between two interfaces: one [`Lane`] per direction.
struct Wire {
    a_to_b: Lane,
    b_to_a: Lane,
}

/// Which end of the [`Wire`].
#[derive(Clone, Copy)]
enum End {
    A,
    B,
}

impl Wire {
    /// A wire whose lanes have buffers for a full window of full-size frames each
    /// (a 4 MiB window is 2,873 segments of 1,460 bytes), so bulk runs allocate nothing.
    fn new() -> Wire {
        let window = SOCKET_BUFFER.div_ceil(MTU - 40);
        Wire {
            a_to_b: Lane::new(window),
            b_to_a: Lane::new(window),
        }
    }

    /// The `phy::Device` of one end: it receives from one lane and sends into the other.
    fn port(&mut self, end: End) -> Port<'_> {
        let (rx, tx) = match end {
            End::A => (&mut self.b_to_a, &mut self.a_to_b),
            End::B => (&mut self.a_to_b, &mut self.b_to_a),
        };
        Port { rx, tx }
    }
}

/// One end of the [`Wire`], borrowed for an `Interface::poll`.
struct Port<'w> {
    rx: &'w mut Lane,
    tx: &'w mut Lane,
}

impl Device for Port<'_> {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let frame = self.rx.frames.pop_front()?;
        let rx = RxToken {
            frame,
            spare: &mut self.rx.spare,
        };
        Some((rx, TxToken { lane: self.tx }))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken { lane: self.tx })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        // `caps.checksum` stays at its default: compute and verify every checksum.
        caps
    }
}

/// A received frame; its buffer goes back to the lane's spares once read.
struct RxToken<'a> {
    frame: Frame,
    spare: &'a mut Vec<Box<[u8]>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let r = f(&self.frame.buf[..self.frame.len]);
        self.spare.push(self.frame.buf);
        r
    }
}

/// The right to send one frame into a lane.
struct TxToken<'a> {
    lane: &'a mut Lane,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // Spare buffers are never cleared: smoltcp writes every byte of the frame it asks
        // for, as it must with a NIC's reused DMA buffers.
        let mut buf = match self.lane.spare.pop() {
            Some(buf) if buf.len() >= len => buf,
            _ => vec![0; len.max(MAX_FRAME)].into_boxed_slice(),
        };
        let r = f(&mut buf[..len]);
        self.lane.frames.push_back(Frame { buf, len });
        self.lane.sent += 1;
        r
    }
}

/// Two interfaces on a [`Wire`] and a TCP connection between them: `a` connected to `b`.
struct Pair {
    clock: Clock,
    wire: Wire,
    a: Interface,
    b: Interface,
    a_sockets: SocketSet<'static>,
    b_sockets: SocketSet<'static>,
    a_tcp: SocketHandle,
    b_tcp: SocketHandle,
}

/// A socket's ring buffer with every page already touched. With `vec![0; n]` calloc would
/// hand out untouched zero pages, and the echo would take a page fault every 64 round trips
/// (4 KiB / 64 B) on its first pass through the ring: a cost of the bench, not of smoltcp,
/// which showed as p99 and p99.9 of several microseconds.
fn ring() -> tcp::SocketBuffer<'static> {
    tcp::SocketBuffer::new(vec![1; SOCKET_BUFFER])
}

/// A TCP socket with 4 MiB buffers, Nagle and delayed ACK off.
fn tcp_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(ring(), ring());
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s
}

/// An interface with the given MAC address (last byte) and IPv4 address in 10.0.0.0/24.
fn interface(wire: &mut Wire, end: End, host: u8, now: Instant) -> Interface {
    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress([
        2, 0, 0, 0, 0, host,
    ])));
    config.random_seed = u64::from(host);
    let mut iface = Interface::new(config, &mut wire.port(end), now);
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::new(IpAddress::v4(10, 0, 0, host), 24))
            .expect("one address");
    });
    iface
}

impl Pair {
    /// Sets up both interfaces and connects A to B (ARP and the handshake included).
    fn connect(clock: Clock) -> Pair {
        let now = smol_now(&clock);
        let mut wire = Wire::new();
        let a = interface(&mut wire, End::A, 1, now);
        let b = interface(&mut wire, End::B, 2, now);
        let mut a_sockets = SocketSet::new(Vec::new());
        let mut b_sockets = SocketSet::new(Vec::new());
        let a_tcp = a_sockets.add(tcp_socket());
        let b_tcp = b_sockets.add(tcp_socket());
        let mut pair = Pair {
            clock,
            wire,
            a,
            b,
            a_sockets,
            b_sockets,
            a_tcp,
            b_tcp,
        };
        pair.b_socket().listen(PORT).expect("listen");
        let cx = pair.a.context();
        pair.a_sockets
            .get_mut::<tcp::Socket>(a_tcp)
            .connect(cx, (IpAddress::v4(10, 0, 0, 2), PORT), 49152)
            .expect("connect");
        while !(pair.a_socket().may_send() && pair.b_socket().may_recv()) {
            pair.poll_both();
        }
        for _ in 0..10 {
            pair.poll_both();
        }
        pair
    }

    /// Polls A, then B, at one reading of the clock.
    fn poll_both(&mut self) {
        let now = smol_now(&self.clock);
        self.poll_a(now);
        self.poll_b(now);
    }

    fn a_socket(&mut self) -> &mut tcp::Socket<'static> {
        self.a_sockets.get_mut(self.a_tcp)
    }

    fn b_socket(&mut self) -> &mut tcp::Socket<'static> {
        self.b_sockets.get_mut(self.b_tcp)
    }

    fn poll_a(&mut self, now: Instant) {
        self.a
            .poll(now, &mut self.wire.port(End::A), &mut self.a_sockets);
    }

    fn poll_b(&mut self, now: Instant) {
        self.b
            .poll(now, &mut self.wire.port(End::B), &mut self.b_sockets);
    }
}

/// The time of `clock` as smoltcp wants it (microseconds).
fn smol_now(clock: &Clock) -> Instant {
    Instant::from_micros(clock.now().as_micros() as i64)
}

/// One round of the bench on smoltcp: the echo, then (unless `bulk_mib` is 0) the bulk run.
pub fn run(params: &Params, clock: &Clock) -> Run {
    let mut pair = Pair::connect(clock.clone());

    // Echo: A sends 64 B, B echoes them, A reads them back.
    let msg = [0x5au8; 64];
    let mut echo = new_histogram();
    let (a_frames, b_frames) = (pair.wire.a_to_b.sent, pair.wire.b_to_a.sent);
    for i in 0..params.round_trips + WARMUP_ROUND_TRIPS {
        let t0 = clock.now();
        assert_eq!(pair.a_socket().send_slice(&msg), Ok(msg.len()));
        let mut back = [0u8; 64];
        let (mut echoed, mut got) = (0, 0);
        while got < msg.len() {
            // One clock reading per pair of polls, as on our side.
            pair.poll_both();
            let b = pair.b_socket();
            while echoed < msg.len() {
                let mut buf = [0u8; 64];
                let n = b.recv_slice(&mut buf[..msg.len() - echoed]).expect("recv");
                if n == 0 {
                    break;
                }
                assert_eq!(b.send_slice(&buf[..n]), Ok(n));
                echoed += n;
            }
            let now = smol_now(clock);
            pair.poll_b(now);
            pair.poll_a(now);
            let a = pair.a_socket();
            while got < msg.len() {
                let n = a.recv_slice(&mut back[got..]).expect("recv");
                if n == 0 {
                    break;
                }
                got += n;
            }
        }
        assert!(back == msg, "the echo differs");
        if i >= WARMUP_ROUND_TRIPS {
            echo.saturating_record((clock.now() - t0).as_nanos() as u64);
        }
    }
    let round_trips = (params.round_trips + WARMUP_ROUND_TRIPS) as f64;
    let frames_per_round_trip = (pair.wire.a_to_b.sent - a_frames) as f64 / round_trips
        + (pair.wire.b_to_a.sent - b_frames) as f64 / round_trips;
    let mut run = Run {
        echo,
        details: vec![format!(
            "{frames_per_round_trip:.2} frames per echo round trip (ACKs included)"
        )],
        ..Run::default()
    };
    if params.bulk_mib == 0 {
        return run;
    }

    // Bulk: A sends as fast as its socket takes the data, B reads and drops it.
    let total = params.bulk_mib << 20;
    let (a_frames, b_frames) = (pair.wire.a_to_b.sent, pair.wire.b_to_a.sent);
    let payload = vec![0xa5u8; 16 << 10];
    let (mut sent, mut got) = (0usize, 0usize);
    let cpu0 = cpu_seconds();
    let t0 = clock.now();
    while got < total {
        let a = pair.a_socket();
        while sent < total {
            let n = payload.len().min(total - sent);
            let k = a.send_slice(&payload[..n]).expect("send");
            if k == 0 {
                break;
            }
            sent += k;
        }
        pair.poll_both();
        let b = pair.b_socket();
        loop {
            // Read in place and drop: at most two slices (the ring buffer wraps).
            let n = b.recv(|data| (data.len(), data.len())).expect("recv");
            if n == 0 {
                break;
            }
            got += n;
        }
        pair.poll_b(smol_now(clock));
    }
    run.bulk_secs = (clock.now() - t0).as_secs_f64();
    run.bulk_cpu_secs = cpu0.zip(cpu_seconds()).map(|(c0, c1)| c1 - c0);
    assert_eq!(got, total, "B received a different byte count");
    run.bulk_bytes = total as u64;
    let a_frames = pair.wire.a_to_b.sent - a_frames;
    run.details.push(format!(
        "bulk: A sent {} frames, B sent {} ({} B per data frame)",
        a_frames,
        pair.wire.b_to_a.sent - b_frames,
        total as u64 / a_frames.max(1)
    ));
    run
}
