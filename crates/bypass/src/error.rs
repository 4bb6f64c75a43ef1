//! Errors of the queue API: a stable kind (with an errno-style code for a C API) and a message
//! that says what went wrong and what to do about it.

use std::fmt;
use std::io;

/// What kind of failure an [`Error`] is. The set is stable; each kind maps to one errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The queue descriptor names no open queue.
    BadQueue,
    /// The call does not apply to this kind of queue (e.g. `accept` on a UDP socket).
    WrongQueueKind,
    /// An argument is not acceptable (an empty push, a zero-length read, a bad backlog).
    InvalidArgument,
    /// The token names no pending or completed operation (never issued, or already waited on).
    UnknownToken,
    /// A wait ran out of time; the token stays valid.
    TimedOut,
    /// The local address is already bound by someone else.
    AddressInUse,
    /// The local address does not belong to this host or interface.
    AddressNotAvailable,
    /// Nobody listens at the remote address.
    ConnectionRefused,
    /// The peer reset the connection.
    ConnectionReset,
    /// The connection was aborted locally (e.g. retransmissions ran out).
    ConnectionAborted,
    /// The operation needs a connected socket.
    NotConnected,
    /// The socket is already connected or connecting.
    AlreadyConnected,
    /// The remote network or host cannot be reached.
    Unreachable,
    /// A message is larger than the queue can carry.
    MessageTooLong,
    /// A buffer pool or queue limit is exhausted.
    NoBufferSpace,
    /// The process at the other end of a shared-memory queue is gone.
    PeerGone,
    /// The operation was cancelled because its queue closed.
    Canceled,
    /// A privilege is missing (root, CAP_NET_RAW, CAP_NET_ADMIN, CAP_BPF, ...).
    PermissionDenied,
    /// This machine, kernel or build does not support what was asked.
    Unsupported,
    /// A file, interface or named queue does not exist.
    NotFound,
    /// A named object exists already.
    AlreadyExists,
    /// The configuration is malformed or inconsistent.
    Config,
    /// The device has no space left.
    StorageFull,
    /// Any other failure reported by the operating system.
    Io,
}

impl ErrorKind {
    /// The errno this kind maps to in a C API.
    pub fn errno(self) -> i32 {
        use ErrorKind::*;
        match self {
            BadQueue => libc::EBADF,
            WrongQueueKind => libc::EOPNOTSUPP,
            InvalidArgument | UnknownToken => libc::EINVAL,
            TimedOut => libc::ETIMEDOUT,
            AddressInUse => libc::EADDRINUSE,
            AddressNotAvailable => libc::EADDRNOTAVAIL,
            ConnectionRefused => libc::ECONNREFUSED,
            ConnectionReset => libc::ECONNRESET,
            ConnectionAborted => libc::ECONNABORTED,
            NotConnected => libc::ENOTCONN,
            AlreadyConnected => libc::EISCONN,
            Unreachable => libc::EHOSTUNREACH,
            MessageTooLong => libc::EMSGSIZE,
            NoBufferSpace => libc::ENOBUFS,
            PeerGone => libc::EPIPE,
            Canceled => libc::ECANCELED,
            PermissionDenied => libc::EPERM,
            Unsupported => libc::ENOTSUP,
            NotFound => libc::ENOENT,
            AlreadyExists => libc::EEXIST,
            Config => libc::EINVAL,
            StorageFull => libc::ENOSPC,
            Io => libc::EIO,
        }
    }

    /// The kind an errno maps to (for errors coming back from the kernel).
    pub fn from_errno(errno: i32) -> ErrorKind {
        use ErrorKind::*;
        match errno {
            libc::EBADF => BadQueue,
            libc::EINVAL => InvalidArgument,
            libc::ETIMEDOUT => TimedOut,
            libc::EADDRINUSE => AddressInUse,
            libc::EADDRNOTAVAIL => AddressNotAvailable,
            libc::ECONNREFUSED => ConnectionRefused,
            libc::ECONNRESET => ConnectionReset,
            libc::ECONNABORTED => ConnectionAborted,
            libc::ENOTCONN => NotConnected,
            libc::EISCONN | libc::EALREADY => AlreadyConnected,
            libc::EHOSTUNREACH | libc::ENETUNREACH => Unreachable,
            libc::EMSGSIZE => MessageTooLong,
            libc::ENOBUFS | libc::ENOMEM => NoBufferSpace,
            libc::EPIPE => PeerGone,
            libc::ECANCELED => Canceled,
            libc::EPERM | libc::EACCES => PermissionDenied,
            libc::EOPNOTSUPP => Unsupported,
            libc::ENOENT | libc::ENODEV => NotFound,
            libc::EEXIST => AlreadyExists,
            libc::ENOSPC => StorageFull,
            _ => Io,
        }
    }

    /// A short stable name, e.g. `address_in_use`.
    pub fn as_str(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadQueue => "bad_queue",
            WrongQueueKind => "wrong_queue_kind",
            InvalidArgument => "invalid_argument",
            UnknownToken => "unknown_token",
            TimedOut => "timed_out",
            AddressInUse => "address_in_use",
            AddressNotAvailable => "address_not_available",
            ConnectionRefused => "connection_refused",
            ConnectionReset => "connection_reset",
            ConnectionAborted => "connection_aborted",
            NotConnected => "not_connected",
            AlreadyConnected => "already_connected",
            Unreachable => "unreachable",
            MessageTooLong => "message_too_long",
            NoBufferSpace => "no_buffer_space",
            PeerGone => "peer_gone",
            Canceled => "canceled",
            PermissionDenied => "permission_denied",
            Unsupported => "unsupported",
            NotFound => "not_found",
            AlreadyExists => "already_exists",
            Config => "config",
            StorageFull => "storage_full",
            Io => "io",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed call or operation: a kind and a message for a person.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// An error from the operating system, with what we were doing when it happened.
    pub fn os(err: io::Error, doing: impl fmt::Display) -> Error {
        let kind = err
            .raw_os_error()
            .map_or(ErrorKind::Io, ErrorKind::from_errno);
        Error::new(kind, format!("{doing}: {err}"))
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {})", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
