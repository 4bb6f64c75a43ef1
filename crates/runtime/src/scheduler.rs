//! A single-threaded run-to-completion scheduler.
//!
//! Tasks live in a slab; a [`TaskId`] is a slot index plus the slot's generation, so an id of a
//! task that completed and was taken can never name the next task in the same slot. Each slot has
//! one [`Waker`], made when the slot is first used and kept for every task that later occupies it:
//! waking sets a bit in a two-level atomic bitset, and cloning a waker only bumps a refcount, so
//! scheduling allocates nothing once the slab has grown to its working size.
//!
//! A task is anything that implements [`Task`]: like a future, but polled with a `&mut C`
//! context, so tasks reach the state they operate on (socket tables, devices) by plain borrows
//! instead of shared mutable handles. [`FutureTask`] wraps any ordinary future.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Work the scheduler runs to completion: polled with the scheduler owner's context `C`.
pub trait Task<C> {
    type Output;
    fn poll(&mut self, ctx: &mut C, cx: &mut Context<'_>) -> Poll<Self::Output>;
}

/// Runs an ordinary [`Future`] as a [`Task`] (the context is not passed to it).
pub struct FutureTask<F>(pub Pin<Box<F>>);

impl<F: Future> FutureTask<F> {
    pub fn new(future: F) -> Self {
        FutureTask(Box::pin(future))
    }
}

impl<C, F: Future> Task<C> for FutureTask<F> {
    type Output = F::Output;
    fn poll(&mut self, _ctx: &mut C, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Names a task of a [`Scheduler`]: slot index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(u64);

impl TaskId {
    fn new(index: u32, generation: u32) -> TaskId {
        TaskId(u64::from(generation) << 32 | u64::from(index))
    }
    fn index(self) -> u32 {
        self.0 as u32
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    /// The id as a number (for a C API or a log line).
    pub fn as_u64(self) -> u64 {
        self.0
    }
    pub fn from_u64(raw: u64) -> TaskId {
        TaskId(raw)
    }
}

/// Which slots are ready to run: one bit per slot, a summary bit per 64-slot word, and a top
/// word with a bit per summary word (summary word `s` sets bit `s % 64`), so that checking for
/// ready slots is one load and draining costs O(ready words), not O(slots): a spinning wait
/// drains once per turn.
///
/// Marks set the levels bottom-up and drains clear them top-down, so a slot marked while a
/// drain runs is either taken by that drain or still flagged at every level for the next.
struct ReadySet {
    words: Box<[AtomicU64]>,
    summary: Box<[AtomicU64]>,
    top: AtomicU64,
}

impl ReadySet {
    fn new(capacity: usize) -> ReadySet {
        let words = capacity.div_ceil(64);
        let summaries = words.div_ceil(64);
        ReadySet {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            summary: (0..summaries).map(|_| AtomicU64::new(0)).collect(),
            top: AtomicU64::new(0),
        }
    }

    fn mark(&self, index: u32) {
        let word = index as usize / 64;
        let summary = word / 64;
        self.words[word].fetch_or(1 << (index % 64), Ordering::Release);
        self.summary[summary].fetch_or(1 << (word % 64), Ordering::Release);
        self.top.fetch_or(1 << (summary % 64), Ordering::Release);
    }

    fn any(&self) -> bool {
        self.top.load(Ordering::Relaxed) != 0
    }

    /// Calls `f` for every marked slot, clearing the marks first.
    fn drain(&self, mut f: impl FnMut(u32)) {
        let mut top = self.top.swap(0, Ordering::Acquire);
        while top != 0 {
            let first = top.trailing_zeros() as usize;
            top &= top - 1;
            // Summary words `first`, `first + 64`, … share this top bit (more than 64 only
            // beyond 262,144 slots).
            for s in (first..self.summary.len()).step_by(64) {
                let mut words = self.summary[s].swap(0, Ordering::Acquire);
                while words != 0 {
                    let w = s * 64 + words.trailing_zeros() as usize;
                    words &= words - 1;
                    let mut bits = self.words[w].swap(0, Ordering::Acquire);
                    while bits != 0 {
                        let index = w * 64 + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        f(index as u32);
                    }
                }
            }
        }
    }
}

struct SlotWaker {
    ready: Arc<ReadySet>,
    index: u32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.ready.mark(self.index);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.mark(self.index);
    }
}

enum State<T, O> {
    Free { next_free: Option<u32> },
    Running(T),
    Done(O),
}

struct Slot<T, O> {
    generation: u32,
    state: State<T, O>,
    waker: Waker,
}

/// Why [`Scheduler::take`] found no task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeError {
    /// The id never named a task here, or its task already completed and was taken.
    Unknown,
}

/// Runs [`Task`]s with context `C` to completion and keeps each result until it is taken.
pub struct Scheduler<C, T: Task<C>> {
    slots: Vec<Slot<T, T::Output>>,
    free_head: Option<u32>,
    ready: Arc<ReadySet>,
    capacity: usize,
    live: usize,
    /// Scratch list of ready slots, reused so `run` does not allocate.
    batch: Vec<u32>,
    _ctx: std::marker::PhantomData<fn(&mut C)>,
}

/// Returned by [`Scheduler::insert`] when every slot is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full {
    pub capacity: usize,
}

impl<C, T: Task<C>> Scheduler<C, T> {
    /// A scheduler that holds at most `capacity` tasks (running or completed but not yet taken).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0 && capacity <= u32::MAX as usize);
        Scheduler {
            slots: Vec::new(),
            free_head: None,
            ready: Arc::new(ReadySet::new(capacity)),
            capacity,
            live: 0,
            batch: Vec::new(),
            _ctx: std::marker::PhantomData,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tasks running or completed but not yet taken.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds a task; it runs at the next [`Scheduler::run`].
    pub fn insert(&mut self, task: T) -> Result<TaskId, Full> {
        let id = self.insert_with_state(State::Running(task))?;
        self.ready.mark(id.index());
        Ok(id)
    }

    /// Adds a task that already has its result (an operation that completed without waiting).
    pub fn insert_done(&mut self, output: T::Output) -> Result<TaskId, Full> {
        self.insert_with_state(State::Done(output))
    }

    fn insert_with_state(&mut self, state: State<T, T::Output>) -> Result<TaskId, Full> {
        let index = self.reserve()?;
        let slot = &mut self.slots[index as usize];
        slot.state = state;
        self.live += 1;
        Ok(TaskId::new(index, slot.generation))
    }

    /// Takes a slot off the free list (or grows the slab by one) and returns its index. The
    /// slot stays `Free` until the caller stores a state in it.
    fn reserve(&mut self) -> Result<u32, Full> {
        if let Some(index) = self.free_head {
            let State::Free { next_free } = self.slots[index as usize].state else {
                unreachable!("free list points at a busy slot");
            };
            self.free_head = next_free;
            return Ok(index);
        }
        if self.slots.len() == self.capacity {
            return Err(Full {
                capacity: self.capacity,
            });
        }
        let index = self.slots.len() as u32;
        let waker = Waker::from(Arc::new(SlotWaker {
            ready: self.ready.clone(),
            index,
        }));
        self.slots.push(Slot {
            generation: 0,
            state: State::Free { next_free: None },
            waker,
        });
        Ok(index)
    }

    /// Polls a task once and adds it, so an operation that can complete at once does so
    /// without a trip through the ready set: the task is polled with the waker of the slot it
    /// will occupy, then stored as done or as running. Returns its id and whether it completed.
    pub fn insert_and_poll(&mut self, mut task: T, ctx: &mut C) -> Result<(TaskId, bool), Full> {
        let index = self.reserve()?;
        let slot = &mut self.slots[index as usize];
        let mut cx = Context::from_waker(&slot.waker);
        let (state, done) = match task.poll(ctx, &mut cx) {
            Poll::Ready(output) => (State::Done(output), true),
            Poll::Pending => (State::Running(task), false),
        };
        slot.state = state;
        self.live += 1;
        Ok((TaskId::new(index, slot.generation), done))
    }

    /// Polls every task that was woken since the last run, once each. Returns how many completed.
    pub fn run(&mut self, ctx: &mut C) -> usize {
        self.run_with(ctx, |_| {})
    }

    /// Like [`Scheduler::run`], and tells `on_done` the id of each task that completed.
    pub fn run_with(&mut self, ctx: &mut C, mut on_done: impl FnMut(TaskId)) -> usize {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        self.ready.drain(|index| batch.push(index));
        let mut completed = 0;
        for &index in &batch {
            let Some(slot) = self.slots.get_mut(index as usize) else {
                continue;
            };
            let State::Running(task) = &mut slot.state else {
                continue; // a stale wake of a done or free slot
            };
            let mut cx = Context::from_waker(&slot.waker);
            if let Poll::Ready(output) = task.poll(ctx, &mut cx) {
                slot.state = State::Done(output);
                completed += 1;
                on_done(TaskId::new(index, slot.generation));
            }
        }
        self.batch = batch;
        completed
    }

    /// Whether any task has been woken and waits to run.
    pub fn has_ready(&self) -> bool {
        self.ready.any()
    }

    /// Whether the task has completed (and its result waits to be taken).
    pub fn is_done(&self, id: TaskId) -> Result<bool, TakeError> {
        match self.slot(id)?.state {
            State::Done(_) => Ok(true),
            State::Running(_) => Ok(false),
            State::Free { .. } => Err(TakeError::Unknown),
        }
    }

    /// Takes the result of a completed task, freeing its slot (the id is spent afterwards).
    /// `Ok(None)` while it runs.
    pub fn take(&mut self, id: TaskId) -> Result<Option<T::Output>, TakeError> {
        let next_free = self.free_head;
        let slot = self.slot_mut(id).ok_or(TakeError::Unknown)?;
        if !matches!(slot.state, State::Done(_)) {
            return Ok(None);
        }
        let State::Done(output) = std::mem::replace(&mut slot.state, State::Free { next_free })
        else {
            unreachable!("checked done above");
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = Some(id.index());
        self.live -= 1;
        Ok(Some(output))
    }

    /// Drops a task, finished or not, freeing its slot. Returns whether the id named a task.
    pub fn cancel(&mut self, id: TaskId) -> bool {
        if self.slot(id).is_err() {
            return false;
        }
        self.free(id);
        true
    }

    /// The running task, for an owner that needs to inspect it (e.g. to cancel by queue).
    pub fn get(&self, id: TaskId) -> Option<&T> {
        match &self.slot(id).ok()?.state {
            State::Running(task) => Some(task),
            _ => None,
        }
    }

    /// Ids of every running task, for sweeps such as failing all operations on a closed queue.
    pub fn running(&self) -> impl Iterator<Item = (TaskId, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match &slot.state {
                State::Running(task) => Some((TaskId::new(i as u32, slot.generation), task)),
                _ => None,
            })
    }

    /// Replaces a running task's work with its final result (e.g. a queue closed under it).
    pub fn complete(&mut self, id: TaskId, output: T::Output) -> bool {
        match self.slot_mut(id) {
            Some(slot) if matches!(slot.state, State::Running(_)) => {
                slot.state = State::Done(output);
                true
            }
            _ => false,
        }
    }

    /// Marks a task ready as if its waker had fired.
    pub fn wake(&self, id: TaskId) {
        if self.slot(id).is_ok() {
            self.ready.mark(id.index());
        }
    }

    fn slot(&self, id: TaskId) -> Result<&Slot<T, T::Output>, TakeError> {
        match self.slots.get(id.index() as usize) {
            Some(slot)
                if slot.generation == id.generation()
                    && !matches!(slot.state, State::Free { .. }) =>
            {
                Ok(slot)
            }
            _ => Err(TakeError::Unknown),
        }
    }

    fn slot_mut(&mut self, id: TaskId) -> Option<&mut Slot<T, T::Output>> {
        match self.slots.get_mut(id.index() as usize) {
            Some(slot)
                if slot.generation == id.generation()
                    && !matches!(slot.state, State::Free { .. }) =>
            {
                Some(slot)
            }
            _ => None,
        }
    }

    fn free(&mut self, id: TaskId) -> State<T, T::Output> {
        let index = id.index();
        let next_free = self.free_head;
        let slot = &mut self.slots[index as usize];
        let state = std::mem::replace(&mut slot.state, State::Free { next_free });
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = Some(index);
        self.live -= 1;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, Instant};
    use crate::timer::Timers;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    #[test]
    fn the_ready_set_finds_every_mark_once_beyond_64_summary_words() {
        // 300,000 slots: 73 summary words, so summary words 0 and 64 share a top bit.
        let set = ReadySet::new(300_000);
        assert!(!set.any());
        let marks = [
            0u32, 5, 63, 64, 4095, 4096, 70_000, 262_143, 262_144, 262_151, 299_999,
        ];
        for &m in marks.iter().rev() {
            set.mark(m);
            set.mark(m); // twice: still drained once
        }
        assert!(set.any());
        let mut seen = Vec::new();
        set.drain(|i| seen.push(i));
        seen.sort_unstable();
        assert_eq!(seen, marks);
        assert!(!set.any());
        set.drain(|i| panic!("slot {i} drained twice"));
    }

    #[test]
    fn marks_from_other_threads_are_never_lost_while_the_owner_drains() {
        // Four threads each mark their own 60,000 slots once, spread over all 73 summary words,
        // while this thread drains: every slot must come out exactly once.
        const THREADS: u32 = 4;
        const PER_THREAD: u32 = 60_000;
        let set = Arc::new(ReadySet::new((THREADS * PER_THREAD) as usize + 64));
        let markers: Vec<_> = (0..THREADS)
            .map(|t| {
                let set = set.clone();
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        set.mark(i * THREADS + t);
                    }
                })
            })
            .collect();
        let total = (THREADS * PER_THREAD) as usize;
        let mut seen = vec![false; total];
        let mut count = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while count < total {
            set.drain(|i| {
                assert!(
                    !std::mem::replace(&mut seen[i as usize], true),
                    "slot {i} twice"
                );
                count += 1;
            });
            assert!(
                std::time::Instant::now() < deadline,
                "{} marks lost",
                total - count
            );
        }
        for m in markers {
            m.join().unwrap();
        }
        set.drain(|i| panic!("slot {i} drained after all were seen"));
        assert!(!set.any());
    }

    /// A task that completes once the context counter reaches `target`, waking itself through a
    /// waker stored in the context.
    struct WaitFor {
        target: u32,
    }

    #[derive(Default)]
    struct Ctx {
        counter: u32,
        wakers: Vec<Waker>,
        polls: u32,
    }

    impl Task<Ctx> for WaitFor {
        type Output = u32;
        fn poll(&mut self, ctx: &mut Ctx, cx: &mut Context<'_>) -> Poll<u32> {
            ctx.polls += 1;
            if ctx.counter >= self.target {
                Poll::Ready(ctx.counter)
            } else {
                ctx.wakers.push(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    #[test]
    fn tasks_run_when_woken_and_results_are_taken_once() {
        let mut s: Scheduler<Ctx, WaitFor> = Scheduler::new(16);
        let mut ctx = Ctx::default();
        let a = s.insert(WaitFor { target: 1 }).unwrap();
        let b = s.insert(WaitFor { target: 2 }).unwrap();
        assert_eq!(s.run(&mut ctx), 0);
        assert_eq!(ctx.polls, 2);
        // Nothing woken: running again polls nothing.
        assert_eq!(s.run(&mut ctx), 0);
        assert_eq!(ctx.polls, 2);
        ctx.counter = 1;
        ctx.wakers.drain(..).for_each(Waker::wake);
        assert_eq!(s.run(&mut ctx), 1);
        assert_eq!(s.take(a), Ok(Some(1)));
        assert_eq!(s.take(a), Err(TakeError::Unknown), "a spent id is an error");
        assert_eq!(s.take(b), Ok(None));
        ctx.counter = 2;
        ctx.wakers.drain(..).for_each(Waker::wake);
        s.run(&mut ctx);
        assert_eq!(s.take(b), Ok(Some(2)));
        assert!(s.is_empty());
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let mut s: Scheduler<Ctx, WaitFor> = Scheduler::new(1);
        let mut ctx = Ctx::default();
        let a = s.insert(WaitFor { target: 0 }).unwrap();
        s.run(&mut ctx);
        assert_eq!(s.take(a), Ok(Some(0)));
        let b = s.insert(WaitFor { target: 0 }).unwrap();
        assert_ne!(a, b);
        assert_eq!(s.take(a), Err(TakeError::Unknown));
        assert_eq!(s.insert(WaitFor { target: 0 }), Err(Full { capacity: 1 }));
        assert!(s.cancel(b));
        assert!(!s.cancel(b));
    }

    #[test]
    fn wakers_of_many_tasks_land_in_the_right_slots() {
        let mut s: Scheduler<Ctx, WaitFor> = Scheduler::new(10_000);
        let mut ctx = Ctx::default();
        let ids: Vec<_> = (0..5_000)
            .map(|i| s.insert(WaitFor { target: i % 7 }).unwrap())
            .collect();
        for round in 0..7 {
            ctx.counter = round;
            ctx.wakers.drain(..).for_each(Waker::wake);
            s.run(&mut ctx);
        }
        for (i, id) in ids.into_iter().enumerate() {
            assert_eq!(
                s.take(id),
                Ok(Some(i as u32 % 7)),
                "task {i} finishes at its target"
            );
        }
    }

    #[test]
    fn futures_sleep_on_the_virtual_clock() {
        let clock = Clock::virtual_at(Instant::ZERO);
        let timers = Timers::new(clock.clone());
        let finished = Rc::new(Cell::new(Vec::new()));
        type Boxed = Pin<Box<dyn Future<Output = ()>>>;
        let mut s: Scheduler<(), FutureTask<Boxed>> = Scheduler::new(8);
        let mut ids = Vec::new();
        for ms in [30u64, 10, 20] {
            let t = timers.clone();
            let f = finished.clone();
            let fut: Boxed = Box::pin(async move {
                t.sleep(Duration::from_millis(ms)).await;
                let mut v = f.take();
                v.push(ms);
                f.set(v);
            });
            ids.push(s.insert(FutureTask::new(fut)).unwrap());
        }
        s.run(&mut ());
        assert_eq!(timers.len(), 3);
        for _ in 0..40 {
            clock.advance(Duration::from_millis(1));
            timers.fire();
            s.run(&mut ());
        }
        assert_eq!(finished.take(), vec![10, 20, 30]);
        for id in ids {
            assert_eq!(s.take(id), Ok(Some(())));
        }
    }
}
