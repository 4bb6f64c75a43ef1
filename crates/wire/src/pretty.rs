//! One-line summaries of whole frames, for test traces and logs.
//!
//! `pretty_frame(bytes)` decodes Ethernet, then ARP or IPv4, then ICMPv4,
//! UDP or TCP, and prints each layer's representation separated by ` | `.
//! A layer that does not parse is shown as `!reason` (its stable error
//! name), so a trace says why a frame would be dropped. Formatting allocates
//! nothing.
//!
//! ```
//! # use bypass_wire::pretty_frame;
//! let frame = [0u8; 10];
//! assert_eq!(pretty_frame(&frame).to_string(), "!truncated");
//! ```

use core::fmt;

use crate::arp::{ArpPacket, ArpRepr};
use crate::checksum::ChecksumCapabilities;
use crate::ethernet::{EtherType, EthernetFrame, EthernetRepr};
use crate::icmpv4::{Icmpv4Packet, Icmpv4Repr};
use crate::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
use crate::tcp::{TcpPacket, TcpRepr};
use crate::udp::{UdpPacket, UdpRepr};

/// A frame to print; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct PrettyFrame<'a> {
    frame: &'a [u8],
    caps: ChecksumCapabilities,
}

/// Summarise an Ethernet frame, verifying every checksum.
pub fn pretty_frame(frame: &[u8]) -> PrettyFrame<'_> {
    PrettyFrame {
        frame,
        caps: ChecksumCapabilities::default(),
    }
}

impl<'a> PrettyFrame<'a> {
    /// Summarise an Ethernet frame, verifying only the checksums `caps`
    /// asks for on receive (e.g. [`ChecksumCapabilities::ignored`] when
    /// tracing frames whose checksums a device fills later).
    pub fn with_caps(frame: &'a [u8], caps: ChecksumCapabilities) -> PrettyFrame<'a> {
        PrettyFrame { frame, caps }
    }
}

impl fmt::Display for PrettyFrame<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caps = &self.caps;
        let eth = match EthernetFrame::new_checked(self.frame) {
            Ok(eth) => eth,
            Err(e) => return write!(f, "!{}", e.as_str()),
        };
        let eth_repr = match EthernetRepr::parse(&eth) {
            Ok(r) => r,
            Err(e) => return write!(f, "!{}", e.as_str()),
        };
        write!(f, "{eth_repr}")?;
        let payload = eth.payload();
        match eth_repr.ethertype {
            EtherType::Arp => {
                match ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) {
                    Ok(arp) => write!(f, " | {arp}"),
                    Err(e) => write!(f, " | ARP !{}", e.as_str()),
                }
            }
            EtherType::Ipv4 => {
                let ip = match Ipv4Packet::new_checked(payload) {
                    Ok(ip) => ip,
                    Err(e) => return write!(f, " | IPv4 !{}", e.as_str()),
                };
                let ip_repr = match Ipv4Repr::parse(&ip, caps) {
                    Ok(r) => r,
                    Err(e) => return write!(f, " | IPv4 !{}", e.as_str()),
                };
                write!(f, " | {ip_repr}")?;
                let (src, dst) = (ip_repr.src_addr, ip_repr.dst_addr);
                let l4 = ip.payload();
                match ip_repr.next_header {
                    IpProtocol::Tcp => match TcpPacket::new_checked(l4)
                        .and_then(|p| TcpRepr::parse(&p, src, dst, caps))
                    {
                        Ok(tcp) => write!(f, " | {tcp}"),
                        Err(e) => write!(f, " | TCP !{}", e.as_str()),
                    },
                    IpProtocol::Udp => {
                        let udp = UdpPacket::new_checked(l4).and_then(|p| {
                            UdpRepr::parse(&p, src, dst, caps).map(|r| (r, p.payload().len()))
                        });
                        match udp {
                            Ok((udp, len)) => write!(f, " | {udp} len={len}"),
                            Err(e) => write!(f, " | UDP !{}", e.as_str()),
                        }
                    }
                    IpProtocol::Icmp => match Icmpv4Packet::new_checked(l4)
                        .and_then(|p| Icmpv4Repr::parse(&p, caps))
                    {
                        Ok(icmp) => write!(f, " | {icmp}"),
                        Err(e) => write!(f, " | ICMP !{}", e.as_str()),
                    },
                    IpProtocol::Unknown(_) => Ok(()),
                }
            }
            EtherType::Ipv6 | EtherType::Unknown(_) => write!(f, " len={}", payload.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn arp_frame() {
        let frame = unhex(
            "ffffffffffff525400123456080600010800060400015254001234560a0000010000000000000a000002",
        );
        assert_eq!(
            pretty_frame(&frame).to_string(),
            "ETH src=52:54:00:12:34:56 dst=ff:ff:ff:ff:ff:ff type=ARP | \
             ARP request src=10.0.0.1/52:54:00:12:34:56 dst=10.0.0.2/00:00:00:00:00:00"
        );
    }

    #[test]
    fn icmp_frame() {
        // Captured on Linux loopback: the kernel's echo reply.
        let frame = unhex(
            "00000000000000000000000008004500003ccaff00004001b1bf7f0000017f0000010000c895\
             123400016162636465666768696a6b6c6d6e6f707172737475767778797a303132333435",
        );
        assert_eq!(
            pretty_frame(&frame).to_string(),
            "ETH src=00:00:00:00:00:00 dst=00:00:00:00:00:00 type=IPv4 | \
             IPv4 src=127.0.0.1 dst=127.0.0.1 proto=ICMP len=40 ttl=64 | \
             ICMP echo-reply id=4660 seq=1 len=32"
        );
    }

    #[test]
    fn tcp_frame_and_offloaded_checksum() {
        // Captured on Linux loopback: a SYN whose TCP checksum the device
        // was to complete.
        let frame = unhex(
            "00000000000000000000000008004500003c21b3400040061b077f0000017f00000191a615b3\
             90988b2c00000000a002ffd7fe3000000204ffd70402080af051d0e4000000000103030a",
        );
        let text = pretty_frame(&frame).to_string();
        assert!(text.ends_with("| TCP !bad_checksum"), "{text}");
        let text = PrettyFrame::with_caps(&frame, ChecksumCapabilities::ignored()).to_string();
        assert!(
            text.ends_with("| TCP src=37286 dst=5555 seq=2425916204 win=65495 flags=S len=0 mss=65495 ws=10 sackOK ts=4031893732/0"),
            "{text}"
        );
    }

    #[test]
    fn udp_frame_and_errors() {
        let frame = unhex(
            "020000000002020000000001080045000021000040004011b978c0a80001c0a80002\
             00350400000d367968656c6c6f",
        );
        let text = pretty_frame(&frame).to_string();
        assert!(text.ends_with("| UDP src=53 dst=1024 len=5"), "{text}");
        assert!(pretty_frame(&frame[..20])
            .to_string()
            .ends_with("IPv4 !truncated"));
        let mut bad = frame.clone();
        bad[14] = 0x55;
        assert!(pretty_frame(&bad)
            .to_string()
            .ends_with("IPv4 !bad_version"));
    }
}
