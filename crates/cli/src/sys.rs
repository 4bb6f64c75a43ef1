//! The few system calls the CLI makes itself: CPU pinning, a socket probe, and Ctrl-C.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// A set of CPUs a thread may run on.
#[derive(Clone, Copy)]
pub(crate) struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The set holding only `cpu`.
    pub(crate) fn single(cpu: usize) -> CpuSet {
        // SAFETY: cpu_set_t is a plain bit array; all-zero is the valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET only writes bit `cpu` of `set`, after checking it against the size.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        CpuSet(set)
    }

    /// The CPUs in the set, in increasing order.
    pub(crate) fn cpus(&self) -> Vec<usize> {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: CPU_ISSET only reads bit `c` of the set, and `c` < CPU_SETSIZE.
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &self.0) })
            .collect()
    }
}

/// The CPUs the calling thread may run on.
pub(crate) fn affinity() -> io::Result<CpuSet> {
    let set = CpuSet::single(0);
    let mut raw = set.0;
    // SAFETY: `raw` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut raw) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(CpuSet(raw))
}

/// Restricts the calling thread to the CPUs of `set`.
pub(crate) fn set_affinity(set: &CpuSet) -> io::Result<()> {
    // SAFETY: `set.0` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set.0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Pins the calling thread to `cpu`, with an error the CLI can print.
pub(crate) fn pin(cpu: usize) -> Result<(), crate::error::CliError> {
    set_affinity(&CpuSet::single(cpu))
        .map_err(|e| crate::error::CliError::new(format!("cannot pin to CPU {cpu}: {e}")))
}

/// Opens a socket of `domain` and `ty` and closes it again: whether the kernel allows it.
pub(crate) fn probe_socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<()> {
    // SAFETY: socket() takes no pointers; a negative result is an error and owns nothing.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it; dropping closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // An atomic store is async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// A flag raised by the first SIGINT (Ctrl-C) or SIGTERM, for loops that stop gracefully.
pub(crate) fn interrupt_flag() -> &'static AtomicBool {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler) };
    }
    &INTERRUPTED
}
