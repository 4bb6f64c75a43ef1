//! Ethernet II (IEEE 802.3 / RFC 894) on receive: which frames are ours and what they carry.

use bypass_wire::{EtherType, EthernetFrame, ETHERNET_HEADER_LEN};

use crate::iface::Iface;
use crate::stats::Layer;

/// What an accepted frame carries, and where its payload starts.
pub(crate) enum Payload {
    Arp,
    Ipv4,
}

/// Checks a received frame: long enough, addressed to us (our MAC or broadcast) and of a type
/// we speak. Returns the payload kind; the payload starts at [`ETHERNET_HEADER_LEN`].
pub(crate) fn receive(iface: &mut Iface, frame: &[u8]) -> Option<Payload> {
    let eth = match EthernetFrame::new_checked(frame) {
        Ok(eth) => eth,
        Err(e) => {
            iface.stats.parse_error(Layer::Ethernet, e);
            return None;
        }
    };
    debug_assert!(frame.len() >= ETHERNET_HEADER_LEN);
    let dst = eth.dst_addr();
    if dst != iface.mac && !dst.is_broadcast() {
        iface.stats.eth_not_for_us += 1;
        return None;
    }
    match eth.ethertype() {
        EtherType::Arp => Some(Payload::Arp),
        EtherType::Ipv4 => Some(Payload::Ipv4),
        _ => {
            iface.stats.eth_unknown_ethertype += 1;
            None
        }
    }
}
