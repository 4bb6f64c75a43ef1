//! AF_PACKET with PACKET_MMAP rings: raw Ethernet frames of one interface through memory shared
//! with the kernel.
//!
//! Two sockets, both bound to the interface:
//! - **RX**: bound to `ETH_P_ALL`, with an RX ring in one of two formats:
//!   - [`RxRing::V2`] (default): one frame per slot, handed over as soon as it is written.
//!     Lowest latency: polling the ring costs no system call.
//!   - [`RxRing::V3`]: variable-size frames packed into blocks; a block is handed over when it
//!     fills or when its retire timer (at least 1 ms) fires. Fewer cache misses per frame at
//!     high rates, but a lone frame waits for the timer: measured here, a V3 receiver behind a
//!     1 ms timeout adds ~2 ms to a round trip against a raw socket, and two of them (one at
//!     each end, both threads spinning on pinned cores) give a ~20 ms round trip. A throughput
//!     option only.
//!
//!   Frames this host sends are not looped back (`PACKET_IGNORE_OUTGOING`, and a check of
//!   `sll_pkttype`). Received frames are copied out of the ring into [`Buffer`]s of the device's
//!   pool and the slot is handed back at once, so a slow consumer never stalls the ring.
//! - **TX**: a TPACKET_V2 TX ring with `PACKET_QDISC_BYPASS` (frames go straight to the driver,
//!   no qdisc) and `PACKET_LOSS` (a malformed frame is skipped, not retried forever). Frames are
//!   copied from the caller's buffers into ring slots; one `sendto()` sends every slot queued.
//!
//! Frames the local kernel sent with checksum offload reach the ring with an incomplete
//! checksum (`TP_STATUS_CSUMNOTREADY`); the test topology turns that offload off.
//!
//! # Offloads: virtio-net headers
//!
//! With [`PacketConfig::offload`] (on by default when the kernel takes it) both sockets are
//! switched to `PACKET_VNET_HDR`: every frame in either ring, and every datagram sent or
//! received on them, has a 10-byte `struct virtio_net_hdr` in front (see `vnet.rs`). Through
//! it the device offers the stack, per frame ([`crate::FrameOffload`]):
//! - **checksum offload**: a TCP or UDP checksum holding only its pseudo-header sum is
//!   completed by the kernel (in software when the interface cannot: the copy that cuts a
//!   large segment sums as it copies);
//! - **TCP segmentation offload**: a TCP/IPv4 frame of up to 64 KiB with a segment size goes
//!   to the kernel whole, which cuts it into MTU-sized segments (on veth the cutting happens
//!   at the sending end unless the pair has `tso` on, in which case the peer receives the
//!   packet whole, as the kernel's own TCP's);
//! - **receive metadata**: a frame whose checksum the sending host never computed (the
//!   kernel's own TCP with checksum offload, on the same host) or that was verified already
//!   is marked so, and the stack skips verifying it; a frame larger than the MTU (a sender's
//!   segmentation left it whole) is delivered whole.
//!
//! Large frames live in a second pool of large chunks ([`PacketConfig::large_pool`],
//! [`Device::large_frame_pool`]); ordinary frames stay in the 2 KiB chunks of the first, so
//! the memory an idle connection pins does not grow. The rings keep their geometry:
//! - a large frame to send does not go through the TX ring (whose slots stay small) but
//!   through `sendmsg` on the RX socket, which has no TX ring: header and frame gathered,
//!   one copy by the kernel, one system call per up to 64 KiB; frames queued in the ring
//!   before it are sent first;
//! - a large frame received does not fit its V2 RX slot either: with `PACKET_COPY_THRESH` the
//!   kernel marks the slot `TP_STATUS_COPY` and queues the whole packet on the socket (a
//!   reference, not a copy, bounded by the socket's receive buffer), and the device reads it
//!   with `recvmsg` straight into a large chunk. V3 blocks of 128 KiB or more hold it as is.
//!
//! Frames received through plain [`Device::rx_burst`] are complete: a partial checksum is
//! completed in software before the frame is handed over.
//!
//! Unlike AF_XDP, a packet socket gets a copy: the kernel's own stack still sees every received
//! frame. Run the user-space stack on an address the kernel does not have (see
//! [`crate::topo`]), and name it in [`PacketConfig::owned_address`]: a tcx ingress BPF program
//! then drops the frames for it after the packet socket has its copy, so the kernel neither
//! answers them (an ARP reply, a RST) nor spends its IP input on them. In a one-connection bulk
//! echo of 64 KiB messages between two packet devices over veth, that raised throughput from
//! 237-249 to 300-330 MB/s and cut p99 latency from ~1 ms to ~0.3 ms (the kernel's IP input
//! ran on the sending CPU for every frame).

mod ring;
mod vnet;

use std::os::fd::OwnedFd;

use bypass_runtime::{Buffer, BufferPool, PoolConfig};

use crate::sys::os::{self, Mmap};
use crate::{Device, DeviceCaps, DeviceError, DeviceStats, ErrorKind, FrameChecksum, FrameOffload};
use ring::{Slots, SockaddrLl, TpacketReq, TpacketReq3};

const NEEDS: &str = "root or CAP_NET_RAW";
const INSTEAD: &str = "try --libos xdp, --libos tap or --libos kernel";
const ETH_P_ALL: u16 = 0x0003;
const ETH_HLEN: usize = 14;
const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_TX_RING: libc::c_int = 13;
const PACKET_LOSS: libc::c_int = 14;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_COPY_THRESH: libc::c_int = 7;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// Ring blocks are this large (a multiple of the page size and of every allowed frame size).
const BLOCK: usize = 64 << 10;
/// The largest IPv4 packet (its total length field is 16 bits): the most a frame handed to
/// the kernel for segmentation, or received whole, carries after its Ethernet header.
const IPV4_MAX_PACKET: usize = 65535;
/// With offloads, the RX socket's receive buffer: what the kernel may hold of large packets
/// that did not fit their ring slot until the device reads them (a few dozen of 64 KiB).
const LARGE_RX_QUEUE_BYTES: i32 = 8 << 20;
/// A V3 block must hold a whole large packet with its headers to receive it.
const V3_LARGE_BLOCK_MIN: u32 = 128 << 10;

/// The RX ring format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxRing {
    /// TPACKET_V2 with `frames` slots of [`PacketConfig::frame_size`] bytes (latency).
    V2 { frames: u32 },
    /// TPACKET_V3 with `blocks` blocks of `block_size` bytes, each retired after `timeout_ms`
    /// (at least 1) if it has not filled (throughput).
    V3 {
        block_size: u32,
        blocks: u32,
        timeout_ms: u32,
    },
}

/// Whether the device exchanges frames with the kernel behind virtio-net headers
/// (`PACKET_VNET_HDR`), for checksum and TCP segmentation offload (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// Plain frames: software computes and verifies every checksum and sends segments of at
    /// most the MTU.
    Off,
    /// Offloads if the kernel takes `PACKET_VNET_HDR` on both sockets; plain frames, with a
    /// warning in the log, if it refuses.
    Auto,
    /// Offloads, or [`AfPacket::open`] fails saying why.
    Required,
}

/// The name our tcx ingress program is loaded under (what `bpftool prog` lists).
const INGRESS_PROGRAM_NAME: &str = "bypass_ingress";

/// How to open an AF_PACKET device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketConfig {
    /// The interface, in the calling thread's network namespace.
    pub interface: String,
    pub rx: RxRing,
    /// TX ring slots.
    pub tx_frames: u32,
    /// Bytes per ring slot (header included): a power of two from 2048 to 65536.
    pub frame_size: u32,
    /// Hand frames straight to the driver, skipping the qdisc layer.
    pub qdisc_bypass: bool,
    /// The pool received frames are copied into.
    pub pool: PoolConfig,
    /// Checksum and TCP segmentation offload through virtio-net headers.
    pub offload: Offload,
    /// With offloads: the pool of large chunks for frames over the MTU (the large segments
    /// the stack sends, the large packets the device receives). Each chunk must hold a
    /// 65535-byte IPv4 packet and its Ethernet header after the headroom.
    pub large_pool: PoolConfig,
    /// The IPv4 address the user-space stack owns on this interface, if any. Frames for it
    /// (IPv4 packets to it, ARP asking for it) are then dropped at the interface's tcx ingress
    /// by a BPF program of ours ([`crate::bpf::ingress_drop_program`]), after this device's
    /// socket has taken its copy: the kernel's own stack neither spends time on them (its IP
    /// input ran on every frame before, on the sending CPU under veth) nor answers them.
    /// Best effort: without tcx (Linux < 6.6) or the privilege to attach, the device works as
    /// before and [`AfPacket::ingress_filter`] says `false`. The program is detached when the
    /// device drops or the process dies (it hangs on a BPF link, not on the interface).
    pub owned_address: Option<[u8; 4]>,
}

impl PacketConfig {
    /// Defaults for latency: V2 RX ring of 1024 frames, 256 TX frames, qdisc bypass, a pool of
    /// 4096 frames of 2 KiB; offloads if the kernel takes them, with a pool of 64 large
    /// chunks of 68 KiB (4.25 MiB).
    pub fn new(interface: &str) -> PacketConfig {
        PacketConfig {
            interface: interface.to_string(),
            rx: RxRing::V2 { frames: 1024 },
            tx_frames: 256,
            frame_size: 2048,
            qdisc_bypass: true,
            pool: PoolConfig::frames(4096),
            offload: Offload::Auto,
            large_pool: PoolConfig {
                chunk_size: 68 << 10,
                chunks: 64,
                headroom: 128,
                huge_pages: false,
            },
            owned_address: None,
        }
    }

    /// The same with a TPACKET_V3 RX ring: 16 blocks of 256 KiB, retired after 1 ms.
    pub fn throughput(interface: &str) -> PacketConfig {
        PacketConfig {
            rx: RxRing::V3 {
                block_size: 256 << 10,
                blocks: 16,
                timeout_ms: 1,
            },
            ..PacketConfig::new(interface)
        }
    }

    fn validate(&self) -> Result<(), DeviceError> {
        let bad = |msg: String| {
            Err(DeviceError::new(
                ErrorKind::InvalidConfig,
                format!("AF_PACKET configuration for {}", self.interface),
                msg,
            ))
        };
        if !self.frame_size.is_power_of_two() || !(2048..=65536).contains(&self.frame_size) {
            return bad(format!(
                "frame_size {} must be a power of two from 2048 to 65536",
                self.frame_size
            ));
        }
        if self.tx_frames == 0 || self.tx_frames > 1 << 16 {
            return bad(format!("tx_frames {} must be 1 to 65536", self.tx_frames));
        }
        match self.rx {
            RxRing::V2 { frames } if frames == 0 || frames > 1 << 16 => {
                return bad(format!("RX frames {frames} must be 1 to 65536"))
            }
            RxRing::V3 {
                block_size,
                blocks,
                timeout_ms,
            } => {
                if !block_size.is_power_of_two()
                    || block_size < self.frame_size
                    || block_size > 4 << 20
                {
                    return bad(format!(
                        "V3 block_size {block_size} must be a power of two from frame_size to 4 MiB"
                    ));
                }
                if blocks == 0 || blocks > 1024 || timeout_ms == 0 {
                    return bad(format!(
                        "V3 blocks {blocks} must be 1 to 1024 and timeout_ms at least 1"
                    ));
                }
            }
            _ => {}
        }
        if self.pool.chunk_size < self.pool.headroom + ETH_HLEN + 1500 {
            return bad("pool chunks must hold a 1514-byte frame after their headroom".to_string());
        }
        if self.offload != Offload::Off {
            let large = &self.large_pool;
            if large.chunks == 0 || large.chunk_size < large.headroom + ETH_HLEN + IPV4_MAX_PACKET {
                return bad(format!(
                    "with offloads, large_pool needs chunks that hold a {}-byte frame after \
                     their headroom ({} + {} bytes or more); set offload to Off to go without",
                    ETH_HLEN + IPV4_MAX_PACKET,
                    large.headroom,
                    ETH_HLEN + IPV4_MAX_PACKET
                ));
            }
            if let RxRing::V3 { block_size, .. } = self.rx {
                if block_size < V3_LARGE_BLOCK_MIN {
                    return bad(format!(
                        "with offloads, V3 blocks of {block_size} bytes cannot hold a 64 KiB \
                         packet: use {V3_LARGE_BLOCK_MIN} or more, or set offload to Off"
                    ));
                }
            }
        }
        Ok(())
    }
}

fn os_err(what: String) -> impl FnOnce(std::io::Error) -> DeviceError {
    move |e| DeviceError::os(what, e, NEEDS, INSTEAD)
}

/// Whether this kernel lets an AF_PACKET socket exchange frames behind virtio-net headers,
/// which the checksum and segmentation offloads ([`Offload`]) need: `Ok` if it does; the error
/// of `socket` (CAP_NET_RAW is needed) or of `setsockopt(PACKET_VNET_HDR)` if not.
pub fn probe_offloads() -> std::io::Result<()> {
    let fd = os::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    os::setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1i32)
}

/// Switches both sockets to virtio-net headers, or neither.
fn enable_vnet_headers(rx_fd: &OwnedFd, tx_fd: &OwnedFd) -> std::io::Result<()> {
    os::setsockopt(rx_fd, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
    if let Err(e) = os::setsockopt(tx_fd, SOL_PACKET, PACKET_VNET_HDR, &1i32) {
        let _ = os::setsockopt(rx_fd, SOL_PACKET, PACKET_VNET_HDR, &0i32);
        return Err(e);
    }
    Ok(())
}

/// Where the RX cursor is.
enum RxState {
    V2 {
        frames: Slots,
        next: usize,
    },
    V3 {
        blocks: Slots,
        block: usize,
        /// Packets of `block` already taken, and the offset of the next one.
        taken: u32,
        offset: usize,
    },
}

/// A network interface driven through AF_PACKET rings.
pub struct AfPacket {
    rx: RxState,
    tx: Slots,
    tx_next: usize,
    /// Frames were queued but the kernel has not been told yet (a kick failed or was deferred).
    tx_kick_pending: bool,
    pool: BufferPool,
    /// With offloads: chunks for frames over the MTU.
    large_pool: Option<BufferPool>,
    /// Both sockets exchange frames behind a virtio-net header (offloads are on).
    vnet: bool,
    mac: [u8; 6],
    mtu: usize,
    stats: DeviceStats,
    /// Frames the kernel dropped for a full RX ring (`PACKET_STATISTICS` resets on each read,
    /// so its counts are summed here).
    kernel_drops: std::cell::Cell<u64>,
    interface: String,
    // Rings point into these mappings; sockets close after them.
    _rx_map: Mmap,
    _tx_map: Mmap,
    rx_fd: OwnedFd,
    tx_fd: OwnedFd,
    /// The BPF link of the tcx ingress filter ([`PacketConfig::owned_address`]), if attached.
    ingress_filter: Option<OwnedFd>,
}

impl AfPacket {
    /// Opens the interface named in `config` (in the calling thread's network namespace).
    pub fn open(config: &PacketConfig) -> Result<AfPacket, DeviceError> {
        config.validate()?;
        let name = &config.interface;
        let what = |step: &str| format!("AF_PACKET {step} on {name}");
        let ifindex = os::if_index(name).map_err(os_err(what("device open")))?;
        let mac = os::if_hwaddr(name).map_err(os_err(what("reading the MAC address")))?;
        let mtu = os::if_mtu(name).map_err(os_err(what("reading the MTU")))?;
        let frame_size = config.frame_size as usize;
        if mtu + ETH_HLEN + ring::V3_HDR_LEN + 32 + vnet::LEN > frame_size {
            return Err(DeviceError::new(
                ErrorKind::InvalidConfig,
                what("configuration"),
                format!(
                    "MTU {mtu} does not fit a ring frame of {frame_size} bytes; raise frame_size"
                ),
            ));
        }
        let pool = BufferPool::new(&config.pool).map_err(os_err(what("buffer pool allocation")))?;

        // RX socket: protocol 0 until bound, so it queues nothing before its ring exists.
        let rx_fd = os::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)
            .map_err(os_err(what("socket creation")))?;
        // TX socket: bound with protocol 0, so it receives nothing.
        let tx_fd = os::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)
            .map_err(os_err(what("socket creation")))?;
        // Virtio-net headers must be chosen before the rings exist (the kernel says EBUSY
        // after).
        let vnet = match config.offload {
            Offload::Off => false,
            Offload::Auto => match enable_vnet_headers(&rx_fd, &tx_fd) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        interface = %name,
                        "no checksum or segmentation offload: the kernel refused \
                         PACKET_VNET_HDR ({e}); frames go plain"
                    );
                    false
                }
            },
            Offload::Required => {
                enable_vnet_headers(&rx_fd, &tx_fd).map_err(|e| {
                    DeviceError::new(
                        ErrorKind::Unsupported,
                        what("offload setup"),
                        format!(
                            "setsockopt(SOL_PACKET, PACKET_VNET_HDR) failed: {e}; this kernel \
                             cannot offload checksums or segmentation to packet sockets, set \
                             the offload to Off or Auto"
                        ),
                    )
                })?;
                true
            }
        };
        let large_pool = if vnet {
            // Large packets that do not fit an RX slot wait whole in the socket's queue.
            os::setsockopt(&rx_fd, SOL_PACKET, PACKET_COPY_THRESH, &1i32)
                .map_err(os_err(what("PACKET_COPY_THRESH")))?;
            if os::setsockopt(
                &rx_fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &LARGE_RX_QUEUE_BYTES,
            )
            .is_err()
            {
                // Without CAP_NET_ADMIN: as much as net.core.rmem_max allows.
                let _ = os::setsockopt(
                    &rx_fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &LARGE_RX_QUEUE_BYTES,
                );
            }
            Some(
                BufferPool::new(&config.large_pool)
                    .map_err(os_err(what("large buffer pool allocation")))?,
            )
        } else {
            None
        };
        let (rx_map, rx) = match config.rx {
            RxRing::V2 { frames } => {
                os::setsockopt(&rx_fd, SOL_PACKET, PACKET_VERSION, &ring::TPACKET_V2)
                    .map_err(os_err(what("TPACKET_V2 selection")))?;
                let per_block = BLOCK / frame_size;
                let blocks = (frames as usize).div_ceil(per_block);
                let req = TpacketReq {
                    block_size: BLOCK as u32,
                    block_nr: blocks as u32,
                    frame_size: frame_size as u32,
                    frame_nr: (blocks * per_block) as u32,
                };
                os::setsockopt(&rx_fd, SOL_PACKET, PACKET_RX_RING, &req)
                    .map_err(os_err(what("RX ring setup")))?;
                let map = Mmap::shared(&rx_fd, blocks * BLOCK, 0)
                    .map_err(os_err(what("RX ring mmap")))?;
                let frames = Slots::new(&map, 0, frame_size, blocks * per_block);
                (map, RxState::V2 { frames, next: 0 })
            }
            RxRing::V3 {
                block_size,
                blocks,
                timeout_ms,
            } => {
                os::setsockopt(&rx_fd, SOL_PACKET, PACKET_VERSION, &ring::TPACKET_V3)
                    .map_err(os_err(what("TPACKET_V3 selection")))?;
                let req = TpacketReq3 {
                    block_size,
                    block_nr: blocks,
                    frame_size: frame_size as u32,
                    frame_nr: blocks * (block_size / frame_size as u32),
                    retire_blk_tov: timeout_ms,
                    sizeof_priv: 0,
                    feature_req_word: 0,
                };
                os::setsockopt(&rx_fd, SOL_PACKET, PACKET_RX_RING, &req)
                    .map_err(os_err(what("RX ring setup")))?;
                let len = block_size as usize * blocks as usize;
                let map = Mmap::shared(&rx_fd, len, 0).map_err(os_err(what("RX ring mmap")))?;
                let blocks = Slots::new(&map, 0, block_size as usize, blocks as usize);
                (
                    map,
                    RxState::V3 {
                        blocks,
                        block: 0,
                        taken: 0,
                        offset: 0,
                    },
                )
            }
        };
        // Best effort: kernels before 4.20 lack it, and `sll_pkttype` is checked anyway.
        let _ = os::setsockopt(&rx_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32);
        let addr = SockaddrLl {
            family: libc::AF_PACKET as u16,
            protocol: ETH_P_ALL.to_be(),
            ifindex: ifindex as i32,
            ..SockaddrLl::default()
        };
        os::bind(&rx_fd, &addr).map_err(os_err(what("RX socket bind")))?;

        os::setsockopt(&tx_fd, SOL_PACKET, PACKET_VERSION, &ring::TPACKET_V2)
            .map_err(os_err(what("TPACKET_V2 selection")))?;
        if config.qdisc_bypass {
            os::setsockopt(&tx_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &1i32)
                .map_err(os_err(what("qdisc bypass")))?;
        }
        // (Large frames leave through the RX socket, never with PACKET_QDISC_BYPASS: the
        // direct transmit it selects drops a packet the kernel had to cut in software,
        // `skb != orig_skb` in `__dev_direct_xmit`, measured as ENOBUFS on veth.)
        os::setsockopt(&tx_fd, SOL_PACKET, PACKET_LOSS, &1i32)
            .map_err(os_err(what("PACKET_LOSS")))?;
        let per_block = BLOCK / frame_size;
        let blocks = (config.tx_frames as usize).div_ceil(per_block);
        let req = TpacketReq {
            block_size: BLOCK as u32,
            block_nr: blocks as u32,
            frame_size: frame_size as u32,
            frame_nr: (blocks * per_block) as u32,
        };
        os::setsockopt(&tx_fd, SOL_PACKET, PACKET_TX_RING, &req)
            .map_err(os_err(what("TX ring setup")))?;
        let tx_map =
            Mmap::shared(&tx_fd, blocks * BLOCK, 0).map_err(os_err(what("TX ring mmap")))?;
        let tx = Slots::new(&tx_map, 0, frame_size, blocks * per_block);
        let addr = SockaddrLl {
            family: libc::AF_PACKET as u16,
            protocol: 0,
            ifindex: ifindex as i32,
            ..SockaddrLl::default()
        };
        os::bind(&tx_fd, &addr).map_err(os_err(what("TX socket bind")))?;

        let ingress_filter = config.owned_address.and_then(|ip| {
            let attached = crate::bpf::load_program(
                crate::bpf::ProgramKind::SchedCls,
                INGRESS_PROGRAM_NAME,
                &crate::bpf::ingress_drop_program(ip),
            )
            .and_then(|prog| crate::bpf::attach_tcx_ingress(&prog, ifindex));
            match attached {
                Ok(link) => Some(link),
                Err(e) => {
                    tracing::warn!(
                        interface = %name,
                        "no tcx ingress filter for our address ({e}); the kernel's stack will \
                         also process every frame sent to it"
                    );
                    None
                }
            }
        });
        Ok(AfPacket {
            rx,
            tx,
            tx_next: 0,
            tx_kick_pending: false,
            pool,
            large_pool,
            vnet,
            mac,
            mtu,
            stats: DeviceStats::default(),
            kernel_drops: std::cell::Cell::new(0),
            interface: name.clone(),
            _rx_map: rx_map,
            _tx_map: tx_map,
            rx_fd,
            tx_fd,
            ingress_filter,
        })
    }

    /// Whether frames for [`PacketConfig::owned_address`] are kept from the kernel's stack.
    pub fn ingress_filter(&self) -> bool {
        self.ingress_filter.is_some()
    }

    /// The interface this device drives.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Receives up to `max` frames into `frames`; with `offloads`, the offload of each goes
    /// there, else partial checksums are completed.
    fn receive(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: Option<&mut Vec<FrameOffload>>,
        max: usize,
    ) -> usize {
        let before = frames.len();
        let vnet = self.vnet;
        let mut sink = RxSink {
            pool: &self.pool,
            large_pool: self.large_pool.as_ref(),
            stats: &mut self.stats,
            frames,
            offloads,
        };
        // The virtio-net header sits right before the frame, at `mac - vnet::LEN`.
        let offload_at = |bytes: &[u8], mac: usize| -> FrameOffload {
            if vnet {
                vnet::decode(bytes[mac - vnet::LEN..mac].try_into().expect("10 bytes"))
            } else {
                FrameOffload::default()
            }
        };
        let head_len = if vnet { vnet::LEN } else { 0 };
        match &mut self.rx {
            RxState::V2 { frames: ring, next } => {
                while sink.frames.len() - before < max {
                    let status = ring.status(*next, 0);
                    if status & ring::TP_STATUS_USER == 0 {
                        break;
                    }
                    let slot = ring.bytes(*next);
                    let len = ring::u32_at(slot, 4) as usize;
                    let snaplen = ring::u32_at(slot, 8) as usize;
                    let mac = ring::u16_at(slot, 12) as usize;
                    let pkttype = slot[ring::V2_HDR_LEN + ring::SLL_PKTTYPE];
                    let ours = pkttype != ring::PACKET_OUTGOING;
                    if vnet && status & ring::TP_STATUS_COPY != 0 {
                        // Too large for the slot: the whole packet waits in the socket's
                        // queue, in ring order. Take it off the queue even if we drop it.
                        sink.take_queued(&self.rx_fd, ours);
                    } else if !ours {
                        // Looped back from this host: not received.
                    } else if snaplen < len || mac < head_len || mac + snaplen > slot.len() {
                        sink.stats.rx_dropped += 1;
                    } else {
                        sink.deliver(&slot[mac..mac + snaplen], offload_at(slot, mac));
                    }
                    ring.set_status(*next, 0, ring::TP_STATUS_KERNEL);
                    *next = (*next + 1) % ring.count();
                }
            }
            RxState::V3 {
                blocks,
                block,
                taken,
                offset,
            } => {
                // Block header: block_status at 8, num_pkts at 12, offset_to_first_pkt at 16.
                while sink.frames.len() - before < max {
                    if blocks.status(*block, 8) & ring::TP_STATUS_USER == 0 {
                        break;
                    }
                    let bytes = blocks.bytes(*block);
                    let num_pkts = ring::u32_at(bytes, 12);
                    if *taken == 0 {
                        *offset = ring::u32_at(bytes, 16) as usize;
                    }
                    while *taken < num_pkts && sink.frames.len() - before < max {
                        let at = *offset;
                        if at + ring::V3_HDR_LEN + 20 > bytes.len() {
                            // A corrupt block: give it back whole.
                            sink.stats.rx_dropped += (num_pkts - *taken) as u64;
                            *taken = num_pkts;
                            break;
                        }
                        let next_offset = ring::u32_at(bytes, at) as usize;
                        let snaplen = ring::u32_at(bytes, at + 12) as usize;
                        let len = ring::u32_at(bytes, at + 16) as usize;
                        let mac = ring::u16_at(bytes, at + 24) as usize;
                        let pkttype = bytes[at + ring::V3_HDR_LEN + ring::SLL_PKTTYPE];
                        if pkttype == ring::PACKET_OUTGOING {
                        } else if snaplen < len
                            || mac < head_len
                            || at + mac + snaplen > bytes.len()
                        {
                            sink.stats.rx_dropped += 1;
                        } else {
                            let packet = &bytes[at..];
                            sink.deliver(&packet[mac..mac + snaplen], offload_at(packet, mac));
                        }
                        *taken += 1;
                        *offset = at + next_offset;
                        if next_offset == 0 && *taken < num_pkts {
                            sink.stats.rx_dropped += (num_pkts - *taken) as u64;
                            *taken = num_pkts;
                        }
                    }
                    if *taken < num_pkts {
                        break; // `max` reached inside the block; resume here next call.
                    }
                    blocks.set_status(*block, 8, ring::TP_STATUS_KERNEL);
                    *block = (*block + 1) % blocks.count();
                    *taken = 0;
                    *offset = 0;
                }
            }
        }
        sink.frames.len() - before
    }

    /// Sends frames from the front of `frames` (with `offloads`, each with its offload).
    fn transmit(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: Option<&mut Vec<FrameOffload>>,
    ) -> usize {
        let head_len = if self.vnet { vnet::LEN } else { 0 };
        let room = self.tx.slot_size() - ring::V2_HDR_LEN - head_len;
        let max_frame = (self.mtu + ETH_HLEN).min(room);
        let mut taken = 0;
        let mut queued = 0;
        for (i, frame) in frames.iter().enumerate() {
            let offload = offloads
                .as_deref()
                .map_or(FrameOffload::default(), |o| o[i]);
            if offload.tcp_segment_size > 0 {
                // A large segment: not through the ring, whose slots are small.
                if !self.vnet
                    || frame.len() > ETH_HLEN + IPV4_MAX_PACKET
                    || !matches!(offload.checksum, FrameChecksum::Partial { .. })
                {
                    self.stats.tx_dropped += 1;
                    taken += 1;
                    continue;
                }
                // What the ring holds goes first.
                if queued > 0 || self.tx_kick_pending {
                    self.kick();
                    queued = 0;
                }
                match os::send_gathered(&self.rx_fd, &vnet::encode(&offload), frame) {
                    Ok(_) => {
                        self.stats.tx_frames += 1;
                        self.stats.tx_bytes += frame.len() as u64;
                    }
                    // The socket's send buffer is full: the rest stays with the caller.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // The kernel refused this frame or dropped it on the way out (ENOBUFS),
                    // as PACKET_LOSS skips one in the ring: it is lost, not retried.
                    Err(_) => self.stats.tx_dropped += 1,
                }
                taken += 1;
                continue;
            }
            let status = self.tx.status(self.tx_next, 0);
            if status == ring::TP_STATUS_WRONG_FORMAT {
                // The kernel refused a frame we queued earlier; it was counted as sent then.
                self.stats.tx_dropped += 1;
                self.tx
                    .set_status(self.tx_next, 0, ring::TP_STATUS_AVAILABLE);
            } else if status != ring::TP_STATUS_AVAILABLE {
                break; // Ring full: the rest stays with the caller.
            }
            taken += 1;
            let unsupported = !self.vnet && offload != FrameOffload::default();
            if frame.len() < ETH_HLEN || frame.len() > max_frame || unsupported {
                self.stats.tx_dropped += 1;
                continue;
            }
            // tp_len at 4; data at TPACKET2_HDRLEN - sizeof(struct sockaddr_ll), the virtio-net
            // header first if there is one.
            let header = if self.vnet {
                vnet::encode(&offload)
            } else {
                [0; vnet::LEN]
            };
            let tp_len = (head_len + frame.len()) as u32;
            self.tx.write(
                self.tx_next,
                ring::V2_HDR_LEN,
                &header[..head_len],
                frame,
                4,
                tp_len,
            );
            self.tx
                .set_status(self.tx_next, 0, ring::TP_STATUS_SEND_REQUEST);
            self.tx_next = (self.tx_next + 1) % self.tx.count();
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += frame.len() as u64;
            queued += 1;
        }
        frames.drain(..taken);
        if let Some(o) = offloads {
            o.drain(..taken);
        }
        if queued > 0 || self.tx_kick_pending {
            self.kick();
        }
        taken
    }

    fn kick(&mut self) {
        match os::kick_tx(&self.tx_fd) {
            Ok(()) => self.tx_kick_pending = false,
            // The ring keeps the frames; the next call kicks again.
            Err(_) => self.tx_kick_pending = true,
        }
    }
}

/// Where received frames go: copied into a buffer of the right pool, and counted.
struct RxSink<'a> {
    pool: &'a BufferPool,
    large_pool: Option<&'a BufferPool>,
    stats: &'a mut DeviceStats,
    frames: &'a mut Vec<Buffer>,
    /// `Some` for [`Device::rx_burst_offload`]: the offload of each frame goes here. `None`
    /// for [`Device::rx_burst`], which completes partial checksums instead.
    offloads: Option<&'a mut Vec<FrameOffload>>,
}

impl RxSink<'_> {
    /// Copies one received frame into a buffer of the pool it fits, or counts a drop.
    fn deliver(&mut self, frame: &[u8], offload: FrameOffload) {
        let pool = if frame.len() <= self.pool.data_capacity() {
            Some(self.pool)
        } else {
            self.large_pool
                .filter(|large| frame.len() <= large.data_capacity())
        };
        match pool.and_then(|p| p.alloc_copy(frame)) {
            Some(buf) => self.deliver_buffer(buf, offload),
            None => self.stats.rx_dropped += 1,
        }
    }

    fn deliver_buffer(&mut self, mut buf: Buffer, offload: FrameOffload) {
        match &mut self.offloads {
            Some(offloads) => offloads.push(offload),
            None => {
                if let FrameChecksum::Partial { start, offset } = offload.checksum {
                    if !complete_partial_checksum(buf.as_mut_slice(), start, offset) {
                        self.stats.rx_dropped += 1;
                        return;
                    }
                }
            }
        }
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += buf.len() as u64;
        self.frames.push(buf);
    }

    /// Reads the packet at the head of the socket's queue (one too large for its ring slot)
    /// into a large buffer, and delivers it if `keep`.
    fn take_queued(&mut self, fd: &OwnedFd, keep: bool) {
        let mut header = [0u8; vnet::LEN];
        let Some(mut buf) = self.large_pool.and_then(BufferPool::alloc) else {
            // No buffer: take it off the queue all the same, so that the next slot marked
            // this way reads its own packet.
            let _ = os::recv_scattered(fd, &mut header, &mut []);
            self.stats.rx_dropped += keep as u64;
            return;
        };
        let room = buf.tailroom();
        let got = os::recv_scattered(fd, &mut header, buf.append(room));
        match got {
            Ok((n, false)) if n >= vnet::LEN + ETH_HLEN => {
                if keep {
                    buf.truncate(n - vnet::LEN);
                    self.deliver_buffer(buf, vnet::decode(&header));
                }
            }
            // Truncated, or nothing queued (the kernel could not keep the packet).
            _ => self.stats.rx_dropped += keep as u64,
        }
    }
}

/// Completes a checksum the sender left partial ([`FrameChecksum::Partial`]): the one's
/// complement of the sum from `start` to the end, pseudo-header sum in the field included,
/// goes in the field (RFC 1071; 0 is sent as 0xffff, its other form, as Linux does). Returns
/// false if the offsets lie outside the frame.
fn complete_partial_checksum(frame: &mut [u8], start: u16, offset: u16) -> bool {
    let (start, field) = (start as usize, start as usize + offset as usize);
    if field + 2 > frame.len() {
        return false;
    }
    let sum = !bypass_wire::checksum::data(&frame[start..]);
    let sum = if sum == 0 { 0xffff } else { sum };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

impl Device for AfPacket {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        self.receive(frames, None, max)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        self.transmit(frames, None)
    }

    fn rx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
        max: usize,
    ) -> usize {
        self.receive(frames, Some(offloads), max)
    }

    /// Offloads the device's caps do not announce (any, without virtio-net headers) are
    /// refused: such a frame is counted in `tx_dropped`.
    fn tx_burst_offload(
        &mut self,
        frames: &mut Vec<Buffer>,
        offloads: &mut Vec<FrameOffload>,
    ) -> usize {
        assert_eq!(frames.len(), offloads.len(), "one offload per frame");
        self.transmit(frames, Some(offloads))
    }

    fn large_frame_pool(&self) -> Option<&BufferPool> {
        self.large_pool.as_ref()
    }

    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn caps(&self) -> DeviceCaps {
        let tcp_segmentation_max = match &self.large_pool {
            Some(large) if self.vnet => {
                IPV4_MAX_PACKET.min(large.data_capacity().saturating_sub(ETH_HLEN))
            }
            _ => 0,
        };
        DeviceCaps {
            mtu: self.mtu,
            max_burst: 32,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            frame_offloads: self.vnet,
            tcp_segmentation_max,
        }
    }

    /// Our counters, plus the frames the kernel dropped because the RX ring was full in
    /// `rx_dropped`.
    fn stats(&self) -> DeviceStats {
        // struct tpacket_stats (V2) or tpacket_stats_v3: tp_packets, tp_drops, ...
        if let Ok((counts, _)) =
            os::getsockopt::<[u8; 12]>(&self.rx_fd, SOL_PACKET, PACKET_STATISTICS)
        {
            let drops = u32::from_ne_bytes(counts[4..8].try_into().expect("4 bytes"));
            self.kernel_drops
                .set(self.kernel_drops.get() + drops as u64);
        }
        let mut stats = self.stats;
        stats.rx_dropped += self.kernel_drops.get();
        stats
    }
}

impl std::fmt::Debug for AfPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacket")
            .field("interface", &self.interface)
            .field("rx_fd", &self.rx_fd)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_geometry_is_rejected_with_the_reason() {
        let mut c = PacketConfig::new("lo");
        c.frame_size = 3000;
        let e = AfPacket::open(&c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("power of two"), "{e}");
        let mut c = PacketConfig::throughput("lo");
        c.rx = RxRing::V3 {
            block_size: 1 << 16,
            blocks: 4,
            timeout_ms: 0,
        };
        assert!(AfPacket::open(&c)
            .unwrap_err()
            .to_string()
            .contains("timeout_ms"));
    }

    #[test]
    fn offloads_need_large_chunks_and_v3_blocks_that_hold_a_64_kib_packet() {
        let mut c = PacketConfig::new("lo");
        c.large_pool.chunk_size = 64 << 10;
        let e = AfPacket::open(&c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("large_pool"), "{e}");
        // Without offloads the large pool is not used, so not checked.
        c.offload = Offload::Off;
        assert!(c.validate().is_ok());
        let mut c = PacketConfig::throughput("lo");
        c.rx = RxRing::V3 {
            block_size: 64 << 10,
            blocks: 4,
            timeout_ms: 1,
        };
        let e = AfPacket::open(&c).unwrap_err();
        assert!(e.to_string().contains("V3 blocks"), "{e}");
        c.offload = Offload::Off;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_partial_checksum_is_completed_over_the_rest_of_the_frame() {
        use bypass_wire::{checksum, IpProtocol, Ipv4Address};
        let (src, dst) = (Ipv4Address([10, 0, 0, 1]), Ipv4Address([10, 0, 0, 2]));
        // Ethernet and IPv4 headers (their content does not matter here), then a UDP
        // datagram with an odd length whose checksum field holds the pseudo-header sum.
        let mut frame = vec![0u8; 34];
        let udp_len = 8 + 11;
        let mut udp = vec![0u8; udp_len];
        udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&53u16.to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[8..].copy_from_slice(b"hello world");
        let pseudo = checksum::pseudo_header(src, dst, IpProtocol::Udp, udp_len as u32);
        udp[6..8].copy_from_slice(&pseudo.to_be_bytes());
        frame.extend_from_slice(&udp);
        assert!(complete_partial_checksum(&mut frame, 34, 6));
        assert!(checksum::verify_ipv4_upper(
            src,
            dst,
            IpProtocol::Udp,
            &frame[34..]
        ));
        // Offsets past the frame are refused, and nothing is written.
        let before = frame.clone();
        assert!(!complete_partial_checksum(&mut frame, 34, udp_len as u16));
        assert_eq!(frame, before);
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let e = AfPacket::open(&PacketConfig::new("bypass-nope0")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchInterface);
        let text = e.to_string();
        assert!(
            text.contains("bypass-nope0") && text.contains("no such interface"),
            "{text}"
        );
    }
}
