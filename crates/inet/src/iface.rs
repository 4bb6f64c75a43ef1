//! The interface: our addresses, the neighbour cache, the transmit queue and the counters.
//!
//! Every layer sends through [`Iface`]: a transport builds its header and payload in a
//! [`Buffer`] from the device's pool, leaving headroom; [`Iface::send_ipv4`] prepends the IPv4
//! header (RFC 791 §3.1), resolves the next hop (RFC 1122 §3.3.1) and [`Iface::send_ethernet`]
//! prepends the Ethernet header. Frames wait in a bounded queue until the stack's next
//! `tx_burst`.
//!
//! On a device with frame offloads (`DeviceCaps::frame_offloads`) each queued frame has a
//! [`FrameOffload`] next to it: the default for every frame but TCP segments on a resolved
//! route, whose checksum the device completes and which may be larger than the MTU when the
//! device segments them (`DeviceCaps::tcp_segmentation_max`).

use std::time::Duration;

use bypass_devices::FrameOffload;
use bypass_runtime::{Buffer, BufferPool, Instant};
use bypass_wire::{
    checksum, ArpOperation, ArpPacket, ArpRepr, ChecksumCapabilities, EtherType, EthernetAddress,
    EthernetFrame, EthernetRepr, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr,
    ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

use crate::arp::{ArpCache, Lookup, LookupDrop};
use crate::stats::Stats;

/// Time to live of the datagrams we send (RFC 1700's recommended default).
const TTL: u8 = 64;

/// Ethernet and IPv4 headers: what a [`Route`] holds.
pub(crate) const ROUTE_HEADERS_LEN: usize = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN;

/// The Ethernet and IPv4 headers of one flow (our address to one destination, one protocol),
/// remembered from a datagram that took the full path, so that the next ones skip the
/// next-hop lookup and the header building. It holds while the neighbour entry it came from
/// is valid and the cache has not changed since.
pub(crate) struct Route {
    /// Both headers, with zero IPv4 total length and checksum.
    headers: [u8; ROUTE_HEADERS_LEN],
    /// One's complement sum of the IPv4 header template.
    ip_sum: u16,
    valid_until: Instant,
    generation: u64,
}

pub(crate) struct Iface {
    pub mac: EthernetAddress,
    pub cidr: Ipv4Cidr,
    pub gateway: Option<Ipv4Address>,
    /// Largest IP datagram, from the device.
    pub mtu: usize,
    pub caps: ChecksumCapabilities,
    pub pool: BufferPool,
    /// The device takes a [`FrameOffload`] with each frame and completes the TCP checksums
    /// of those that ask (`DeviceCaps::frame_offloads`).
    pub frame_offloads: bool,
    /// With `frame_offloads`: the offload of each frame in `tx`, in step with it.
    pub tx_offloads: Vec<FrameOffload>,
    /// The device's pool of large chunks, for TCP segments it cuts itself (None without
    /// segmentation offload).
    pub large_pool: Option<BufferPool>,
    /// Most payload bytes in one TCP segment the device cuts (from
    /// `DeviceCaps::tcp_segmentation_max` less the largest IPv4 and TCP headers, and what a
    /// large chunk holds); 0 without segmentation offload: segments never exceed the MTU.
    pub tcp_large_payload_max: usize,
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
    pub fn send_ipv4(&mut self, packet: Buffer, dst: Ipv4Address, protocol: IpProtocol) {
        self.send_ipv4_routed(packet, dst, protocol, None);
    }

    /// Like [`Iface::send_ipv4`], for a flow that keeps its [`Route`]: while the route holds,
    /// the Ethernet and IPv4 headers are copied from it, with the IPv4 checksum completed
    /// from the sum kept in it (RFC 1071 §2(A)), and no neighbour lookup; otherwise the
    /// datagram takes the full path and the route is built again once the next hop resolves.
    pub fn send_ipv4_routed(
        &mut self,
        mut packet: Buffer,
        dst: Ipv4Address,
        protocol: IpProtocol,
        mut route: Option<&mut Option<Route>>,
    ) {
        debug_assert!(
            packet.len() + IPV4_HEADER_LEN <= self.mtu,
            "datagram over the MTU"
        );
        if let Some(Some(r)) = route.as_deref() {
            if self.route_holds(r) {
                let payload_len = packet.len();
                self.write_routed_headers(r, packet.prepend(ROUTE_HEADERS_LEN), payload_len);
                self.queue_frame(packet);
                return;
            }
        }
        if let Some(r) = route.as_deref_mut() {
            *r = None;
        }
        let repr = Ipv4Repr {
            src_addr: self.addr(),
            dst_addr: dst,
            next_header: protocol,
            payload_len: packet.len(),
            hop_limit: TTL,
        };
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
            Lookup::Found(mac, valid_until) => {
                let packet = packet.expect("a found lookup returns the packet");
                if let Some(r) = route {
                    *r = Some(self.route(&repr, mac, valid_until));
                }
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

    /// Whether `route` may be used now: its neighbour entry has not expired and nothing in
    /// the neighbour cache changed since it was built.
    #[inline]
    pub fn route_holds(&self, route: &Route) -> bool {
        route.generation == self.arp.generation() && self.now < route.valid_until
    }

    /// Writes the Ethernet and IPv4 headers of `route` into `headers` (the first
    /// [`ROUTE_HEADERS_LEN`] bytes of a frame) for an IPv4 payload of `payload_len` bytes.
    #[inline]
    pub fn write_routed_headers(&self, route: &Route, headers: &mut [u8], payload_len: usize) {
        let total_len = (IPV4_HEADER_LEN + payload_len) as u16;
        let headers = &mut headers[..ROUTE_HEADERS_LEN];
        headers.copy_from_slice(&route.headers);
        let ip = &mut headers[ETHERNET_HEADER_LEN..];
        ip[2..4].copy_from_slice(&total_len.to_be_bytes());
        if self.caps.ipv4.tx() {
            // RFC 1071 §2(A): the template's sum plus the one field that changed.
            let sum = !checksum::fold(route.ip_sum as u64 + total_len as u64);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
        }
    }

    /// Queues a finished frame for the device, or counts it dropped if the queue is full.
    #[inline]
    pub fn queue_frame(&mut self, frame: Buffer) {
        self.queue_frame_offload(frame, FrameOffload::default());
    }

    /// [`Iface::queue_frame`] for a frame that asks the device for `offload` (only on a
    /// device with frame offloads; the default on any other).
    #[inline]
    pub fn queue_frame_offload(&mut self, frame: Buffer, offload: FrameOffload) {
        if self.tx.len() >= self.tx_limit {
            self.stats.tx_queue_full += 1;
            return;
        }
        self.stats.tx_frames += 1;
        self.tx.push(frame);
        if self.frame_offloads {
            self.tx_offloads.push(offload);
        } else {
            debug_assert_eq!(offload, FrameOffload::default(), "offload without support");
        }
    }

    /// A buffer from the device's pool of large chunks, for a segment the device cuts, or
    /// `None` (not counted: the caller sends smaller segments instead).
    pub fn alloc_large(&mut self) -> Option<Buffer> {
        self.large_pool.as_ref()?.alloc()
    }

    /// The headers of the datagrams of `repr`'s flow to `mac`, for [`Iface::send_ipv4_routed`].
    fn route(&self, repr: &Ipv4Repr, mac: EthernetAddress, valid_until: Instant) -> Route {
        let mut headers = [0u8; ROUTE_HEADERS_LEN];
        let (eth, ip) = headers.split_at_mut(ETHERNET_HEADER_LEN);
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: mac,
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(eth));
        let template = Ipv4Repr {
            payload_len: 0,
            ..*repr
        };
        template.emit(
            &mut Ipv4Packet::new_unchecked(&mut *ip),
            &ChecksumCapabilities::ignored(),
        );
        // Length and checksum are per datagram: zero in the template and out of its sum.
        ip[2..4].fill(0);
        ip[10..12].fill(0);
        let ip_sum = checksum::data(ip);
        Route {
            headers,
            ip_sum,
            valid_until,
            generation: self.arp.generation(),
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
        self.queue_frame(frame);
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
