//! ICMP for IPv4 (RFC 792).
//!
//! Echo request/reply are represented fully; Destination Unreachable and
//! Time Exceeded carry their code and the quoted datagram; every other type
//! parses as [`Icmpv4Repr::Other`] so the stack can count it.

use core::fmt;

use crate::checksum::{self, ChecksumCapabilities};
use crate::{bytes, Error, Result};

/// ICMPv4 message type (RFC 792, IANA "ICMP Type Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Icmpv4Message {
    /// 0.
    EchoReply,
    /// 3.
    DstUnreachable,
    /// 5.
    Redirect,
    /// 8.
    EchoRequest,
    /// 11.
    TimeExceeded,
    /// 12.
    ParamProblem,
    /// 13.
    Timestamp,
    /// 14.
    TimestampReply,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for Icmpv4Message {
    fn from(value: u8) -> Self {
        match value {
            0 => Icmpv4Message::EchoReply,
            3 => Icmpv4Message::DstUnreachable,
            5 => Icmpv4Message::Redirect,
            8 => Icmpv4Message::EchoRequest,
            11 => Icmpv4Message::TimeExceeded,
            12 => Icmpv4Message::ParamProblem,
            13 => Icmpv4Message::Timestamp,
            14 => Icmpv4Message::TimestampReply,
            other => Icmpv4Message::Unknown(other),
        }
    }
}

impl From<Icmpv4Message> for u8 {
    fn from(value: Icmpv4Message) -> Self {
        match value {
            Icmpv4Message::EchoReply => 0,
            Icmpv4Message::DstUnreachable => 3,
            Icmpv4Message::Redirect => 5,
            Icmpv4Message::EchoRequest => 8,
            Icmpv4Message::TimeExceeded => 11,
            Icmpv4Message::ParamProblem => 12,
            Icmpv4Message::Timestamp => 13,
            Icmpv4Message::TimestampReply => 14,
            Icmpv4Message::Unknown(other) => other,
        }
    }
}

impl fmt::Display for Icmpv4Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Icmpv4Message::EchoReply => f.write_str("echo-reply"),
            Icmpv4Message::DstUnreachable => f.write_str("dst-unreachable"),
            Icmpv4Message::Redirect => f.write_str("redirect"),
            Icmpv4Message::EchoRequest => f.write_str("echo-request"),
            Icmpv4Message::TimeExceeded => f.write_str("time-exceeded"),
            Icmpv4Message::ParamProblem => f.write_str("param-problem"),
            Icmpv4Message::Timestamp => f.write_str("timestamp"),
            Icmpv4Message::TimestampReply => f.write_str("timestamp-reply"),
            Icmpv4Message::Unknown(t) => write!(f, "type{t}"),
        }
    }
}

/// Destination Unreachable codes (RFC 792, RFC 1122 §3.2.2.1, RFC 1812).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4DstUnreachable {
    /// 0.
    NetUnreachable,
    /// 1.
    HostUnreachable,
    /// 2.
    ProtoUnreachable,
    /// 3.
    PortUnreachable,
    /// 4: fragmentation needed and DF set (RFC 1191 path MTU discovery).
    FragRequired,
    /// 5.
    SrcRouteFailed,
    /// 13: communication administratively prohibited (RFC 1812).
    AdminProhibited,
    /// Any other code.
    Unknown(u8),
}

impl From<u8> for Icmpv4DstUnreachable {
    fn from(value: u8) -> Self {
        match value {
            0 => Icmpv4DstUnreachable::NetUnreachable,
            1 => Icmpv4DstUnreachable::HostUnreachable,
            2 => Icmpv4DstUnreachable::ProtoUnreachable,
            3 => Icmpv4DstUnreachable::PortUnreachable,
            4 => Icmpv4DstUnreachable::FragRequired,
            5 => Icmpv4DstUnreachable::SrcRouteFailed,
            13 => Icmpv4DstUnreachable::AdminProhibited,
            other => Icmpv4DstUnreachable::Unknown(other),
        }
    }
}

impl From<Icmpv4DstUnreachable> for u8 {
    fn from(value: Icmpv4DstUnreachable) -> Self {
        match value {
            Icmpv4DstUnreachable::NetUnreachable => 0,
            Icmpv4DstUnreachable::HostUnreachable => 1,
            Icmpv4DstUnreachable::ProtoUnreachable => 2,
            Icmpv4DstUnreachable::PortUnreachable => 3,
            Icmpv4DstUnreachable::FragRequired => 4,
            Icmpv4DstUnreachable::SrcRouteFailed => 5,
            Icmpv4DstUnreachable::AdminProhibited => 13,
            Icmpv4DstUnreachable::Unknown(other) => other,
        }
    }
}

mod field {
    use core::ops::{Range, RangeFrom};
    // RFC 792: every message starts with type, code, checksum and four
    // type-specific bytes.
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const REST: Range<usize> = 4..8;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    pub const UNREACH_MTU: Range<usize> = 6..8;
    pub const DATA: RangeFrom<usize> = 8..;
}

/// Length of the fixed ICMPv4 header (type, code, checksum, four bytes).
pub const ICMPV4_HEADER_LEN: usize = field::DATA.start;

/// A view over an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wrap without checking.
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wrap and check that the 8-byte header fits.
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// [`Error::Truncated`] if shorter than the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < ICMPV4_HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Icmpv4Message {
        self.buffer.as_ref()[field::TYPE].into()
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (echo messages).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (echo messages).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// Next-hop MTU (Destination Unreachable, code 4; RFC 1191 §4).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        bytes::get_u16(self.buffer.as_ref(), field::UNREACH_MTU.start)
    }

    /// The four type-specific header bytes.
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        let d = self.buffer.as_ref();
        [d[4], d[5], d[6], d[7]]
    }

    /// Does the checksum over the whole message verify? (RFC 792,
    /// "Checksum": computed over the ICMP message starting with the type.)
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Icmpv4Packet<&'a T> {
    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Set the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = value.into()
    }

    /// Set the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value)
    }

    /// Set the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, value)
    }

    /// Set the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        bytes::set_u16(self.buffer.as_mut(), field::ECHO_SEQNO.start, value)
    }

    /// Set the four type-specific header bytes.
    #[inline]
    pub fn set_rest_of_header(&mut self, value: [u8; 4]) {
        self.buffer.as_mut()[field::REST].copy_from_slice(&value)
    }

    /// Everything after the header, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Compute and store the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(sum)
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Icmpv4Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// An ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Repr<'a> {
    /// Echo request (type 8, code 0), RFC 792 "Echo or Echo Reply Message".
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data, to be returned in the reply.
        data: &'a [u8],
    },
    /// Echo reply (type 0, code 0).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data.
        data: &'a [u8],
    },
    /// Destination unreachable (type 3).
    DstUnreachable {
        /// Why.
        reason: Icmpv4DstUnreachable,
        /// Next-hop MTU for `FragRequired` (RFC 1191 §4), zero otherwise.
        next_hop_mtu: u16,
        /// The quoted datagram: its IP header and at least 8 bytes of payload
        /// (RFC 792; RFC 1812 §4.3.2.3 allows more).
        data: &'a [u8],
    },
    /// Time exceeded (type 11).
    TimeExceeded {
        /// 0: TTL exceeded in transit; 1: reassembly time exceeded.
        code: u8,
        /// The quoted datagram.
        data: &'a [u8],
    },
    /// Any other type, or an echo with a non-zero code: kept raw.
    Other {
        /// Message type.
        msg_type: Icmpv4Message,
        /// Message code.
        code: u8,
        /// The four type-specific header bytes.
        rest_of_header: [u8; 4],
        /// Everything after the header.
        data: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// Parse an ICMPv4 message, verifying the checksum when
    /// `caps.icmpv4.rx()`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Icmpv4Packet<&'a T>,
        caps: &ChecksumCapabilities,
    ) -> Result<Icmpv4Repr<'a>> {
        packet.check_len()?;
        if caps.icmpv4.rx() && !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        let data = packet.data();
        Ok(match (packet.msg_type(), packet.msg_code()) {
            (Icmpv4Message::EchoRequest, 0) => Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            (Icmpv4Message::EchoReply, 0) => Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            },
            (Icmpv4Message::DstUnreachable, code) => {
                let reason = Icmpv4DstUnreachable::from(code);
                Icmpv4Repr::DstUnreachable {
                    reason,
                    next_hop_mtu: if reason == Icmpv4DstUnreachable::FragRequired {
                        packet.next_hop_mtu()
                    } else {
                        0
                    },
                    data,
                }
            }
            (Icmpv4Message::TimeExceeded, code) => Icmpv4Repr::TimeExceeded { code, data },
            (msg_type, code) => Icmpv4Repr::Other {
                msg_type,
                code,
                rest_of_header: packet.rest_of_header(),
                data,
            },
        })
    }

    /// The message type.
    pub fn msg_type(&self) -> Icmpv4Message {
        match self {
            Icmpv4Repr::EchoRequest { .. } => Icmpv4Message::EchoRequest,
            Icmpv4Repr::EchoReply { .. } => Icmpv4Message::EchoReply,
            Icmpv4Repr::DstUnreachable { .. } => Icmpv4Message::DstUnreachable,
            Icmpv4Repr::TimeExceeded { .. } => Icmpv4Message::TimeExceeded,
            Icmpv4Repr::Other { msg_type, .. } => *msg_type,
        }
    }

    fn data(&self) -> &'a [u8] {
        match *self {
            Icmpv4Repr::EchoRequest { data, .. }
            | Icmpv4Repr::EchoReply { data, .. }
            | Icmpv4Repr::DstUnreachable { data, .. }
            | Icmpv4Repr::TimeExceeded { data, .. }
            | Icmpv4Repr::Other { data, .. } => data,
        }
    }

    /// Header length (8).
    pub const fn header_len(&self) -> usize {
        ICMPV4_HEADER_LEN
    }

    /// Header plus data.
    pub fn buffer_len(&self) -> usize {
        ICMPV4_HEADER_LEN + self.data().len()
    }

    /// Write the message (header, data, then the checksum unless offloaded).
    /// The buffer must be exactly [`buffer_len`](Icmpv4Repr::buffer_len)
    /// long, since the checksum covers all of it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Icmpv4Packet<T>,
        caps: &ChecksumCapabilities,
    ) {
        packet.set_msg_type(self.msg_type());
        let (code, rest) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq_no, .. }
            | Icmpv4Repr::EchoReply { ident, seq_no, .. } => {
                let (i, s) = (ident.to_be_bytes(), seq_no.to_be_bytes());
                (0, [i[0], i[1], s[0], s[1]])
            }
            Icmpv4Repr::DstUnreachable {
                reason,
                next_hop_mtu,
                ..
            } => {
                let m = next_hop_mtu.to_be_bytes();
                (reason.into(), [0, 0, m[0], m[1]])
            }
            Icmpv4Repr::TimeExceeded { code, .. } => (code, [0; 4]),
            Icmpv4Repr::Other {
                code,
                rest_of_header,
                ..
            } => (code, rest_of_header),
        };
        packet.set_msg_code(code);
        packet.set_rest_of_header(rest);
        let data = self.data();
        packet.data_mut()[..data.len()].copy_from_slice(data);
        if caps.icmpv4.tx() {
            packet.fill_checksum();
        } else {
            packet.set_checksum(0);
        }
    }
}

impl fmt::Display for Icmpv4Repr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => write!(
                f,
                "ICMP echo-request id={ident} seq={seq_no} len={}",
                data.len()
            ),
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => write!(
                f,
                "ICMP echo-reply id={ident} seq={seq_no} len={}",
                data.len()
            ),
            Icmpv4Repr::DstUnreachable {
                reason,
                next_hop_mtu,
                data,
            } => {
                write!(f, "ICMP dst-unreachable reason={reason:?}")?;
                if *next_hop_mtu != 0 {
                    write!(f, " mtu={next_hop_mtu}")?;
                }
                write!(f, " len={}", data.len())
            }
            Icmpv4Repr::TimeExceeded { code, data } => {
                write!(f, "ICMP time-exceeded code={code} len={}", data.len())
            }
            Icmpv4Repr::Other {
                msg_type,
                code,
                data,
                ..
            } => write!(f, "ICMP {msg_type} code={code} len={}", data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // An echo request (IP header removed): id 0x1234, seq 1, 8 bytes of
    // data "abcdefgh". Checksum worked by hand: the 16-bit words sum to
    // 0x1abc9, folded 0xabca, complemented 0x5435.
    const ECHO_REQUEST: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd', b'e', b'f', b'g',
        b'h',
    ];

    #[test]
    fn parse_known_echo() {
        let packet = Icmpv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert!(packet.verify_checksum());
        let repr = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"abcdefgh"
            }
        );
        assert_eq!(repr.to_string(), "ICMP echo-request id=4660 seq=1 len=8");
    }

    #[test]
    fn emit_known_echo() {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 1,
            data: b"abcdefgh",
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
            &ChecksumCapabilities::default(),
        );
        assert_eq!(buf, ECHO_REQUEST);
    }

    #[test]
    fn reply_to_request_checksum() {
        // A reply differs from the request only in type (8 -> 0), so the
        // sum drops by 0x0800 and the checksum rises by it: 0x5c35.
        let reply = Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 1,
            data: b"abcdefgh",
        };
        let mut buf = vec![0u8; reply.buffer_len()];
        reply.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
            &ChecksumCapabilities::default(),
        );
        assert_eq!(&buf[2..4], &[0x5c, 0x35]);
    }

    #[test]
    fn captured_kernel_echo_reply() {
        // The reply a Linux kernel sent on loopback to an echo request with
        // id 0x1234, seq 1 and 32 bytes of data (Ethernet and IPv4 headers
        // removed).
        let reply: [u8; 40] = [
            0x00, 0x00, 0xc8, 0x95, 0x12, 0x34, 0x00, 0x01, b'a', b'b', b'c', b'd', b'e', b'f',
            b'g', b'h', b'i', b'j', b'k', b'l', b'm', b'n', b'o', b'p', b'q', b'r', b's', b't',
            b'u', b'v', b'w', b'x', b'y', b'z', b'0', b'1', b'2', b'3', b'4', b'5',
        ];
        let packet = Icmpv4Packet::new_checked(&reply[..]).unwrap();
        let repr = Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoReply {
                ident: 0x1234,
                seq_no: 1,
                data: &reply[8..]
            }
        );
        let mut out = [0u8; 40];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut out[..]),
            &ChecksumCapabilities::default(),
        );
        assert_eq!(out, reply);
    }

    #[test]
    fn rejects_with_reasons() {
        let caps = ChecksumCapabilities::default();
        assert_eq!(
            Icmpv4Packet::new_checked(&ECHO_REQUEST[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut b = ECHO_REQUEST;
        b[15] ^= 0x40;
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p, &caps), Err(Error::BadChecksum));
        assert!(Icmpv4Repr::parse(&p, &ChecksumCapabilities::ignored()).is_ok());
    }

    #[test]
    fn port_unreachable() {
        let quoted = [0x45u8; 28];
        let repr = Icmpv4Repr::DstUnreachable {
            reason: Icmpv4DstUnreachable::PortUnreachable,
            next_hop_mtu: 0,
            data: &quoted,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
            &ChecksumCapabilities::default(),
        );
        assert_eq!(&buf[..2], &[3, 3]);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&p, &ChecksumCapabilities::default()).unwrap(),
            repr
        );
    }

    fn build(
        kind: u8,
        a: u16,
        b: u16,
        t: u8,
        code: u8,
        rest: [u8; 4],
        data: &[u8],
    ) -> Icmpv4Repr<'_> {
        match kind % 5 {
            0 => Icmpv4Repr::EchoRequest {
                ident: a,
                seq_no: b,
                data,
            },
            1 => Icmpv4Repr::EchoReply {
                ident: a,
                seq_no: b,
                data,
            },
            2 => {
                let reason = Icmpv4DstUnreachable::from(code);
                let next_hop_mtu = if reason == Icmpv4DstUnreachable::FragRequired {
                    a
                } else {
                    0
                };
                Icmpv4Repr::DstUnreachable {
                    reason,
                    next_hop_mtu,
                    data,
                }
            }
            3 => Icmpv4Repr::TimeExceeded { code, data },
            _ => {
                // Types with their own variant parse into it, not into Other.
                let t = if matches!((t, code), (0 | 8, 0) | (3 | 11, _)) {
                    42
                } else {
                    t
                };
                Icmpv4Repr::Other {
                    msg_type: t.into(),
                    code,
                    rest_of_header: rest,
                    data,
                }
            }
        }
    }

    proptest! {
        #[test]
        fn roundtrip(kind in any::<u8>(), a in any::<u16>(), b in any::<u16>(), t in any::<u8>(), code in any::<u8>(),
                     rest in any::<[u8; 4]>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let repr = build(kind, a, b, t, code, rest, &data);
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]), &ChecksumCapabilities::default());
            let packet = Icmpv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap(), repr);
        }

        #[test]
        fn parse_arbitrary_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            for caps in [ChecksumCapabilities::default(), ChecksumCapabilities::ignored()] {
                if let Ok(packet) = Icmpv4Packet::new_checked(&buf[..]) {
                    let _ = Icmpv4Repr::parse(&packet, &caps).map(|r| r.to_string());
                }
            }
        }
    }
}
