//! An in-process Ethernet hub: stacks on different threads of one process joined by memory.
//!
//! The [`crate::sim`] wire is the tool for deterministic tests: one thread, a virtual clock,
//! seeded faults. The hub is its counterpart for running applications: each [`HubPort`] is a
//! [`Device`] owned by one thread (typically one `LibOs`), and ports on different threads
//! exchange frames through the hub, switched by destination MAC (broadcast and unknown
//! destinations go to every other port). Frames are copied into the receiver's own pool, since a
//! pool belongs to one thread. Hubs are found by name, so two `LibOs`es configured with the same
//! wire name meet on it.
//!
//! Limits: each port's receive queue holds at most [`HubConfig::rx_queue`] frames (more are
//! dropped and counted, like a switch with a full queue), and recycled frame copies are kept for
//! reuse so a steady flow allocates nothing. An optional seeded loss rate exercises recovery.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};

use bypass_runtime::{Buffer, BufferPool, PoolConfig};

use crate::{Device, DeviceCaps, DeviceStats};

/// The shape of a hub, fixed by its first port.
#[derive(Clone, Debug, PartialEq)]
pub struct HubConfig {
    /// Frames each port's receive queue holds.
    pub rx_queue: usize,
    /// Probability of dropping a frame in transit (0 = never).
    pub loss: f64,
    /// Seed of the loss decisions.
    pub seed: u64,
    pub mtu: usize,
    /// The ports offload IPv4/TCP/UDP checksums ([`DeviceCaps`] `rx_checksum_offload` and
    /// `tx_checksum_offload`), as a NIC that fills and checks them would: a stack on the hub
    /// neither computes nor verifies them. Frames cross the hub as copies in memory and are
    /// never corrupted, so this is on by default; turn it off to run the stack's own
    /// checksum code.
    pub checksum_offload: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            rx_queue: 4096,
            loss: 0.0,
            seed: 1,
            mtu: 1500,
            checksum_offload: true,
        }
    }
}

type Frame = Vec<u8>;

struct PortSlot {
    mac: [u8; 6],
    inbox: Arc<Mutex<VecDeque<Frame>>>,
}

struct HubInner {
    name: String,
    config: HubConfig,
    ports: RwLock<Vec<Option<PortSlot>>>,
    /// Frame copies to reuse.
    spare: Mutex<Vec<Frame>>,
    rng: AtomicU64,
    dropped: AtomicU64,
}

/// A handle on a named hub. Cheap to clone; the hub lives while a handle or port does.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

fn registry() -> &'static Mutex<HashMap<String, Weak<HubInner>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Weak<HubInner>>>> = OnceLock::new();
    HUBS.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Hub {
    /// The hub called `name`, made with `config` if no hub of that name is alive.
    pub fn named(name: &str, config: &HubConfig) -> Hub {
        let mut hubs = registry().lock().expect("hub registry poisoned");
        if let Some(inner) = hubs.get(name).and_then(Weak::upgrade) {
            return Hub { inner };
        }
        let inner = Arc::new(HubInner {
            name: name.to_string(),
            config: config.clone(),
            ports: RwLock::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            rng: AtomicU64::new(config.seed),
            dropped: AtomicU64::new(0),
        });
        hubs.retain(|_, w| w.strong_count() > 0);
        hubs.insert(name.to_string(), Arc::downgrade(&inner));
        Hub { inner }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Frames dropped in transit (loss, full receive queues).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Attaches a new port. With `mac = None` the port gets a locally administered address
    /// derived from its index (02:00:00:00:xx:yy).
    pub fn attach(&self, mac: Option<[u8; 6]>, pool: BufferPool) -> HubPort {
        let mut ports = self.inner.ports.write().expect("hub poisoned");
        let index = ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(ports.len());
        let mac = mac.unwrap_or([0x02, 0, 0, 0, (index >> 8) as u8, index as u8 + 1]);
        let inbox = Arc::new(Mutex::new(VecDeque::with_capacity(
            self.inner.config.rx_queue,
        )));
        let slot = PortSlot {
            mac,
            inbox: inbox.clone(),
        };
        if index == ports.len() {
            ports.push(Some(slot));
        } else {
            ports[index] = Some(slot);
        }
        HubPort {
            hub: self.clone(),
            index,
            mac,
            inbox,
            pool,
            stats: DeviceStats::default(),
            scratch: Vec::new(),
            spares: Vec::new(),
        }
    }

    /// Draws whether to drop a frame (a lock-free SplitMix64 step).
    fn lose(&self) -> bool {
        let p = self.inner.config.loss;
        if p <= 0.0 {
            return false;
        }
        let state = self
            .inner
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One attachment to a [`Hub`]: a [`Device`] for one thread.
pub struct HubPort {
    hub: Hub,
    index: usize,
    mac: [u8; 6],
    inbox: Arc<Mutex<VecDeque<Frame>>>,
    pool: BufferPool,
    stats: DeviceStats,
    /// Frames taken from the inbox in one go, reused.
    scratch: Vec<Frame>,
    /// Frame copies to fill on transmit (received ones come back here).
    spares: Vec<Frame>,
}

impl HubPort {
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The port's number on its hub (unique among the ports attached now).
    pub fn index(&self) -> usize {
        self.index
    }

    /// A port with its own pool of `chunks` frame buffers.
    pub fn with_pool(hub: &Hub, mac: Option<[u8; 6]>, chunks: usize) -> std::io::Result<HubPort> {
        Ok(hub.attach(mac, BufferPool::new(&PoolConfig::frames(chunks))?))
    }
}

/// Copies `data` into a spare frame and queues it on `inbox`; false if the inbox is full.
fn deliver(q: &mut VecDeque<Frame>, limit: usize, data: &[u8], spare: &mut Vec<Frame>) -> bool {
    if q.len() >= limit {
        return false;
    }
    let mut frame = spare.pop().unwrap_or_else(|| Vec::with_capacity(2048));
    frame.clear();
    frame.extend_from_slice(data);
    q.push_back(frame);
    true
}

/// Frame copies a port keeps for itself before handing extras back to the hub.
const LOCAL_SPARES: usize = 256;

impl Device for HubPort {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        {
            let mut q = self.inbox.lock().expect("hub inbox poisoned");
            let n = max.min(q.len());
            if n == 0 {
                return 0;
            }
            self.scratch.extend(q.drain(..n));
        }
        let mut taken = 0;
        for frame in self.scratch.drain(..) {
            match self.pool.alloc() {
                Some(mut buf) if frame.len() <= buf.tailroom() => {
                    buf.extend_from_slice(&frame);
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += frame.len() as u64;
                    frames.push(buf);
                    taken += 1;
                }
                _ => self.stats.rx_dropped += 1,
            }
            self.spares.push(frame);
        }
        if self.spares.len() > 2 * LOCAL_SPARES {
            let extra = self.spares.len() - LOCAL_SPARES;
            let mut hub = self.hub.inner.spare.lock().expect("hub poisoned");
            hub.extend(self.spares.drain(..extra));
        }
        taken
    }

    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        let n = frames.len();
        if n == 0 {
            return 0;
        }
        let inner = self.hub.inner.clone();
        if self.spares.len() < n {
            let mut hub = inner.spare.lock().expect("hub poisoned");
            let take = hub.len().min(LOCAL_SPARES);
            let from = hub.len() - take;
            self.spares.extend(hub.drain(from..));
        }
        let limit = inner.config.rx_queue;
        let ports = inner.ports.read().expect("hub poisoned");
        // A burst mostly goes to one port: keep its inbox locked across consecutive frames
        // instead of taking the lock once per frame.
        let mut held: Option<(usize, MutexGuard<'_, VecDeque<Frame>>)> = None;
        for frame in frames.drain(..) {
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += frame.len() as u64;
            if frame.len() < 14 || self.hub.lose() {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let dst: [u8; 6] = frame[..6].try_into().expect("length checked");
            let unicast = dst[0] & 1 == 0;
            let target = unicast
                .then(|| {
                    ports
                        .iter()
                        .position(|p| p.as_ref().is_some_and(|p| p.mac == dst))
                })
                .flatten();
            let delivered = match target {
                Some(i) => {
                    if held.as_ref().map(|(h, _)| *h) != Some(i) {
                        // One inbox locked at a time: two ports sending to each other must
                        // not each hold one inbox while waiting for the other.
                        drop(held.take());
                        let inbox = &ports[i].as_ref().expect("found above").inbox;
                        held = Some((i, inbox.lock().expect("hub inbox poisoned")));
                    }
                    let (_, q) = held.as_mut().expect("locked above");
                    deliver(q, limit, &frame, &mut self.spares)
                }
                None => {
                    // Broadcast and unknown destinations: every other port (a drop counted
                    // per port that had no room).
                    drop(held.take());
                    for (i, p) in ports.iter().enumerate() {
                        if let Some(p) = p.as_ref().filter(|_| i != self.index) {
                            let mut q = p.inbox.lock().expect("hub inbox poisoned");
                            if !deliver(&mut q, limit, &frame, &mut self.spares) {
                                inner.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    true
                }
            };
            if !delivered {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        n
    }

    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn caps(&self) -> DeviceCaps {
        let config = &self.hub.inner.config;
        DeviceCaps {
            mtu: config.mtu,
            rx_checksum_offload: config.checksum_offload,
            tx_checksum_offload: config.checksum_offload,
            ..DeviceCaps::default()
        }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl Drop for HubPort {
    fn drop(&mut self) {
        if let Ok(mut ports) = self.hub.inner.ports.write() {
            ports[self.index] = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8], pool: &BufferPool) -> Buffer {
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(&dst);
        b.extend_from_slice(&src);
        b.extend_from_slice(&[0x08, 0x00]);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn frames_cross_threads_to_the_port_that_owns_the_mac() {
        let name = format!("hub-test-{}", std::process::id());
        let hub = Hub::named(&name, &HubConfig::default());
        let mut a = HubPort::with_pool(&hub, None, 64).unwrap();
        let b_mac = [0x02, 0, 0, 0, 0, 0x42];
        let (tx, rx) = std::sync::mpsc::channel();
        let name2 = name.clone();
        let t = std::thread::spawn(move || {
            let hub = Hub::named(&name2, &HubConfig::default());
            let mut b = HubPort::with_pool(&hub, Some(b_mac), 64).unwrap();
            tx.send(()).unwrap();
            let mut got = Vec::new();
            let mut frames = Vec::new();
            while got.len() < 100 {
                frames.clear();
                b.rx_burst(&mut frames, 32);
                got.extend(frames.iter().map(|f| f[14..].to_vec()));
            }
            got
        });
        rx.recv().unwrap();
        let pool = a.pool().clone();
        for i in 0..100u32 {
            let mut out = vec![frame(b_mac, a.mac(), &i.to_be_bytes(), &pool)];
            assert_eq!(a.tx_burst(&mut out), 1);
            assert!(out.is_empty());
        }
        let got = t.join().unwrap();
        for (i, payload) in got.iter().enumerate() {
            assert_eq!(
                payload[..4],
                (i as u32).to_be_bytes(),
                "frame {i} in order and intact"
            );
        }
        // A frame to a MAC nobody has goes to every other port: here, none are left.
        let mut out = vec![frame([0x02, 9, 9, 9, 9, 9], a.mac(), b"x", &pool)];
        a.tx_burst(&mut out);
        let mut frames = Vec::new();
        assert_eq!(a.rx_burst(&mut frames, 8), 0, "a port never hears itself");
    }
}
