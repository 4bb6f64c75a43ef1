//! A lock-free single-producer/single-consumer ring of fixed-size slots in shared memory.
//!
//! The ring is three shared words and an array of slots, each slot `slot_words` 32-bit words:
//!
//! - `tail`: slots the producer has *published* (free-running, wraps at 2^32);
//! - `head`: slots the consumer has *released* back to the producer (free-running);
//! - `waiting`: set by a consumer that is about to sleep on `tail` (see [`Consumer::prepare_wait`]).
//!
//! Each shared word sits on its own cache line so the two sides do not false-share. The
//! producer *stages* slots locally and publishes them in one `tail` store per batch
//! ([`Producer::publish`]); the consumer reads `tail` only when it has used up what it saw last
//! time, and releases consumed slots in one `head` store.
//!
//! A ring may be *stamped* ([`RingShared::stamped`]): then the last word of every slot is not
//! the caller's but the ring's, and `publish` writes into it the slot's *stamp* (its
//! free-running index with the low bit set: never zero, and different from the stamp the slot
//! had one lap earlier) before it stores `tail`. The consumer then learns that a slot is
//! published from the slot itself and never reads `tail` while it polls: a message costs the
//! cache lines of its slot and nothing else, instead of those plus the line of `tail` (which
//! it would have to fetch as well, often one transfer after the other). `tail` is still
//! stored, for a consumer that sleeps on it.
//!
//! The peer on the other side of the ring is not trusted: every index read from shared memory is
//! checked against what the protocol allows (`tail` never runs more than a ring ahead of `head`,
//! and neither ever moves backwards). A violation is reported as [`RingError::Corrupt`] and the
//! caller must stop using the ring. Slot contents are copied out with one load per word and
//! validated by the caller, so values that change under the reader cannot hurt it.
//!
//! Memory ordering: slot words are written with relaxed stores before the producer's release
//! store of `tail` (and of the stamp); the consumer's acquire load of `tail` (or of the stamp)
//! makes them visible. Symmetrically the consumer's release store of `head` orders its reads of
//! the slots before the producer reuses them. The sleep handshake is a Dekker pair over `tail` and `waiting` with a sequentially
//! consistent fence on each side, so a wake-up is never lost. Under `--cfg loom` the atomics are
//! loom's, and `tests/loom.rs` model-checks these claims.

#[cfg(loom)]
use loom::sync::atomic::{fence, AtomicU32, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{fence, AtomicU32, Ordering};

use std::fmt;

/// The ring broke its protocol: the peer wrote an impossible index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `what` held `value`, outside the range `[low, high]` the protocol allows (wrapping).
    Corrupt {
        what: &'static str,
        value: u32,
        low: u32,
        high: u32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::Corrupt {
                what,
                value,
                low,
                high,
            } => write!(
                f,
                "corrupt ring: {what} = {value}, outside {low}..={high}; the peer wrote garbage \
                 into shared memory, so the channel must be closed"
            ),
        }
    }
}

impl std::error::Error for RingError {}

/// The shared words of one ring, wherever they live (a mapped region, or plain memory in tests).
#[derive(Clone, Copy)]
pub struct RingShared<'a> {
    pub tail: &'a AtomicU32,
    pub head: &'a AtomicU32,
    pub waiting: &'a AtomicU32,
    /// `capacity * slot_words` words.
    pub slots: &'a [AtomicU32],
    /// Words per slot.
    pub slot_words: usize,
    /// The last word of each slot is the ring's stamp (see the module docs).
    pub stamped: bool,
}

impl<'a> RingShared<'a> {
    /// Slots in the ring: a power of two.
    pub fn capacity(&self) -> u32 {
        let cap = self.slots.len() / self.slot_words;
        debug_assert!(cap.is_power_of_two() && cap <= 1 << 30);
        cap as u32
    }

    /// Slot `index` of a ring of `capacity` slots (passed in: the division in
    /// [`RingShared::capacity`] is too slow for every access).
    #[inline]
    fn slot(&self, index: u32, capacity: u32) -> &'a [AtomicU32] {
        let at = (index & (capacity - 1)) as usize * self.slot_words;
        &self.slots[at..at + self.slot_words]
    }

    /// Words of a slot that are the caller's: all but the stamp.
    #[inline]
    pub fn payload_words(&self) -> usize {
        self.slot_words - usize::from(self.stamped)
    }
}

/// The stamp that says slot `index` is published.
#[inline]
fn stamp(index: u32) -> u32 {
    index | 1
}

/// Loads the first word of every cache line (16 words) of `words`, discarding the values: the
/// lines are on their way when they are read for real.
#[inline]
fn touch(words: &[AtomicU32]) {
    for word in words.iter().step_by(16) {
        std::hint::black_box(word.load(Ordering::Relaxed));
    }
}

/// `value` lies in the wrapping range `low..=high`.
fn within(value: u32, low: u32, high: u32) -> bool {
    value.wrapping_sub(low) <= high.wrapping_sub(low)
}

/// The producing end of a ring. Only one may exist per ring.
pub struct Producer<'a> {
    ring: RingShared<'a>,
    capacity: u32,
    /// Next slot to stage into.
    staged: u32,
    /// What the last `publish` stored in `tail`.
    published: u32,
    /// The consumer's `head` as last read.
    head: u32,
}

impl<'a> Producer<'a> {
    /// Takes over the producing end. `tail` and `head` must be equal (a fresh or drained ring).
    pub fn new(ring: RingShared<'a>) -> Result<Producer<'a>, RingError> {
        assert!(ring.payload_words() > 0, "a slot without room");
        assert!(
            !ring.stamped || ring.capacity() >= 2,
            "a stamped ring of one slot"
        );
        let tail = ring.tail.load(Ordering::Acquire);
        let head = ring.head.load(Ordering::Acquire);
        if tail != head {
            return Err(RingError::Corrupt {
                what: "initial head",
                value: head,
                low: tail,
                high: tail,
            });
        }
        Ok(Producer {
            capacity: ring.capacity(),
            ring,
            staged: tail,
            published: tail,
            head,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots free for staging, reading the consumer's `head` again if the cached value says
    /// fewer than `want` are free.
    #[inline]
    pub fn free(&mut self, want: u32) -> Result<u32, RingError> {
        let free = self.capacity - self.staged.wrapping_sub(self.head);
        if free >= want {
            return Ok(free);
        }
        let head = self.ring.head.load(Ordering::Acquire);
        // The consumer can only release what was published, and never un-release.
        if !within(head, self.head, self.published) {
            return Err(RingError::Corrupt {
                what: "head",
                value: head,
                low: self.head,
                high: self.published,
            });
        }
        self.head = head;
        Ok(self.capacity - self.staged.wrapping_sub(self.head))
    }

    /// Stages one slot (not visible to the consumer until [`Producer::publish`]). Returns false
    /// if the ring is full.
    #[inline]
    pub fn stage(&mut self, words: &[u32]) -> Result<bool, RingError> {
        assert_eq!(words.len(), self.ring.payload_words(), "slot size");
        if self.free(1)? == 0 {
            return Ok(false);
        }
        for (cell, &w) in self.ring.slot(self.staged, self.capacity).iter().zip(words) {
            cell.store(w, Ordering::Relaxed);
        }
        self.staged = self.staged.wrapping_add(1);
        Ok(true)
    }

    /// Stages one slot and returns its words (without the stamp) for the caller to fill (with
    /// relaxed stores, before the next [`Producer::publish`]), or `None` if the ring is full.
    /// For slots the caller fills in parts, without building a copy of the whole slot first.
    #[inline]
    pub fn stage_slot(&mut self) -> Result<Option<&'a [AtomicU32]>, RingError> {
        if self.free(1)? == 0 {
            return Ok(None);
        }
        let slot = self.ring.slot(self.staged, self.capacity);
        self.staged = self.staged.wrapping_add(1);
        Ok(Some(&slot[..self.ring.payload_words()]))
    }

    /// Staged slots not yet published.
    pub fn unpublished(&self) -> u32 {
        self.staged.wrapping_sub(self.published)
    }

    /// Forgets the slots staged since the last publish (a message that did not fit whole).
    pub fn unstage(&mut self) {
        self.staged = self.published;
    }

    /// Makes every staged slot visible to the consumer in one store (after a stamp in each,
    /// in a stamped ring). Returns whether the consumer announced it is going to sleep, so the
    /// caller must wake it.
    #[inline]
    pub fn publish(&mut self) -> bool {
        if self.staged == self.published {
            return false;
        }
        self.write_stamps();
        self.ring.tail.store(self.staged, Ordering::Release);
        self.published = self.staged;
        // Pairs with the fence in `Consumer::prepare_wait`: either the consumer sees the new
        // tail, or we see its waiting flag.
        fence(Ordering::SeqCst);
        self.ring.waiting.load(Ordering::Relaxed) != 0
    }

    /// Publishes like [`Producer::publish`], for a ring whose consumer never sleeps: no fence,
    /// no look at the waiting flag.
    #[inline]
    pub fn publish_quiet(&mut self) {
        if self.staged != self.published {
            self.write_stamps();
            self.ring.tail.store(self.staged, Ordering::Release);
            self.published = self.staged;
        }
    }

    /// Stamps the staged slots, in order, each after its contents.
    #[inline]
    fn write_stamps(&self) {
        if !self.ring.stamped {
            return;
        }
        let last = self.ring.slot_words - 1;
        let mut index = self.published;
        while index != self.staged {
            self.ring.slot(index, self.capacity)[last].store(stamp(index), Ordering::Release);
            index = index.wrapping_add(1);
        }
    }

    /// The shared word a sleeping consumer waits on (to wake it).
    pub fn wake_word(&self) -> &'a AtomicU32 {
        self.ring.tail
    }
}

/// The consuming end of a ring. Only one may exist per ring.
pub struct Consumer<'a> {
    ring: RingShared<'a>,
    capacity: u32,
    /// Next slot to read.
    next: u32,
    /// What the last `release` stored in `head`.
    released: u32,
    /// The producer's `tail` as last read.
    tail: u32,
    /// End of the slots known to be published (from `tail`, or from stamps).
    ready: u32,
}

impl<'a> Consumer<'a> {
    /// Takes over the consuming end at the current `head`.
    pub fn new(ring: RingShared<'a>) -> Consumer<'a> {
        // With one slot, a stamp would equal the one the slot had a lap earlier.
        assert!(
            !ring.stamped || ring.capacity() >= 2,
            "a stamped ring of one slot"
        );
        let head = ring.head.load(Ordering::Acquire);
        Consumer {
            capacity: ring.capacity(),
            ring,
            next: head,
            released: head,
            tail: head,
            ready: head,
        }
    }

    /// Published slots not yet read, looking for more only when the known ones are used up:
    /// at the stamp of the next slot in a stamped ring, at the producer's `tail` otherwise.
    #[inline]
    pub fn available(&mut self) -> Result<u32, RingError> {
        if self.next == self.ready {
            if self.ring.stamped {
                self.scan_stamps(1);
            } else {
                self.refresh()?;
            }
        }
        Ok(self.ready.wrapping_sub(self.next))
    }

    /// Looks for every slot published by now (at the stamps in a stamped ring, at `tail`
    /// otherwise) and returns how many are not read yet.
    #[inline]
    pub fn refresh(&mut self) -> Result<u32, RingError> {
        if self.ring.stamped {
            self.scan_stamps(self.capacity);
            return Ok(self.ready.wrapping_sub(self.next));
        }
        // Touch the slot the next message will use *before* reading `tail`: the producer
        // writes that slot, then `tail`, so in the poll that finds the new `tail` the slot's
        // cache lines are already on their way, and reading the slot right after costs no
        // second miss. (The values loaded here are discarded: the slot is read again after
        // the acquire load of `tail`.)
        touch(self.ring.slot(self.ready, self.capacity));
        let tail = self.ring.tail.load(Ordering::Acquire);
        // The producer can publish at most a ring ahead of what we released, and never
        // un-publish what we saw.
        let high = self.released.wrapping_add(self.capacity);
        if !within(tail, self.tail, high) {
            return Err(RingError::Corrupt {
                what: "tail",
                value: tail,
                low: self.tail,
                high,
            });
        }
        self.tail = tail;
        self.ready = tail;
        Ok(self.ready.wrapping_sub(self.next))
    }

    /// Extends the known published slots by up to `limit` slots whose stamps are in place.
    /// Never past a ring ahead of what was released: the slot there is still being read.
    #[inline]
    fn scan_stamps(&mut self, limit: u32) {
        let end = self.released.wrapping_add(self.capacity);
        let mut found = 0;
        while found < limit && self.ready != end {
            let slot = self.ring.slot(self.ready, self.capacity);
            let (last, body) = slot.split_last().expect("a stamped slot has words");
            // The other cache lines of the slot are requested together with the stamp's: the
            // producer writes them before the stamp, so when the stamp is there they are too,
            // and reading them right after costs no second miss.
            touch(body);
            if last.load(Ordering::Acquire) != stamp(self.ready) {
                break;
            }
            self.ready = self.ready.wrapping_add(1);
            found += 1;
        }
    }

    /// Copies out slot `next + i` (`i` below [`Consumer::available`]).
    #[inline]
    pub fn peek(&self, i: u32, out: &mut [u32]) {
        assert!(
            i < self.ready.wrapping_sub(self.next),
            "peek past the published slots"
        );
        assert_eq!(out.len(), self.ring.payload_words(), "slot size");
        for (o, cell) in out
            .iter_mut()
            .zip(self.ring.slot(self.next.wrapping_add(i), self.capacity))
        {
            *o = cell.load(Ordering::Relaxed);
        }
    }

    /// The words of slot `next + i` (`i` below [`Consumer::available`]), for a caller that
    /// loads only the words it needs. Each load is a fresh read of shared memory: validate what
    /// was loaded, and do not load a word twice expecting the same value.
    #[inline]
    pub fn slot(&self, i: u32) -> &'a [AtomicU32] {
        assert!(
            i < self.ready.wrapping_sub(self.next),
            "slot past the published slots"
        );
        let slot = self.ring.slot(self.next.wrapping_add(i), self.capacity);
        &slot[..self.ring.payload_words()]
    }

    /// Marks `n` peeked slots as read (they go back to the producer at the next release).
    #[inline]
    pub fn consume(&mut self, n: u32) {
        assert!(
            n <= self.ready.wrapping_sub(self.next),
            "consume past the published slots"
        );
        self.next = self.next.wrapping_add(n);
    }

    /// Slots consumed but not yet released.
    #[inline]
    pub fn unreleased(&self) -> u32 {
        self.next.wrapping_sub(self.released)
    }

    /// Hands every consumed slot back to the producer in one store.
    #[inline]
    pub fn release(&mut self) {
        if self.released != self.next {
            self.ring.head.store(self.next, Ordering::Release);
            self.released = self.next;
        }
    }

    /// Announces that this consumer is about to sleep, then looks for slots again. Returns
    /// `Some(v)` if the ring is still empty and the caller may sleep while `tail == v` (a futex
    /// wait on [`Consumer::wake_word`]); `None` if slots arrived meanwhile. Call
    /// [`Consumer::finish_wait`] after waking either way.
    pub fn prepare_wait(&mut self) -> Result<Option<u32>, RingError> {
        self.ring.waiting.store(1, Ordering::Relaxed);
        // Pairs with the fence in `Producer::publish`: either we see what it published (its
        // stamps or its tail), or it sees our flag.
        fence(Ordering::SeqCst);
        if self.refresh()? > 0 {
            self.finish_wait();
            return Ok(None);
        }
        if self.ring.stamped {
            // The value to sleep on: if the producer publishes after this load, `tail` differs
            // from it and the futex does not sleep (or the producer's wake-up ends the sleep).
            return Ok(Some(self.ring.tail.load(Ordering::Relaxed)));
        }
        Ok(Some(self.tail))
    }

    /// Clears the announcement of [`Consumer::prepare_wait`].
    pub fn finish_wait(&mut self) {
        self.ring.waiting.store(0, Ordering::Relaxed);
    }

    /// The shared word to sleep on.
    pub fn wake_word(&self) -> &'a AtomicU32 {
        self.ring.tail
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Mem {
        words: Vec<AtomicU32>,
    }

    impl Mem {
        fn new(cap: usize, slot_words: usize) -> Mem {
            Mem {
                words: (0..3 + cap * slot_words)
                    .map(|_| AtomicU32::new(0))
                    .collect(),
            }
        }
        fn ring(&self, slot_words: usize) -> RingShared<'_> {
            RingShared {
                tail: &self.words[0],
                head: &self.words[1],
                waiting: &self.words[2],
                slots: &self.words[3..],
                slot_words,
                stamped: false,
            }
        }
        fn stamped(&self, slot_words: usize) -> RingShared<'_> {
            RingShared {
                stamped: true,
                ..self.ring(slot_words)
            }
        }
    }

    /// Reads the two slots `[round, 1]` and `[round, 2]` the producer published, then
    /// consumes and releases them.
    fn take_round(c: &mut Consumer<'_>, round: u32) {
        let mut out = [0u32; 2];
        c.peek(0, &mut out);
        assert_eq!(out, [round, 1]);
        c.peek(1, &mut out);
        assert_eq!(out, [round, 2]);
        c.consume(2);
        c.release();
    }

    #[test]
    fn slots_arrive_in_order_only_after_publish_across_wraparound() {
        let mem = Mem::new(4, 2);
        // Start near the wrap of the 32-bit indices.
        mem.words[0].store(u32::MAX - 2, Ordering::Relaxed);
        mem.words[1].store(u32::MAX - 2, Ordering::Relaxed);
        let mut p = Producer::new(mem.ring(2)).unwrap();
        let mut c = Consumer::new(mem.ring(2));
        for round in 0..10u32 {
            assert!(p.stage(&[round, 1]).unwrap());
            assert!(p.stage(&[round, 2]).unwrap());
            assert_eq!(c.available().unwrap(), 0, "staged slots are invisible");
            assert!(!p.publish());
            assert_eq!(c.available().unwrap(), 2);
            take_round(&mut c, round);
        }
    }

    #[test]
    fn a_full_ring_refuses_until_the_consumer_releases() {
        let mem = Mem::new(2, 1);
        let mut p = Producer::new(mem.ring(1)).unwrap();
        let mut c = Consumer::new(mem.ring(1));
        assert!(p.stage(&[1]).unwrap());
        assert!(p.stage(&[2]).unwrap());
        assert!(!p.stage(&[3]).unwrap());
        p.publish();
        assert_eq!(c.available().unwrap(), 2);
        c.consume(1);
        assert!(!p.stage(&[3]).unwrap(), "consumed but not released");
        c.release();
        assert!(p.stage(&[3]).unwrap());
    }

    #[test]
    fn impossible_indices_are_reported_not_trusted() {
        let mem = Mem::new(4, 1);
        let mut c = Consumer::new(mem.ring(1));
        mem.words[0].store(5, Ordering::Relaxed); // tail more than a ring ahead
        assert!(matches!(
            c.available(),
            Err(RingError::Corrupt { what: "tail", .. })
        ));

        let mem = Mem::new(4, 1);
        let mut p = Producer::new(mem.ring(1)).unwrap();
        for i in 0..4 {
            assert!(p.stage(&[i]).unwrap());
        }
        p.publish();
        mem.words[1].store(9, Ordering::Relaxed); // head past what was published
        assert!(matches!(
            p.stage(&[0]),
            Err(RingError::Corrupt { what: "head", .. })
        ));
    }

    #[test]
    fn unstage_drops_an_unpublished_batch() {
        let mem = Mem::new(4, 1);
        let mut p = Producer::new(mem.ring(1)).unwrap();
        let mut c = Consumer::new(mem.ring(1));
        assert!(p.stage(&[7]).unwrap());
        p.unstage();
        assert_eq!(p.unpublished(), 0);
        p.publish();
        assert_eq!(c.available().unwrap(), 0);
    }

    #[test]
    fn a_waiting_consumer_is_reported_to_the_producer() {
        let mem = Mem::new(2, 1);
        let mut p = Producer::new(mem.ring(1)).unwrap();
        let mut c = Consumer::new(mem.ring(1));
        assert_eq!(c.prepare_wait().unwrap(), Some(0));
        assert!(p.stage(&[1]).unwrap());
        assert!(p.publish(), "the producer must wake the sleeper");
        c.finish_wait();
        assert_eq!(
            c.prepare_wait().unwrap(),
            None,
            "data arrived: do not sleep"
        );
        assert_eq!(mem.words[2].load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stamped_ring_shows_slots_by_their_stamps_only_after_publish() {
        let mem = Mem::new(4, 3);
        // Start near the wrap of the 32-bit indices, where a stamp of zeroed memory could be
        // mistaken for a published slot if stamps were not odd.
        mem.words[0].store(u32::MAX - 2, Ordering::Relaxed);
        mem.words[1].store(u32::MAX - 2, Ordering::Relaxed);
        let mut p = Producer::new(mem.stamped(3)).unwrap();
        let mut c = Consumer::new(mem.stamped(3));
        for round in 0..10u32 {
            assert!(p.stage(&[round, 1]).unwrap());
            assert!(p.stage(&[round, 2]).unwrap());
            assert_eq!(c.available().unwrap(), 0, "staged slots are invisible");
            assert_eq!(c.refresh().unwrap(), 0, "staged slots are invisible");
            assert!(!p.publish());
            // One slot at a time while polling, every published one on a refresh.
            assert_eq!(c.available().unwrap(), 1);
            assert_eq!(c.refresh().unwrap(), 2);
            take_round(&mut c, round);
        }
    }

    #[test]
    fn a_stamped_consumer_never_reads_tail_nor_takes_a_stale_stamp() {
        let mem = Mem::new(2, 2);
        let mut p = Producer::new(mem.stamped(2)).unwrap();
        let mut c = Consumer::new(mem.stamped(2));
        // A garbage tail changes nothing: the consumer goes by the stamps.
        mem.words[0].store(77, Ordering::Relaxed);
        assert_eq!(c.available().unwrap(), 0);
        mem.words[0].store(0, Ordering::Relaxed);
        for i in 0..2 {
            assert!(p.stage(&[i]).unwrap());
        }
        p.publish();
        assert_eq!(c.refresh().unwrap(), 2);
        c.consume(2);
        c.release();
        // Slot 0 still holds the stamp of index 0: index 2 must not take it for its own.
        assert_eq!(c.available().unwrap(), 0);
        assert!(p.stage(&[2]).unwrap());
        assert_eq!(c.available().unwrap(), 0, "staged, not published");
        assert!(!p.publish());
        assert_eq!(c.available().unwrap(), 1);
        let mut out = [0u32];
        c.peek(0, &mut out);
        assert_eq!(out, [2]);
    }

    #[test]
    fn a_waiting_consumer_of_a_stamped_ring_is_woken_and_sleeps_on_tail() {
        let mem = Mem::new(2, 2);
        let mut p = Producer::new(mem.stamped(2)).unwrap();
        let mut c = Consumer::new(mem.stamped(2));
        assert_eq!(c.prepare_wait().unwrap(), Some(0), "sleep while tail is 0");
        assert!(p.stage(&[1]).unwrap());
        assert!(p.publish(), "the producer must wake the sleeper");
        assert_eq!(mem.words[0].load(Ordering::Relaxed), 1, "tail moved too");
        c.finish_wait();
        assert_eq!(
            c.prepare_wait().unwrap(),
            None,
            "data arrived: do not sleep"
        );
    }
}
