//! TCP (RFC 9293) headers and options: MSS (RFC 9293 §3.2), window scale
//! and timestamps (RFC 7323), SACK (RFC 2018).
//!
//! [`TcpRepr::parse`] validates lengths, the checksum and the options, and
//! reports flags as they are: judging odd combinations (SYN+FIN, SYN+RST, ...)
//! is the stack's job, which is why flags are a bitset and not an enum.

use core::cmp::Ordering;
use core::fmt;
use core::ops;

use crate::checksum::{self, ChecksumCapabilities};
use crate::ipv4::{IpProtocol, Ipv4Address};
use crate::{bytes, Error, Result};

/// A TCP sequence number: arithmetic wraps modulo 2^32 and comparison is
/// serial-number comparison (RFC 1982 §3.2; RFC 9293 §3.4 "Sequence
/// Numbers").
///
/// `a < b` means `b` is ahead of `a` by less than 2^31. The order is not
/// total: it is only meaningful for numbers within 2^31 of each other, which
/// TCP windows guarantee. For two numbers exactly 2^31 apart both `a < b`
/// and `b < a` hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpSeqNumber(pub u32);

impl TcpSeqNumber {
    /// The later of two sequence numbers (in serial order).
    #[inline]
    pub fn max(self, other: TcpSeqNumber) -> TcpSeqNumber {
        if self > other {
            self
        } else {
            other
        }
    }

    /// The earlier of two sequence numbers (in serial order).
    #[inline]
    pub fn min(self, other: TcpSeqNumber) -> TcpSeqNumber {
        if self < other {
            self
        } else {
            other
        }
    }

    /// `self - other` if `self` is not behind `other`, else `None`.
    #[inline]
    pub fn checked_sub(self, other: TcpSeqNumber) -> Option<usize> {
        let diff = self.0.wrapping_sub(other.0) as i32;
        if diff < 0 {
            None
        } else {
            Some(diff as usize)
        }
    }

    /// Add modulo 2^32, for any `n`.
    #[inline]
    pub const fn wrapping_add(self, n: u32) -> TcpSeqNumber {
        TcpSeqNumber(self.0.wrapping_add(n))
    }

    /// Is `self` within `[start, end)` in serial order?
    #[inline]
    pub fn in_range(self, start: TcpSeqNumber, end: TcpSeqNumber) -> bool {
        self.0.wrapping_sub(start.0) < end.0.wrapping_sub(start.0)
    }
}

impl PartialOrd for TcpSeqNumber {
    /// RFC 1982 §3.2 serial comparison: the sign of the wrapped difference.
    #[inline]
    fn partial_cmp(&self, other: &TcpSeqNumber) -> Option<Ordering> {
        Some((self.0.wrapping_sub(other.0) as i32).cmp(&0))
    }
}

impl ops::Add<usize> for TcpSeqNumber {
    type Output = TcpSeqNumber;

    /// Advance by `rhs` bytes, wrapping. Panics if `rhs > i32::MAX`: such an
    /// advance has no meaning in serial arithmetic (RFC 1982 §3.1) and means
    /// a bug in the caller.
    #[inline]
    fn add(self, rhs: usize) -> TcpSeqNumber {
        assert!(
            rhs <= i32::MAX as usize,
            "attempt to add to sequence number with overflow"
        );
        TcpSeqNumber(self.0.wrapping_add(rhs as u32))
    }
}

impl ops::AddAssign<usize> for TcpSeqNumber {
    #[inline]
    fn add_assign(&mut self, rhs: usize) {
        *self = *self + rhs;
    }
}

impl ops::Sub<usize> for TcpSeqNumber {
    type Output = TcpSeqNumber;

    /// Go back by `rhs` bytes, wrapping. Panics if `rhs > i32::MAX`.
    #[inline]
    fn sub(self, rhs: usize) -> TcpSeqNumber {
        assert!(
            rhs <= i32::MAX as usize,
            "attempt to subtract from sequence number with underflow"
        );
        TcpSeqNumber(self.0.wrapping_sub(rhs as u32))
    }
}

impl ops::Sub for TcpSeqNumber {
    type Output = usize;

    /// Distance from `rhs` forward to `self`. Panics if `self` is behind
    /// `rhs` (use [`TcpSeqNumber::checked_sub`] when that can happen).
    #[inline]
    fn sub(self, rhs: TcpSeqNumber) -> usize {
        match self.checked_sub(rhs) {
            Some(d) => d,
            None => panic!("attempt to subtract sequence numbers with underflow"),
        }
    }
}

impl fmt::Display for TcpSeqNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The eight TCP control bits (RFC 9293 §3.1; ECE/CWR from RFC 3168 §6.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    /// No flags.
    pub const EMPTY: TcpFlags = TcpFlags(0);
    /// No more data from sender.
    pub const FIN: TcpFlags = TcpFlags(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: TcpFlags = TcpFlags(0x02);
    /// Reset the connection.
    pub const RST: TcpFlags = TcpFlags(0x04);
    /// Push function.
    pub const PSH: TcpFlags = TcpFlags(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: TcpFlags = TcpFlags(0x10);
    /// Urgent pointer field is significant.
    pub const URG: TcpFlags = TcpFlags(0x20);
    /// ECN-Echo (RFC 3168).
    pub const ECE: TcpFlags = TcpFlags(0x40);
    /// Congestion Window Reduced (RFC 3168).
    pub const CWR: TcpFlags = TcpFlags(0x80);

    /// From the raw flags byte (byte 13 of the header).
    #[inline]
    pub const fn from_bits(bits: u8) -> TcpFlags {
        TcpFlags(bits)
    }

    /// The raw flags byte.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// No flag set?
    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// All flags of `other` set in `self`?
    #[inline]
    pub const fn contains(self, other: TcpFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any flag of `other` set in `self`?
    #[inline]
    pub const fn intersects(self, other: TcpFlags) -> bool {
        self.0 & other.0 != 0
    }

    /// Set the flags of `other`.
    #[inline]
    pub fn insert(&mut self, other: TcpFlags) {
        self.0 |= other.0
    }

    /// Clear the flags of `other`.
    #[inline]
    pub fn remove(&mut self, other: TcpFlags) {
        self.0 &= !other.0
    }

    /// Set or clear the flags of `other`.
    #[inline]
    pub fn set(&mut self, other: TcpFlags, value: bool) {
        if value {
            self.insert(other)
        } else {
            self.remove(other)
        }
    }

    /// FIN set?
    #[inline]
    pub const fn fin(self) -> bool {
        self.contains(Self::FIN)
    }
    /// SYN set?
    #[inline]
    pub const fn syn(self) -> bool {
        self.contains(Self::SYN)
    }
    /// RST set?
    #[inline]
    pub const fn rst(self) -> bool {
        self.contains(Self::RST)
    }
    /// PSH set?
    #[inline]
    pub const fn psh(self) -> bool {
        self.contains(Self::PSH)
    }
    /// ACK set?
    #[inline]
    pub const fn ack(self) -> bool {
        self.contains(Self::ACK)
    }
    /// URG set?
    #[inline]
    pub const fn urg(self) -> bool {
        self.contains(Self::URG)
    }
    /// ECE set?
    #[inline]
    pub const fn ece(self) -> bool {
        self.contains(Self::ECE)
    }
    /// CWR set?
    #[inline]
    pub const fn cwr(self) -> bool {
        self.contains(Self::CWR)
    }
}

impl ops::BitOr for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitor(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 | rhs.0)
    }
}

impl ops::BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: TcpFlags) {
        self.0 |= rhs.0
    }
}

impl ops::BitAnd for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn bitand(self, rhs: TcpFlags) -> TcpFlags {
        TcpFlags(self.0 & rhs.0)
    }
}

impl ops::BitAndAssign for TcpFlags {
    #[inline]
    fn bitand_assign(&mut self, rhs: TcpFlags) {
        self.0 &= rhs.0
    }
}

impl ops::Not for TcpFlags {
    type Output = TcpFlags;
    #[inline]
    fn not(self) -> TcpFlags {
        TcpFlags(!self.0)
    }
}

impl fmt::Display for TcpFlags {
    /// Letters in the order S F R P A U E C (so SYN+ACK is `SA`), or `-`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        const LETTERS: [(TcpFlags, char); 8] = [
            (TcpFlags::SYN, 'S'),
            (TcpFlags::FIN, 'F'),
            (TcpFlags::RST, 'R'),
            (TcpFlags::PSH, 'P'),
            (TcpFlags::ACK, 'A'),
            (TcpFlags::URG, 'U'),
            (TcpFlags::ECE, 'E'),
            (TcpFlags::CWR, 'C'),
        ];
        for (flag, letter) in LETTERS {
            if self.contains(flag) {
                fmt::Write::write_char(f, letter)?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

/// The Timestamps option (RFC 7323 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpTimestamp {
    /// TSval: the sender's timestamp clock.
    pub tsval: u32,
    /// TSecr: the TSval being echoed (meaningful when ACK is set).
    pub tsecr: u32,
}

impl TcpTimestamp {
    /// Bytes of [`TcpTimestamp::aligned_option`].
    pub const ALIGNED_OPTION_LEN: usize = 12;

    /// The option as RFC 7323 Appendix A lays it out on every segment after the SYNs: NOP,
    /// NOP, kind 8, length 10, TSval, TSecr (12 bytes, keeping the header 4-byte aligned).
    #[inline]
    pub fn aligned_option(&self) -> [u8; Self::ALIGNED_OPTION_LEN] {
        let mut o = [kind::NOP, kind::NOP, kind::TS, 10, 0, 0, 0, 0, 0, 0, 0, 0];
        o[4..8].copy_from_slice(&self.tsval.to_be_bytes());
        o[8..12].copy_from_slice(&self.tsecr.to_be_bytes());
        o
    }
}

mod kind {
    // IANA "TCP Option Kind Numbers".
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    pub const MSS: u8 = 2;
    pub const WS: u8 = 3;
    pub const SACK_PERM: u8 = 4;
    pub const SACK: u8 = 5;
    pub const TS: u8 = 8;
}

/// One TCP option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpOption<'a> {
    /// Kind 0: end of the option list (RFC 9293 §3.2).
    EndOfList,
    /// Kind 1: padding (RFC 9293 §3.2).
    NoOperation,
    /// Kind 2, length 4 (RFC 9293 §3.2, §3.7.1).
    MaxSegmentSize(u16),
    /// Kind 3, length 3: the shift count, raw (RFC 7323 §2.2).
    WindowScale(u8),
    /// Kind 4, length 2 (RFC 2018 §2).
    SackPermitted,
    /// Kind 5, length 2 + 8n with n in 1..=4: (left edge, right edge) blocks,
    /// `None` past the last one (RFC 2018 §3).
    SackRange([Option<(u32, u32)>; 4]),
    /// Kind 8, length 10 (RFC 7323 §3.2).
    Timestamp(TcpTimestamp),
    /// Any other kind with a well-formed length; skipped by [`TcpRepr`].
    Unknown {
        /// Option kind.
        kind: u8,
        /// Option data (after kind and length).
        data: &'a [u8],
    },
}

impl<'a> TcpOption<'a> {
    /// Parse the option at the start of `buffer`; return the rest and the
    /// option. `buffer` must not be empty ([`Error::Truncated`]). A length
    /// byte below 2, past the end of `buffer`, or wrong for a known kind is
    /// [`Error::BadOption`] (RFC 9293 §3.2: a TCP implementation MUST handle
    /// an illegal option length without crashing; RFC 1122 §4.2.2.5).
    pub fn parse(buffer: &'a [u8]) -> Result<(&'a [u8], TcpOption<'a>)> {
        let (&kind, rest) = buffer.split_first().ok_or(Error::Truncated)?;
        match kind {
            // RFC 9293 §3.2: the single-octet options.
            kind::END => return Ok((rest, TcpOption::EndOfList)),
            kind::NOP => return Ok((rest, TcpOption::NoOperation)),
            _ => {}
        }
        let &length = rest.first().ok_or(Error::BadOption)?;
        let length = length as usize;
        if length < 2 || length > buffer.len() {
            return Err(Error::BadOption);
        }
        let data = &buffer[2..length];
        let rest = &buffer[length..];
        let option = match (kind, length) {
            (kind::MSS, 4) => TcpOption::MaxSegmentSize(bytes::get_u16(data, 0)),
            (kind::WS, 3) => TcpOption::WindowScale(data[0]),
            (kind::SACK_PERM, 2) => TcpOption::SackPermitted,
            (kind::SACK, _) if (10..=34).contains(&length) && (length - 2).is_multiple_of(8) => {
                let mut ranges = [None; 4];
                for (slot, block) in ranges.iter_mut().zip(data.chunks_exact(8)) {
                    *slot = Some((bytes::get_u32(block, 0), bytes::get_u32(block, 4)));
                }
                TcpOption::SackRange(ranges)
            }
            (kind::TS, 10) => TcpOption::Timestamp(TcpTimestamp {
                tsval: bytes::get_u32(data, 0),
                tsecr: bytes::get_u32(data, 4),
            }),
            (kind::MSS | kind::WS | kind::SACK_PERM | kind::SACK | kind::TS, _) => {
                return Err(Error::BadOption)
            }
            (kind, _) => TcpOption::Unknown { kind, data },
        };
        Ok((rest, option))
    }

    /// Bytes this option takes on the wire.
    pub fn buffer_len(&self) -> usize {
        match self {
            TcpOption::EndOfList | TcpOption::NoOperation => 1,
            TcpOption::MaxSegmentSize(_) => 4,
            TcpOption::WindowScale(_) => 3,
            TcpOption::SackPermitted => 2,
            TcpOption::SackRange(r) => 2 + 8 * r.iter().flatten().count(),
            TcpOption::Timestamp(_) => 10,
            TcpOption::Unknown { data, .. } => 2 + data.len(),
        }
    }

    /// Write the option at the start of `buffer` (which must hold
    /// [`buffer_len`](TcpOption::buffer_len) bytes) and return the rest.
    /// `Unknown` data must be at most 253 bytes.
    pub fn emit<'b>(&self, buffer: &'b mut [u8]) -> &'b mut [u8] {
        let len = self.buffer_len();
        let (out, rest) = buffer.split_at_mut(len);
        match *self {
            TcpOption::EndOfList => out[0] = kind::END,
            TcpOption::NoOperation => out[0] = kind::NOP,
            TcpOption::MaxSegmentSize(mss) => {
                out[0] = kind::MSS;
                out[1] = 4;
                bytes::set_u16(out, 2, mss);
            }
            TcpOption::WindowScale(shift) => {
                out[0] = kind::WS;
                out[1] = 3;
                out[2] = shift;
            }
            TcpOption::SackPermitted => {
                out[0] = kind::SACK_PERM;
                out[1] = 2;
            }
            TcpOption::SackRange(ranges) => {
                out[0] = kind::SACK;
                out[1] = len as u8;
                for (block, (left, right)) in
                    out[2..].chunks_exact_mut(8).zip(ranges.iter().flatten())
                {
                    bytes::set_u32(block, 0, *left);
                    bytes::set_u32(block, 4, *right);
                }
            }
            TcpOption::Timestamp(ts) => {
                out[0] = kind::TS;
                out[1] = 10;
                bytes::set_u32(out, 2, ts.tsval);
                bytes::set_u32(out, 6, ts.tsecr);
            }
            TcpOption::Unknown { kind, data } => {
                debug_assert!(data.len() <= 253);
                out[0] = kind;
                out[1] = len as u8;
                out[2..].copy_from_slice(data);
            }
        }
        rest
    }
}

/// Iterator over the options area of a TCP header. Yields each option in
/// order, stops after End of List or at the end of the area, and yields one
/// `Err` (then stops) on a malformed option.
#[derive(Debug, Clone)]
pub struct TcpOptionsIter<'a> {
    data: &'a [u8],
}

impl<'a> TcpOptionsIter<'a> {
    /// Iterate over an options area.
    pub const fn new(options: &'a [u8]) -> TcpOptionsIter<'a> {
        TcpOptionsIter { data: options }
    }
}

impl<'a> Iterator for TcpOptionsIter<'a> {
    type Item = Result<TcpOption<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        match TcpOption::parse(self.data) {
            Ok((rest, option)) => {
                // RFC 9293 §3.2: End of Option List ends the options; what
                // follows it up to the data offset is padding.
                self.data = if option == TcpOption::EndOfList {
                    &[]
                } else {
                    rest
                };
                Some(Ok(option))
            }
            Err(e) => {
                self.data = &[];
                Some(Err(e))
            }
        }
    }
}

mod field {
    use core::ops::Range;
    // RFC 9293 §3.1, "Header Format".
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of a TCP header without options.
pub const TCP_HEADER_LEN: usize = field::URGENT.end;
/// Longest TCP header (data offset 15).
pub const TCP_MAX_HEADER_LEN: usize = 60;
/// Most option bytes a header can carry.
pub const TCP_MAX_OPTIONS_LEN: usize = TCP_MAX_HEADER_LEN - TCP_HEADER_LEN;

/// A view over a TCP segment. The buffer must be the whole segment and
/// nothing more (the IPv4 payload), since the checksum covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wrap and check the header length (see [`TcpPacket::check_len`]).
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that the fixed header fits ([`Error::Truncated`]), that the
    /// data offset is at least 5 ([`Error::BadHeaderLen`]), and that the
    /// header with its options fits ([`Error::Truncated`]).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < TCP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len() as usize;
        // RFC 9293 §3.1, "Data Offset": the header is at least 5 words.
        if header_len < TCP_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> TcpSeqNumber {
        TcpSeqNumber(bytes::get_u32(self.buffer.as_ref(), field::SEQ_NUM.start))
    }

    /// Acknowledgment number field (meaningful only if ACK is set).
    #[inline]
    pub fn ack_number(&self) -> TcpSeqNumber {
        TcpSeqNumber(bytes::get_u32(self.buffer.as_ref(), field::ACK_NUM.start))
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The control bits.
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    /// FIN set?
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().fin()
    }

    /// SYN set?
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().syn()
    }

    /// RST set?
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().rst()
    }

    /// ACK set?
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().ack()
    }

    /// Window field (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The options area (between the fixed header and the data offset).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[TCP_HEADER_LEN..self.header_len() as usize]
    }

    /// Iterate over the options.
    #[inline]
    pub fn options_iter(&self) -> TcpOptionsIter<'_> {
        TcpOptionsIter::new(self.options())
    }

    /// Sequence space the segment occupies: data plus one each for SYN
    /// and FIN (RFC 9293 §3.4).
    #[inline]
    pub fn segment_len(&self) -> usize {
        let data = self.buffer.as_ref().len() - self.header_len() as usize;
        data + self.syn() as usize + self.fin() as usize
    }

    /// Does the checksum over the whole segment and the IPv4 pseudo-header
    /// verify? (RFC 9293 §3.1, "Checksum".)
    #[inline]
    pub fn verify_checksum(&self, src_addr: Ipv4Address, dst_addr: Ipv4Address) -> bool {
        checksum::verify_ipv4_upper(src_addr, dst_addr, IpProtocol::Tcp, self.buffer.as_ref())
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> TcpPacket<&'a T> {
    /// The data after the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len() as usize..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Set the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::SRC_PORT.start, value)
    }

    /// Set the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::DST_PORT.start, value)
    }

    /// Set the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: TcpSeqNumber) {
        bytes::set_u32(self.buffer.as_mut(), field::SEQ_NUM.start, value.0)
    }

    /// Set the acknowledgment number field.
    #[inline]
    pub fn set_ack_number(&mut self, value: TcpSeqNumber) {
        bytes::set_u32(self.buffer.as_mut(), field::ACK_NUM.start, value.0)
    }

    /// Set the header length in bytes (a multiple of 4, 20..=60); the
    /// reserved bits are cleared.
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::DATA_OFF] = (value / 4) << 4;
    }

    /// Set the control bits.
    #[inline]
    pub fn set_flags(&mut self, value: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = value.0
    }

    /// Set the window field.
    #[inline]
    pub fn set_window_len(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::WIN_SIZE.start, value)
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Set the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::URGENT.start, value)
    }

    /// The options area, mutably.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len() as usize;
        &mut self.buffer.as_mut()[TCP_HEADER_LEN..header_len]
    }

    /// The data after the header, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len() as usize;
        &mut self.buffer.as_mut()[header_len..]
    }

    /// Compute and store the checksum over the whole buffer and the IPv4
    /// pseudo-header.
    #[inline]
    pub fn fill_checksum(&mut self, src_addr: Ipv4Address, dst_addr: Ipv4Address) {
        self.set_checksum(0);
        let sum = checksum::checksum_ipv4_upper(
            src_addr,
            dst_addr,
            IpProtocol::Tcp,
            self.buffer.as_ref(),
        );
        self.set_checksum(sum)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for TcpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of a TCP segment the stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Control bits as received. On emit, ACK is taken from `ack_number`.
    pub flags: TcpFlags,
    /// Sequence number of the first octet (of the SYN, if set).
    pub seq_number: TcpSeqNumber,
    /// Acknowledgment number: `Some` iff the ACK flag is set.
    pub ack_number: Option<TcpSeqNumber>,
    /// Window field, raw (not scaled).
    pub window_len: u16,
    /// Window Scale option: the shift count, clamped to 14 on parse
    /// (RFC 7323 §2.3).
    pub window_scale: Option<u8>,
    /// Maximum Segment Size option.
    pub max_seg_size: Option<u16>,
    /// SACK-Permitted option present (RFC 2018 §2).
    pub sack_permitted: bool,
    /// SACK blocks, (left edge, right edge), first ones first, `None` after
    /// the last (RFC 2018 §3). Parse keeps the first three of up to four.
    pub sack_ranges: [Option<(u32, u32)>; 3],
    /// Timestamps option (RFC 7323 §3).
    pub timestamp: Option<TcpTimestamp>,
    /// Segment data.
    pub payload: &'a [u8],
}

/// Option layout chosen by [`TcpRepr::header_len`] and used by
/// [`TcpRepr::emit`]; every piece is a multiple of 4 bytes, so no trailing
/// padding is needed.
struct OptionsLayout {
    len: usize,
    sack_blocks: usize,
}

impl<'a> TcpRepr<'a> {
    /// Parse a TCP segment: lengths, ports (0 is [`Error::Malformed`]), the
    /// checksum over the IPv4 pseudo-header when `caps.tcp.rx()`, then the
    /// options. Unknown options are skipped (RFC 9293 §3.2, RFC 1122
    /// §4.2.2.5: a TCP MUST ignore options it does not implement); a
    /// malformed one is [`Error::BadOption`].
    ///
    /// `packet` must cover exactly the segment (the IPv4 payload).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &TcpPacket<&'a T>,
        src_addr: Ipv4Address,
        dst_addr: Ipv4Address,
        caps: &ChecksumCapabilities,
    ) -> Result<TcpRepr<'a>> {
        packet.check_len()?;
        // Port 0 is reserved and never a valid endpoint.
        if packet.src_port() == 0 || packet.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        if caps.tcp.rx() && !packet.verify_checksum(src_addr, dst_addr) {
            return Err(Error::BadChecksum);
        }

        let flags = packet.flags();
        // RFC 9293 §3.1: the acknowledgment number is significant only when
        // ACK is set.
        let ack_number = if flags.ack() {
            Some(packet.ack_number())
        } else {
            None
        };

        let mut repr = TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            flags,
            seq_number: packet.seq_number(),
            ack_number,
            window_len: packet.window_len(),
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: packet.payload(),
        };

        let mut options = packet.options();
        // RFC 7323 Appendix A: most segments of a connection with timestamps
        // carry exactly NOP, NOP, Timestamps; take that layout in one step.
        if let [kind::NOP, kind::NOP, kind::TS, 10, ts @ ..] = options {
            if ts.len() == 8 {
                repr.timestamp = Some(TcpTimestamp {
                    tsval: bytes::get_u32(ts, 0),
                    tsecr: bytes::get_u32(ts, 4),
                });
                options = &[];
            }
        }
        while !options.is_empty() {
            let (rest, option) = TcpOption::parse(options)?;
            match option {
                TcpOption::EndOfList => break,
                TcpOption::NoOperation => {}
                TcpOption::MaxSegmentSize(mss) => repr.max_seg_size = Some(mss),
                // RFC 7323 §2.3: a shift above 14 MUST be taken as 14.
                TcpOption::WindowScale(shift) => repr.window_scale = Some(shift.min(14)),
                TcpOption::SackPermitted => repr.sack_permitted = true,
                TcpOption::SackRange(r) => repr.sack_ranges = [r[0], r[1], r[2]],
                TcpOption::Timestamp(ts) => repr.timestamp = Some(ts),
                TcpOption::Unknown { .. } => {}
            }
            options = rest;
        }
        Ok(repr)
    }

    #[inline]
    fn options_layout(&self) -> OptionsLayout {
        let mut len = 0;
        if self.max_seg_size.is_some() {
            len += 4; // MSS
        }
        if self.timestamp.is_some() {
            len += 12; // SACK-Permitted or NOP NOP, then Timestamps
        } else if self.sack_permitted {
            len += 4; // NOP NOP SACK-Permitted
        }
        if self.window_scale.is_some() {
            len += 4; // NOP Window Scale
        }
        let wanted = self.sack_ranges.iter().flatten().count();
        // RFC 2018 §3: at most 3 blocks fit next to Timestamps; blocks that
        // do not fit in the 40 bytes of option space are left out, last
        // first.
        let room = TCP_MAX_OPTIONS_LEN.saturating_sub(len + 4) / 8;
        let sack_blocks = wanted.min(room);
        if sack_blocks > 0 {
            len += 4 + 8 * sack_blocks; // NOP NOP SACK
        }
        OptionsLayout { len, sack_blocks }
    }

    /// Header length including options (a multiple of 4, at most 60).
    #[inline]
    pub fn header_len(&self) -> usize {
        TCP_HEADER_LEN + self.options_layout().len
    }

    /// Header plus payload.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Sequence space the segment occupies: payload plus one each for SYN
    /// and FIN (RFC 9293 §3.4).
    #[inline]
    pub fn segment_len(&self) -> usize {
        self.payload.len() + self.flags.syn() as usize + self.flags.fin() as usize
    }

    /// Write the segment: header, options, payload, then the checksum over
    /// the IPv4 pseudo-header (zero when `caps.tcp.tx()` is off, for the
    /// device to fill).
    ///
    /// The ACK bit is written iff `ack_number` is `Some`, whatever `flags`
    /// says; the reserved bits and the urgent pointer are zero. Options are
    /// laid out as Linux does on a SYN (MSS, SACK-Permitted, Timestamps, NOP,
    /// Window Scale), NOP-padded to 4-byte boundaries, then SACK blocks.
    ///
    /// The buffer must be exactly [`buffer_len`](TcpRepr::buffer_len) bytes
    /// (it is the IPv4 payload, and the checksum covers it all).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TcpPacket<T>,
        src_addr: Ipv4Address,
        dst_addr: Ipv4Address,
        caps: &ChecksumCapabilities,
    ) {
        let header_len = self.header_len();
        let total_len = header_len + self.payload.len();
        let buf = &mut packet.buffer.as_mut()[..total_len];
        let (header, payload) = buf.split_at_mut(header_len);
        self.emit_header(header);
        payload.copy_from_slice(self.payload);
        if caps.tcp.tx() {
            let sum = checksum::checksum_ipv4_upper(src_addr, dst_addr, IpProtocol::Tcp, buf);
            bytes::set_u16(buf, field::CHECKSUM.start, sum);
        }
    }

    /// Write the header alone (fixed part and options, laid out as
    /// [`emit`](TcpRepr::emit) does) with a zero checksum, for a caller that
    /// places the payload behind it itself and fills the checksum over both
    /// ([`TcpPacket::fill_checksum`]). `header` must be exactly
    /// [`header_len`](TcpRepr::header_len) bytes; `payload` is not looked at.
    pub fn emit_header(&self, header: &mut [u8]) {
        let layout = self.options_layout();
        let header_len = TCP_HEADER_LEN + layout.len;
        assert_eq!(
            header.len(),
            header_len,
            "TCP header buffer of the wrong size"
        );
        let (fixed, options) = header.split_at_mut(TCP_HEADER_LEN);

        // RFC 9293 §3.1: the fixed header, built in registers and stored at once.
        let ack = self.ack_number.map_or(0, |a| a.0);
        let mut flags = self.flags;
        flags.set(TcpFlags::ACK, self.ack_number.is_some());
        let mut h = [0u8; TCP_HEADER_LEN];
        h[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        h[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        h[4..8].copy_from_slice(&self.seq_number.0.to_be_bytes());
        h[8..12].copy_from_slice(&ack.to_be_bytes());
        h[field::DATA_OFF] = ((header_len / 4) as u8) << 4;
        h[field::FLAGS] = flags.0;
        h[14..16].copy_from_slice(&self.window_len.to_be_bytes());
        // Checksum and urgent pointer stay zero.
        fixed.copy_from_slice(&h);

        // The usual segment of a connection with timestamps: NOP, NOP, TS.
        if let (Some(ts), None, None, false, 0) = (
            self.timestamp,
            self.max_seg_size,
            self.window_scale,
            self.sack_permitted,
            layout.sack_blocks,
        ) {
            options.copy_from_slice(&ts.aligned_option());
            return;
        }

        let buf = options;
        let mut at = 0;
        if let Some(mss) = self.max_seg_size {
            buf[at] = kind::MSS;
            buf[at + 1] = 4;
            bytes::set_u16(buf, at + 2, mss);
            at += 4;
        }
        if let Some(ts) = self.timestamp {
            if self.sack_permitted {
                buf[at] = kind::SACK_PERM;
                buf[at + 1] = 2;
            } else {
                buf[at] = kind::NOP;
                buf[at + 1] = kind::NOP;
            }
            buf[at + 2] = kind::TS;
            buf[at + 3] = 10;
            bytes::set_u32(buf, at + 4, ts.tsval);
            bytes::set_u32(buf, at + 8, ts.tsecr);
            at += 12;
        } else if self.sack_permitted {
            buf[at] = kind::NOP;
            buf[at + 1] = kind::NOP;
            buf[at + 2] = kind::SACK_PERM;
            buf[at + 3] = 2;
            at += 4;
        }
        if let Some(shift) = self.window_scale {
            buf[at] = kind::NOP;
            buf[at + 1] = kind::WS;
            buf[at + 2] = 3;
            buf[at + 3] = shift;
            at += 4;
        }
        if layout.sack_blocks > 0 {
            buf[at] = kind::NOP;
            buf[at + 1] = kind::NOP;
            buf[at + 2] = kind::SACK;
            buf[at + 3] = (2 + 8 * layout.sack_blocks) as u8;
            at += 4;
            for (left, right) in self.sack_ranges.iter().flatten().take(layout.sack_blocks) {
                bytes::set_u32(buf, at, *left);
                bytes::set_u32(buf, at + 4, *right);
                at += 8;
            }
        }
        debug_assert_eq!(at, layout.len);
    }
}

impl fmt::Display for TcpRepr<'_> {
    /// `TCP src=.. dst=.. seq=.. ack=.. win=.. flags=SA len=..` followed by
    /// the options present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TCP src={} dst={} seq={}",
            self.src_port, self.dst_port, self.seq_number
        )?;
        if let Some(ack) = self.ack_number {
            write!(f, " ack={ack}")?;
        }
        write!(
            f,
            " win={} flags={} len={}",
            self.window_len,
            self.flags,
            self.payload.len()
        )?;
        if let Some(mss) = self.max_seg_size {
            write!(f, " mss={mss}")?;
        }
        if let Some(ws) = self.window_scale {
            write!(f, " ws={ws}")?;
        }
        if self.sack_permitted {
            f.write_str(" sackOK")?;
        }
        if let Some(ts) = self.timestamp {
            write!(f, " ts={}/{}", ts.tsval, ts.tsecr)?;
        }
        let mut ranges = self.sack_ranges.iter().flatten().peekable();
        if ranges.peek().is_some() {
            f.write_str(" sack=")?;
            for (i, (left, right)) in ranges.enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{left}-{right}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
