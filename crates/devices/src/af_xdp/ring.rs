//! The four AF_XDP rings: the only ring-access `unsafe` of the AF_XDP device.
//!
//! Each ring is a power-of-two array of entries plus a producer and a consumer index, all in
//! memory shared with the kernel (`linux/if_xdp.h`). Indices run freely (they wrap at 2^32);
//! an entry lives at `index & mask`. One side only ever writes the producer index, the other
//! only the consumer index:
//! - the producer writes entries, then publishes them with a **release** store of the producer
//!   index; the consumer reads the producer index with an **acquire** load before reading them;
//! - the consumer reads entries, then frees their slots with a **release** store of the
//!   consumer index; the producer reads it with an **acquire** load before overwriting them.
//!
//! We produce into the fill and TX rings and consume from the RX and completion rings. Local
//! copies of both indices (`cached_*`) keep the shared cache lines out of the common path.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::os::{Mmap, Pod};

/// `XDP_RING_NEED_WAKEUP`: the kernel wants a system call before it looks at this ring again.
const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;

/// `struct xdp_ring_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RingOffset {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

/// `struct xdp_mmap_offsets`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MmapOffsets {
    pub rx: RingOffset,
    pub tx: RingOffset,
    pub fill: RingOffset,
    pub completion: RingOffset,
}

/// `struct xdp_desc`: a frame in the RX or TX ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpDesc {
    /// Offset of the frame's first byte in the UMEM.
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// `struct xdp_umem_reg` (with `tx_metadata_len`, which we leave 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UmemReg {
    pub addr: u64,
    pub len: u64,
    pub chunk_size: u32,
    pub headroom: u32,
    pub flags: u32,
    pub tx_metadata_len: u32,
}

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockaddrXdp {
    pub family: u16,
    pub flags: u16,
    pub ifindex: u32,
    pub queue_id: u32,
    pub shared_umem_fd: u32,
}

/// `struct xdp_statistics`: what the kernel counted for one socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    /// Frames dropped for other reasons than the ones below.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

// SAFETY: `#[repr(C)]` structs of u64s, no padding.
unsafe impl Pod for MmapOffsets {}
// SAFETY: `#[repr(C)]`, 8+8+4+4+4+4 bytes, no padding.
unsafe impl Pod for UmemReg {}
// SAFETY: `#[repr(C)]`, 2+2+4+4+4 bytes, no padding.
unsafe impl Pod for SockaddrXdp {}
// SAFETY: `#[repr(C)]` struct of u64s.
unsafe impl Pod for XdpStatistics {}
// SAFETY: as above.
unsafe impl Pod for RingOffset {}

/// Entries a ring may carry: UMEM addresses (fill, completion) or descriptors (RX, TX).
pub trait Entry: Copy {}
impl Entry for u64 {}
impl Entry for XdpDesc {}

/// One mapped ring.
pub struct Ring<T: Entry> {
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
    _map: Mmap,
    _entry: PhantomData<T>,
}

impl<T: Entry> Ring<T> {
    /// Wraps a ring of `size` entries mapped at `map`, laid out as `off` says.
    ///
    /// # Panics
    /// If the offsets point outside the mapping or are misaligned (the kernel would never
    /// report such offsets; this checks our reading of them).
    pub fn new(map: Mmap, off: &RingOffset, size: u32) -> Ring<T> {
        assert!(size.is_power_of_two(), "ring size must be a power of two");
        let fits = |at: u64, len: usize| at as usize + len <= map.len();
        assert!(fits(off.producer, 4) && fits(off.consumer, 4) && fits(off.flags, 4));
        assert!(fits(off.desc, size as usize * std::mem::size_of::<T>()));
        assert!(
            off.producer.is_multiple_of(4)
                && off.consumer.is_multiple_of(4)
                && off.flags.is_multiple_of(4)
        );
        assert!((off.desc as usize).is_multiple_of(std::mem::align_of::<T>()));
        let base = map.base().as_ptr();
        // SAFETY: every offset is inside the mapping and aligned (checked above).
        let (producer, consumer, flags, entries) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.flags as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<T>(),
            )
        };
        let mut ring = Ring {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
            _entry: PhantomData,
        };
        ring.cached_prod = ring.producer().load(Ordering::Acquire);
        ring.cached_cons = ring.consumer().load(Ordering::Acquire);
        ring
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping, aligned; the kernel accesses it only as a u32.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    pub fn size(&self) -> u32 {
        self.mask + 1
    }

    /// Whether the kernel asked to be woken by a system call (`need_wakeup` mode).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    // ---- producer side (fill, TX) ----

    /// Slots free for us to produce into, at most `want`.
    pub fn free(&mut self, want: u32) -> u32 {
        let mut free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        if free < want {
            self.cached_cons = self.consumer().load(Ordering::Acquire);
            free = self.size() - self.cached_prod.wrapping_sub(self.cached_cons);
        }
        free.min(want)
    }

    /// Writes the `i`th entry after the last one published. `i` must be below what
    /// [`Ring::free`] returned.
    pub fn put(&mut self, i: u32, entry: T) {
        debug_assert!(
            self.cached_prod
                .wrapping_add(i)
                .wrapping_sub(self.cached_cons)
                < self.size()
        );
        let slot = (self.cached_prod.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `slot` is within the entry array; the slot is free (the consumer index is
        // past it), so the kernel does not read it until we publish it.
        unsafe { self.entries.add(slot).write(entry) }
    }

    /// Publishes `n` entries written with [`Ring::put`].
    pub fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Entries we published that the kernel has not consumed yet.
    pub fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    // ---- consumer side (RX, completion) ----

    /// Entries ready for us, at most `max`.
    pub fn available(&mut self, max: u32) -> u32 {
        let mut ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready == 0 {
            self.cached_prod = self.producer().load(Ordering::Acquire);
            ready = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        debug_assert!(ready <= self.size(), "producer ran ahead of the ring");
        ready.min(max)
    }

    /// The `i`th ready entry. `i` must be below what [`Ring::available`] returned.
    pub fn get(&self, i: u32) -> T {
        debug_assert!(i < self.cached_prod.wrapping_sub(self.cached_cons));
        let slot = (self.cached_cons.wrapping_add(i) & self.mask) as usize;
        // SAFETY: `slot` is within the entry array, and the kernel published it (acquire load
        // of the producer index) and will not rewrite it until we release it.
        unsafe { self.entries.add(slot).read() }
    }

    /// Gives `n` consumed entries back to the kernel.
    pub fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}
