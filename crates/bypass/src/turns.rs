//! Who may run next on one direction of a queue, and who waits for readiness.
//!
//! Operations of one direction of one socket (two pops, or two pushes, on a stream) must not
//! interleave their bytes, so they take [`Turns`] in the order they were issued: only the
//! operation whose turn it is touches the socket; the others park in the turn queue, and ending
//! a turn wakes exactly the next one (waking them all would make every waiting push re-check
//! after each completion: quadratic in the queue length). The operation whose turn it is parks
//! on [`Waiters`] for readiness (epoll, a completion ring, the stack's wakers).

use std::task::Waker;

/// Wakers of operations waiting for readiness of one direction of a socket.
#[derive(Default)]
pub(crate) struct Waiters(Vec<Waker>);

impl Waiters {
    pub(crate) fn park(&mut self, waker: &Waker) {
        if !self.0.iter().any(|w| w.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// First-come first-served turns of the operations of one direction.
#[derive(Default)]
pub(crate) struct Turns {
    next: u64,
    serving: u64,
    /// Operations waiting for their turn, with their wakers.
    waiting: Vec<(u64, Waker)>,
}

impl Turns {
    /// A new turn, after every turn taken before.
    pub(crate) fn take(&mut self) -> u64 {
        self.next += 1;
        self.next - 1
    }

    pub(crate) fn is_turn(&self, turn: u64) -> bool {
        self.serving == turn
    }

    /// Parks an operation until `turn` comes.
    pub(crate) fn wait(&mut self, turn: u64, waker: &Waker) {
        debug_assert!(
            turn > self.serving && turn < self.next,
            "waiting for a turn not pending"
        );
        match self.waiting.iter_mut().find(|(t, _)| *t == turn) {
            Some((_, w)) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => self.waiting.push((turn, waker.clone())),
        }
    }

    /// Ends `turn` (the current one) and wakes the operation whose turn comes next.
    pub(crate) fn finish(&mut self, turn: u64) {
        debug_assert_eq!(self.serving, turn, "a turn finished out of order");
        self.serving += 1;
        let serving = self.serving;
        if let Some(i) = self.waiting.iter().position(|(t, _)| *t == serving) {
            self.waiting.swap_remove(i).1.wake();
        }
    }

    /// Wakes every waiting operation (their queue closed: they complete with an error).
    pub(crate) fn wake_all(&mut self) {
        for (_, w) in self.waiting.drain(..) {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn ending_a_turn_wakes_only_the_next_one() {
        let mut turns = Turns::default();
        let counts: Vec<_> = (0..4)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let ids: Vec<u64> = (0..4).map(|_| turns.take()).collect();
        assert!(turns.is_turn(ids[0]));
        for i in 1..4 {
            turns.wait(ids[i], &Waker::from(counts[i].clone()));
        }
        turns.finish(ids[0]);
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, vec![0, 1, 0, 0]);
        assert!(turns.is_turn(ids[1]));
        turns.wake_all();
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, vec![0, 1, 1, 1]);
    }
}
