//! UDP (RFC 768): datagram sockets bound to a port.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use bypass_runtime::Buffer;
use bypass_wire::{
    ChecksumCapabilities, IpProtocol, Ipv4Repr, UdpPacket, UdpRepr, IPV4_HEADER_LEN, UDP_HEADER_LEN,
};

use crate::error::Error;
use crate::iface::Iface;
use crate::socket::{Interest, Wakers};
use crate::stats::Layer;

/// A bound UDP socket: a bounded queue of received datagrams.
pub(crate) struct UdpSocket {
    pub port: u16,
    rxq: VecDeque<(Buffer, SocketAddrV4)>,
    limit: usize,
    pub wakers: Wakers,
}

impl UdpSocket {
    pub fn new(port: u16, limit: usize) -> UdpSocket {
        UdpSocket {
            port,
            rxq: VecDeque::with_capacity(limit.min(1024)),
            limit,
            wakers: Wakers::default(),
        }
    }

    pub fn recv(&mut self) -> Option<(Buffer, SocketAddrV4)> {
        self.rxq.pop_front()
    }

    pub fn can_read(&self) -> bool {
        !self.rxq.is_empty()
    }

    /// Queues a received datagram, or counts it dropped if the queue is full.
    pub fn deliver(&mut self, iface: &mut Iface, data: Buffer, from: SocketAddrV4) {
        if self.rxq.len() >= self.limit {
            iface.stats.udp_queue_full += 1;
            return;
        }
        iface.stats.udp_rx += 1;
        self.rxq.push_back((data, from));
        self.wakers.wake(Interest::Readable);
    }

    /// Sends `data` to `to` from this socket's port.
    pub fn send_to(
        &mut self,
        iface: &mut Iface,
        to: SocketAddrV4,
        data: &[u8],
    ) -> Result<usize, Error> {
        if data.len() + UDP_HEADER_LEN + IPV4_HEADER_LEN > iface.mtu {
            return Err(Error::MessageTooLong);
        }
        if to.port() == 0 || to.ip().is_unspecified() {
            return Err(Error::InvalidArgument);
        }
        let dst = (*to.ip()).into();
        if iface.next_hop(dst).is_none() {
            return Err(Error::Unreachable);
        }
        let Some(mut packet) = iface.alloc() else {
            return Err(Error::WouldBlock);
        };
        if packet.tailroom() < data.len() + UDP_HEADER_LEN {
            return Err(Error::MessageTooLong);
        }
        let repr = UdpRepr {
            src_port: self.port,
            dst_port: to.port(),
        };
        let body = packet.append(UDP_HEADER_LEN + data.len());
        repr.emit(
            &mut UdpPacket::new_unchecked(body),
            iface.addr(),
            dst,
            data.len(),
            |p| p.copy_from_slice(data),
            &iface.caps,
        );
        iface.stats.udp_tx += 1;
        iface.send_ipv4(packet, dst, IpProtocol::Udp);
        Ok(data.len())
    }
}

/// Parses a UDP datagram; returns the header and the payload's range within `datagram`.
/// `caps` says which checksums to verify (the interface's, or fewer for a frame whose
/// checksum the device vouched for).
pub(crate) fn parse(
    iface: &mut Iface,
    ip: &Ipv4Repr,
    datagram: &[u8],
    caps: &ChecksumCapabilities,
) -> Option<(UdpRepr, std::ops::Range<usize>)> {
    let view = match UdpPacket::new_checked(datagram) {
        Ok(v) => v,
        Err(e) => {
            iface.stats.parse_error(Layer::Udp, e);
            return None;
        }
    };
    match UdpRepr::parse(&view, ip.src_addr, ip.dst_addr, caps) {
        Ok(r) => Some((r, UDP_HEADER_LEN..view.len() as usize)),
        Err(e) => {
            iface.stats.parse_error(Layer::Udp, e);
            None
        }
    }
}
