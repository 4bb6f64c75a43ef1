//! Shared-memory queues: a [`bypass_shm::Channel`] to another process as a queue of a
//! [`crate::LibOs`].
//!
//! [`crate::LibOs::shm_create`] makes a named channel and [`crate::LibOs::shm_open`] attaches to
//! one; `push` sends an Sga as one message, `pop` receives the next whole message. Their tokens
//! mix in `wait_any` with sockets and files. An Sga from [`crate::LibOs::shm_alloc`] lives in
//! the channel's own arena and travels without a copy; any other Sga is copied into it.
//!
//! Order: pops of one queue complete in the order they were issued, each with the next message;
//! pushes are sent in the order they were issued (a push that finds the channel full waits in
//! the queue's outbox, and later pushes wait behind it).
//!
//! Endings: when the peer closes its end, pending and later pops complete with
//! [`QValue::EndOfStream`] once every message it sent has been popped; when the peer process
//! dies they fail with [`ErrorKind::PeerGone`] (within a few milliseconds: the channel watches
//! the peer's pidfd); a peer that corrupts the shared region gets the channel closed
//! ([`ErrorKind::ConnectionAborted`]).

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bypass_runtime::Sga;
use bypass_shm::{Channel, ChannelConfig, TrySendError};

use crate::error::{Error, ErrorKind, Result};
use crate::types::QValue;

/// Messages taken from one channel per engine poll (bounds the time one queue can hold a turn).
const RECV_BURST: usize = 64;

/// Bits of an engine key that index `queues`; the bits above are the slot's generation, so
/// an operation of a closed queue never reaches the next queue opened in its slot.
const INDEX_BITS: u32 = 12;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// The shared-memory queues of one LibOs.
pub(crate) struct ShmEngine {
    queues: Vec<Option<ShmQueue>>,
    /// Generation of each slot, bumped when a queue moves in.
    generations: Vec<u32>,
    limit: usize,
}

/// One channel and the operations waiting on it.
struct ShmQueue {
    channel: Channel,
    /// Messages received for pops that have not taken them yet.
    inbox: VecDeque<Sga>,
    /// Set once receiving has ended (the peer left, or broke the channel).
    ended: Option<QValue>,
    /// Pops issued and completed: pop `t` completes when `t == pops_done` and a message (or
    /// the end) is there.
    pops_issued: u64,
    pops_done: u64,
    pop_wakers: Vec<Waker>,
    /// Pushes that found the channel full, in order, with their tickets.
    outbox: VecDeque<(u64, Sga)>,
    pushes_issued: u64,
    /// Every push with a ticket below this has been sent (or failed, see `push_failed`).
    pushes_done: u64,
    /// The error of the push that failed first, and its ticket: it and all later pushes fail.
    push_failed: Option<(u64, Error)>,
    push_wakers: Vec<Waker>,
}

impl ShmQueue {
    fn new(channel: Channel) -> ShmQueue {
        ShmQueue {
            channel,
            inbox: VecDeque::new(),
            ended: None,
            pops_issued: 0,
            pops_done: 0,
            pop_wakers: Vec::new(),
            outbox: VecDeque::new(),
            pushes_issued: 0,
            pushes_done: 0,
            push_failed: None,
            push_wakers: Vec::new(),
        }
    }

    /// Pops waiting for a message that is not in the inbox yet.
    fn hungry(&self) -> bool {
        self.ended.is_none() && self.pops_issued > self.pops_done + self.inbox.len() as u64
    }

    /// Receives up to a burst of messages for waiting pops. Returns whether anything changed.
    fn receive(&mut self) -> bool {
        let mut progress = false;
        for _ in 0..RECV_BURST {
            if !self.hungry() {
                break;
            }
            match self.channel.try_recv() {
                Ok(Some(sga)) => {
                    self.inbox.push_back(sga);
                    progress = true;
                }
                Ok(None) => break,
                Err(e) => {
                    self.ended = Some(pop_end(e));
                    progress = true;
                    break;
                }
            }
        }
        if progress {
            wake_all(&mut self.pop_wakers);
        }
        progress
    }

    /// Sends what waits in the outbox, in order. Returns whether anything changed.
    fn send(&mut self) -> bool {
        let mut progress = false;
        while let Some((ticket, sga)) = self.outbox.pop_front() {
            match self.channel.try_send(sga) {
                Ok(()) => {
                    self.pushes_done = ticket + 1;
                    progress = true;
                }
                Err(TrySendError::Full(sga)) => {
                    self.outbox.push_front((ticket, sga));
                    break;
                }
                Err(TrySendError::Failed(e)) => {
                    self.fail_pushes(ticket, convert(e));
                    progress = true;
                    break;
                }
            }
        }
        if progress {
            wake_all(&mut self.push_wakers);
        }
        progress
    }

    fn fail_pushes(&mut self, from: u64, e: Error) {
        if self.push_failed.is_none() {
            self.push_failed = Some((from, e));
        }
        self.outbox.clear();
        self.pushes_done = self.pushes_issued;
    }
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

fn register(wakers: &mut Vec<Waker>, cx: &Context<'_>) {
    if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
        wakers.push(cx.waker().clone());
    }
}

impl ShmEngine {
    pub(crate) fn new(limit: usize) -> ShmEngine {
        ShmEngine {
            queues: Vec::new(),
            generations: Vec::new(),
            limit: limit.clamp(1, INDEX_MASK as usize + 1),
        }
    }

    fn insert(&mut self, channel: Channel) -> Result<u32> {
        let q = Some(ShmQueue::new(channel));
        let i = match self.queues.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.queues.len() < self.limit => {
                self.queues.push(None);
                self.generations.push(0);
                self.queues.len() - 1
            }
            None => {
                return Err(Error::new(
                    ErrorKind::NoBufferSpace,
                    "too many shared-memory queues open; close some or raise limits.max_queues",
                ))
            }
        };
        self.queues[i] = q;
        let generation = self.generations[i].wrapping_add(1) & (u32::MAX >> INDEX_BITS);
        self.generations[i] = generation;
        Ok(i as u32 | generation << INDEX_BITS)
    }

    /// The slot of `key`, if it still holds the queue the key was made for.
    fn slot(&self, key: u32) -> Option<usize> {
        let i = (key & INDEX_MASK) as usize;
        (self.generations.get(i) == Some(&(key >> INDEX_BITS))).then_some(i)
    }

    fn queue(&mut self, key: u32) -> Result<&mut ShmQueue> {
        self.slot(key)
            .and_then(|i| self.queues[i].as_mut())
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "the shared-memory queue is closed"))
    }

    pub(crate) fn create(&mut self, name: &str) -> Result<u32> {
        let channel = Channel::create(name, &ChannelConfig::default()).map_err(convert)?;
        self.insert(channel)
    }

    pub(crate) fn open(&mut self, name: &str) -> Result<u32> {
        let channel = Channel::open(name, Duration::ZERO).map_err(convert)?;
        self.insert(channel)
    }

    /// Closes the channel; its pending operations complete with `Canceled` when next polled.
    pub(crate) fn close(&mut self, key: u32) -> Result<()> {
        let q = self
            .slot(key)
            .and_then(|i| self.queues[i].take())
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "the shared-memory queue is closed"))?;
        let (mut q, mut pops, mut pushes) = (q, Vec::new(), Vec::new());
        std::mem::swap(&mut pops, &mut q.pop_wakers);
        std::mem::swap(&mut pushes, &mut q.push_wakers);
        drop(q);
        wake_all(&mut pops);
        wake_all(&mut pushes);
        Ok(())
    }

    /// An Sga of `len` bytes in the channel's arena (sent without a copy).
    pub(crate) fn alloc(&mut self, key: u32, len: usize) -> Result<Sga> {
        let q = self.queue(key)?;
        let mut sga = Sga::new();
        let mut left = len;
        while left > 0 {
            let mut buf = q.channel.alloc().ok_or_else(|| {
                Error::new(
                    ErrorKind::NoBufferSpace,
                    "the shared-memory queue's arena is exhausted: buffers are still held by \
                     the peer or by this process; drop Sgas sooner",
                )
            })?;
            let n = left.min(buf.tailroom());
            buf.append(n);
            left -= n;
            sga.push(buf);
        }
        Ok(sga)
    }

    pub(crate) fn push(&mut self, key: u32, sga: Sga) -> Result<Op> {
        let q = self.queue(key)?;
        if let Some((_, e)) = &q.push_failed {
            return Err(e.clone());
        }
        let ticket = q.pushes_issued;
        let bytes = sga.len();
        q.pushes_issued += 1;
        if q.outbox.is_empty() {
            match q.channel.try_send(sga) {
                Ok(()) => q.pushes_done = ticket + 1,
                Err(TrySendError::Full(sga)) => q.outbox.push_back((ticket, sga)),
                Err(TrySendError::Failed(e)) => {
                    let e = convert(e);
                    if e.kind() == ErrorKind::InvalidArgument {
                        // Too large for this channel: refuse the call, the queue is fine.
                        q.pushes_issued -= 1;
                        return Err(Error::new(ErrorKind::MessageTooLong, e.message()));
                    }
                    q.fail_pushes(ticket, e);
                }
            }
        } else {
            q.outbox.push_back((ticket, sga));
        }
        Ok(Op::Push { key, ticket, bytes })
    }

    pub(crate) fn pop(&mut self, key: u32) -> Result<Op> {
        let q = self.queue(key)?;
        let ticket = q.pops_issued;
        q.pops_issued += 1;
        Ok(Op::Pop { key, ticket })
    }

    /// Whether some pop waits for a message.
    pub(crate) fn waiting(&self) -> bool {
        self.queues.iter().flatten().any(ShmQueue::hungry)
    }

    /// Sends queued pushes and receives for waiting pops on every channel. With nothing to do
    /// and `block_ms` > 0, sleeps on the channel's futex if exactly one channel has pops
    /// waiting (several cannot be waited on at once: then it only yields). Returns whether
    /// anything happened.
    pub(crate) fn poll(&mut self, block_ms: i32) -> bool {
        let mut progress = false;
        for q in self.queues.iter_mut().flatten() {
            if !q.outbox.is_empty() {
                progress |= q.send();
            }
            if q.hungry() {
                progress |= q.receive();
            }
        }
        if !progress && block_ms > 0 {
            let mut hungry = self.queues.iter_mut().flatten().filter(|q| q.hungry());
            match (hungry.next(), hungry.next()) {
                (Some(q), None) => {
                    let _ = q
                        .channel
                        .wait_readable(Duration::from_millis(block_ms as u64));
                    progress |= q.receive();
                }
                (Some(_), Some(_)) => std::thread::yield_now(),
                _ => {}
            }
        }
        progress
    }
}

/// A pending operation on a shared-memory queue.
pub(crate) enum Op {
    Push { key: u32, ticket: u64, bytes: usize },
    Pop { key: u32, ticket: u64 },
}

impl Op {
    pub(crate) fn poll(&mut self, engine: &mut ShmEngine, cx: &mut Context<'_>) -> Poll<QValue> {
        match *self {
            Op::Push { key, ticket, bytes } => {
                let Ok(q) = engine.queue(key) else {
                    return Poll::Ready(canceled());
                };
                if ticket >= q.pushes_done {
                    register(&mut q.push_wakers, cx);
                    return Poll::Pending;
                }
                match &q.push_failed {
                    Some((from, e)) if ticket >= *from => Poll::Ready(QValue::Failed(e.clone())),
                    _ => Poll::Ready(QValue::Pushed { bytes }),
                }
            }
            Op::Pop { key, ticket } => {
                let Ok(q) = engine.queue(key) else {
                    return Poll::Ready(canceled());
                };
                if ticket == q.pops_done {
                    if q.inbox.is_empty() && q.ended.is_none() {
                        q.receive();
                    }
                    let value = match q.inbox.pop_front() {
                        Some(sga) => Some(QValue::Popped { sga, from: None }),
                        None => q.ended.as_ref().map(copy_end),
                    };
                    if let Some(value) = value {
                        q.pops_done += 1;
                        // The next pop in line may be ready too.
                        wake_all(&mut q.pop_wakers);
                        return Poll::Ready(value);
                    }
                }
                register(&mut q.pop_wakers, cx);
                Poll::Pending
            }
        }
    }
}

fn canceled() -> QValue {
    QValue::Failed(Error::new(
        ErrorKind::Canceled,
        "the queue was closed while the operation was pending",
    ))
}

/// What pops get once receiving has ended.
fn pop_end(e: bypass_shm::Error) -> QValue {
    match e.kind() {
        bypass_shm::ErrorKind::PeerClosed => QValue::EndOfStream,
        _ => QValue::Failed(convert(e)),
    }
}

fn copy_end(v: &QValue) -> QValue {
    match v {
        QValue::Failed(e) => QValue::Failed(e.clone()),
        _ => QValue::EndOfStream,
    }
}

/// The queue API's error for a channel error, keeping its message.
fn convert(e: bypass_shm::Error) -> Error {
    use bypass_shm::ErrorKind as S;
    let kind = match e.kind() {
        S::NotFound => ErrorKind::NotFound,
        S::InUse => ErrorKind::AlreadyExists,
        S::InvalidInput => ErrorKind::InvalidArgument,
        S::Incompatible => ErrorKind::Unsupported,
        S::PeerGone | S::PeerClosed => ErrorKind::PeerGone,
        S::Corrupt => ErrorKind::ConnectionAborted,
        S::TimedOut => ErrorKind::TimedOut,
        S::Os => ErrorKind::Io,
    };
    Error::new(kind, e.message())
}
