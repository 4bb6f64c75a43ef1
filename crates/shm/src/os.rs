//! The system calls a channel needs, through `rustix`'s safe wrappers: shared-memory objects,
//! process liveness through pidfds, and futexes on shared words.

use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::fs::Mode;
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags};
use rustix::shm::OFlags;
use rustix::thread::futex;

use crate::{Error, ErrorKind};

/// Longest channel name.
pub const MAX_NAME: usize = 200;

/// The shared-memory object name of channel `name`: `/bypass-shm.NAME`, which Linux shows as
/// `/dev/shm/bypass-shm.NAME`.
pub fn object_name(name: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !ok || name.starts_with('.') {
        return Err(Error::invalid(format!(
            "bad channel name {name:?}: use 1 to {MAX_NAME} of A-Z a-z 0-9 . _ - (not starting with '.')"
        )));
    }
    Ok(format!("/bypass-shm.{name}"))
}

/// The path under which the object of channel `name` appears while it has a name.
pub fn object_path(name: &str) -> Result<std::path::PathBuf, Error> {
    Ok(format!("/dev/shm{}", object_name(name)?).into())
}

/// Creates the object, failing with `Errno::EXIST` if it exists. Mode 0600: only processes of
/// the same user may open it.
pub fn create_object(object: &str, len: usize) -> Result<OwnedFd, Errno> {
    let fd = rustix::shm::open(
        object,
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::from_raw_mode(0o600),
    )?;
    if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
        let _ = rustix::shm::unlink(object);
        return Err(e);
    }
    Ok(fd)
}

pub fn open_object(object: &str) -> Result<OwnedFd, Errno> {
    rustix::shm::open(object, OFlags::RDWR, Mode::empty())
}

pub fn object_len(fd: &OwnedFd) -> Result<u64, Error> {
    let st = rustix::fs::fstat(fd).map_err(|e| Error::os("fstat of the shared region", e))?;
    Ok(st.st_size as u64)
}

pub fn unlink_object(object: &str) {
    // ENOENT is fine: the other side removed it first.
    let _ = rustix::shm::unlink(object);
}

pub fn my_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Watches a process through a pidfd: exact even if the pid is reused later, and one
/// non-blocking `poll` per check.
pub struct PeerWatch {
    pid: u32,
    pidfd: OwnedFd,
}

impl PeerWatch {
    /// Starts watching `pid`; fails with `PeerGone` if no such process exists.
    pub fn new(pid: u32) -> Result<PeerWatch, Error> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| {
                Error::corrupt(format!("the peer's pid field holds {pid}, not a pid"))
            })?;
        match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(PeerWatch { pid, pidfd }),
            Err(Errno::SRCH) => Err(gone(pid)),
            Err(e) => Err(Error::os(&format!("pidfd_open({pid})"), e)),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        let mut fds = [rustix::event::PollFd::new(
            &self.pidfd,
            rustix::event::PollFlags::IN,
        )];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(n) => n == 0,
            // EINTR: the answer is unknown; say alive and ask again at the next check.
            Err(_) => true,
        }
    }
}

pub fn gone(pid: u32) -> Error {
    Error::new(
        ErrorKind::PeerGone,
        format!("the peer process (pid {pid}) died; open or create the channel again"),
    )
}

/// Whether a process of this pid exists (for a region whose creator we never watched).
pub fn process_exists(pid: u32) -> bool {
    match i32::try_from(pid).ok().and_then(Pid::from_raw) {
        Some(p) => !matches!(rustix::process::test_kill_process(p), Err(Errno::SRCH)),
        None => false,
    }
}

/// Sleeps while `*word == expected`, at most `timeout`. Returns early on a wake-up, a change
/// of the word, or a signal; the caller re-checks its condition either way.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    // Not private: the word is shared between processes.
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes every sleeper on `word`.
pub fn futex_wake(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), u32::MAX);
}
