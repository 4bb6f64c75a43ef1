//! TCP over a device with segmentation and checksum offload, on the simulated wire: a test
//! device cuts the large segments the stack hands it into MSS-sized ones and completes the
//! partial checksums, as the kernel does behind an AF_PACKET socket with virtio-net headers,
//! checking every request on the way (a large segment must ask for a partial TCP checksum,
//! name its headers exactly and fit an IPv4 packet). The wire then loses, duplicates and
//! reorders the segments as it would any. Retransmission, SACK recovery and Nagle must work
//! as they do without the offload.

mod common;

use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimWire};
use bypass_devices::{Device, DeviceCaps, DeviceStats, FrameChecksum, FrameOffload};
use bypass_inet::{Stack, TcpConfig};
use bypass_runtime::{Buffer, BufferPool, Clock, Instant, PoolConfig};
use bypass_wire::{Ipv4Address, TcpPacket};
use common::{addr, config, IP_A, IP_B, MAC_A, MAC_B};

/// A simulated port that offers TCP segmentation offload, doing the cutting itself.
struct SegmentingPort {
    inner: SimPort,
    large: BufferPool,
    /// Large segments cut so far.
    cut: u64,
}

impl SegmentingPort {
    fn new(inner: SimPort) -> SegmentingPort {
        SegmentingPort {
            inner,
            large: BufferPool::new(&PoolConfig {
                chunk_size: 68 << 10,
                chunks: 32,
                headroom: 128,
                huge_pages: false,
            })
            .unwrap(),
            cut: 0,
        }
    }

    /// The frame as the wire gets it: `frame` with its TCP checksum completed.
    fn complete(&self, frame: &[u8], offload: &FrameOffload) -> Buffer {
        assert_eq!(
            offload.checksum,
            FrameChecksum::Partial {
                start: 34,
                offset: 16
            },
            "only TCP/IPv4 checksums are asked for"
        );
        let mut out = self.inner.pool().alloc_copy(frame).expect("wire pool");
        let ip = &frame[14..34];
        let (src, dst) = (addr_of(&ip[12..16]), addr_of(&ip[16..20]));
        // The field holds the pseudo-header sum: a full software checksum replaces it.
        TcpPacket::new_unchecked(&mut out.as_mut_slice()[34..]).fill_checksum(src, dst);
        out
    }

    /// Cuts a large segment as Linux's GSO does (`tcp_gso_segment`): the headers copied in
    /// front of each piece, IPv4 length, identification and checksum, TCP sequence number
    /// and checksum per piece, FIN and PSH on the last only.
    fn cut(&mut self, frame: &[u8], offload: &FrameOffload) -> Vec<Buffer> {
        let h = offload.header_len as usize;
        let mss = offload.tcp_segment_size as usize;
        assert!(
            matches!(
                offload.checksum,
                FrameChecksum::Partial {
                    start: 34,
                    offset: 16
                }
            ),
            "a large segment asks for a partial TCP checksum: {offload:?}"
        );
        let tcp_header_len = (frame[34 + 12] >> 4) as usize * 4;
        assert_eq!(
            h,
            34 + tcp_header_len,
            "header_len names the headers exactly"
        );
        assert!(frame.len() - 14 <= 65535, "an IPv4 packet");
        let payload = &frame[h..];
        assert!(
            payload.len() > mss,
            "a large segment carries more than one MSS"
        );
        let (src, dst) = (addr_of(&frame[26..30]), addr_of(&frame[30..34]));
        let seq = u32::from_be_bytes(frame[38..42].try_into().unwrap());
        let id = u16::from_be_bytes([frame[18], frame[19]]);
        let pieces: Vec<&[u8]> = payload.chunks(mss).collect();
        let last = pieces.len() - 1;
        self.cut += 1;
        pieces
            .iter()
            .enumerate()
            .map(|(k, piece)| {
                let mut b = self.inner.pool().alloc().expect("wire pool");
                b.extend_from_slice(&frame[..h]);
                b.extend_from_slice(piece);
                let s = b.as_mut_slice();
                assert!(
                    s.len() - 14 <= self.inner.caps().mtu,
                    "a piece fits the MTU"
                );
                let total = (s.len() - 14) as u16;
                s[16..18].copy_from_slice(&total.to_be_bytes());
                s[18..20].copy_from_slice(&id.wrapping_add(k as u16).to_be_bytes());
                s[24..26].fill(0);
                let sum = bypass_wire::checksum::checksum(&s[14..34]);
                s[24..26].copy_from_slice(&sum.to_be_bytes());
                let piece_seq = seq.wrapping_add((k * mss) as u32);
                s[38..42].copy_from_slice(&piece_seq.to_be_bytes());
                if k != last {
                    s[34 + 13] &= !0x09; // FIN, PSH
                }
                TcpPacket::new_unchecked(&mut s[34..]).fill_checksum(src, dst);
                b
            })
            .collect()
    }
}

fn addr_of(b: &[u8]) -> Ipv4Address {
    Ipv4Address(b.try_into().unwrap())
}

impl Device for SegmentingPort {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        self.inner.rx_burst(frames, max)
    }
    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        self.inner.tx_burst(frames)
    }
    fn tx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
    ) -> usize {
        assert_eq!(frames.len(), offloads.len());
        let mut wire = Vec::new();
        for (frame, offload) in frames.iter().zip(offloads.iter()) {
            if offload.tcp_segment_size > 0 {
                wire.extend(self.cut(frame, offload));
            } else if offload.checksum != FrameChecksum::Software {
                wire.push(self.complete(frame, offload));
            } else {
                assert!(frame.len() - 14 <= self.inner.caps().mtu);
                wire.push(frame.clone());
            }
        }
        let n = frames.len();
        frames.clear();
        offloads.clear();
        self.inner.tx_burst(&mut wire);
        n
    }
    fn pool(&self) -> &BufferPool {
        self.inner.pool()
    }
    fn large_frame_pool(&self) -> Option<&BufferPool> {
        Some(&self.large)
    }
    fn mac(&self) -> [u8; 6] {
        self.inner.mac()
    }
    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            frame_offloads: true,
            tcp_segmentation_max: 65535,
            ..self.inner.caps()
        }
    }
    fn stats(&self) -> DeviceStats {
        self.inner.stats()
    }
}

struct Pair {
    clock: Clock,
    wire: SimWire,
    a: Stack<SegmentingPort>,
    b: Stack<SegmentingPort>,
}

impl Pair {
    fn new(wire: SimConfig, tcp: TcpConfig) -> Pair {
        let clock = Clock::virtual_at(Instant::from_millis(1));
        let seed = wire.seed;
        let wire = SimWire::new(clock.clone(), wire).unwrap();
        let port = |mac| SegmentingPort::new(wire.port(mac).unwrap());
        let (mut ca, mut cb) = (config(IP_A, seed), config(IP_B, seed));
        ca.tcp = tcp.clone();
        cb.tcp = tcp;
        Pair {
            a: Stack::new(port(MAC_A), ca),
            b: Stack::new(port(MAC_B), cb),
            clock,
            wire,
        }
    }

    /// Polls both stacks, then moves the clock to the next event.
    fn step(&mut self) {
        for _ in 0..1000 {
            let now = self.clock.now();
            let progress = self.a.poll(now) | self.b.poll(now);
            if !progress {
                break;
            }
        }
        let next = [
            self.a.poll_at(),
            self.b.poll_at(),
            self.wire.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min();
        let now = self.clock.now();
        let to = next.unwrap_or(now + Duration::from_millis(1));
        self.clock
            .advance_to(to.max(now + Duration::from_micros(1)));
    }
}

/// Byte `i` of the stream.
fn pattern(i: usize) -> u8 {
    ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Sends `total` bytes from A to B, checking every byte at B; returns the virtual time it took.
fn transfer(p: &mut Pair, total: usize) -> Duration {
    let start = p.clock.now();
    let l = p.b.tcp_listen(addr(IP_B, 80), 4).unwrap();
    let h = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
    let app = BufferPool::new(&PoolConfig::large(16)).unwrap();
    let (mut sent, mut got) = (0, 0);
    let mut hb = None;
    while got < total {
        assert!(
            p.clock.now() - start < Duration::from_secs(600),
            "{got} of {total} bytes after 600 s of virtual time"
        );
        if sent < total {
            if let Some(mut b) = app.alloc() {
                let n = (total - sent).min(b.tailroom());
                for (k, byte) in b.append(n).iter_mut().enumerate() {
                    *byte = pattern(sent + k);
                }
                if let Ok(n) = p.a.tcp_send(h, &b) {
                    sent += n;
                }
            }
        }
        if hb.is_none() {
            hb = p.b.tcp_accept(l).unwrap().map(|(h, _)| h);
        }
        if let Some(hb) = hb {
            while let Some(b) = p.b.tcp_recv(hb).unwrap() {
                for (k, &byte) in b.iter().enumerate() {
                    assert_eq!(byte, pattern(got + k), "byte {}", got + k);
                }
                got += b.len();
            }
        }
        p.step();
    }
    p.clock.now() - start
}

#[test]
fn a_stream_over_a_lossy_reordering_wire_arrives_whole_with_large_segments() {
    for seed in 1..=6 {
        let wire = SimConfig {
            seed,
            loss: 0.02,
            reorder: 0.02,
            duplicate: 0.01,
            delay: Duration::from_micros(50),
            bandwidth_bps: Some(10_000_000_000),
            max_in_flight: 4096,
            rx_queue: 4096,
            ..SimConfig::default()
        };
        let mut p = Pair::new(wire, TcpConfig::default());
        let took = transfer(&mut p, 8 << 20);
        let (a, b) = (p.a.stats(), p.b.stats());
        eprintln!(
            "seed {seed}: {took:?}, {} large of {} segments, {} retransmits, {} fast, {} RTOs, \
             cut {}",
            a.tcp_tx_large_segments,
            a.tcp_tx_segments,
            a.tcp_retransmits,
            a.tcp_fast_retransmits,
            a.tcp_rto_expired,
            p.a.device().cut
        );
        assert!(
            a.tcp_tx_large_segments > 0,
            "seed {seed}: large segments sent"
        );
        assert_eq!(a.tcp_tx_large_segments, p.a.device().cut);
        assert!(a.tcp_retransmits > 0, "seed {seed}: the wire lost segments");
        assert!(
            a.tcp_fast_retransmits > 0,
            "seed {seed}: SACK recovery, not only timeouts"
        );
        assert_eq!(
            b.tcp_rx_large_segments, 0,
            "the wire carries MSS-sized segments"
        );
    }
}

#[test]
fn a_clean_wire_carries_a_stream_in_large_segments_without_retransmissions() {
    let wire = SimConfig {
        seed: 7,
        delay: Duration::from_micros(50),
        bandwidth_bps: Some(10_000_000_000),
        max_in_flight: 4096,
        rx_queue: 4096,
        ..SimConfig::default()
    };
    let mut p = Pair::new(wire, TcpConfig::default());
    transfer(&mut p, 8 << 20);
    let a = p.a.stats();
    assert_eq!(a.tcp_retransmits, 0);
    // Most of the stream leaves in large segments: far fewer segments than MSS-sized pieces.
    let mss = p.a.tcp_config().mss as u64;
    assert!(
        a.tcp_tx_segments < (8 << 20) / mss / 4,
        "{} segments for {} MSS-sized pieces",
        a.tcp_tx_segments,
        (8 << 20) / mss
    );
}

/// Nagle (RFC 9293 §3.7.4) with large segments: the full-sized part of what is queued goes
/// at once in one large segment; the short tail waits for the acknowledgment, as it would
/// behind MSS-sized segments.
#[test]
fn nagle_holds_the_short_tail_of_a_large_segment_until_the_ack() {
    for nagle in [true, false] {
        let wire = SimConfig {
            seed: 3,
            delay: Duration::from_millis(1),
            ..SimConfig::default()
        };
        let tcp = TcpConfig {
            nagle,
            ..TcpConfig::default()
        };
        let mut p = Pair::new(wire, tcp);
        let l = p.b.tcp_listen(addr(IP_B, 80), 4).unwrap();
        let h = p.a.tcp_connect(None, addr(IP_B, 80)).unwrap();
        while p.b.tcp_accept(l).unwrap().is_none() {
            p.step();
        }
        // Settle the handshake's last ACK.
        for _ in 0..10 {
            p.step();
        }
        let mss = p.a.tcp_info(h).unwrap().cwnd / 10;
        let queued = 5 * mss + 100;
        let app = BufferPool::new(&PoolConfig::large(4)).unwrap();
        let mut b = app.alloc().unwrap();
        b.append(queued).fill(7);
        assert_eq!(p.a.tcp_send(h, &b).unwrap(), queued);
        p.a.poll(p.clock.now());
        let info = p.a.tcp_info(h).unwrap();
        let want = if nagle { 5 * mss } else { queued };
        assert_eq!(info.in_flight, want, "nagle {nagle}: sent before any ACK");
        assert_eq!(p.a.stats().tcp_tx_large_segments, 1, "in one large segment");
        // Once acknowledged, the tail goes too.
        for _ in 0..50 {
            p.step();
        }
        let info = p.a.tcp_info(h).unwrap();
        assert_eq!((info.in_flight, info.send_queued), (0, 0), "nagle {nagle}");
    }
}
