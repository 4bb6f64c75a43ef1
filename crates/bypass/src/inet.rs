//! The user-space stack libOSes (`sim`, and the real devices as they plug in): queue-API sockets
//! over `bypass-inet`'s [`Stack`].
//!
//! The stack is sans-I/O: [`InetEngine::poll`] gives it the time and lets it move frames. An
//! operation that cannot progress registers its waker with the stack for one interest
//! (readable, writable, acceptable, connected). The stack keeps one waker per interest per
//! socket, so operations of one direction take *turns* (as in the kernel libOS): only the
//! operation whose turn it is registers with the stack; the others park on the socket here and
//! are woken when the turn passes.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::task::{Context, Poll};

use bypass_devices::Device;
use bypass_inet::{Error as StackError, Interest, SocketHandle, Stack, TcpState};
use bypass_runtime::Sga;

use crate::error::{Error, ErrorKind, Result};
use crate::queue::{QueueKind, QueueTable};
use crate::slab::Slab;
use crate::turns::{Turns, Waiters};
use crate::types::{QValue, SocketKind};

/// The most bytes one pop of a stream gathers from the segments already received (the same
/// as one receive of the kernel libOS).
const POP_GATHER_BYTES: usize = 64 * 1024;

/// The device under a user-space stack, whatever it is.
pub(crate) type AnyDevice = Box<dyn Device>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Fresh,
    Bound(SocketAddrV4),
    Listening(SocketHandle),
    Connecting(SocketHandle),
    Connected(SocketHandle),
    /// A UDP socket bound in the stack.
    Datagram(SocketHandle),
}

struct Socket {
    kind: SocketKind,
    state: State,
    /// The local port once bound (explicitly or by a connect).
    port: Option<u16>,
    pops: Turns,
    pushes: Turns,
    readers: Waiters,
    writers: Waiters,
}

impl Socket {
    fn handle(&self) -> Option<SocketHandle> {
        match self.state {
            State::Listening(h)
            | State::Connecting(h)
            | State::Connected(h)
            | State::Datagram(h) => Some(h),
            State::Fresh | State::Bound(_) => None,
        }
    }
}

/// Sockets of one LibOs over one user-space stack.
pub(crate) struct InetEngine {
    stack: Stack<AnyDevice>,
    sockets: Slab<Socket>,
    /// Scratch for datagrams pushed as several segments.
    gather: Vec<u8>,
    next_port: u16,
}

/// Maps a stack error to the API's, saying what was being done.
fn map_err(e: StackError, doing: &str) -> Error {
    let kind = match e {
        StackError::InvalidHandle => ErrorKind::BadQueue,
        StackError::WrongSocketKind => ErrorKind::WrongQueueKind,
        StackError::WouldBlock => ErrorKind::NoBufferSpace,
        StackError::AddressInUse => ErrorKind::AddressInUse,
        StackError::NoPortsAvailable => ErrorKind::AddressNotAvailable,
        StackError::TooManySockets => ErrorKind::NoBufferSpace,
        StackError::InvalidState => ErrorKind::NotConnected,
        StackError::InvalidArgument => ErrorKind::InvalidArgument,
        StackError::Unreachable => ErrorKind::Unreachable,
        StackError::MessageTooLong => ErrorKind::MessageTooLong,
        StackError::ConnectionReset => ErrorKind::ConnectionReset,
        StackError::ConnectionRefused => ErrorKind::ConnectionRefused,
        StackError::TimedOut => ErrorKind::TimedOut,
        StackError::EndOfStream => ErrorKind::NotConnected,
    };
    Error::new(kind, format!("{doing}: {e}"))
}

fn closed() -> Error {
    Error::new(ErrorKind::BadQueue, "the socket is closed")
}

impl InetEngine {
    pub(crate) fn new(stack: Stack<AnyDevice>, max_sockets: usize) -> InetEngine {
        InetEngine {
            stack,
            sockets: Slab::new(max_sockets),
            gather: Vec::new(),
            next_port: 49152,
        }
    }

    /// Lets the stack send what the last turn left queued, then receive and run its timers at
    /// time `now`. What the received segments call for is sent by the first push of the
    /// application's turn that follows (an acknowledgment then rides on the reply), or else at
    /// the next poll. Returns whether anything happened or waits to be sent.
    pub(crate) fn poll(&mut self, now: bypass_runtime::Instant) -> bool {
        self.stack.flush();
        self.stack.poll_input(now)
    }

    fn get(&mut self, key: u32) -> Result<&mut Socket> {
        self.sockets.get_mut(key).ok_or_else(closed)
    }

    pub(crate) fn socket(&mut self, kind: SocketKind) -> Result<u32> {
        self.sockets
            .insert(Socket {
                kind,
                state: State::Fresh,
                port: None,
                pops: Turns::default(),
                pushes: Turns::default(),
                readers: Waiters::default(),
                writers: Waiters::default(),
            })
            .ok_or_else(|| Error::new(ErrorKind::NoBufferSpace, "too many sockets open"))
    }

    fn our_ip(&self) -> Ipv4Addr {
        self.stack.ipv4_addr().into()
    }

    fn port_taken(&self, kind: SocketKind, port: u16) -> bool {
        self.sockets.values().any(|s| {
            s.kind == kind
                && s.port == Some(port)
                && !matches!(s.state, State::Connected(_) | State::Connecting(_))
        })
    }

    fn free_port(&mut self, kind: SocketKind) -> Result<u16> {
        for _ in 0..16384 {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { 49152 } else { p + 1 };
            if !self.port_taken(kind, p) {
                return Ok(p);
            }
        }
        Err(Error::new(
            ErrorKind::AddressNotAvailable,
            "no free local port; close some sockets",
        ))
    }

    pub(crate) fn bind(&mut self, key: u32, mut addr: SocketAddrV4) -> Result<()> {
        let ours = self.our_ip();
        if !addr.ip().is_unspecified() && *addr.ip() != ours {
            return Err(Error::new(
                ErrorKind::AddressNotAvailable,
                format!("address {addr} is not this stack's address ({ours}); bind to {ours} or 0.0.0.0"),
            ));
        }
        let s = self.get(key)?;
        if s.state != State::Fresh {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "the socket is already bound",
            ));
        }
        let kind = s.kind;
        if addr.port() == 0 {
            addr.set_port(self.free_port(kind)?);
        } else if self.port_taken(kind, addr.port()) {
            return Err(Error::new(
                ErrorKind::AddressInUse,
                format!("address {addr} is already in use; pick another port or close the queue holding it"),
            ));
        }
        let state = match kind {
            SocketKind::Stream => State::Bound(addr),
            SocketKind::Datagram => State::Datagram(
                self.stack
                    .udp_bind(addr)
                    .map_err(|e| map_err(e, &format!("bind to {addr}")))?,
            ),
        };
        let s = self.get(key)?;
        s.state = state;
        s.port = Some(addr.port());
        Ok(())
    }

    pub(crate) fn listen(&mut self, key: u32, backlog: usize) -> Result<()> {
        let s = self.get(key)?;
        if s.kind != SocketKind::Stream {
            return Err(Error::new(
                ErrorKind::WrongQueueKind,
                "listen needs a stream (TCP) socket",
            ));
        }
        let State::Bound(addr) = s.state else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "listen needs a bound socket that is not yet listening or connected: call bind first",
            ));
        };
        let h = self
            .stack
            .tcp_listen(addr, backlog)
            .map_err(|e| map_err(e, &format!("listen on {addr}")))?;
        self.get(key)?.state = State::Listening(h);
        Ok(())
    }

    pub(crate) fn local_addr(&mut self, key: u32) -> Result<SocketAddrV4> {
        let ip = self.our_ip();
        let s = self.get(key)?;
        match (s.state, s.port) {
            (State::Bound(a), _) => Ok(a),
            (_, Some(p)) => Ok(SocketAddrV4::new(ip, p)),
            _ => Err(Error::new(
                ErrorKind::InvalidArgument,
                "the socket is not bound",
            )),
        }
    }

    pub(crate) fn accept(&mut self, key: u32) -> Result<Op> {
        let s = self.get(key)?;
        if !matches!(s.state, State::Listening(_)) {
            let msg = match s.kind {
                SocketKind::Datagram => {
                    "accept needs a listening stream socket, not a datagram socket"
                }
                SocketKind::Stream => "accept needs a listening socket: call bind and listen first",
            };
            return Err(Error::new(ErrorKind::WrongQueueKind, msg));
        }
        let turn = s.pops.take();
        Ok(Op::Accept { sock: key, turn })
    }

    pub(crate) fn connect(&mut self, key: u32, remote: SocketAddrV4) -> Result<Op> {
        let s = self.get(key)?;
        if s.kind != SocketKind::Stream {
            return Err(Error::new(
                ErrorKind::WrongQueueKind,
                "connect is for stream sockets here; use pushto on a datagram socket",
            ));
        }
        let local_port = match s.state {
            State::Fresh => None,
            State::Bound(a) => Some(a.port()),
            State::Listening(_) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "cannot connect a listening socket",
                ))
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::AlreadyConnected,
                    "the socket is already connected",
                ))
            }
        };
        let h = self
            .stack
            .tcp_connect(local_port, remote)
            .map_err(|e| map_err(e, &format!("connect to {remote}")))?;
        let s = self.get(key)?;
        s.state = State::Connecting(h);
        Ok(Op::Connect { sock: key, remote })
    }

    pub(crate) fn push(&mut self, key: u32, sga: Sga, to: Option<SocketAddrV4>) -> Result<Op> {
        let s = self.get(key)?;
        match (s.kind, s.state, to) {
            (SocketKind::Stream, _, Some(_)) => {
                return Err(Error::new(
                    ErrorKind::WrongQueueKind,
                    "pushto is for datagram sockets; use push on a stream",
                ))
            }
            (SocketKind::Stream, State::Connected(_), None) => {}
            (SocketKind::Stream, _, None) => {
                return Err(Error::new(
                    ErrorKind::NotConnected,
                    "push needs a connected stream socket",
                ))
            }
            (SocketKind::Datagram, _, None) => {
                return Err(Error::new(
                    ErrorKind::NotConnected,
                    "push on a datagram socket needs a destination: use pushto",
                ))
            }
            (SocketKind::Datagram, State::Fresh, Some(_)) => {
                // Sending from an unbound datagram socket binds it to a free port first.
                self.bind(key, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
            }
            (SocketKind::Datagram, _, Some(_)) => {}
        }
        let turn = self.get(key)?.pushes.take();
        Ok(Op::Push {
            sock: key,
            sga,
            turn,
            to,
            pushed: 0,
        })
    }

    pub(crate) fn pop(&mut self, key: u32) -> Result<Op> {
        let s = self.get(key)?;
        match (s.kind, s.state) {
            (SocketKind::Stream, State::Connected(_))
            | (SocketKind::Datagram, State::Datagram(_)) => {}
            (SocketKind::Stream, _) => {
                return Err(Error::new(
                    ErrorKind::NotConnected,
                    "pop needs a connected stream socket",
                ))
            }
            (SocketKind::Datagram, _) => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "pop on a datagram socket needs bind first",
                ))
            }
        }
        let turn = s.pops.take();
        Ok(Op::Pop { sock: key, turn })
    }

    /// Closes the socket: a connection closes gracefully (queued data and FIN still go out);
    /// pending operations complete with `Canceled`.
    pub(crate) fn close(&mut self, key: u32) -> Result<()> {
        let mut s = self.sockets.remove(key).ok_or_else(closed)?;
        let r = match s.state {
            State::Listening(h) => self.stack.tcp_close_listener(h),
            State::Connecting(h) => self.stack.tcp_abort(h),
            State::Connected(h) => self.stack.tcp_close(h),
            State::Datagram(h) => self.stack.udp_close(h),
            State::Fresh | State::Bound(_) => Ok(()),
        };
        s.readers.wake_all();
        s.writers.wake_all();
        s.pops.wake_all();
        s.pushes.wake_all();
        // The stack may already have freed a failed connection: that is a closed socket too.
        match r {
            Ok(()) | Err(StackError::InvalidHandle) => Ok(()),
            Err(e) => Err(map_err(e, "close")),
        }
    }
}

/// An operation on a user-space stack socket.
pub(crate) enum Op {
    Accept {
        sock: u32,
        turn: u64,
    },
    Connect {
        sock: u32,
        remote: SocketAddrV4,
    },
    Push {
        sock: u32,
        sga: Sga,
        turn: u64,
        to: Option<SocketAddrV4>,
        pushed: usize,
    },
    Pop {
        sock: u32,
        turn: u64,
    },
}

fn canceled() -> QValue {
    QValue::Failed(Error::new(
        ErrorKind::Canceled,
        "the queue was closed while the operation was pending",
    ))
}

impl Op {
    pub(crate) fn poll(
        &mut self,
        e: &mut InetEngine,
        queues: &mut QueueTable,
        cx: &mut Context<'_>,
    ) -> Poll<QValue> {
        let InetEngine {
            stack,
            sockets,
            gather,
            ..
        } = e;
        match self {
            Op::Accept { sock, turn } => {
                let Some(s) = sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                let State::Listening(h) = s.state else {
                    return Poll::Ready(canceled());
                };
                if !s.pops.is_turn(*turn) {
                    s.pops.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let value = match stack.tcp_accept(h) {
                    Ok(Some((conn, peer))) => {
                        let new = Socket {
                            kind: SocketKind::Stream,
                            state: State::Connected(conn),
                            port: None,
                            pops: Turns::default(),
                            pushes: Turns::default(),
                            readers: Waiters::default(),
                            writers: Waiters::default(),
                        };
                        match sockets.insert(new) {
                            Some(local) => match queues.insert(QueueKind::InetSocket, local) {
                                Ok(qd) => QValue::Accepted { qd, peer },
                                Err(err) => {
                                    sockets.remove(local);
                                    let _ = stack.tcp_abort(conn);
                                    QValue::Failed(err)
                                }
                            },
                            None => {
                                let _ = stack.tcp_abort(conn);
                                QValue::Failed(Error::new(
                                    ErrorKind::NoBufferSpace,
                                    "too many sockets open",
                                ))
                            }
                        }
                    }
                    Ok(None) => {
                        let _ = stack.register_waker(h, Interest::Acceptable, cx.waker());
                        return Poll::Pending;
                    }
                    Err(err) => QValue::Failed(map_err(err, "accept")),
                };
                let s = sockets.get_mut(*sock).expect("listener still open");
                s.pops.finish(*turn);
                Poll::Ready(value)
            }
            Op::Connect { sock, remote } => {
                let Some(s) = sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                let State::Connecting(h) = s.state else {
                    return Poll::Ready(canceled());
                };
                let doing = format!("connect to {remote}");
                match stack.tcp_state(h) {
                    Ok(TcpState::Established) | Ok(TcpState::CloseWait) => {
                        s.state = State::Connected(h);
                        Poll::Ready(QValue::Connected)
                    }
                    Ok(TcpState::SynSent) | Ok(TcpState::SynReceived) => {
                        let _ = stack.register_waker(h, Interest::Connected, cx.waker());
                        Poll::Pending
                    }
                    Ok(_) => {
                        let err = stack
                            .tcp_error(h)
                            .ok()
                            .flatten()
                            .unwrap_or(StackError::ConnectionReset);
                        s.state = State::Fresh;
                        let _ = stack.tcp_abort(h);
                        Poll::Ready(QValue::Failed(connect_error(err, &doing)))
                    }
                    Err(err) => {
                        s.state = State::Fresh;
                        Poll::Ready(QValue::Failed(connect_error(err, &doing)))
                    }
                }
            }
            Op::Push {
                sock,
                sga,
                turn,
                to,
                pushed,
            } => {
                let Some(s) = sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                let Some(h) = s.handle() else {
                    return Poll::Ready(canceled());
                };
                if !s.pushes.is_turn(*turn) {
                    s.pushes.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let value = match to {
                    Some(to) => {
                        let r = match sga.num_segments() {
                            1 => stack.udp_send_to(
                                h,
                                *to,
                                sga.segments().next().expect("one segment"),
                            ),
                            _ => {
                                gather.clear();
                                gather.resize(sga.len(), 0);
                                sga.copy_to(gather);
                                stack.udp_send_to(h, *to, gather)
                            }
                        };
                        match r {
                            Ok(n) => QValue::Pushed { bytes: n },
                            Err(StackError::WouldBlock) => {
                                let _ = stack.register_waker(h, Interest::Writable, cx.waker());
                                return Poll::Pending;
                            }
                            Err(err) => QValue::Failed(map_err(err, &format!("pushto {to}"))),
                        }
                    }
                    None => loop {
                        match stack.tcp_send_sga(h, sga) {
                            Ok(n) if n > 0 => {
                                *pushed += n;
                                sga.advance(n);
                                if sga.is_empty() {
                                    break QValue::Pushed { bytes: *pushed };
                                }
                            }
                            Ok(_) | Err(StackError::WouldBlock) => {
                                let _ = stack.register_waker(h, Interest::Writable, cx.waker());
                                return Poll::Pending;
                            }
                            Err(err) => break QValue::Failed(map_err(err, "push")),
                        }
                    },
                };
                // On the wire now rather than at the next poll: a round trip does not wait for
                // the rest of the application's turn. Unless the application has more of this
                // connection's data to pop: then it is likely to push again at once (an echo, a
                // proxy), and the segments leave together, in one kick of the device, at the
                // push that finds nothing left to pop or at the next poll (any wait polls).
                let more_to_pop = to.is_none() && stack.tcp_recv_queued(h).is_ok_and(|n| n > 0);
                if !more_to_pop {
                    stack.flush();
                }
                s.pushes.finish(*turn);
                Poll::Ready(value)
            }
            Op::Pop { sock, turn } => {
                let Some(s) = sockets.get_mut(*sock) else {
                    return Poll::Ready(canceled());
                };
                let Some(h) = s.handle() else {
                    return Poll::Ready(canceled());
                };
                if !s.pops.is_turn(*turn) {
                    s.pops.wait(*turn, cx.waker());
                    return Poll::Pending;
                }
                let value = if s.kind == SocketKind::Datagram {
                    match stack.udp_recv_from(h) {
                        Ok(Some((buf, from))) => QValue::Popped {
                            sga: Sga::from(buf),
                            from: Some(from),
                        },
                        Ok(None) => {
                            let _ = stack.register_waker(h, Interest::Readable, cx.waker());
                            return Poll::Pending;
                        }
                        Err(err) => QValue::Failed(map_err(err, "pop")),
                    }
                } else {
                    // Everything queued comes along, up to POP_GATHER_BYTES: a bulk receiver
                    // pays one operation per burst of segments, not per segment. (Several
                    // segments need the Sga's segment list: one allocation per such pop; a
                    // pop of one segment allocates nothing.)
                    match stack.tcp_recv_sga(h, POP_GATHER_BYTES) {
                        Ok(Some(sga)) => QValue::Popped { sga, from: None },
                        Ok(None) => {
                            let _ = stack.register_waker(h, Interest::Readable, cx.waker());
                            return Poll::Pending;
                        }
                        Err(StackError::EndOfStream) => QValue::EndOfStream,
                        Err(err) => QValue::Failed(map_err(err, "pop")),
                    }
                };
                s.pops.finish(*turn);
                Poll::Ready(value)
            }
        }
    }
}

fn connect_error(e: StackError, doing: &str) -> Error {
    match e {
        StackError::ConnectionRefused | StackError::ConnectionReset => Error::new(
            ErrorKind::ConnectionRefused,
            format!("{doing}: connection refused (nothing listens there); start the server or check the address"),
        ),
        StackError::TimedOut => Error::new(
            ErrorKind::TimedOut,
            format!("{doing}: no answer (connection timed out); is the peer up and reachable?"),
        ),
        other => map_err(other, doing),
    }
}

/// Builds the device and stack the configuration names.
pub(crate) fn open(
    config: &crate::Config,
    frames: &bypass_runtime::BufferPool,
) -> Result<InetEngine> {
    use crate::config::LibOsName;
    use bypass_devices::hub::{Hub, HubConfig};
    use bypass_wire::{Ipv4Address, Ipv4Cidr};

    let configured_ip = match &config.net.ip {
        Some(text) => Some(text.parse::<Ipv4Cidr>().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("net.ip = '{text}' is not an address with a prefix such as 10.0.0.1/24"),
            )
        })?),
        None => None,
    };
    let (device, default_ip): (AnyDevice, Option<Ipv4Cidr>) = match config.libos {
        LibOsName::Sim => {
            let hub = Hub::named(
                &config.sim.wire,
                &HubConfig {
                    loss: config.sim.loss,
                    seed: config.sim.seed,
                    checksum_offload: config.sim.checksum_offload,
                    ..HubConfig::default()
                },
            );
            let port = hub.attach(None, frames.clone());
            let n = port.index() as u32 + 1;
            let auto = Ipv4Cidr::new(Ipv4Address::from([10, 0, 1 + (n >> 8) as u8, n as u8]), 16);
            (Box::new(port), Some(auto))
        }
        LibOsName::Xdp | LibOsName::Packet | LibOsName::Tap => {
            (real_device(config, configured_ip)?, None)
        }
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("the '{other}' libOS is not a user-space stack libOS; try --libos sim"),
            ))
        }
    };
    let ip = configured_ip.or(default_ip).ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "the '{}' libOS needs an address: set net.ip (e.g. --ip 10.0.0.1/24)",
                config.libos
            ),
        )
    })?;
    let mut stack_config = bypass_inet::StackConfig::new(ip);
    if let Some(gw) = &config.net.gateway {
        stack_config.gateway = Some(gw.parse().map_err(|_| {
            Error::new(
                ErrorKind::Config,
                format!("net.gateway = '{gw}' is not an IPv4 address"),
            )
        })?);
    }
    stack_config.max_sockets = config.limits.max_queues.min(1 << 16);
    let t = &config.tcp;
    let tcp = &mut stack_config.tcp;
    tcp.nagle = t.nagle;
    tcp.delayed_ack =
        (t.delayed_ack_us > 0).then(|| std::time::Duration::from_micros(t.delayed_ack_us));
    tcp.send_buffer = t.send_buffer;
    tcp.recv_buffer = t.recv_buffer;
    tcp.congestion = match t.congestion.as_str() {
        "newreno" => bypass_inet::CongestionKind::NewReno,
        _ => bypass_inet::CongestionKind::Cubic,
    };
    tcp.time_wait = std::time::Duration::from_millis(t.time_wait_ms);
    tcp.max_retries = t.max_retries;
    tcp.sack = t.sack;
    tcp.timestamps = t.timestamps;
    tcp.window_scaling = t.window_scaling;
    let stack = Stack::new(device, stack_config);
    Ok(InetEngine::new(stack, config.limits.max_queues))
}

/// Opens the AF_XDP, AF_PACKET or TAP device the configuration names, in its namespace; `ip` is
/// the address the stack will own (the AF_PACKET device keeps the kernel's stack off it).
fn real_device(config: &crate::Config, ip: Option<bypass_wire::Ipv4Cidr>) -> Result<AnyDevice> {
    use crate::config::{LibOsName, PacketOffloadName, PacketRingName, XdpModeName};
    use bypass_devices::{af_packet, af_xdp, tap};

    if let Some(ns) = &config.net.netns {
        bypass_devices::netns::enter(ns)
            .map_err(|e| Error::os(e, format_args!("cannot enter network namespace '{ns}'")))?;
    }
    let iface = config.net.iface.as_deref().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            format!(
                "the '{}' libOS needs an interface: set net.iface (e.g. --iface veth0)",
                config.libos
            ),
        )
    })?;
    let device: std::result::Result<AnyDevice, bypass_devices::DeviceError> = match config.libos {
        LibOsName::Xdp => {
            let mut c = af_xdp::XdpConfig::new(iface);
            c.mode = match config.net.xdp_mode {
                XdpModeName::Generic => af_xdp::XdpMode::Generic,
                XdpModeName::Driver => af_xdp::XdpMode::Driver,
            };
            c.huge_pages = config.pool.huge_pages;
            af_xdp::AfXdp::open(&c).map(|d| Box::new(d) as AnyDevice)
        }
        LibOsName::Packet => {
            let mut c = match config.net.packet_ring {
                PacketRingName::V2 => af_packet::PacketConfig::new(iface),
                PacketRingName::V3 => af_packet::PacketConfig::throughput(iface),
            };
            // Keep the kernel's stack off our address.
            c.owned_address = ip.map(|cidr| cidr.address.0);
            c.offload = match config.net.packet_offload {
                PacketOffloadName::Auto => af_packet::Offload::Auto,
                PacketOffloadName::On => af_packet::Offload::Required,
                PacketOffloadName::Off => af_packet::Offload::Off,
            };
            af_packet::AfPacket::open(&c).map(|d| Box::new(d) as AnyDevice)
        }
        _ => tap::Tap::open(&tap::TapConfig::new(iface)).map(|d| Box::new(d) as AnyDevice),
    };
    device.map_err(|e| {
        use bypass_devices::ErrorKind as D;
        let kind = match e.kind() {
            D::NoSuchInterface => ErrorKind::NotFound,
            D::PermissionDenied => ErrorKind::PermissionDenied,
            D::Unsupported => ErrorKind::Unsupported,
            D::Busy => ErrorKind::AddressInUse,
            D::InvalidConfig => ErrorKind::Config,
            D::Io => ErrorKind::Io,
        };
        Error::new(kind, e.to_string())
    })
}
