//! A simulated wire: two or more [`SimPort`]s joined in memory, driven by a virtual clock, with
//! seeded faults.
//!
//! Every port is a [`Device`] with its own MAC address and [`BufferPool`]. A frame sent on one
//! port is switched by destination MAC to the port that owns it (broadcast, multicast and
//! unknown destinations go to every other port) and becomes receivable there once the clock has
//! passed its delivery time. On the way it meets the faults of the wire's [`SimConfig`]:
//!
//! - **loss**, **duplication** and **bit corruption**, each with a probability per frame;
//! - **delay** plus uniform **jitter**, and **reordering** (a frame held back by an extra delay
//!   while the ones behind it overtake it); without reordering a direction stays FIFO;
//! - a **bandwidth** limit per sending port (each frame takes its serialization time);
//! - **partition** and **heal** ([`SimWire::partition`]): frames sent while partitioned are lost.
//!
//! Frames in flight are bounded ([`SimConfig::max_in_flight`]): a full wire drops the frame
//! (counted in [`SimStats::overflow`]), like a switch with a full queue. Receive queues are
//! bounded too ([`SimConfig::rx_queue`]).
//!
//! Everything random comes from one [`SimRng`] seeded by [`SimConfig::seed`], and time only from
//! the [`Clock`], so a run replays exactly from its seed.
//!
//! Frames can be teed to a pcap file ([`SimConfig::pcap`], or the `BYPASS_PCAP` environment
//! variable naming a file) to read a failing run in Wireshark. Each frame is recorded once,
//! when it is sent, with the virtual time as its timestamp.

use std::cell::RefCell;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bypass_runtime::{Buffer, BufferPool, Clock, Instant, PoolConfig};

use crate::{Device, DeviceCaps, DeviceStats};

/// A small, fast, seedable PRNG (SplitMix64, Steele et al. 2014). Not for cryptography.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SimRng::below(0)");
        // Multiply-shift: bias below 2^-64 * n, irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "SimRng::range: lo > hi");
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (draws nothing when `p <= 0`, so a fault-free wire costs no
    /// random numbers).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// Faults and limits of a [`SimWire`]. `Default` is a perfect wire: no delay, no faults.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice of the wire.
    pub seed: u64,
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame is held back by [`SimConfig::reorder_delay`] so later frames
    /// overtake it.
    pub reorder: f64,
    /// Extra delay of a reordered frame.
    pub reorder_delay: Duration,
    /// Probability that one random bit of a frame is flipped.
    pub corrupt: f64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniform extra delay in `0..=jitter` per frame (order kept unless reordering).
    pub jitter: Duration,
    /// Bits per second per sending port; `None` is infinitely fast.
    pub bandwidth_bps: Option<u64>,
    /// Most frames in flight on the whole wire; more are dropped.
    pub max_in_flight: usize,
    /// Most frames waiting in a port's receive queue; more are dropped.
    pub rx_queue: usize,
    /// Frames per port pool.
    pub pool_chunks: usize,
    /// Link MTU reported by the ports.
    pub mtu: usize,
    /// Tee every sent frame to this pcap file. If `None`, the `BYPASS_PCAP` environment
    /// variable is used when set.
    pub pcap: Option<PathBuf>,
    /// The ports offload IPv4/TCP/UDP checksums ([`DeviceCaps`] `rx_checksum_offload` and
    /// `tx_checksum_offload`): a stack on them neither fills nor verifies those checksums.
    /// As a NIC that checks every frame it receives would, the wire then drops a frame it
    /// corrupts (counted in [`SimStats::corrupted`] and the port's `rx_dropped`) instead of
    /// delivering it. Frames travel, and are captured, with the checksums the sender left
    /// (zero), as a capture on a host with offload shows them.
    pub checksum_offload: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(2),
            corrupt: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            max_in_flight: 4096,
            rx_queue: 1024,
            pool_chunks: 4096,
            mtu: 1500,
            pcap: None,
            checksum_offload: false,
        }
    }
}

/// What the wire did to the frames it carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub corrupted: u64,
    /// Lost because the wire was partitioned.
    pub partitioned: u64,
    /// Dropped because [`SimConfig::max_in_flight`] frames were already in flight.
    pub overflow: u64,
    /// Dropped because the receiving port's queue was full.
    pub rx_overflow: u64,
    /// Dropped because no port owns the destination and none other exists.
    pub unroutable: u64,
}

struct InFlight {
    at: Instant,
    /// Tie-break: frames due at the same time arrive in the order they were sent.
    order: u64,
    port: usize,
    frame: Buffer,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed, so the max-heap pops the earliest frame.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

struct PortState {
    mac: [u8; 6],
    pool: BufferPool,
    rx: VecDeque<Buffer>,
    stats: DeviceStats,
    /// When this port's transmitter is free again (bandwidth limit).
    link_free_at: Instant,
    /// Latest delivery time scheduled from this port, per destination (FIFO per direction).
    last_delivery: Vec<Instant>,
}

struct WireState {
    clock: Clock,
    config: SimConfig,
    rng: SimRng,
    ports: Vec<PortState>,
    in_flight: BinaryHeap<InFlight>,
    order: u64,
    /// The latest time read from the clock (every time the wire used is at most this).
    last_now: Instant,
    partitioned: bool,
    stats: SimStats,
    pcap: Option<PcapWriter>,
}

/// The wire joining [`SimPort`]s. Cheap to clone (clones share the wire).
#[derive(Clone)]
pub struct SimWire {
    state: Rc<RefCell<WireState>>,
}

impl SimWire {
    /// A wire with no ports yet, reading time from `clock`.
    ///
    /// Fails if the pcap file cannot be created.
    pub fn new(clock: Clock, config: SimConfig) -> io::Result<SimWire> {
        let pcap_path = config
            .pcap
            .clone()
            .or_else(|| std::env::var_os("BYPASS_PCAP").map(PathBuf::from));
        let pcap = match pcap_path {
            Some(path) => Some(PcapWriter::create(&path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create pcap file {}: {e}", path.display()),
                )
            })?),
            None => None,
        };
        assert!(
            config.max_in_flight > 0 && config.rx_queue > 0,
            "wire limits must be positive"
        );
        let last_now = clock.now();
        Ok(SimWire {
            state: Rc::new(RefCell::new(WireState {
                clock,
                rng: SimRng::new(config.seed),
                config,
                ports: Vec::new(),
                last_now,
                in_flight: BinaryHeap::new(),
                order: 0,
                partitioned: false,
                stats: SimStats::default(),
                pcap,
            })),
        })
    }

    /// Plugs a new port with hardware address `mac` into the wire.
    ///
    /// Fails if its buffer pool cannot be mapped.
    pub fn port(&self, mac: [u8; 6]) -> io::Result<SimPort> {
        let mut s = self.state.borrow_mut();
        let pool = BufferPool::new(&PoolConfig::frames(s.config.pool_chunks))?;
        let now = s.clock.now();
        s.last_now = now;
        for p in &mut s.ports {
            p.last_delivery.push(now);
        }
        let n = s.ports.len() + 1;
        s.ports.push(PortState {
            mac,
            pool: pool.clone(),
            rx: VecDeque::new(),
            stats: DeviceStats::default(),
            link_free_at: now,
            last_delivery: vec![now; n],
        });
        Ok(SimPort {
            wire: self.clone(),
            index: n - 1,
            pool,
        })
    }

    /// Cuts the wire: every frame sent from now until [`SimWire::heal`] is lost. Frames already
    /// in flight still arrive.
    pub fn partition(&self) {
        self.state.borrow_mut().partitioned = true;
    }

    /// Joins the wire again after [`SimWire::partition`].
    pub fn heal(&self) {
        self.state.borrow_mut().partitioned = false;
    }

    pub fn is_partitioned(&self) -> bool {
        self.state.borrow().partitioned
    }

    /// Changes the loss probability from now on (e.g. to end a lossy phase of a test).
    pub fn set_loss(&self, loss: f64) {
        self.state.borrow_mut().config.loss = loss;
    }

    /// Turns every fault off from now on: no loss, duplication, reordering or corruption.
    /// Delay, jitter and bandwidth stay.
    pub fn calm(&self) {
        let mut s = self.state.borrow_mut();
        s.config.loss = 0.0;
        s.config.duplicate = 0.0;
        s.config.reorder = 0.0;
        s.config.corrupt = 0.0;
        s.partitioned = false;
    }

    /// When the next frame in flight arrives, if any (to advance a virtual clock to it).
    pub fn next_delivery(&self) -> Option<Instant> {
        self.state.borrow().in_flight.peek().map(|f| f.at)
    }

    /// Frames in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.borrow().in_flight.len()
    }

    pub fn stats(&self) -> SimStats {
        self.state.borrow().stats
    }

    /// Writes buffered pcap records to the file.
    pub fn flush_pcap(&self) -> io::Result<()> {
        match &mut self.state.borrow_mut().pcap {
            Some(p) => p.out.flush(),
            None => Ok(()),
        }
    }
}

impl WireState {
    /// Moves every frame due by now into its port's receive queue.
    fn deliver_due(&mut self) {
        if self.in_flight.is_empty() {
            return; // (and no clock read)
        }
        let now = self.clock.now();
        self.last_now = now;
        while self.in_flight.peek().is_some_and(|f| f.at <= now) {
            let f = self.in_flight.pop().expect("peeked");
            self.enqueue(f.port, f.frame);
        }
    }

    /// The time to send at. A wire that delivers at once (no delay, jitter, bandwidth limit or
    /// reordering, nothing in flight) and records nothing does not need it: the latest time
    /// read stands in for it (a clock read is a good part of a frame's cost here).
    fn send_time(&mut self) -> Instant {
        if !self.is_timeless() {
            self.last_now = self.clock.now();
        }
        self.last_now
    }

    fn is_timeless(&self) -> bool {
        self.in_flight.is_empty()
            && self.pcap.is_none()
            && self.config.delay.is_zero()
            && self.config.jitter.is_zero()
            && self.config.bandwidth_bps.is_none()
            && self.config.reorder <= 0.0
    }

    /// Timeless and without faults: a frame goes straight to its port's receive queue (what
    /// the full path does then too, without its bookkeeping or a second handle on the frame).
    fn is_perfect(&self) -> bool {
        self.is_timeless()
            && !self.partitioned
            && self.config.loss <= 0.0
            && self.config.duplicate <= 0.0
            && self.config.corrupt <= 0.0
    }

    /// Puts `frame` into port `to`'s receive queue, or counts it dropped if the queue is full.
    fn enqueue(&mut self, to: usize, frame: Buffer) {
        let limit = self.config.rx_queue;
        let port = &mut self.ports[to];
        if port.rx.len() >= limit {
            port.stats.rx_dropped += 1;
            self.stats.rx_overflow += 1;
        } else {
            port.rx.push_back(frame);
            self.stats.delivered += 1;
        }
    }

    fn transmit(&mut self, from: usize, frame: Buffer) {
        let now = self.send_time();
        self.stats.sent += 1;
        {
            let p = &mut self.ports[from];
            p.stats.tx_frames += 1;
            p.stats.tx_bytes += frame.len() as u64;
        }
        if self.is_perfect() {
            let dst = frame.get(0..6);
            let owner = match dst {
                Some(d) if d[0] & 1 == 0 => self.ports.iter().position(|p| p.mac == d),
                _ => None,
            };
            if let Some(to) = owner.filter(|&to| to != from) {
                self.enqueue(to, frame);
                return;
            }
        }
        if let Some(pcap) = &mut self.pcap {
            // A pcap write error must not change the run; it shows up when flushing.
            let _ = pcap.record(now, &frame);
        }
        // The transmitter is busy for the frame's serialization time even if the frame is lost.
        let start = now.max(self.ports[from].link_free_at);
        let mut done = start;
        if let Some(bps) = self.config.bandwidth_bps {
            let bits = (frame.len() as u64 + 24) * 8; // preamble, FCS and gap: 24 B
            done = start + Duration::from_nanos(bits.saturating_mul(1_000_000_000) / bps.max(1));
        }
        self.ports[from].link_free_at = done;

        if self.partitioned {
            self.stats.partitioned += 1;
            return;
        }
        if self.rng.chance(self.config.loss) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let dst = frame.get(0..6).and_then(|d| <[u8; 6]>::try_from(d).ok());
        // Unicast to the port that owns the MAC; broadcast, multicast and unknown unicast
        // to every other port (flooding, like a learning switch before it learns).
        let unicast = match dst {
            Some(d) if d[0] & 1 == 0 => self.ports.iter().position(|p| p.mac == d),
            _ => None,
        };
        let mut delivered = false;
        for to in 0..self.ports.len() {
            let wanted = match unicast {
                Some(u) => to == u,
                None => true,
            };
            if to == from || !wanted {
                continue;
            }
            delivered = true;
            for _ in 0..copies {
                self.schedule(from, to, now, done, &frame);
            }
        }
        if !delivered {
            self.stats.unroutable += 1;
        }
    }

    fn schedule(&mut self, from: usize, to: usize, now: Instant, sent: Instant, frame: &Buffer) {
        if self.in_flight.len() >= self.config.max_in_flight {
            self.stats.overflow += 1;
            return;
        }
        let mut at = sent + self.config.delay;
        if !self.config.jitter.is_zero() {
            let j = self.rng.below(self.config.jitter.as_nanos() as u64 + 1);
            at += Duration::from_nanos(j);
        }
        let reorder = self.rng.chance(self.config.reorder);
        if reorder {
            self.stats.reordered += 1;
            at += self.config.reorder_delay;
        } else {
            // Keep the direction FIFO: jitter alone never reorders.
            let last = &mut self.ports[from].last_delivery[to];
            at = at.max(*last);
            *last = at;
        }
        let frame = if self.rng.chance(self.config.corrupt) && !frame.is_empty() {
            self.stats.corrupted += 1;
            if self.config.checksum_offload {
                // The receiving port's checksum check fails: it drops the frame.
                self.ports[to].stats.rx_dropped += 1;
                return;
            }
            let bit = self.rng.below(frame.len() as u64 * 8);
            let pool = &self.ports[to].pool;
            let copy = (frame.len() <= pool.data_capacity())
                .then(|| pool.alloc_copy(frame))
                .flatten();
            match copy {
                Some(mut copy) => {
                    copy.as_mut_slice()[(bit / 8) as usize] ^= 1 << (bit % 8);
                    copy
                }
                None => {
                    self.ports[to].stats.rx_dropped += 1;
                    return;
                }
            }
        } else {
            // Shared read-only with the sender (a refcount bump): the receiver can read it but
            // not write it, like a frame in a NIC's DMA memory.
            frame.clone()
        };
        if self.in_flight.is_empty() && at <= now {
            // Due already and nothing ahead of it: straight to the receive queue (the same
            // order and time the heap would give, without the heap).
            self.enqueue(to, frame);
            return;
        }
        self.order += 1;
        self.in_flight.push(InFlight {
            at,
            order: self.order,
            port: to,
            frame,
        });
    }
}

/// One port of a [`SimWire`]: a [`Device`].
pub struct SimPort {
    wire: SimWire,
    index: usize,
    /// A handle on the same pool as the wire's record of this port (pools are shared handles).
    pool: BufferPool,
}

impl SimPort {
    /// The wire this port is plugged into.
    pub fn wire(&self) -> &SimWire {
        &self.wire
    }
}

impl Device for SimPort {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        let mut s = self.wire.state.borrow_mut();
        s.deliver_due();
        let port = &mut s.ports[self.index];
        let n = max.min(port.rx.len());
        for _ in 0..n {
            let frame = port.rx.pop_front().expect("n frames are queued");
            port.stats.rx_frames += 1;
            port.stats.rx_bytes += frame.len() as u64;
            frames.push(frame);
        }
        n
    }

    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        let mut s = self.wire.state.borrow_mut();
        let n = frames.len();
        // In order, by popping from the back of the reversed batch (cheaper than a drain).
        frames.reverse();
        while let Some(frame) = frames.pop() {
            s.transmit(self.index, frame);
        }
        n
    }

    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn mac(&self) -> [u8; 6] {
        self.wire.state.borrow().ports[self.index].mac
    }

    fn caps(&self) -> DeviceCaps {
        let s = self.wire.state.borrow();
        let offload = s.config.checksum_offload;
        DeviceCaps {
            mtu: s.config.mtu,
            max_burst: 32,
            rx_checksum_offload: offload,
            tx_checksum_offload: offload,
            ..DeviceCaps::default()
        }
    }

    fn stats(&self) -> DeviceStats {
        self.wire.state.borrow().ports[self.index].stats
    }
}

/// Writes frames in the classic pcap format (link type Ethernet, nanosecond timestamps).
struct PcapWriter {
    out: BufWriter<File>,
}

impl PcapWriter {
    fn create(path: &std::path::Path) -> io::Result<PcapWriter> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&0xa1b2_3c4du32.to_le_bytes())?; // magic: nanosecond resolution
        out.write_all(&2u16.to_le_bytes())?; // version 2.4
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // thiszone
        out.write_all(&0u32.to_le_bytes())?; // sigfigs
        out.write_all(&65535u32.to_le_bytes())?; // snaplen
        out.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
        Ok(PcapWriter { out })
    }

    fn record(&mut self, at: Instant, frame: &[u8]) -> io::Result<()> {
        let ns = at.as_nanos();
        self.out
            .write_all(&((ns / 1_000_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((ns % 1_000_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.out.write_all(frame)
    }
}

impl Drop for WireState {
    fn drop(&mut self) {
        if let Some(p) = &mut self.pcap {
            let _ = p.out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pool: &BufferPool, dst: [u8; 6]) -> Buffer {
        let mut b = pool.alloc().expect("a free buffer");
        b.extend_from_slice(&dst);
        b.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        b.extend_from_slice(&[0x88, 0xb5]);
        b.extend_from_slice(&[0xab; 46]);
        b
    }

    fn corrupting_wire(checksum_offload: bool) -> (SimWire, SimPort, SimPort) {
        let config = SimConfig {
            corrupt: 1.0,
            checksum_offload,
            ..SimConfig::default()
        };
        let wire = SimWire::new(Clock::virtual_at(Instant::ZERO), config).unwrap();
        let a = wire.port([2, 0, 0, 0, 0, 1]).unwrap();
        let b = wire.port([2, 0, 0, 0, 0, 2]).unwrap();
        (wire, a, b)
    }

    #[test]
    fn checksum_offload_is_advertised_and_corrupt_frames_are_dropped() {
        let (wire, mut a, mut b) = corrupting_wire(true);
        assert!(a.caps().rx_checksum_offload && a.caps().tx_checksum_offload);
        let mut out: Vec<Buffer> = (0..10).map(|_| frame(a.pool(), b.mac())).collect();
        a.tx_burst(&mut out);
        let mut got = Vec::new();
        assert_eq!(b.rx_burst(&mut got, 32), 0, "a corrupt frame never arrives");
        assert_eq!(wire.stats().corrupted, 10);
        assert_eq!(b.stats().rx_dropped, 10);
    }

    #[test]
    fn without_offload_corrupt_frames_arrive_for_the_stack_to_check() {
        let (wire, mut a, mut b) = corrupting_wire(false);
        assert!(!a.caps().rx_checksum_offload && !a.caps().tx_checksum_offload);
        let mut out: Vec<Buffer> = (0..10).map(|_| frame(a.pool(), b.mac())).collect();
        a.tx_burst(&mut out);
        let mut got = Vec::new();
        assert_eq!(b.rx_burst(&mut got, 32), 10);
        assert_eq!(wire.stats().corrupted, 10);
        assert_eq!(b.stats().rx_dropped, 0);
    }
}
