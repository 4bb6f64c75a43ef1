//! The rules of the socket calls shared by the libOSes over Linux sockets (`kernel`, `uring`):
//! which call a socket accepts in which state, and the errors that say what to do instead.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;

use bypass_runtime::BufferPool;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;
use crate::types::{QValue, SocketKind};

/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// Where a socket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketState {
    Fresh,
    Bound,
    Listening,
    Connecting,
    Connected,
}

use SocketState as State;

/// Binds a fresh socket to `addr`.
pub(crate) fn bind(fd: &OwnedFd, state: &mut State, addr: SocketAddrV4) -> Result<()> {
    if *state != State::Fresh {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "the socket is already bound",
        ));
    }
    sys::bind(fd, addr).map_err(|e| bind_error(e, addr))?;
    *state = State::Bound;
    Ok(())
}

/// Makes a bound stream socket listen.
pub(crate) fn listen(
    fd: &OwnedFd,
    kind: SocketKind,
    state: &mut State,
    backlog: usize,
) -> Result<()> {
    check_listen(kind, *state)?;
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    sys::listen(fd, backlog).map_err(|e| Error::os(e, "listen"))?;
    *state = State::Listening;
    Ok(())
}

/// The address a socket is bound to.
pub(crate) fn local_addr(fd: &OwnedFd) -> Result<SocketAddrV4> {
    sys::local_addr(fd).map_err(|e| Error::os(e, "getsockname"))
}

/// The error of a failed bind(2), naming the address.
fn bind_error(e: io::Error, addr: SocketAddrV4) -> Error {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::new(
            ErrorKind::AddressInUse,
            format!("address {addr} is already in use; pick another port or stop the process holding it"),
        ),
        Some(libc::EADDRNOTAVAIL) => Error::new(
            ErrorKind::AddressNotAvailable,
            format!("address {addr} is not an address of this host; bind to one of its addresses or 0.0.0.0"),
        ),
        _ => Error::os(e, format_args!("bind to {addr}")),
    }
}

fn check_listen(kind: SocketKind, state: State) -> Result<()> {
    if kind != SocketKind::Stream {
        return Err(Error::new(
            ErrorKind::WrongQueueKind,
            "listen needs a stream (TCP) socket",
        ));
    }
    match state {
        State::Bound => Ok(()),
        State::Fresh => Err(Error::new(
            ErrorKind::InvalidArgument,
            "listen needs a bound socket: call bind first",
        )),
        _ => Err(Error::new(
            ErrorKind::InvalidArgument,
            "the socket is already listening or connected",
        )),
    }
}

pub(crate) fn check_accept(kind: SocketKind, state: State) -> Result<()> {
    if state == State::Listening {
        return Ok(());
    }
    let msg = match kind {
        SocketKind::Datagram => "accept needs a listening stream socket, not a datagram socket",
        SocketKind::Stream => "accept needs a listening socket: call bind and listen first",
    };
    Err(Error::new(ErrorKind::WrongQueueKind, msg))
}

pub(crate) fn check_connect(state: State) -> Result<()> {
    match state {
        State::Fresh | State::Bound => Ok(()),
        State::Listening => Err(Error::new(
            ErrorKind::InvalidArgument,
            "cannot connect a listening socket",
        )),
        State::Connecting | State::Connected => Err(Error::new(
            ErrorKind::AlreadyConnected,
            "the socket is already connected",
        )),
    }
}

/// Checks a push of `len` bytes, to `to` for `pushto`.
pub(crate) fn check_push(
    kind: SocketKind,
    state: State,
    len: usize,
    to: Option<SocketAddrV4>,
) -> Result<()> {
    match kind {
        SocketKind::Stream if to.is_some() => Err(Error::new(
            ErrorKind::WrongQueueKind,
            "pushto is for datagram sockets; use push on a stream",
        )),
        SocketKind::Stream if state != State::Connected => Err(Error::new(
            ErrorKind::NotConnected,
            "push needs a connected stream socket",
        )),
        SocketKind::Stream => Ok(()),
        SocketKind::Datagram if len > MAX_DATAGRAM => Err(Error::new(
            ErrorKind::MessageTooLong,
            format!("a UDP datagram holds at most {MAX_DATAGRAM} B; this push has {len} B"),
        )),
        SocketKind::Datagram if to.is_none() && state != State::Connected => Err(Error::new(
            ErrorKind::NotConnected,
            "push on an unconnected datagram socket: use pushto with a destination",
        )),
        SocketKind::Datagram => Ok(()),
    }
}

pub(crate) fn check_pop(kind: SocketKind, state: State) -> Result<()> {
    if kind == SocketKind::Stream && state != State::Connected {
        return Err(Error::new(
            ErrorKind::NotConnected,
            "pop needs a connected stream socket",
        ));
    }
    Ok(())
}

/// What an operation pending on a queue that closed completes with.
pub(crate) fn canceled() -> QValue {
    QValue::Failed(Error::new(
        ErrorKind::Canceled,
        "the queue was closed while the operation was pending",
    ))
}

/// The error of a failed connect, send or receive, with what was being done.
pub(crate) fn connection_error(e: io::Error, doing: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Error::new(
            ErrorKind::ConnectionRefused,
            format!("{doing}: connection refused (nothing listens there); start the server or check the address"),
        ),
        Some(libc::ECONNRESET) | Some(libc::EPIPE) => {
            Error::new(ErrorKind::ConnectionReset, format!("{doing}: the peer reset the connection"))
        }
        Some(libc::ETIMEDOUT) => Error::new(
            ErrorKind::TimedOut,
            format!("{doing}: the peer stopped answering (connection timed out)"),
        ),
        Some(libc::ECANCELED) => Error::new(
            ErrorKind::Canceled,
            format!("{doing}: cancelled because the queue was closed"),
        ),
        _ => Error::os(e, doing),
    }
}

/// A new non-blocking Linux socket of `kind`; streams get TCP_NODELAY (latency over batching)
/// and SO_REUSEADDR (a restarted server rebinds at once past TIME-WAIT).
pub(crate) fn open_socket(kind: SocketKind) -> Result<OwnedFd> {
    let ty = match kind {
        SocketKind::Stream => libc::SOCK_STREAM,
        SocketKind::Datagram => libc::SOCK_DGRAM,
    };
    let fd = sys::socket(ty).map_err(|e| Error::os(e, "socket"))?;
    if kind == SocketKind::Stream {
        sys::set_int_option(&fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
            .map_err(|e| Error::os(e, "setsockopt(TCP_NODELAY)"))?;
        sys::set_int_option(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
            .map_err(|e| Error::os(e, "setsockopt(SO_REUSEADDR)"))?;
    }
    Ok(fd)
}

/// The error of a receive that found the receive buffer pool empty.
pub(crate) fn pool_exhausted(pool: &BufferPool) -> Error {
    Error::new(
        ErrorKind::NoBufferSpace,
        format!(
            "receive buffer pool exhausted ({} chunks in use); drop popped data sooner or raise pool.large",
            pool.chunks()
        ),
    )
}
