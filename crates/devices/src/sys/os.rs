//! Thin safe wrappers over the system calls the real devices make.
//!
//! Each function does one call, checks its result, and returns `io::Result`. Callers attach
//! context (which device, which step) when they turn the error into a [`DeviceError`].
//!
//! [`DeviceError`]: super::error::DeviceError

use std::ffi::CString;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Plain-old-data that may be passed to the kernel by pointer and filled by it: every bit
/// pattern is a valid value and the type has no padding the kernel could misread.
///
/// # Safety
/// Implement only for `#[repr(C)]` integer structs and integer arrays.
pub unsafe trait Pod: Copy {}

// SAFETY: integers and arrays of them accept every bit pattern.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for i32 {}
// SAFETY: as above.
unsafe impl<const N: usize> Pod for [u8; N] {}

/// A zero-filled value of a [`Pod`] type.
pub fn zeroed<T: Pod>() -> T {
    // SAFETY: `Pod` types accept every bit pattern, zeros included.
    unsafe { MaybeUninit::<T>::zeroed().assume_init() }
}

/// `socket(2)` with close-on-exec.
pub fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = check(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) })?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(2)` with close-on-exec.
pub fn open(path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(2)` with a value of any [`Pod`] type.
pub fn setsockopt<T: Pod>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to `size_of::<T>()` readable bytes for the duration of the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `getsockopt(2)` into a value of any [`Pod`] type; returns it and the length the kernel wrote.
pub fn getsockopt<T: Pod>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<(T, usize)> {
    let mut value: T = zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is `len` writable bytes and `len` is a valid in/out length.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok((value, len as usize))
}

/// `bind(2)` to an address of any [`Pod`] socket address type.
pub fn bind<T: Pod>(fd: &OwnedFd, addr: &T) -> io::Result<()> {
    // SAFETY: `addr` points to `size_of::<T>()` readable bytes for the duration of the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: asks the kernel to transmit what a TX ring holds.
pub fn kick_tx(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a zero-length send from a null buffer reads no memory.
    check_size(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    })?;
    Ok(())
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: wakes a kernel that waits for a fill ring refill.
pub fn kick_rx(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: a zero-length receive into a null buffer writes no memory.
    check_size(unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    })?;
    Ok(())
}

/// `read(2)`.
pub fn read(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes.
    check_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

/// `write(2)`.
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` readable bytes.
    check_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

/// `send(2)` of one datagram, without blocking.
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` readable bytes.
    check_size(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// `recv(2)` of one datagram, without blocking.
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is `buf.len()` writable bytes.
    check_size(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// `sendmsg(2)` of one datagram gathered from `head` then `data`, without blocking.
pub fn send_gathered(fd: &OwnedFd, head: &[u8], data: &[u8]) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: head.as_ptr() as *mut libc::c_void,
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: both iovecs point to readable memory of their length, borrowed for the call;
    // the kernel only reads through them.
    check_size(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) })
}

/// `recvmsg(2)` of one datagram scattered into `head` then `data`, without blocking.
/// Returns the bytes received and whether the datagram was longer than both (`MSG_TRUNC`:
/// the rest is lost).
pub fn recv_scattered(fd: &OwnedFd, head: &mut [u8], data: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut iov = [
        libc::iovec {
            iov_base: head.as_mut_ptr().cast(),
            iov_len: head.len(),
        },
        libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        },
    ];
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: both iovecs point to writable memory of their length, exclusively borrowed for
    // the call; `msg` outlives it.
    let n = check_size(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) })?;
    Ok((n, msg.msg_flags & libc::MSG_TRUNC != 0))
}

/// `setns(2)`: moves the calling thread into the namespace `fd` refers to.
pub fn setns(fd: &OwnedFd, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: plain system call on a descriptor we own.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) })?;
    Ok(())
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * size_of::<libc::cpu_set_t>() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is a plain bit array and zero is a valid value; CPU_SET writes the
    // bit of `cpu`, which is inside the set (checked above); the set is passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        check(libc::sched_setaffinity(
            0,
            size_of::<libc::cpu_set_t>(),
            &set,
        ))?;
    }
    Ok(())
}

/// The index of a network interface in the calling thread's namespace (`ENODEV` if absent).
pub fn if_index(name: &str) -> io::Result<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        Err(io::Error::from_raw_os_error(libc::ENODEV))
    } else {
        Ok(index)
    }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: `ifreq` is a C struct of integers and a union of them; zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn ioctl_ifreq(fd: RawFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here reads or writes one `ifreq`, which `req` is.
    check(unsafe { libc::ioctl(fd, request as _, req as *mut libc::ifreq) })?;
    Ok(())
}

fn ifreq_socket() -> io::Result<OwnedFd> {
    socket(libc::AF_INET, libc::SOCK_DGRAM, 0)
}

/// The hardware (MAC) address of an interface.
pub fn if_hwaddr(name: &str) -> io::Result<[u8; 6]> {
    let sock = ifreq_socket()?;
    let mut req = ifreq(name)?;
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member of the union.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// The MTU of an interface.
pub fn if_mtu(name: &str) -> io::Result<usize> {
    let sock = ifreq_socket()?;
    let mut req = ifreq(name)?;
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as usize)
}

/// Sets an interface administratively up (needs CAP_NET_ADMIN).
pub fn if_set_up(name: &str) -> io::Result<()> {
    let sock = ifreq_socket()?;
    let mut req = ifreq(name)?;
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member; we update the same member.
    unsafe {
        if req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    ioctl_ifreq(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req)
}

/// `TUNSETIFF` on an open `/dev/net/tun`: attaches it to (and if needed creates) the TAP
/// interface `name`. Returns the name the kernel settled on.
pub fn tun_set_iff(fd: &OwnedFd, name: &str, flags: libc::c_short) -> io::Result<String> {
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = flags;
    ioctl_ifreq(fd.as_raw_fd(), libc::TUNSETIFF as libc::c_ulong, &mut req)?;
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `bpf(2)` with an attribute block the caller laid out per `linux/bpf.h`.
pub fn bpf(cmd: libc::c_int, attr: &mut [u8]) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is `attr.len()` bytes the kernel may read and write; every pointer stored
    // inside it by the caller points to memory that outlives this call (see the callers).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as libc::c_int)
    }
}

/// Takes ownership of a descriptor a system call returned.
pub fn owned(fd: libc::c_int) -> OwnedFd {
    assert!(fd >= 0, "negative descriptor");
    // SAFETY: the caller just received `fd` from the kernel and hands it over here once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A shared mapping of a descriptor (a ring the kernel shares with us), unmapped on drop.
pub struct Mmap {
    base: NonNull<u8>,
    len: usize,
}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset`, readable and writable, shared with the kernel and
    /// populated up front (no page faults on the data path).
    pub fn shared(fd: &OwnedFd, len: usize, offset: u64) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new shared mapping at an address the kernel picks aliases no Rust object;
        // the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Mmap { base, len })
    }

    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range, and the rings that point into it are dropped
        // with (and before) this value.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
