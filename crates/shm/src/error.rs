//! The errors of a channel: a kind to match on and a message that says what to do.

use std::fmt;

use crate::ring::RingError;

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No channel of that name exists (yet).
    NotFound,
    /// A live process already created a channel of that name, or it already has its two sides.
    InUse,
    /// Bad arguments: a name, a geometry, a message larger than the channel can carry.
    InvalidInput,
    /// The region under the name is not a channel of this version.
    Incompatible,
    /// The peer process died.
    PeerGone,
    /// The peer closed its end.
    PeerClosed,
    /// The peer broke the protocol (impossible index, descriptor or state in shared memory).
    /// The channel is closed.
    Corrupt,
    /// A wait ran out of time; the channel is still usable.
    TimedOut,
    /// A system call failed.
    Os,
}

/// An error of a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
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

    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn os(what: &str, err: impl fmt::Display) -> Error {
        Error::new(ErrorKind::Os, format!("{what}: {err}"))
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the channel is finished (the peer left or broke it); every later call fails the
    /// same way.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::PeerGone | ErrorKind::PeerClosed | ErrorKind::Corrupt
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<RingError> for Error {
    fn from(e: RingError) -> Error {
        Error::corrupt(e.to_string())
    }
}
