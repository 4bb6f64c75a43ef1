//! The Internet checksum (RFC 1071) and checksum offload capabilities.
//!
//! The one's complement sum is computed 32 bytes per iteration in two `u64`
//! accumulators with end-around carry and folded to 16 bits at the end.
//! RFC 1071 §2(A)/(C): the sum is associative and commutative, so summing
//! big-endian 64-bit words with end-around carry and folding gives the same
//! 16-bit result as summing 16-bit words (65535 divides 2^64 - 1).
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
fn load_be_u64(chunk: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&chunk[..8]);
    u64::from_be_bytes(word)
}

/// Fold a 64-bit one's complement accumulator to 16 bits.
#[inline]
pub const fn fold(mut sum: u64) -> u16 {
    sum = (sum >> 32) + (sum & 0xffff_ffff);
    sum = (sum >> 32) + (sum & 0xffff_ffff);
    sum = (sum >> 16) + (sum & 0xffff);
    sum = (sum >> 16) + (sum & 0xffff);
    sum as u16
}

/// Unfolded one's complement sum of `data` as big-endian 16-bit words, in a
/// 64-bit accumulator. An odd trailing byte is padded with zero on the right
/// (RFC 1071 §1, step (1)).
#[inline]
pub fn sum_u64(data: &[u8]) -> u64 {
    let mut a: u64 = 0;
    let mut b: u64 = 0;
    let mut chunks = data.chunks_exact(32);
    for chunk in &mut chunks {
        // Two independent carry chains keep both adders busy.
        a = add_carry(a, load_be_u64(&chunk[0..8]));
        b = add_carry(b, load_be_u64(&chunk[8..16]));
        a = add_carry(a, load_be_u64(&chunk[16..24]));
        b = add_carry(b, load_be_u64(&chunk[24..32]));
    }
    let rest = chunks.remainder();
    let mut words = rest.chunks_exact(8);
    for word in &mut words {
        a = add_carry(a, load_be_u64(word));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Big-endian load with zero padding on the right: an odd last byte
        // becomes the high byte of its 16-bit word, as RFC 1071 requires.
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        b = add_carry(b, u64::from_be_bytes(word));
    }
    add_carry(a, b)
}

/// Folded one's complement sum of `data` (not complemented).
#[inline]
pub fn data(data: &[u8]) -> u16 {
    fold(sum_u64(data))
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
