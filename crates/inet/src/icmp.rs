//! ICMPv4 (RFC 792): echo replies. Other messages are counted and ignored.

use bypass_wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Repr};

use crate::iface::Iface;
use crate::stats::Layer;

pub(crate) fn receive(iface: &mut Iface, ip: &Ipv4Repr, message: &[u8]) {
    let view = match Icmpv4Packet::new_checked(message) {
        Ok(v) => v,
        Err(e) => {
            iface.stats.parse_error(Layer::Icmpv4, e);
            return;
        }
    };
    let repr = match Icmpv4Repr::parse(&view, &iface.caps) {
        Ok(r) => r,
        Err(e) => {
            iface.stats.parse_error(Layer::Icmpv4, e);
            return;
        }
    };
    match repr {
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        } => {
            iface.stats.icmp_echo_requests += 1;
            // RFC 1122 §3.2.2.6: no reply to an echo sent to a broadcast address.
            if ip.dst_addr != iface.addr() {
                return;
            }
            let reply = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let Some(mut packet) = iface.alloc() else {
                return;
            };
            if reply.buffer_len() > packet.tailroom() {
                return;
            }
            let body = packet.append(reply.buffer_len());
            reply.emit(&mut Icmpv4Packet::new_unchecked(body), &iface.caps);
            iface.stats.icmp_echo_replies_sent += 1;
            iface.send_ipv4(packet, ip.src_addr, IpProtocol::Icmp);
        }
        _ => iface.stats.icmp_ignored += 1,
    }
}
