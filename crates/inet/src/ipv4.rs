//! IPv4 (RFC 791, RFC 1122 §3.2) on receive: validation and the local-delivery decision.
//! Sending is [`crate::iface::Iface::send_ipv4`].

use std::ops::Range;

use bypass_wire::{Ipv4Packet, Ipv4Repr};

use crate::iface::Iface;
use crate::stats::Layer;

/// Parses the datagram in `packet` and decides whether it is for us. Returns the header and
/// the range of its payload within `packet` (Ethernet padding after it excluded).
pub(crate) fn receive(iface: &mut Iface, packet: &[u8]) -> Option<(Ipv4Repr, Range<usize>)> {
    let view = match Ipv4Packet::new_checked(packet) {
        Ok(v) => v,
        Err(e) => {
            iface.stats.parse_error(Layer::Ipv4, e);
            return None;
        }
    };
    let repr = match Ipv4Repr::parse(&view, &iface.caps) {
        Ok(r) => r,
        Err(e) => {
            iface.stats.parse_error(Layer::Ipv4, e);
            return None;
        }
    };
    // RFC 1122 §3.2.1.3: a source that is broadcast or multicast is discarded; our own
    // address as source means a loop.
    let src = repr.src_addr;
    if src.is_broadcast()
        || src.is_multicast()
        || src == iface.addr()
        || iface.cidr.broadcast() == Some(src)
    {
        iface.stats.ipv4_bad_source += 1;
        return None;
    }
    // RFC 1122 §3.3.6: ours, the limited broadcast, or our subnet's broadcast.
    let dst = repr.dst_addr;
    if dst != iface.addr() && !dst.is_broadcast() && iface.cidr.broadcast() != Some(dst) {
        iface.stats.ipv4_not_for_us += 1;
        return None;
    }
    let start = view.header_len() as usize;
    Some((repr, start..start + repr.payload_len))
}
