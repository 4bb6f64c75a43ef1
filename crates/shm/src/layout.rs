//! Where everything sits in the shared region, computed from a few geometry numbers.
//!
//! ```text
//! 0      header (4 KiB): magic, version, geometry, per-side pid and state
//! 4096   data ring 0 (side 0 -> side 1): tail | head | waiting (128 B apart), then slots
//!        data ring 1 (side 1 -> side 0)
//!        return ring 0 (chunks of side 0's half coming home from side 1)
//!        return ring 1
//! arena  (4 KiB aligned) half 0: side 0's chunks | half 1: side 1's chunks
//! ```
//!
//! Side 0 is the creator, side 1 the opener. A data slot is [`SLOT_WORDS`] words (128 B, two
//! cache lines): a descriptor of four words `[chunk, start, len, flags]`, room for a small
//! message's bytes, and last the ring's stamp (data rings are stamped: see [`crate::ring`]). A
//! descriptor either names bytes in the *sender's* half (zero-copy), or has [`FLAG_INLINE`] and
//! carries the message itself, up to [`INLINE_MAX`] bytes, after the descriptor. A return slot is one word, a chunk index of the *receiver's* half. A return ring
//! has a slot for every chunk of the half, so the side returning chunks never runs out of room
//! (it returns each chunk it holds once).

use crate::Error;

/// "bypasshm" in ASCII.
pub const MAGIC: u64 = u64::from_be_bytes(*b"bypasshm");
pub const VERSION: u32 = 2;

pub const HEADER_LEN: usize = 4096;
pub const OFF_MAGIC: usize = 0;
pub const OFF_VERSION: usize = 8;
pub const OFF_RING_SLOTS: usize = 12;
pub const OFF_CHUNK_SIZE: usize = 16;
pub const OFF_CHUNKS: usize = 20;
pub const OFF_HEADROOM: usize = 24;
pub const OFF_REGION_LEN: usize = 32;
/// Per side `s`: pid at `OFF_SIDE + s * SIDE_STRIDE`, state 4 bytes later.
pub const OFF_SIDE: usize = 128;
pub const SIDE_STRIDE: usize = 128;

/// A side's state word.
pub const STATE_ABSENT: u32 = 0;
pub const STATE_ATTACHED: u32 = 1;
pub const STATE_CLOSED: u32 = 2;

/// Descriptor flag: more descriptors of the same message follow.
pub const FLAG_MORE: u32 = 1;
/// Descriptor flag: the message's `len` bytes follow the descriptor in its slot (the chunk is
/// [`NO_CHUNK`], start 0, and no other flag is set: an inline message is always whole).
pub const FLAG_INLINE: u32 = 2;
/// The chunk index of a descriptor that names no chunk (an inline message).
pub const NO_CHUNK: u32 = u32::MAX;
/// Words of a descriptor, at the front of a data slot.
pub const DESC_WORDS: usize = 4;
/// Words of a data slot: the descriptor, the bytes of an inline message, the stamp.
pub const SLOT_WORDS: usize = 32;
/// Words of a data slot that carry an inline message's bytes.
pub const INLINE_WORDS: usize = SLOT_WORDS - DESC_WORDS - 1;
/// The most bytes an inline message carries (a channel whose buffers hold fewer inlines only
/// up to its buffers' data capacity, so the receiver can copy it into one buffer).
pub const INLINE_MAX: usize = INLINE_WORDS * 4;

/// Bytes between the shared words of a ring (two cache lines, against adjacent-line prefetch).
const LINE: usize = 128;
const RING_CONTROL: usize = 3 * LINE;

pub const MAX_RING_SLOTS: u32 = 1 << 16;
pub const MAX_CHUNKS: u32 = 1 << 20;
pub const MIN_CHUNK_SIZE: u32 = 64;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Largest region an opener agrees to map.
pub const MAX_REGION_LEN: u64 = 64 << 30;

/// The numbers that fix a channel's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Descriptor slots per data ring (a power of two).
    pub ring_slots: u32,
    /// Bytes per arena chunk.
    pub chunk_size: u32,
    /// Chunks in each side's half of the arena.
    pub chunks: u32,
    /// Bytes left free at the front of a new send buffer.
    pub headroom: u32,
}

/// Offsets of one ring.
#[derive(Clone, Copy, Debug)]
pub struct RingAt {
    pub tail: usize,
    pub head: usize,
    pub waiting: usize,
    pub slots: usize,
    /// Slots (a power of two).
    pub capacity: usize,
    pub slot_words: usize,
}

impl RingAt {
    fn new(at: usize, capacity: usize, slot_words: usize) -> RingAt {
        RingAt {
            tail: at,
            head: at + LINE,
            waiting: at + 2 * LINE,
            slots: at + RING_CONTROL,
            capacity,
            slot_words,
        }
    }

    fn end(&self) -> usize {
        (self.slots + self.capacity * self.slot_words * 4).next_multiple_of(LINE)
    }
}

/// Every offset of a region of a given geometry.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub geometry: Geometry,
    /// Data ring carrying side `s`'s messages.
    pub data: [RingAt; 2],
    /// Return ring carrying side `s`'s chunks home.
    pub ret: [RingAt; 2],
    /// Start of side `s`'s arena half.
    pub half: [usize; 2],
    pub half_len: usize,
    pub len: usize,
}

impl Geometry {
    /// Checks the numbers (from a caller, or read from a region a peer made).
    pub fn validate(&self) -> Result<(), Error> {
        let g = self;
        if !g.ring_slots.is_power_of_two() || !(2..=MAX_RING_SLOTS).contains(&g.ring_slots) {
            return Err(Error::invalid(format!(
                "ring_slots = {}: must be a power of two in 2..={MAX_RING_SLOTS}",
                g.ring_slots
            )));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&g.chunk_size)
            || !g.chunk_size.is_multiple_of(64)
        {
            return Err(Error::invalid(format!(
                "chunk_size = {}: must be a multiple of 64 in {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                g.chunk_size
            )));
        }
        if !(1..=MAX_CHUNKS).contains(&g.chunks) {
            return Err(Error::invalid(format!(
                "chunks = {}: must be in 1..={MAX_CHUNKS}",
                g.chunks
            )));
        }
        if g.headroom >= g.chunk_size {
            return Err(Error::invalid(format!(
                "headroom = {} must be smaller than chunk_size = {}",
                g.headroom, g.chunk_size
            )));
        }
        let half = u64::from(g.chunk_size) * u64::from(g.chunks);
        if 2 * half > MAX_REGION_LEN {
            return Err(Error::invalid(format!(
                "arena of 2 x {half} B is larger than the limit of {MAX_REGION_LEN} B"
            )));
        }
        Ok(())
    }

    /// The largest message sent inline: [`INLINE_MAX`], or less if a buffer holds less.
    pub fn inline_max(&self) -> usize {
        INLINE_MAX.min((self.chunk_size - self.headroom) as usize)
    }

    /// The layout of a region of this geometry (which must be valid).
    pub fn layout(&self) -> Layout {
        debug_assert!(self.validate().is_ok());
        let ret_cap = (self.chunks as usize).next_power_of_two();
        let d0 = RingAt::new(HEADER_LEN, self.ring_slots as usize, SLOT_WORDS);
        let d1 = RingAt::new(d0.end(), self.ring_slots as usize, SLOT_WORDS);
        let r0 = RingAt::new(d1.end(), ret_cap, 1);
        let r1 = RingAt::new(r0.end(), ret_cap, 1);
        let arena = r1.end().next_multiple_of(4096);
        let half_len = self.chunk_size as usize * self.chunks as usize;
        let layout = Layout {
            geometry: *self,
            data: [d0, d1],
            ret: [r0, r1],
            half: [arena, arena + half_len],
            half_len,
            len: arena + 2 * half_len,
        };
        debug_assert!(layout.half[1] + half_len == layout.len);
        layout
    }
}

pub fn side_pid(side: usize) -> usize {
    OFF_SIDE + side * SIDE_STRIDE
}

pub fn side_state(side: usize) -> usize {
    OFF_SIDE + side * SIDE_STRIDE + 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_do_not_overlap_and_stay_aligned() {
        let g = Geometry {
            ring_slots: 256,
            chunk_size: 2048,
            chunks: 1000,
            headroom: 64,
        };
        g.validate().unwrap();
        let l = g.layout();
        let rings = [l.data[0], l.data[1], l.ret[0], l.ret[1]];
        let mut prev_end = HEADER_LEN;
        for r in rings {
            assert!(r.tail >= prev_end);
            assert_eq!(r.tail % 128, 0);
            assert_eq!(r.slots % 128, 0, "slots start on a cache-line pair");
            assert!(r.head - r.tail >= 128 && r.waiting - r.head >= 128);
            prev_end = r.end();
        }
        assert_eq!(l.ret[0].capacity, 1024);
        assert!(l.half[0] >= prev_end && l.half[0].is_multiple_of(4096));
        assert_eq!(l.len, l.half[0] + 2 * 2048 * 1000);
    }

    #[test]
    fn bad_geometry_is_refused_with_a_reason() {
        let ok = Geometry {
            ring_slots: 256,
            chunk_size: 2048,
            chunks: 16,
            headroom: 0,
        };
        for bad in [
            Geometry {
                ring_slots: 3,
                ..ok
            },
            Geometry {
                ring_slots: 0,
                ..ok
            },
            Geometry {
                chunk_size: 100,
                ..ok
            },
            Geometry { chunks: 0, ..ok },
            Geometry {
                headroom: 2048,
                ..ok
            },
            Geometry {
                chunk_size: MAX_CHUNK_SIZE,
                chunks: MAX_CHUNKS,
                ..ok
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
