//! Storage queues: files and block devices as queues of a [`crate::LibOs`], served by the
//! io_uring engine of `bypass-storage` (registered files, the LibOs's large pool registered as
//! fixed buffers, batched submission, O_DIRECT by default).
//!
//! A storage queue is addressed by offset: [`crate::LibOs::push_at`] writes an Sga at an
//! offset, [`crate::LibOs::pop_at`] reads a length at an offset into pool buffers, and
//! [`crate::LibOs::sync`] makes every completed write durable. Each returns a token that
//! `wait_any` mixes freely with network tokens.
//!
//! Closing a file with operations in flight: submitted I/O cannot be recalled, so those
//! operations complete with their real results, and the file is closed once they have.

use std::path::Path;
use std::task::{Context, Poll};
use std::time::Duration;

use bypass_runtime::{BufferPool, Sga};
use bypass_storage::{Completion, Engine, EngineConfig, FileId, OpId, SqPoll};

pub use bypass_storage::OpenOptions as FileOptions;

use crate::config::StorageSection;
use crate::error::{Error, ErrorKind, Result};
use crate::slab::Slab;
use crate::types::QValue;

/// The files of one LibOs and the ring that serves them.
pub(crate) struct StorageEngine {
    engine: Engine,
    files: Slab<FileId>,
    /// Files closed by the application while operations on them were in flight.
    closing: Vec<FileId>,
}

impl StorageEngine {
    /// A ring over `pool` as `section` says (the pool registered as fixed buffers when asked
    /// and the memory lock limit allows).
    pub(crate) fn new(
        pool: BufferPool,
        max_files: usize,
        section: &StorageSection,
    ) -> Result<StorageEngine> {
        let config = EngineConfig {
            entries: section.ring_entries,
            max_files: max_files.clamp(1, 4096) as u32,
            register_buffers: section.fixed_buffers,
            eager_submit_below: section.eager_submit_below,
            sqpoll: section.sqpoll_cpu.map(|cpu| SqPoll {
                cpu: Some(cpu),
                idle: Duration::from_millis(u64::from(section.sqpoll_idle_ms)),
            }),
            ..EngineConfig::default()
        };
        let engine = match Engine::new(&config, pool.clone()) {
            Ok(e) => e,
            // Without CAP_IPC_LOCK a large pool may exceed RLIMIT_MEMLOCK: run without fixed
            // buffers rather than not at all.
            Err(e) if config.register_buffers && e.message().contains("fixed buffers") => {
                Engine::new(
                    &EngineConfig {
                        register_buffers: false,
                        ..config
                    },
                    pool,
                )
                .map_err(convert)?
            }
            Err(e) => return Err(convert(e)),
        };
        Ok(StorageEngine {
            engine,
            files: Slab::new(max_files),
            closing: Vec::new(),
        })
    }

    pub(crate) fn open(&mut self, path: &Path, options: &FileOptions) -> Result<u32> {
        let file = self.engine.open(path, options).map_err(convert)?;
        match self.files.insert(file) {
            Some(key) => Ok(key),
            None => {
                let _ = self.engine.close(file);
                Err(Error::new(
                    ErrorKind::NoBufferSpace,
                    "too many files open; close some or raise limits.max_queues",
                ))
            }
        }
    }

    fn file(&self, key: u32) -> Result<FileId> {
        self.files
            .get(key)
            .copied()
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "the file is closed"))
    }

    /// The file's length now.
    pub(crate) fn len(&self, key: u32) -> Result<u64> {
        self.engine.len(self.file(key)?).map_err(convert)
    }

    pub(crate) fn push_at(&mut self, key: u32, sga: Sga, offset: u64) -> Result<Op> {
        let file = self.file(key)?;
        let sga = self.bounce_if_misaligned(file, sga)?;
        let id = self.engine.write(file, offset, sga).map_err(convert)?;
        Ok(Op { id })
    }

    pub(crate) fn pop_at(&mut self, key: u32, offset: u64, len: usize) -> Result<Op> {
        let file = self.file(key)?;
        let id = self.engine.read(file, offset, len).map_err(convert)?;
        Ok(Op { id })
    }

    pub(crate) fn sync(&mut self, key: u32) -> Result<Op> {
        let file = self.file(key)?;
        let id = self.engine.fsync(file).map_err(convert)?;
        Ok(Op { id })
    }

    /// O_DIRECT needs aligned buffer addresses; small Sgas come from the frame pool, whose
    /// buffers start after headroom. Copy those into the (page-aligned) large pool.
    fn bounce_if_misaligned(&self, file: FileId, sga: Sga) -> Result<Sga> {
        let info = self.engine.info(file).map_err(convert)?;
        let align = info.alignment.memory as usize;
        if !info.direct
            || sga
                .segments()
                .all(|b| (b.as_ptr() as usize) & (align - 1) == 0)
        {
            return Ok(sga);
        }
        let pool = self.engine.pool();
        let mut out = Sga::new();
        let mut buf = None;
        for seg in sga.segments() {
            let mut data = &seg[..];
            while !data.is_empty() {
                if buf
                    .as_ref()
                    .is_none_or(|b: &bypass_runtime::Buffer| b.tailroom() == 0)
                {
                    if let Some(full) = buf.take() {
                        out.push(full);
                    }
                    buf = Some(pool.alloc().ok_or_else(|| {
                        Error::new(
                            ErrorKind::NoBufferSpace,
                            "the large buffer pool is exhausted (needed to align an O_DIRECT \
                             write); drop Sgas sooner or raise pool.large",
                        )
                    })?);
                }
                let b = buf.as_mut().expect("allocated above");
                let n = data.len().min(b.tailroom());
                b.extend_from_slice(&data[..n]);
                data = &data[n..];
            }
        }
        if let Some(last) = buf {
            out.push(last);
        }
        Ok(out)
    }

    /// Closes a file now, or once its operations in flight complete.
    pub(crate) fn close(&mut self, key: u32) -> Result<()> {
        let file = self
            .files
            .remove(key)
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "the file is already closed"))?;
        if self.engine.close(file).is_err() {
            self.closing.push(file);
        }
        Ok(())
    }

    /// Operations in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.engine.stats().in_flight
    }

    /// Submits queued I/O and reaps completions (waking their operations); sleeps up to
    /// `block_ms` in the kernel if I/O is in flight and nothing has completed. Returns whether
    /// anything completed.
    pub(crate) fn poll(&mut self, block_ms: i32) -> Result<bool> {
        let mut n = self.engine.poll().map_err(convert)?;
        if n == 0 && block_ms > 0 && self.in_flight() > 0 {
            let timeout = Duration::from_millis(block_ms as u64);
            n = self.engine.wait(Some(timeout)).map_err(convert)?;
        }
        if n > 0 && !self.closing.is_empty() {
            let engine = &mut self.engine;
            self.closing.retain(|&f| engine.close(f).is_err());
        }
        Ok(n > 0)
    }
}

/// An operation on a storage queue: its id in the engine.
pub(crate) struct Op {
    id: OpId,
}

impl Op {
    pub(crate) fn poll(&mut self, s: &mut StorageEngine, cx: &mut Context<'_>) -> Poll<QValue> {
        s.engine.poll_op(self.id, cx.waker()).map(|r| match r {
            Ok(Completion::Read(sga)) => QValue::Popped { sga, from: None },
            Ok(Completion::Write(bytes)) => QValue::Pushed { bytes },
            Ok(Completion::Sync) => QValue::Synced,
            Err(e) => QValue::Failed(convert(e)),
        })
    }
}

/// The queue API's error for a storage error, keeping its message.
fn convert(e: bypass_storage::Error) -> Error {
    use bypass_storage::ErrorKind as S;
    let kind = match (e.errno(), e.kind()) {
        (Some(errno), _) => ErrorKind::from_errno(errno),
        (None, S::Misaligned | S::InvalidInput) => ErrorKind::InvalidArgument,
        (None, S::Busy) => ErrorKind::NoBufferSpace,
        (None, S::NoSpace) => ErrorKind::StorageFull,
        (None, S::NotFound) => ErrorKind::NotFound,
        (None, S::PermissionDenied) => ErrorKind::PermissionDenied,
        (None, S::Unsupported) => ErrorKind::Unsupported,
        (None, _) => ErrorKind::Io,
    };
    Error::new(kind, e.message())
}
