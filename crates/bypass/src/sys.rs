//! Thin, checked wrappers over the Linux socket and epoll system calls used by the `kernel`
//! libOS. This is the only module of the crate with `unsafe`; every function returns
//! `io::Result` and owns its file descriptors through `OwnedFd`.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `addr` as the kernel's `sockaddr_in`.
pub(crate) fn to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The address a kernel `sockaddr_in` holds.
pub(crate) fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    )
}

/// A non-blocking, close-on-exec IPv4 socket of `ty` (`SOCK_STREAM` or `SOCK_DGRAM`).
pub fn socket(ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant arguments; the result is checked.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_INET,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed alongside it.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Reads and clears the socket's pending error (SO_ERROR); `Ok(None)` if there is none.
pub fn take_error(fd: &OwnedFd) -> io::Result<Option<io::Error>> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and describe each other.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok((value != 0).then(|| io::Error::from_raw_os_error(value)))
}

pub fn bind(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<()> {
    let sa = to_sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr_in and its size is passed with it.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

pub fn listen(fd: &OwnedFd, backlog: i32) -> io::Result<()> {
    // SAFETY: plain system call on an fd we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(())
}

/// Ends the sending side: TCP sends its FIN after the queued data at once, even while
/// something else still holds the socket open (an io_uring request in flight does).
pub fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: plain system call on an fd we own.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) })?;
    Ok(())
}

/// Starts a connection; `Ok(false)` means it is in progress (EINPROGRESS).
pub fn connect(fd: &OwnedFd, addr: SocketAddrV4) -> io::Result<bool> {
    let sa = to_sockaddr(addr);
    // SAFETY: `sa` is a valid sockaddr_in and its size is passed with it.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    match check(ret) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Accepts a connection as a non-blocking socket, with the peer's address.
pub fn accept(fd: &OwnedFd) -> io::Result<(OwnedFd, SocketAddrV4)> {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are valid for writes and describe each other.
    let new = check(unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `new` was just returned by accept4(2) and is owned by nobody else.
    Ok((unsafe { OwnedFd::from_raw_fd(new) }, from_sockaddr(&sa)))
}

pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddrV4> {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are valid for writes and describe each other.
    check(unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    })?;
    Ok(from_sockaddr(&sa))
}

pub fn peer_addr(fd: &OwnedFd) -> io::Result<SocketAddrV4> {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` and `len` are valid for writes and describe each other.
    check(unsafe {
        libc::getpeername(
            fd.as_raw_fd(),
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    })?;
    Ok(from_sockaddr(&sa))
}

/// Sends the byte slices in order, optionally to `to`; returns bytes sent. One slice goes
/// with `sendto`, several with `sendmsg` (which costs the kernel a copy of the message header
/// and of the iovec array first).
pub fn send_vectored(
    fd: &OwnedFd,
    slices: &[io::IoSlice<'_>],
    to: Option<SocketAddrV4>,
) -> io::Result<usize> {
    let sa = to.map(to_sockaddr);
    if let [slice] = slices {
        let (addr, addr_len) = match &sa {
            Some(sa) => (
                (sa as *const libc::sockaddr_in).cast::<libc::sockaddr>(),
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            None => (std::ptr::null(), 0),
        };
        // The raw system call skips libc's thread-cancellation bookkeeping around sendto,
        // which the data path does not need (it never blocks).
        // SAFETY: `slice` is valid for reads of its length and `addr` (null or `sa`) for
        // `addr_len` bytes, all alive for the call; the kernel only reads them.
        return check_size(unsafe {
            libc::syscall(
                libc::SYS_sendto,
                fd.as_raw_fd(),
                slice.as_ptr(),
                slice.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                addr,
                addr_len,
            ) as isize
        });
    }
    // SAFETY: msghdr is plain data; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    // IoSlice is ABI-compatible with iovec (guaranteed by std on Unix).
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = slices.len().min(libc::UIO_MAXIOV as usize);
    if let Some(sa) = &sa {
        msg.msg_name = (sa as *const libc::sockaddr_in).cast_mut().cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    }
    // The raw system call, as above.
    // SAFETY: `msg` points at `slices` and `sa`, both alive for the call; the kernel only reads.
    check_size(unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd.as_raw_fd(),
            &msg as *const libc::msghdr,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        ) as isize
    })
}

/// Receives into `buf` from a connected socket; returns the byte count.
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // The raw system call, as in `send_vectored`.
    // SAFETY: `buf` is valid for writes of its length; no address is asked for.
    check_size(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        ) as isize
    })
}

/// Receives into `buf`; returns the byte count and, for datagram sockets, the sender.
pub fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<SocketAddrV4>)> {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of its length; `sa`/`len` describe each other.
    let n = check_size(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            (&mut sa as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    })?;
    let from = (len as usize >= mem::size_of::<libc::sockaddr_in>()
        && sa.sin_family == libc::AF_INET as libc::sa_family_t)
        .then(|| from_sockaddr(&sa));
    Ok((n, from))
}

pub fn epoll_create() -> io::Result<OwnedFd> {
    // SAFETY: plain system call; the result is checked.
    let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by epoll_create1(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn epoll_add(epoll: &OwnedFd, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is valid for the call; both fds are open.
    check(unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
    Ok(())
}

/// Waits up to `timeout_ms` (0 = poll, -1 = forever) and fills `events`; returns the count.
pub fn epoll_wait(
    epoll: &OwnedFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    // SAFETY: `events` is valid for writes of its length, which is passed as the maximum.
    let n = unsafe {
        libc::epoll_wait(
            epoll.as_raw_fd(),
            events.as_mut_ptr(),
            events.len() as i32,
            timeout_ms,
        )
    };
    match check(n) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}
