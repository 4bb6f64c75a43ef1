//! The table of open queues: what each [`QDesc`] names.

use crate::error::{Error, ErrorKind, Result};
use crate::slab::Slab;
use crate::types::QDesc;

/// The kinds of queue a LibOs can hold at once. Each kind is served by one engine; `local` in
/// [`Queue`] is that engine's own key for the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueKind {
    /// A Linux socket of the `kernel` libOS.
    KernelSocket,
    /// A Linux socket of the `uring` libOS.
    UringSocket,
    /// A socket of the user-space stack (`sim`, `xdp`, `packet`, `tap`).
    InetSocket,
    /// A file or block device (storage queue) served by io_uring.
    File,
    /// A shared-memory channel to another process.
    Shm,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Queue {
    pub kind: QueueKind,
    pub local: u32,
}

pub(crate) struct QueueTable {
    slab: Slab<Queue>,
}

impl QueueTable {
    pub(crate) fn new(limit: usize) -> QueueTable {
        QueueTable {
            slab: Slab::new(limit),
        }
    }

    pub(crate) fn insert(&mut self, kind: QueueKind, local: u32) -> Result<QDesc> {
        self.slab
            .insert(Queue { kind, local })
            .map(QDesc)
            .ok_or_else(|| {
                Error::new(
                ErrorKind::NoBufferSpace,
                "too many open queues; close some or raise limits.max_queues in the configuration",
            )
            })
    }

    pub(crate) fn get(&self, qd: QDesc) -> Result<Queue> {
        self.slab.get(qd.0).copied().ok_or_else(|| bad_queue(qd))
    }

    pub(crate) fn remove(&mut self, qd: QDesc) -> Result<Queue> {
        self.slab.remove(qd.0).ok_or_else(|| bad_queue(qd))
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }
}

fn bad_queue(qd: QDesc) -> Error {
    Error::new(
        ErrorKind::BadQueue,
        format!("{qd} is not an open queue (never opened, or already closed)"),
    )
}
