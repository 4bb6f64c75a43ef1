//! Network namespaces and thread placement.
//!
//! A network namespace made by `ip netns add NAME` is a file, `/run/netns/NAME`; `setns(2)` on
//! it moves the *calling thread* (not the process) into that namespace. Interfaces are looked
//! up, sockets are created and XDP programs are attached in the namespace of the thread doing
//! it, so a device for an interface of namespace NAME must be opened on a thread that entered
//! NAME. Once created, a socket stays in its namespace whatever thread uses it; but the devices
//! here hold `Rc` buffer pools and are not `Send`, so the usual pattern is to run the whole
//! datapath on such a thread: [`run_in`] does exactly that.
//!
//! `ip netns exec` remounts `/sys` (hiding bpffs); entering with `setns` keeps the mount view.

use std::io;
use std::path::PathBuf;

use crate::sys::os;

/// The file that names network namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Moves the calling thread into network namespace `name` for the rest of its life.
///
/// Prefer [`run_in`], which does this on a fresh thread; use this one on a thread you own and
/// dedicate to the namespace (a pinned datapath thread).
pub fn enter(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad network namespace name {name:?}"),
        ));
    }
    let p = path(name);
    let fd = os::open(&p.to_string_lossy(), libc::O_RDONLY).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot open network namespace {}: {e} (create it with `ip netns add {name}`)",
                p.display()
            ),
        )
    })?;
    os::setns(&fd, libc::CLONE_NEWNET).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setns into {name} failed: {e} (needs root or CAP_SYS_ADMIN)"),
        )
    })
}

/// Runs `f` on a new thread that has entered network namespace `name`, and returns its
/// result. `f` may borrow from the caller. A panic in `f` is resumed in the caller.
pub fn run_in<T, F>(name: &str, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| -> io::Result<T> {
            enter(name)?;
            Ok(f())
        });
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Pins the calling thread to one CPU (for latency measurements: both ends of a ping-pong on
/// their own cores, spinning).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    os::pin_to_cpu(cpu)
}

/// Index of interface `name` in the calling thread's namespace, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    os::if_index(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_a_missing_namespace_says_how_to_create_it() {
        let err = run_in("bypass-no-such-namespace", || ()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ip netns add bypass-no-such-namespace"),
            "{text}"
        );
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            enter("a/b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn interfaces_are_looked_up_by_name() {
        assert_eq!(if_index("lo"), Some(1));
        assert_eq!(if_index("bypass-nope0"), None);
    }
}
