//! Errors of the echo server and client: what failed, on which connection, and where.

use std::fmt;
use std::time::Duration;

/// A failed echo run.
#[derive(Debug)]
pub enum Error {
    /// A call of the queue API failed; `doing` says which and on what.
    Api {
        doing: String,
        source: bypass::Error,
    },
    /// An echoed byte differs from the byte sent.
    Mismatch {
        /// Index of the client connection (0-based).
        connection: usize,
        /// Sequence number of the message on that connection (0-based, over the whole run).
        message: u64,
        /// Offset of the first differing byte within the message.
        offset: usize,
        expected: u8,
        got: u8,
    },
    /// A datagram echo had another length than the datagram sent.
    WrongLength {
        connection: usize,
        message: u64,
        expected: usize,
        got: usize,
    },
    /// More bytes came back than were sent.
    Unexpected { connection: usize, bytes: usize },
    /// The server closed a connection before echoing everything.
    Closed {
        connection: usize,
        message: u64,
        offset: usize,
    },
    /// No echo arrived in time.
    NoReply {
        connection: usize,
        message: u64,
        waited: Duration,
    },
    /// The options make no sense.
    Options(String),
}

impl Error {
    pub(crate) fn api(doing: impl Into<String>, source: bypass::Error) -> Error {
        Error::Api {
            doing: doing.into(),
            source,
        }
    }

    /// The kind of the queue-API error underneath, if this is one.
    pub fn api_kind(&self) -> Option<bypass::ErrorKind> {
        match self {
            Error::Api { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl From<bypass::Error> for Error {
    fn from(source: bypass::Error) -> Error {
        Error::Api {
            doing: String::new(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Api { doing, source } if doing.is_empty() => write!(f, "{source}"),
            Error::Api { doing, source } => write!(f, "{doing}: {source}"),
            Error::Mismatch {
                connection,
                message,
                offset,
                expected,
                got,
            } => write!(
                f,
                "connection {connection}: the echo of message {message} differs at byte {offset}: \
                 sent {expected:#04x}, got {got:#04x}; the server corrupted or reordered data"
            ),
            Error::WrongLength {
                connection,
                message,
                expected,
                got,
            } => write!(
                f,
                "connection {connection}: the echo of datagram {message} has {got} B, not the {expected} B sent"
            ),
            Error::Unexpected { connection, bytes } => write!(
                f,
                "connection {connection}: {bytes} B came back that were never sent; is the peer an echo server?"
            ),
            Error::Closed {
                connection,
                message,
                offset,
            } => write!(
                f,
                "connection {connection}: the server closed the connection after {offset} B of the echo of message {message}"
            ),
            Error::NoReply {
                connection,
                message,
                waited,
            } => write!(
                f,
                "connection {connection}: no complete echo of message {message} after {waited:?}; \
                 is the server running and reachable (and, for UDP, was a datagram lost)?"
            ),
            Error::Options(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Api { source, .. } => Some(source),
            _ => None,
        }
    }
}
