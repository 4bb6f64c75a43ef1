//! The Linux system calls under the real devices, kept small and in one place (mio-style).
//!
//! Every `unsafe` block of the real devices that is not ring access lives here: sockets and
//! their options, `mmap`, interface ioctls, and the rtnetlink messages that attach XDP programs.
//! The modules above this one see only safe functions that return `io::Result`.

pub mod error;
pub mod netlink;
pub mod os;

use std::io;
use std::time::{Duration, Instant};

/// Calls `op` until it returns anything but EBUSY, retrying EBUSY with a back-off that doubles
/// from `first` up to `longest`, for at most `timeout`. The kernel answers EBUSY for a while
/// after the last user of an AF_XDP queue or a TAP interface closed it (the teardown is
/// deferred), so a quick reopen must wait rather than fail.
pub(crate) fn retry_busy<T>(
    timeout: Duration,
    first: Duration,
    longest: Duration,
    mut op: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let start = Instant::now();
    let mut delay = first;
    loop {
        match op() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < timeout => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(longest);
            }
            result => return result,
        }
    }
}
