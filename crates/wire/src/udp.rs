//! UDP (RFC 768) over IPv4.

use core::fmt;

use crate::checksum::{self, ChecksumCapabilities};
use crate::ipv4::{IpProtocol, Ipv4Address};
use crate::{bytes, Error, Result};

mod field {
    use core::ops::Range;
    // RFC 768, "Format".
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = field::CHECKSUM.end;

/// A view over a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wrap and check the header and the length field.
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Check that the header fits, that the length field is at least 8
    /// ([`Error::BadLength`]) and that the buffer holds that many bytes
    /// ([`Error::Truncated`]). Bytes past the length field are ignored.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < UDP_HEADER_LEN {
            return Err(Error::Truncated);
        }
        // RFC 768: "Length is the length in octets of this user datagram
        // including this header and the data. (This means the minimum value
        // of the length is eight.)"
        let field_len = self.len() as usize;
        if field_len < UDP_HEADER_LEN {
            return Err(Error::BadLength);
        }
        if len < field_len {
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

    /// Length field: header plus data.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Checksum field (0 means "not computed").
    #[inline]
    pub fn checksum(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Does the checksum verify over the datagram (up to the length field)
    /// and the IPv4 pseudo-header? A zero checksum means the sender did not
    /// compute one and verifies (RFC 768; RFC 1122 §4.1.3.4).
    pub fn verify_checksum(&self, src_addr: Ipv4Address, dst_addr: Ipv4Address) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let datagram = &self.buffer.as_ref()[..self.len() as usize];
        checksum::verify_ipv4_upper(src_addr, dst_addr, IpProtocol::Udp, datagram)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> UdpPacket<&'a T> {
    /// The data, up to the length field.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let len = self.len() as usize;
        &self.buffer.as_ref()[UDP_HEADER_LEN..len]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
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

    /// Set the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::LENGTH.start, value)
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// The data, mutably (up to the length field).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len() as usize;
        &mut self.buffer.as_mut()[UDP_HEADER_LEN..len]
    }

    /// Compute and store the checksum over the datagram (up to the length
    /// field) and the pseudo-header. RFC 768: a computed zero is sent as
    /// all ones, since zero means "no checksum".
    pub fn fill_checksum(&mut self, src_addr: Ipv4Address, dst_addr: Ipv4Address) {
        self.set_checksum(0);
        let len = self.len() as usize;
        let sum = checksum::checksum_ipv4_upper(
            src_addr,
            dst_addr,
            IpProtocol::Udp,
            &self.buffer.as_ref()[..len],
        );
        self.set_checksum(if sum == 0 { 0xffff } else { sum })
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for UdpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// The fields of a UDP header. The payload is not part of the
/// representation: read it with [`UdpPacket::payload`], write it in
/// [`UdpRepr::emit`]'s closure (or before calling `emit` and pass a closure
/// that does nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl UdpRepr {
    /// Parse a UDP header, verifying the checksum over the IPv4
    /// pseudo-header when `caps.udp.rx()` and the checksum is non-zero.
    /// Destination port 0 is [`Error::Malformed`] (RFC 768: reserved).
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src_addr: Ipv4Address,
        dst_addr: Ipv4Address,
        caps: &ChecksumCapabilities,
    ) -> Result<UdpRepr> {
        packet.check_len()?;
        if packet.dst_port() == 0 {
            return Err(Error::Malformed);
        }
        if caps.udp.rx() && !packet.verify_checksum(src_addr, dst_addr) {
            return Err(Error::BadChecksum);
        }
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    /// Header length (8).
    pub const fn header_len(&self) -> usize {
        UDP_HEADER_LEN
    }

    /// Header plus `payload_len` bytes of data.
    pub const fn buffer_len(&self, payload_len: usize) -> usize {
        UDP_HEADER_LEN + payload_len
    }

    /// Write ports and length, and zero the checksum. The caller fills the
    /// payload and then calls [`UdpPacket::fill_checksum`] if it wants one.
    /// `payload_len` must be at most 65527 (debug-asserted).
    #[inline]
    pub fn emit_header<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        payload_len: usize,
    ) {
        debug_assert!(payload_len <= u16::MAX as usize - UDP_HEADER_LEN);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len((UDP_HEADER_LEN + payload_len) as u16);
        packet.set_checksum(0);
    }

    /// Write the header, let `emit_payload` fill the `payload_len` bytes of
    /// data in place (pass `|_| {}` if they are already there), then write
    /// the checksum (or zero, "none", when `caps.udp.tx()` is off).
    pub fn emit<T, F>(
        &self,
        packet: &mut UdpPacket<T>,
        src_addr: Ipv4Address,
        dst_addr: Ipv4Address,
        payload_len: usize,
        emit_payload: F,
        caps: &ChecksumCapabilities,
    ) where
        T: AsRef<[u8]> + AsMut<[u8]>,
        F: FnOnce(&mut [u8]),
    {
        self.emit_header(packet, payload_len);
        emit_payload(packet.payload_mut());
        if caps.udp.tx() {
            packet.fill_checksum(src_addr, dst_addr);
        }
    }
}

impl fmt::Display for UdpRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UDP src={} dst={}", self.src_port, self.dst_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Address = Ipv4Address::new(192, 168, 0, 1);
    const DST: Ipv4Address = Ipv4Address::new(192, 168, 0, 2);

    // A DNS-style datagram 192.168.0.1:53 -> 192.168.0.2:1024 with data
    // "hello". Checksum worked by hand over pseudo-header and datagram:
    // words sum to 0x2c984 -> folded 0xc986 -> complemented 0x3679.
    const DATAGRAM: [u8; 13] = [
        0x00, 0x35, 0x04, 0x00, 0x00, 0x0d, 0x36, 0x79, b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn parse_known_datagram() {
        let packet = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert!(packet.verify_checksum(SRC, DST));
        let repr = UdpRepr::parse(&packet, SRC, DST, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 53,
                dst_port: 1024
            }
        );
        assert_eq!(packet.payload(), b"hello");
        assert_eq!(repr.to_string(), "UDP src=53 dst=1024");
    }

    #[test]
    fn emit_known_datagram() {
        let repr = UdpRepr {
            src_port: 53,
            dst_port: 1024,
        };
        let mut buf = [0u8; 13];
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut buf[..]),
            SRC,
            DST,
            5,
            |p| p.copy_from_slice(b"hello"),
            &ChecksumCapabilities::default(),
        );
        assert_eq!(buf, DATAGRAM);

        // Payload already in place.
        let mut buf2 = [0u8; 13];
        buf2[8..].copy_from_slice(b"hello");
        repr.emit(
            &mut UdpPacket::new_unchecked(&mut buf2[..]),
            SRC,
            DST,
            5,
            |_| {},
            &ChecksumCapabilities::default(),
        );
        assert_eq!(buf2, DATAGRAM);
    }

    #[test]
    fn zero_checksum_is_none() {
        let mut b = DATAGRAM;
        b[6] = 0;
        b[7] = 0;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(UdpRepr::parse(&p, SRC, DST, &ChecksumCapabilities::default()).is_ok());
    }

    #[test]
    fn rejects_with_reasons() {
        let caps = ChecksumCapabilities::default();
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            UdpPacket::new_checked(&DATAGRAM[..12]).unwrap_err(),
            Error::Truncated
        );
        let mut b = DATAGRAM;
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::BadLength
        );
        let mut b = DATAGRAM;
        b[12] = b'O';
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(UdpRepr::parse(&p, SRC, DST, &caps), Err(Error::BadChecksum));
        assert!(UdpRepr::parse(&p, SRC, DST, &ChecksumCapabilities::ignored()).is_ok());
        // Wrong pseudo-header (address) also fails.
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(
            UdpRepr::parse(&p, SRC, Ipv4Address::new(192, 168, 0, 3), &caps),
            Err(Error::BadChecksum)
        );
        let mut b = DATAGRAM;
        b[2] = 0;
        b[3] = 0;
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(UdpRepr::parse(&p, SRC, DST, &caps), Err(Error::Malformed));
    }

    #[test]
    fn trailing_bytes_ignored() {
        let mut b = DATAGRAM.to_vec();
        b.extend([0xee; 3]);
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert!(UdpRepr::parse(&p, SRC, DST, &ChecksumCapabilities::default()).is_ok());
        assert_eq!(p.payload(), b"hello");
    }

    proptest! {
        #[test]
        fn roundtrip(src_port in any::<u16>(), dst_port in 1u16.., src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                     payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let repr = UdpRepr { src_port, dst_port };
            let (s, d) = (Ipv4Address(src), Ipv4Address(dst));
            let mut buf = vec![0u8; repr.buffer_len(payload.len())];
            let caps = ChecksumCapabilities::default();
            repr.emit(&mut UdpPacket::new_unchecked(&mut buf[..]), s, d, payload.len(), |p| p.copy_from_slice(&payload), &caps);
            let packet = UdpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_ne!(packet.checksum(), 0);
            prop_assert_eq!(UdpRepr::parse(&packet, s, d, &caps).unwrap(), repr);
            prop_assert_eq!(packet.payload(), &payload[..]);
        }

        #[test]
        fn parse_arbitrary_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>()) {
            for caps in [ChecksumCapabilities::default(), ChecksumCapabilities::ignored()] {
                if let Ok(packet) = UdpPacket::new_checked(&buf[..]) {
                    let _ = packet.payload();
                    let _ = UdpRepr::parse(&packet, Ipv4Address(src), Ipv4Address(dst), &caps).map(|r| r.to_string());
                }
            }
        }
    }
}
