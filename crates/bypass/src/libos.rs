//! [`LibOs`]: the queue API over every library OS.
//!
//! A LibOs owns a table of queues (each served by one *engine*: kernel sockets, and the other
//! kinds as they plug in), a scheduler whose tasks are the pending operations, and the buffer
//! pools. Data calls create an operation, try it once at once, and return its [`QToken`];
//! `wait*` drive the engines and the scheduler until the tokens asked for complete.
//!
//! Adding a queue kind means: a variant in [`QueueKind`] and in [`Work`], an engine field in
//! [`Engines`] polled by [`Engines::poll`], and the arms of the data calls below that route to it.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::path::Path;
use std::task::{Context, Poll};
use std::time::Duration;

use bypass_runtime::{
    Buffer, BufferPool, Clock, Instant, PoolConfig, Scheduler, Sga, Task, TaskId,
};

use crate::config::{Config, LibOsName, PollMode};
use crate::error::{Error, ErrorKind, Result};
use crate::inet::{self, InetEngine};
use crate::kernel::{self, KernelEngine};
use crate::queue::{QueueKind, QueueTable};
use crate::shm::{self, ShmEngine};
use crate::storage::{self, FileOptions, StorageEngine};
use crate::types::{OpCode, QDesc, QResult, QToken, QValue, SocketKind};
use crate::uring_net::{self, UringEngine};

/// The buffer pools of a LibOs.
pub(crate) struct Pools {
    /// 2 KiB chunks with headroom: frames and small messages.
    pub frames: BufferPool,
    /// 64 KiB page-aligned chunks: bulk and storage I/O.
    pub large: BufferPool,
}

/// Everything operations work on; the scheduler lends it to each operation it polls.
pub(crate) struct Engines {
    pub queues: QueueTable,
    pub pools: Pools,
    pub clock: Clock,
    pub kernel: Option<KernelEngine>,
    /// Linux sockets driven by io_uring (the `uring` libOS).
    pub uring: Option<UringEngine>,
    pub inet: Option<InetEngine>,
    /// Files and block devices, started with the first `open_file`.
    pub storage: Option<StorageEngine>,
    /// Shared-memory queues, started with the first `shm_create` / `shm_open`.
    pub shm: Option<ShmEngine>,
}

impl Engines {
    /// Moves every engine's I/O forward once. `now` is the time if the caller read it (the
    /// clock is read here only for an engine that needs it). `block_ms` > 0 lets an engine
    /// sleep in the kernel that long when it has nothing to do. Returns whether anything
    /// happened.
    fn poll(&mut self, now: Option<Instant>, block_ms: i32) -> Result<bool> {
        let mut progress = false;
        // With storage I/O in flight the network engines must not sleep past its completions.
        // Nor while a shared-memory pop waits (its channel has no fd to sleep on with them).
        let storage_busy = self.storage.as_ref().is_some_and(|s| s.in_flight() > 0)
            || self.shm.as_ref().is_some_and(ShmEngine::waiting);
        if let Some(k) = &mut self.kernel {
            progress |= k.poll(if storage_busy { 0 } else { block_ms })?;
        }
        if let Some(u) = &mut self.uring {
            progress |= u.poll(if storage_busy { 0 } else { block_ms })?;
        }
        if let Some(i) = &mut self.inet {
            progress |= i.poll(now.unwrap_or_else(|| self.clock.now()));
        }
        if let Some(s) = &mut self.storage {
            let alone = self.kernel.is_none() && self.uring.is_none() && self.inet.is_none();
            let block = match (progress, alone) {
                (true, _) => 0,
                (false, true) => block_ms,
                (false, false) => block_ms.min(1),
            };
            progress |= s.poll(block)?;
        }
        if let Some(s) = &mut self.shm {
            let alone = self.kernel.is_none()
                && self.uring.is_none()
                && self.inet.is_none()
                && self.storage.is_none();
            progress |= s.poll(if progress || !alone { 0 } else { block_ms });
        }
        Ok(progress)
    }

    fn inet(&mut self) -> Result<&mut InetEngine> {
        self.inet.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::WrongQueueKind,
                "this LibOs has no user-space stack",
            )
        })
    }

    /// The storage engine (started by the first `open_file`).
    fn storage(&mut self) -> Result<&mut StorageEngine> {
        self.storage
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::BadQueue, "no file was ever opened in this LibOs"))
    }

    /// The shared-memory engine, started on first use.
    fn shm(&mut self) -> Result<&mut ShmEngine> {
        Ok(self
            .shm
            .get_or_insert_with(|| ShmEngine::new(MAX_SHM_QUEUES)))
    }

    fn uring(&mut self) -> Result<&mut UringEngine> {
        self.uring.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::WrongQueueKind,
                "this LibOs has no io_uring sockets",
            )
        })
    }

    fn kernel(&mut self) -> Result<&mut KernelEngine> {
        self.kernel.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::WrongQueueKind,
                "this LibOs has no kernel sockets",
            )
        })
    }
}

/// The engine-specific part of a pending operation.
pub(crate) enum Work {
    Kernel(kernel::Op),
    Inet(inet::Op),
    Storage(storage::Op),
    Uring(uring_net::Op),
    Shm(shm::Op),
}

/// A pending operation: a task of the scheduler.
pub(crate) struct Operation {
    opcode: OpCode,
    qd: QDesc,
    work: Work,
}

/// What a finished operation left for `wait`.
pub(crate) struct Completion {
    opcode: OpCode,
    qd: QDesc,
    value: QValue,
}

impl Task<Engines> for Operation {
    type Output = Completion;

    fn poll(&mut self, engines: &mut Engines, cx: &mut Context<'_>) -> Poll<Completion> {
        let value = match &mut self.work {
            Work::Kernel(op) => match engines.kernel.as_mut() {
                Some(k) => op.poll(k, &mut engines.queues, cx),
                None => Poll::Ready(QValue::Failed(Error::new(
                    ErrorKind::Canceled,
                    "engine gone",
                ))),
            },
            Work::Inet(op) => match engines.inet.as_mut() {
                Some(i) => op.poll(i, &mut engines.queues, cx),
                None => Poll::Ready(QValue::Failed(Error::new(
                    ErrorKind::Canceled,
                    "engine gone",
                ))),
            },
            Work::Uring(op) => match engines.uring.as_mut() {
                Some(u) => op.poll(u, &mut engines.queues, cx),
                None => Poll::Ready(QValue::Failed(Error::new(
                    ErrorKind::Canceled,
                    "engine gone",
                ))),
            },
            Work::Storage(op) => match engines.storage.as_mut() {
                Some(s) => op.poll(s, cx),
                None => Poll::Ready(QValue::Failed(Error::new(
                    ErrorKind::Canceled,
                    "engine gone",
                ))),
            },
            Work::Shm(op) => match engines.shm.as_mut() {
                Some(s) => op.poll(s, cx),
                None => Poll::Ready(QValue::Failed(Error::new(
                    ErrorKind::Canceled,
                    "engine gone",
                ))),
            },
        };
        value.map(|value| Completion {
            opcode: self.opcode,
            qd: self.qd,
            value,
        })
    }
}

/// A library OS instance: queues, pending operations, buffers. Single-threaded.
pub struct LibOs {
    config: Config,
    engines: Engines,
    scheduler: Scheduler<Engines, Operation>,
    /// Tokens in the order their operations completed, for `wait_next_n`. May hold tokens
    /// already taken by `wait`; those are skipped.
    completed: VecDeque<TaskId>,
}

impl LibOs {
    /// Starts a LibOs as `config` says.
    pub fn new(config: Config) -> Result<LibOs> {
        config.validate()?;
        let pool_error = |e: std::io::Error| {
            Error::os(
                e,
                "cannot map the buffer pools (lower pool.frames / pool.large in the configuration)",
            )
        };
        let frames = BufferPool::new(&PoolConfig {
            huge_pages: config.pool.huge_pages,
            ..PoolConfig::frames(config.pool.frames)
        })
        .map_err(pool_error)?;
        let large = BufferPool::new(&PoolConfig {
            huge_pages: config.pool.huge_pages,
            ..PoolConfig::large(config.pool.large)
        })
        .map_err(pool_error)?;
        let clock = Clock::real();
        let (mut kernel, mut uring, mut inet) = (None, None, None);
        match config.libos {
            LibOsName::Kernel => {
                kernel = Some(KernelEngine::new(large.clone(), config.limits.max_queues)?)
            }
            LibOsName::Uring => {
                uring = Some(UringEngine::new(large.clone(), config.limits.max_queues)?)
            }
            LibOsName::Sim | LibOsName::Xdp | LibOsName::Packet | LibOsName::Tap => {
                inet = Some(inet::open(&config, &frames)?)
            }
        }
        Ok(LibOs {
            engines: Engines {
                queues: QueueTable::new(config.limits.max_queues),
                pools: Pools { frames, large },
                clock,
                kernel,
                uring,
                inet,
                storage: None,
                shm: None,
            },
            scheduler: Scheduler::new(config.limits.max_operations),
            completed: VecDeque::new(),
            config,
        })
    }

    /// The libOS that serves this instance's network queues.
    pub fn name(&self) -> LibOsName {
        self.config.libos
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock operations and timeouts are measured on.
    pub fn clock(&self) -> &Clock {
        &self.engines.clock
    }

    // ----- buffers -------------------------------------------------------------------------

    /// An Sga of `len` bytes from the LibOs's pools, to fill and push. Its bytes are whatever
    /// the chunks held; write them all before pushing.
    pub fn sga_alloc(&self, len: usize) -> Result<Sga> {
        if len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an Sga must hold at least one byte",
            ));
        }
        let pool = self.pool_for(len);
        let mut sga = Sga::new();
        let mut left = len;
        while left > 0 {
            let mut buf = alloc(pool)?;
            let n = left.min(buf.tailroom());
            buf.append(n);
            left -= n;
            sga.push(buf);
        }
        Ok(sga)
    }

    /// An Sga holding a copy of `data`.
    pub fn sga_from_slice(&self, data: &[u8]) -> Result<Sga> {
        if data.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an Sga must hold at least one byte",
            ));
        }
        let pool = self.pool_for(data.len());
        let mut sga = Sga::new();
        for piece in data.chunks(pool.data_capacity()) {
            let mut buf = alloc(pool)?;
            buf.extend_from_slice(piece);
            sga.push(buf);
        }
        Ok(sga)
    }

    fn pool_for(&self, len: usize) -> &BufferPool {
        let pools = &self.engines.pools;
        if len <= pools.frames.data_capacity() {
            &pools.frames
        } else {
            &pools.large
        }
    }

    // ----- control calls -------------------------------------------------------------------

    /// A new socket of the configured network libOS.
    pub fn socket(&mut self, kind: SocketKind) -> Result<QDesc> {
        let (queue_kind, local) = match self.config.libos {
            LibOsName::Kernel => (
                QueueKind::KernelSocket,
                self.engines.kernel()?.socket(kind)?,
            ),
            LibOsName::Uring => (QueueKind::UringSocket, self.engines.uring()?.socket(kind)?),
            _ => (QueueKind::InetSocket, self.engines.inet()?.socket(kind)?),
        };
        self.engines
            .queues
            .insert(queue_kind, local)
            .inspect_err(|_| {
                let _ = match queue_kind {
                    QueueKind::KernelSocket => self.engines.kernel().and_then(|k| k.close(local)),
                    QueueKind::UringSocket => self.engines.uring().and_then(|u| u.close(local)),
                    QueueKind::InetSocket => self.engines.inet().and_then(|i| i.close(local)),
                    QueueKind::File | QueueKind::Shm => Ok(()),
                };
            })
    }

    pub fn bind(&mut self, qd: QDesc, local: SocketAddrV4) -> Result<()> {
        let q = self.engines.queues.get(qd)?;
        match q.kind {
            QueueKind::KernelSocket => self.engines.kernel()?.bind(q.local, local),
            QueueKind::UringSocket => self.engines.uring()?.bind(q.local, local),
            QueueKind::InetSocket => self.engines.inet()?.bind(q.local, local),
            QueueKind::File => Err(file_not_socket("bind")),
            QueueKind::Shm => Err(shm_not_socket("bind")),
        }
    }

    pub fn listen(&mut self, qd: QDesc, backlog: usize) -> Result<()> {
        if backlog == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "listen backlog must be at least 1",
            ));
        }
        let q = self.engines.queues.get(qd)?;
        match q.kind {
            QueueKind::KernelSocket => self.engines.kernel()?.listen(q.local, backlog),
            QueueKind::UringSocket => self.engines.uring()?.listen(q.local, backlog),
            QueueKind::InetSocket => self.engines.inet()?.listen(q.local, backlog),
            QueueKind::File => Err(file_not_socket("listen")),
            QueueKind::Shm => Err(shm_not_socket("listen")),
        }
    }

    /// The local address a socket is bound to (after `bind`, or after `connect` picked one).
    pub fn local_addr(&mut self, qd: QDesc) -> Result<SocketAddrV4> {
        let q = self.engines.queues.get(qd)?;
        match q.kind {
            QueueKind::KernelSocket => self.engines.kernel()?.local_addr(q.local),
            QueueKind::UringSocket => self.engines.uring()?.local_addr(q.local),
            QueueKind::InetSocket => self.engines.inet()?.local_addr(q.local),
            QueueKind::File => Err(file_not_socket("local_addr")),
            QueueKind::Shm => Err(shm_not_socket("local_addr")),
        }
    }

    /// Closes a queue. Its pending operations complete with [`ErrorKind::Canceled`].
    pub fn close(&mut self, qd: QDesc) -> Result<()> {
        let q = self.engines.queues.remove(qd)?;
        match q.kind {
            QueueKind::KernelSocket => self.engines.kernel()?.close(q.local),
            QueueKind::UringSocket => self.engines.uring()?.close(q.local),
            QueueKind::InetSocket => self.engines.inet()?.close(q.local),
            QueueKind::File => self.engines.storage()?.close(q.local),
            QueueKind::Shm => self.engines.shm()?.close(q.local),
        }
    }

    // ----- data calls ----------------------------------------------------------------------

    pub fn accept(&mut self, qd: QDesc) -> Result<QToken> {
        let q = self.engines.queues.get(qd)?;
        let work = match q.kind {
            QueueKind::KernelSocket => Work::Kernel(self.engines.kernel()?.accept(q.local)?),
            QueueKind::UringSocket => Work::Uring(self.engines.uring()?.accept(q.local)?),
            QueueKind::InetSocket => Work::Inet(self.engines.inet()?.accept(q.local)?),
            QueueKind::File => return Err(file_not_socket("accept")),
            QueueKind::Shm => return Err(shm_not_socket("accept")),
        };
        self.start(OpCode::Accept, qd, work)
    }

    pub fn connect(&mut self, qd: QDesc, remote: SocketAddrV4) -> Result<QToken> {
        let q = self.engines.queues.get(qd)?;
        let work = match q.kind {
            QueueKind::KernelSocket => {
                Work::Kernel(self.engines.kernel()?.connect(q.local, remote)?)
            }
            QueueKind::UringSocket => Work::Uring(self.engines.uring()?.connect(q.local, remote)?),
            QueueKind::InetSocket => Work::Inet(self.engines.inet()?.connect(q.local, remote)?),
            QueueKind::File => return Err(file_not_socket("connect")),
            QueueKind::Shm => return Err(shm_not_socket("connect")),
        };
        self.start(OpCode::Connect, qd, work)
    }

    /// Sends `sga` on a connected socket or other queue. The LibOs owns the Sga until the
    /// operation completes.
    pub fn push(&mut self, qd: QDesc, sga: Sga) -> Result<QToken> {
        self.push_inner(qd, sga, None)
    }

    /// Sends `sga` as one datagram to `to`.
    pub fn pushto(&mut self, qd: QDesc, sga: Sga, to: SocketAddrV4) -> Result<QToken> {
        self.push_inner(qd, sga, Some(to))
    }

    fn push_inner(&mut self, qd: QDesc, sga: Sga, to: Option<SocketAddrV4>) -> Result<QToken> {
        let len = sga.len();
        if len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an empty push carries nothing: push at least one byte",
            ));
        }
        if len > self.config.limits.max_push_bytes {
            return Err(Error::new(
                ErrorKind::MessageTooLong,
                format!(
                    "a push of {len} B exceeds limits.max_push_bytes = {}; split it or raise the limit",
                    self.config.limits.max_push_bytes
                ),
            ));
        }
        let q = self.engines.queues.get(qd)?;
        let work = match q.kind {
            QueueKind::KernelSocket => Work::Kernel(self.engines.kernel()?.push(q.local, sga, to)?),
            QueueKind::UringSocket => Work::Uring(self.engines.uring()?.push(q.local, sga, to)?),
            QueueKind::InetSocket => Work::Inet(self.engines.inet()?.push(q.local, sga, to)?),
            QueueKind::File => return Err(file_not_socket("push")),
            QueueKind::Shm if to.is_none() => Work::Shm(self.engines.shm()?.push(q.local, sga)?),
            QueueKind::Shm => return Err(shm_not_socket("pushto")),
        };
        self.start(OpCode::Push, qd, work)
    }

    /// Receives the next data of a queue: on a stream, what has arrived and was not popped yet
    /// (up to 64 KiB; over the user-space stack, the received segments themselves, gathered in
    /// one Sga); on a datagram socket or a shared-memory queue, the next whole message.
    pub fn pop(&mut self, qd: QDesc) -> Result<QToken> {
        let q = self.engines.queues.get(qd)?;
        let work = match q.kind {
            QueueKind::KernelSocket => Work::Kernel(self.engines.kernel()?.pop(q.local)?),
            QueueKind::UringSocket => Work::Uring(self.engines.uring()?.pop(q.local)?),
            QueueKind::InetSocket => Work::Inet(self.engines.inet()?.pop(q.local)?),
            QueueKind::File => return Err(file_not_socket("pop")),
            QueueKind::Shm => Work::Shm(self.engines.shm()?.pop(q.local)?),
        };
        self.start(OpCode::Pop, qd, work)
    }

    pub(crate) fn start(&mut self, opcode: OpCode, qd: QDesc, work: Work) -> Result<QToken> {
        let op = Operation { opcode, qd, work };
        let (id, done) = self.scheduler.insert_and_poll(op, &mut self.engines).map_err(|full| {
            Error::new(
                ErrorKind::NoBufferSpace,
                format!(
                    "{} operations are pending or unwaited; wait on some or raise limits.max_operations",
                    full.capacity
                ),
            )
        })?;
        if done {
            self.note_completed(id);
        }
        Ok(QToken(id))
    }

    fn note_completed(&mut self, id: TaskId) {
        // Entries already taken by `wait` linger; prune them before the list grows past the
        // number of tasks that can be alive.
        if self.completed.len() >= 2 * self.scheduler.len() + 64 {
            let scheduler = &self.scheduler;
            self.completed.retain(|&t| scheduler.is_done(t) == Ok(true));
        }
        self.completed.push_back(id);
    }

    // ----- storage calls -------------------------------------------------------------------

    /// Opens a file or block device as a storage queue (O_DIRECT by default: offsets, lengths
    /// and buffers must then be aligned to the device's block size, usually 512 or 4096 B).
    pub fn open_file(&mut self, path: impl AsRef<Path>, options: &FileOptions) -> Result<QDesc> {
        if self.engines.storage.is_none() {
            let pool = self.engines.pools.large.clone();
            let engine = StorageEngine::new(pool, MAX_FILES, &self.config.storage)?;
            self.engines.storage = Some(engine);
        }
        let storage = self.engines.storage()?;
        let local = storage.open(path.as_ref(), options)?;
        self.engines
            .queues
            .insert(QueueKind::File, local)
            .inspect_err(|_| {
                let _ = self.engines.storage().and_then(|s| s.close(local));
            })
    }

    /// Writes `sga` at byte `offset` of a storage queue. The LibOs owns the Sga until the write
    /// completes ([`QValue::Pushed`]).
    pub fn push_at(&mut self, qd: QDesc, sga: Sga, offset: u64) -> Result<QToken> {
        if sga.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an empty push_at writes nothing: push at least one byte",
            ));
        }
        let local = self.file_queue(qd, "push_at")?;
        let op = self.engines.storage()?.push_at(local, sga, offset)?;
        self.start(OpCode::PushAt, qd, Work::Storage(op))
    }

    /// Reads `len` bytes at byte `offset` of a storage queue ([`QValue::Popped`]; fewer bytes
    /// at the end of the file).
    pub fn pop_at(&mut self, qd: QDesc, offset: u64, len: usize) -> Result<QToken> {
        let local = self.file_queue(qd, "pop_at")?;
        let op = self.engines.storage()?.pop_at(local, offset, len)?;
        self.start(OpCode::PopAt, qd, Work::Storage(op))
    }

    /// Makes every write to the storage queue that completed before this call durable
    /// ([`QValue::Synced`]).
    pub fn sync(&mut self, qd: QDesc) -> Result<QToken> {
        let local = self.file_queue(qd, "sync")?;
        let op = self.engines.storage()?.sync(local)?;
        self.start(OpCode::Sync, qd, Work::Storage(op))
    }

    /// The current length of a storage queue's file, in bytes.
    pub fn file_len(&mut self, qd: QDesc) -> Result<u64> {
        let local = self.file_queue(qd, "file_len")?;
        self.engines.storage()?.len(local)
    }

    fn file_queue(&self, qd: QDesc, call: &str) -> Result<u32> {
        let q = self.engines.queues.get(qd)?;
        if q.kind != QueueKind::File {
            return Err(Error::new(
                ErrorKind::WrongQueueKind,
                format!("{call} needs a storage queue (from open_file); {qd} is a socket"),
            ));
        }
        Ok(q.local)
    }

    // ----- shared-memory calls -------------------------------------------------------------

    /// Creates the shared-memory queue `name` (a channel to the process that will
    /// [`LibOs::shm_open`] it; the name is 1 to 200 of `A-Z a-z 0-9 . _ -`). `push` sends an Sga
    /// as one message and `pop` receives the next whole one. Fails with
    /// [`ErrorKind::AlreadyExists`] while a live process holds the name.
    pub fn shm_create(&mut self, name: &str) -> Result<QDesc> {
        let local = self.engines.shm()?.create(name)?;
        self.insert_shm(local)
    }

    /// Attaches to the shared-memory queue `name` made by another process's
    /// [`LibOs::shm_create`]. Does not wait: [`ErrorKind::NotFound`] until the creator exists.
    pub fn shm_open(&mut self, name: &str) -> Result<QDesc> {
        let local = self.engines.shm()?.open(name)?;
        self.insert_shm(local)
    }

    fn insert_shm(&mut self, local: u32) -> Result<QDesc> {
        self.engines
            .queues
            .insert(QueueKind::Shm, local)
            .inspect_err(|_| {
                let _ = self.engines.shm().and_then(|s| s.close(local));
            })
    }

    /// An Sga of `len` bytes in the shared memory of queue `qd`: pushed on `qd`, it reaches
    /// the peer without a copy (any other Sga is copied). Write every byte before pushing.
    pub fn shm_alloc(&mut self, qd: QDesc, len: usize) -> Result<Sga> {
        let q = self.engines.queues.get(qd)?;
        if q.kind != QueueKind::Shm {
            return Err(Error::new(
                ErrorKind::WrongQueueKind,
                format!("shm_alloc needs a shared-memory queue (from shm_create or shm_open); {qd} is not one"),
            ));
        }
        if len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "an Sga must hold at least one byte",
            ));
        }
        self.engines.shm()?.alloc(q.local, len)
    }

    // ----- waiting -------------------------------------------------------------------------

    /// Waits for one operation. A timeout returns [`ErrorKind::TimedOut`] and leaves the token
    /// valid; a token already waited on (or never issued) is [`ErrorKind::UnknownToken`].
    pub fn wait(&mut self, qt: QToken, timeout: Option<Duration>) -> Result<QResult> {
        self.wait_any(&[qt], timeout).map(|(_, r)| r)
    }

    /// Waits for the first of `qts` to complete; returns its index in `qts` and its result.
    /// The other tokens stay valid.
    pub fn wait_any(
        &mut self,
        qts: &[QToken],
        timeout: Option<Duration>,
    ) -> Result<(usize, QResult)> {
        if qts.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "wait_any needs at least one token",
            ));
        }
        let deadline = self.deadline(timeout);
        loop {
            for (i, &qt) in qts.iter().enumerate() {
                if let Some(result) = self.take_result(qt)? {
                    return Ok((i, result));
                }
            }
            self.turn(deadline)?;
        }
    }

    /// The result of `qt` if its operation completed (the token is spent then), `None` while
    /// it runs.
    fn take_result(&mut self, qt: QToken) -> Result<Option<QResult>> {
        let Some(c) = self.scheduler.take(qt.0).map_err(|_| unknown_token(qt))? else {
            return Ok(None);
        };
        // Keep the completion order short: a token taken here is most often the newest or
        // the oldest entry, so `wait_next_n` has no stale entry to skip.
        if self.completed.back() == Some(&qt.0) {
            self.completed.pop_back();
        } else if self.completed.front() == Some(&qt.0) {
            self.completed.pop_front();
        }
        Ok(Some(to_result(qt, c)))
    }

    /// Delivers completions of any pending operations, in the order they completed, to `f`,
    /// until `n` were delivered, `f` returns false, or the timeout passes (then the count so
    /// far is returned; `TimedOut` only if none was delivered).
    pub fn wait_next_n(
        &mut self,
        n: usize,
        timeout: Option<Duration>,
        mut f: impl FnMut(QResult) -> bool,
    ) -> Result<usize> {
        let deadline = self.deadline(timeout);
        let mut delivered = 0;
        while delivered < n {
            while let Some(id) = self.completed.pop_front() {
                if let Ok(Some(c)) = self.scheduler.take(id) {
                    delivered += 1;
                    if !f(to_result(QToken(id), c)) || delivered == n {
                        return Ok(delivered);
                    }
                }
            }
            if let Err(e) = self.turn(deadline) {
                return if delivered > 0 && e.kind() == ErrorKind::TimedOut {
                    Ok(delivered)
                } else {
                    Err(e)
                };
            }
        }
        Ok(delivered)
    }

    /// Whether the operation has completed (its result waits to be taken by `wait`).
    pub fn is_done(&self, qt: QToken) -> Result<bool> {
        self.scheduler.is_done(qt.0).map_err(|_| unknown_token(qt))
    }

    /// Drives I/O once without waiting: engines, then woken operations.
    pub fn poll(&mut self) -> Result<()> {
        self.engines.poll(None, 0)?;
        self.run_ready();
        Ok(())
    }

    fn deadline(&self, timeout: Option<Duration>) -> Option<Instant> {
        timeout.map(|t| self.engines.clock.now() + t)
    }

    /// One turn of the event loop; `TimedOut` once `deadline` has passed.
    fn turn(&mut self, deadline: Option<Instant>) -> Result<()> {
        // The clock is read only for a deadline (once, serving the engines too, unless the
        // turn may have slept) or by an engine that keeps time: a spinning turn without
        // either, as over kernel sockets, reads no clock at all.
        let mut now = deadline.map(|_| self.engines.clock.now());
        let block_ms = match (self.config.poll, now, deadline) {
            (PollMode::Spin, _, _) => 0,
            (PollMode::Block, _, _) if self.scheduler.has_ready() => 0,
            (PollMode::Block, Some(now), Some(d)) => {
                d.saturating_duration_since(now).as_millis().clamp(0, 10) as i32
            }
            (PollMode::Block, _, _) => 10,
        };
        self.engines.poll(now, block_ms)?;
        self.run_ready();
        if let Some(d) = deadline {
            if block_ms > 0 {
                now = Some(self.engines.clock.now());
            }
            if now.is_some_and(|now| now >= d) {
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    "the wait timed out; the token stays valid",
                ));
            }
        }
        Ok(())
    }

    fn run_ready(&mut self) {
        if !self.scheduler.has_ready() {
            return;
        }
        let completed = &mut self.completed;
        self.scheduler
            .run_with(&mut self.engines, |id| completed.push_back(id));
    }

    /// Queues open now.
    pub fn open_queues(&self) -> usize {
        self.engines.queues.len()
    }
}

fn alloc(pool: &BufferPool) -> Result<Buffer> {
    pool.alloc().ok_or_else(|| {
        Error::new(
            ErrorKind::NoBufferSpace,
            format!(
                "buffer pool of {} B chunks exhausted ({} in use); drop Sgas sooner or raise the pool size",
                pool.chunk_size(),
                pool.chunks()
            ),
        )
    })
}

fn shm_not_socket(call: &str) -> Error {
    Error::new(
        ErrorKind::WrongQueueKind,
        format!("{call} is a socket call; a shared-memory queue takes push, pop and close"),
    )
}

/// Shared-memory queues open at once in one LibOs.
const MAX_SHM_QUEUES: usize = 1024;

fn file_not_socket(call: &str) -> Error {
    Error::new(
        ErrorKind::WrongQueueKind,
        format!("{call} is a socket call; a storage queue takes push_at, pop_at and sync"),
    )
}

/// Files open at once in one LibOs (slots of the storage ring's registered-file table).
const MAX_FILES: usize = 1024;

fn unknown_token(qt: QToken) -> Error {
    Error::new(
        ErrorKind::UnknownToken,
        format!("{qt:?} names no pending operation: it was never issued or was already waited on"),
    )
}

fn to_result(qt: QToken, c: Completion) -> QResult {
    QResult {
        opcode: c.opcode,
        qd: c.qd,
        qt,
        value: c.value,
    }
}
