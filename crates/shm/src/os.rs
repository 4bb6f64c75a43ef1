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
///
/// Where `pidfd_open` does not exist (kernels before 5.3, or under an emulator such as
/// valgrind that does not know the call), the process is named by its pid and its start time
/// (field 22 of `/proc/PID/stat`): a later process of the same pid has another start time.
pub struct PeerWatch {
    pid: u32,
    how: Watch,
}

enum Watch {
    Pidfd(OwnedFd),
    StartTime(u64),
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
        let how = match rustix::process::pidfd_open(raw, PidfdFlags::empty()) {
            Ok(pidfd) => Watch::Pidfd(pidfd),
            Err(Errno::SRCH) => return Err(gone(pid)),
            Err(Errno::NOSYS) => match running_since(pid) {
                Some(start) => Watch::StartTime(start),
                None => return Err(gone(pid)),
            },
            Err(e) => return Err(Error::os(&format!("pidfd_open({pid})"), e)),
        };
        Ok(PeerWatch { pid, how })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs.
    pub fn alive(&self) -> bool {
        let pidfd = match &self.how {
            Watch::Pidfd(fd) => fd,
            Watch::StartTime(start) => return running_since(self.pid) == Some(*start),
        };
        let mut fds = [rustix::event::PollFd::new(
            pidfd,
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

/// The start time of process `pid` (in clock ticks after boot) if it runs and has not exited
/// (a zombie has exited: its pidfd would be readable).
fn running_since(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold anything, so fields count from its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 of the line is the 20th after the state (field 3).
    fields.nth(18)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_named_by_its_start_time_until_it_exits() {
        let me = my_pid();
        let start = running_since(me).expect("this process runs");
        assert_eq!(
            running_since(me),
            Some(start),
            "the same process, the same name"
        );
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not yet reaped (a zombie) already counts as gone, as with a pidfd.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while running_since(pid).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exited"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child.wait().unwrap();
        assert_eq!(running_since(pid), None, "exited and reaped");
    }
}
