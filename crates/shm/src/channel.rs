//! A named two-sided channel of messages between processes over shared memory.
//!
//! One process [`Channel::create`]s the channel under a name, the other [`Channel::open`]s it;
//! then both send and receive [`Sga`] messages. See the crate docs for the protocol.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bypass_runtime::{Buffer, BufferPool, Sga};
use rustix::io::Errno;

use crate::layout::{self, Geometry, Layout, RingAt};
use crate::os::{self, PeerWatch};
use crate::region::Region;
use crate::ring::{Consumer, Producer, RingShared};
use crate::{Error, ErrorKind};

/// The shape of a new channel, chosen by its creator (the opener adopts it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Descriptor slots per direction (a power of two). A message of `n` segments takes `n`
    /// slots, so this also bounds the segments of one message.
    pub ring_slots: u32,
    /// Bytes per buffer chunk.
    pub chunk_size: u32,
    /// Chunks each side can have in flight (its half of the arena).
    pub chunks: u32,
    /// Bytes left free at the front of a new buffer of [`Channel::alloc`].
    pub headroom: u32,
}

impl Default for ChannelConfig {
    /// 1024 slots, 4 MiB per side in 2 KiB chunks (the geometry of network frames).
    fn default() -> ChannelConfig {
        ChannelConfig {
            ring_slots: 1024,
            chunk_size: 2048,
            chunks: 2048,
            headroom: 128,
        }
    }
}

impl ChannelConfig {
    /// The shared region's geometry this configuration asks for (its layout says where every
    /// ring and arena sits).
    pub fn geometry(&self) -> Geometry {
        Geometry {
            ring_slots: self.ring_slots,
            chunk_size: self.chunk_size,
            chunks: self.chunks,
            headroom: self.headroom,
        }
    }
}

/// How a blocking receive waits when nothing has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// Poll the ring without ever sleeping: the lowest latency, a busy core.
    Spin,
    /// Poll `spins` times, then sleep on a futex on the ring until the peer publishes.
    Block { spins: u32 },
}

/// Why a send did not happen.
#[derive(Debug)]
pub enum TrySendError {
    /// The ring or this side's arena is full for now; here is the message back. Retry after
    /// the peer has consumed something.
    Full(Sga),
    /// The channel failed, or the message can never be sent (it is dropped).
    Failed(Error),
}

impl From<Error> for TrySendError {
    fn from(e: Error) -> TrySendError {
        TrySendError::Failed(e)
    }
}

/// Counters of one channel end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub sent: u64,
    pub received: u64,
    /// Messages of at most [`Channel::inline_max`] bytes, sent inside their ring slot.
    pub inline_messages: u64,
    /// Segments sent without copying (they were buffers of [`Channel::alloc`]).
    pub zero_copy_segments: u64,
    /// Segments copied into this side's arena (buffers from elsewhere).
    pub copied_segments: u64,
    /// Futex wake-ups issued to a sleeping peer.
    pub wakeups: u64,
}

/// How often the peer's liveness is checked while waiting (a `poll` of its pidfd).
const LIVENESS_INTERVAL: Duration = Duration::from_millis(1);
/// Empty polls between reads of the clock.
const CLOCK_EVERY: u32 = 64;
/// Polls of the ring alone between two whole receive attempts of a spinning receive.
const QUICK_POLLS: u32 = 16;
/// A spare receive buffer is taken only while more chunks than this are free.
const SPARE_MARGIN: usize = 8;
/// Longest single futex sleep, so that a peer's death is seen within this bound.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// Returned chunks gathered before they are published (unless the receiver is idle).
const RETURN_BATCH: usize = 32;

/// Chunks received from the peer whose last handle dropped, waiting to go home.
type Returns = Rc<RefCell<Vec<u32>>>;

/// One end of a channel. Not `Send`: each process (or thread) opens its own end.
pub struct Channel {
    // The ring ends borrow the mapping; they are declared before `region` so they drop first.
    tx: Producer<'static>,
    rx: Consumer<'static>,
    /// Returns of our chunks, coming from the peer.
    ret_rx: Consumer<'static>,
    /// Returns of the peer's chunks, going to it.
    ret_tx: Producer<'static>,

    name: String,
    object: String,
    side: usize,
    layout: Layout,
    /// Messages up to this many bytes travel inside their ring slot.
    inline_max: usize,
    /// Our half of the arena: messages are built in its buffers.
    pool: BufferPool,
    /// The peer's half, lent to us chunk by chunk.
    peer_pool: BufferPool,
    /// A buffer per chunk of ours the peer holds, dropped when the chunk comes home.
    in_flight: Vec<Option<Buffer>>,
    /// How many of `in_flight` are `Some` (none: there is nothing to reap).
    in_flight_count: u32,
    /// Chunks of the peer's we hold (adopted and not yet returned).
    held: Vec<bool>,
    /// How many of `held` are set (none: there is nothing to return).
    held_count: u32,
    returns: Returns,
    /// Returns that did not fit the return ring yet.
    pending_returns: Vec<u32>,
    /// Descriptors of the message being received.
    scratch: Vec<[u32; 4]>,
    /// A buffer of our half taken while idle, for the next inline message to land in (so the
    /// receive path does not allocate). Given back whenever our half runs short.
    spare: Option<Buffer>,

    peer: Option<PeerWatch>,
    /// Set once the channel has failed: every later call returns it.
    failed: Option<Error>,
    /// Set once the peer has left: sends fail with it at once, receives once every message
    /// the peer published whole has been received.
    departed: Option<Error>,
    wait_mode: WaitMode,
    idle_polls: u32,
    last_check: Instant,
    stats: ChannelStats,

    region: Rc<Region>,
}

impl Channel {
    /// Creates channel `name` and returns side 0. The peer attaches with [`Channel::open`].
    ///
    /// If a region of that name exists whose creator has died (a crash before any peer came),
    /// it is replaced. If its creator still runs, this fails with [`ErrorKind::InUse`].
    pub fn create(name: &str, config: &ChannelConfig) -> Result<Channel, Error> {
        let object = os::object_name(name)?;
        let geometry = config.geometry();
        geometry.validate()?;
        let layout = geometry.layout();
        let mut replaced_stale = false;
        let fd = loop {
            match os::create_object(&object, layout.len) {
                Ok(fd) => break fd,
                Err(Errno::EXIST) if !replaced_stale => {
                    replaced_stale = true;
                    if let Some(pid) = live_creator(&object)? {
                        return Err(Error::new(
                            ErrorKind::InUse,
                            format!(
                                "channel {name:?} was already created by process {pid}, which \
                                 still runs; open it instead, or pick another name"
                            ),
                        ));
                    }
                    os::unlink_object(&object);
                }
                Err(e) => return Err(Error::os(&format!("creating channel {name:?}"), e)),
            }
        };
        let region = match Region::map(&fd, layout.len) {
            Ok(r) => Rc::new(r),
            Err(e) => {
                os::unlink_object(&object);
                return Err(Error::os("mapping the shared region", e));
            }
        };
        drop(fd);
        // The object reads as zeroes: rings are empty, the opener's state is ABSENT.
        let h = &region;
        h.u32_at(layout::OFF_VERSION)
            .store(layout::VERSION, Ordering::Relaxed);
        h.u32_at(layout::OFF_RING_SLOTS)
            .store(geometry.ring_slots, Ordering::Relaxed);
        h.u32_at(layout::OFF_CHUNK_SIZE)
            .store(geometry.chunk_size, Ordering::Relaxed);
        h.u32_at(layout::OFF_CHUNKS)
            .store(geometry.chunks, Ordering::Relaxed);
        h.u32_at(layout::OFF_HEADROOM)
            .store(geometry.headroom, Ordering::Relaxed);
        h.u64_at(layout::OFF_REGION_LEN)
            .store(layout.len as u64, Ordering::Relaxed);
        h.u32_at(layout::side_pid(0))
            .store(os::my_pid(), Ordering::Relaxed);
        h.u32_at(layout::side_state(0))
            .store(layout::STATE_ATTACHED, Ordering::Relaxed);
        // Last, with release: an opener that sees the magic sees everything above.
        h.u64_at(layout::OFF_MAGIC)
            .store(layout::MAGIC, Ordering::Release);
        let ch = Channel::attach(name, object.clone(), region, layout, 0, None);
        if ch.is_err() {
            os::unlink_object(&object);
        }
        ch
    }

    /// Opens channel `name` as side 1, retrying for up to `wait` while it does not exist yet.
    /// Once attached, the name is removed from `/dev/shm`: the region lives on only in the two
    /// mappings, and disappears when both sides have gone.
    pub fn open(name: &str, wait: Duration) -> Result<Channel, Error> {
        let object = os::object_name(name)?;
        let deadline = Instant::now() + wait;
        loop {
            match Channel::try_open(name, &object) {
                Err(e)
                    if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Incompatible)
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
                other => return other,
            }
        }
    }

    fn try_open(name: &str, object: &str) -> Result<Channel, Error> {
        let fd = match os::open_object(object) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no channel {name:?}: start the side that creates it first"),
                ))
            }
            Err(e) => return Err(Error::os(&format!("opening channel {name:?}"), e)),
        };
        let len = os::object_len(&fd)?;
        if len < layout::HEADER_LEN as u64 || len > layout::MAX_REGION_LEN {
            return Err(Error::new(
                ErrorKind::Incompatible,
                format!("channel {name:?} has a region of {len} B: not (yet) a channel"),
            ));
        }
        let region = Rc::new(
            Region::map(&fd, len as usize)
                .map_err(|e| Error::os("mapping the shared region", e))?,
        );
        drop(fd);
        let h = &region;
        if h.u64_at(layout::OFF_MAGIC).load(Ordering::Acquire) != layout::MAGIC {
            return Err(Error::new(
                ErrorKind::Incompatible,
                format!("channel {name:?} is not initialized (yet), or not a bypass channel"),
            ));
        }
        let version = h.u32_at(layout::OFF_VERSION).load(Ordering::Relaxed);
        if version != layout::VERSION {
            return Err(Error::new(
                ErrorKind::Incompatible,
                format!(
                    "channel {name:?} speaks version {version}, this library {}: use the same \
                     bypass version on both sides",
                    layout::VERSION
                ),
            ));
        }
        let geometry = Geometry {
            ring_slots: h.u32_at(layout::OFF_RING_SLOTS).load(Ordering::Relaxed),
            chunk_size: h.u32_at(layout::OFF_CHUNK_SIZE).load(Ordering::Relaxed),
            chunks: h.u32_at(layout::OFF_CHUNKS).load(Ordering::Relaxed),
            headroom: h.u32_at(layout::OFF_HEADROOM).load(Ordering::Relaxed),
        };
        geometry.validate().map_err(|e| {
            Error::new(
                ErrorKind::Incompatible,
                format!("channel {name:?} has a bad geometry: {e}"),
            )
        })?;
        let layout = geometry.layout();
        let stated = h.u64_at(layout::OFF_REGION_LEN).load(Ordering::Relaxed);
        if layout.len as u64 != len || stated != len {
            return Err(Error::new(
                ErrorKind::Incompatible,
                format!(
                    "channel {name:?}: region is {len} B, header says {stated} B, geometry needs {} B",
                    layout.len
                ),
            ));
        }
        let creator = h.u32_at(layout::side_pid(0)).load(Ordering::Relaxed);
        let watch = match PeerWatch::new(creator) {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::PeerGone => {
                // A stale region of a dead creator: remove it so the name can be created again.
                os::unlink_object(object);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        h.u32_at(layout::side_pid(1))
            .store(os::my_pid(), Ordering::Relaxed);
        let claimed = h.u32_at(layout::side_state(1)).compare_exchange(
            layout::STATE_ABSENT,
            layout::STATE_ATTACHED,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if claimed.is_err() {
            return Err(Error::new(
                ErrorKind::InUse,
                format!("channel {name:?} already has both its sides"),
            ));
        }
        // Both sides are in: the name has served its purpose.
        os::unlink_object(object);
        Channel::attach(name, object.to_string(), region, layout, 1, Some(watch))
    }

    fn attach(
        name: &str,
        object: String,
        region: Rc<Region>,
        layout: Layout,
        side: usize,
        peer: Option<PeerWatch>,
    ) -> Result<Channel, Error> {
        let peer_side = 1 - side;
        // Data rings are stamped (a receiver polls the slot itself); return rings, read only
        // now and then, are not.
        let shared = |at: &RingAt| RingShared {
            tail: &region.u32s_static(at.tail, 1)[0],
            head: &region.u32s_static(at.head, 1)[0],
            waiting: &region.u32s_static(at.waiting, 1)[0],
            slots: region.u32s_static(at.slots, at.capacity * at.slot_words),
            slot_words: at.slot_words,
            stamped: at.slot_words == layout::SLOT_WORDS,
        };
        let tx = Producer::new(shared(&layout.data[side]))?;
        let rx = Consumer::new(shared(&layout.data[peer_side]));
        let ret_rx = Consumer::new(shared(&layout.ret[side]));
        let ret_tx = Producer::new(shared(&layout.ret[peer_side]))?;

        let g = layout.geometry;
        let chunk_size = g.chunk_size as usize;
        let pool = BufferPool::with_memory(
            region.memory(layout.half[side], layout.half_len),
            chunk_size,
            g.headroom as usize,
            None,
        );
        let returns: Returns = Rc::new(RefCell::new(Vec::with_capacity(g.chunks as usize)));
        let hook_returns = returns.clone();
        let peer_pool = BufferPool::with_memory(
            region.memory(layout.half[peer_side], layout.half_len),
            chunk_size,
            g.headroom as usize,
            Some(Box::new(move |chunk| hook_returns.borrow_mut().push(chunk))),
        );
        Ok(Channel {
            tx,
            rx,
            ret_rx,
            ret_tx,
            name: name.to_string(),
            object,
            side,
            inline_max: g.inline_max(),
            layout,
            pool,
            peer_pool,
            in_flight: (0..g.chunks).map(|_| None).collect(),
            in_flight_count: 0,
            held: vec![false; g.chunks as usize],
            held_count: 0,
            returns,
            pending_returns: Vec::with_capacity(g.chunks as usize),
            scratch: Vec::with_capacity(g.ring_slots as usize),
            spare: None,
            peer,
            failed: None,
            departed: None,
            wait_mode: WaitMode::Spin,
            idle_polls: 0,
            last_check: Instant::now(),
            stats: ChannelStats::default(),
            region,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// 0 for the creator, 1 for the opener.
    pub fn side(&self) -> usize {
        self.side
    }

    pub fn config(&self) -> ChannelConfig {
        let g = self.layout.geometry;
        ChannelConfig {
            ring_slots: g.ring_slots,
            chunk_size: g.chunk_size,
            chunks: g.chunks,
            headroom: g.headroom,
        }
    }

    /// The peer's pid, once it has attached.
    pub fn peer_pid(&self) -> Option<u32> {
        self.peer.as_ref().map(PeerWatch::pid)
    }

    pub fn stats(&self) -> ChannelStats {
        self.stats
    }

    /// The largest message sent inside its ring slot rather than in buffers of the arena.
    pub fn inline_max(&self) -> usize {
        self.inline_max
    }

    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.wait_mode = mode;
    }

    /// This side's half of the arena. Buffers allocated here travel to the peer without a
    /// copy; prefer [`Channel::alloc`], which first takes back chunks the peer has returned.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// A new empty buffer of this side's arena, or `None` if every chunk is in use (in flight
    /// to the peer or held here).
    #[inline]
    pub fn alloc(&mut self) -> Option<Buffer> {
        if self.pool.available() == 0 {
            if let Some(spare) = self.spare.take() {
                return Some(spare);
            }
            let _ = self.reap_returns();
        }
        self.pool.alloc()
    }

    /// A message holding a copy of `data`, in this side's arena.
    pub fn alloc_message(&mut self, data: &[u8]) -> Option<Sga> {
        let need = data.len().div_ceil(self.pool.data_capacity());
        if self.pool.available() < need {
            self.spare = None;
            let _ = self.reap_returns();
        }
        Sga::copy_from(&self.pool, data)
    }

    /// The error the channel failed with, if it did.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    fn fail(&mut self, e: Error) -> Error {
        if e.is_fatal() && self.failed.is_none() {
            self.failed = Some(e.clone());
        }
        e
    }

    fn check_failed(&self) -> Result<(), Error> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    // ---- sending ----

    /// Queues `sga` as one message without publishing it: it becomes visible to the peer, with
    /// every message staged before it, at the next [`Channel::flush`] (one shared store per
    /// batch). A message is delivered whole or not at all.
    ///
    /// A message of at most [`Channel::inline_max`] bytes is copied into its ring slot, and its
    /// buffers are free again as soon as this returns: the peer copies it out into a buffer of
    /// its own (a small copy saves the return of a chunk, and the cache lines of one). In a
    /// larger message, segments that are unique buffers of [`Channel::pool`] are passed without
    /// a copy (the peer's `pop` returns these very bytes); any other segment is copied into
    /// this side's arena.
    #[inline]
    pub fn stage(&mut self, sga: Sga) -> Result<(), TrySendError> {
        self.check_sendable()?;
        let len = sga.len();
        if len <= self.inline_max {
            return match self.write_inline(&sga, len)? {
                true => Ok(()),
                false => Err(self.full(sga)),
            };
        }
        self.stage_in_chunks(sga)
    }

    /// Fails if the channel failed or the peer left (nobody would read what is sent; what the
    /// peer sent before leaving can still be received).
    #[inline]
    fn check_sendable(&self) -> Result<(), TrySendError> {
        self.check_failed()?;
        match &self.departed {
            Some(e) => Err(TrySendError::Failed(e.clone())),
            None => Ok(()),
        }
    }

    /// What a send that found no room returns: the message back, unless the peer has left.
    fn full(&mut self, sga: Sga) -> TrySendError {
        match self.peer_departure() {
            Some(e) => TrySendError::Failed(e),
            None => TrySendError::Full(sga),
        }
    }

    /// Stages a message larger than [`Channel::inline_max`]: a descriptor per chunk.
    #[inline]
    fn stage_in_chunks(&mut self, mut sga: Sga) -> Result<(), TrySendError> {
        // The common case, one buffer of our arena: one descriptor, no copy.
        if sga.num_segments() == 1 {
            let seg = sga.segments().next().expect("one segment");
            if !seg.is_empty() && self.pool.owns(seg) && seg.is_unique() {
                let free = self.tx.free(1).map_err(|e| self.fail(e.into()))?;
                if free == 0 {
                    return Err(self.full(sga));
                }
                let seg = sga.take_segments().next().expect("one segment");
                self.stats.zero_copy_segments += 1;
                self.stage_buffer(seg, false);
                self.stats.sent += 1;
                return Ok(());
            }
        }
        let data_capacity = self.pool.data_capacity();
        let (mut slots, mut copies) = (0usize, 0usize);
        for seg in sga.segments().filter(|s| !s.is_empty()) {
            if self.pool.owns(seg) && seg.is_unique() {
                slots += 1;
            } else {
                let n = seg.len().div_ceil(data_capacity);
                slots += n;
                copies += n;
            }
        }
        let capacity = self.tx.capacity() as usize;
        if slots > capacity {
            return Err(TrySendError::Failed(Error::invalid(format!(
                "a message of {} B needs {slots} descriptors, more than the {capacity} ring slots \
                 of channel {:?}: send it in parts, or create the channel with more ring_slots \
                 or larger chunks",
                sga.len(),
                self.name
            ))));
        }
        if copies > self.layout.geometry.chunks as usize {
            return Err(TrySendError::Failed(Error::invalid(format!(
                "a message of {} B needs {copies} chunks, more than the {} of this side's arena",
                sga.len(),
                self.layout.geometry.chunks
            ))));
        }
        if self.pool.available() < copies {
            self.spare = None;
            self.reap_returns()?;
        }
        let free = self
            .tx
            .free(slots as u32)
            .map_err(|e| self.fail(e.into()))?;
        if (free as usize) < slots || self.pool.available() < copies {
            if let Some(e) = self.peer_departure() {
                return Err(TrySendError::Failed(e));
            }
            return Err(TrySendError::Full(sga));
        }
        // From here on nothing can fail: the slots and chunks are there.
        let mut left = slots;
        for seg in sga.take_segments().filter(|s| !s.is_empty()) {
            if self.pool.owns(&seg) && seg.is_unique() {
                self.stats.zero_copy_segments += 1;
                left -= 1;
                self.stage_buffer(seg, left > 0);
            } else {
                for piece in seg.chunks(data_capacity) {
                    let buf = self
                        .pool
                        .alloc_copy(piece)
                        .expect("free chunks were checked");
                    self.stats.copied_segments += 1;
                    left -= 1;
                    self.stage_buffer(buf, left > 0);
                }
            }
        }
        assert_eq!(left, 0, "descriptor count");
        self.stats.sent += 1;
        Ok(())
    }

    /// Stages a message of `len` (at most [`Channel::inline_max`]) bytes inside its slot.
    /// Returns false if the ring is full. The caller may drop `sga` once this returns true.
    #[inline]
    fn write_inline(&mut self, sga: &Sga, len: usize) -> Result<bool, Error> {
        let slot = match self.tx.stage_slot() {
            Ok(Some(slot)) => slot,
            Ok(None) => return Ok(false),
            Err(e) => return Err(self.fail(e.into())),
        };
        let desc = [layout::NO_CHUNK, 0, len as u32, layout::FLAG_INLINE];
        for (cell, w) in slot.iter().zip(desc) {
            cell.store(w, Ordering::Relaxed);
        }
        let words = &slot[layout::DESC_WORDS..];
        match sga.num_segments() {
            0 => {}
            1 => store_bytes(words, sga.segments().next().expect("one segment")),
            _ => {
                let mut bytes = [0u8; layout::INLINE_MAX];
                let n = sga.copy_to(&mut bytes);
                store_bytes(words, &bytes[..n]);
            }
        }
        self.stats.inline_messages += 1;
        self.stats.sent += 1;
        Ok(true)
    }

    /// Stages a descriptor of `buf` and keeps `buf` until the peer returns its chunk.
    #[inline]
    fn stage_buffer(&mut self, buf: Buffer, more: bool) {
        let chunk = buf.chunk();
        let flags = if more { layout::FLAG_MORE } else { 0 };
        self.stage_descriptor([chunk, buf.chunk_offset() as u32, buf.len() as u32, flags]);
        let slot = &mut self.in_flight[chunk as usize];
        assert!(slot.is_none(), "chunk {chunk} staged while in flight");
        *slot = Some(buf);
        self.in_flight_count += 1;
    }

    #[inline]
    fn stage_descriptor(&mut self, desc: [u32; 4]) {
        let slot = self
            .tx
            .stage_slot()
            .expect("free slots were checked")
            .expect("free slots were checked");
        for (cell, w) in slot.iter().zip(desc) {
            cell.store(w, Ordering::Relaxed);
        }
    }

    /// Publishes every staged message, and wakes the peer if it sleeps.
    #[inline]
    pub fn flush(&mut self) -> Result<(), Error> {
        self.check_failed()?;
        self.publish_and_reap()
    }

    #[inline]
    fn publish_and_reap(&mut self) -> Result<(), Error> {
        if self.tx.publish() {
            self.stats.wakeups += 1;
            os::futex_wake(self.tx.wake_word());
        }
        // Then (off the path to the peer) take back returned chunks: the free list hands out
        // the most recently returned first, so a steady stream cycles through a few cache-warm
        // chunks instead of walking the whole arena.
        self.reap_returns()
    }

    /// Sends one message now: [`Channel::stage`] then [`Channel::flush`].
    #[inline]
    pub fn try_send(&mut self, sga: Sga) -> Result<(), TrySendError> {
        self.check_sendable()?;
        let len = sga.len();
        if len <= self.inline_max {
            if !self.write_inline(&sga, len)? {
                return Err(self.full(sga));
            }
            self.publish_and_reap()?;
            // The buffers of an inline message go back to their pools only now, off the path
            // to the peer.
            drop(sga);
            return Ok(());
        }
        self.stage_in_chunks(sga)?;
        self.publish_and_reap()?;
        Ok(())
    }

    /// Sends one message, retrying while the channel is full, for up to `timeout` (forever if
    /// `None`).
    #[inline]
    pub fn send(&mut self, sga: Sga, timeout: Option<Duration>) -> Result<(), Error> {
        match self.try_send(sga) {
            Ok(()) => Ok(()),
            Err(TrySendError::Failed(e)) => Err(e),
            Err(TrySendError::Full(back)) => self.send_when_room(back, timeout),
        }
    }

    #[inline(never)]
    fn send_when_room(&mut self, mut sga: Sga, timeout: Option<Duration>) -> Result<(), Error> {
        // The clock is read only once the channel is found full.
        let mut start = None;
        let mut spins = 0u32;
        loop {
            match self.try_send(sga) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Failed(e)) => return Err(e),
                Err(TrySendError::Full(back)) => sga = back,
            }
            let start = *start.get_or_insert_with(Instant::now);
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(CLOCK_EVERY) {
                if timeout.is_some_and(|t| start.elapsed() >= t) {
                    return Err(Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "channel {:?} stayed full: the peer is not receiving",
                            self.name
                        ),
                    ));
                }
                if !matches!(self.wait_mode, WaitMode::Spin) {
                    std::thread::yield_now();
                }
            }
            std::hint::spin_loop();
        }
    }

    /// Takes back the chunks the peer has finished with. With no chunk in flight (small
    /// messages travel inline) there is nothing to take back, and the return ring is not read.
    #[inline(always)]
    fn reap_returns(&mut self) -> Result<(), Error> {
        if self.in_flight_count == 0 {
            return Ok(());
        }
        self.reap_some_returns()
    }

    #[inline(never)]
    fn reap_some_returns(&mut self) -> Result<(), Error> {
        let n = self.ret_rx.available().map_err(|e| self.fail(e.into()))?;
        let mut word = [0u32];
        for i in 0..n {
            self.ret_rx.peek(i, &mut word);
            let chunk = word[0];
            match self
                .in_flight
                .get_mut(chunk as usize)
                .and_then(Option::take)
            {
                Some(buf) => {
                    drop(buf);
                    self.in_flight_count -= 1;
                }
                None => {
                    return Err(self.fail(Error::corrupt(format!(
                        "the peer returned chunk {chunk}, which it does not hold; closing \
                         channel {:?}",
                        self.name
                    ))))
                }
            }
        }
        self.ret_rx.consume(n);
        self.ret_rx.release();
        Ok(())
    }

    // ---- receiving ----

    /// Hands every chunk of the peer's that this side has let go of back to the peer now.
    /// Receiving does this by itself in batches, and when idle every few dozen polls.
    pub fn return_chunks(&mut self) -> Result<(), Error> {
        self.check_failed()?;
        self.flush_returns(true)
    }

    /// Sends home the peer's chunks whose last buffer here has dropped. Unless `now`, waits
    /// until [`RETURN_BATCH`] have gathered, to publish them in one store.
    ///
    /// A chunk counts as held here until it is in the return ring, so a peer that sends a
    /// chunk again before it came home is caught, and the chunks waiting for room in the ring
    /// (a peer that does not take its returns) never number more than the arena half has.
    #[inline(always)]
    fn flush_returns(&mut self, now: bool) -> Result<(), Error> {
        if self.held_count == 0 {
            // Nothing of the peer's is here, so nothing can be on its way home.
            return Ok(());
        }
        self.flush_some_returns(now)
    }

    #[inline(never)]
    fn flush_some_returns(&mut self, now: bool) -> Result<(), Error> {
        {
            let mut returns = self.returns.borrow_mut();
            let gathered = returns.len() + self.pending_returns.len();
            if gathered == 0 || (!now && gathered < RETURN_BATCH) {
                return Ok(());
            }
            self.pending_returns.extend(returns.drain(..));
        }
        debug_assert!(self.pending_returns.len() <= self.held.len());
        let mut sent = 0;
        for &chunk in &self.pending_returns {
            match self.ret_tx.stage(&[chunk]) {
                Ok(true) => {
                    self.held[chunk as usize] = false;
                    self.held_count -= 1;
                    sent += 1;
                }
                Ok(false) => break,
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        self.pending_returns.drain(..sent);
        // Nobody sleeps on a return ring: the sender reaps it at its next flush.
        self.ret_tx.publish_quiet();
        Ok(())
    }

    /// Receives one message if a whole one has arrived.
    ///
    /// Fails with [`ErrorKind::PeerGone`] or [`ErrorKind::PeerClosed`] once the peer has left
    /// and every message it published has been received, and with [`ErrorKind::Corrupt`] if
    /// the peer broke the protocol.
    #[inline]
    pub fn try_recv(&mut self) -> Result<Option<Sga>, Error> {
        self.check_failed()?;
        self.flush_returns(false)?;
        match self.take_message() {
            Ok(Some(sga)) => Ok(Some(sga)),
            Ok(None) => {
                // Idle: hand back consumed slots, and now and then every chunk let go of.
                self.rx.release();
                if self.idle_polls.is_multiple_of(CLOCK_EVERY) {
                    self.flush_returns(true)?;
                }
                let Some(departed) = self.peer_departure() else {
                    return Ok(None);
                };
                if departed.kind() != ErrorKind::Corrupt {
                    // Every whole message it published before leaving is still delivered
                    // (a part of one never is).
                    self.rx.refresh().map_err(|e| self.fail(e.into()))?;
                    match self.take_message() {
                        Ok(Some(sga)) => return Ok(Some(sga)),
                        Ok(None) => {}
                        Err(e) => return Err(self.fail(e)),
                    }
                }
                Err(self.fail(departed))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    #[inline]
    fn take_message(&mut self) -> Result<Option<Sga>, Error> {
        let avail = self.rx.available()?;
        if avail == 0 {
            return Ok(None);
        }
        let g = self.layout.geometry;
        // The common cases, a message of one slot: inline, or one descriptor.
        let slot = self.rx.slot(0);
        let mut desc = [0u32; 4];
        for (d, cell) in desc.iter_mut().zip(slot) {
            *d = cell.load(Ordering::Relaxed);
        }
        if desc[3] & layout::FLAG_INLINE != 0 {
            return self.take_inline(&desc, &slot[layout::DESC_WORDS..]);
        }
        if desc[3] & layout::FLAG_MORE == 0 {
            self.check_descriptor(&desc)?;
            let sga = Sga::from(self.adopt(&desc));
            self.finish_message(1);
            return Ok(Some(sga));
        }
        // A message of several slots: every slot published so far.
        let avail = self.rx.refresh()?;
        self.scratch.clear();
        let mut complete = false;
        for i in 0..avail {
            for (d, cell) in desc.iter_mut().zip(self.rx.slot(i)) {
                *d = cell.load(Ordering::Relaxed);
            }
            if let Err(e) = self.check_descriptor(&desc) {
                for d in &self.scratch {
                    self.held[d[0] as usize] = false;
                }
                return Err(e);
            }
            // Marked now so a chunk named twice in one message is caught.
            self.held[desc[0] as usize] = true;
            self.scratch.push(desc);
            if desc[3] & layout::FLAG_MORE == 0 {
                complete = true;
                break;
            }
        }
        if !complete {
            for d in &self.scratch {
                self.held[d[0] as usize] = false;
            }
            if avail >= g.ring_slots {
                return Err(Error::corrupt(format!(
                    "the peer filled the ring of channel {:?} with one unfinished message",
                    self.name
                )));
            }
            // The rest has not been published (a well-behaved peer publishes whole messages,
            // so this only happens with one that does not; it is never delivered in part).
            return Ok(None);
        }
        let n = self.scratch.len() as u32;
        let mut sga = Sga::new();
        for i in 0..self.scratch.len() {
            let d = self.scratch[i];
            sga.push(self.adopt(&d));
        }
        self.finish_message(n);
        Ok(Some(sga))
    }

    /// Delivers an inline message (descriptor `desc`, bytes in `words`) in a buffer of this
    /// side's half. If every chunk of the half is in use, the message stays in the ring until
    /// one is free.
    #[inline]
    fn take_inline(&mut self, desc: &[u32; 4], words: &[AtomicU32]) -> Result<Option<Sga>, Error> {
        let [chunk, start, len, flags] = *desc;
        if flags != layout::FLAG_INLINE
            || chunk != layout::NO_CHUNK
            || start != 0
            || len as usize > self.inline_max
        {
            return Err(Error::corrupt(format!(
                "the peer sent a bad inline descriptor {desc:?} on channel {:?} (at most {} B, \
                 no chunk, no other flag); closing the channel",
                self.name, self.inline_max
            )));
        }
        let mut sga = Sga::new();
        if len > 0 {
            let mut buf = match self.spare.take().or_else(|| self.pool.alloc()) {
                Some(buf) => buf,
                None => {
                    self.reap_returns()?;
                    match self.pool.alloc() {
                        Some(buf) => buf,
                        None => return Ok(None),
                    }
                }
            };
            load_bytes(words, buf.append(len as usize));
            sga.push(buf);
        }
        self.finish_message(1);
        Ok(Some(sga))
    }

    /// A buffer on the bytes of a checked descriptor, held until its last handle drops.
    #[inline]
    fn adopt(&mut self, d: &[u32; 4]) -> Buffer {
        self.held[d[0] as usize] = true;
        self.held_count += 1;
        let mut buf = self.peer_pool.adopt(d[0], d[1] as usize);
        buf.set_range(d[1] as usize, d[2] as usize);
        buf
    }

    /// Consumes the `n` descriptors of a delivered message.
    #[inline]
    fn finish_message(&mut self, n: u32) {
        self.rx.consume(n);
        if self.rx.unreleased() >= self.layout.geometry.ring_slots / 8 {
            self.rx.release();
        }
        self.stats.received += 1;
    }

    /// Checks a descriptor read from shared memory before anything uses it.
    #[inline]
    fn check_descriptor(&self, d: &[u32; 4]) -> Result<(), Error> {
        let g = self.layout.geometry;
        let [chunk, start, len, flags] = *d;
        let bad = |why: String| {
            Err(Error::corrupt(format!(
                "the peer sent a bad descriptor {d:?} on channel {:?}: {why}; closing the channel",
                self.name
            )))
        };
        if flags & !layout::FLAG_MORE != 0 {
            return bad(format!(
                "flags {flags:#x} (an inline message cannot be part of a larger one)"
            ));
        }
        if chunk >= g.chunks {
            return bad(format!("chunk {chunk} of {}", g.chunks));
        }
        if start > g.chunk_size || len > g.chunk_size - start {
            return bad(format!("range {start}+{len} of a {} B chunk", g.chunk_size));
        }
        if self.held[chunk as usize] {
            return bad(format!("chunk {chunk} is already held here"));
        }
        Ok(())
    }

    /// Watches the peer while there is nothing to do: its state word on every call, its
    /// process every [`LIVENESS_INTERVAL`]. Returns why the peer is gone (it closed, died, or
    /// wrote an impossible state), or `None` while it is there. A departure is remembered: the
    /// caller decides whether messages the peer published before leaving are still delivered.
    fn peer_departure(&mut self) -> Option<Error> {
        if let Some(e) = &self.departed {
            return Some(e.clone());
        }
        let peer_side = 1 - self.side;
        let state = self
            .region
            .u32_at(layout::side_state(peer_side))
            .load(Ordering::Acquire);
        let departed = match state {
            layout::STATE_ABSENT if self.peer.is_none() => return None,
            layout::STATE_ATTACHED => {
                if self.peer.is_none() {
                    let pid = self
                        .region
                        .u32_at(layout::side_pid(peer_side))
                        .load(Ordering::Relaxed);
                    match PeerWatch::new(pid) {
                        Ok(w) => self.peer = Some(w),
                        Err(e) => return Some(self.depart(e)),
                    }
                }
                self.idle_polls = self.idle_polls.wrapping_add(1);
                if !self.idle_polls.is_multiple_of(CLOCK_EVERY) {
                    return None;
                }
                let now = Instant::now();
                if now.duration_since(self.last_check) < LIVENESS_INTERVAL {
                    return None;
                }
                self.last_check = now;
                let watch = self.peer.as_ref().expect("set above");
                if watch.alive() {
                    return None;
                }
                os::gone(watch.pid())
            }
            layout::STATE_CLOSED => Error::new(
                ErrorKind::PeerClosed,
                format!("the peer closed channel {:?}", self.name),
            ),
            _ => Error::corrupt(format!(
                "the peer's state word of channel {:?} holds {state}; closing the channel",
                self.name
            )),
        };
        Some(self.depart(departed))
    }

    fn depart(&mut self, e: Error) -> Error {
        if e.kind() == ErrorKind::Corrupt {
            return self.fail(e);
        }
        self.departed = Some(e.clone());
        e
    }

    /// Receives one message, waiting for up to `timeout` (forever if `None`) in the
    /// [`WaitMode`] of this end. A timeout leaves the channel usable.
    #[inline]
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Sga, Error> {
        match self.try_recv()? {
            Some(sga) => Ok(sga),
            None => self.recv_waiting(timeout),
        }
    }

    #[inline(never)]
    fn recv_waiting(&mut self, timeout: Option<Duration>) -> Result<Sga, Error> {
        // The clock is read only with a timeout, and only once a poll found nothing.
        let mut start = None;
        let mut polls = 0u32;
        loop {
            polls = polls.wrapping_add(1);
            if timeout.is_some() && start.is_none() {
                start = Some(Instant::now());
            }
            let elapsed = || start.map_or(Duration::ZERO, |s| s.elapsed());
            if polls.is_multiple_of(CLOCK_EVERY) {
                if let Some(t) = timeout {
                    if elapsed() >= t {
                        return Err(self.timed_out());
                    }
                }
            }
            if self.spare.is_none() && self.pool.available() > SPARE_MARGIN {
                // Idle: allocate now what the next inline message will land in.
                self.spare = self.pool.alloc();
            }
            match self.wait_mode {
                WaitMode::Spin => {
                    self.spin_on_ring(QUICK_POLLS)?;
                }
                WaitMode::Block { spins } if polls < spins => std::hint::spin_loop(),
                WaitMode::Block { .. } => {
                    let mut sleep = MAX_SLEEP;
                    if let Some(t) = timeout {
                        let left = t.saturating_sub(elapsed());
                        if left.is_zero() {
                            return Err(self.timed_out());
                        }
                        sleep = sleep.min(left);
                    }
                    self.sleep(sleep)?;
                    // Force a liveness check after every sleep.
                    self.last_check = Instant::now() - LIVENESS_INTERVAL;
                    self.idle_polls = CLOCK_EVERY - 1;
                }
            }
            if let Some(sga) = self.try_recv()? {
                return Ok(sga);
            }
        }
    }

    /// Polls nothing but the receive ring (the next slot's stamp), up to `n` times, until
    /// something is published there: a tight loop that notices a message sooner than whole
    /// receive attempts would. Returns whether something arrived.
    #[inline]
    fn spin_on_ring(&mut self, n: u32) -> Result<bool, Error> {
        for _ in 0..n {
            std::hint::spin_loop();
            match self.rx.available() {
                Ok(0) => {}
                Ok(_) => return Ok(true),
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        Ok(false)
    }

    /// Sleeps until the peer publishes something (or leaves), for at most `max`; returns at
    /// once if a message is already there. For event loops that wait on several sources and
    /// call [`Channel::try_recv`] themselves.
    pub fn wait_readable(&mut self, max: Duration) -> Result<(), Error> {
        self.check_failed()?;
        self.sleep(max.min(MAX_SLEEP))
    }

    fn timed_out(&self) -> Error {
        Error::new(
            ErrorKind::TimedOut,
            format!("nothing arrived on channel {:?} in time", self.name),
        )
    }

    /// Sleeps on the receive ring until the peer publishes, or `max` passes.
    fn sleep(&mut self, max: Duration) -> Result<(), Error> {
        match self.rx.prepare_wait() {
            Ok(Some(tail)) => {
                os::futex_wait(self.rx.wake_word(), tail, max);
                self.rx.finish_wait();
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.fail(e.into())),
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let me = self.region.u32_at(layout::side_state(self.side));
        me.store(layout::STATE_CLOSED, Ordering::Release);
        if self.side == 0 {
            // If no opener ever attached, bar late ones and remove the name we own.
            let never_opened = self
                .region
                .u32_at(layout::side_state(1))
                .compare_exchange(
                    layout::STATE_ABSENT,
                    layout::STATE_CLOSED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
            if never_opened {
                os::unlink_object(&self.object);
            }
        }
        // A peer asleep on our ring wakes up and sees the state.
        os::futex_wake(self.tx.wake_word());
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("side", &self.side)
            .field("peer_pid", &self.peer_pid())
            .field("failed", &self.failed)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Writes `bytes` (at most [`layout::INLINE_MAX`]) into the shared `words` of an inline
/// message, four to a word (little-endian; the last one padded with zeroes).
#[inline]
fn store_bytes(words: &[AtomicU32], bytes: &[u8]) {
    let words: &[AtomicU32; INLINE_WORDS] = words.try_into().expect("inline words");
    assert!(
        bytes.len() <= layout::INLINE_MAX,
        "inline message longer than a slot"
    );
    // Sixteen bytes at a time, then what is left through a padded copy.
    let blocks = bytes.chunks_exact(16);
    let tail = blocks.remainder();
    for (b, cells) in blocks.zip(words.chunks_exact(4)) {
        let b: &[u8; 16] = b.try_into().expect("sixteen bytes");
        for (cell, q) in cells.iter().zip(b.chunks_exact(4)) {
            let q: [u8; 4] = q.try_into().expect("four bytes");
            cell.store(u32::from_le_bytes(q), Ordering::Relaxed);
        }
    }
    if !tail.is_empty() {
        let mut last = [0u8; 16];
        last[..tail.len()].copy_from_slice(tail);
        let cells = &words[(bytes.len() / 16) * 4..];
        for (cell, q) in cells
            .iter()
            .zip(last.chunks_exact(4))
            .take(tail.len().div_ceil(4))
        {
            let q: [u8; 4] = q.try_into().expect("four bytes");
            cell.store(u32::from_le_bytes(q), Ordering::Relaxed);
        }
    }
}

/// Fills `out` (at most [`layout::INLINE_MAX`] bytes) from the shared `words`, as
/// [`store_bytes`] wrote them. Each word is loaded once: a peer changing them meanwhile
/// changes the bytes, nothing else.
#[inline]
fn load_bytes(words: &[AtomicU32], out: &mut [u8]) {
    let words: &[AtomicU32; INLINE_WORDS] = words.try_into().expect("inline words");
    assert!(
        out.len() <= layout::INLINE_MAX,
        "inline message longer than a slot"
    );
    let whole = (out.len() / 16) * 4;
    let mut blocks = out.chunks_exact_mut(16);
    for (b, cells) in (&mut blocks).zip(words.chunks_exact(4)) {
        let mut w = [0u8; 16];
        for (q, cell) in w.chunks_exact_mut(4).zip(cells) {
            q.copy_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
        }
        b.copy_from_slice(&w);
    }
    let tail = blocks.into_remainder();
    if !tail.is_empty() {
        let mut w = [0u8; 16];
        let n = tail.len();
        for (q, cell) in w
            .chunks_exact_mut(4)
            .zip(&words[whole..])
            .take(n.div_ceil(4))
        {
            q.copy_from_slice(&cell.load(Ordering::Relaxed).to_le_bytes());
        }
        tail.copy_from_slice(&w[..n]);
    }
}

use layout::INLINE_WORDS;

/// The pid of the process that created `object`, if that process still runs. A region whose
/// creator is dead, or that was never initialized within a grace period, is stale.
fn live_creator(object: &str) -> Result<Option<u32>, Error> {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        let fd = match os::open_object(object) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(Error::os("opening an existing channel region", e)),
        };
        let len = os::object_len(&fd)?;
        if len >= layout::HEADER_LEN as u64 {
            let region = Region::map(&fd, layout::HEADER_LEN)
                .map_err(|e| Error::os("mapping a header", e))?;
            let magic = region.u64_at(layout::OFF_MAGIC).load(Ordering::Acquire);
            let pid = region.u32_at(layout::side_pid(0)).load(Ordering::Relaxed);
            if magic == layout::MAGIC {
                return Ok(os::process_exists(pid).then_some(pid));
            }
        }
        // Being initialized right now, or left half-made by a crash: give it a moment.
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
