//! The stack: owns the device and the sockets, and moves frames between them on `poll`.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddrV4;
use std::task::Waker;

use bypass_devices::{Device, FrameOffload};
use bypass_runtime::{Buffer, Instant, Sga};
use bypass_wire::{
    Checksum, ChecksumCapabilities, EthernetAddress, IpProtocol, Ipv4Address, Ipv4Cidr, TcpPacket,
    TcpRepr, TcpSeqNumber, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, TCP_MAX_HEADER_LEN,
};

use crate::arp::{self, ArpCache, ArpConfig};
use crate::error::{Error, Result};
use crate::ethernet::{self, Payload};
use crate::iface::Iface;
use crate::socket::{Interest, SocketHandle, Wakers};
use crate::stats::{Layer, Stats};
use crate::tcp::conn::{Endpoint, Open, Tcb};
use crate::tcp::{self, isn, TcpConfig, TcpState};
use crate::udp::{self, UdpSocket};
use crate::{icmp, ipv4};

/// Everything a [`Stack`] is configured with.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// Our address and subnet.
    pub ipv4: Ipv4Cidr,
    /// Where datagrams outside the subnet go.
    pub gateway: Option<Ipv4Address>,
    pub arp: ArpConfig,
    /// Neighbours known in advance (never expire, never asked for).
    pub static_arp: Vec<(Ipv4Address, EthernetAddress)>,
    pub tcp: TcpConfig,
    /// Most sockets (listeners, connections, including those in TIME-WAIT, UDP) at once.
    pub max_sockets: usize,
    /// Datagrams waiting per UDP socket.
    pub udp_queue: usize,
    /// Key of the ISN hash (RFC 6528), the timestamp offsets and the demultiplexing hash.
    /// `None` draws one from the operating system's randomness; set it for a reproducible run.
    pub secret: Option<[u8; 16]>,
    /// Frames per `rx_burst`.
    pub burst: usize,
    /// Frames waiting for the device before more are dropped.
    pub tx_queue: usize,
    /// Ports for connections without an explicit local port.
    pub ephemeral_ports: std::ops::RangeInclusive<u16>,
}

impl StackConfig {
    /// A configuration with defaults for everything but the address.
    pub fn new(ipv4: Ipv4Cidr) -> StackConfig {
        StackConfig {
            ipv4,
            gateway: None,
            arp: ArpConfig::default(),
            static_arp: Vec::new(),
            tcp: TcpConfig::default(),
            max_sockets: 1024,
            udp_queue: 256,
            secret: None,
            burst: 32,
            tx_queue: 4096,
            ephemeral_ports: 49152..=65535,
        }
    }
}

/// A listening socket (RFC 9293 LISTEN): pending and completed handshakes.
struct Listener {
    port: u16,
    backlog: usize,
    /// Connections in SYN-RECEIVED.
    syn_pending: usize,
    /// Established connections waiting for `tcp_accept`.
    accept_queue: VecDeque<SocketHandle>,
    wakers: Wakers,
}

enum Socket {
    Tcp(Box<Tcb>),
    Listener(Listener),
    Udp(UdpSocket),
}

struct Slot {
    generation: u32,
    socket: Option<Socket>,
    /// Queued in `dirty`.
    dirty: bool,
    /// Deadline of this slot's live entry in the timer queue (`FAR_FUTURE`: none).
    timer_at: Instant,
}

/// An entry of the timer queue: when, which slot (and which generation of it). Ordered so
/// that the queue, a max-heap, pops the earliest first.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TimerEntry {
    at: Instant,
    index: u32,
    generation: u32,
}

impl Ord for TimerEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .at
            .cmp(&self.at)
            .then(other.index.cmp(&self.index))
            .then(other.generation.cmp(&self.generation))
    }
}

impl PartialOrd for TimerEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Key of a connection: our port, the peer's address and port, packed into one word so that
/// hashing it is one multiply-xorshift round.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ConnKey(u64);

impl ConnKey {
    #[inline]
    fn new(local_port: u16, remote_addr: Ipv4Address, remote_port: u16) -> ConnKey {
        ConnKey(
            (local_port as u64) << 48 | (remote_addr.to_bits() as u64) << 16 | remote_port as u64,
        )
    }
}

impl std::hash::Hash for ConnKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0)
    }
}

/// A multiply-xorshift hash keyed by the stack's secret: cheap enough for every packet, and
/// a peer cannot aim collisions at a table whose key it does not know.
#[derive(Clone, Copy)]
struct KeyedHash {
    key: u64,
}

struct KeyedHasher {
    state: u64,
}

impl BuildHasher for KeyedHash {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { state: self.key }
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.state = (self.state.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        let mut z = self.state;
        z = (z ^ (z >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^ (z >> 29)
    }
}

/// The user-space TCP/UDP/IPv4/ARP stack over one [`Device`].
///
/// Sans-I/O: nothing happens but in [`Stack::poll`], which takes the time as an argument, and
/// in the socket calls. [`Stack::poll_at`] says when `poll` must run again at the latest.
pub struct Stack<D: Device> {
    device: D,
    iface: Iface,
    tcp_cfg: TcpConfig,
    max_sockets: usize,
    udp_queue: usize,
    burst: usize,
    ephemeral: std::ops::RangeInclusive<u16>,
    next_ephemeral: u16,
    secret: [u8; 16],
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    conns: HashMap<ConnKey, u32, KeyedHash>,
    listeners: HashMap<u16, u32, KeyedHash>,
    udp_ports: HashMap<u16, u32, KeyedHash>,
    rx_batch: Vec<Buffer>,
    /// With frame offloads: the offload of each frame of `rx_batch`.
    rx_offloads: Vec<FrameOffload>,
    /// What to verify of a frame whose transport checksum the device vouched for
    /// ([`FrameOffload::checksum_trusted`]): the interface's checksums less TCP's and UDP's.
    trusted_caps: ChecksumCapabilities,
    dirty: Vec<u32>,
    /// No timer is due before this.
    timer_hint: Instant,
    /// The connections' earliest deadlines. A connection has one live entry, pushed when its
    /// deadline moves earlier than the one queued (a later deadline waits for the queued entry
    /// to pop and is queued again then); entries of freed slots and overtaken ones are
    /// skipped when they pop. Bounded: rebuilt from the connections when it outgrows
    /// `timer_limit`.
    timers: BinaryHeap<TimerEntry>,
    timer_limit: usize,
    /// Slots whose timer entry popped, reused by every timer run.
    timers_due: Vec<u32>,
}

/// The header fields of a parsed segment, without its payload (which the frame carries).
fn header_only(r: &TcpRepr) -> TcpRepr<'static> {
    TcpRepr {
        src_port: r.src_port,
        dst_port: r.dst_port,
        flags: r.flags,
        seq_number: r.seq_number,
        ack_number: r.ack_number,
        window_len: r.window_len,
        window_scale: r.window_scale,
        max_seg_size: r.max_seg_size,
        sack_permitted: r.sack_permitted,
        sack_ranges: r.sack_ranges,
        timestamp: r.timestamp,
        payload: &[],
    }
}

/// The connection named by `h`, if the application holds it.
fn app_tcb(slots: &mut [Slot], h: SocketHandle) -> Result<&mut Tcb> {
    match slots.get_mut(h.index as usize) {
        Some(Slot {
            generation,
            socket: Some(s),
            ..
        }) if *generation == h.generation => match s {
            Socket::Tcp(t) if t.app_owned => Ok(t),
            Socket::Tcp(_) => Err(Error::InvalidHandle),
            _ => Err(Error::WrongSocketKind),
        },
        _ => Err(Error::InvalidHandle),
    }
}

fn random_secret() -> [u8; 16] {
    use std::collections::hash_map::RandomState;
    let a = RandomState::new().build_hasher().finish();
    let b = RandomState::new().build_hasher().finish();
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&a.to_le_bytes());
    s[8..].copy_from_slice(&b.to_le_bytes());
    s
}

impl<D: Device> Stack<D> {
    /// A stack on `device` with `config`.
    pub fn new(device: D, config: StackConfig) -> Stack<D> {
        let caps = device.caps();
        let mtu = caps.mtu;
        // What the device offloads (IPv4, TCP and UDP checksums) software leaves alone; ICMP
        // checksums are always software's.
        let rx = if caps.rx_checksum_offload {
            bypass_wire::Checksum::Tx
        } else {
            bypass_wire::Checksum::Both
        };
        let offloaded = if caps.tx_checksum_offload {
            match rx {
                bypass_wire::Checksum::Tx => bypass_wire::Checksum::None,
                _ => bypass_wire::Checksum::Rx,
            }
        } else {
            rx
        };
        let checksums = ChecksumCapabilities {
            ipv4: offloaded,
            udp: offloaded,
            tcp: offloaded,
            icmpv4: bypass_wire::Checksum::Both,
        };
        let secret = config.secret.unwrap_or_else(random_secret);
        let mut tcp_cfg = config.tcp.clone();
        // The MSS must fit the link with IPv4 and TCP headers (RFC 9293 §3.7.1) and a frame
        // buffer with room for the largest TCP header.
        let pool = device.pool().clone();
        let frame_room = pool
            .data_capacity()
            .saturating_sub(ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 60);
        let link_mss = mtu.saturating_sub(IPV4_HEADER_LEN + 20);
        tcp_cfg.mss = (tcp_cfg.mss as usize).min(link_mss).min(frame_room).max(64) as u16;
        // Windows beyond 2^30 bytes cannot be expressed (RFC 7323 §2.3: a shift of at most
        // 14 on a 16-bit field), and sequence arithmetic needs them far below 2^31.
        tcp_cfg.recv_buffer = tcp_cfg.recv_buffer.clamp(1, 1 << 30);
        tcp_cfg.send_buffer = tcp_cfg.send_buffer.clamp(1, 1 << 30);
        tcp_cfg.max_out_of_order_pieces = tcp_cfg.max_out_of_order_pieces.max(1);
        assert!(
            pool.headroom() >= ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 60,
            "the device's buffer pool has {} bytes of headroom; the stack needs {} for its \
             headers: configure the pool with more headroom",
            pool.headroom(),
            ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 60
        );
        // TCP segmentation offload: segments of up to what the device cuts and a large chunk
        // holds (with room for the largest TCP header), their headers in the chunk's headroom.
        let large_pool = device
            .large_frame_pool()
            .filter(|_| caps.frame_offloads && caps.tcp_segmentation_max > mtu)
            .cloned();
        let tcp_large_payload_max = match &large_pool {
            Some(large) => {
                assert!(
                    large.headroom() >= ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 60,
                    "the device's large-frame pool has {} bytes of headroom; the stack needs \
                     {} for its headers: configure it with more headroom",
                    large.headroom(),
                    ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + 60
                );
                (caps.tcp_segmentation_max - IPV4_HEADER_LEN - TCP_MAX_HEADER_LEN)
                    .min(large.data_capacity())
            }
            None => 0,
        };
        let unverified = |c: Checksum| match c {
            Checksum::Both | Checksum::Tx => Checksum::Tx,
            Checksum::Rx | Checksum::None => Checksum::None,
        };
        let trusted_caps = ChecksumCapabilities {
            tcp: unverified(checksums.tcp),
            udp: unverified(checksums.udp),
            ..checksums
        };
        let key = u64::from_le_bytes(secret[..8].try_into().expect("8 bytes"));
        let hasher = KeyedHash { key };
        let mut arp = ArpCache::new(config.arp.clone());
        for (ip, mac) in &config.static_arp {
            let _ = arp.insert_static(*ip, *mac);
        }
        let span = config
            .ephemeral_ports
            .end()
            .saturating_sub(*config.ephemeral_ports.start());
        let start = *config.ephemeral_ports.start() + (key % (span as u64 + 1)) as u16;
        Stack {
            iface: Iface {
                mac: EthernetAddress(device.mac()),
                cidr: config.ipv4,
                gateway: config.gateway,
                mtu,
                caps: checksums,
                pool,
                frame_offloads: caps.frame_offloads,
                tx_offloads: Vec::with_capacity(if caps.frame_offloads {
                    config.tx_queue.min(4096)
                } else {
                    0
                }),
                large_pool,
                tcp_large_payload_max,
                arp,
                tx: Vec::with_capacity(config.tx_queue.min(4096)),
                tx_limit: config.tx_queue,
                stats: Stats::default(),
                now: Instant::ZERO,
                challenge_window: Instant::ZERO,
                challenge_count: 0,
                challenge_limit: tcp_cfg.challenge_ack_limit,
                arp_hint: Instant::FAR_FUTURE,
            },
            device,
            tcp_cfg,
            max_sockets: config.max_sockets,
            udp_queue: config.udp_queue,
            burst: config.burst.max(1),
            ephemeral: config.ephemeral_ports,
            next_ephemeral: start,
            secret,
            slots: Vec::with_capacity(config.max_sockets),
            free: Vec::new(),
            live: 0,
            conns: HashMap::with_capacity_and_hasher(config.max_sockets, hasher),
            listeners: HashMap::with_capacity_and_hasher(64, hasher),
            udp_ports: HashMap::with_capacity_and_hasher(64, hasher),
            rx_batch: Vec::with_capacity(config.burst.max(1)),
            rx_offloads: Vec::with_capacity(config.burst.max(1)),
            trusted_caps,
            dirty: Vec::with_capacity(config.max_sockets),
            timer_hint: Instant::FAR_FUTURE,
            timers: BinaryHeap::with_capacity(2 * config.max_sockets + 16),
            timer_limit: 2 * config.max_sockets + 16,
            timers_due: Vec::with_capacity(config.max_sockets),
        }
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn stats(&self) -> &Stats {
        &self.iface.stats
    }

    pub fn ipv4_addr(&self) -> Ipv4Address {
        self.iface.addr()
    }

    pub fn mac(&self) -> EthernetAddress {
        self.iface.mac
    }

    /// The TCP configuration in force (the MSS clamped to the link).
    pub fn tcp_config(&self) -> &TcpConfig {
        &self.tcp_cfg
    }

    /// Adds a permanent neighbour entry; packets waiting for it go out at the next poll.
    /// Fails with `InvalidArgument` if every cache slot already holds a static entry (raise
    /// [`ArpConfig::cache_size`]).
    pub fn add_static_arp(&mut self, ip: Ipv4Address, mac: EthernetAddress) -> Result<()> {
        match self.iface.arp.insert_static(ip, mac) {
            Ok(waiting) => {
                self.iface.release_waiting(waiting, mac);
                Ok(())
            }
            Err(()) => Err(Error::InvalidArgument),
        }
    }

    /// Sockets open now (connections in TIME-WAIT included).
    pub fn socket_count(&self) -> usize {
        self.live
    }

    // ------------------------------------------------------------------ poll

    /// Receives what the device has, runs due timers, sends what is ready. Returns whether
    /// anything happened.
    pub fn poll(&mut self, now: Instant) -> bool {
        let progress = self.poll_input(now);
        self.flush_dirty();
        self.transmit();
        self.take_arp_hint();
        progress
    }

    /// Receives what the device has and runs due timers, as [`Stack::poll`] does, but leaves
    /// what that calls for (acknowledgments, window updates, segments an acknowledgment let
    /// out) queued for the next [`Stack::flush`] or poll, unless a full burst arrived and more
    /// may follow. A caller that hands the received data to the application and flushes after
    /// the application's turn lets an acknowledgment ride on its reply instead of going out in
    /// a frame of its own. Returns whether anything happened or waits to be sent.
    pub fn poll_input(&mut self, now: Instant) -> bool {
        debug_assert!(now >= self.iface.now, "time went backwards");
        self.iface.now = now;
        let mut progress = false;
        loop {
            let n = if self.iface.frame_offloads {
                let n = self.device.rx_burst_offload(
                    &mut self.rx_batch,
                    &mut self.rx_offloads,
                    self.burst,
                );
                debug_assert_eq!(self.rx_offloads.len(), self.rx_batch.len(), "one per frame");
                self.rx_offloads.reverse();
                n
            } else {
                self.device.rx_burst(&mut self.rx_batch, self.burst)
            };
            // In order, by popping from the back of the reversed batch (cheaper than a drain).
            self.rx_batch.reverse();
            while let Some(frame) = self.rx_batch.pop() {
                // (Without frame offloads `rx_offloads` stays empty.)
                let trusted = self.rx_offloads.pop().is_some_and(|o| o.checksum_trusted());
                self.receive(frame, trusted);
            }
            if n == 0 {
                break;
            }
            progress = true;
            if n < self.burst {
                break;
            }
            self.flush_dirty();
            self.transmit();
        }
        if now >= self.timer_hint {
            self.run_timers();
            progress = true;
        }
        progress |= !self.dirty.is_empty() || !self.iface.tx.is_empty();
        self.take_arp_hint();
        progress
    }

    /// Merges the earliest ARP retry the interface scheduled into the timer deadline.
    fn take_arp_hint(&mut self) {
        self.timer_hint = self.timer_hint.min(self.iface.arp_hint);
        self.iface.arp_hint = Instant::FAR_FUTURE;
    }

    /// When [`Stack::poll`] must run next at the latest: `Some(Instant::ZERO)` if there is
    /// work now, `None` if nothing waits on time.
    pub fn poll_at(&self) -> Option<Instant> {
        if !self.dirty.is_empty() || !self.iface.tx.is_empty() {
            return Some(Instant::ZERO);
        }
        let t = self.timer_hint.min(self.iface.arp_hint);
        (t != Instant::FAR_FUTURE).then_some(t)
    }

    /// Sends what the sockets have queued since the last poll (segments of connections written
    /// to, frames waiting for the device) without receiving or running timers: a caller that
    /// just queued a message puts it on the wire now instead of at its next poll.
    pub fn flush(&mut self) {
        if self.dirty.is_empty() && self.iface.tx.is_empty() {
            return;
        }
        self.flush_dirty();
        self.transmit();
    }

    fn transmit(&mut self) {
        if self.iface.tx.is_empty() {
            return;
        }
        if self.iface.frame_offloads {
            self.device
                .tx_burst_offload(&mut self.iface.tx, &mut self.iface.tx_offloads);
        } else {
            self.device.tx_burst(&mut self.iface.tx);
        }
        // Frames the device did not take wait for the next poll (bounded by tx_limit).
    }

    /// Runs the timers due now: only the connections whose entries reached the front of the
    /// timer queue are looked at, not every connection.
    fn run_timers(&mut self) {
        let now = self.iface.now;
        self.iface.poll_arp();
        let mut due = std::mem::take(&mut self.timers_due);
        while let Some(e) = self.timers.peek().copied() {
            if e.at > now {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[e.index as usize];
            if slot.generation == e.generation && slot.timer_at == e.at {
                slot.timer_at = Instant::FAR_FUTURE;
                due.push(e.index);
            }
        }
        for &index in &due {
            let i = index as usize;
            let Some(Socket::Tcp(tcb)) = &mut self.slots[i].socket else {
                continue;
            };
            if tcb.poll_at().is_some_and(|t| t <= now) {
                let before = tcb.state;
                tcb.on_timer(&mut self.iface, &self.tcp_cfg);
                self.mark_dirty(index);
                self.after_event(index, before);
            }
            self.schedule(index);
        }
        due.clear();
        self.timers_due = due;
        let arp = self.iface.arp.poll_at().unwrap_or(Instant::FAR_FUTURE);
        let next = self.timers.peek().map_or(Instant::FAR_FUTURE, |e| e.at);
        self.timer_hint = arp.min(next);
    }

    /// Queues the connection in slot `index` for its earliest deadline, if that is earlier
    /// than the one it is queued for.
    fn schedule(&mut self, index: u32) {
        let Some(Socket::Tcp(tcb)) = &self.slots[index as usize].socket else {
            return;
        };
        let at = tcb.poll_at();
        self.schedule_at(index, at);
    }

    /// [`Stack::schedule`] for a deadline the caller has at hand.
    #[inline]
    fn schedule_at(&mut self, index: u32, at: Option<Instant>) {
        let Some(at) = at else {
            return;
        };
        self.timer_hint = self.timer_hint.min(at);
        if at < self.slots[index as usize].timer_at {
            self.push_timer(index, at);
        }
    }

    #[inline(never)]
    fn push_timer(&mut self, index: u32, at: Instant) {
        let slot = &mut self.slots[index as usize];
        slot.timer_at = at;
        let entry = TimerEntry {
            at,
            index,
            generation: slot.generation,
        };
        if self.timers.len() >= self.timer_limit {
            // (The rebuilt queue holds this connection's deadline too.)
            self.rebuild_timers();
            return;
        }
        self.timers.push(entry);
    }

    /// Drops every overtaken entry: one entry per connection with a deadline.
    fn rebuild_timers(&mut self) {
        self.timers.clear();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            slot.timer_at = Instant::FAR_FUTURE;
            if let Some(Socket::Tcp(tcb)) = &slot.socket {
                if let Some(at) = tcb.poll_at() {
                    slot.timer_at = at;
                    self.timers.push(TimerEntry {
                        at,
                        index: i as u32,
                        generation: slot.generation,
                    });
                }
            }
        }
    }

    fn mark_dirty(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(index);
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(index) = self.dirty.pop() {
            let slot = &mut self.slots[index as usize];
            slot.dirty = false;
            let Some(Socket::Tcp(tcb)) = &mut slot.socket else {
                continue;
            };
            let before = tcb.state;
            tcb.output(&mut self.iface, &self.tcp_cfg);
            if tcb.state != before || tcb.state == TcpState::Closed {
                self.after_event(index, before);
            } else {
                let at = tcb.poll_at();
                self.schedule_at(index, at);
            }
        }
    }

    /// Follows a connection's state change: hands a finished handshake to its listener and
    /// frees a closed connection nobody holds.
    fn after_event(&mut self, index: u32, before: TcpState) {
        let generation = self.slots[index as usize].generation;
        let Some(Socket::Tcp(tcb)) = &mut self.slots[index as usize].socket else {
            return;
        };
        let state = tcb.state;
        self.schedule(index);
        let Some(Socket::Tcp(tcb)) = &mut self.slots[index as usize].socket else {
            return;
        };
        if before == TcpState::SynReceived && state != TcpState::SynReceived {
            if let Some(lh) = tcb.listener.take() {
                let handle = SocketHandle { index, generation };
                let established = state != TcpState::Closed;
                let mut refused = false;
                match self.slots.get_mut(lh.index as usize) {
                    Some(Slot {
                        generation: g,
                        socket: Some(Socket::Listener(l)),
                        ..
                    }) if *g == lh.generation => {
                        l.syn_pending = l.syn_pending.saturating_sub(1);
                        if established {
                            if l.accept_queue.len() < l.backlog {
                                l.accept_queue.push_back(handle);
                                l.wakers.wake(Interest::Acceptable);
                            } else {
                                refused = true;
                            }
                        }
                    }
                    _ => refused = established,
                }
                let Some(Socket::Tcp(tcb)) = &mut self.slots[index as usize].socket else {
                    return;
                };
                if refused {
                    self.iface.stats.tcp_backlog_full += 1;
                    tcb.abort(&mut self.iface);
                } else if established {
                    // The accept queue holds it for the application.
                    tcb.app_owned = true;
                }
            }
        }
        let Some(Socket::Tcp(tcb)) = &self.slots[index as usize].socket else {
            return;
        };
        if tcb.state == TcpState::Closed {
            let key = ConnKey::new(tcb.local.1, tcb.remote.0, tcb.remote.1);
            if self.conns.get(&key) == Some(&index) {
                self.conns.remove(&key);
            }
            if !tcb.app_owned {
                self.free_slot(index);
            }
        }
    }

    fn alloc_slot(&mut self, socket: Socket) -> Result<SocketHandle> {
        if self.live >= self.max_sockets {
            return Err(Error::TooManySockets);
        }
        self.live += 1;
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            debug_assert!(slot.socket.is_none());
            slot.socket = Some(socket);
            return Ok(SocketHandle {
                index,
                generation: slot.generation,
            });
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot {
            generation: 0,
            socket: Some(socket),
            dirty: false,
            timer_at: Instant::FAR_FUTURE,
        });
        Ok(SocketHandle {
            index,
            generation: 0,
        })
    }

    fn free_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if let Some(mut s) = slot.socket.take() {
            match &mut s {
                Socket::Tcp(t) => t.wakers.wake_all(),
                Socket::Listener(l) => l.wakers.wake_all(),
                Socket::Udp(u) => u.wakers.wake_all(),
            }
            slot.generation = slot.generation.wrapping_add(1);
            slot.timer_at = Instant::FAR_FUTURE;
            self.free.push(index);
            self.live -= 1;
        }
    }

    fn socket(&mut self, h: SocketHandle) -> Result<&mut Socket> {
        match self.slots.get_mut(h.index as usize) {
            Some(Slot {
                generation,
                socket: Some(s),
                ..
            }) if *generation == h.generation => Ok(s),
            _ => Err(Error::InvalidHandle),
        }
    }

    fn tcb(&mut self, h: SocketHandle) -> Result<&mut Tcb> {
        app_tcb(&mut self.slots, h)
    }

    // ------------------------------------------------------------------ receive

    /// One received frame; `checksum_trusted`: its TCP or UDP checksum need not be verified
    /// (the device says so, [`FrameOffload::checksum_trusted`]).
    fn receive(&mut self, frame: Buffer, checksum_trusted: bool) {
        self.iface.stats.rx_frames += 1;
        match ethernet::receive(&mut self.iface, &frame) {
            Some(Payload::Arp) => arp::receive(&mut self.iface, &frame[ETHERNET_HEADER_LEN..]),
            Some(Payload::Ipv4) => self.receive_ipv4(frame, checksum_trusted),
            None => {}
        }
    }

    fn receive_ipv4(&mut self, frame: Buffer, checksum_trusted: bool) {
        let Some((ip, range)) = ipv4::receive(&mut self.iface, &frame[ETHERNET_HEADER_LEN..])
        else {
            return;
        };
        let start = ETHERNET_HEADER_LEN + range.start;
        let end = ETHERNET_HEADER_LEN + range.end;
        let caps = if checksum_trusted {
            self.trusted_caps
        } else {
            self.iface.caps
        };
        match ip.next_header {
            IpProtocol::Tcp => self.receive_tcp(&ip, frame, start, end, &caps),
            IpProtocol::Icmp => icmp::receive(&mut self.iface, &ip, &frame[start..end]),
            IpProtocol::Udp => self.receive_udp(&ip, &frame, start, end, &caps),
            _ => self.iface.stats.ipv4_unknown_protocol += 1,
        }
    }

    fn receive_udp(
        &mut self,
        ip: &bypass_wire::Ipv4Repr,
        frame: &Buffer,
        start: usize,
        end: usize,
        caps: &ChecksumCapabilities,
    ) {
        let Some((repr, payload)) = udp::parse(&mut self.iface, ip, &frame[start..end], caps)
        else {
            return;
        };
        let Some(&index) = self.udp_ports.get(&repr.dst_port) else {
            self.iface.stats.udp_no_socket += 1;
            return;
        };
        let data = frame.slice(start + payload.start..start + payload.end);
        let from = SocketAddrV4::new(ip.src_addr.into(), repr.src_port);
        if let Some(Socket::Udp(u)) = &mut self.slots[index as usize].socket {
            u.deliver(&mut self.iface, data, from);
        }
    }

    /// A TCP segment in `frame[start..end]`, its checksum verified as `caps` says. The frame's
    /// handle becomes the segment's payload (no new handle on the chunk), so a connection can
    /// tell whether it holds the only one. The segment may be longer than the MSS (a large
    /// segment a device delivered whole): its payload is taken like any other.
    fn receive_tcp(
        &mut self,
        ip: &bypass_wire::Ipv4Repr,
        mut frame: Buffer,
        start: usize,
        end: usize,
        caps: &ChecksumCapabilities,
    ) {
        let parsed = match TcpPacket::new_checked(&frame[start..end]) {
            Ok(packet) => TcpRepr::parse(&packet, ip.src_addr, ip.dst_addr, caps),
            Err(e) => Err(e),
        };
        let (repr, payload_len) = match parsed {
            // The payload is carried by `frame` from here on; the header fields are copied
            // out so that the frame can move.
            Ok(r) => (header_only(&r), r.payload.len()),
            Err(e) => {
                self.iface.stats.parse_error(Layer::Tcp, e);
                return;
            }
        };
        self.iface.stats.tcp_rx_segments += 1;
        // TCP never talks to broadcast addresses (RFC 1122 §4.2.3.10).
        if ip.dst_addr != self.iface.addr() {
            self.iface.stats.ipv4_not_for_us += 1;
            return;
        }
        frame.advance(end - payload_len);
        frame.truncate(payload_len);
        let key = ConnKey::new(repr.dst_port, ip.src_addr, repr.src_port);

        if let Some(&index) = self.conns.get(&key) {
            if let Some(Socket::Tcp(tcb)) = &mut self.slots[index as usize].socket {
                let before = tcb.state;
                tcb.on_segment(&mut self.iface, &self.tcp_cfg, &repr, frame);
                let state = tcb.state;
                self.mark_dirty(index);
                // The output that follows (flush_dirty) takes the timer deadline in; what
                // remains is a change of state (a finished handshake, a closed connection).
                if state != before || state == TcpState::Closed {
                    self.after_event(index, before);
                }
                return;
            }
        }
        drop(frame);
        let local: Endpoint = (ip.dst_addr, repr.dst_port);
        let remote: Endpoint = (ip.src_addr, repr.src_port);
        let seg_len = payload_len + repr.flags.syn() as usize + repr.flags.fin() as usize;
        if let Some(&lindex) = self.listeners.get(&repr.dst_port) {
            self.listener_segment(lindex, &repr, local, remote);
            return;
        }
        // RFC 9293 §3.10.7.1: the connection does not exist.
        self.iface.stats.tcp_no_socket += 1;
        self.reset_for(&repr, seg_len, local, remote);
    }

    /// Answers a segment nobody takes with a RST (unless it is one).
    /// `seg_len` is the sequence space the segment occupies (data, SYN and FIN).
    fn reset_for(&mut self, repr: &TcpRepr, seg_len: usize, local: Endpoint, remote: Endpoint) {
        if repr.flags.rst() {
            return;
        }
        match repr.ack_number {
            // <SEQ=SEG.ACK><CTL=RST>
            Some(ack) => tcp::send_reset(&mut self.iface, local, remote, ack, None),
            // <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>
            None => {
                let ack = repr.seq_number + seg_len;
                tcp::send_reset(&mut self.iface, local, remote, TcpSeqNumber(0), Some(ack))
            }
        }
    }

    /// RFC 9293 §3.10.7.2: SEGMENT ARRIVES in LISTEN.
    fn listener_segment(&mut self, lindex: u32, repr: &TcpRepr, local: Endpoint, remote: Endpoint) {
        let f = repr.flags;
        if f.rst() {
            return;
        }
        if f.ack() {
            self.iface.stats.tcp_no_socket += 1;
            // With ACK set, the RST takes its sequence number from SEG.ACK alone.
            self.reset_for(repr, 0, local, remote);
            return;
        }
        if !f.syn() {
            self.iface.stats.tcp_dropped_in_state += 1;
            return;
        }
        let lgen = self.slots[lindex as usize].generation;
        let syn_limit = self.tcp_cfg.syn_queue;
        let Some(Socket::Listener(l)) = &mut self.slots[lindex as usize].socket else {
            return;
        };
        if l.syn_pending >= syn_limit.min(l.backlog.max(1) * 2) || l.accept_queue.len() >= l.backlog
        {
            self.iface.stats.tcp_syn_queue_full += 1;
            return;
        }
        l.syn_pending += 1;
        let open = self.open_params(local, remote);
        let mut tcb = Tcb::accept_syn(&self.tcp_cfg, open, repr, self.iface.now);
        tcb.listener = Some(SocketHandle {
            index: lindex,
            generation: lgen,
        });
        match self.alloc_slot(Socket::Tcp(Box::new(tcb))) {
            Ok(h) => {
                self.conns
                    .insert(ConnKey::new(local.1, remote.0, remote.1), h.index);
                self.mark_dirty(h.index);
            }
            Err(_) => {
                if let Some(Socket::Listener(l)) = &mut self.slots[lindex as usize].socket {
                    l.syn_pending -= 1;
                }
                self.iface.stats.tcp_syn_queue_full += 1;
            }
        }
    }

    fn open_params(&self, local: Endpoint, remote: Endpoint) -> Open {
        Open {
            local,
            remote,
            iss: isn::initial_sequence_number(&self.secret, local, remote, self.iface.now),
            ts_offset: isn::timestamp_offset(&self.secret, local, remote),
            mss: self.tcp_cfg.mss as usize,
        }
    }

    // ------------------------------------------------------------------ TCP API

    /// Listens on `local` (its address must be ours or unspecified) with at most `backlog`
    /// established connections waiting for [`Stack::tcp_accept`].
    pub fn tcp_listen(&mut self, local: SocketAddrV4, backlog: usize) -> Result<SocketHandle> {
        self.check_local(local)?;
        if local.port() == 0 || backlog == 0 {
            return Err(Error::InvalidArgument);
        }
        if self.listeners.contains_key(&local.port()) {
            return Err(Error::AddressInUse);
        }
        let h = self.alloc_slot(Socket::Listener(Listener {
            port: local.port(),
            backlog,
            syn_pending: 0,
            accept_queue: VecDeque::with_capacity(backlog.min(1024)),
            wakers: Wakers::default(),
        }))?;
        self.listeners.insert(local.port(), h.index);
        Ok(h)
    }

    fn check_local(&self, local: SocketAddrV4) -> Result<()> {
        let ip: Ipv4Address = (*local.ip()).into();
        if !ip.is_unspecified() && ip != self.iface.addr() {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// An established connection from the listener's queue and its peer, `Ok(None)` if none.
    pub fn tcp_accept(
        &mut self,
        listener: SocketHandle,
    ) -> Result<Option<(SocketHandle, SocketAddrV4)>> {
        let l = match self.socket(listener)? {
            Socket::Listener(l) => l,
            _ => return Err(Error::WrongSocketKind),
        };
        let Some(h) = l.accept_queue.pop_front() else {
            return Ok(None);
        };
        let Some(Socket::Tcp(tcb)) = &self.slots[h.index as usize].socket else {
            return Err(Error::InvalidState);
        };
        let peer = SocketAddrV4::new(tcb.remote.0.into(), tcb.remote.1);
        Ok(Some((h, peer)))
    }

    /// Opens a connection to `remote` from `local_port` (an ephemeral port if `None`). The
    /// [`Interest::Connected`] waker fires when it is established or has failed.
    pub fn tcp_connect(
        &mut self,
        local_port: Option<u16>,
        remote: SocketAddrV4,
    ) -> Result<SocketHandle> {
        let rip: Ipv4Address = (*remote.ip()).into();
        if remote.port() == 0
            || !rip.is_unicast()
            || self.iface.cidr.broadcast() == Some(rip)
            || rip == self.iface.addr()
        {
            return Err(Error::InvalidArgument);
        }
        if self.iface.next_hop(rip).is_none() {
            return Err(Error::Unreachable);
        }
        let port = match local_port {
            Some(0) => return Err(Error::InvalidArgument),
            Some(p) => {
                if self
                    .conns
                    .contains_key(&ConnKey::new(p, rip, remote.port()))
                {
                    return Err(Error::AddressInUse);
                }
                p
            }
            None => self.pick_ephemeral(rip, remote.port())?,
        };
        let local = (self.iface.addr(), port);
        let open = self.open_params(local, (rip, remote.port()));
        let tcb = Tcb::connect(&self.tcp_cfg, open, self.iface.now);
        let h = self.alloc_slot(Socket::Tcp(Box::new(tcb)))?;
        self.conns
            .insert(ConnKey::new(port, rip, remote.port()), h.index);
        self.mark_dirty(h.index);
        Ok(h)
    }

    fn pick_ephemeral(&mut self, rip: Ipv4Address, rport: u16) -> Result<u16> {
        let (lo, hi) = (*self.ephemeral.start(), *self.ephemeral.end());
        let span = (hi - lo) as u32 + 1;
        for _ in 0..span {
            let p = self.next_ephemeral;
            self.next_ephemeral = if p >= hi { lo } else { p + 1 };
            if !self.conns.contains_key(&ConnKey::new(p, rip, rport))
                && !self.listeners.contains_key(&p)
            {
                return Ok(p);
            }
        }
        Err(Error::NoPortsAvailable)
    }

    /// Queues as much of `data` as fits in the send buffer (no copy: the buffer is shared).
    /// Returns the bytes taken; `WouldBlock` if none fit.
    pub fn tcp_send(&mut self, h: SocketHandle, data: &Buffer) -> Result<usize> {
        let n = self.tcb(h)?.send(data)?;
        self.mark_dirty(h.index);
        Ok(n)
    }

    /// Like [`Stack::tcp_send`] for every segment of `sga` in order; stops at the first that
    /// does not fit whole.
    pub fn tcp_send_sga(&mut self, h: SocketHandle, sga: &Sga) -> Result<usize> {
        let tcb = self.tcb(h)?;
        let mut total = 0;
        for seg in sga.segments() {
            match tcb.send(seg) {
                Ok(n) => {
                    total += n;
                    if n < seg.len() {
                        break;
                    }
                }
                Err(Error::WouldBlock) if total > 0 => break,
                Err(e) => return Err(e),
            }
        }
        self.mark_dirty(h.index);
        Ok(total)
    }

    /// The next received bytes, zero-copy where possible. `Ok(None)`: nothing yet.
    /// `Err(EndOfStream)`: the peer closed and everything was read. Other errors say why the
    /// connection failed.
    pub fn tcp_recv(&mut self, h: SocketHandle) -> Result<Option<Buffer>> {
        self.tcp_recv_max(h, usize::MAX)
    }

    /// The received bytes queued now, up to `max` (at least 1), as one Sga (zero-copy where
    /// possible): what [`Stack::tcp_recv`] would return over several calls. `Ok(None)`:
    /// nothing yet. End of stream and errors are returned as by [`Stack::tcp_recv`] once
    /// nothing is left before them.
    pub fn tcp_recv_sga(&mut self, h: SocketHandle, max: usize) -> Result<Option<Sga>> {
        let tcb = self.tcb(h)?;
        let r = tcb.recv(max.max(1)).map(|first| {
            first.map(|first| {
                let mut taken = first.len();
                let mut sga = Sga::from(first);
                while taken < max && tcb.recv_queued() > 0 {
                    match tcb.recv(max - taken) {
                        Ok(Some(piece)) => {
                            taken += piece.len();
                            sga.push(piece);
                        }
                        // End of stream or an error: the next call reports it.
                        _ => break,
                    }
                }
                sga
            })
        });
        if tcb.wants_output() {
            self.mark_dirty(h.index);
        }
        r
    }

    /// Like [`Stack::tcp_recv`], at most `max` bytes.
    pub fn tcp_recv_max(&mut self, h: SocketHandle, max: usize) -> Result<Option<Buffer>> {
        let tcb = self.tcb(h)?;
        let r = tcb.recv(max.max(1));
        if tcb.wants_output() {
            self.mark_dirty(h.index);
        }
        r
    }

    /// Closes the sending side: a FIN follows the queued data (half-close; receiving goes on).
    pub fn tcp_shutdown(&mut self, h: SocketHandle) -> Result<()> {
        let tcb = self.tcb(h)?;
        let before = tcb.state;
        tcb.shutdown()?;
        self.mark_dirty(h.index);
        self.after_event(h.index, before);
        Ok(())
    }

    /// Closes gracefully and gives the handle up: queued data and the FIN are still sent.
    /// If received data was never read, the connection is reset instead (RFC 2525 §2.17).
    pub fn tcp_close(&mut self, h: SocketHandle) -> Result<()> {
        let tcb = app_tcb(&mut self.slots, h)?;
        let before = tcb.state;
        if tcb.recv_queued() > 0 && tcb.state.is_synchronized() {
            tcb.abort(&mut self.iface);
        } else {
            let _ = tcb.shutdown();
        }
        tcb.release(&self.tcp_cfg, self.iface.now);
        self.mark_dirty(h.index);
        self.after_event(h.index, before);
        Ok(())
    }

    /// Resets the connection (RST) and gives the handle up.
    pub fn tcp_abort(&mut self, h: SocketHandle) -> Result<()> {
        let tcb = app_tcb(&mut self.slots, h)?;
        let before = tcb.state;
        tcb.abort(&mut self.iface);
        tcb.app_owned = false;
        self.after_event(h.index, before);
        self.transmit();
        Ok(())
    }

    /// Closes a listener: connections not yet accepted are reset.
    pub fn tcp_close_listener(&mut self, h: SocketHandle) -> Result<()> {
        let l = match self.socket(h)? {
            Socket::Listener(l) => l,
            _ => return Err(Error::WrongSocketKind),
        };
        let queued: Vec<SocketHandle> = l.accept_queue.drain(..).collect();
        let port = l.port;
        self.listeners.remove(&port);
        self.free_slot(h.index);
        for c in queued {
            if let Ok(tcb) = app_tcb(&mut self.slots, c) {
                let before = tcb.state;
                tcb.abort(&mut self.iface);
                tcb.app_owned = false;
                self.after_event(c.index, before);
            }
        }
        // Pending handshakes lose their listener and are reset when they complete.
        Ok(())
    }

    pub fn tcp_state(&mut self, h: SocketHandle) -> Result<TcpState> {
        Ok(self.tcb(h)?.state)
    }

    /// Why the connection failed, if it did.
    pub fn tcp_error(&mut self, h: SocketHandle) -> Result<Option<Error>> {
        Ok(self.tcb(h)?.error)
    }

    /// Bytes received on the connection and not yet read: [`TcpInfo::recv_queued`] without
    /// gathering the other counters.
    pub fn tcp_recv_queued(&mut self, h: SocketHandle) -> Result<usize> {
        Ok(self.tcb(h)?.recv_queued())
    }

    /// Counters of one connection.
    pub fn tcp_info(&mut self, h: SocketHandle) -> Result<TcpInfo> {
        Ok(self.tcb(h)?.info())
    }

    /// Every connection (those the application gave up included) with its peer and state:
    /// for diagnostics.
    pub fn tcp_connections(&self) -> Vec<(SocketAddrV4, SocketAddrV4, TcpInfo)> {
        self.slots
            .iter()
            .filter_map(|s| match &s.socket {
                Some(Socket::Tcp(t)) => Some((
                    SocketAddrV4::new(t.local.0.into(), t.local.1),
                    SocketAddrV4::new(t.remote.0.into(), t.remote.1),
                    t.info(),
                )),
                _ => None,
            })
            .collect()
    }

    // ------------------------------------------------------------------ UDP API

    /// Binds a UDP socket to `local` (our address or unspecified).
    pub fn udp_bind(&mut self, local: SocketAddrV4) -> Result<SocketHandle> {
        self.check_local(local)?;
        if local.port() == 0 {
            return Err(Error::InvalidArgument);
        }
        if self.udp_ports.contains_key(&local.port()) {
            return Err(Error::AddressInUse);
        }
        let h = self.alloc_slot(Socket::Udp(UdpSocket::new(local.port(), self.udp_queue)))?;
        self.udp_ports.insert(local.port(), h.index);
        Ok(h)
    }

    /// Sends one datagram; the frame goes out at the next poll.
    pub fn udp_send_to(&mut self, h: SocketHandle, to: SocketAddrV4, data: &[u8]) -> Result<usize> {
        let Self { slots, iface, .. } = self;
        let u = match slots.get_mut(h.index as usize) {
            Some(Slot {
                generation,
                socket: Some(Socket::Udp(u)),
                ..
            }) if *generation == h.generation => u,
            Some(Slot {
                generation,
                socket: Some(_),
                ..
            }) if *generation == h.generation => return Err(Error::WrongSocketKind),
            _ => return Err(Error::InvalidHandle),
        };
        u.send_to(iface, to, data)
    }

    /// The next datagram and its sender, `Ok(None)` if none waits.
    pub fn udp_recv_from(&mut self, h: SocketHandle) -> Result<Option<(Buffer, SocketAddrV4)>> {
        match self.socket(h)? {
            Socket::Udp(u) => Ok(u.recv()),
            _ => Err(Error::WrongSocketKind),
        }
    }

    pub fn udp_close(&mut self, h: SocketHandle) -> Result<()> {
        let port = match self.socket(h)? {
            Socket::Udp(u) => u.port,
            _ => return Err(Error::WrongSocketKind),
        };
        self.udp_ports.remove(&port);
        self.free_slot(h.index);
        Ok(())
    }

    // ------------------------------------------------------------------ readiness

    /// Registers `waker` to be woken when `interest` happens on the socket. One waker per
    /// interest (a new one replaces the old); it is woken once, then must be registered again.
    /// If the interest holds already, the waker is woken at once.
    pub fn register_waker(
        &mut self,
        h: SocketHandle,
        interest: Interest,
        waker: &Waker,
    ) -> Result<()> {
        let ready = self.is_ready(h, interest)?;
        if ready {
            waker.wake_by_ref();
            return Ok(());
        }
        match self.socket(h)? {
            Socket::Tcp(t) => t.register(interest, waker),
            Socket::Listener(l) => l.wakers.register(interest, waker),
            Socket::Udp(u) => u.wakers.register(interest, waker),
        }
        Ok(())
    }

    /// Whether `interest` holds now (an operation of that kind would make progress).
    pub fn is_ready(&mut self, h: SocketHandle, interest: Interest) -> Result<bool> {
        Ok(match self.socket(h)? {
            Socket::Tcp(t) => match interest {
                Interest::Readable => t.can_read(),
                Interest::Writable => {
                    t.error.is_some()
                        || (t.send_space() > 0
                            && matches!(t.state, TcpState::Established | TcpState::CloseWait))
                }
                Interest::Acceptable => false,
                Interest::Connected => {
                    t.state != TcpState::SynSent && t.state != TcpState::SynReceived
                }
                Interest::Closed => matches!(t.state, TcpState::Closed | TcpState::TimeWait),
            },
            Socket::Listener(l) => interest == Interest::Acceptable && !l.accept_queue.is_empty(),
            Socket::Udp(u) => match interest {
                Interest::Readable => u.can_read(),
                Interest::Writable => true,
                _ => false,
            },
        })
    }
}

pub use crate::tcp::conn::TcpInfo;
