//! A whole Ethernet frame, taken apart the way the stack does: Ethernet,
//! then ARP or IPv4, then ICMPv4, UDP or TCP. Checksums are not verified so
//! the fuzzer reaches the upper layers; the one-line summary is formatted
//! both with and without verification.
#![no_main]

use std::fmt::Write;

use bypass_wire::{
    pretty_frame, ArpPacket, ArpRepr, ChecksumCapabilities, EtherType, EthernetFrame, EthernetRepr,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, PrettyFrame, TcpPacket, TcpRepr,
    UdpPacket, UdpRepr,
};
use libfuzzer_sys::fuzz_target;

fn walk(data: &[u8], caps: &ChecksumCapabilities) -> Result<(), bypass_wire::Error> {
    let eth = EthernetFrame::new_checked(data)?;
    let eth_repr = EthernetRepr::parse(&eth)?;
    match eth_repr.ethertype {
        EtherType::Arp => {
            ArpRepr::parse(&ArpPacket::new_checked(eth.payload())?)?;
        }
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload())?;
            let ip_repr = Ipv4Repr::parse(&ip, caps)?;
            let (src, dst) = (ip_repr.src_addr, ip_repr.dst_addr);
            match ip_repr.next_header {
                IpProtocol::Tcp => {
                    let tcp =
                        TcpRepr::parse(&TcpPacket::new_checked(ip.payload())?, src, dst, caps)?;
                    assert!(tcp.payload.len() <= ip_repr.payload_len);
                }
                IpProtocol::Udp => {
                    let udp = UdpPacket::new_checked(ip.payload())?;
                    UdpRepr::parse(&udp, src, dst, caps)?;
                    assert!(udp.payload().len() <= ip_repr.payload_len);
                }
                IpProtocol::Icmp => {
                    Icmpv4Repr::parse(&Icmpv4Packet::new_checked(ip.payload())?, caps)?;
                }
                IpProtocol::Unknown(_) => {}
            }
        }
        EtherType::Ipv6 | EtherType::Unknown(_) => {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = walk(data, &ChecksumCapabilities::ignored());
    if let Err(e) = walk(data, &ChecksumCapabilities::default()) {
        assert!(!e.as_str().is_empty());
    }
    let mut text = String::new();
    let _ = write!(text, "{}", pretty_frame(data));
    let _ = write!(
        text,
        "{}",
        PrettyFrame::with_caps(data, ChecksumCapabilities::ignored())
    );
});
