//! The values of the queue API: queue descriptors, queue tokens, and results.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddrV4;

use bypass_runtime::{Sga, TaskId};

use crate::error::{Error, ErrorKind, Result};

/// Names an open queue of a [`crate::LibOs`]: a socket, a shared-memory queue, a file.
///
/// The low 20 bits are a table index and the high 12 a generation, so a descriptor of a closed
/// queue does not silently name the next queue opened in its slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QDesc(pub(crate) u32);

impl QDesc {
    pub fn as_u32(self) -> u32 {
        self.0
    }
    pub fn from_u32(raw: u32) -> QDesc {
        QDesc(raw)
    }
}

/// A hash map keyed by queue descriptors, for applications that keep state per queue (a
/// connection table). Descriptors are small table indexes with a generation, so one multiply
/// hashes them well; the default SipHash would cost more than the rest of a lookup on every
/// completion of a busy loop.
pub type QDescMap<V> = HashMap<QDesc, V, BuildHasherDefault<QDescHasher>>;

/// The hasher of [`QDescMap`]: Fibonacci hashing of the descriptor's 32 bits.
#[derive(Default, Clone, Copy, Debug)]
pub struct QDescHasher(u64);

impl Hasher for QDescHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than QDesc; fold the bytes in so it stays a hash.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
}

impl fmt::Debug for QDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "qd{}", self.0)
    }
}

impl fmt::Display for QDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Names one asynchronous operation; it completes exactly once, and is spent once waited on.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QToken(pub(crate) TaskId);

impl QToken {
    pub fn as_u64(self) -> u64 {
        self.0.as_u64()
    }
    pub fn from_u64(raw: u64) -> QToken {
        QToken(TaskId::from_u64(raw))
    }
}

impl fmt::Debug for QToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "qt{:x}", self.0.as_u64())
    }
}

/// Which call started an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    Accept,
    Connect,
    Push,
    Pop,
    /// A write at an offset of a storage queue.
    PushAt,
    /// A read at an offset of a storage queue.
    PopAt,
    /// A flush of a storage queue to stable storage.
    Sync,
}

/// What an operation produced.
#[derive(Debug)]
pub enum QValue {
    /// `accept`: a new queue for the connection and the peer's address.
    Accepted { qd: QDesc, peer: SocketAddrV4 },
    /// `connect`: the connection is established.
    Connected,
    /// `push`/`pushto`/`push_at`: every byte was handed on.
    Pushed { bytes: usize },
    /// `pop`: data, and for a datagram queue the sender's address.
    Popped {
        sga: Sga,
        from: Option<SocketAddrV4>,
    },
    /// `pop`: the peer closed its sending side; no more data will come.
    EndOfStream,
    /// `sync`: the data is on stable storage.
    Synced,
    /// The operation failed.
    Failed(Error),
}

/// The completion of an operation, as [`crate::LibOs::wait`] returns it.
#[derive(Debug)]
pub struct QResult {
    pub opcode: OpCode,
    pub qd: QDesc,
    pub qt: QToken,
    pub value: QValue,
}

impl QResult {
    /// The popped data; end of stream gives an empty Sga; a failure gives its error.
    pub fn into_sga(self) -> Result<Sga> {
        match self.value {
            QValue::Popped { sga, .. } => Ok(sga),
            QValue::EndOfStream => Ok(Sga::new()),
            QValue::Failed(e) => Err(e),
            other => Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{:?} on {} completed with {other:?}, not data",
                    self.opcode, self.qd
                ),
            )),
        }
    }

    /// The error, if the operation failed.
    pub fn error(&self) -> Option<&Error> {
        match &self.value {
            QValue::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// `Ok(self)` unless the operation failed.
    pub fn ok(self) -> Result<QResult> {
        match self.value {
            QValue::Failed(e) => Err(e),
            _ => Ok(self),
        }
    }
}

/// The kind of socket `socket` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// TCP.
    Stream,
    /// UDP.
    Datagram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qdesc_map_finds_every_descriptor_it_holds() {
        let mut map = QDescMap::default();
        // Dense indexes of several generations, as a queue table hands them out.
        let qds: Vec<QDesc> = (0..4u32)
            .flat_map(|generation| (0..1000u32).map(move |i| QDesc((generation << 20) | i)))
            .collect();
        for (n, &qd) in qds.iter().enumerate() {
            assert!(map.insert(qd, n).is_none());
        }
        assert_eq!(map.len(), qds.len());
        for (n, qd) in qds.iter().enumerate() {
            assert_eq!(map.get(qd), Some(&n));
        }
        assert_eq!(map.get(&QDesc(5 << 20)), None);
    }
}
