//! Deadlines that wake tasks.
//!
//! [`Timers`] keeps a min-heap of deadlines, each with the [`Waker`] of the task waiting on it.
//! The owner of the event loop calls [`Timers::fire`] after reading the clock; every deadline at
//! or before that time wakes its task. [`Sleep`] is the future tasks await.
//!
//! Cancelled entries stay in the heap until they reach its top (lazy deletion), so cancelling is
//! O(1); the generation number of a slot tells a stale heap entry from a live one.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::clock::{Clock, Instant};

/// Names one armed deadline in a [`Timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

struct Slot {
    generation: u32,
    /// `Some` while armed.
    armed: Option<(Instant, Waker)>,
}

struct Queue {
    clock: Clock,
    slots: Vec<Slot>,
    free: Vec<u32>,
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    armed: usize,
}

/// A set of deadlines on one clock. Cheap to clone; clones share the set.
#[derive(Clone)]
pub struct Timers(Rc<RefCell<Queue>>);

impl Timers {
    pub fn new(clock: Clock) -> Timers {
        Timers(Rc::new(RefCell::new(Queue {
            clock,
            slots: Vec::new(),
            free: Vec::new(),
            heap: BinaryHeap::new(),
            armed: 0,
        })))
    }

    pub fn clock(&self) -> Clock {
        self.0.borrow().clock.clone()
    }

    pub fn now(&self) -> Instant {
        self.0.borrow().clock.now()
    }

    /// Arms a deadline that wakes `waker` once the clock reaches `deadline`.
    pub fn arm(&self, deadline: Instant, waker: Waker) -> TimerId {
        let mut q = self.0.borrow_mut();
        let index = match q.free.pop() {
            Some(i) => i,
            None => {
                q.slots.push(Slot {
                    generation: 0,
                    armed: None,
                });
                u32::try_from(q.slots.len() - 1).expect("more than 2^32 timers")
            }
        };
        let slot = &mut q.slots[index as usize];
        debug_assert!(slot.armed.is_none());
        slot.armed = Some((deadline, waker));
        let generation = slot.generation;
        q.heap.push(Reverse((deadline, index, generation)));
        q.armed += 1;
        TimerId { index, generation }
    }

    /// Replaces the waker of an armed deadline (a task polled with a new context).
    pub fn update_waker(&self, id: TimerId, waker: &Waker) {
        let mut q = self.0.borrow_mut();
        if let Some(slot) = q.slots.get_mut(id.index as usize) {
            if slot.generation == id.generation {
                if let Some((_, w)) = &mut slot.armed {
                    if !w.will_wake(waker) {
                        *w = waker.clone();
                    }
                }
            }
        }
    }

    /// Disarms a deadline. Returns false if it had already fired or been cancelled.
    pub fn cancel(&self, id: TimerId) -> bool {
        let mut q = self.0.borrow_mut();
        let Some(slot) = q.slots.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation || slot.armed.is_none() {
            return false;
        }
        slot.armed = None;
        slot.generation = slot.generation.wrapping_add(1);
        q.free.push(id.index);
        q.armed -= 1;
        true
    }

    /// Whether `id` is still armed.
    pub fn is_armed(&self, id: TimerId) -> bool {
        let q = self.0.borrow();
        q.slots
            .get(id.index as usize)
            .is_some_and(|s| s.generation == id.generation && s.armed.is_some())
    }

    /// Wakes every deadline at or before the clock's current time. Returns how many fired.
    pub fn fire(&self) -> usize {
        let now = self.now();
        let mut fired = 0;
        loop {
            // Take one waker at a time and wake it outside the borrow: a woken task may not run
            // now, but a waker is free to touch the timers.
            let waker = {
                let mut q = self.0.borrow_mut();
                let Some(&Reverse((deadline, index, generation))) = q.heap.peek() else {
                    break;
                };
                if deadline > now {
                    break;
                }
                q.heap.pop();
                let slot = &mut q.slots[index as usize];
                if slot.generation != generation || slot.armed.is_none() {
                    continue; // cancelled
                }
                let (_, waker) = slot.armed.take().expect("checked above");
                slot.generation = slot.generation.wrapping_add(1);
                q.free.push(index);
                q.armed -= 1;
                waker
            };
            waker.wake();
            fired += 1;
        }
        fired
    }

    /// The earliest armed deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut q = self.0.borrow_mut();
        // Drop cancelled entries from the top so the answer is exact.
        while let Some(&Reverse((_, index, generation))) = q.heap.peek() {
            let slot = &q.slots[index as usize];
            if slot.generation == generation && slot.armed.is_some() {
                break;
            }
            q.heap.pop();
        }
        q.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// How many deadlines are armed.
    pub fn len(&self) -> usize {
        self.0.borrow().armed
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A future that completes once the clock reaches `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            timers: self.clone(),
            deadline,
            id: None,
        }
    }

    /// A future that completes once `duration` has passed on the clock.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now() + duration)
    }
}

/// Completes once the clock of its [`Timers`] reaches the deadline. Dropping it disarms it.
pub struct Sleep {
    timers: Timers,
    deadline: Instant,
    id: Option<TimerId>,
}

impl Sleep {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.timers.now() >= self.deadline {
            if let Some(id) = self.id.take() {
                self.timers.cancel(id);
            }
            return Poll::Ready(());
        }
        match self.id {
            Some(id) if self.timers.is_armed(id) => self.timers.update_waker(id, cx.waker()),
            _ => {
                let id = self.timers.arm(self.deadline, cx.waker().clone());
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.timers.cancel(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Counter(AtomicUsize);
    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let c = Arc::new(Counter(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn deadlines_fire_in_order_only_when_reached() {
        let clock = Clock::virtual_at(Instant::ZERO);
        let timers = Timers::new(clock.clone());
        let (a, wa) = counter();
        let (b, wb) = counter();
        timers.arm(Instant::from_millis(20), wb);
        timers.arm(Instant::from_millis(10), wa);
        assert_eq!(timers.next_deadline(), Some(Instant::from_millis(10)));
        assert_eq!(timers.fire(), 0);
        clock.advance(Duration::from_millis(10));
        assert_eq!(timers.fire(), 1);
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 0);
        clock.advance(Duration::from_millis(15));
        assert_eq!(timers.fire(), 1);
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn cancelled_deadline_never_fires_and_its_slot_is_reused() {
        let clock = Clock::virtual_at(Instant::ZERO);
        let timers = Timers::new(clock.clone());
        let (a, wa) = counter();
        let id = timers.arm(Instant::from_millis(1), wa.clone());
        assert!(timers.cancel(id));
        assert!(!timers.cancel(id), "second cancel is a no-op");
        let id2 = timers.arm(Instant::from_millis(5), wa);
        assert_ne!(id, id2, "a reused slot gets a new generation");
        assert_eq!(timers.next_deadline(), Some(Instant::from_millis(5)));
        clock.advance(Duration::from_millis(2));
        assert_eq!(timers.fire(), 0);
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
        assert!(
            !timers.cancel(id),
            "a stale id does not cancel the slot's new deadline"
        );
        assert!(timers.is_armed(id2));
    }

    #[test]
    fn sleep_completes_at_its_deadline_and_disarms_on_drop() {
        let clock = Clock::virtual_at(Instant::ZERO);
        let timers = Timers::new(clock.clone());
        let (_, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut sleep = Box::pin(timers.sleep(Duration::from_millis(3)));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        assert_eq!(timers.len(), 1);
        clock.advance(Duration::from_millis(3));
        assert!(sleep.as_mut().poll(&mut cx).is_ready());
        assert_eq!(timers.len(), 0);
        let mut other = Box::pin(timers.sleep(Duration::from_millis(3)));
        assert!(other.as_mut().poll(&mut cx).is_pending());
        drop(other);
        assert!(timers.is_empty());
    }
}
