//! The mapped shared region and raw access to it: the only module of this crate with `unsafe`.
//!
//! A [`Region`] is a `MAP_SHARED` mapping of a POSIX shared-memory object. Everything the two
//! processes share is reached through it in one of two ways:
//!
//! - control words (header fields, ring indices, ring slots) as `AtomicU32`/`AtomicU64`, so a
//!   value the peer changes under us is a well-defined atomic load, never a torn read of a plain
//!   integer;
//! - an arena half, wrapped as a [`Memory`] for a `BufferPool` (payload bytes).
//!
//! Offsets come from the [`crate::layout::Layout`], which is validated against the mapping's
//! length before any access; the accessors assert it again, so a layout bug is a crash, never an
//! out-of-bounds access.

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64};

use bypass_runtime::Memory;
use rustix::mm::{MapFlags, ProtFlags};

/// A shared mapping, unmapped when the last handle (the channel, or a buffer's pool) drops.
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

impl Region {
    /// Maps `len` bytes of the shared-memory object `fd`, readable and writable, shared.
    pub fn map(fd: impl AsFd, len: usize) -> std::io::Result<Region> {
        assert!(len > 0, "empty region");
        // SAFETY: a new shared mapping of a file at an address of the kernel's choosing aliases
        // no memory of this process; the result is checked before use. The object may be
        // shorter than `len` only if the caller did not check its size: every caller compares
        // `len` with `fstat` first, and a peer cannot shrink it below that (it may truncate the
        // object, but then touching the lost pages raises SIGBUS, which is the OS's verdict on
        // a peer that hostile; see the crate docs).
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null mapping"))?;
        Ok(Region { base, len })
    }

    /// The 32-bit word at `offset`.
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.len,
            "word {offset} outside the region"
        );
        // SAFETY: in bounds and aligned (checked above; the base is page-aligned). AtomicU32 has
        // the size and alignment of u32, and all access to shared control words, ours and (by
        // protocol) the peer's, is atomic. The reference lives no longer than `self`, which
        // keeps the mapping.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The 64-bit word at `offset`.
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "word {offset} outside the region"
        );
        // SAFETY: as in `u32_at`, with 8-byte alignment checked.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// `count` consecutive 32-bit words starting at `offset`.
    pub fn u32s_at(&self, offset: usize, count: usize) -> &[AtomicU32] {
        let bytes = count.checked_mul(4).expect("word count overflows");
        assert!(
            offset.is_multiple_of(4)
                && offset.checked_add(bytes).is_some_and(|end| end <= self.len),
            "words {offset}+{bytes} outside the region"
        );
        // SAFETY: as in `u32_at`, for the whole in-bounds, aligned range.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(offset).cast::<AtomicU32>(), count)
        }
    }

    /// The same words with the lifetime of the mapping's owner rather than of this borrow.
    ///
    /// The channel keeps `Rc<Region>` as a field declared *after* the ring ends that hold these
    /// references, so they are dropped first; and they never leave the channel.
    pub fn u32s_static(self: &Rc<Region>, offset: usize, count: usize) -> &'static [AtomicU32] {
        let words = self.u32s_at(offset, count);
        // SAFETY: see above: the mapping outlives every holder of the reference, because each
        // holder is a private field of a struct that also holds (and drops later) an
        // `Rc<Region>` of this mapping, and munmap happens only when the last `Rc` drops.
        unsafe { std::slice::from_raw_parts(words.as_ptr(), words.len()) }
    }

    /// Bytes `offset..offset + len` as a [`Memory`] that keeps this mapping alive.
    pub fn memory(self: &Rc<Region>, offset: usize, len: usize) -> Memory {
        assert!(
            len > 0 && offset.checked_add(len).is_some_and(|end| end <= self.len),
            "arena {offset}+{len} outside the region"
        );
        // SAFETY: the range is in bounds, mapped read-write and initialized (a shared-memory
        // object reads as zeroes until written). The `Rc` owner keeps it mapped while any pool
        // or buffer uses it. The only other user is the peer process, which the channel's
        // protocol coordinates with (a chunk is written by one side at a time); a peer that
        // breaks the protocol can change payload bytes under a reader, but cannot make this
        // process access memory outside the mapping.
        unsafe {
            let base = NonNull::new_unchecked(self.base.as_ptr().add(offset));
            Memory::external(base, len, Box::new(self.clone()))
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `map`; every reference into it is tied to a
        // borrow of this value or to an `Rc` of it, and this is the last `Rc`.
        unsafe {
            let _ = rustix::mm::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
