//! Errors of the storage engine and the log: a kind to branch on, the errno when the kernel
//! gave one, and a message that says what failed and what to do about it.

use std::fmt;
use std::io;

/// What went wrong, coarsely, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The device reported an I/O error (EIO): the data may be lost.
    Io,
    /// The file system or device is full (ENOSPC, EDQUOT).
    NoSpace,
    /// An O_DIRECT request whose offset, length or buffer address is not aligned as the file
    /// needs. Caught before submission.
    Misaligned,
    /// A bad argument: an unknown file or operation id, a length of zero, a closed file.
    InvalidInput,
    /// The path does not exist.
    NotFound,
    /// The caller may not open the path.
    PermissionDenied,
    /// A fixed limit is reached (operations in flight, open files, pool buffers); retry after
    /// some operations complete.
    Busy,
    /// The kernel or file system does not support what was asked (e.g. O_DIRECT on this file
    /// system, SQPOLL without privileges).
    Unsupported,
    /// The log holds a record that fails its checks where no torn tail is possible.
    Corrupt,
    /// Any other error the kernel returned; see [`Error::errno`].
    Other,
}

/// An error with its kind, errno (if it came from the kernel) and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    errno: Option<i32>,
    message: String,
}

impl Error {
    /// An error without an errno.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            errno: None,
            message: message.into(),
        }
    }

    /// An error from a (positive) errno the kernel returned for `what`.
    pub fn from_errno(errno: i32, what: impl fmt::Display) -> Error {
        let kind = match errno {
            libc::EIO => ErrorKind::Io,
            libc::ENOSPC | libc::EDQUOT => ErrorKind::NoSpace,
            libc::ENOENT => ErrorKind::NotFound,
            libc::EACCES | libc::EPERM | libc::EROFS => ErrorKind::PermissionDenied,
            libc::EOPNOTSUPP | libc::ENOSYS => ErrorKind::Unsupported,
            libc::EINVAL | libc::EBADF | libc::EISDIR | libc::EFBIG => ErrorKind::InvalidInput,
            libc::EAGAIN | libc::EBUSY | libc::EMFILE | libc::ENFILE | libc::ENOMEM => {
                ErrorKind::Busy
            }
            _ => ErrorKind::Other,
        };
        let hint = match kind {
            ErrorKind::Io => "; the device failed this I/O, check the kernel log (dmesg)",
            ErrorKind::NoSpace => "; free space on the file system or use a smaller file",
            ErrorKind::PermissionDenied => "; check the file's permissions and the mount options",
            _ => "",
        };
        let text = io::Error::from_raw_os_error(errno);
        Error {
            kind,
            errno: Some(errno),
            message: format!("{what} failed: {text}{hint}"),
        }
    }

    /// An error from an `io::Error` returned while doing `what`.
    pub fn from_io(err: &io::Error, what: impl fmt::Display) -> Error {
        match err.raw_os_error() {
            Some(errno) => Error::from_errno(errno, what),
            None => Error::new(ErrorKind::Other, format!("{what} failed: {err}")),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The kernel's errno, when the error came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e.errno {
            Some(errno) => io::Error::new(io::Error::from_raw_os_error(errno).kind(), e.message),
            None => io::Error::other(e.message),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
