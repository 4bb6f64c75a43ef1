//! Raw memory regions that buffer pools are carved from.
//!
//! This is the only module of the runtime with `unsafe`: it maps memory and hands out a base
//! pointer. Everything that reads or writes through that pointer lives in `buffer`, which keeps
//! the aliasing rules (one writer, or many readers, per chunk).

use std::io;
use std::ptr::NonNull;

/// A region of memory: anonymous pages mapped here (optionally huge pages), or memory owned by
/// someone else (an AF_XDP UMEM, a shared-memory arena) that outlives this handle's users.
pub struct Memory {
    base: NonNull<u8>,
    len: usize,
    huge_pages: bool,
    owner: Owner,
}

enum Owner {
    /// Mapped by us: unmapped on drop.
    Mapped,
    /// Someone else's: kept alive by this value, released by its own `Drop`.
    External(#[allow(dead_code)] Box<dyn std::any::Any>),
}

impl Memory {
    /// Maps `len` bytes of zeroed anonymous memory. With `huge_pages`, tries 2 MiB pages first
    /// and falls back to ordinary pages when none are reserved (see [`Memory::huge_pages`]).
    pub fn anonymous(len: usize, huge_pages: bool) -> io::Result<Memory> {
        assert!(len > 0, "a memory region must not be empty");
        const HUGE: usize = 2 << 20;
        if huge_pages {
            let huge_len = len.div_ceil(HUGE) * HUGE;
            if let Ok(mut m) = Self::map(huge_len, libc::MAP_HUGETLB) {
                m.huge_pages = true;
                return Ok(m);
            }
        }
        Self::map(len, 0)
    }

    fn map(len: usize, extra_flags: libc::c_int) -> io::Result<Memory> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing aliases no
        // existing memory; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Memory {
            base: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
            huge_pages: false,
            owner: Owner::Mapped,
        })
    }

    /// Wraps memory owned by `owner` (which must keep it mapped until dropped).
    ///
    /// # Safety
    /// `base..base+len` must be valid for reads and writes for as long as `owner` lives, must
    /// not be used through any other path while buffers of this region are alive (except by a
    /// device or peer process that the owner coordinates with), and must be initialized.
    pub unsafe fn external(base: NonNull<u8>, len: usize, owner: Box<dyn std::any::Any>) -> Memory {
        Memory {
            base,
            len,
            huge_pages: false,
            owner: Owner::External(owner),
        }
    }

    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the region sits on huge pages.
    pub fn huge_pages(&self) -> bool {
        self.huge_pages
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Owner::Mapped = self.owner {
            // SAFETY: we mapped exactly this range in `map`, and every buffer borrowing it holds
            // the pool (and so this region) alive, so nothing uses it after this point.
            unsafe {
                libc::munmap(self.base.as_ptr().cast(), self.len);
            }
        }
    }
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("base", &self.base)
            .field("len", &self.len)
            .field("huge_pages", &self.huge_pages)
            .finish()
    }
}

/// Reads `len` bytes at `offset` of a region.
///
/// # Safety
/// The range must lie inside the region and no `&mut` to it may be alive.
pub(crate) unsafe fn slice(memory: &Memory, offset: usize, len: usize) -> &[u8] {
    debug_assert!(offset + len <= memory.len);
    // SAFETY: the caller guarantees bounds and the absence of writers.
    unsafe { std::slice::from_raw_parts(memory.base.as_ptr().add(offset), len) }
}

/// Writes to `len` bytes at `offset` of a region.
///
/// # Safety
/// The range must lie inside the region and no other reference to it may be alive.
#[allow(clippy::mut_from_ref)]
pub(crate) unsafe fn slice_mut(memory: &Memory, offset: usize, len: usize) -> &mut [u8] {
    debug_assert!(offset + len <= memory.len);
    // SAFETY: the caller guarantees bounds and exclusive access.
    unsafe { std::slice::from_raw_parts_mut(memory.base.as_ptr().add(offset), len) }
}
