//! Buffers from a pool, and the scatter-gather array built from them.
//!
//! A [`BufferPool`] cuts one [`Memory`] region into fixed-size chunks, allocated up front. A
//! [`Buffer`] is a refcounted handle on one chunk plus the byte range of it that holds data;
//! the bytes before the range are *headroom* where lower layers prepend headers without copying,
//! the bytes after it *tailroom*. Clones share the chunk (a refcount bump, no copy); the chunk
//! returns to the pool when the last handle drops. A buffer can be written only while it is the
//! chunk's sole handle, so no reader ever sees bytes change under it.
//!
//! An [`Sga`] (scatter-gather array) is the unit of I/O of the queue API: a list of buffers.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;

use crate::memory::{self, Memory};

/// The shape of a pool, fixed when it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Bytes per chunk (headroom included).
    pub chunk_size: usize,
    /// How many chunks the pool holds: its limit, allocated up front.
    pub chunks: usize,
    /// Bytes kept free at the front of each new buffer for headers.
    pub headroom: usize,
    /// Back the pool with 2 MiB huge pages when the machine has them reserved.
    pub huge_pages: bool,
}

impl PoolConfig {
    /// Chunks for network frames: 2 KiB with 128 B of headroom (Ethernet + IPv4 + TCP with
    /// options need at most 14 + 60 + 60 bytes; an MSS of 1460 fits after them).
    pub fn frames(chunks: usize) -> PoolConfig {
        PoolConfig {
            chunk_size: 2048,
            chunks,
            headroom: 128,
            huge_pages: false,
        }
    }

    /// Large chunks for bulk and storage I/O: 64 KiB, page-aligned, no headroom (so each
    /// buffer's data starts 4096-aligned, as O_DIRECT wants).
    pub fn large(chunks: usize) -> PoolConfig {
        PoolConfig {
            chunk_size: 64 << 10,
            chunks,
            headroom: 0,
            huge_pages: false,
        }
    }
}

/// Counters of one pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub chunks: usize,
    pub free: usize,
    /// Allocations refused because every chunk was in use.
    pub exhausted: u64,
}

type Release = Box<dyn Fn(u32)>;

struct PoolInner {
    memory: Memory,
    chunk_size: usize,
    headroom: usize,
    chunks: usize,
    /// Handles alive per chunk; 0 = free.
    refs: Box<[Cell<u32>]>,
    free: RefCell<Vec<u32>>,
    exhausted: Cell<u64>,
    /// Where a chunk goes when its last handle drops, if not back to `free` (e.g. to the
    /// process that lent it through shared memory).
    release: Option<Release>,
}

impl PoolInner {
    fn chunk_offset(&self, chunk: u32) -> usize {
        chunk as usize * self.chunk_size
    }
}

/// A fixed set of equal chunks of memory, handed out as [`Buffer`]s. Cheap to clone.
#[derive(Clone)]
pub struct BufferPool {
    inner: Rc<PoolInner>,
}

impl BufferPool {
    /// Maps memory for `config.chunks` chunks and makes them all free.
    pub fn new(config: &PoolConfig) -> io::Result<BufferPool> {
        let len = config
            .chunk_size
            .checked_mul(config.chunks)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pool size overflows"))?;
        let memory = Memory::anonymous(len, config.huge_pages)?;
        Ok(Self::with_memory(
            memory,
            config.chunk_size,
            config.headroom,
            None,
        ))
    }

    /// Cuts an existing region into chunks. If `release` is given, a chunk whose last handle
    /// drops is passed to it instead of returning to this pool's free list, and the pool starts
    /// with no free chunks (they are lent in with [`BufferPool::adopt`]).
    pub fn with_memory(
        memory: Memory,
        chunk_size: usize,
        headroom: usize,
        release: Option<Box<dyn Fn(u32)>>,
    ) -> BufferPool {
        assert!(
            chunk_size > 0 && headroom < chunk_size,
            "bad chunk geometry"
        );
        assert!(u32::try_from(chunk_size).is_ok(), "chunk larger than 4 GiB");
        let chunks = memory.len() / chunk_size;
        assert!(
            chunks > 0 && u32::try_from(chunks).is_ok(),
            "bad chunk count"
        );
        let free: Vec<u32> = if release.is_some() {
            Vec::with_capacity(chunks)
        } else {
            (0..chunks as u32).rev().collect()
        };
        BufferPool {
            inner: Rc::new(PoolInner {
                memory,
                chunk_size,
                headroom,
                chunks,
                refs: (0..chunks).map(|_| Cell::new(0)).collect(),
                free: RefCell::new(free),
                exhausted: Cell::new(0),
                release,
            }),
        }
    }

    /// A new empty buffer with the pool's headroom, or `None` if every chunk is in use.
    #[inline]
    pub fn alloc(&self) -> Option<Buffer> {
        let chunk = self.inner.free.borrow_mut().pop();
        let Some(chunk) = chunk else {
            self.inner.exhausted.set(self.inner.exhausted.get() + 1);
            return None;
        };
        Some(self.claim(chunk, self.inner.headroom as u32))
    }

    /// A buffer holding a copy of `data`, which must fit in the pool's data capacity.
    pub fn alloc_copy(&self, data: &[u8]) -> Option<Buffer> {
        assert!(
            data.len() <= self.data_capacity(),
            "data larger than a chunk"
        );
        let mut buf = self.alloc()?;
        buf.extend_from_slice(data);
        Some(buf)
    }

    /// Takes ownership of a chunk that was handed to this pool from outside (a chunk a peer
    /// lent through shared memory, a frame a device received). The buffer is empty, starting
    /// at `start` bytes into the chunk.
    ///
    /// # Panics
    /// If the chunk is out of range or already has a handle: that is a bookkeeping bug of the
    /// caller, and going on would alias memory.
    pub fn adopt(&self, chunk: u32, start: usize) -> Buffer {
        assert!((chunk as usize) < self.inner.chunks, "chunk out of range");
        assert!(start <= self.inner.chunk_size, "start past the chunk");
        assert_eq!(
            self.inner.refs[chunk as usize].get(),
            0,
            "chunk already in use"
        );
        self.claim(chunk, start as u32)
    }

    /// Returns a chunk to the free list without a handle (the counterpart of a `release` hook
    /// when the chunk comes home).
    pub fn give_back(&self, chunk: u32) {
        assert!((chunk as usize) < self.inner.chunks, "chunk out of range");
        assert_eq!(
            self.inner.refs[chunk as usize].get(),
            0,
            "chunk still in use"
        );
        self.inner.free.borrow_mut().push(chunk);
    }

    fn claim(&self, chunk: u32, start: u32) -> Buffer {
        let refs = &self.inner.refs[chunk as usize];
        debug_assert_eq!(refs.get(), 0, "free chunk has handles");
        refs.set(1);
        Buffer {
            pool: self.inner.clone(),
            chunk,
            start,
            end: start,
        }
    }

    pub fn chunk_size(&self) -> usize {
        self.inner.chunk_size
    }

    pub fn headroom(&self) -> usize {
        self.inner.headroom
    }

    /// Bytes of data a new buffer can hold after its headroom.
    pub fn data_capacity(&self) -> usize {
        self.inner.chunk_size - self.inner.headroom
    }

    pub fn chunks(&self) -> usize {
        self.inner.chunks
    }

    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// The region the chunks live in (to register it with a device).
    pub fn memory(&self) -> &Memory {
        &self.inner.memory
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            chunks: self.inner.chunks,
            free: self.available(),
            exhausted: self.inner.exhausted.get(),
        }
    }

    /// Whether `buffer` was carved from this pool.
    pub fn owns(&self, buffer: &Buffer) -> bool {
        Rc::ptr_eq(&self.inner, &buffer.pool)
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("chunk_size", &self.inner.chunk_size)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A refcounted view of bytes in one chunk of a [`BufferPool`].
pub struct Buffer {
    pool: Rc<PoolInner>,
    chunk: u32,
    /// Data range within the chunk.
    start: u32,
    end: u32,
}

impl Buffer {
    #[inline]
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes free in front of the data.
    pub fn headroom(&self) -> usize {
        self.start as usize
    }

    /// Bytes free after the data.
    pub fn tailroom(&self) -> usize {
        self.pool.chunk_size - self.end as usize
    }

    /// Whether this is the only handle on its chunk, so it may be written.
    #[inline]
    pub fn is_unique(&self) -> bool {
        self.pool.refs[self.chunk as usize].get() == 1
    }

    /// The chunk's index in its pool (a device's descriptor names chunks by it).
    pub fn chunk(&self) -> u32 {
        self.chunk
    }

    /// Offset of the first data byte from the start of the pool's memory region.
    pub fn region_offset(&self) -> usize {
        self.pool.chunk_offset(self.chunk) + self.start as usize
    }

    /// Start of the data within its chunk.
    pub fn chunk_offset(&self) -> usize {
        self.start as usize
    }

    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: start..end lies inside this chunk (kept by every method), the pool's memory
        // lives as long as `self.pool`, and writers need a unique handle taken by `&mut self`,
        // so no `&mut` to these bytes exists while this borrow of `self` does.
        unsafe {
            memory::slice(
                &self.pool.memory,
                self.pool.chunk_offset(self.chunk) + self.start as usize,
                self.len(),
            )
        }
    }

    /// The data, writable.
    ///
    /// # Panics
    /// If another handle shares the chunk (writing would change bytes under its reader).
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let (start, len) = (self.start as usize, self.len());
        self.chunk_mut(start, len)
    }

    fn chunk_mut(&mut self, start: usize, len: usize) -> &mut [u8] {
        assert!(self.is_unique(), "write to a shared buffer");
        assert!(start + len <= self.pool.chunk_size);
        // SAFETY: the range is inside this chunk (checked above); this handle is the chunk's
        // only one and is borrowed mutably, so no other reference to the chunk exists.
        unsafe {
            memory::slice_mut(
                &self.pool.memory,
                self.pool.chunk_offset(self.chunk) + start,
                len,
            )
        }
    }

    /// Grows the data by `n` bytes at the front, into the headroom, and returns them.
    ///
    /// # Panics
    /// If the headroom is smaller than `n` or the buffer is shared.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> &mut [u8] {
        assert!(
            n <= self.headroom(),
            "prepend of {n} B into {} B of headroom",
            self.headroom()
        );
        self.start -= n as u32;
        let start = self.start as usize;
        self.chunk_mut(start, n)
    }

    /// Grows the data by `n` bytes at the end, into the tailroom, and returns them (their
    /// content is whatever the chunk held).
    ///
    /// # Panics
    /// If the tailroom is smaller than `n` or the buffer is shared.
    #[inline]
    pub fn append(&mut self, n: usize) -> &mut [u8] {
        assert!(
            n <= self.tailroom(),
            "append of {n} B into {} B of tailroom",
            self.tailroom()
        );
        let at = self.end as usize;
        self.end += n as u32;
        self.chunk_mut(at, n)
    }

    /// Appends a copy of `data`. Panics like [`Buffer::append`].
    #[inline]
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.append(data.len()).copy_from_slice(data);
    }

    /// Drops the first `n` bytes of data.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance past the data");
        self.start += n as u32;
    }

    /// Keeps the first `len` bytes of data.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len as u32;
        }
    }

    /// Sets the data range to `start..start+len` of the chunk (a device that wrote a frame
    /// into the chunk says where it is). Needs a unique handle.
    pub fn set_range(&mut self, start: usize, len: usize) {
        assert!(self.is_unique(), "set_range on a shared buffer");
        assert!(start + len <= self.pool.chunk_size, "range past the chunk");
        self.start = start as u32;
        self.end = (start + len) as u32;
    }

    /// Splits off the first `n` bytes as a new handle on the same chunk (no copy); `self` keeps
    /// the rest. Both are shared afterwards, hence read-only.
    pub fn split_to(&mut self, n: usize) -> Buffer {
        assert!(n <= self.len(), "split past the data");
        let mut front = self.clone();
        front.end = self.start + n as u32;
        self.start += n as u32;
        front
    }

    /// A new handle on `range` of this buffer's data (no copy).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Buffer {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "slice past the data"
        );
        let mut s = self.clone();
        s.start = self.start + range.start as u32;
        s.end = self.start + range.end as u32;
        s
    }
}

impl Clone for Buffer {
    #[inline]
    fn clone(&self) -> Buffer {
        let refs = &self.pool.refs[self.chunk as usize];
        refs.set(refs.get() + 1);
        Buffer {
            pool: self.pool.clone(),
            chunk: self.chunk,
            start: self.start,
            end: self.end,
        }
    }
}

impl Drop for Buffer {
    #[inline]
    fn drop(&mut self) {
        let refs = &self.pool.refs[self.chunk as usize];
        let n = refs.get();
        debug_assert!(n > 0, "refcount underflow");
        refs.set(n - 1);
        if n == 1 {
            match &self.pool.release {
                Some(release) => release(self.chunk),
                None => self.pool.free.borrow_mut().push(self.chunk),
            }
        }
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::Deref for Buffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer(chunk {}, {} B)", self.chunk, self.len())
    }
}

/// A scatter-gather array: the bytes of one I/O, as a list of [`Buffer`]s.
///
/// Holding the first segment inline keeps the common one-segment case free of allocation.
#[derive(Clone, Default)]
pub struct Sga {
    first: Option<Buffer>,
    rest: Vec<Buffer>,
}

impl Sga {
    pub const fn new() -> Sga {
        Sga {
            first: None,
            rest: Vec::new(),
        }
    }

    /// Appends a segment.
    pub fn push(&mut self, segment: Buffer) {
        if self.first.is_none() {
            debug_assert!(self.rest.is_empty());
            self.first = Some(segment);
        } else {
            self.rest.push(segment);
        }
    }

    /// The segments in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &Buffer> + '_ {
        SegIter {
            first: self.first.as_ref(),
            rest: self.rest.iter(),
        }
    }

    /// The first segment, writable only if unique.
    pub fn first_mut(&mut self) -> Option<&mut Buffer> {
        self.first.as_mut()
    }

    /// Segments, mutable.
    pub fn segments_mut(&mut self) -> impl Iterator<Item = &mut Buffer> + '_ {
        self.first.iter_mut().chain(self.rest.iter_mut())
    }

    pub fn num_segments(&self) -> usize {
        self.first.is_some() as usize + self.rest.len()
    }

    /// Total bytes over all segments.
    pub fn len(&self) -> usize {
        self.segments().map(Buffer::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments().all(Buffer::is_empty)
    }

    /// Copies every byte into `out`, which must be at least [`Sga::len`] long; returns the count.
    pub fn copy_to(&self, out: &mut [u8]) -> usize {
        let mut at = 0;
        for seg in self.segments() {
            out[at..at + seg.len()].copy_from_slice(seg);
            at += seg.len();
        }
        at
    }

    /// Every byte, copied into a new vector (for tests and slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.copy_to(&mut v);
        v
    }

    /// Copies `data` into as many buffers of `pool` as it takes.
    /// Returns `None` (and frees what it took) if the pool runs out.
    pub fn copy_from(pool: &BufferPool, data: &[u8]) -> Option<Sga> {
        let mut sga = Sga::new();
        for piece in data.chunks(pool.data_capacity()) {
            sga.push(pool.alloc_copy(piece)?);
        }
        Some(sga)
    }

    /// Removes and returns the segments, leaving the Sga empty.
    pub fn take_segments(&mut self) -> impl Iterator<Item = Buffer> {
        let first = self.first.take();
        let rest = std::mem::take(&mut self.rest);
        first.into_iter().chain(rest)
    }

    /// Drops the first `n` bytes (segments that empty are removed).
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len(), "advance past the data");
        while n > 0 {
            let first = self.first.as_mut().expect("length checked");
            let take = n.min(first.len());
            first.advance(take);
            n -= take;
            if first.is_empty() {
                self.first = if self.rest.is_empty() {
                    None
                } else {
                    Some(self.rest.remove(0))
                };
            }
        }
    }
}

impl From<Buffer> for Sga {
    fn from(b: Buffer) -> Sga {
        Sga {
            first: Some(b),
            rest: Vec::new(),
        }
    }
}

impl FromIterator<Buffer> for Sga {
    fn from_iter<I: IntoIterator<Item = Buffer>>(iter: I) -> Sga {
        let mut sga = Sga::new();
        for b in iter {
            sga.push(b);
        }
        sga
    }
}

impl fmt::Debug for Sga {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Sga({} B in {} segments)",
            self.len(),
            self.num_segments()
        )
    }
}

struct SegIter<'a> {
    first: Option<&'a Buffer>,
    rest: std::slice::Iter<'a, Buffer>,
}

impl<'a> Iterator for SegIter<'a> {
    type Item = &'a Buffer;
    fn next(&mut self) -> Option<&'a Buffer> {
        self.first.take().or_else(|| self.rest.next())
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.first.is_some() as usize + self.rest.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for SegIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(chunks: usize) -> BufferPool {
        BufferPool::new(&PoolConfig::frames(chunks)).unwrap()
    }

    #[test]
    fn buffers_return_to_the_pool_when_the_last_handle_drops() {
        let p = pool(2);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert!(p.alloc().is_none());
        assert_eq!(p.stats().exhausted, 1);
        let a2 = a.clone();
        drop(a);
        assert_eq!(p.available(), 0, "a clone keeps the chunk");
        drop(a2);
        drop(b);
        assert_eq!(p.available(), 2);
    }

    #[test]
    fn headroom_takes_headers_without_copying_the_payload() {
        let p = pool(1);
        let mut b = p.alloc().unwrap();
        assert_eq!(b.headroom(), 128);
        b.extend_from_slice(b"payload");
        b.prepend(4).copy_from_slice(b"hdr:");
        assert_eq!(b.as_slice(), b"hdr:payload");
        b.advance(4);
        assert_eq!(&b[..], b"payload");
        b.truncate(3);
        assert_eq!(&b[..], b"pay");
    }

    #[test]
    #[should_panic(expected = "write to a shared buffer")]
    fn a_shared_buffer_cannot_be_written() {
        let p = pool(1);
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(b"x");
        let _reader = b.clone();
        b.as_mut_slice()[0] = b'y';
    }

    #[test]
    fn split_and_slice_share_the_chunk() {
        let p = pool(1);
        let mut b = p.alloc_copy(b"hello world").unwrap();
        let front = b.split_to(6);
        assert_eq!(&front[..], b"hello ");
        assert_eq!(&b[..], b"world");
        assert_eq!(&b.slice(1..3)[..], b"or");
        drop((front, b));
        assert_eq!(p.available(), 1);
    }

    #[test]
    fn sga_copies_across_segments_and_advances() {
        let p = pool(8);
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut sga = Sga::copy_from(&p, &data).unwrap();
        assert_eq!(sga.num_segments(), 3);
        assert_eq!(sga.to_vec(), data);
        sga.advance(2500);
        assert_eq!(sga.to_vec(), &data[2500..]);
        assert_eq!(sga.num_segments(), 2);
        drop(sga);
        assert_eq!(p.available(), 8);
        assert!(Sga::copy_from(&p, &vec![0; 9 * 1920]).is_none());
        assert_eq!(p.available(), 8, "a failed copy frees what it took");
    }

    #[test]
    fn a_release_hook_receives_chunks_instead_of_the_free_list() {
        let memory = Memory::anonymous(4 * 1024, false).unwrap();
        let released = Rc::new(RefCell::new(Vec::new()));
        let r = released.clone();
        let p = BufferPool::with_memory(
            memory,
            1024,
            0,
            Some(Box::new(move |c| r.borrow_mut().push(c))),
        );
        assert!(p.alloc().is_none(), "a lending pool starts empty");
        let b = p.adopt(2, 0);
        drop(b);
        assert_eq!(*released.borrow(), vec![2]);
    }

    proptest::proptest! {
        #[test]
        fn refcounts_balance_under_any_clone_and_drop_order(ops in proptest::collection::vec(0u8..4, 1..200)) {
            let p = pool(4);
            let mut held: Vec<Buffer> = Vec::new();
            for op in ops {
                match op {
                    0 => if let Some(b) = p.alloc() { held.push(b) },
                    1 => if let Some(b) = held.last() { held.push(b.clone()) },
                    2 => { if !held.is_empty() { held.swap_remove(0); } },
                    _ => { held.pop(); },
                }
            }
            held.clear();
            proptest::prop_assert_eq!(p.available(), 4);
        }
    }
}
