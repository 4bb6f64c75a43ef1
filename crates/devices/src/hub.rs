//! An in-process Ethernet hub: stacks of one process joined by memory.
//!
//! The [`crate::sim`] wire is the tool for deterministic tests: one thread, a virtual clock,
//! seeded faults. The hub is its counterpart for running applications: each [`HubPort`] is a
//! [`Device`] owned by one thread (typically one `LibOs`), and ports exchange frames through the
//! hub, switched by destination MAC (broadcast and unknown destinations go to every other port).
//! Hubs are found by name, so two `LibOs`es configured with the same wire name meet on it.
//!
//! How a frame crosses depends on where its receiver lives:
//! - **A port on another thread**: the frame is copied into a frame copy the hub recycles and
//!   queued on the receiver's locked inbox, and the receiver copies it into its own pool, since
//!   a pool belongs to one thread.
//! - **A port on the sender's own thread** (two LibOses polled by one thread): the frame's
//!   [`Buffer`] itself moves into the receiver's inbox, with no copy and no lock. The receiver
//!   then holds a buffer of the sender's pool, which is fine on one thread.
//!
//! Limits: each port's receive queue holds at most [`HubConfig::rx_queue`] frames per path (more
//! are dropped and counted, like a switch with a full queue), and recycled frame copies are kept
//! for reuse so a steady flow allocates nothing. An optional seeded loss rate exercises recovery.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// neither computes nor verifies them. Off by default, so the stack does the work it does
    /// over a real device; frames cross the hub in memory and are never corrupted, so turning
    /// it on is safe and measures the stack without its checksum code.
    pub checksum_offload: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            rx_queue: 4096,
            loss: 0.0,
            seed: 1,
            mtu: 1500,
            checksum_offload: false,
        }
    }
}

type Frame = Vec<u8>;

/// A port's queue for frames from other threads.
struct SharedInbox {
    frames: Mutex<VecDeque<Frame>>,
    /// The queue's length as of its last change, so an idle receiver need not take the lock.
    /// Written only with the lock held.
    queued: AtomicUsize,
}

/// A port's queue for frames from ports on its own thread: their buffers, moved.
type LocalInbox = Rc<RefCell<VecDeque<Buffer>>>;

thread_local! {
    /// The local inboxes of the ports attached on this thread, by hub and port index.
    static LOCAL_INBOXES: RefCell<Vec<(usize, usize, LocalInbox)>> = const { RefCell::new(Vec::new()) };
}

struct PortSlot {
    mac: [u8; 6],
    inbox: Arc<SharedInbox>,
}

struct HubInner {
    name: String,
    config: HubConfig,
    ports: RwLock<Vec<Option<PortSlot>>>,
    /// Bumped whenever a port attaches or detaches, so senders know to refresh their routes.
    generation: AtomicU64,
    /// Frame copies to reuse.
    spare: Mutex<Vec<Frame>>,
    rng: AtomicU64,
    dropped: AtomicU64,
}

impl HubInner {
    /// The hub's identity in the thread-local registry of inboxes.
    fn key(&self) -> usize {
        self as *const HubInner as usize
    }
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
            generation: AtomicU64::new(0),
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

    /// Attaches a new port, owned by the calling thread. With `mac = None` the port gets a
    /// locally administered address derived from its index (02:00:00:00:xx:yy).
    pub fn attach(&self, mac: Option<[u8; 6]>, pool: BufferPool) -> HubPort {
        let rx_queue = self.inner.config.rx_queue;
        let mut ports = self.inner.ports.write().expect("hub poisoned");
        let index = ports
            .iter()
            .position(Option::is_none)
            .unwrap_or(ports.len());
        let mac = mac.unwrap_or([0x02, 0, 0, 0, (index >> 8) as u8, index as u8 + 1]);
        let inbox = Arc::new(SharedInbox {
            frames: Mutex::new(VecDeque::with_capacity(rx_queue)),
            queued: AtomicUsize::new(0),
        });
        let slot = PortSlot {
            mac,
            inbox: inbox.clone(),
        };
        if index == ports.len() {
            ports.push(Some(slot));
        } else {
            ports[index] = Some(slot);
        }
        let local_inbox: LocalInbox = Rc::new(RefCell::new(VecDeque::with_capacity(rx_queue)));
        LOCAL_INBOXES.with(|l| {
            l.borrow_mut()
                .push((self.inner.key(), index, local_inbox.clone()))
        });
        self.inner.generation.fetch_add(1, Ordering::Release);
        HubPort {
            hub: self.clone(),
            index,
            mac,
            inbox,
            local_inbox,
            routes: Vec::new(),
            routes_generation: u64::MAX,
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

/// Where a port sends frames for another port.
enum Path {
    /// The port lives on this thread: move the buffer into its local inbox.
    Local(LocalInbox),
    /// The port lives on another thread: copy the frame into its shared inbox.
    Shared(Arc<SharedInbox>),
}

/// Another port as a sender sees it.
struct Route {
    mac: [u8; 6],
    path: Path,
}

/// One attachment to a [`Hub`]: a [`Device`] for one thread.
pub struct HubPort {
    hub: Hub,
    index: usize,
    mac: [u8; 6],
    inbox: Arc<SharedInbox>,
    local_inbox: LocalInbox,
    /// Every other port, as of hub generation `routes_generation`.
    routes: Vec<Route>,
    routes_generation: u64,
    pool: BufferPool,
    stats: DeviceStats,
    /// Frames taken from the shared inbox in one go, reused.
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

    /// Rebuilds the routes to the other ports if any port attached or detached since.
    fn refresh_routes(&mut self) {
        let inner = &self.hub.inner;
        let generation = inner.generation.load(Ordering::Acquire);
        if generation == self.routes_generation {
            return;
        }
        let ports = inner.ports.read().expect("hub poisoned");
        let key = inner.key();
        self.routes.clear();
        LOCAL_INBOXES.with(|l| {
            let local = l.borrow();
            for (i, slot) in ports.iter().enumerate() {
                let Some(slot) = slot.as_ref().filter(|_| i != self.index) else {
                    continue;
                };
                let path = match local.iter().find(|(h, p, _)| (*h, *p) == (key, i)) {
                    Some((_, _, inbox)) => Path::Local(inbox.clone()),
                    None => Path::Shared(slot.inbox.clone()),
                };
                self.routes.push(Route {
                    mac: slot.mac,
                    path,
                });
            }
        });
        self.routes_generation = generation;
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

/// Moves `frame` into a same-thread port's inbox; false if the inbox is full.
fn deliver_local(inbox: &LocalInbox, limit: usize, frame: Buffer) -> bool {
    let mut q = inbox.borrow_mut();
    if q.len() >= limit {
        return false;
    }
    q.push_back(frame);
    true
}

/// Frame copies a port keeps for itself before handing extras back to the hub.
const LOCAL_SPARES: usize = 256;

impl Device for HubPort {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        let mut taken = 0;
        {
            let mut local = self.local_inbox.borrow_mut();
            while taken < max {
                let Some(frame) = local.pop_front() else {
                    break;
                };
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += frame.len() as u64;
                frames.push(frame);
                taken += 1;
            }
        }
        if taken == max || self.inbox.queued.load(Ordering::Acquire) == 0 {
            return taken;
        }
        {
            let mut q = self.inbox.frames.lock().expect("hub inbox poisoned");
            let n = (max - taken).min(q.len());
            self.scratch.extend(q.drain(..n));
            self.inbox.queued.store(q.len(), Ordering::Release);
        }
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
        self.refresh_routes();
        let inner = self.hub.inner.clone();
        let limit = inner.config.rx_queue;
        // A burst mostly goes to one port: keep its shared inbox locked across consecutive
        // frames instead of taking the lock once per frame.
        let mut held: Option<(usize, MutexGuard<'_, VecDeque<Frame>>)> = None;
        let release = |held: &mut Option<(usize, MutexGuard<'_, VecDeque<Frame>>)>,
                       routes: &[Route]| {
            if let Some((i, q)) = held.take() {
                if let Path::Shared(inbox) = &routes[i].path {
                    inbox.queued.store(q.len(), Ordering::Release);
                }
            }
        };
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
                .then(|| self.routes.iter().position(|r| r.mac == dst))
                .flatten();
            let delivered = match target {
                Some(i) => match &self.routes[i].path {
                    Path::Local(inbox) => deliver_local(inbox, limit, frame),
                    Path::Shared(inbox) => {
                        if held.as_ref().map(|(h, _)| *h) != Some(i) {
                            // One inbox locked at a time: two ports sending to each other
                            // must not each hold one inbox while waiting for the other.
                            release(&mut held, &self.routes);
                            held = Some((i, inbox.frames.lock().expect("hub inbox poisoned")));
                        }
                        let (_, q) = held.as_mut().expect("locked above");
                        deliver(q, limit, &frame, &mut self.spares)
                    }
                },
                None => {
                    // Broadcast and unknown destinations: every other port (a drop counted
                    // per port that had no room). Ports of this thread share the buffer.
                    release(&mut held, &self.routes);
                    for route in &self.routes {
                        let ok = match &route.path {
                            Path::Local(inbox) => deliver_local(inbox, limit, frame.clone()),
                            Path::Shared(inbox) => {
                                let mut q = inbox.frames.lock().expect("hub inbox poisoned");
                                let ok = deliver(&mut q, limit, &frame, &mut self.spares);
                                inbox.queued.store(q.len(), Ordering::Release);
                                ok
                            }
                        };
                        if !ok {
                            inner.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    true
                }
            };
            if !delivered {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        release(&mut held, &self.routes);
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
        let key = self.hub.inner.key();
        // At thread exit the registry may already be gone; then there is nothing to remove.
        let _ = LOCAL_INBOXES.try_with(|l| {
            l.borrow_mut()
                .retain(|(h, p, _)| (*h, *p) != (key, self.index))
        });
        if let Ok(mut ports) = self.hub.inner.ports.write() {
            ports[self.index] = None;
        }
        self.hub.inner.generation.fetch_add(1, Ordering::Release);
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

    fn payloads(port: &mut HubPort) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        port.rx_burst(&mut frames, 4096);
        frames.iter().map(|f| f[14..].to_vec()).collect()
    }

    #[test]
    fn ports_of_one_thread_move_frames_without_a_copy() {
        let hub = Hub::named(
            &format!("hub-local-{}", std::process::id()),
            &HubConfig {
                rx_queue: 8,
                ..HubConfig::default()
            },
        );
        let mut a = HubPort::with_pool(&hub, None, 64).unwrap();
        let mut b = HubPort::with_pool(&hub, None, 64).unwrap();
        let pool = a.pool().clone();
        let mut out: Vec<Buffer> = (0..5u8)
            .map(|i| frame(b.mac(), a.mac(), &[i; 40], &pool))
            .collect();
        assert_eq!(a.tx_burst(&mut out), 5);
        let mut got = Vec::new();
        assert_eq!(b.rx_burst(&mut got, 3), 3, "at most `max` per burst");
        assert_eq!(b.rx_burst(&mut got, 32), 2);
        for (i, f) in got.iter().enumerate() {
            assert!(pool.owns(f), "frame {i} is the sender's buffer, not a copy");
            assert_eq!(f[14..], [i as u8; 40], "frame {i} in order and intact");
        }
        drop(got);
        assert_eq!(
            pool.available(),
            64,
            "every buffer went back to the sender's pool"
        );
        // A full inbox drops and counts; the frames already queued stay.
        let mut out: Vec<Buffer> = (0..10u8)
            .map(|i| frame(b.mac(), a.mac(), &[i], &pool))
            .collect();
        a.tx_burst(&mut out);
        assert_eq!(hub.dropped(), 2);
        let got = payloads(&mut b);
        assert_eq!(got, (0..8u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert!(payloads(&mut a).is_empty(), "a port never hears itself");
    }

    #[test]
    fn broadcast_reaches_ports_of_this_thread_and_of_others() {
        let name = format!("hub-mixed-{}", std::process::id());
        let hub = Hub::named(&name, &HubConfig::default());
        let mut a = HubPort::with_pool(&hub, None, 64).unwrap();
        let mut b = HubPort::with_pool(&hub, None, 64).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let remote = std::thread::spawn(move || {
            let hub = Hub::named(&name, &HubConfig::default());
            let mut c = HubPort::with_pool(&hub, None, 64).unwrap();
            ready_tx.send(c.mac()).unwrap();
            done_rx.recv().unwrap();
            payloads(&mut c)
        });
        let c_mac = ready_rx.recv().unwrap();
        let pool = a.pool().clone();
        let mut out = vec![
            frame([0xff; 6], a.mac(), b"to all", &pool),
            frame(c_mac, a.mac(), b"to c", &pool),
            frame(b.mac(), a.mac(), b"to b", &pool),
        ];
        a.tx_burst(&mut out);
        done_tx.send(()).unwrap();
        assert_eq!(
            remote.join().unwrap(),
            vec![b"to all".to_vec(), b"to c".to_vec()]
        );
        assert_eq!(payloads(&mut b), vec![b"to all".to_vec(), b"to b".to_vec()]);
        // Once b leaves, a frame to its address is unknown: it goes to every port left.
        let b_mac = b.mac();
        drop(b);
        let mut d = HubPort::with_pool(&hub, Some([0x02, 7, 7, 7, 7, 7]), 8).unwrap();
        let mut out = vec![frame(b_mac, a.mac(), b"late", &pool)];
        a.tx_burst(&mut out);
        assert_eq!(payloads(&mut d), vec![b"late".to_vec()]);
    }
}
