//! ARP (RFC 826) for Ethernet hardware and IPv4 protocol addresses.

use core::fmt;

use crate::ethernet::{EtherType, EthernetAddress};
use crate::ipv4::Ipv4Address;
use crate::{bytes, Error, Result};

/// ARP hardware type (IANA "Hardware Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpHardware {
    /// 1.
    Ethernet,
    /// Anything else.
    Unknown(u16),
}

impl From<u16> for ArpHardware {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpHardware::Ethernet,
            other => ArpHardware::Unknown(other),
        }
    }
}

impl From<ArpHardware> for u16 {
    fn from(value: ArpHardware) -> Self {
        match value {
            ArpHardware::Ethernet => 1,
            ArpHardware::Unknown(other) => other,
        }
    }
}

/// ARP operation (RFC 826 "ar$op").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1.
    Request,
    /// 2.
    Reply,
    /// Anything else (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(value: ArpOperation) -> Self {
        match value {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

impl fmt::Display for ArpOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArpOperation::Request => f.write_str("request"),
            ArpOperation::Reply => f.write_str("reply"),
            ArpOperation::Unknown(op) => write!(f, "op{op}"),
        }
    }
}

mod field {
    use core::ops::Range;
    // RFC 826, "Packet format". Address fields follow at offsets that depend
    // on the hardware and protocol lengths.
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const ADDRS: usize = 8;
}

/// Length of an ARP packet for Ethernet/IPv4 (8 + 2 * (6 + 4)).
pub const ARP_ETHERNET_IPV4_LEN: usize = 28;

/// A view over an ARP packet of any hardware/protocol address lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wrap and check that the fixed part and all four addresses fit.
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// [`Error::Truncated`] unless the buffer holds the fixed part and the
    /// four addresses whose lengths it declares.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::ADDRS {
            return Err(Error::Truncated);
        }
        let needed =
            field::ADDRS + 2 * (self.hardware_len() as usize + self.protocol_len() as usize);
        if len < needed {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type.
    #[inline]
    pub fn hardware_type(&self) -> ArpHardware {
        bytes::get_u16(self.buffer.as_ref(), field::HTYPE.start).into()
    }

    /// Protocol type (an EtherType).
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        bytes::get_u16(self.buffer.as_ref(), field::PTYPE.start).into()
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> ArpOperation {
        bytes::get_u16(self.buffer.as_ref(), field::OPER.start).into()
    }

    fn sha(&self) -> core::ops::Range<usize> {
        let start = field::ADDRS;
        start..start + self.hardware_len() as usize
    }

    fn spa(&self) -> core::ops::Range<usize> {
        let start = self.sha().end;
        start..start + self.protocol_len() as usize
    }

    fn tha(&self) -> core::ops::Range<usize> {
        let start = self.spa().end;
        start..start + self.hardware_len() as usize
    }

    fn tpa(&self) -> core::ops::Range<usize> {
        let start = self.tha().end;
        start..start + self.protocol_len() as usize
    }

    /// Sender hardware address bytes.
    pub fn source_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[self.sha()]
    }

    /// Sender protocol address bytes.
    pub fn source_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[self.spa()]
    }

    /// Target hardware address bytes.
    pub fn target_hardware_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[self.tha()]
    }

    /// Target protocol address bytes.
    pub fn target_protocol_addr(&self) -> &[u8] {
        &self.buffer.as_ref()[self.tpa()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Set the hardware type.
    pub fn set_hardware_type(&mut self, value: ArpHardware) {
        bytes::set_u16(self.buffer.as_mut(), field::HTYPE.start, value.into())
    }

    /// Set the protocol type.
    pub fn set_protocol_type(&mut self, value: EtherType) {
        bytes::set_u16(self.buffer.as_mut(), field::PTYPE.start, value.into())
    }

    /// Set the hardware address length.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value
    }

    /// Set the protocol address length.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value
    }

    /// Set the operation.
    pub fn set_operation(&mut self, value: ArpOperation) {
        bytes::set_u16(self.buffer.as_mut(), field::OPER.start, value.into())
    }

    /// Set the sender hardware address (length must match `hardware_len`).
    pub fn set_source_hardware_addr(&mut self, value: &[u8]) {
        let r = self.sha();
        self.buffer.as_mut()[r].copy_from_slice(value)
    }

    /// Set the sender protocol address (length must match `protocol_len`).
    pub fn set_source_protocol_addr(&mut self, value: &[u8]) {
        let r = self.spa();
        self.buffer.as_mut()[r].copy_from_slice(value)
    }

    /// Set the target hardware address (length must match `hardware_len`).
    pub fn set_target_hardware_addr(&mut self, value: &[u8]) {
        let r = self.tha();
        self.buffer.as_mut()[r].copy_from_slice(value)
    }

    /// Set the target protocol address (length must match `protocol_len`).
    pub fn set_target_protocol_addr(&mut self, value: &[u8]) {
        let r = self.tpa();
        self.buffer.as_mut()[r].copy_from_slice(value)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for ArpPacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An ARP packet this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpRepr {
    /// Ethernet hardware addresses, IPv4 protocol addresses.
    EthernetIpv4 {
        /// Request, reply or other.
        operation: ArpOperation,
        /// Sender MAC.
        source_hardware_addr: EthernetAddress,
        /// Sender IPv4 address.
        source_protocol_addr: Ipv4Address,
        /// Target MAC (zero in a request).
        target_hardware_addr: EthernetAddress,
        /// Target IPv4 address.
        target_protocol_addr: Ipv4Address,
    },
}

impl ArpRepr {
    /// Parse an Ethernet/IPv4 ARP packet. Other hardware or protocol types
    /// (or their lengths) are [`Error::Unsupported`].
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr> {
        packet.check_len()?;
        // RFC 826, "Packet Reception": check ar$hrd, ar$pro and the lengths.
        if packet.hardware_type() != ArpHardware::Ethernet
            || packet.protocol_type() != EtherType::Ipv4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        // The lengths were just checked, so these conversions cannot fail.
        let mac = |b: &[u8]| EthernetAddress::from_bytes(b).ok_or(Error::Truncated);
        let ip = |b: &[u8]| Ipv4Address::from_bytes(b).ok_or(Error::Truncated);
        Ok(ArpRepr::EthernetIpv4 {
            operation: packet.operation(),
            source_hardware_addr: mac(packet.source_hardware_addr())?,
            source_protocol_addr: ip(packet.source_protocol_addr())?,
            target_hardware_addr: mac(packet.target_hardware_addr())?,
            target_protocol_addr: ip(packet.target_protocol_addr())?,
        })
    }

    /// Length of the packet (28).
    pub const fn buffer_len(&self) -> usize {
        match self {
            ArpRepr::EthernetIpv4 { .. } => ARP_ETHERNET_IPV4_LEN,
        }
    }

    /// Same as [`buffer_len`](ArpRepr::buffer_len): ARP is all header.
    pub const fn header_len(&self) -> usize {
        self.buffer_len()
    }

    /// Write the packet.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        match *self {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => {
                packet.set_hardware_type(ArpHardware::Ethernet);
                packet.set_protocol_type(EtherType::Ipv4);
                packet.set_hardware_len(6);
                packet.set_protocol_len(4);
                packet.set_operation(operation);
                packet.set_source_hardware_addr(&source_hardware_addr.0);
                packet.set_source_protocol_addr(&source_protocol_addr.0);
                packet.set_target_hardware_addr(&target_hardware_addr.0);
                packet.set_target_protocol_addr(&target_protocol_addr.0);
            }
        }
    }
}

impl fmt::Display for ArpRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr,
                source_protocol_addr,
                target_hardware_addr,
                target_protocol_addr,
            } => write!(
                f,
                "ARP {operation} src={source_protocol_addr}/{source_hardware_addr} \
                 dst={target_protocol_addr}/{target_hardware_addr}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A captured ARP request (Ethernet header removed): who has 10.0.0.2?
    // tell 10.0.0.1 (52:54:00:12:34:56).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    fn request_repr() -> ArpRepr {
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            source_protocol_addr: Ipv4Address::new(10, 0, 0, 1),
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr: Ipv4Address::new(10, 0, 0, 2),
        }
    }

    #[test]
    fn parse_known_request() {
        let packet = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet).unwrap(), request_repr());
        assert_eq!(
            request_repr().to_string(),
            "ARP request src=10.0.0.1/52:54:00:12:34:56 dst=10.0.0.2/00:00:00:00:00:00"
        );
    }

    #[test]
    fn parse_with_ethernet_padding() {
        // Minimum-size Ethernet frames pad ARP to 46 bytes.
        let mut buf = REQUEST.to_vec();
        buf.resize(46, 0);
        let packet = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet).unwrap(), request_repr());
    }

    #[test]
    fn emit_known_request() {
        let mut buf = [0xaau8; 28];
        request_repr().emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn rejects_with_reasons() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802 hardware
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
        let mut b = REQUEST;
        b[4] = 8; // hlen 8 needs 36 bytes
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        let mut b = REQUEST;
        b[4] = 2; // hlen 2: fits, but not Ethernet
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
    }

    proptest! {
        #[test]
        fn roundtrip(op in any::<u16>(), sha in any::<[u8; 6]>(), spa in any::<[u8; 4]>(), tha in any::<[u8; 6]>(), tpa in any::<[u8; 4]>()) {
            let repr = ArpRepr::EthernetIpv4 {
                operation: op.into(),
                source_hardware_addr: EthernetAddress(sha),
                source_protocol_addr: Ipv4Address(spa),
                target_hardware_addr: EthernetAddress(tha),
                target_protocol_addr: Ipv4Address(tpa),
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..]));
            let packet = ArpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ArpRepr::parse(&packet).unwrap(), repr);
        }

        #[test]
        fn parse_arbitrary_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(packet) = ArpPacket::new_checked(&buf[..]) {
                let _ = packet.source_hardware_addr();
                let _ = packet.target_protocol_addr();
                let _ = ArpRepr::parse(&packet).map(|r| r.to_string());
            }
        }

        #[test]
        fn parse_plausible_never_panics(mut buf in proptest::collection::vec(any::<u8>(), 8..64), hlen in 0u8..12, plen in 0u8..12) {
            buf[..4].copy_from_slice(&[0, 1, 8, 0]);
            buf[4] = hlen;
            buf[5] = plen;
            if let Ok(packet) = ArpPacket::new_checked(&buf[..]) {
                let _ = ArpRepr::parse(&packet);
            }
        }
    }
}
