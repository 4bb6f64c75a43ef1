//! Model checks of the ring with loom: every interleaving of a producer and a consumer thread
//! (and every allowed reordering of their memory accesses) on a small ring.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p bypass-shm --release --test loom`. Without
//! `--cfg loom` this file is empty.

#![cfg(loom)]

use bypass_shm::ring::{Consumer, Producer, RingShared};
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;

/// Three control words and `cap` slots of two words (and a stamp, in a stamped ring).
struct Mem {
    words: Vec<AtomicU32>,
    stamped: bool,
}

impl Mem {
    fn new(cap: usize, stamped: bool) -> Arc<Mem> {
        let slot_words = 2 + usize::from(stamped);
        Arc::new(Mem {
            words: (0..3 + slot_words * cap)
                .map(|_| AtomicU32::new(0))
                .collect(),
            stamped,
        })
    }
    fn ring(&self) -> RingShared<'_> {
        RingShared {
            tail: &self.words[0],
            head: &self.words[1],
            waiting: &self.words[2],
            slots: &self.words[3..],
            slot_words: 2 + usize::from(self.stamped),
            stamped: self.stamped,
        }
    }
}

/// Three messages through a two-slot ring, published in batches: the consumer sees each
/// message once, in order, with both words of it written, and the producer never overwrites a
/// slot the consumer has not released.
#[test]
fn messages_arrive_whole_in_order_through_a_wrapping_ring() {
    messages_arrive_whole_in_order(false);
}

/// The same where the consumer learns of published slots from their stamps, not from `tail`.
#[test]
fn messages_arrive_whole_in_order_through_a_wrapping_stamped_ring() {
    messages_arrive_whole_in_order(true);
}

fn messages_arrive_whole_in_order(stamped: bool) {
    loom::model(move || {
        let mem = Mem::new(2, stamped);
        let producer = loom::thread::spawn({
            let mem = mem.clone();
            move || {
                let mut p = Producer::new(mem.ring()).unwrap();
                let mut next = 1u32;
                while next <= 3 {
                    if p.stage(&[next, next * 10]).unwrap() {
                        next += 1;
                        // Publish after every second message, and after the last.
                        if next % 2 == 1 || next > 3 {
                            p.publish();
                        }
                    } else {
                        p.publish();
                        loom::thread::yield_now();
                    }
                }
            }
        });
        let mut c = Consumer::new(mem.ring());
        let mut want = 1u32;
        let mut slot = [0u32; 2];
        while want <= 3 {
            let n = c.available().unwrap();
            if n == 0 {
                loom::thread::yield_now();
                continue;
            }
            for i in 0..n {
                c.peek(i, &mut slot);
                assert_eq!(slot, [want, want * 10], "slot {i}");
                want += 1;
            }
            c.consume(n);
            c.release();
        }
        producer.join().unwrap();
    });
}

/// The sleep handshake: a consumer that decides to sleep (sees an empty ring after announcing
/// it) is always seen as waiting by the producer that publishes next, so it is woken.
#[test]
fn a_wakeup_is_never_lost() {
    a_wakeup_is_never_lost_in(false);
}

/// The same with a stamped ring, whose consumer checks the stamp instead of `tail`.
#[test]
fn a_wakeup_is_never_lost_in_a_stamped_ring() {
    a_wakeup_is_never_lost_in(true);
}

fn a_wakeup_is_never_lost_in(stamped: bool) {
    loom::model(move || {
        let mem = Mem::new(2, stamped);
        let woke = Arc::new(AtomicU32::new(0));
        let producer = loom::thread::spawn({
            let (mem, woke) = (mem.clone(), woke.clone());
            move || {
                let mut p = Producer::new(mem.ring()).unwrap();
                assert!(p.stage(&[1, 2]).unwrap());
                if p.publish() {
                    woke.store(1, Ordering::SeqCst);
                }
            }
        });
        let mut c = Consumer::new(mem.ring());
        let sleeps = c.prepare_wait().unwrap();
        producer.join().unwrap();
        if sleeps.is_some() {
            // It would be asleep now: the producer must have seen it waiting.
            assert_eq!(woke.load(Ordering::SeqCst), 1, "lost wake-up");
            c.finish_wait();
        }
        assert_eq!(c.available().unwrap(), 1);
    });
}
