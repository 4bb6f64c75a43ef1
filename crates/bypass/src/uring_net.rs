//! The `uring` libOS: Linux TCP and UDP sockets driven through io_uring instead of epoll.
//!
//! Same semantics as the `kernel` libOS (operations of one direction of a socket take turns in
//! issue order; closing a socket cancels its pending operations), different mechanics:
//!
//! - **accept** arms one *multishot* accept per listening socket; every connection the kernel
//!   accepts lands in the socket's backlog, and accept operations take from it.
//! - **stream pop** arms one *multishot* receive per connection that picks its buffers from a
//!   *provided buffer ring* of 64 KiB pool chunks (`IORING_REGISTER_PBUF_RING`): the kernel
//!   receives into whichever buffer is next, with no system call per receive; each completion
//!   hands its buffer to the next pop, and a fresh chunk goes back into the ring.
//! - **datagram pop** issues one `recvmsg` per pop (it needs the sender's address).
//! - **push** sends with `sendmsg`, or with `SENDMSG_ZC` (zero copy) for pushes of at least
//!   [`ZC_THRESHOLD`] bytes on a stream; the pushed buffers are held until the kernel's
//!   zero-copy notification says it is done with them.
//!
//! The ring runs its task work cooperatively (`COOP_TASKRUN`): a spinning LibOs sees in the
//! ring's flags that completions wait for it and collects them with one `io_uring_enter`,
//! instead of being interrupted for each; so a round trip costs one enter per push and one per
//! receive, like `send` and `recv` on the `kernel` libOS.
//!
//! Every submission carries `tag << 56 | socket key` as its user data. A socket closed with
//! submissions in flight has them cancelled and waits in a graveyard (keeping its fd and the
//! memory those submissions point at) until their last completions arrive.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll};
use std::time::Duration;

use bypass_runtime::{Buffer, BufferPool, Memory, Sga};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::error::{Error, ErrorKind, Result};
use crate::queue::{QueueKind, QueueTable};
use crate::slab::Slab;
use crate::socket_rules::{
    self as rules, canceled, connection_error, pool_exhausted, SocketState as State,
};
use crate::sys;
use crate::turns::{Turns, Waiters};
use crate::types::{QValue, SocketKind};

/// Pushes of at least this many bytes on a stream go out zero-copy (`SENDMSG_ZC`).
pub(crate) const ZC_THRESHOLD: usize = 16 << 10;
/// Buffers lent to the kernel in the provided-buffer ring (a power of two).
const RING_BUFFERS: u16 = 128;
/// The provided-buffer group id.
const BGID: u16 = 0;
/// Slices handed to one `sendmsg`.
const MAX_IOV: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Connect = 4,
    RecvMsg = 5,
    Cancel = 6,
}

fn user_data(tag: Tag, key: u32) -> u64 {
    (tag as u64) << 56 | u64::from(key)
}

fn split_user_data(ud: u64) -> (u8, u32) {
    ((ud >> 56) as u8, ud as u32)
}

/// A send in flight. Boxed: the kernel reads `msg`, `iovecs` and `addr` through pointers.
struct Tx {
    sga: Sga,
    total: usize,
    sent: usize,
    zc: bool,
    to: Option<libc::sockaddr_in>,
    iovecs: Vec<libc::iovec>,
    msg: libc::msghdr,
    result: Option<Result<usize>>,
}

/// A datagram receive in flight. Boxed for the same reason.
struct Rx {
    buf: Buffer,
    iov: libc::iovec,
    msg: libc::msghdr,
    from: libc::sockaddr_in,
    result: Option<Result<(usize, SocketAddrV4)>>,
}

struct Socket {
    fd: OwnedFd,
    kind: SocketKind,
    state: State,
    readers: Waiters,
    writers: Waiters,
    pops: Turns,
    pushes: Turns,
    /// Submissions whose last completion has not arrived.
    in_flight: u32,
    accept_armed: bool,
    backlog: VecDeque<OwnedFd>,
    accept_error: Option<Error>,
    recv_armed: bool,
    received: VecDeque<Buffer>,
    eof: bool,
    rx_error: Option<Error>,
    rx: Option<Box<Rx>>,
    connect_to: Box<libc::sockaddr_in>,
    connect_result: Option<Result<()>>,
    tx: Option<Box<Tx>>,
    /// The box of the last finished send, reused by the next (no allocation per push).
    spare_tx: Option<Box<Tx>>,
    /// Buffers of zero-copy sends the kernel may still read, and the notifications awaited.
    zc_hold: Vec<Sga>,
    zc_notifs: u32,
}

impl Socket {
    fn new(fd: OwnedFd, kind: SocketKind, state: State) -> Socket {
        Socket {
            fd,
            kind,
            state,
            readers: Waiters::default(),
            writers: Waiters::default(),
            pops: Turns::default(),
            pushes: Turns::default(),
            in_flight: 0,
            accept_armed: false,
            backlog: VecDeque::new(),
            accept_error: None,
            recv_armed: false,
            received: VecDeque::new(),
            eof: false,
            rx_error: None,
            rx: None,
            connect_to: Box::new(sys::to_sockaddr(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                0,
            ))),
            connect_result: None,
            tx: None,
            spare_tx: None,
            zc_hold: Vec::new(),
            zc_notifs: 0,
        }
    }
}

/// The provided-buffer ring: pool chunks lent to the kernel for multishot receives.
struct BufRing {
    /// The ring of `io_uring_buf` entries, page-aligned as the kernel wants.
    memory: Memory,
    tail: u16,
    /// The lent buffers, by buffer id (= chunk index).
    lent: Vec<Option<Buffer>>,
    /// Buffers the ring is short of (the pool was empty when they should have been lent).
    deficit: u16,
}

impl BufRing {
    /// Lends `buf` (empty, unique) to the kernel.
    fn lend(&mut self, mut buf: Buffer) {
        let bid = buf.chunk() as usize;
        let room = buf.tailroom();
        let addr = buf.append(room).as_mut_ptr() as u64;
        buf.truncate(0);
        let index = usize::from(self.tail & (RING_BUFFERS - 1));
        ring::write_entry(&self.memory, index, addr, room as u32, bid as u16);
        self.tail = self.tail.wrapping_add(1);
        ring::publish_tail(&self.memory, self.tail);
        debug_assert!(self.lent[bid].is_none(), "buffer lent twice");
        self.lent[bid] = Some(buf);
    }

    /// Takes back the buffer the kernel filled with `len` bytes.
    fn take(&mut self, bid: u16, len: usize) -> Option<Buffer> {
        let mut buf = self.lent.get_mut(usize::from(bid))?.take()?;
        let start = buf.chunk_offset();
        buf.set_range(start, len);
        Some(buf)
    }
}

/// The only `unsafe` of the provided-buffer ring: writing entries and the tail the kernel reads.
mod ring {
    use std::sync::atomic::{AtomicU16, Ordering};

    use bypass_runtime::Memory;

    /// Bytes per `io_uring_buf` entry: addr u64, len u32, bid u16, resv u16 (the ring's tail
    /// lives in entry 0's `resv`).
    pub(super) const ENTRY: usize = 16;

    pub(super) fn write_entry(memory: &Memory, index: usize, addr: u64, len: u32, bid: u16) {
        assert!(
            (index + 1) * ENTRY <= memory.len(),
            "ring entry out of range"
        );
        let base = memory.base().as_ptr();
        // SAFETY: the entry lies inside the ring's memory (checked above), which lives as long
        // as `memory`; the kernel reads an entry only after the tail published past it, and
        // this writes addr/len/bid only, never entry 0's resv (the tail). Unaligned writes
        // keep this sound for any base, though the base is page-aligned.
        unsafe {
            let e = base.add(index * ENTRY);
            e.cast::<u64>().write_unaligned(addr);
            e.add(8).cast::<u32>().write_unaligned(len);
            e.add(12).cast::<u16>().write_unaligned(bid);
        }
    }

    pub(super) fn publish_tail(memory: &Memory, tail: u16) {
        let base = memory.base().as_ptr();
        // SAFETY: offset 14 is entry 0's resv field, the ring tail; it is 2-byte aligned in
        // page-aligned memory that lives as long as `memory`. The release store orders the
        // entry writes before the tail the kernel reads.
        unsafe { AtomicU16::from_ptr(base.add(14).cast::<u16>()) }.store(tail, Ordering::Release);
    }
}

/// The sockets of one LibOs and the ring that drives them.
pub(crate) struct UringEngine {
    // Declared first so it drops first (cancelling I/O before the memory below goes).
    ring: IoUring,
    sockets: Slab<Socket>,
    /// Closed sockets whose submissions have not all completed.
    graveyard: Vec<(u32, Socket)>,
    bufring: BufRing,
    pool: BufferPool,
    queued: usize,
    reaped: Vec<(u64, i32, u32)>,
}

impl UringEngine {
    pub(crate) fn new(pool: BufferPool, max_sockets: usize) -> Result<UringEngine> {
        if pool.chunks() > usize::from(u16::MAX) || pool.available() < usize::from(RING_BUFFERS) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "the uring libOS needs a large pool of {} to 65535 chunks (pool.large)",
                    RING_BUFFERS
                ),
            ));
        }
        // COOP_TASKRUN: the kernel finishes a receive (and other poll-driven completions) in
        // this thread's task work, and by default interrupts the thread for that (an IPI
        // from the sender's CPU), which made a loopback round trip ~2.5x slower on a 2-vCPU
        // VM. Cooperative task work waits for our next system call instead, and TASKRUN_FLAG raises IORING_SQ_TASKRUN
        // in the shared ring so a spinning poll knows when to make one (see `submit`). A
        // thread sleeping in `io_uring_enter` is still woken.
        let ring = IoUring::builder()
            .setup_cqsize(8192)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(512)
            .map_err(|e| Error::os(e, "io_uring_setup (is io_uring disabled by sysctl?)"))?;
        let memory = Memory::anonymous(usize::from(RING_BUFFERS) * ring::ENTRY, false)
            .map_err(|e| Error::os(e, "mapping the provided-buffer ring"))?;
        // SAFETY: the ring memory is page-aligned (mmap), holds RING_BUFFERS entries, and lives
        // in `bufring` as long as this engine; the ring (declared first) is torn down before it.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                memory.base().as_ptr() as u64,
                RING_BUFFERS,
                BGID,
                0,
            )
        }
        .map_err(|e| {
            Error::os(
                e,
                "registering a provided-buffer ring (needs Linux 5.19 or later)",
            )
        })?;
        let mut bufring = BufRing {
            memory,
            tail: 0,
            lent: (0..pool.chunks()).map(|_| None).collect(),
            deficit: 0,
        };
        for _ in 0..RING_BUFFERS {
            bufring.lend(pool.alloc().expect("availability checked"));
        }
        Ok(UringEngine {
            ring,
            sockets: Slab::new(max_sockets),
            graveyard: Vec::new(),
            bufring,
            pool,
            queued: 0,
            reaped: Vec::with_capacity(256),
        })
    }

    pub(crate) fn socket(&mut self, kind: SocketKind) -> Result<u32> {
        let fd = rules::open_socket(kind)?;
        self.add(fd, kind, State::Fresh)
    }

    fn add(&mut self, fd: OwnedFd, kind: SocketKind, state: State) -> Result<u32> {
        self.sockets
            .insert(Socket::new(fd, kind, state))
            .ok_or_else(|| Error::new(ErrorKind::NoBufferSpace, "too many uring sockets open"))
    }

    fn get(&mut self, key: u32) -> Result<&mut Socket> {
        self.sockets
            .get_mut(key)
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "the socket is closed"))
    }

    pub(crate) fn bind(&mut self, key: u32, addr: SocketAddrV4) -> Result<()> {
        let s = self.get(key)?;
        rules::bind(&s.fd, &mut s.state, addr)
    }

    pub(crate) fn listen(&mut self, key: u32, backlog: usize) -> Result<()> {
        let s = self.get(key)?;
        rules::listen(&s.fd, s.kind, &mut s.state, backlog)
    }

    pub(crate) fn local_addr(&mut self, key: u32) -> Result<SocketAddrV4> {
        rules::local_addr(&self.get(key)?.fd)
    }

    pub(crate) fn accept(&mut self, key: u32) -> Result<Op> {
        let s = self.get(key)?;
        rules::check_accept(s.kind, s.state)?;
        let turn = s.pops.take();
        Ok(Op::Accept { sock: key, turn })
    }

    pub(crate) fn connect(&mut self, key: u32, remote: SocketAddrV4) -> Result<Op> {
        let s = self.get(key)?;
        rules::check_connect(s.state)?;
        s.state = State::Connecting;
        if s.kind == SocketKind::Datagram {
            // A datagram "connection" only fixes the peer: done synchronously.
            let r = sys::connect(&s.fd, remote);
            return Ok(Op::Connect {
                sock: key,
                remote,
                started: true,
                early: Some(
                    r.map(|_| ())
                        .map_err(|e| connection_error(e, &format!("connect to {remote}"))),
                ),
            });
        }
        Ok(Op::Connect {
            sock: key,
            remote,
            started: false,
            early: None,
        })
    }

    pub(crate) fn push(&mut self, key: u32, sga: Sga, to: Option<SocketAddrV4>) -> Result<Op> {
        let s = self.get(key)?;
        rules::check_push(s.kind, s.state, sga.len(), to)?;
        let turn = s.pushes.take();
        Ok(Op::Push {
            sock: key,
            sga: Some(sga),
            to,
            turn,
        })
    }

    pub(crate) fn pop(&mut self, key: u32) -> Result<Op> {
        let s = self.get(key)?;
        rules::check_pop(s.kind, s.state)?;
        let turn = s.pops.take();
        Ok(Op::Pop { sock: key, turn })
    }

    /// Closes the socket; its pending operations complete with `Canceled`.
    pub(crate) fn close(&mut self, key: u32) -> Result<()> {
        let mut s = self
            .sockets
            .remove(key)
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "the socket is already closed"))?;
        s.readers.wake_all();
        s.writers.wake_all();
        s.pops.wake_all();
        s.pushes.wake_all();
        if s.in_flight > 0 {
            let cancel = opcode::AsyncCancel2::new(
                types::CancelBuilder::fd(types::Fd(s.fd.as_raw_fd())).all(),
            )
            .build()
            .user_data(user_data(Tag::Cancel, key));
            // The cancel carries no pointers; if the queue is full the submissions still
            // complete on their own, and the graveyard waits for them either way.
            let _ = self.push_entry(&cancel);
            let _ = self.submit();
            // The armed requests hold the file open until their completions are reaped (at
            // the next poll): the peer must not wait that long for our FIN.
            if s.kind == SocketKind::Stream {
                let _ = sys::shutdown_write(&s.fd);
            }
            self.graveyard.push((key, s));
        }
        Ok(())
    }

    fn push_entry(&mut self, entry: &squeue::Entry) -> Result<()> {
        for _ in 0..2 {
            // SAFETY: every pointer in the entries this engine builds points into a boxed
            // `Tx`/`Rx`, a socket's boxed address, or a lent pool buffer, all owned by the
            // socket (or the ring of lent buffers) until the submission's last completion is
            // reaped; a closed socket waits in the graveyard until then.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                self.queued += 1;
                return Ok(());
            }
            self.submit()?;
        }
        Err(Error::new(
            ErrorKind::NoBufferSpace,
            "the io_uring submission queue is full; wait for operations to complete",
        ))
    }

    /// Submits what is queued, and runs the task work the kernel left for this thread (the
    /// completions it holds back until our next system call), in one `io_uring_enter`; none
    /// when there is neither.
    fn submit(&mut self) -> Result<()> {
        if self.queued == 0 && !self.ring.submission().taskrun() {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.reap();
                }
                Err(e) => return Err(Error::os(e, "io_uring_enter")),
            }
        }
    }

    fn arm_accept(&mut self, key: u32) -> Result<()> {
        let s = self.get(key)?;
        let entry = opcode::AcceptMulti::new(types::Fd(s.fd.as_raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Tag::Accept, key));
        s.accept_armed = true;
        s.in_flight += 1;
        self.push_entry(&entry)
    }

    fn arm_recv(&mut self, key: u32) -> Result<()> {
        let s = self.get(key)?;
        let entry = opcode::RecvMulti::new(types::Fd(s.fd.as_raw_fd()), BGID)
            .build()
            .user_data(user_data(Tag::Recv, key));
        s.recv_armed = true;
        s.in_flight += 1;
        self.push_entry(&entry)
    }

    fn start_connect(&mut self, key: u32, remote: SocketAddrV4) -> Result<()> {
        let s = self.get(key)?;
        *s.connect_to = sys::to_sockaddr(remote);
        let entry = opcode::Connect::new(
            types::Fd(s.fd.as_raw_fd()),
            (&*s.connect_to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
        .build()
        .user_data(user_data(Tag::Connect, key));
        s.in_flight += 1;
        self.push_entry(&entry)
    }

    fn start_recvmsg(&mut self, key: u32) -> Result<()> {
        let Some(mut buf) = self.pool.alloc() else {
            return Err(pool_exhausted(&self.pool));
        };
        let room = buf.tailroom();
        let base = buf.append(room).as_mut_ptr();
        let s = self.get(key)?;
        let mut rx = Box::new(Rx {
            buf,
            iov: libc::iovec {
                iov_base: base.cast(),
                iov_len: room,
            },
            // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
            msg: unsafe { std::mem::zeroed() },
            from: sys::to_sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            result: None,
        });
        rx.msg.msg_name = (&mut rx.from as *mut libc::sockaddr_in).cast();
        rx.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        rx.msg.msg_iov = &mut rx.iov;
        rx.msg.msg_iovlen = 1;
        let entry = opcode::RecvMsg::new(types::Fd(s.fd.as_raw_fd()), &mut rx.msg)
            .build()
            .user_data(user_data(Tag::RecvMsg, key));
        s.rx = Some(rx);
        s.in_flight += 1;
        self.push_entry(&entry)
    }

    /// Builds the send of `tx`'s unsent bytes and queues it.
    fn submit_tx(&mut self, key: u32) -> Result<()> {
        let s = self.get(key)?;
        let fd = types::Fd(s.fd.as_raw_fd());
        let tx = s.tx.as_mut().expect("a send is in progress");
        tx.iovecs.clear();
        let mut skip = tx.sent;
        for seg in tx.sga.segments() {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            if tx.iovecs.len() == MAX_IOV {
                break;
            }
            tx.iovecs.push(libc::iovec {
                iov_base: seg[skip..].as_ptr().cast_mut().cast(),
                iov_len: seg.len() - skip,
            });
            skip = 0;
        }
        // SAFETY: msghdr is plain old data; all-zero is a valid (empty) value.
        tx.msg = unsafe { std::mem::zeroed() };
        tx.msg.msg_iov = tx.iovecs.as_mut_ptr();
        tx.msg.msg_iovlen = tx.iovecs.len() as _;
        if let Some(to) = &mut tx.to {
            tx.msg.msg_name = (to as *mut libc::sockaddr_in).cast();
            tx.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        let flags = libc::MSG_NOSIGNAL as u32;
        let entry = if tx.zc {
            opcode::SendMsgZc::new(fd, &tx.msg).flags(flags).build()
        } else {
            opcode::SendMsg::new(fd, &tx.msg).flags(flags).build()
        };
        let entry = entry.user_data(user_data(Tag::Send, key));
        s.in_flight += 1;
        self.push_entry(&entry)
    }

    /// Submits what is queued and reaps completions; sleeps up to `timeout_ms` in the kernel
    /// if nothing has completed and submissions are in flight. Returns whether anything
    /// completed.
    pub(crate) fn poll(&mut self, timeout_ms: i32) -> Result<bool> {
        self.submit()?;
        let mut n = self.reap();
        if n == 0 && timeout_ms > 0 && self.busy() {
            let ts = types::Timespec::from(Duration::from_millis(timeout_ms as u64));
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => {}
                Err(e) => return Err(Error::os(e, "io_uring_enter")),
            }
            n = self.reap();
        }
        self.refill();
        Ok(n > 0)
    }

    fn busy(&self) -> bool {
        self.sockets.values().any(|s| s.in_flight > 0) || !self.graveyard.is_empty()
    }

    fn refill(&mut self) {
        while self.bufring.deficit > 0 {
            let Some(buf) = self.pool.alloc() else { break };
            self.bufring.lend(buf);
            self.bufring.deficit -= 1;
        }
    }

    fn reap(&mut self) -> usize {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        reaped.extend(
            self.ring
                .completion()
                .map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())),
        );
        for &(ud, res, flags) in &reaped {
            self.complete(ud, res, flags);
        }
        let n = reaped.len();
        self.reaped = reaped;
        n
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        let (tag, key) = split_user_data(ud);
        if tag == Tag::Cancel as u8 {
            return;
        }
        // A received buffer goes to a live socket, or back to the ring.
        let mut received = None;
        if tag == Tag::Recv as u8 && res > 0 {
            if let Some(bid) = cqueue::buffer_select(flags) {
                received = self.bufring.take(bid, res as usize);
            }
        }
        let live = self.sockets.get_mut(key).is_some();
        let s = match self.sockets.get_mut(key) {
            Some(s) => s,
            None => match self.graveyard.iter_mut().find(|(k, _)| *k == key) {
                Some((_, s)) => s,
                None => {
                    debug_assert!(false, "completion for an unknown socket");
                    return;
                }
            },
        };
        let last = match tag {
            t if t == Tag::Accept as u8 => {
                if res >= 0 {
                    // SAFETY: a successful accept completion's result is a new descriptor
                    // that nothing else owns.
                    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(res) };
                    if live {
                        s.backlog.push_back(fd);
                    }
                } else if res != -libc::ECANCELED {
                    s.accept_error = Some(Error::os(io::Error::from_raw_os_error(-res), "accept"));
                }
                let last = !cqueue::more(flags);
                if last {
                    s.accept_armed = false;
                }
                s.readers.wake_all();
                last
            }
            t if t == Tag::Recv as u8 => {
                match res {
                    n if n > 0 => {
                        if let Some(buf) = received.take() {
                            if live {
                                s.received.push_back(buf);
                            }
                        }
                    }
                    0 => s.eof = true,
                    e if e == -libc::ENOBUFS || e == -libc::ECANCELED => {}
                    e => {
                        s.rx_error = Some(connection_error(io::Error::from_raw_os_error(-e), "pop"))
                    }
                }
                let last = !cqueue::more(flags);
                if last {
                    s.recv_armed = false;
                }
                s.readers.wake_all();
                last
            }
            t if t == Tag::Connect as u8 => {
                s.connect_result = Some(if res >= 0 {
                    Ok(())
                } else {
                    let doing = format!("connect to {}", sys::from_sockaddr(&s.connect_to));
                    Err(connection_error(io::Error::from_raw_os_error(-res), &doing))
                });
                s.writers.wake_all();
                true
            }
            t if t == Tag::RecvMsg as u8 => {
                if let Some(rx) = &mut s.rx {
                    rx.result = Some(if res >= 0 {
                        Ok((res as usize, sys::from_sockaddr(&rx.from)))
                    } else {
                        Err(connection_error(io::Error::from_raw_os_error(-res), "pop"))
                    });
                }
                s.readers.wake_all();
                true
            }
            t if t == Tag::Send as u8 => {
                if cqueue::notif(flags) {
                    s.zc_notifs -= 1;
                    if s.zc_notifs == 0 {
                        s.zc_hold.clear();
                    }
                    true
                } else {
                    let more = cqueue::more(flags);
                    if more {
                        s.zc_notifs += 1;
                    }
                    let mut resubmit = false;
                    if let Some(tx) = &mut s.tx {
                        if res < 0 {
                            tx.result = Some(Err(connection_error(
                                io::Error::from_raw_os_error(-res),
                                "push",
                            )));
                        } else {
                            tx.sent += res as usize;
                            if tx.sent < tx.total && res > 0 && live {
                                resubmit = true;
                            } else {
                                tx.result = Some(Ok(tx.sent));
                            }
                        }
                    }
                    s.writers.wake_all();
                    // The entry's memory is free once no notification is due for it.
                    let last = !more;
                    if last {
                        s.in_flight -= 1;
                    }
                    if resubmit {
                        if let Err(e) = self.submit_tx(key) {
                            if let Some(s) = self.sockets.get_mut(key) {
                                if let Some(tx) = &mut s.tx {
                                    tx.result = Some(Err(e));
                                }
                            }
                        }
                    }
                    self.bury(key);
                    if let Some(buf) = received {
                        self.bufring.lend(buf);
                    }
                    return;
                }
            }
            _ => {
                debug_assert!(false, "completion with an unknown tag");
                false
            }
        };
        if last {
            s.in_flight -= 1;
        }
        if let Some(buf) = received {
            // The socket is gone: the buffer goes straight back to the kernel.
            self.bufring.lend(buf);
        } else if tag == Tag::Recv as u8 && res > 0 {
            // Its buffer went to the socket: lend a fresh one in its place.
            self.bufring.deficit += 1;
        }
        self.bury(key);
    }

    /// Drops a closed socket once its last submission has completed.
    fn bury(&mut self, key: u32) {
        if let Some(i) = self
            .graveyard
            .iter()
            .position(|(k, s)| *k == key && s.in_flight == 0)
        {
            self.graveyard.swap_remove(i);
        }
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // The kernel may still write into lent buffers and read pushed ones: cancel
        // everything and wait (briefly) for the completions before the memory goes.
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(Tag::Cancel, 0));
        let _ = self.push_entry(&cancel);
        for _ in 0..100 {
            if !self.busy() {
                break;
            }
            if self.poll(10).is_err() {
                break;
            }
        }
    }
}

/// An operation on a uring socket.
pub(crate) enum Op {
    Accept {
        sock: u32,
        turn: u64,
    },
    Connect {
        sock: u32,
        remote: SocketAddrV4,
        started: bool,
        early: Option<Result<()>>,
    },
    Push {
        sock: u32,
        sga: Option<Sga>,
        to: Option<SocketAddrV4>,
        turn: u64,
    },
    Pop {
        sock: u32,
        turn: u64,
    },
}

impl Op {
    pub(crate) fn poll(
        &mut self,
        u: &mut UringEngine,
        queues: &mut QueueTable,
        cx: &mut Context<'_>,
    ) -> Poll<QValue> {
        match self {
            Op::Accept { sock, turn } => {
                let key = *sock;
                let Some(s) = u.sockets.get_mut(key) else {
                    return Poll::Ready(canceled());
                };
                if !s.pops.is_turn(*turn) {
                    s.pops.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let value = if let Some(fd) = s.backlog.pop_front() {
                    let peer = sys::peer_addr(&fd);
                    let added = u.add(fd, SocketKind::Stream, State::Connected);
                    let value = added.and_then(|local| {
                        let peer = peer.map_err(|e| Error::os(e, "getpeername"));
                        let qd = queues.insert(QueueKind::UringSocket, local);
                        match (qd, peer) {
                            (Ok(qd), Ok(peer)) => Ok(QValue::Accepted { qd, peer }),
                            (Ok(qd), Err(e)) => {
                                let _ = queues.remove(qd);
                                let _ = u.close(local);
                                Err(e)
                            }
                            (Err(e), _) => {
                                let _ = u.close(local);
                                Err(e)
                            }
                        }
                    });
                    value.unwrap_or_else(QValue::Failed)
                } else if let Some(e) = s.accept_error.take() {
                    QValue::Failed(e)
                } else {
                    s.readers.park(cx.waker());
                    if !s.accept_armed {
                        if let Err(e) = u.arm_accept(key) {
                            return Poll::Ready(QValue::Failed(e));
                        }
                    }
                    return Poll::Pending;
                };
                if let Some(s) = u.sockets.get_mut(key) {
                    s.pops.finish(*turn);
                }
                Poll::Ready(value)
            }
            Op::Connect {
                sock,
                remote,
                started,
                early,
            } => {
                let key = *sock;
                let Some(s) = u.sockets.get_mut(key) else {
                    return Poll::Ready(canceled());
                };
                let result = match early.take() {
                    Some(r) => Some(r),
                    None => s.connect_result.take(),
                };
                match result {
                    Some(Ok(())) => {
                        s.state = State::Connected;
                        Poll::Ready(QValue::Connected)
                    }
                    Some(Err(e)) => {
                        s.state = State::Fresh;
                        Poll::Ready(QValue::Failed(e))
                    }
                    None => {
                        s.writers.park(cx.waker());
                        if !*started {
                            *started = true;
                            if let Err(e) = u.start_connect(key, *remote) {
                                return Poll::Ready(QValue::Failed(e));
                            }
                        }
                        Poll::Pending
                    }
                }
            }
            Op::Push {
                sock,
                sga,
                to,
                turn,
            } => {
                let key = *sock;
                let Some(s) = u.sockets.get_mut(key) else {
                    return Poll::Ready(canceled());
                };
                if !s.pushes.is_turn(*turn) {
                    s.pushes.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                if let Some(sga) = sga.take() {
                    let total = sga.len();
                    let mut tx = s.spare_tx.take().unwrap_or_else(|| {
                        Box::new(Tx {
                            zc: false,
                            sga: Sga::new(),
                            total: 0,
                            sent: 0,
                            to: None,
                            iovecs: Vec::with_capacity(MAX_IOV),
                            // SAFETY: msghdr is plain old data; all-zero is a valid value.
                            msg: unsafe { std::mem::zeroed() },
                            result: None,
                        })
                    });
                    tx.zc = s.kind == SocketKind::Stream && total >= ZC_THRESHOLD;
                    tx.sga = sga;
                    tx.total = total;
                    tx.sent = 0;
                    tx.to = to.map(sys::to_sockaddr);
                    tx.result = None;
                    s.tx = Some(tx);
                    s.writers.park(cx.waker());
                    if let Err(e) = u.submit_tx(key) {
                        let s = u.sockets.get_mut(key).expect("socket checked above");
                        s.tx = None;
                        s.pushes.finish(*turn);
                        return Poll::Ready(QValue::Failed(e));
                    }
                    return Poll::Pending;
                }
                let done = s.tx.as_mut().and_then(|tx| tx.result.take());
                let Some(result) = done else {
                    s.writers.park(cx.waker());
                    return Poll::Pending;
                };
                let mut tx = s.tx.take().expect("a result comes from a send");
                let sga = std::mem::take(&mut tx.sga);
                if s.zc_notifs > 0 {
                    s.zc_hold.push(sga);
                }
                s.spare_tx = Some(tx);
                s.pushes.finish(*turn);
                Poll::Ready(match result {
                    Ok(bytes) => QValue::Pushed { bytes },
                    Err(e) => QValue::Failed(e),
                })
            }
            Op::Pop { sock, turn } => {
                let key = *sock;
                let Some(s) = u.sockets.get_mut(key) else {
                    return Poll::Ready(canceled());
                };
                if !s.pops.is_turn(*turn) {
                    s.pops.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let value = match s.kind {
                    SocketKind::Stream => {
                        if let Some(buf) = s.received.pop_front() {
                            QValue::Popped {
                                sga: Sga::from(buf),
                                from: None,
                            }
                        } else if let Some(e) = &s.rx_error {
                            QValue::Failed(e.clone())
                        } else if s.eof {
                            QValue::EndOfStream
                        } else {
                            s.readers.park(cx.waker());
                            if !s.recv_armed {
                                u.refill();
                                if let Err(e) = u.arm_recv(key) {
                                    return Poll::Ready(QValue::Failed(e));
                                }
                            }
                            return Poll::Pending;
                        }
                    }
                    SocketKind::Datagram => {
                        let done = s.rx.as_mut().and_then(|rx| rx.result.take());
                        match done {
                            Some(result) => {
                                let rx = s.rx.take().expect("a result comes from a receive");
                                match result {
                                    Ok((n, from)) => {
                                        let mut buf = rx.buf;
                                        buf.truncate(n);
                                        QValue::Popped {
                                            sga: Sga::from(buf),
                                            from: Some(from),
                                        }
                                    }
                                    Err(e) => QValue::Failed(e),
                                }
                            }
                            None => {
                                s.readers.park(cx.waker());
                                if s.rx.is_none() {
                                    if let Err(e) = u.start_recvmsg(key) {
                                        return Poll::Ready(QValue::Failed(e));
                                    }
                                }
                                return Poll::Pending;
                            }
                        }
                    }
                };
                let s = u.sockets.get_mut(key).expect("socket checked above");
                s.pops.finish(*turn);
                Poll::Ready(value)
            }
        }
    }
}
