//! The interface: our addresses, the neighbour cache, the transmit queue and the counters.
//!
//! Every layer sends through [`Iface`]: a transport builds its header and payload in a
//! [`Buffer`] from the device's pool, leaving headroom; [`Iface::send_ipv4`] prepends the IPv4
//! header (RFC 791 §3.1), resolves the next hop (RFC 1122 §3.3.1) and [`Iface::send_ethernet`]
//! prepends the Ethernet header. Frames wait in a bounded queue until the stack's next
//! `tx_burst`.

use std::time::Duration;

use bypass_runtime::{Buffer, BufferPool, Instant};
use bypass_wire::{
    ArpOperation, ArpPacket, ArpRepr, ChecksumCapabilities, EtherType, EthernetAddress,
    EthernetFrame, EthernetRepr, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr,
    ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

use crate::arp::{ArpCache, Lookup, LookupDrop};
use crate::stats::Stats;

/// Time to live of the datagrams we send (RFC 1700's recommended default).
const TTL: u8 = 64;

pub(crate) struct Iface {
    pub mac: EthernetAddress,
    pub cidr: Ipv4Cidr,
    pub gateway: Option<Ipv4Address>,
    /// Largest IP datagram, from the device.
    pub mtu: usize,
    pub caps: ChecksumCapabilities,
    pub pool: BufferPool,
    pub arp: ArpCache,
    /// Frames ready for the device.
    pub tx: Vec<Buffer>,
    pub tx_limit: usize,
    pub stats: Stats,
    /// The time of the current poll.
    pub now: Instant,
    /// RFC 5961 §7 rate limit of challenge ACKs: window start and count in it.
    pub challenge_window: Instant,
    pub challenge_count: u32,
    pub challenge_limit: u32,
    /// The earliest ARP retry scheduled since the stack last looked (it merges it into its
    /// timer deadline).
    pub arp_hint: Instant,
}

impl Iface {
    pub fn addr(&self) -> Ipv4Address {
        self.cidr.address
    }

    /// A frame buffer from the device's pool, or `None` (counted) if the pool is empty.
    pub fn alloc(&mut self) -> Option<Buffer> {
        let b = self.pool.alloc();
        if b.is_none() {
            self.stats.tx_no_buffer += 1;
        }
        b
    }

    /// The neighbour to send a datagram for `dst` to (RFC 1122 §3.3.1.1: on-link, else the
    /// gateway), or `None` if there is no route.
    pub fn next_hop(&self, dst: Ipv4Address) -> Option<Ipv4Address> {
        if self.cidr.contains(dst) || dst.is_broadcast() {
            Some(dst)
        } else {
            self.gateway
        }
    }

    /// Whether a datagram to `dst` goes to the Ethernet broadcast address.
    fn is_broadcast(&self, dst: Ipv4Address) -> bool {
        dst.is_broadcast() || self.cidr.broadcast() == Some(dst)
    }

    /// Allows one more challenge ACK under the rate limit (RFC 5961 §7).
    pub fn allow_challenge_ack(&mut self) -> bool {
        if self.now >= self.challenge_window + Duration::from_secs(1) {
            self.challenge_window = self.now;
            self.challenge_count = 0;
        }
        if self.challenge_count >= self.challenge_limit {
            self.stats.tcp_challenge_acks_limited += 1;
            return false;
        }
        self.challenge_count += 1;
        self.stats.tcp_challenge_acks += 1;
        true
    }

    /// Prepends an IPv4 header to `packet` (which holds the transport header and data) and
    /// sends it towards `dst`.
    pub fn send_ipv4(&mut self, mut packet: Buffer, dst: Ipv4Address, protocol: IpProtocol) {
        let repr = Ipv4Repr {
            src_addr: self.addr(),
            dst_addr: dst,
            next_header: protocol,
            payload_len: packet.len(),
            hop_limit: TTL,
        };
        debug_assert!(
            repr.payload_len + IPV4_HEADER_LEN <= self.mtu,
            "datagram over the MTU"
        );
        let header = packet.prepend(IPV4_HEADER_LEN);
        repr.emit(&mut Ipv4Packet::new_unchecked(header), &self.caps);

        if self.is_broadcast(dst) {
            self.send_ethernet(packet, EthernetAddress::BROADCAST, EtherType::Ipv4);
            return;
        }
        let Some(hop) = self.next_hop(dst) else {
            self.stats.ipv4_no_route += 1;
            return;
        };
        let (found, packet) = self.arp.lookup(hop, packet, self.now);
        match found {
            Lookup::Found(mac) => {
                let packet = packet.expect("a found lookup returns the packet");
                self.send_ethernet(packet, mac, EtherType::Ipv4);
            }
            Lookup::QueuedSendRequest => {
                self.arp_hint = self.arp_hint.min(self.now + self.arp.retry_interval());
                self.send_arp(ArpOperation::Request, hop, None)
            }
            Lookup::Queued => {}
            Lookup::Dropped(LookupDrop::QueueFull) => self.stats.arp_queue_full += 1,
            Lookup::Dropped(LookupDrop::CacheFull) => self.stats.arp_cache_full += 1,
        }
    }

    /// Prepends the Ethernet II header and queues the frame for the device.
    pub fn send_ethernet(&mut self, mut frame: Buffer, dst: EthernetAddress, ethertype: EtherType) {
        let repr = EthernetRepr {
            src_addr: self.mac,
            dst_addr: dst,
            ethertype,
        };
        let header = frame.prepend(ETHERNET_HEADER_LEN);
        repr.emit(&mut EthernetFrame::new_unchecked(header));
        if self.tx.len() >= self.tx_limit {
            self.stats.tx_queue_full += 1;
            return;
        }
        self.stats.tx_frames += 1;
        self.tx.push(frame);
    }

    /// Sends an ARP request for `target` (broadcast), or a reply to `target` at `target_mac`.
    pub fn send_arp(
        &mut self,
        operation: ArpOperation,
        target: Ipv4Address,
        target_mac: Option<EthernetAddress>,
    ) {
        let Some(mut frame) = self.alloc() else {
            return;
        };
        // RFC 826 "Packet Generation": a request leaves the target hardware address unknown.
        let repr = ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: self.mac,
            source_protocol_addr: self.addr(),
            target_hardware_addr: target_mac.unwrap_or(EthernetAddress::UNSPECIFIED),
            target_protocol_addr: target,
        };
        let body = frame.append(repr.buffer_len());
        repr.emit(&mut ArpPacket::new_unchecked(body));
        match operation {
            ArpOperation::Request => self.stats.arp_requests_sent += 1,
            _ => self.stats.arp_replies_sent += 1,
        }
        let dst = target_mac.unwrap_or(EthernetAddress::BROADCAST);
        self.send_ethernet(frame, dst, EtherType::Arp);
    }

    /// Sends the packets that waited for `mac` to resolve.
    pub fn release_waiting(&mut self, waiting: Vec<Buffer>, mac: EthernetAddress) {
        for packet in waiting {
            self.send_ethernet(packet, mac, EtherType::Ipv4);
        }
    }

    /// Runs ARP retries.
    pub fn poll_arp(&mut self) {
        let mut due = Vec::new();
        let dropped = self.arp.poll(self.now, |ip| due.push(ip));
        self.stats.arp_unresolved_drops += dropped;
        for ip in due {
            self.send_arp(ArpOperation::Request, ip, None);
        }
    }
}
