//! The `kernel` libOS: Linux TCP and UDP sockets, non-blocking, driven by epoll.
//!
//! Each operation tries its system call as soon as it is issued; if the kernel says "would
//! block", the operation parks its waker on the socket and epoll's edge-triggered readiness
//! (collected by [`KernelEngine::poll`]) wakes it to try again. Operations of one direction of
//! one socket take *turns* in the order they were issued, so two pops (or two pushes) on a
//! stream never interleave their bytes.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll};

use bypass_runtime::{Buffer, BufferPool, Sga};

use crate::error::{Error, ErrorKind, Result};
use crate::queue::{QueueKind, QueueTable};
use crate::slab::Slab;
use crate::socket_rules::{
    self as rules, canceled, connection_error, pool_exhausted, SocketState as State,
};
use crate::sys;
use crate::turns::{Turns, Waiters};
use crate::types::{QValue, SocketKind};

/// Slices handed to one `sendmsg`.
const MAX_IOV: usize = 64;
/// epoll events read per poll.
const EVENTS_PER_POLL: usize = 256;
/// While at most this many sockets have parked operations, a spinning poll retries their
/// system calls directly instead of asking epoll first: on the critical path of a round trip
/// that saves one system call per side, and the retries cost what epoll_wait would.
const DIRECT_SPIN_SOCKETS: usize = 4;

struct Socket {
    fd: OwnedFd,
    kind: SocketKind,
    state: State,
    readers: Waiters,
    writers: Waiters,
    pops: Turns,
    pushes: Turns,
    /// Listed in [`KernelEngine::parked`].
    listed: bool,
}

/// The sockets of one LibOs and their epoll instance.
pub(crate) struct KernelEngine {
    epoll: OwnedFd,
    sockets: Slab<Socket>,
    events: Vec<libc::epoll_event>,
    /// Receive buffers (64 KiB, so one pop takes what one recv can give).
    pool: BufferPool,
    /// Sockets that have parked operations (maybe stale: a wake empties a socket's waiters).
    parked: Vec<u32>,
    /// Polls that went through epoll (paces the pruning of `parked`).
    epoll_polls: u64,
    /// A receive buffer kept across receives that found nothing, so a spinning pop does not
    /// take and return a pool chunk on every try.
    spare: Option<Buffer>,
}

impl KernelEngine {
    pub(crate) fn new(pool: BufferPool, max_sockets: usize) -> Result<KernelEngine> {
        let epoll = sys::epoll_create().map_err(|e| Error::os(e, "epoll_create1"))?;
        Ok(KernelEngine {
            epoll,
            sockets: Slab::new(max_sockets),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_POLL],
            pool,
            parked: Vec::new(),
            epoll_polls: 0,
            spare: None,
        })
    }

    pub(crate) fn socket(&mut self, kind: SocketKind) -> Result<u32> {
        let fd = rules::open_socket(kind)?;
        self.add(fd, kind, State::Fresh)
    }

    fn add(&mut self, fd: OwnedFd, kind: SocketKind, state: State) -> Result<u32> {
        let raw = fd.as_raw_fd();
        let key = self
            .sockets
            .insert(Socket {
                fd,
                kind,
                state,
                readers: Waiters::default(),
                writers: Waiters::default(),
                pops: Turns::default(),
                pushes: Turns::default(),
                listed: false,
            })
            .ok_or_else(|| Error::new(ErrorKind::NoBufferSpace, "too many kernel sockets open"))?;
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = sys::epoll_add(&self.epoll, raw, events, u64::from(key)) {
            self.sockets.remove(key);
            return Err(Error::os(e, "epoll_ctl(ADD)"));
        }
        Ok(key)
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
        Ok(Op::Accept { sock: key })
    }

    pub(crate) fn connect(&mut self, key: u32, remote: SocketAddrV4) -> Result<Op> {
        let s = self.get(key)?;
        rules::check_connect(s.state)?;
        s.state = State::Connecting;
        Ok(Op::Connect {
            sock: key,
            remote,
            started: false,
        })
    }

    pub(crate) fn push(&mut self, key: u32, sga: Sga, to: Option<SocketAddrV4>) -> Result<Op> {
        let s = self.get(key)?;
        rules::check_push(s.kind, s.state, sga.len(), to)?;
        let turn = s.pushes.take();
        Ok(Op::Push {
            sock: key,
            sga,
            sent: 0,
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
        Ok(())
    }

    /// Wakes the operations that can progress. Waits up to `timeout_ms` (0 = do not wait) for
    /// readiness from epoll; a spinning poll with few parked sockets skips epoll and wakes
    /// their operations to retry directly. Returns whether any operation was woken.
    pub(crate) fn poll(&mut self, timeout_ms: i32) -> Result<bool> {
        if self.sockets.len() == 0 {
            return Ok(false);
        }
        if timeout_ms == 0 && self.parked.len() <= DIRECT_SPIN_SOCKETS {
            let mut woke = false;
            for key in self.parked.drain(..) {
                if let Some(s) = self.sockets.get_mut(key) {
                    s.listed = false;
                    woke |= !s.readers.is_empty() || !s.writers.is_empty();
                    s.readers.wake_all();
                    s.writers.wake_all();
                }
            }
            return Ok(woke);
        }
        // Epoll covers every socket now; the list only has to stay complete for when few
        // sockets wait again. Drop the entries whose operations were all woken, but only
        // while the list is short or once in a while, so many sockets do not cost a scan
        // per poll.
        self.epoll_polls = self.epoll_polls.wrapping_add(1);
        if self.parked.len() <= 64 || self.epoll_polls.is_multiple_of(64) {
            let sockets = &mut self.sockets;
            self.parked.retain(|&key| match sockets.get_mut(key) {
                Some(s) if !s.readers.is_empty() || !s.writers.is_empty() => true,
                Some(s) => {
                    s.listed = false;
                    false
                }
                None => false,
            });
        }
        let n = sys::epoll_wait(&self.epoll, &mut self.events, timeout_ms)
            .map_err(|e| Error::os(e, "epoll_wait"))?;
        for i in 0..n {
            let ev = self.events[i];
            let Some(s) = self.sockets.get_mut(ev.u64 as u32) else {
                continue;
            };
            let flags = ev.events as i32;
            if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                s.readers.wake_all();
            }
            if flags & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                s.writers.wake_all();
            }
        }
        Ok(n > 0)
    }

    /// Notes that an operation of socket `key` parked.
    fn note_parked(&mut self, key: u32) {
        if let Some(s) = self.sockets.get_mut(key) {
            if !s.listed {
                s.listed = true;
                self.parked.push(key);
            }
        }
    }
}

/// An operation on a kernel socket.
pub(crate) enum Op {
    Accept {
        sock: u32,
    },
    Connect {
        sock: u32,
        remote: SocketAddrV4,
        started: bool,
    },
    Push {
        sock: u32,
        sga: Sga,
        sent: usize,
        to: Option<SocketAddrV4>,
        turn: u64,
    },
    Pop {
        sock: u32,
        turn: u64,
    },
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Op {
    pub(crate) fn poll(
        &mut self,
        k: &mut KernelEngine,
        queues: &mut QueueTable,
        cx: &mut Context<'_>,
    ) -> Poll<QValue> {
        let result = self.try_progress(k, queues, cx);
        if result.is_pending() {
            k.note_parked(self.socket());
        }
        result
    }

    fn socket(&self) -> u32 {
        match *self {
            Op::Accept { sock }
            | Op::Connect { sock, .. }
            | Op::Push { sock, .. }
            | Op::Pop { sock, .. } => sock,
        }
    }

    fn try_progress(
        &mut self,
        k: &mut KernelEngine,
        queues: &mut QueueTable,
        cx: &mut Context<'_>,
    ) -> Poll<QValue> {
        match self {
            Op::Accept { sock } => {
                let Some(s) = k.sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                match sys::accept(&s.fd) {
                    Ok((fd, peer)) => {
                        let value = k
                            .add(fd, SocketKind::Stream, State::Connected)
                            .and_then(|local| {
                                queues
                                    .insert(QueueKind::KernelSocket, local)
                                    .inspect_err(|_| {
                                        let _ = k.close(local);
                                    })
                            })
                            .map(|qd| QValue::Accepted { qd, peer });
                        Poll::Ready(value.unwrap_or_else(QValue::Failed))
                    }
                    Err(e) if would_block(&e) => {
                        s.readers.park(cx.waker());
                        Poll::Pending
                    }
                    Err(e) => Poll::Ready(QValue::Failed(Error::os(e, "accept"))),
                }
            }
            Op::Connect {
                sock,
                remote,
                started,
            } => {
                let Some(s) = k.sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                let doing = format!("connect to {remote}");
                let result = if !*started {
                    *started = true;
                    sys::connect(&s.fd, *remote)
                } else {
                    match sys::take_error(&s.fd) {
                        Ok(Some(e)) => Err(e),
                        // No error: connected once the socket has a peer, else still in progress.
                        Ok(None) => Ok(sys::peer_addr(&s.fd).is_ok()),
                        Err(e) => Err(e),
                    }
                };
                match result {
                    Ok(true) => {
                        s.state = State::Connected;
                        Poll::Ready(QValue::Connected)
                    }
                    Ok(false) => {
                        s.writers.park(cx.waker());
                        Poll::Pending
                    }
                    Err(e) => {
                        s.state = State::Bound;
                        Poll::Ready(QValue::Failed(connection_error(e, &doing)))
                    }
                }
            }
            Op::Push {
                sock,
                sga,
                sent,
                to,
                turn,
            } => {
                let Some(s) = k.sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                if !s.pushes.is_turn(*turn) {
                    s.pushes.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let total = sga.len();
                loop {
                    // Most pushes are one segment: only a longer Sga fills an iovec array.
                    let one;
                    let mut many;
                    let slices: &[io::IoSlice<'_>] = if *sent == 0 && sga.num_segments() == 1 {
                        one = [io::IoSlice::new(
                            sga.segments().next().expect("one segment"),
                        )];
                        &one
                    } else {
                        many = [io::IoSlice::new(&[]); MAX_IOV];
                        let mut n = 0;
                        let mut skip = *sent;
                        for seg in sga.segments() {
                            if skip >= seg.len() {
                                skip -= seg.len();
                                continue;
                            }
                            if n == MAX_IOV {
                                break;
                            }
                            many[n] = io::IoSlice::new(&seg[skip..]);
                            skip = 0;
                            n += 1;
                        }
                        &many[..n]
                    };
                    match sys::send_vectored(&s.fd, slices, *to) {
                        Ok(bytes) => {
                            *sent += bytes;
                            if *sent == total || s.kind == SocketKind::Datagram {
                                s.pushes.finish(*turn);
                                return Poll::Ready(QValue::Pushed { bytes: *sent });
                            }
                        }
                        Err(e) if would_block(&e) => {
                            s.writers.park(cx.waker());
                            return Poll::Pending;
                        }
                        Err(e) => {
                            s.pushes.finish(*turn);
                            return Poll::Ready(QValue::Failed(connection_error(e, "push")));
                        }
                    }
                }
            }
            Op::Pop { sock, turn } => {
                let Some(s) = k.sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                if !s.pops.is_turn(*turn) {
                    s.pops.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let Some(mut buf) = k.spare.take().or_else(|| k.pool.alloc()) else {
                    s.pops.finish(*turn);
                    return Poll::Ready(QValue::Failed(pool_exhausted(&k.pool)));
                };
                let room = buf.tailroom();
                let result = match s.kind {
                    SocketKind::Stream => sys::recv(&s.fd, buf.append(room)).map(|n| (n, None)),
                    SocketKind::Datagram => sys::recv_from(&s.fd, buf.append(room)),
                };
                let value = match result {
                    Err(e) if would_block(&e) => {
                        buf.truncate(0);
                        k.spare = Some(buf);
                        s.readers.park(cx.waker());
                        return Poll::Pending;
                    }
                    Err(e) => QValue::Failed(connection_error(e, "pop")),
                    Ok((0, _)) if s.kind == SocketKind::Stream => QValue::EndOfStream,
                    Ok((n, from)) => {
                        buf.truncate(n);
                        QValue::Popped {
                            sga: Sga::from(buf),
                            from: if s.kind == SocketKind::Datagram {
                                from
                            } else {
                                None
                            },
                        }
                    }
                };
                s.pops.finish(*turn);
                Poll::Ready(value)
            }
        }
    }
}
