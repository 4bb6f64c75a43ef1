//! AF_XDP: frames of one receive queue, steered to user space by our own XDP program.
//!
//! The pieces (`linux/if_xdp.h`, Documentation/networking/af_xdp.rst):
//! - **UMEM**: the memory frames live in. Here it *is* the device's [`BufferPool`]: one pool
//!   chunk (2 KiB) is one UMEM frame, and UMEM address `a` is byte `a` of the pool's memory,
//!   so chunk `a / 2048` holds it. A frame the stack builds in a buffer of [`Device::pool`] is
//!   transmitted from where it lies.
//! - **Fill ring**: chunks we lend the kernel to receive into. A lent chunk's [`Buffer`] is kept
//!   in a table indexed by chunk until the chunk comes back in the RX ring; then that same
//!   buffer, its range set to the frame, goes up to the stack.
//! - **RX ring**: descriptors (address, length) of received frames.
//! - **TX ring**: descriptors of frames to send. The buffer is kept (one refcount) in a second
//!   table until the **completion ring** returns its address; then it is dropped, and the chunk
//!   returns to the pool once the stack has dropped its handles too. Until then the buffer is
//!   shared, so nobody can write to it while the kernel may still read it. A frame from
//!   another pool, or whose chunk is already in flight (a retransmission of a frame still
//!   queued), is copied into a fresh chunk instead.
//! - **The XDP program** ([`bpf`]) redirects frames of our queue (optionally only those the
//!   [`XdpFilter`] selects) into an XSKMAP holding our socket; everything else goes to the
//!   kernel as usual. It is attached through rtnetlink in generic (SKB) or native (driver)
//!   mode and detached on drop. A program of ours left attached by a process that was killed is
//!   found at the next start (by its name, `bypass_xsk`) and replaced; a program of anyone else
//!   is left alone and reported.
//!
//! Copy mode (`XDP_COPY`) is the default: zero-copy needs driver support (veth has none). In
//! copy mode every transmit needs a `sendto()` "kick", and the kernel takes at most 32
//! descriptors per kick; receive needs no system call while the fill ring is stocked. With
//! `need_wakeup`, the kernel says in each ring's flags whether it needs a kick at all.
//!
//! One device drives one queue of one interface and owns the interface's XDP program.

mod ring;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use bypass_runtime::{Buffer, BufferPool, PoolConfig};

use crate::bpf;
pub use crate::bpf::XdpFilter;
use crate::sys::netlink::{self, Attached, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use crate::sys::os::{self, Mmap};
use crate::sys::retry_busy;
use crate::{Device, DeviceCaps, DeviceError, DeviceStats, ErrorKind};
pub use ring::XdpStatistics;
use ring::{MmapOffsets, Ring, SockaddrXdp, UmemReg, XdpDesc};

const NEEDS: &str = "root or CAP_NET_RAW+CAP_BPF+CAP_NET_ADMIN";
const INSTEAD: &str = "try --libos packet or --libos kernel";
const ETH_HLEN: usize = 14;
/// UMEM frame (= pool chunk) size: a page-power-of-two the kernel accepts in aligned mode.
const FRAME_SIZE: usize = 2048;
/// Bytes the kernel keeps before each received frame (`XDP_PACKET_HEADROOM`).
const XDP_PACKET_HEADROOM: usize = 256;
/// The kernel sends at most this many descriptors per `sendto()` in copy mode.
const TX_BATCH_PER_KICK: u32 = 32;
/// Frames received between two top-ups of the fill ring (see [`AfXdp::refill`]).
const FILL_BATCH: u32 = 64;

const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_COPY: u16 = 1 << 1;
const XDP_ZEROCOPY: u16 = 1 << 2;
const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
const XDP_PGOFF_RX_RING: u64 = 0;
const XDP_PGOFF_TX_RING: u64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: u64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: u64 = 0x1_8000_0000;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Generic (SKB) mode: run by the core stack after the driver built an skb. Works on every
    /// interface; on veth it is the faster mode (see FACTS.md).
    Generic,
    /// Native (driver) mode: run by the driver before any skb exists. Needs driver support.
    Driver,
}

impl XdpMode {
    fn flags(self) -> u32 {
        match self {
            XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            XdpMode::Driver => XDP_FLAGS_DRV_MODE,
        }
    }
}

/// How to open an AF_XDP device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interface, in the calling thread's network namespace.
    pub interface: String,
    /// The receive queue to bind to.
    pub queue: u32,
    pub mode: XdpMode,
    /// If attaching in [`XdpMode::Driver`] fails, attach in generic mode instead.
    pub mode_fallback: bool,
    pub filter: XdpFilter,
    /// Ask for zero-copy; falls back to copy mode where the driver cannot (veth).
    pub zero_copy: bool,
    /// Use `XDP_USE_NEED_WAKEUP` and make system calls only when the kernel asks.
    pub need_wakeup: bool,
    /// Ring sizes (powers of two).
    pub rx_size: u32,
    pub tx_size: u32,
    pub fill_size: u32,
    pub completion_size: u32,
    /// UMEM frames (= pool chunks); must exceed `fill_size` to leave some for transmission.
    pub frames: u32,
    /// Put the UMEM on 2 MiB huge pages if any are reserved (falls back to normal pages).
    pub huge_pages: bool,
    /// Replace a `bypass_xsk` program a dead process left attached.
    pub replace_leftover: bool,
    /// How long to retry `bind()` while the kernel still tears down a previous socket of
    /// the same queue (it answers EBUSY for about a second after a close).
    pub bind_timeout: Duration,
}

impl XdpConfig {
    pub fn new(interface: &str) -> XdpConfig {
        XdpConfig {
            interface: interface.to_string(),
            queue: 0,
            mode: XdpMode::Generic,
            mode_fallback: true,
            filter: XdpFilter::All,
            zero_copy: false,
            need_wakeup: true,
            rx_size: 1024,
            tx_size: 1024,
            fill_size: 2048,
            completion_size: 1024,
            frames: 4096,
            huge_pages: true,
            replace_leftover: true,
            bind_timeout: Duration::from_secs(3),
        }
    }

    fn validate(&self) -> Result<(), DeviceError> {
        let bad = |msg: String| {
            Err(DeviceError::new(
                ErrorKind::InvalidConfig,
                format!("AF_XDP configuration for {}", self.interface),
                msg,
            ))
        };
        for (name, size) in [
            ("rx_size", self.rx_size),
            ("tx_size", self.tx_size),
            ("fill_size", self.fill_size),
            ("completion_size", self.completion_size),
        ] {
            if !size.is_power_of_two() || !(64..=1 << 16).contains(&size) {
                return bad(format!(
                    "{name} {size} must be a power of two from 64 to 65536"
                ));
            }
        }
        if self.frames <= self.fill_size || self.frames > 1 << 20 {
            return bad(format!(
                "frames {} must exceed fill_size {} (chunks are needed to transmit) and be at most 2^20",
                self.frames, self.fill_size
            ));
        }
        Ok(())
    }
}

/// An XDP program of ours, loaded with its XSKMAP, possibly attached to an interface.
#[derive(Debug)]
pub struct XdpProgram {
    prog: OwnedFd,
    map: OwnedFd,
    id: u32,
    attached: Option<(u32, XdpMode)>,
}

impl XdpProgram {
    /// Loads the program for `filter` with an XSKMAP of `queues` entries.
    pub fn load(filter: XdpFilter, queues: u32) -> Result<XdpProgram, DeviceError> {
        Self::load_raw(filter, queues).map_err(err("XDP program load".to_string()))
    }

    fn load_raw(filter: XdpFilter, queues: u32) -> io::Result<XdpProgram> {
        let map = bpf::create_xskmap(queues.max(1))?;
        let prog = bpf::load_program(
            bpf::ProgramKind::Xdp,
            bpf::PROGRAM_NAME,
            &bpf::program(filter, map.as_raw_fd()),
        )?;
        let id = bpf::prog_info(&prog)?.id;
        Ok(XdpProgram {
            prog,
            map,
            id,
            attached: None,
        })
    }

    /// The kernel's id of the program (what `ip link show` prints as `prog/xdp id N`).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Registers socket `xsk_fd` for receive queue `queue`.
    fn register(&self, queue: u32, xsk_fd: i32) -> io::Result<()> {
        bpf::map_update(&self.map, queue, xsk_fd as u32)
    }

    /// Attaches the program to interface `ifindex` in `mode`, unless some program is there.
    pub fn attach(&mut self, ifindex: u32, mode: XdpMode) -> Result<(), DeviceError> {
        self.attach_raw(ifindex, mode)
            .map_err(|e| attach_error(&format!("interface #{ifindex}"), mode, e))
    }

    fn attach_raw(&mut self, ifindex: u32, mode: XdpMode) -> Result<(), netlink::NlError> {
        const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
        let flags = mode.flags() | XDP_FLAGS_UPDATE_IF_NOEXIST;
        netlink::xdp_set(ifindex, self.prog.as_raw_fd(), flags)?;
        self.attached = Some((ifindex, mode));
        Ok(())
    }

    /// Detaches the program if it is still the one attached (a no-op otherwise).
    pub fn detach(&mut self) -> io::Result<()> {
        let Some((ifindex, mode)) = self.attached.take() else {
            return Ok(());
        };
        let state = netlink::xdp_query(ifindex).map_err(|e| e.os)?;
        if state.prog_id == self.id {
            netlink::xdp_set(ifindex, -1, mode.flags()).map_err(|e| e.os)?;
        }
        Ok(())
    }

    /// Forgets the program without detaching it, as a process that is killed would: it stays
    /// attached (with its map) until someone replaces or removes it.
    pub fn leak(mut self) {
        self.attached = None;
    }
}

impl Drop for XdpProgram {
    fn drop(&mut self) {
        if let Err(e) = self.detach() {
            tracing::warn!(program = self.id, "detaching XDP program failed: {e}");
        }
    }
}

/// The XDP program attached to `interface` (in the calling thread's namespace), if any: its
/// id and mode.
pub fn attached_program(interface: &str) -> Result<Option<(u32, XdpMode)>, DeviceError> {
    let ifindex = os::if_index(interface)
        .map_err(|e| DeviceError::os(format!("XDP query of {interface}"), e, NEEDS, INSTEAD))?;
    let state = netlink::xdp_query(ifindex)
        .map_err(|e| DeviceError::os(format!("XDP query of {interface}"), e.os, NEEDS, INSTEAD))?;
    Ok(match state.attached {
        Attached::None => None,
        Attached::Driver => Some((state.prog_id, XdpMode::Driver)),
        _ => Some((state.prog_id, XdpMode::Generic)),
    })
}

/// A network interface queue driven through an AF_XDP socket.
pub struct AfXdp {
    // Fields drop in order: the program (already detached in `Drop`), the socket (the kernel
    // stops using the UMEM), the rings, the buffers, and last the pool.
    program: XdpProgram,
    xsk: OwnedFd,
    fill: Ring<u64>,
    completion: Ring<u64>,
    rx: Ring<XdpDesc>,
    tx: Ring<XdpDesc>,
    /// Chunks lent to the kernel through the fill ring, by chunk index.
    lent: Vec<Option<Buffer>>,
    /// Frames handed to the TX ring and not completed yet, by chunk index.
    in_flight: Vec<Option<Buffer>>,
    /// Descriptors produced into the TX ring that no kick has covered yet.
    tx_kick_pending: bool,
    /// Frames received since the fill ring was last topped up (each used one fill entry).
    fill_debt: u32,
    pool: BufferPool,
    config: XdpConfig,
    mode: XdpMode,
    zero_copy: bool,
    replaced: Option<u32>,
    mac: [u8; 6],
    mtu: usize,
    stats: DeviceStats,
}

fn err(what: String) -> impl FnOnce(io::Error) -> DeviceError {
    move |e| DeviceError::os(what, e, NEEDS, INSTEAD)
}

impl AfXdp {
    /// Opens queue `config.queue` of `config.interface` (in the calling thread's namespace),
    /// loads and attaches our XDP program, and stocks the fill ring.
    pub fn open(config: &XdpConfig) -> Result<AfXdp, DeviceError> {
        config.validate()?;
        let name = &config.interface;
        let what = |step: &str| format!("AF_XDP {step} on {name}");
        let ifindex = os::if_index(name).map_err(err(what("device open")))?;
        let mac = os::if_hwaddr(name).map_err(err(what("reading the MAC address")))?;
        let mtu = os::if_mtu(name).map_err(err(what("reading the MTU")))?;
        if mtu + ETH_HLEN > FRAME_SIZE - XDP_PACKET_HEADROOM {
            return Err(DeviceError::new(
                ErrorKind::Unsupported,
                what("configuration"),
                format!("MTU {mtu} exceeds what a 2 KiB UMEM frame holds; lower it to 1500 or {INSTEAD}"),
            ));
        }

        let xsk = os::socket(libc::AF_XDP, libc::SOCK_RAW, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::EAFNOSUPPORT) {
                DeviceError::new(
                    ErrorKind::Unsupported,
                    what("socket creation"),
                    format!("this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS); {INSTEAD}"),
                )
            } else {
                err(what("socket creation"))(e)
            }
        })?;

        let pool = BufferPool::new(&PoolConfig {
            chunk_size: FRAME_SIZE,
            chunks: config.frames as usize,
            headroom: XDP_PACKET_HEADROOM,
            huge_pages: config.huge_pages,
        })
        .map_err(err(what("UMEM allocation")))?;
        let memory = pool.memory();
        debug_assert_eq!(memory.len() % FRAME_SIZE, 0);
        let reg = UmemReg {
            addr: memory.base().as_ptr() as u64,
            len: memory.len() as u64,
            chunk_size: FRAME_SIZE as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        os::setsockopt(&xsk, SOL_XDP, XDP_UMEM_REG, &reg).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::ENOBUFS)) {
                DeviceError::new(
                    ErrorKind::PermissionDenied,
                    what("UMEM registration"),
                    format!(
                        "{} bytes cannot be locked: raise RLIMIT_MEMLOCK (`ulimit -l`), grant \
                         CAP_IPC_LOCK, or lower `frames`",
                        memory.len()
                    ),
                )
            } else {
                err(what("UMEM registration"))(e)
            }
        })?;
        for (opt, size, step) in [
            (XDP_UMEM_FILL_RING, config.fill_size, "fill ring setup"),
            (
                XDP_UMEM_COMPLETION_RING,
                config.completion_size,
                "completion ring setup",
            ),
            (XDP_RX_RING, config.rx_size, "RX ring setup"),
            (XDP_TX_RING, config.tx_size, "TX ring setup"),
        ] {
            os::setsockopt(&xsk, SOL_XDP, opt, &(size as i32)).map_err(err(what(step)))?;
        }
        let (off, _) = os::getsockopt::<MmapOffsets>(&xsk, SOL_XDP, XDP_MMAP_OFFSETS)
            .map_err(err(what("reading ring offsets")))?;
        let map = |offset: &ring::RingOffset, entry: usize, size: u32, pgoff: u64, step: &str| {
            Mmap::shared(&xsk, offset.desc as usize + entry * size as usize, pgoff)
                .map_err(err(what(step)))
        };
        let fill = Ring::new(
            map(
                &off.fill,
                8,
                config.fill_size,
                XDP_UMEM_PGOFF_FILL_RING,
                "fill ring mmap",
            )?,
            &off.fill,
            config.fill_size,
        );
        let completion = Ring::new(
            map(
                &off.completion,
                8,
                config.completion_size,
                XDP_UMEM_PGOFF_COMPLETION_RING,
                "completion ring mmap",
            )?,
            &off.completion,
            config.completion_size,
        );
        let rx = Ring::new(
            map(
                &off.rx,
                16,
                config.rx_size,
                XDP_PGOFF_RX_RING,
                "RX ring mmap",
            )?,
            &off.rx,
            config.rx_size,
        );
        let tx = Ring::new(
            map(
                &off.tx,
                16,
                config.tx_size,
                XDP_PGOFF_TX_RING,
                "TX ring mmap",
            )?,
            &off.tx,
            config.tx_size,
        );

        let zero_copy = bind(&xsk, ifindex, config).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) => DeviceError::new(
                ErrorKind::InvalidConfig,
                what(&format!("bind to queue {}", config.queue)),
                format!(
                    "the kernel refused it (EINVAL): is queue {} below the interface's RX queue count \
                     (`ethtool -l {name}`)?",
                    config.queue
                ),
            ),
            Some(libc::EBUSY) => DeviceError::new(
                ErrorKind::Busy,
                what(&format!("bind to queue {}", config.queue)),
                format!(
                    "another AF_XDP socket still holds the queue after {:?}; stop it or use another queue",
                    config.bind_timeout
                ),
            ),
            _ => err(what(&format!("bind to queue {}", config.queue)))(e),
        })?;

        let mut program = XdpProgram::load_raw(config.filter, config.queue + 1)
            .map_err(err(what("XDP program load")))?;
        program
            .register(config.queue, xsk.as_raw_fd())
            .map_err(err(what("XSKMAP update")))?;
        let replaced = clear_leftover(ifindex, config)?;
        let mode = attach(&mut program, ifindex, config)?;

        let chunks = pool.chunks();
        let mut dev = AfXdp {
            program,
            xsk,
            fill,
            completion,
            rx,
            tx,
            lent: (0..chunks).map(|_| None).collect(),
            in_flight: (0..chunks).map(|_| None).collect(),
            tx_kick_pending: false,
            fill_debt: 0,
            pool,
            config: config.clone(),
            mode,
            zero_copy,
            replaced,
            mac,
            mtu,
            stats: DeviceStats::default(),
        };
        dev.top_up_fill_ring();
        Ok(dev)
    }

    /// The mode the program actually runs in (after any fallback).
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Whether the socket runs in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The id of a leftover program of ours this device replaced at start-up, if any.
    pub fn replaced_leftover(&self) -> Option<u32> {
        self.replaced
    }

    /// The id of the XDP program this device attached.
    pub fn program_id(&self) -> u32 {
        self.program.id()
    }

    pub fn config(&self) -> &XdpConfig {
        &self.config
    }

    /// What the kernel counted for this socket (drops for a full RX ring, an empty fill ring).
    pub fn kernel_statistics(&self) -> io::Result<XdpStatistics> {
        os::getsockopt::<XdpStatistics>(&self.xsk, SOL_XDP, XDP_STATISTICS).map(|(s, _)| s)
    }

    /// Tops the fill ring up once the frames received since the last top-up reach
    /// [`FILL_BATCH`] (or a quarter of the ring, if smaller), or when the kernel asks for it
    /// (`need_wakeup`). Each received frame used one fill entry, so the kernel still holds most
    /// of the ring meanwhile, and the common poll does not read the kernel's consumer index: a
    /// cache line the kernel writes from the sending CPU (on veth), a miss per received frame.
    fn refill(&mut self) {
        let batch = FILL_BATCH.min(self.fill.size() / 4);
        let asked = self.config.need_wakeup && self.fill.needs_wakeup();
        if self.fill_debt >= batch || asked {
            let short = self.top_up_fill_ring();
            // Short of chunks (all in use): try again at the next poll.
            self.fill_debt = if short { batch } else { 0 };
        }
        if asked {
            // Best effort: a failed wake-up is retried on the next call.
            let _ = os::kick_rx(&self.xsk);
        }
    }

    /// Lends free pool chunks to the kernel until the fill ring is full; returns whether the
    /// pool ran out first.
    fn top_up_fill_ring(&mut self) -> bool {
        let want = self.fill.free(self.fill.size());
        let mut n = 0;
        while n < want {
            let Some(buf) = self.pool.alloc() else { break };
            let chunk = buf.chunk() as usize;
            debug_assert!(self.lent[chunk].is_none() && self.in_flight[chunk].is_none());
            self.fill.put(n, (chunk * FRAME_SIZE) as u64);
            self.lent[chunk] = Some(buf);
            n += 1;
        }
        if n > 0 {
            self.fill.submit(n);
        }
        n < want
    }

    /// Drops the handles of transmitted frames the kernel is done with.
    fn reap_completions(&mut self) {
        let n = self.completion.available(self.completion.size());
        for i in 0..n {
            let addr = self.completion.get(i) as usize;
            let chunk = addr / FRAME_SIZE;
            let done = self.in_flight.get_mut(chunk).and_then(Option::take);
            debug_assert!(
                done.is_some(),
                "completion for chunk {chunk} that was not in flight"
            );
        }
        self.completion.release(n);
    }

    /// Kicks the kernel until the TX ring is drained or it stops making progress.
    ///
    /// In copy mode one `sendto()` sends at most 32 descriptors and then answers EAGAIN if
    /// more are queued: an error *with* progress means "kick again", an error or a kick
    /// without progress means the kernel is busy or out of completion room, and the frames
    /// stay queued for the next call.
    fn kick_tx(&mut self) {
        let mut outstanding = self.tx.outstanding();
        let mut rounds = outstanding.div_ceil(TX_BATCH_PER_KICK) + 1;
        while outstanding > 0 && rounds > 0 {
            rounds -= 1;
            if self.zero_copy && self.config.need_wakeup && !self.tx.needs_wakeup() {
                // A zero-copy driver is already working through the ring.
                self.tx_kick_pending = false;
                return;
            }
            let kicked = os::kick_tx(&self.xsk);
            let left = self.tx.outstanding();
            if left >= outstanding && kicked.is_err() {
                break;
            }
            outstanding = left;
        }
        self.tx_kick_pending = outstanding > 0;
    }
}

/// Binds the socket, retrying EBUSY while a previous socket of the queue is torn down.
/// Returns whether zero-copy is in use.
fn bind(xsk: &OwnedFd, ifindex: u32, config: &XdpConfig) -> io::Result<bool> {
    let wakeup = if config.need_wakeup {
        XDP_USE_NEED_WAKEUP
    } else {
        0
    };
    let addr = |mode: u16| SockaddrXdp {
        family: libc::AF_XDP as u16,
        flags: mode | wakeup,
        ifindex,
        queue_id: config.queue,
        shared_umem_fd: 0,
    };
    let bind_as = |zero_copy: bool| {
        let mode = addr(if zero_copy { XDP_ZEROCOPY } else { XDP_COPY });
        retry_busy(
            config.bind_timeout,
            Duration::from_millis(5),
            Duration::from_millis(100),
            || os::bind(xsk, &mode),
        )
        .map(|()| zero_copy)
    };
    match bind_as(config.zero_copy) {
        Err(e) if config.zero_copy && e.raw_os_error() == Some(libc::EOPNOTSUPP) => bind_as(false),
        result => result,
    }
}

/// Removes a program of ours a dead process left on the interface; refuses anyone else's.
fn clear_leftover(ifindex: u32, config: &XdpConfig) -> Result<Option<u32>, DeviceError> {
    let name = &config.interface;
    let what = format!("AF_XDP program check on {name}");
    let state = netlink::xdp_query(ifindex)
        .map_err(|e| DeviceError::os(what.clone(), e.os, NEEDS, INSTEAD))?;
    if state.attached == Attached::None {
        return Ok(None);
    }
    let owner = bpf::prog_by_id(state.prog_id)
        .and_then(|fd| bpf::prog_info(&fd))
        .map(|info| info.name)
        .unwrap_or_default();
    if owner != bpf::PROGRAM_NAME || !config.replace_leftover {
        return Err(DeviceError::new(
            ErrorKind::Busy,
            what,
            format!(
                "{name} already runs XDP program id {} ({}); remove it with `ip link set dev {name} xdp off` \
                 if it is stale, or use another interface",
                state.prog_id,
                if owner.is_empty() { "unknown name" } else { &owner }
            ),
        ));
    }
    let flags = if state.attached == Attached::Driver {
        XDP_FLAGS_DRV_MODE
    } else {
        XDP_FLAGS_SKB_MODE
    };
    netlink::xdp_set(ifindex, -1, flags)
        .map_err(|e| DeviceError::os(what, e.os, NEEDS, INSTEAD))?;
    Ok(Some(state.prog_id))
}

/// The error of a failed attach, with the kernel's reason when it gave one.
fn attach_error(interface: &str, mode: XdpMode, e: netlink::NlError) -> DeviceError {
    let mode = match mode {
        XdpMode::Driver => "driver",
        XdpMode::Generic => "generic",
    };
    let kernel = if e.text.is_empty() {
        String::new()
    } else {
        format!(" [kernel: {}]", e.text)
    };
    let what = format!("AF_XDP program attach ({mode} mode) on {interface}{kernel}");
    DeviceError::os(what, e.os, NEEDS, INSTEAD)
}

/// Attaches in the configured mode, falling back from driver to generic mode if allowed.
fn attach(
    program: &mut XdpProgram,
    ifindex: u32,
    config: &XdpConfig,
) -> Result<XdpMode, DeviceError> {
    let name = &config.interface;
    match program.attach_raw(ifindex, config.mode) {
        Ok(()) => Ok(config.mode),
        Err(e) if config.mode == XdpMode::Driver && config.mode_fallback => {
            let driver_err = attach_error(name, XdpMode::Driver, e);
            match program.attach_raw(ifindex, XdpMode::Generic) {
                Ok(()) => Ok(XdpMode::Generic),
                // Report the generic failure if it says more than "I/O error".
                Err(e) => match attach_error(name, XdpMode::Generic, e) {
                    generic if generic.kind() == ErrorKind::Io => Err(driver_err),
                    generic => Err(generic),
                },
            }
        }
        Err(e) => Err(attach_error(name, config.mode, e)),
    }
}

impl Device for AfXdp {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        self.reap_completions();
        let n = self.rx.available(max.min(u32::MAX as usize) as u32);
        let mut delivered = 0;
        for i in 0..n {
            let desc = self.rx.get(i);
            let chunk = desc.addr as usize / FRAME_SIZE;
            let offset = desc.addr as usize % FRAME_SIZE;
            let Some(mut buf) = self.lent.get_mut(chunk).and_then(Option::take) else {
                debug_assert!(false, "RX descriptor for chunk {chunk} that was not lent");
                self.stats.rx_dropped += 1;
                continue;
            };
            let len = desc.len as usize;
            if len < ETH_HLEN || offset + len > FRAME_SIZE {
                self.stats.rx_dropped += 1;
                continue; // `buf` drops: the chunk goes back to the pool.
            }
            buf.set_range(offset, len);
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
            frames.push(buf);
            delivered += 1;
        }
        if n > 0 {
            self.rx.release(n);
            self.fill_debt += n;
        }
        self.refill();
        delivered
    }

    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        self.reap_completions();
        let max_frame = (self.mtu + ETH_HLEN).min(FRAME_SIZE);
        let room = self.tx.free(frames.len().min(u32::MAX as usize) as u32);
        let mut taken = 0;
        let mut produced = 0;
        while (taken as u32) < room && taken < frames.len() {
            let frame = &frames[taken];
            if frame.len() < ETH_HLEN || frame.len() > max_frame {
                self.stats.tx_dropped += 1;
                taken += 1;
                continue;
            }
            // A frame in our UMEM goes as it is, unless the same chunk is already in flight
            // (a retransmission still queued): then, like a frame from elsewhere, it is copied.
            let chunk = frame.chunk() as usize;
            let held = if self.pool.owns(frame)
                && self.in_flight[chunk].is_none()
                && self.lent[chunk].is_none()
            {
                frame.clone()
            } else {
                let Some(copy) = self.pool.alloc_copy(frame) else {
                    break; // Pool exhausted: the rest waits for completions.
                };
                copy
            };
            let chunk = held.chunk() as usize;
            let desc = XdpDesc {
                addr: held.region_offset() as u64,
                len: held.len() as u32,
                options: 0,
            };
            debug_assert_eq!(desc.addr as usize / FRAME_SIZE, chunk);
            self.tx.put(produced, desc);
            self.stats.tx_frames += 1;
            self.stats.tx_bytes += held.len() as u64;
            self.in_flight[chunk] = Some(held);
            produced += 1;
            taken += 1;
        }
        if produced > 0 {
            self.tx.submit(produced);
        }
        if produced > 0 || self.tx_kick_pending {
            self.kick_tx();
        }
        frames.drain(..taken);
        taken
    }

    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.mtu,
            max_burst: TX_BATCH_PER_KICK as usize,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            ..DeviceCaps::default()
        }
    }

    /// Our counters, plus the frames the kernel dropped before they reached the RX ring
    /// (RX ring full, no fill ring entry, other reasons) in `rx_dropped`.
    fn stats(&self) -> DeviceStats {
        let mut stats = self.stats;
        if let Ok(k) = self.kernel_statistics() {
            stats.rx_dropped += k.rx_dropped + k.rx_ring_full + k.rx_invalid_descs;
            stats.tx_dropped += k.tx_invalid_descs;
        }
        stats
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        // The program first, so no frame is redirected to a socket about to close.
        if let Err(e) = self.program.detach() {
            tracing::warn!(interface = %self.config.interface, "detaching the XDP program failed: {e}");
        }
    }
}

impl std::fmt::Debug for AfXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdp")
            .field("interface", &self.config.interface)
            .field("queue", &self.config.queue)
            .field("mode", &self.mode)
            .field("program", &self.program.id())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ring_sizes_and_frame_counts_are_rejected() {
        let mut c = XdpConfig::new("lo");
        c.rx_size = 1000;
        let e = AfXdp::open(&c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        assert!(e.to_string().contains("rx_size 1000"), "{e}");
        let mut c = XdpConfig::new("lo");
        c.frames = c.fill_size;
        assert!(AfXdp::open(&c)
            .unwrap_err()
            .to_string()
            .contains("must exceed fill_size"));
    }

    #[test]
    fn a_missing_interface_is_named_in_the_error() {
        let e = AfXdp::open(&XdpConfig::new("bypass-nope0")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSuchInterface);
        let text = e.to_string();
        assert!(
            text.contains("bypass-nope0") && text.contains("--libos packet"),
            "{text}"
        );
    }
}
