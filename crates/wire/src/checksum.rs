//! The Internet checksum (RFC 1071) and checksum offload capabilities.
//!
//! The one's complement sum is computed in native byte order and swapped to
//! network order once, at the end (RFC 1071 §2(B): the sum is byte-order
//! independent). RFC 1071 §2(A)/(C): the sum is associative and commutative
//! and 65535 divides 2^64 - 1, so summing 64-bit words with end-around carry
//! and folding gives the same 16-bit result as summing 16-bit words. Headers
//! and small segments are summed 64 bits at a time on four carry chains;
//! longer data, on CPUs with AVX2 (chosen at run time), as 32-bit words
//! widened into eight 64-bit vector lanes.
//!
//! Conventions: [`data`], [`pseudo_header`] and [`combine`] return the folded
//! 16-bit one's complement *sum* (not complemented). The value that goes into
//! a header is `!combine(&[..])`; a received header verifies when the sum over
//! it, checksum field included, is `0xffff`.

use crate::ipv4::{IpProtocol, Ipv4Address};

/// Whether a checksum is verified on receive and/or computed on transmit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Checksum {
    /// Verify on receive and compute on transmit.
    #[default]
    Both,
    /// Verify on receive only (the device fills it on transmit).
    Rx,
    /// Compute on transmit only (the device verified it on receive).
    Tx,
    /// Neither (offloaded both ways, or a trusted simulated wire).
    None,
}

impl Checksum {
    /// Verify this checksum on receive?
    #[inline]
    pub const fn rx(&self) -> bool {
        matches!(self, Checksum::Both | Checksum::Rx)
    }

    /// Compute this checksum on transmit?
    #[inline]
    pub const fn tx(&self) -> bool {
        matches!(self, Checksum::Both | Checksum::Tx)
    }
}

/// Which checksums software handles, per protocol.
///
/// `Default` is [`Checksum::Both`] everywhere (no offload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChecksumCapabilities {
    /// IPv4 header checksum.
    pub ipv4: Checksum,
    /// UDP checksum (over the IPv4 pseudo-header).
    pub udp: Checksum,
    /// TCP checksum (over the IPv4 pseudo-header).
    pub tcp: Checksum,
    /// ICMPv4 checksum.
    pub icmpv4: Checksum,
}

impl ChecksumCapabilities {
    /// Software neither verifies nor computes any checksum (full offload).
    pub const fn ignored() -> Self {
        ChecksumCapabilities {
            ipv4: Checksum::None,
            udp: Checksum::None,
            tcp: Checksum::None,
            icmpv4: Checksum::None,
        }
    }
}

#[inline(always)]
fn add_carry(acc: u64, value: u64) -> u64 {
    // One's complement addition on 64 bits: the carry out wraps around.
    // `sum + carry` cannot overflow: with a carry, sum <= 2^64 - 2.
    let (sum, carry) = acc.overflowing_add(value);
    sum + carry as u64
}

#[inline(always)]
fn load_ne_u64(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&chunk[..8]);
    u64::from_ne_bytes(word)
}

/// Fold a 64-bit one's complement accumulator to 16 bits.
#[inline]
pub const fn fold(sum: u64) -> u16 {
    // Each step adds the two halves with end-around carry.
    let (s32, carry) = (sum as u32).overflowing_add((sum >> 32) as u32);
    let s32 = s32 + carry as u32; // cannot overflow: with a carry, s32 <= 2^32 - 2
    let (s16, carry) = (s32 as u16).overflowing_add((s32 >> 16) as u16);
    s16 + carry as u16
}

/// Unfolded one's complement sum of `data` as 16-bit words in *native* byte
/// order, in a 64-bit accumulator ([`fold`] it, then `u16::from_be` gives the
/// network-order sum). An odd trailing byte is padded with zero on the right
/// (RFC 1071 §1, step (1)).
///
/// Headers and small segments take [`sum_ne_scalar`]. On x86-64 with AVX2
/// (detected once, at run time) longer data takes [`sum_ne_lanes`] compiled
/// for 256-bit vectors, about four times faster on a full-size segment.
#[inline]
fn sum_ne(data: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if data.len() >= WIDE_MIN_LEN && std::arch::is_x86_feature_detected!("avx2") {
        return wide::sum_ne_avx2(data);
    }
    sum_ne_scalar(data)
}

/// From this length on, the vector loop pays for its set-up and final
/// reduction. Shorter data (headers, small messages) stays scalar.
#[cfg(target_arch = "x86_64")]
const WIDE_MIN_LEN: usize = 128;

/// [`sum_ne`] with four independent carry chains, 64 bytes per iteration (an
/// add and an add-with-carry per 8 bytes); the last 0..63 bytes go 16, 8, 4,
/// 2, 1 at a time.
#[inline]
fn sum_ne_scalar(data: &[u8]) -> u64 {
    let (mut a, mut b, mut c, mut d) = (0u64, 0u64, 0u64, 0u64);
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        // Four independent carry chains keep the adders busy.
        a = add_carry(a, load_ne_u64(&block[0..8]));
        b = add_carry(b, load_ne_u64(&block[8..16]));
        c = add_carry(c, load_ne_u64(&block[16..24]));
        d = add_carry(d, load_ne_u64(&block[24..32]));
        a = add_carry(a, load_ne_u64(&block[32..40]));
        b = add_carry(b, load_ne_u64(&block[40..48]));
        c = add_carry(c, load_ne_u64(&block[48..56]));
        d = add_carry(d, load_ne_u64(&block[56..64]));
    }
    let rest = blocks.remainder();
    let mut pairs = rest.chunks_exact(16);
    for pair in &mut pairs {
        a = add_carry(a, load_ne_u64(&pair[0..8]));
        b = add_carry(b, load_ne_u64(&pair[8..16]));
    }
    let mut rest = pairs.remainder();
    if rest.len() >= 8 {
        c = add_carry(c, load_ne_u64(&rest[0..8]));
        rest = &rest[8..];
    }
    // The last 0..7 bytes start at an even offset, so 32- and 16-bit words
    // there keep their place in the 16-bit sum.
    let mut small: u64 = 0;
    if rest.len() >= 4 {
        small += u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        small += u16::from_ne_bytes([rest[0], rest[1]]) as u64;
        rest = &rest[2..];
    }
    if let [last] = rest {
        // Zero padding on the right: an odd last byte is the first byte of
        // its 16-bit word, as RFC 1071 requires.
        small += u16::from_ne_bytes([*last, 0]) as u64;
    }
    add_carry(add_carry(add_carry(a, b), add_carry(c, d)), small)
}

/// [`sum_ne`] written so the compiler vectorizes its main loop: 32 bytes per
/// iteration as eight 32-bit words, each widened into its own 64-bit lane.
/// Adding a 32-bit word to a 64-bit lane never carries out of the lane (that
/// would take 2^32 words, 16 GiB), and a 32-bit word in native order is two
/// native 16-bit words, so the lanes added together give the 16-bit sum.
#[inline(always)]
fn sum_ne_lanes(data: &[u8]) -> u64 {
    let mut lanes = [0u64; 8];
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) as u64;
        }
    }
    let sum = lanes.iter().fold(0, |acc, &lane| add_carry(acc, lane));
    // The last 0..31 bytes, with the scalar code.
    add_carry(sum, sum_ne_scalar(blocks.remainder()))
}

/// [`sum_ne_lanes`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod wide {
    /// Only call after `is_x86_feature_detected!("avx2")` returned true.
    #[target_feature(enable = "avx2")]
    fn sum_ne_avx2_unchecked(data: &[u8]) -> u64 {
        super::sum_ne_lanes(data)
    }

    /// [`super::sum_ne`] with AVX2; the caller has detected AVX2.
    #[inline]
    pub(super) fn sum_ne_avx2(data: &[u8]) -> u64 {
        debug_assert!(std::arch::is_x86_feature_detected!("avx2"));
        // SAFETY: the caller checked `is_x86_feature_detected!("avx2")`, so
        // the CPU executes the AVX2 instructions of this instantiation. The
        // function itself is safe Rust; only the feature needs the promise.
        unsafe { sum_ne_avx2_unchecked(data) }
    }
}

/// Unfolded one's complement sum of `data` as big-endian 16-bit words, in a
/// 64-bit accumulator. An odd trailing byte is padded with zero on the right
/// (RFC 1071 §1, step (1)).
#[inline]
pub fn sum_u64(data: &[u8]) -> u64 {
    u16::from_be(fold(sum_ne(data))) as u64
}

/// Folded one's complement sum of `data` (not complemented).
#[inline]
pub fn data(data: &[u8]) -> u16 {
    u16::from_be(fold(sum_ne(data)))
}

/// One's complement sum of several folded sums (not complemented).
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    let mut acc: u64 = 0;
    for &s in sums {
        acc += s as u64;
    }
    fold(acc)
}

/// Folded sum of the IPv4 pseudo-header used by TCP and UDP:
/// source, destination, zero, protocol, upper-layer length
/// (RFC 793 §3.1 / RFC 9293 §3.1, RFC 768 "Fields").
#[inline]
pub fn pseudo_header(
    src_addr: Ipv4Address,
    dst_addr: Ipv4Address,
    protocol: IpProtocol,
    length: u32,
) -> u16 {
    let acc = u32::from_be_bytes(src_addr.0) as u64
        + u32::from_be_bytes(dst_addr.0) as u64
        + u8::from(protocol) as u64
        + length as u64;
    fold(acc)
}

/// The checksum field value for `data` alone: `!sum(data)` with the field
/// zeroed in `data` beforehand.
#[inline]
pub fn checksum(bytes: &[u8]) -> u16 {
    !data(bytes)
}

/// The checksum field value for an upper-layer segment (TCP or UDP) over
/// IPv4, `segment` having its checksum field zeroed.
#[inline]
pub fn checksum_ipv4_upper(
    src_addr: Ipv4Address,
    dst_addr: Ipv4Address,
    protocol: IpProtocol,
    segment: &[u8],
) -> u16 {
    let pseudo = pseudo_header(src_addr, dst_addr, protocol, segment.len() as u32);
    !fold(add_carry(pseudo as u64, sum_u64(segment)))
}

/// Does the sum over `segment` (checksum field included) and its IPv4
/// pseudo-header verify?
#[inline]
pub fn verify_ipv4_upper(
    src_addr: Ipv4Address,
    dst_addr: Ipv4Address,
    protocol: IpProtocol,
    segment: &[u8],
) -> bool {
    let pseudo = pseudo_header(src_addr, dst_addr, protocol, segment.len() as u32);
    fold(add_carry(pseudo as u64, sum_u64(segment))) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 §4.1, word by word, as simply as possible.
    fn reference(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
            i += 2;
        }
        if i < data.len() {
            sum += (data[i] as u32) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// One's complement equality: 0x0000 and 0xffff are both zero.
    fn same(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(reference(&bytes), 0xddf2);
    }

    #[test]
    fn empty_and_all_ones() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xff; 64]), 0xffff);
        assert_eq!(data(&[0xff; 63]), reference(&[0xff; 63]));
    }

    #[test]
    fn fold_handles_extremes() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0xffff_0001), 1);
    }

    #[test]
    fn large_buffer_matches_reference() {
        // Long enough to push many carries through both accumulators.
        let buf: Vec<u8> = (0..200_003u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        assert!(same(data(&buf), reference(&buf)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random lengths and start offsets (alignments) against the reference.
        #[test]
        fn matches_reference(buf in proptest::collection::vec(any::<u8>(), 0..1600), start in 0usize..16) {
            let start = start.min(buf.len());
            let slice = &buf[start..];
            prop_assert!(same(data(slice), reference(slice)));
        }

        /// Both ways of summing agree with the reference at every length,
        /// whichever of them [`data`] picks on this machine.
        #[test]
        fn scalar_and_lanes_match_reference(buf in proptest::collection::vec(any::<u8>(), 0..1600), start in 0usize..16) {
            let start = start.min(buf.len());
            let slice = &buf[start..];
            prop_assert!(same(u16::from_be(fold(sum_ne_scalar(slice))), reference(slice)));
            prop_assert!(same(u16::from_be(fold(sum_ne_lanes(slice))), reference(slice)));
        }

        /// Splitting at an even offset and combining gives the same sum.
        #[test]
        fn combine_is_split_invariant(buf in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..300) {
            let cut = (cut * 2).min(buf.len() & !1);
            let (a, b) = buf.split_at(cut);
            prop_assert!(same(combine(&[data(a), data(b)]), data(&buf)));
        }

        /// A filled checksum verifies.
        #[test]
        fn filled_checksum_verifies(mut buf in proptest::collection::vec(any::<u8>(), 2..600), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>()) {
            buf[0] = 0;
            buf[1] = 0;
            let (s, d) = (Ipv4Address(src), Ipv4Address(dst));
            let c = checksum_ipv4_upper(s, d, IpProtocol::Tcp, &buf);
            buf[..2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verify_ipv4_upper(s, d, IpProtocol::Tcp, &buf));
        }
    }
}
