//! PACKET_MMAP ring memory: the only `unsafe` of the AF_PACKET device.
//!
//! A ring is a region shared with the kernel, cut into frames (TPACKET_V2) or blocks
//! (TPACKET_V3). Each frame or block starts with a status word that says who owns it: the
//! kernel or user space. The owner flips it with a release store after its last write to the
//! frame; the other side reads it with an acquire load before its first read. So while a slot's
//! status says "user", the kernel does not touch the rest of it and we may read or write it.
//! Layouts are those of `linux/if_packet.h`.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys::os::{Mmap, Pod};

pub const TPACKET_V2: i32 = 1;
pub const TPACKET_V3: i32 = 2;
pub const TP_STATUS_KERNEL: u32 = 0;
pub const TP_STATUS_USER: u32 = 1 << 0;
/// RX: the frame did not fit its slot (which holds its start); the whole of it waits in the
/// socket's receive queue, to be read with `recvmsg` (`PACKET_COPY_THRESH`).
pub const TP_STATUS_COPY: u32 = 1 << 1;
pub const TP_STATUS_AVAILABLE: u32 = 0;
pub const TP_STATUS_SEND_REQUEST: u32 = 1 << 0;
pub const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;

/// `sizeof(struct tpacket2_hdr)` rounded to TPACKET_ALIGNMENT: where `sockaddr_ll` starts in a
/// V2 frame, and where TX data starts (`TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`).
pub const V2_HDR_LEN: usize = 32;
/// The same for `struct tpacket3_hdr` (48 bytes).
pub const V3_HDR_LEN: usize = 48;
/// Offset of `sll_pkttype` inside `struct sockaddr_ll`.
pub const SLL_PKTTYPE: usize = 10;
/// `PACKET_OUTGOING`: a frame this host sent, looped back to packet sockets.
pub const PACKET_OUTGOING: u8 = 4;

/// `struct tpacket_req3` (V2 uses its first four fields, `struct tpacket_req`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TpacketReq3 {
    pub block_size: u32,
    pub block_nr: u32,
    pub frame_size: u32,
    pub frame_nr: u32,
    pub retire_blk_tov: u32,
    pub sizeof_priv: u32,
    pub feature_req_word: u32,
}

/// `struct tpacket_req`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TpacketReq {
    pub block_size: u32,
    pub block_nr: u32,
    pub frame_size: u32,
    pub frame_nr: u32,
}

/// `struct sockaddr_ll`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockaddrLl {
    pub family: u16,
    pub protocol: u16,
    pub ifindex: i32,
    pub hatype: u16,
    pub pkttype: u8,
    pub halen: u8,
    pub addr: [u8; 8],
}

// SAFETY: `#[repr(C)]` structs of integers without padding (7 x u32).
unsafe impl Pod for TpacketReq3 {}
// SAFETY: `#[repr(C)]`, 4 x u32, no padding.
unsafe impl Pod for TpacketReq {}
// SAFETY: `#[repr(C)]`, 2+2+4+2+1+1+8 = 20 bytes, every field at its natural alignment.
unsafe impl Pod for SockaddrLl {}

/// Equal slots (frames or blocks) at `offset` of a ring mapping.
pub struct Slots {
    base: *mut u8,
    slot_size: usize,
    count: usize,
}

impl Slots {
    /// `count` slots of `slot_size` bytes starting `offset` bytes into `map`.
    ///
    /// # Panics
    /// If they do not fit in the mapping or slots are not 16-byte aligned (a bug in the
    /// caller's geometry, checked once at start-up).
    pub fn new(map: &Mmap, offset: usize, slot_size: usize, count: usize) -> Slots {
        assert!(
            slot_size.is_multiple_of(16) && slot_size >= V3_HDR_LEN,
            "bad slot size"
        );
        assert!(offset.is_multiple_of(16), "misaligned ring");
        assert!(
            offset + slot_size * count <= map.len(),
            "ring past its mapping"
        );
        Slots {
            // SAFETY: `offset` is inside the mapping (checked above).
            base: unsafe { map.base().as_ptr().add(offset) },
            slot_size,
            count,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    fn word(&self, slot: usize, at: usize) -> &AtomicU32 {
        assert!(slot < self.count && at + 4 <= self.slot_size && at.is_multiple_of(4));
        // SAFETY: in bounds (checked), 4-byte aligned (slots are 16-aligned, `at` is 4-aligned
        // and the mapping is page-aligned), and the kernel accesses this word concurrently only
        // as an integer, which `AtomicU32` models.
        unsafe {
            &*self
                .base
                .add(slot * self.slot_size + at)
                .cast::<AtomicU32>()
        }
    }

    /// The status word at `at` of `slot`, read with acquire ordering: if it says the slot is
    /// ours, the kernel's writes to the slot are visible.
    pub fn status(&self, slot: usize, at: usize) -> u32 {
        self.word(slot, at).load(Ordering::Acquire)
    }

    /// Hands `slot` over by storing its status word with release ordering, after our writes.
    pub fn set_status(&self, slot: usize, at: usize, status: u32) {
        self.word(slot, at).store(status, Ordering::Release)
    }

    /// The bytes of a slot we own (its status said so).
    pub fn bytes(&self, slot: usize) -> &[u8] {
        assert!(slot < self.count);
        // SAFETY: in bounds; the caller read a status giving us the slot, so the kernel does
        // not write it until we hand it back, which happens through `&self` methods only after
        // this borrow ends (callers copy out what they need first).
        unsafe { std::slice::from_raw_parts(self.base.add(slot * self.slot_size), self.slot_size) }
    }

    /// Writes `head` then `data` at `at` of a slot we own, and the 32-bit `value` at `len_at`.
    pub fn write(
        &mut self,
        slot: usize,
        at: usize,
        head: &[u8],
        data: &[u8],
        len_at: usize,
        value: u32,
    ) {
        let end = at + head.len() + data.len();
        assert!(slot < self.count && end <= self.slot_size);
        assert!(len_at.is_multiple_of(4) && len_at + 4 <= at);
        // SAFETY: in bounds and disjoint from the status word; the slot's status said it is
        // ours (available), so the kernel neither reads nor writes it until we flip the status.
        unsafe {
            let slot_base = self.base.add(slot * self.slot_size);
            let to = slot_base.add(at);
            std::ptr::copy_nonoverlapping(head.as_ptr(), to, head.len());
            std::ptr::copy_nonoverlapping(data.as_ptr(), to.add(head.len()), data.len());
            slot_base.add(len_at).cast::<u32>().write(value);
        }
    }
}

/// Reads a little helper field out of a slot's bytes (native endian, as the kernel wrote it).
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
