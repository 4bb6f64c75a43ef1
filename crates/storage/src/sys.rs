//! The few system calls the engine makes outside the ring: asking a file how O_DIRECT must be
//! aligned. Everything else goes through `std::fs` or the `io-uring` crate.

use std::os::fd::{AsRawFd, BorrowedFd};

/// How O_DIRECT I/O on one file must be aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DioAlignment {
    /// Buffer addresses must be multiples of this.
    pub memory: u32,
    /// File offsets and lengths must be multiples of this.
    pub offset: u32,
}

/// Used when the kernel cannot tell: safe for every common device (4 KiB-sector disks included).
pub const FALLBACK_ALIGNMENT: DioAlignment = DioAlignment {
    memory: 4096,
    offset: 4096,
};

/// Asks the kernel for the O_DIRECT alignment of `fd`: `statx(STATX_DIOALIGN)` (Linux 6.1+),
/// then the logical block size of a block device (`BLKSSZGET`), else [`FALLBACK_ALIGNMENT`].
pub fn dio_alignment(fd: BorrowedFd<'_>, is_block_device: bool) -> DioAlignment {
    if let Some(a) = statx_dioalign(fd) {
        return a;
    }
    if is_block_device {
        if let Some(size) = logical_block_size(fd) {
            return DioAlignment {
                memory: size,
                offset: size,
            };
        }
    }
    FALLBACK_ALIGNMENT
}

fn statx_dioalign(fd: BorrowedFd<'_>) -> Option<DioAlignment> {
    // SAFETY: `statx` is plain old data; all-zero is a valid value of it.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is an empty C string and AT_EMPTY_PATH makes the call describe `fd`
    // itself; `stx` is a valid, writable statx buffer that lives across the call.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    let (memory, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    // Zero means the file does not support O_DIRECT; let the open or the first I/O say so.
    if memory == 0 || offset == 0 || !memory.is_power_of_two() || !offset.is_power_of_two() {
        return None;
    }
    Some(DioAlignment { memory, offset })
}

fn logical_block_size(fd: BorrowedFd<'_>) -> Option<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a live local.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::BLKSSZGET, &mut size) };
    match u32::try_from(size) {
        Ok(size) if rc == 0 && size.is_power_of_two() => Some(size),
        _ => None,
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_current_thread(cpu: u32) -> std::io::Result<()> {
    if cpu as usize >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: `cpu_set_t` is plain old data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time (user + system) used so far by the whole process, every thread included (the
/// kernel's io_uring worker and SQPOLL threads of this process are threads of it).
pub fn process_cpu_time() -> std::time::Duration {
    // SAFETY: `rusage` is plain old data; all-zero is a valid value of it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage that lives across the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::new(t.tv_sec as u64, (t.tv_usec as u32).saturating_mul(1000))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
