//! Packet formats for bypass: Ethernet II, ARP, IPv4, ICMPv4, UDP and TCP.
//!
//! This crate knows bytes and nothing else: no I/O, no clock, no allocation
//! while parsing or emitting. Each protocol has two layers, following the
//! layout of smoltcp's `wire` module:
//!
//! * a thin *view* over a buffer, `XxxPacket<T: AsRef<[u8]>>`. Field offsets
//!   are named ranges in a private `field` module. `new_checked(buffer)`
//!   validates the length once, so every accessor after it is infallible.
//!   Setters exist when `T: AsMut<[u8]>`. `new_unchecked` skips the check;
//!   accessors on an unchecked view may panic on a short buffer.
//! * a plain *representation*, `XxxRepr`, with `parse(&view, ..) -> Result<Repr>`
//!   (every rejection carries an [`Error`] saying why) and
//!   `emit(&self, &mut view, ..)`, plus `header_len()` / `buffer_len()`.
//!
//! Parsing never panics, whatever the input; this is checked by property
//! tests and by the cargo-fuzz targets in `fuzz/`.
//!
//! Emitting assumes a well-formed representation and a buffer of at least
//! `buffer_len()` bytes (the caller sizes it from `buffer_len()`); a smaller
//! buffer is a caller bug and panics on the slice index.
//!
//! Comments cite the RFC section next to the line that implements it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

use core::fmt;

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod pretty;
pub mod tcp;
pub mod udp;

pub use arp::{ArpHardware, ArpOperation, ArpPacket, ArpRepr, ARP_ETHERNET_IPV4_LEN};
pub use checksum::{Checksum, ChecksumCapabilities};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr, ETHERNET_HEADER_LEN};
pub use icmpv4::{
    Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr, ICMPV4_HEADER_LEN,
};
pub use ipv4::{
    IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr, IPV4_HEADER_LEN, IPV4_MAX_PAYLOAD_LEN,
};
pub use pretty::{pretty_frame, PrettyFrame};
pub use tcp::{
    TcpFlags, TcpOption, TcpOptionsIter, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestamp,
    TCP_HEADER_LEN, TCP_MAX_HEADER_LEN, TCP_MAX_OPTIONS_LEN,
};
pub use udp::{UdpPacket, UdpRepr, UDP_HEADER_LEN};

/// Why a buffer was rejected by a parser.
///
/// Each variant has a stable snake_case name ([`Error::as_str`]) that the
/// stack uses as a drop-counter label; do not rename them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header, or than the length the header
    /// declares.
    Truncated,
    /// The checksum does not verify.
    BadChecksum,
    /// The IP version field is not 4.
    BadVersion,
    /// A header-length field (IPv4 IHL, TCP data offset) is below the minimum.
    BadHeaderLen,
    /// A length field is inconsistent with the header (e.g. IPv4 total length
    /// shorter than the header, UDP length below 8).
    BadLength,
    /// An IPv4 fragment (MF set or a non-zero offset). bypass does not
    /// reassemble; the stack counts and drops these.
    Fragmented,
    /// A TCP option has an invalid length.
    BadOption,
    /// Well-formed but not something this crate represents (e.g. ARP for a
    /// hardware/protocol pair other than Ethernet/IPv4).
    Unsupported,
    /// Any other malformation (e.g. a text address that does not parse).
    Malformed,
}

impl Error {
    /// A stable snake_case name for this reason, e.g. `"bad_checksum"`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadChecksum => "bad_checksum",
            Error::BadVersion => "bad_version",
            Error::BadHeaderLen => "bad_header_len",
            Error::BadLength => "bad_length",
            Error::Fragmented => "fragmented",
            Error::BadOption => "bad_option",
            Error::Unsupported => "unsupported",
            Error::Malformed => "malformed",
        }
    }

    /// Every variant, in declaration order (for drop-counter tables).
    pub const ALL: [Error; 9] = [
        Error::Truncated,
        Error::BadChecksum,
        Error::BadVersion,
        Error::BadHeaderLen,
        Error::BadLength,
        Error::Fragmented,
        Error::BadOption,
        Error::Unsupported,
        Error::Malformed,
    ];
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            Error::Truncated => "truncated: buffer shorter than the header or its declared length",
            Error::BadChecksum => "bad_checksum: checksum does not verify",
            Error::BadVersion => "bad_version: IP version is not 4",
            Error::BadHeaderLen => "bad_header_len: header length field below the minimum",
            Error::BadLength => "bad_length: length field inconsistent with the header",
            Error::Fragmented => "fragmented: IPv4 fragments are not reassembled",
            Error::BadOption => "bad_option: option with an invalid length",
            Error::Unsupported => "unsupported: well-formed but not handled",
            Error::Malformed => "malformed: input does not follow the format",
        };
        f.write_str(msg)
    }
}

impl std::error::Error for Error {}

/// Result of a parse.
pub type Result<T> = core::result::Result<T, Error>;

/// Big-endian accessors shared by the views. Callers index only inside a
/// length checked by `check_len`, so these never go out of bounds there.
pub(crate) mod bytes {
    #[inline(always)]
    pub fn get_u16(data: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([data[at], data[at + 1]])
    }

    #[inline(always)]
    pub fn get_u32(data: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
    }

    #[inline(always)]
    pub fn set_u16(data: &mut [u8], at: usize, value: u16) {
        data[at..at + 2].copy_from_slice(&value.to_be_bytes());
    }

    #[inline(always)]
    pub fn set_u32(data: &mut [u8], at: usize, value: u32) {
        data[at..at + 4].copy_from_slice(&value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_stable_and_distinct() {
        let names: Vec<&str> = Error::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(
            names,
            [
                "truncated",
                "bad_checksum",
                "bad_version",
                "bad_header_len",
                "bad_length",
                "fragmented",
                "bad_option",
                "unsupported",
                "malformed"
            ]
        );
        for e in Error::ALL {
            assert!(e.to_string().starts_with(e.as_str()));
        }
    }
}
