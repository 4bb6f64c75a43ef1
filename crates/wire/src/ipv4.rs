//! IPv4 (RFC 791), addresses and CIDR prefixes (RFC 4632).
//!
//! bypass does not reassemble: [`Ipv4Repr::parse`] rejects fragments with
//! [`Error::Fragmented`] so the stack can count them, and [`Ipv4Repr::emit`]
//! always sets Don't Fragment. Options are skipped (the header length comes
//! from IHL) and never emitted.

use core::fmt;
use core::str::FromStr;
use std::net::Ipv4Addr;

use crate::checksum::{self, ChecksumCapabilities};
use crate::{bytes, Error, Result};

/// An IPv4 address, in network byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipv4Address(pub [u8; 4]);

impl Ipv4Address {
    /// 0.0.0.0.
    pub const UNSPECIFIED: Ipv4Address = Ipv4Address([0; 4]);
    /// 255.255.255.255 (limited broadcast).
    pub const BROADCAST: Ipv4Address = Ipv4Address([255; 4]);

    /// a.b.c.d.
    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Ipv4Address {
        Ipv4Address([a, b, c, d])
    }

    /// Build from the first four bytes of `data`; `None` if shorter.
    pub fn from_bytes(data: &[u8]) -> Option<Ipv4Address> {
        let bytes: [u8; 4] = data.get(..4)?.try_into().ok()?;
        Some(Ipv4Address(bytes))
    }

    /// The four octets.
    pub const fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    /// The address as a host-order integer.
    pub const fn to_bits(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    /// From a host-order integer.
    pub const fn from_bits(bits: u32) -> Ipv4Address {
        Ipv4Address(bits.to_be_bytes())
    }

    /// 0.0.0.0?
    pub const fn is_unspecified(&self) -> bool {
        self.to_bits() == 0
    }

    /// 255.255.255.255?
    pub const fn is_broadcast(&self) -> bool {
        self.to_bits() == u32::MAX
    }

    /// 224.0.0.0/4 (RFC 5771)?
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0xf0 == 224
    }

    /// 127.0.0.0/8?
    pub const fn is_loopback(&self) -> bool {
        self.0[0] == 127
    }

    /// 169.254.0.0/16 (RFC 3927)?
    pub const fn is_link_local(&self) -> bool {
        self.0[0] == 169 && self.0[1] == 254
    }

    /// Usable as a source or a unicast destination: not unspecified, not the
    /// limited broadcast, not multicast, not in 240.0.0.0/4 (reserved).
    /// A subnet's directed broadcast cannot be told apart without the prefix;
    /// see [`Ipv4Cidr::broadcast`].
    pub const fn is_unicast(&self) -> bool {
        !(self.is_unspecified() || self.is_broadcast() || self.0[0] >= 224)
    }
}

impl From<Ipv4Addr> for Ipv4Address {
    fn from(addr: Ipv4Addr) -> Self {
        Ipv4Address(addr.octets())
    }
}

impl From<Ipv4Address> for Ipv4Addr {
    fn from(addr: Ipv4Address) -> Self {
        Ipv4Addr::from(addr.0)
    }
}

impl From<[u8; 4]> for Ipv4Address {
    fn from(octets: [u8; 4]) -> Self {
        Ipv4Address(octets)
    }
}

impl fmt::Display for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(f, "{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    }
}

impl FromStr for Ipv4Address {
    type Err = Error;

    /// Dotted quad, e.g. `10.0.0.1`.
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<Ipv4Addr>()
            .map(Ipv4Address::from)
            .map_err(|_| Error::Malformed)
    }
}

/// An IPv4 address with a prefix length, e.g. `10.0.0.1/24`: an interface
/// address together with its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address (host bits are kept).
    pub address: Ipv4Address,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

impl Ipv4Cidr {
    /// Build a prefix. Panics if `prefix_len > 32` (a programming error;
    /// text input goes through `FromStr`, which returns an error instead).
    pub const fn new(address: Ipv4Address, prefix_len: u8) -> Ipv4Cidr {
        assert!(prefix_len <= 32, "IPv4 prefix length above 32");
        Ipv4Cidr {
            address,
            prefix_len,
        }
    }

    const fn mask_bits(&self) -> u32 {
        if self.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix_len as u32)
        }
    }

    /// The netmask, e.g. 255.255.255.0 for /24.
    pub const fn netmask(&self) -> Ipv4Address {
        Ipv4Address::from_bits(self.mask_bits())
    }

    /// The network: host bits cleared, same prefix length.
    pub const fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr {
            address: Ipv4Address::from_bits(self.address.to_bits() & self.mask_bits()),
            prefix_len: self.prefix_len,
        }
    }

    /// The directed broadcast address, or `None` for /31 and /32, which have
    /// none (RFC 3021).
    pub const fn broadcast(&self) -> Option<Ipv4Address> {
        if self.prefix_len >= 31 {
            None
        } else {
            Some(Ipv4Address::from_bits(
                self.address.to_bits() | !self.mask_bits(),
            ))
        }
    }

    /// Is `addr` inside this prefix?
    pub const fn contains(&self, addr: Ipv4Address) -> bool {
        let mask = self.mask_bits();
        self.address.to_bits() & mask == addr.to_bits() & mask
    }

    /// Is the whole of `other` inside this prefix?
    pub const fn contains_subnet(&self, other: &Ipv4Cidr) -> bool {
        self.prefix_len <= other.prefix_len && self.contains(other.address)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    /// `a.b.c.d/len`, `len` in 0..=32.
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s.split_once('/').ok_or(Error::Malformed)?;
        let address = addr.parse::<Ipv4Address>()?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|c| c.is_ascii_digit()) {
            return Err(Error::Malformed);
        }
        let prefix_len: u8 = len.parse().map_err(|_| Error::Malformed)?;
        if prefix_len > 32 {
            return Err(Error::Malformed);
        }
        Ok(Ipv4Cidr {
            address,
            prefix_len,
        })
    }
}

/// The IP protocol number (IANA "Assigned Internet Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpProtocol {
    /// 1.
    Icmp,
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("ICMP"),
            IpProtocol::Tcp => f.write_str("TCP"),
            IpProtocol::Udp => f.write_str("UDP"),
            IpProtocol::Unknown(p) => write!(f, "proto{p}"),
        }
    }
}

mod field {
    use core::ops::Range;
    // RFC 791 §3.1, "Internet Header Format".
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = field::DST_ADDR.end;

/// Largest payload an IPv4 datagram with a 20-byte header can carry.
pub const IPV4_MAX_PAYLOAD_LEN: usize = u16::MAX as usize - IPV4_HEADER_LEN;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view over an IPv4 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wrap and check the lengths (see [`Ipv4Packet::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that the header and the declared total length fit, so that
    /// every accessor and [`payload`](Ipv4Packet::payload) is infallible.
    /// The version is not checked here; [`Ipv4Repr::parse`] does it.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < IPV4_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len() as usize;
        // RFC 791 §3.1: IHL is in 32-bit words, minimum 5.
        if header_len < IPV4_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        let total_len = self.total_len() as usize;
        // RFC 791 §3.1: Total Length covers header and data.
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        // Trailing bytes past total_len (Ethernet padding) are allowed.
        if len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version field (4 for IPv4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// DSCP (RFC 2474).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// ECN (RFC 3168).
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length: header plus data.
    #[inline]
    pub fn total_len(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Don't Fragment.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        bytes::get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_DF != 0
    }

    /// More Fragments.
    #[inline]
    pub fn more_frags(&self) -> bool {
        bytes::get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (bytes::get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & OFFSET_MASK) << 3
    }

    /// Is this a fragment of a larger datagram (MF set or offset non-zero)?
    #[inline]
    pub fn is_fragment(&self) -> bool {
        bytes::get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// Header checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Address {
        let d = self.buffer.as_ref();
        Ipv4Address([d[12], d[13], d[14], d[15]])
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Address {
        let d = self.buffer.as_ref();
        Ipv4Address([d[16], d[17], d[18], d[19]])
    }

    /// Options bytes (between the fixed header and `header_len`).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV4_HEADER_LEN..self.header_len() as usize]
    }

    /// Does the header checksum verify? (RFC 791 §3.1, "Header Checksum").
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let header = &self.buffer.as_ref()[..self.header_len() as usize];
        checksum::data(header) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Ipv4Packet<&'a T> {
    /// The payload: from `header_len` to `total_len`; link-layer padding
    /// after `total_len` is excluded.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let data = self.buffer.as_ref();
        &data[self.header_len() as usize..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the version field.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::VER_IHL] = (d[field::VER_IHL] & 0x0f) | (value << 4);
    }

    /// Set the header length in bytes (must be a multiple of 4, 20..=60).
    #[inline]
    pub fn set_header_len(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::VER_IHL] = (d[field::VER_IHL] & 0xf0) | ((value / 4) & 0x0f);
    }

    /// Set the DSCP.
    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::DSCP_ECN] = (d[field::DSCP_ECN] & 0x03) | (value << 2);
    }

    /// Set the ECN bits.
    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let d = self.buffer.as_mut();
        d[field::DSCP_ECN] = (d[field::DSCP_ECN] & !0x03) | (value & 0x03);
    }

    /// Set the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::LENGTH.start, value)
    }

    /// Set the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::IDENT.start, value)
    }

    /// Clear flags and fragment offset.
    #[inline]
    pub fn clear_flags(&mut self) {
        bytes::set_u16(self.buffer.as_mut(), field::FLG_OFF.start, 0)
    }

    /// Set or clear Don't Fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        let d = self.buffer.as_mut();
        let raw = bytes::get_u16(d, field::FLG_OFF.start);
        let raw = if value { raw | FLAG_DF } else { raw & !FLAG_DF };
        bytes::set_u16(d, field::FLG_OFF.start, raw)
    }

    /// Set or clear More Fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        let d = self.buffer.as_mut();
        let raw = bytes::get_u16(d, field::FLG_OFF.start);
        let raw = if value { raw | FLAG_MF } else { raw & !FLAG_MF };
        bytes::set_u16(d, field::FLG_OFF.start, raw)
    }

    /// Set the fragment offset in bytes (a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        let d = self.buffer.as_mut();
        let raw = bytes::get_u16(d, field::FLG_OFF.start);
        let raw = (raw & !OFFSET_MASK) | ((value >> 3) & OFFSET_MASK);
        bytes::set_u16(d, field::FLG_OFF.start, raw)
    }

    /// Set the time to live.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value
    }

    /// Set the protocol.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.into()
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Set the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Address) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.0)
    }

    /// Set the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Address) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.0)
    }

    /// Compute and store the header checksum (RFC 791 §3.1: the one's
    /// complement of the one's complement sum of the header, with the
    /// checksum field taken as zero).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = self.header_len() as usize;
        let sum = checksum::checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(sum);
    }

    /// The payload, mutably (from `header_len` to `total_len`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let header_len = self.header_len() as usize;
        let total_len = self.total_len() as usize;
        &mut self.buffer.as_mut()[header_len..total_len]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Ipv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of an IPv4 header that the stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src_addr: Ipv4Address,
    /// Destination address.
    pub dst_addr: Ipv4Address,
    /// Protocol of the payload.
    pub next_header: IpProtocol,
    /// Payload length in bytes (total length minus header length).
    pub payload_len: usize,
    /// Time to live.
    pub hop_limit: u8,
}

impl Ipv4Repr {
    /// Validate and read an IPv4 header.
    ///
    /// Checks, in order: lengths ([`Ipv4Packet::check_len`]), version 4,
    /// the header checksum (when `caps.ipv4.rx()`), and that the datagram is
    /// not a fragment.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Ipv4Packet<T>,
        caps: &ChecksumCapabilities,
    ) -> Result<Ipv4Repr> {
        packet.check_len()?;
        // RFC 791 §3.1, "Version".
        if packet.version() != 4 {
            return Err(Error::BadVersion);
        }
        // RFC 1122 §3.2.1.2: silently discard a datagram with a bad checksum.
        if caps.ipv4.rx() && !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        // RFC 791 §3.2, "Fragmentation and Reassembly": no reassembly here.
        if packet.is_fragment() {
            return Err(Error::Fragmented);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: packet.total_len() as usize - packet.header_len() as usize,
            hop_limit: packet.hop_limit(),
        })
    }

    /// Header length emitted (20: no options).
    pub const fn header_len(&self) -> usize {
        IPV4_HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        IPV4_HEADER_LEN + self.payload_len
    }

    /// Write the header: version 4, IHL 5, DSCP/ECN 0, identification 0,
    /// DF set (RFC 6864 §4.1: the identification of an atomic datagram carries
    /// no meaning), then the checksum, or zero when it is offloaded.
    /// The payload is left untouched.
    ///
    /// `payload_len` must be at most [`IPV4_MAX_PAYLOAD_LEN`] (debug-asserted).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Ipv4Packet<T>,
        caps: &ChecksumCapabilities,
    ) {
        debug_assert!(self.payload_len <= IPV4_MAX_PAYLOAD_LEN);
        let d = packet.buffer.as_mut();
        d[field::VER_IHL] = 0x45;
        d[field::DSCP_ECN] = 0;
        bytes::set_u16(d, field::LENGTH.start, self.buffer_len() as u16);
        bytes::set_u16(d, field::IDENT.start, 0);
        bytes::set_u16(d, field::FLG_OFF.start, FLAG_DF);
        d[field::TTL] = self.hop_limit;
        d[field::PROTOCOL] = self.next_header.into();
        bytes::set_u16(d, field::CHECKSUM.start, 0);
        d[field::SRC_ADDR].copy_from_slice(&self.src_addr.0);
        d[field::DST_ADDR].copy_from_slice(&self.dst_addr.0);
        if caps.ipv4.tx() {
            packet.fill_checksum();
        }
    }
}

impl fmt::Display for Ipv4Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv4 src={} dst={} proto={} len={} ttl={}",
            self.src_addr, self.dst_addr, self.next_header, self.payload_len, self.hop_limit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A captured IPv4 header: 192.168.1.10 -> 192.168.1.1, TCP, DF, TTL 64,
    // total length 60, ident 0x1c46 (the classic example checksum 0xb1e6).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xb1, 0xe6, 0xac, 0x10, 0x0a,
        0x63, 0xac, 0x10, 0x0a, 0x0c,
    ];

    fn datagram() -> Vec<u8> {
        let mut v = HEADER.to_vec();
        v.extend((0..40u8).map(|i| i.wrapping_mul(7)));
        v
    }

    #[test]
    fn parse_known_header() {
        let buf = datagram();
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(packet.verify_checksum());
        assert!(packet.dont_frag());
        assert!(!packet.is_fragment());
        assert_eq!(packet.ident(), 0x1c46);
        let repr = Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: Ipv4Address::new(172, 16, 10, 99),
                dst_addr: Ipv4Address::new(172, 16, 10, 12),
                next_header: IpProtocol::Tcp,
                payload_len: 40,
                hop_limit: 64,
            }
        );
        assert_eq!(packet.payload().len(), 40);
        assert_eq!(
            repr.to_string(),
            "IPv4 src=172.16.10.99 dst=172.16.10.12 proto=TCP len=40 ttl=64"
        );
    }

    #[test]
    fn emit_matches_known_checksum() {
        let repr = Ipv4Repr {
            src_addr: Ipv4Address::new(172, 16, 10, 99),
            dst_addr: Ipv4Address::new(172, 16, 10, 12),
            next_header: IpProtocol::Tcp,
            payload_len: 40,
            hop_limit: 64,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet, &ChecksumCapabilities::default());
        // Same as HEADER except ident (0 here), so the checksum moves by 0x1c46.
        packet.set_ident(0x1c46);
        packet.fill_checksum();
        assert_eq!(&buf[..20], &HEADER);
    }

    #[test]
    fn padding_is_ignored() {
        let mut buf = datagram();
        buf.extend([0u8; 6]);
        let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.payload().len(), 40);
    }

    #[test]
    fn rejects_with_reasons() {
        let caps = ChecksumCapabilities::default();
        let parse =
            |buf: &[u8]| Ipv4Packet::new_checked(buf).and_then(|p| Ipv4Repr::parse(&p, &caps));
        let good = datagram();
        assert_eq!(parse(&good[..19]), Err(Error::Truncated));
        assert_eq!(parse(&good[..59]), Err(Error::Truncated));

        let mut b = good.clone();
        b[0] = 0x44;
        assert_eq!(parse(&b), Err(Error::BadHeaderLen));

        let mut b = good.clone();
        b[0] = 0x65;
        assert_eq!(parse(&b), Err(Error::BadVersion));

        let mut b = good.clone();
        b[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(parse(&b), Err(Error::BadLength));

        let mut b = good.clone();
        b[0] = 0x4f; // 60-byte header, fits in 60 bytes but total_len is 60
        assert!(parse(&b).is_err());

        let mut b = good.clone();
        b[11] ^= 1;
        assert_eq!(parse(&b), Err(Error::BadChecksum));
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(Ipv4Repr::parse(&p, &ChecksumCapabilities::ignored()).is_ok());

        // More Fragments.
        let mut b = good.clone();
        {
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_more_frags(true);
            p.fill_checksum();
        }
        assert_eq!(parse(&b), Err(Error::Fragmented));

        // Last fragment: offset non-zero, MF clear.
        let mut b = good.clone();
        {
            let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
            p.set_frag_offset(1480);
            p.fill_checksum();
            assert_eq!(p.frag_offset(), 1480);
        }
        assert_eq!(parse(&b), Err(Error::Fragmented));
    }

    #[test]
    fn options_are_skipped() {
        // Header with IHL 6: one word of options (NOP NOP NOP EOL).
        let mut buf = [0u8; 24 + 4];
        buf[..12].copy_from_slice(&HEADER[..12]);
        buf[12..20].copy_from_slice(&HEADER[12..20]);
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&28u16.to_be_bytes());
        buf[20..24].copy_from_slice(&[1, 1, 1, 0]);
        buf[24..28].copy_from_slice(b"data");
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.fill_checksum();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        let repr = Ipv4Repr::parse(&p, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(repr.payload_len, 4);
        assert_eq!(p.payload(), b"data");
        assert_eq!(p.options(), &[1, 1, 1, 0]);
    }

    #[test]
    fn address_and_cidr() {
        let a: Ipv4Address = "10.0.0.1".parse().unwrap();
        assert_eq!(a, Ipv4Address::new(10, 0, 0, 1));
        assert_eq!(a.to_string(), "10.0.0.1");
        assert_eq!(Ipv4Addr::from(a), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(Ipv4Address::from(Ipv4Addr::new(10, 0, 0, 1)), a);
        assert!(a.is_unicast());
        assert!(!Ipv4Address::BROADCAST.is_unicast());
        assert!(!Ipv4Address::UNSPECIFIED.is_unicast());
        assert!(!Ipv4Address::new(224, 0, 0, 1).is_unicast());
        assert!(Ipv4Address::new(224, 0, 0, 1).is_multicast());
        assert!(Ipv4Address::new(127, 0, 0, 1).is_loopback());
        assert!("10.0.0".parse::<Ipv4Address>().is_err());

        let c: Ipv4Cidr = "10.0.0.1/24".parse().unwrap();
        assert_eq!(c, Ipv4Cidr::new(a, 24));
        assert_eq!(c.to_string(), "10.0.0.1/24");
        assert_eq!(c.netmask(), Ipv4Address::new(255, 255, 255, 0));
        assert_eq!(c.network().address, Ipv4Address::new(10, 0, 0, 0));
        assert_eq!(c.broadcast(), Some(Ipv4Address::new(10, 0, 0, 255)));
        assert!(c.contains(Ipv4Address::new(10, 0, 0, 200)));
        assert!(!c.contains(Ipv4Address::new(10, 0, 1, 1)));
        assert!(c.contains_subnet(&"10.0.0.128/25".parse().unwrap()));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.netmask(), Ipv4Address::UNSPECIFIED);
        assert!(all.contains(Ipv4Address::BROADCAST));
        let host: Ipv4Cidr = "10.0.0.1/32".parse().unwrap();
        assert_eq!(host.netmask(), Ipv4Address::BROADCAST);
        assert_eq!(host.broadcast(), None);
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0.1/+1",
            "10.0.0/8",
            "/8",
            "10.0.0.1/024",
        ] {
            assert_eq!(bad.parse::<Ipv4Cidr>(), Err(Error::Malformed), "{bad}");
        }
    }

    prop_compose! {
        fn arb_repr()(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), proto in any::<u8>(),
                      payload_len in 0usize..1500, hop_limit in any::<u8>()) -> Ipv4Repr {
            Ipv4Repr {
                src_addr: Ipv4Address(src),
                dst_addr: Ipv4Address(dst),
                next_header: proto.into(),
                payload_len,
                hop_limit,
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip(repr in arb_repr(), padding in 0usize..8) {
            let mut buf = vec![0u8; repr.buffer_len() + padding];
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut packet, &ChecksumCapabilities::default());
            let packet = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(packet.dont_frag());
            prop_assert_eq!(Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap(), repr);
            prop_assert_eq!(packet.payload().len(), repr.payload_len);
        }

        #[test]
        fn parse_arbitrary_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..128)) {
            for caps in [ChecksumCapabilities::default(), ChecksumCapabilities::ignored()] {
                if let Ok(packet) = Ipv4Packet::new_checked(&buf[..]) {
                    let _ = packet.payload();
                    let _ = packet.options();
                    let _ = Ipv4Repr::parse(&packet, &caps).map(|r| r.to_string());
                }
            }
        }

        /// Arbitrary bytes behind a valid-looking first byte and length, so the
        /// interesting branches are reached more often than by pure noise.
        #[test]
        fn parse_plausible_never_panics(mut buf in proptest::collection::vec(any::<u8>(), 20..100), ihl in 0u8..16, total in 0u16..120) {
            buf[0] = 0x40 | ihl;
            buf[2..4].copy_from_slice(&total.to_be_bytes());
            if let Ok(packet) = Ipv4Packet::new_checked(&buf[..]) {
                let _ = packet.payload();
                let _ = Ipv4Repr::parse(&packet, &ChecksumCapabilities::ignored());
            }
        }

        #[test]
        fn cidr_text_roundtrip(a in any::<[u8; 4]>(), len in 0u8..=32) {
            let c = Ipv4Cidr::new(Ipv4Address(a), len);
            prop_assert_eq!(c.to_string().parse::<Ipv4Cidr>().unwrap(), c);
            prop_assert!(c.contains(Ipv4Address(a)));
            prop_assert!(c.contains(c.network().address));
        }

        #[test]
        fn text_parse_arbitrary_never_panics(s in "\\PC*") {
            let _ = s.parse::<Ipv4Address>();
            let _ = s.parse::<Ipv4Cidr>();
        }
    }
}
