//! ARP (RFC 826): the neighbour cache and the resolution of next hops.
//!
//! The cache is a fixed table of [`ArpConfig::cache_size`] entries, allocated at start-up.
//! An entry is *static* (configured, never expires), *resolved* (learned, expires after
//! [`ArpConfig::ttl`]) or *pending* (a request is out; up to [`ArpConfig::queue_per_entry`]
//! packets wait for the answer, as RFC 1122 §2.3.2.2 asks, and no more than
//! [`ArpConfig::queue_total`] for all pending entries together; a packet past either bound is
//! dropped and counted in `arp_queue_full`). A pending entry asks again every
//! [`ArpConfig::retry_interval`], [`ArpConfig::max_requests`] times, then gives up and drops
//! what waited (counted in `arp_unresolved_drops`); the next packet to that address starts over.

use std::time::Duration;

use bypass_runtime::{Buffer, Instant};
use bypass_wire::{EthernetAddress, Ipv4Address};

/// Limits and timings of the neighbour cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArpConfig {
    /// Entries in the cache (static ones included).
    pub cache_size: usize,
    /// How long a learned entry stays valid.
    pub ttl: Duration,
    /// Time between two requests for the same address.
    pub retry_interval: Duration,
    /// Requests sent before giving up on an address.
    pub max_requests: u32,
    /// Packets kept per address while it resolves (a first burst to a new neighbour waits
    /// here rather than being dropped).
    pub queue_per_entry: usize,
    /// Packets kept for all resolving addresses together: bounds the buffers unanswered
    /// requests can hold, whatever the number of addresses.
    pub queue_total: usize,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            cache_size: 64,
            ttl: Duration::from_secs(60),
            retry_interval: Duration::from_millis(500),
            max_requests: 5,
            queue_per_entry: 64,
            queue_total: 256,
        }
    }
}

#[derive(Debug)]
enum State {
    Static(EthernetAddress),
    Resolved {
        mac: EthernetAddress,
        expires: Instant,
    },
    Pending {
        requests: u32,
        next_request: Instant,
        queue: Vec<Buffer>,
    },
}

#[derive(Debug)]
struct Entry {
    ip: Ipv4Address,
    state: State,
}

/// What [`ArpCache::lookup`] found.
pub(crate) enum Lookup {
    /// Send to this MAC now; the entry holds until the instant given (exclusive).
    Found(EthernetAddress, Instant),
    /// The packet was queued; send a request now (the first one for this address).
    QueuedSendRequest,
    /// The packet was queued behind an outstanding request.
    Queued,
    /// The packet was dropped: its queue or the cache is full. The reason is counted.
    Dropped(LookupDrop),
}

pub(crate) enum LookupDrop {
    QueueFull,
    CacheFull,
}

/// The neighbour cache.
pub struct ArpCache {
    config: ArpConfig,
    entries: Vec<Entry>,
    /// Index of the entry found last (most lookups repeat the previous one).
    last: usize,
    /// Changes whenever an entry may have changed or gone: a resolution remembered by a
    /// sender (see [`crate::iface::Route`]) holds only while this stays the same.
    generation: u64,
}

impl ArpCache {
    pub(crate) fn new(config: ArpConfig) -> ArpCache {
        assert!(config.cache_size > 0, "ARP cache needs at least one entry");
        ArpCache {
            entries: Vec::with_capacity(config.cache_size),
            config,
            last: 0,
            generation: 0,
        }
    }

    /// A number that changes whenever an entry may have changed or gone.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds a permanent entry (replacing any other for `ip`). Packets waiting for `ip` are
    /// returned to be sent.
    pub(crate) fn insert_static(
        &mut self,
        ip: Ipv4Address,
        mac: EthernetAddress,
    ) -> Result<Vec<Buffer>, ()> {
        self.set(ip, State::Static(mac), true)
    }

    fn find(&mut self, ip: Ipv4Address) -> Option<usize> {
        if self.entries.get(self.last).is_some_and(|e| e.ip == ip) {
            return Some(self.last);
        }
        let i = self.entries.iter().position(|e| e.ip == ip)?;
        self.last = i;
        Some(i)
    }

    /// Finds the MAC of `ip` for `packet` (an IP packet waiting for its Ethernet header),
    /// queueing the packet if the address is not resolved yet.
    pub(crate) fn lookup(
        &mut self,
        ip: Ipv4Address,
        packet: Buffer,
        now: Instant,
    ) -> (Lookup, Option<Buffer>) {
        let found = self.find(ip);
        let resolved = found.is_some_and(|i| match self.entries[i].state {
            State::Static(_) => true,
            State::Resolved { expires, .. } => expires > now,
            State::Pending { .. } => false,
        });
        // The total is counted only for a packet that would wait (the slow path).
        if !resolved && self.queued() >= self.config.queue_total {
            return (Lookup::Dropped(LookupDrop::QueueFull), None);
        }
        if let Some(i) = found {
            let limit = self.config.queue_per_entry;
            let retry = self.config.retry_interval;
            match &mut self.entries[i].state {
                State::Static(mac) => {
                    return (Lookup::Found(*mac, Instant::FAR_FUTURE), Some(packet))
                }
                State::Resolved { mac, expires } if *expires > now => {
                    return (Lookup::Found(*mac, *expires), Some(packet))
                }
                State::Pending { queue, .. } => {
                    if queue.len() >= limit {
                        return (Lookup::Dropped(LookupDrop::QueueFull), None);
                    }
                    queue.push(packet);
                    return (Lookup::Queued, None);
                }
                state => {
                    // Expired: resolve again.
                    self.generation += 1;
                    let mut queue = Vec::with_capacity(limit);
                    queue.push(packet);
                    *state = State::Pending {
                        requests: 1,
                        next_request: now + retry,
                        queue,
                    };
                    return (Lookup::QueuedSendRequest, None);
                }
            }
        }
        let mut queue = Vec::with_capacity(self.config.queue_per_entry);
        queue.push(packet);
        let state = State::Pending {
            requests: 1,
            next_request: now + self.config.retry_interval,
            queue,
        };
        match self.set(ip, state, false) {
            Ok(_) => (Lookup::QueuedSendRequest, None),
            Err(()) => (Lookup::Dropped(LookupDrop::CacheFull), None),
        }
    }

    /// Packets waiting for all resolving addresses.
    fn queued(&self) -> usize {
        self.entries
            .iter()
            .map(|e| match &e.state {
                State::Pending { queue, .. } => queue.len(),
                _ => 0,
            })
            .sum()
    }

    /// Learns `ip is-at mac` (RFC 826 "merge"): updates an existing entry, or adds one if
    /// `create` (the packet was for us). Returns the packets that waited for this address.
    pub(crate) fn learn(
        &mut self,
        ip: Ipv4Address,
        mac: EthernetAddress,
        create: bool,
        now: Instant,
    ) -> Vec<Buffer> {
        let expires = now + self.config.ttl;
        self.generation += 1;
        if let Some(i) = self.find(ip) {
            let old =
                std::mem::replace(&mut self.entries[i].state, State::Resolved { mac, expires });
            return match old {
                State::Static(m) => {
                    // Static entries are not overwritten by the network.
                    self.entries[i].state = State::Static(m);
                    Vec::new()
                }
                State::Pending { queue, .. } => queue,
                State::Resolved { .. } => Vec::new(),
            };
        }
        if create {
            let _ = self.set(ip, State::Resolved { mac, expires }, false);
        }
        Vec::new()
    }

    /// Puts `state` for `ip` into the cache, evicting an expired or the oldest resolved entry
    /// if full. Static entries replace anything; others never evict static or pending entries.
    fn set(&mut self, ip: Ipv4Address, state: State, force: bool) -> Result<Vec<Buffer>, ()> {
        self.generation += 1;
        if let Some(i) = self.find(ip) {
            let old = std::mem::replace(&mut self.entries[i].state, state);
            return Ok(match old {
                State::Pending { queue, .. } => queue,
                _ => Vec::new(),
            });
        }
        if self.entries.len() < self.config.cache_size {
            self.entries.push(Entry { ip, state });
            return Ok(Vec::new());
        }
        let victim = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.state {
                State::Resolved { expires, .. } => Some((expires, i)),
                _ => None,
            })
            .min()
            .map(|(_, i)| i)
            .or_else(|| {
                force.then(|| {
                    self.entries
                        .iter()
                        .position(|e| matches!(e.state, State::Pending { .. }))
                })?
            });
        let Some(i) = victim else { return Err(()) };
        self.entries[i] = Entry { ip, state };
        Ok(Vec::new())
    }

    /// Runs retries: calls `request(ip)` for each address due for another request and returns
    /// how many packets were dropped for addresses that gave up.
    pub(crate) fn poll(&mut self, now: Instant, mut request: impl FnMut(Ipv4Address)) -> u64 {
        let mut dropped = 0;
        let (max, retry) = (self.config.max_requests, self.config.retry_interval);
        let before = self.entries.len();
        self.entries.retain_mut(|e| match &mut e.state {
            State::Pending {
                requests,
                next_request,
                queue,
            } if *next_request <= now => {
                if *requests >= max {
                    dropped += queue.len() as u64;
                    return false;
                }
                *requests += 1;
                *next_request = now + retry;
                request(e.ip);
                true
            }
            _ => true,
        });
        self.last = 0;
        if self.entries.len() != before {
            self.generation += 1;
        }
        dropped
    }

    pub(crate) fn retry_interval(&self) -> Duration {
        self.config.retry_interval
    }

    /// The earliest retry deadline.
    pub(crate) fn poll_at(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Pending { next_request, .. } => Some(next_request),
                _ => None,
            })
            .min()
    }
}

/// Processes a received ARP packet (RFC 826 "Packet Reception"): merge the sender into the
/// cache, add it if we are the target, and answer requests for our address.
pub(crate) fn receive(iface: &mut crate::iface::Iface, packet: &[u8]) {
    use bypass_wire::{ArpOperation, ArpPacket, ArpRepr};
    let repr = match ArpPacket::new_checked(packet).and_then(|p| ArpRepr::parse(&p)) {
        Ok(r) => r,
        Err(e) => {
            iface.stats.parse_error(crate::stats::Layer::Arp, e);
            return;
        }
    };
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = repr;
    match operation {
        ArpOperation::Request => iface.stats.arp_requests_received += 1,
        ArpOperation::Reply => iface.stats.arp_replies_received += 1,
        _ => {}
    }
    if !source_hardware_addr.is_unicast() || !source_protocol_addr.is_unicast() {
        iface.stats.arp_not_for_us += 1;
        return;
    }
    let for_us = target_protocol_addr == iface.addr();
    let now = iface.now;
    let waiting = iface
        .arp
        .learn(source_protocol_addr, source_hardware_addr, for_us, now);
    iface.release_waiting(waiting, source_hardware_addr);
    if !for_us {
        iface.stats.arp_not_for_us += 1;
        return;
    }
    if operation == ArpOperation::Request {
        iface.send_arp(
            ArpOperation::Reply,
            source_protocol_addr,
            Some(source_hardware_addr),
        );
    }
}
