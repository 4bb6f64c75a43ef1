//! Out-of-order data waiting for a hole to fill (RFC 9293 §3.10.7.4, "seventh": segments
//! ahead of `RCV.NXT` are held, not dropped).
//!
//! Pieces are kept sorted by sequence number and never overlap: an arriving piece is trimmed
//! against what is already held, so every byte is stored at most once. The assembler is bounded
//! in pieces ([`Assembler::new`]); the bytes it holds are bounded by the receive window, which
//! the caller enforces before inserting.

use std::collections::VecDeque;

use bypass_runtime::Buffer;
use bypass_wire::TcpSeqNumber;

/// Held out-of-order data.
#[derive(Debug)]
pub struct Assembler {
    /// `(sequence number of the first byte, data)`, sorted, non-overlapping, non-empty.
    pieces: VecDeque<(TcpSeqNumber, Buffer)>,
    max_pieces: usize,
    bytes: usize,
}

/// What [`Assembler::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Some new bytes were stored.
    New,
    /// Every byte was held already.
    Duplicate,
    /// The piece limit was reached; nothing was stored.
    Full,
}

impl Assembler {
    pub fn new(max_pieces: usize) -> Assembler {
        assert!(max_pieces > 0);
        Assembler {
            pieces: VecDeque::with_capacity(max_pieces.min(64)),
            max_pieces,
            bytes: 0,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Stores the bytes of `data` (starting at `seq`) that are not held yet.
    pub fn insert(&mut self, seq: TcpSeqNumber, data: Buffer) -> Inserted {
        if data.is_empty() {
            return Inserted::Duplicate;
        }
        let mut new = false;
        let mut full = false;
        let mut start = seq;
        let end = seq + data.len();
        let mut i = 0;
        // Walk the held pieces, filling each gap between them that the new data covers.
        while start < end {
            let gap_end = match self.pieces.get(i) {
                Some((s, _)) if *s <= start => {
                    let piece_end = *s + self.pieces[i].1.len();
                    if piece_end > start {
                        start = piece_end.min(end);
                    }
                    i += 1;
                    continue;
                }
                Some((s, _)) => (*s).min(end),
                None => end,
            };
            if self.pieces.len() >= self.max_pieces {
                full = true;
                break;
            }
            let from = start - seq;
            let to = gap_end - seq;
            self.pieces.insert(i, (start, data.slice(from..to)));
            self.bytes += to - from;
            new = true;
            i += 1;
            start = gap_end;
        }
        self.check();
        if new {
            Inserted::New
        } else if full {
            Inserted::Full
        } else {
            Inserted::Duplicate
        }
    }

    /// Removes and returns the data that starts at or before `next` (the receiver's `RCV.NXT`),
    /// trimmed to start exactly at `next`, in order. Pieces wholly before `next` are dropped.
    pub fn pop_ready(&mut self, next: TcpSeqNumber) -> Option<Buffer> {
        loop {
            if self.pieces.front()?.0 > next {
                return None;
            }
            let (s, mut b) = self.pieces.pop_front()?;
            self.bytes -= b.len();
            let skip = next - s;
            if skip >= b.len() {
                continue;
            }
            b.advance(skip);
            return Some(b);
        }
    }

    /// The held ranges as `(left, right)` sequence numbers, merged where they touch, in order
    /// (for SACK blocks).
    pub fn ranges(&self) -> impl Iterator<Item = (TcpSeqNumber, TcpSeqNumber)> + '_ {
        let mut it = self.pieces.iter().peekable();
        std::iter::from_fn(move || {
            let (s, b) = it.next()?;
            let mut end = *s + b.len();
            while let Some((s2, b2)) = it.peek() {
                if *s2 != end {
                    break;
                }
                end = *s2 + b2.len();
                it.next();
            }
            Some((*s, end))
        })
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.bytes = 0;
    }

    fn check(&self) {
        if cfg!(debug_assertions) {
            let mut total = 0;
            for w in self.pieces.iter().zip(self.pieces.iter().skip(1)) {
                let ((s1, b1), (s2, _)) = w;
                assert!(
                    *s1 + b1.len() <= *s2,
                    "assembler pieces overlap or are unsorted"
                );
            }
            for (_, b) in &self.pieces {
                assert!(!b.is_empty());
                total += b.len();
            }
            assert_eq!(total, self.bytes);
            assert!(self.pieces.len() <= self.max_pieces);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bypass_runtime::{BufferPool, PoolConfig};
    use proptest::prelude::*;

    fn pool() -> BufferPool {
        BufferPool::new(&PoolConfig::frames(512)).unwrap()
    }

    fn stream(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    proptest! {
        /// Whatever order and overlap the pieces arrive in, what comes out is exactly the
        /// stream, once, in order.
        #[test]
        fn any_arrival_order_yields_the_stream_exactly_once(
            // Half the runs start just below the wrap of the sequence space.
            base in prop_oneof![any::<u32>(), (u32::MAX - 4000)..=u32::MAX],
            cuts in proptest::collection::vec((0usize..3000, 1usize..400), 1..60),
        ) {
            let p = pool();
            let data = stream(3400);
            let mut asm = Assembler::new(1000);
            let base = TcpSeqNumber(base);
            let mut next = base;
            let mut out = Vec::new();
            let mut pieces = cuts;
            pieces.push((0, 3400));
            for (off, len) in pieces {
                let len = len.min(3400 - off);
                let mut b = p.alloc().unwrap();
                b.extend_from_slice(&data[off..off + len.min(1900)]);
                asm.insert(base + off, b);
                while let Some(ready) = asm.pop_ready(next) {
                    out.extend_from_slice(&ready);
                    next += ready.len();
                }
            }
            prop_assert!(out.len() <= 3400);
            prop_assert_eq!(&out[..], &data[..out.len()]);
        }
    }

    #[test]
    fn the_piece_limit_is_kept_and_ranges_merge() {
        let p = pool();
        let mut asm = Assembler::new(2);
        let at = |o: usize| TcpSeqNumber(100) + o;
        assert_eq!(
            asm.insert(at(10), p.alloc_copy(&[1; 5]).unwrap()),
            Inserted::New
        );
        assert_eq!(
            asm.insert(at(15), p.alloc_copy(&[2; 5]).unwrap()),
            Inserted::New
        );
        assert_eq!(
            asm.insert(at(30), p.alloc_copy(&[3; 5]).unwrap()),
            Inserted::Full
        );
        assert_eq!(
            asm.insert(at(12), p.alloc_copy(&[4; 5]).unwrap()),
            Inserted::Duplicate
        );
        assert_eq!(asm.bytes(), 10);
        let r: Vec<_> = asm.ranges().collect();
        assert_eq!(r, vec![(at(10), at(20))]);
        assert!(asm.pop_ready(at(0)).is_none());
        let b = asm.pop_ready(at(12)).unwrap();
        assert_eq!(&b[..], &[1, 1, 1]);
        let b = asm.pop_ready(at(15)).unwrap();
        assert_eq!(&b[..], &[2; 5]);
        assert!(asm.is_empty());
    }
}
