//! The storage engine: asynchronous reads, writes and syncs of files and block devices over one
//! io_uring.
//!
//! An [`Engine`] owns a ring, a table of open files (each registered with the ring, so no
//! operation pays a file-table lookup), and a fixed table of operations in flight. Every data
//! call ([`Engine::write`], [`Engine::read`], [`Engine::fsync`], [`Engine::fdatasync`]) checks its
//! arguments, queues one submission entry and returns an [`OpId`] at once; nothing blocks.
//! [`Engine::poll`] submits everything queued since the last call with **one** `io_uring_enter`
//! (none at all under SQPOLL while the kernel poller is awake), then reaps completions. A
//! completed operation's result waits in its slot until [`Engine::take`] (or
//! [`Engine::poll_op`], which also records a [`Waker`] to wake when it completes) hands it out.
//! To wait, [`Engine::wait`] submits and sleeps in the kernel in the same system call;
//! [`Engine::spin`] submits, then busy-polls the completion queue, entering the kernel again
//! only when the ring flags completion work deferred to this thread
//! ([`EngineConfig::defer_taskrun`], on by default without SQPOLL).
//!
//! Buffers: reads fill buffers of the engine's [`BufferPool`] (build it with
//! [`PoolConfig::large`](bypass_runtime::PoolConfig::large): 64 KiB page-aligned chunks without
//! headroom, as O_DIRECT wants); a read longer than a chunk spans several chunks through one
//! vectored read. With [`EngineConfig::register_buffers`] the pool's whole memory region is
//! registered with the ring as fixed buffers, and every single-segment read or write in it uses
//! `READ_FIXED`/`WRITE_FIXED`, which skips pinning pages per I/O. A write takes its [`Sga`] by
//! value and holds it until the kernel is done with it.
//!
//! O_DIRECT: files are opened with it by default. The engine asks each file how direct I/O
//! must be aligned (`statx(STATX_DIOALIGN)`, `BLKSSZGET`, else 4096/4096) and rejects a
//! misaligned request *before* submitting it, with an error naming the alignment needed.
//!
//! Short transfers (a read that hits the end of the file, a write cut short) are finished by
//! resubmitting the rest; a read that reaches the end of the file completes with the bytes
//! that exist.
//!
//! # Example
//!
//! ```no_run
//! use bypass_runtime::{BufferPool, PoolConfig, Sga};
//! use bypass_storage::{Completion, Engine, EngineConfig, OpenOptions};
//!
//! # fn main() -> bypass_storage::Result<()> {
//! let pool = BufferPool::new(&PoolConfig::large(64)).expect("pool");
//! let mut engine = Engine::new(&EngineConfig::default(), pool)?;
//! let file = engine.open("data.bin", &OpenOptions::new().create(true))?; // O_DIRECT
//! let block = Sga::copy_from(engine.pool(), &[7u8; 4096]).expect("pool has room");
//! let write = engine.write(file, 0, block)?;
//! let read = engine.read(file, 0, 4096)?; // may run before the write: order them yourself
//! engine.wait_for(write)?;
//! let sync = engine.fdatasync(file)?;
//! engine.poll()?; // one system call submits everything queued
//! engine.wait_for(sync)?;
//! if let Completion::Read(sga) = engine.wait_for(read)? {
//!     println!("read {} B", sga.len());
//! }
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bypass_runtime::{Buffer, BufferPool, Sga};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::{self, DioAlignment};

/// The largest piece of memory one fixed-buffer registration may cover (a kernel limit).
const FIXED_PIECE: usize = 1 << 30;
/// The most iovecs one vectored operation may carry (`IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Runs the kernel's submission-queue poller thread (`IORING_SETUP_SQPOLL`): submissions need
/// no system call while it is awake, at the price of a core it keeps busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqPoll {
    /// Pin the poller thread to this CPU (`sq_thread_cpu`); `None` lets the scheduler place it.
    pub cpu: Option<u32>,
    /// How long the poller spins without work before it sleeps (`sq_thread_idle`).
    pub idle: Duration,
}

impl Default for SqPoll {
    fn default() -> SqPoll {
        SqPoll {
            cpu: None,
            idle: Duration::from_millis(100),
        }
    }
}

/// The shape of an engine, fixed when it is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Submission queue entries (rounded up to a power of two by the kernel).
    pub entries: u32,
    /// Operations in flight at most (their results included, until taken).
    pub max_ops: usize,
    /// Files open at once at most (slots in the ring's registered-file table).
    pub max_files: u32,
    /// Register the pool's memory with the ring and use fixed-buffer reads and writes.
    pub register_buffers: bool,
    /// Run a kernel submission poller thread.
    pub sqpoll: Option<SqPoll>,
    /// Submit an operation the moment it is queued while others are in flight but fewer than
    /// this many are at the device (one `io_uring_enter` each), so a device that is not busy
    /// sees a steady stream of requests rather than a burst per completion batch. An operation
    /// queued while nothing else is in flight, or while the device already holds this many,
    /// waits for the next [`Engine::poll`] / [`Engine::wait`], which submits everything queued
    /// (and waits) in one call. 0: always wait for it (fewest system calls).
    ///
    /// On this project's virtio disk, 4 KiB random reads kept at depth 8 and 32 complete
    /// 5-15 % faster submitted one at a time than in the bursts a completion batch produces,
    /// while at depth 128 the device is saturated either way and batching saves a system call
    /// per read (docs/benchmarks-storage.md). fio's io_uring engine submits one at a time.
    pub eager_submit_below: usize,
    /// Run completion work only when this thread asks for completions
    /// (`IORING_SETUP_DEFER_TASKRUN`, with `SINGLE_ISSUER` and `TASKRUN_FLAG`), as fio's
    /// io_uring engine does: a finished request only flags the ring, and the work that posts
    /// its completion runs in this thread's next `io_uring_enter` ([`Engine::wait`] sleeps in
    /// one; [`Engine::poll`] and [`Engine::spin`] make one only when the kernel flags such
    /// work). Without it, the kernel interrupts the thread to run that work wherever it is.
    /// On this project's virtio disk a spinning depth-1 reader completes 15-25 % sooner with it
    /// (docs/benchmarks-storage.md).
    ///
    /// The kernel then accepts submissions only from the thread that created the ring; an
    /// `Engine` is not `Send`, so that always holds. Ignored under `sqpoll` (the poller thread
    /// is not this thread) and on kernels before 6.1, which lack it ([`Engine::defer_taskrun`]
    /// says whether it is in use).
    pub defer_taskrun: bool,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            entries: 256,
            max_ops: 1024,
            max_files: 64,
            register_buffers: true,
            sqpoll: None,
            eager_submit_below: 64,
            defer_taskrun: true,
        }
    }
}

/// How to open a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// Bypass the page cache (`O_DIRECT`). On by default.
    pub direct: bool,
    /// Create the file if it does not exist (`O_CREAT`, mode 0644).
    pub create: bool,
    /// Cut the file to length 0 when opening it (`O_TRUNC`).
    pub truncate: bool,
    /// Open for writing as well as reading.
    pub write: bool,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            direct: true,
            create: false,
            truncate: false,
            write: true,
        }
    }
}

impl OpenOptions {
    pub fn new() -> OpenOptions {
        OpenOptions::default()
    }
    pub fn direct(mut self, on: bool) -> OpenOptions {
        self.direct = on;
        self
    }
    pub fn create(mut self, on: bool) -> OpenOptions {
        self.create = on;
        self
    }
    pub fn truncate(mut self, on: bool) -> OpenOptions {
        self.truncate = on;
        self
    }
    pub fn write(mut self, on: bool) -> OpenOptions {
        self.write = on;
        self
    }
}

/// Names an open file of an [`Engine`]: a slot of its file table and the slot's generation, so
/// the id of a closed file never names the next file opened in the same slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    slot: u32,
    generation: u32,
}

impl FileId {
    /// The id as a number (for a log line or a foreign API).
    pub fn as_u64(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.slot)
    }
}

/// Names one operation of an [`Engine`]; also its `user_data` in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(u64);

impl OpId {
    fn new(slot: u32, generation: u32) -> OpId {
        OpId(u64::from(generation) << 32 | u64::from(slot))
    }
    fn slot(self) -> usize {
        self.0 as u32 as usize
    }
    fn generation(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

/// What an open file is and how direct I/O on it must be aligned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub path: PathBuf,
    /// Bytes in the file (or the block device) when it was opened.
    pub len: u64,
    pub direct: bool,
    pub block_device: bool,
    /// Alignment O_DIRECT I/O needs (checked only when `direct`).
    pub alignment: DioAlignment,
}

/// The result of a completed operation.
#[derive(Debug)]
pub enum Completion {
    /// The bytes read: fewer than asked if the read reached the end of the file.
    Read(Sga),
    /// Bytes written (all of them: a short write is finished by resubmitting the rest).
    Write(usize),
    /// An fsync or fdatasync finished: everything written before it was submitted is durable.
    Sync,
}

/// Counters of one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Operations accepted.
    pub ops: u64,
    /// Operations completed (with success or error).
    pub completed: u64,
    /// `io_uring_enter` calls made to submit or wait.
    pub enter_calls: u64,
    /// Submission entries that used a fixed (registered) buffer.
    pub fixed_buffer_ios: u64,
    /// Entries resubmitted to finish a short transfer.
    pub resubmits: u64,
    /// Operations in flight now.
    pub in_flight: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
    Fsync,
    Fdatasync,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Fsync => "fsync",
            OpKind::Fdatasync => "fdatasync",
        }
    }
}

/// How an operation's I/O is issued.
#[derive(Clone, Copy, Debug, Default)]
struct IoFlags {
    /// Registered-buffer index (one segment inside the pool's region).
    fixed: Option<u16>,
    /// `RWF_DSYNC` on a write.
    dsync: bool,
}

enum OpState {
    Free { next_free: Option<u32> },
    InFlight,
    Done(Result<Completion>),
}

struct OpSlot {
    generation: u32,
    state: OpState,
    kind: OpKind,
    file: u32,
    offset: u64,
    /// Bytes the operation moves in all.
    total: usize,
    /// Bytes moved so far (short transfers resubmit the rest).
    done: usize,
    /// The buffers: the data of a write, the destination of a read.
    sga: Sga,
    /// Vectored I/O descriptors; kept here (reused, never reallocated while in flight) because
    /// the kernel may read them after submission.
    iovecs: Vec<libc::iovec>,
    /// Registered-buffer index when the operation is one segment inside the pool's region.
    fixed: Option<u16>,
    /// A write with `RWF_DSYNC`: durable when it completes.
    dsync: bool,
    waker: Option<Waker>,
}

struct FileSlot {
    generation: u32,
    open: Option<OpenFile>,
}

struct OpenFile {
    file: File,
    info: FileInfo,
    in_flight: usize,
}

/// An io_uring storage engine. See the [module docs](self).
///
/// Not `Send`: the thread that makes an engine is the only one that uses it, which
/// [`EngineConfig::defer_taskrun`] relies on.
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<bypass_storage::Engine>();
/// ```
pub struct Engine {
    // Declared first so it drops first: the kernel lets go of the registered pool memory before
    // the pool (below) can unmap it.
    ring: IoUring,
    pool: BufferPool,
    /// Fixed-buffer pieces registered: `(region offset, length)`.
    fixed_pieces: Vec<(usize, usize)>,
    files: Vec<FileSlot>,
    ops: Vec<OpSlot>,
    free_op: Option<u32>,
    /// Entries pushed to the submission queue and not yet submitted.
    queued: usize,
    sqpoll: bool,
    /// [`EngineConfig::defer_taskrun`].
    defer_taskrun: bool,
    /// [`EngineConfig::eager_submit_below`].
    eager_submit_below: usize,
    stats: EngineStats,
    /// Scratch list of completions, reused so reaping allocates nothing.
    reaped: Vec<(u64, i32)>,
}

impl Engine {
    /// Builds the ring (with SQPOLL if asked), registers `max_files` file slots and, if asked,
    /// the pool's memory as fixed buffers.
    pub fn new(config: &EngineConfig, pool: BufferPool) -> Result<Engine> {
        if config.entries == 0 || config.max_ops == 0 || config.max_files == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "engine config: entries, max_ops and max_files must all be at least 1",
            ));
        }
        if config.max_ops > u32::MAX as usize / 2 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("engine config: max_ops {} is too large", config.max_ops),
            ));
        }
        let cq_entries = (config.max_ops as u32)
            .max(config.entries * 2)
            .next_power_of_two();
        // Deferred completion work where the kernel has it (6.1+); never under SQPOLL, whose
        // poller thread is not the issuing thread.
        let mut defer_taskrun = config.defer_taskrun && config.sqpoll.is_none();
        let build = |defer_taskrun: bool| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(cq_entries);
            if defer_taskrun {
                builder
                    .setup_single_issuer()
                    .setup_defer_taskrun()
                    .setup_taskrun_flag();
            }
            if let Some(sq) = config.sqpoll {
                let idle_ms = u32::try_from(sq.idle.as_millis())
                    .unwrap_or(u32::MAX)
                    .max(1);
                builder.setup_sqpoll(idle_ms);
                if let Some(cpu) = sq.cpu {
                    builder.setup_sqpoll_cpu(cpu);
                }
            }
            builder.build(config.entries)
        };
        let built = match build(defer_taskrun) {
            Err(e) if defer_taskrun && e.raw_os_error() == Some(libc::EINVAL) => {
                defer_taskrun = false;
                build(false)
            }
            built => built,
        };
        let ring = built.map_err(|e| {
            let what = if config.sqpoll.is_some() {
                "creating an io_uring with SQPOLL (needs Linux 5.11+, or CAP_SYS_NICE before; \
                 a pinned poller needs an online CPU)"
            } else {
                "creating an io_uring (is io_uring disabled by sysctl kernel.io_uring_disabled?)"
            };
            Error::from_io(&e, what)
        })?;
        ring.submitter()
            .register_files_sparse(config.max_files)
            .map_err(|e| Error::from_io(&e, "registering the file table with the ring"))?;

        let mut fixed_pieces = Vec::new();
        if config.register_buffers {
            let memory = pool.memory();
            let base = memory.base().as_ptr();
            let mut iovecs = Vec::new();
            let mut at = 0;
            while at < memory.len() {
                let len = FIXED_PIECE.min(memory.len() - at);
                fixed_pieces.push((at, len));
                iovecs.push(libc::iovec {
                    // SAFETY: `at < memory.len()`, so the pointer stays inside the region.
                    iov_base: unsafe { base.add(at) }.cast(),
                    iov_len: len,
                });
                at += len;
            }
            if iovecs.len() > usize::from(u16::MAX) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    "the pool is too large to register as fixed buffers",
                ));
            }
            // SAFETY: every iovec covers part of the pool's memory region, which stays mapped
            // as long as `pool` (a field of the engine) lives; the ring, declared before the
            // pool, is dropped (and the registration released) first.
            unsafe { ring.submitter().register_buffers(&iovecs) }.map_err(|e| {
                Error::from_io(
                    &e,
                    format_args!(
                        "registering {} B of pool memory as fixed buffers (raise RLIMIT_MEMLOCK \
                         or set register_buffers to false)",
                        memory.len()
                    ),
                )
            })?;
        }

        let mut ops = Vec::with_capacity(config.max_ops);
        for i in 0..config.max_ops {
            let next_free = if i + 1 < config.max_ops {
                Some(i as u32 + 1)
            } else {
                None
            };
            ops.push(OpSlot {
                generation: 0,
                state: OpState::Free { next_free },
                kind: OpKind::Read,
                dsync: false,
                file: 0,
                offset: 0,
                total: 0,
                done: 0,
                sga: Sga::new(),
                iovecs: Vec::new(),
                fixed: None,
                waker: None,
            });
        }
        let files = (0..config.max_files)
            .map(|_| FileSlot {
                generation: 0,
                open: None,
            })
            .collect();
        Ok(Engine {
            ring,
            pool,
            fixed_pieces,
            files,
            ops,
            free_op: Some(0),
            queued: 0,
            sqpoll: config.sqpoll.is_some(),
            defer_taskrun,
            eager_submit_below: config.eager_submit_below,
            stats: EngineStats::default(),
            reaped: Vec::with_capacity(cq_entries as usize),
        })
    }

    /// Whether completion work is deferred to this thread's `io_uring_enter` calls
    /// ([`EngineConfig::defer_taskrun`]).
    pub fn defer_taskrun(&self) -> bool {
        self.defer_taskrun
    }

    /// The pool reads allocate from.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Whether the pool's memory is registered as fixed buffers.
    pub fn fixed_buffers(&self) -> bool {
        !self.fixed_pieces.is_empty()
    }

    /// Whether a kernel poller thread submits for this ring.
    pub fn sqpoll(&self) -> bool {
        self.sqpoll
    }

    /// Opens `path` and registers it with the ring.
    pub fn open(&mut self, path: impl AsRef<Path>, options: &OpenOptions) -> Result<FileId> {
        let path = path.as_ref();
        let Some(slot) = self.files.iter().position(|f| f.open.is_none()) else {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "cannot open {}: all {} file slots are in use; close a file first or raise \
                     max_files",
                    path.display(),
                    self.files.len()
                ),
            ));
        };
        let mut flags = libc::O_CLOEXEC;
        if options.direct {
            flags |= libc::O_DIRECT;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(options.write || options.create || options.truncate)
            .create(options.create)
            .truncate(options.truncate)
            .mode(0o644)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| {
                if options.direct && e.raw_os_error() == Some(libc::EINVAL) {
                    Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "opening {} with O_DIRECT failed: the file system does not support \
                             direct I/O; open it with direct(false)",
                            path.display()
                        ),
                    )
                } else {
                    Error::from_io(&e, format_args!("opening {}", path.display()))
                }
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::from_io(&e, format_args!("stat of {}", path.display())))?;
        let block_device = meta.file_type().is_block_device();
        if !block_device && !meta.file_type().is_file() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} is neither a regular file nor a block device",
                    path.display()
                ),
            ));
        }
        let len = if block_device {
            (&file)
                .seek(SeekFrom::End(0))
                .map_err(|e| Error::from_io(&e, format_args!("size of {}", path.display())))?
        } else {
            meta.len()
        };
        let alignment = sys::dio_alignment(file.as_fd(), block_device);
        self.ring
            .submitter()
            .register_files_update(slot as u32, &[file.as_raw_fd()])
            .map_err(|e| Error::from_io(&e, "registering a file with the ring"))?;
        let entry = &mut self.files[slot];
        entry.open = Some(OpenFile {
            file,
            info: FileInfo {
                path: path.to_path_buf(),
                len,
                direct: options.direct,
                block_device,
                alignment,
            },
            in_flight: 0,
        });
        Ok(FileId {
            slot: slot as u32,
            generation: entry.generation,
        })
    }

    /// What `file` is.
    pub fn info(&self, file: FileId) -> Result<&FileInfo> {
        Ok(&self.file(file)?.info)
    }

    /// The file's current length, asked of the kernel.
    pub fn len(&self, file: FileId) -> Result<u64> {
        let f = self.file(file)?;
        if f.info.block_device {
            return Ok(f.info.len);
        }
        f.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::from_io(&e, format_args!("stat of {}", f.info.path.display())))
    }

    /// Cuts or extends the file to `len` bytes (synchronously, `ftruncate`). Refused while
    /// operations on the file are in flight.
    pub fn set_len(&mut self, file: FileId, len: u64) -> Result<()> {
        let f = self.file(file)?;
        if f.in_flight > 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "cannot resize {} with {} operations in flight; wait for them first",
                    f.info.path.display(),
                    f.in_flight
                ),
            ));
        }
        f.file
            .set_len(len)
            .map_err(|e| Error::from_io(&e, format_args!("truncating {}", f.info.path.display())))
    }

    /// Closes a file. Refused while operations on it are in flight.
    pub fn close(&mut self, file: FileId) -> Result<()> {
        let f = self.file(file)?;
        if f.in_flight > 0 {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "cannot close {} with {} operations in flight; wait for them first",
                    f.info.path.display(),
                    f.in_flight
                ),
            ));
        }
        self.ring
            .submitter()
            .register_files_update(file.slot, &[-1])
            .map_err(|e| Error::from_io(&e, "unregistering a file from the ring"))?;
        let slot = &mut self.files[file.slot as usize];
        slot.open = None;
        slot.generation = slot.generation.wrapping_add(1);
        Ok(())
    }

    fn file(&self, file: FileId) -> Result<&OpenFile> {
        self.files
            .get(file.slot as usize)
            .filter(|s| s.generation == file.generation)
            .and_then(|s| s.open.as_ref())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("file id {} is not open in this engine", file.as_u64()),
                )
            })
    }

    /// Writes `sga` at `offset`. The engine holds the buffers until the write completes.
    pub fn write(&mut self, file: FileId, offset: u64, sga: Sga) -> Result<OpId> {
        self.write_with(file, offset, sga, false)
    }

    fn write_with(&mut self, file: FileId, offset: u64, sga: Sga, dsync: bool) -> Result<OpId> {
        let total = sga.len();
        let f = self.file(file)?;
        let what = || {
            format!(
                "write of {total} B at offset {offset} of {}",
                f.info.path.display()
            )
        };
        if total == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: nothing to write", what()),
            ));
        }
        if u32::try_from(total).is_err() || sga.num_segments() > MAX_IOVECS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: one write moves at most 4 GiB in at most {MAX_IOVECS} segments; split it",
                    what()
                ),
            ));
        }
        if f.info.direct {
            check_alignment(
                &f.info,
                offset,
                total,
                sga.segments().map(|b| (b.as_ptr() as usize, b.len())),
            )
            .map_err(|why| misaligned(&what(), &f.info.alignment, &why))?;
        }
        let fixed = self.fixed_index(&sga);
        self.start(
            OpKind::Write,
            file,
            offset,
            total,
            sga,
            IoFlags { fixed, dsync },
        )
    }

    /// Like [`Engine::write`], with `RWF_DSYNC`: the write completes only once its data (and
    /// the metadata needed to read it back) is durable, as if an `fdatasync` had followed it,
    /// in one operation.
    pub fn write_dsync(&mut self, file: FileId, offset: u64, sga: Sga) -> Result<OpId> {
        self.write_with(file, offset, sga, true)
    }

    /// Reads `len` bytes at `offset` into buffers of the pool (several chunks when `len` is
    /// larger than one).
    pub fn read(&mut self, file: FileId, offset: u64, len: usize) -> Result<OpId> {
        let f = self.file(file)?;
        let what = || {
            format!(
                "read of {len} B at offset {offset} of {}",
                f.info.path.display()
            )
        };
        if len == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{}: nothing to read", what()),
            ));
        }
        let chunk = self.pool.data_capacity();
        let pieces = len.div_ceil(chunk);
        if u32::try_from(len).is_err() || pieces > MAX_IOVECS {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{}: one read moves at most {} B (the pool's chunks are {chunk} B); split it",
                    what(),
                    (MAX_IOVECS * chunk).min(u32::MAX as usize)
                ),
            ));
        }
        if self.pool.available() < pieces {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{}: needs {pieces} pool buffers, {} are free; wait for reads to be taken \
                     and dropped, or make the pool larger",
                    what(),
                    self.pool.available()
                ),
            ));
        }
        let mut sga = Sga::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk);
            let mut buf: Buffer = self.pool.alloc().expect("availability checked above");
            buf.append(n);
            sga.push(buf);
            left -= n;
        }
        if f.info.direct {
            check_alignment(
                &f.info,
                offset,
                len,
                sga.segments().map(|b| (b.as_ptr() as usize, b.len())),
            )
            .map_err(|why| misaligned(&what(), &f.info.alignment, &why))?;
        }
        let fixed = self.fixed_index(&sga);
        self.start(
            OpKind::Read,
            file,
            offset,
            len,
            sga,
            IoFlags {
                fixed,
                dsync: false,
            },
        )
    }

    /// Makes everything written to `file` before this call durable, metadata included.
    pub fn fsync(&mut self, file: FileId) -> Result<OpId> {
        self.file(file)?;
        self.start(OpKind::Fsync, file, 0, 0, Sga::new(), IoFlags::default())
    }

    /// Makes everything written to `file` before this call durable, with the metadata needed
    /// to read it back (the size, not the timestamps).
    pub fn fdatasync(&mut self, file: FileId) -> Result<OpId> {
        self.file(file)?;
        self.start(
            OpKind::Fdatasync,
            file,
            0,
            0,
            Sga::new(),
            IoFlags::default(),
        )
    }

    /// The registered-buffer index for a one-segment I/O inside the pool's region.
    fn fixed_index(&self, sga: &Sga) -> Option<u16> {
        if self.fixed_pieces.is_empty() || sga.num_segments() != 1 {
            return None;
        }
        let buf = sga.segments().next()?;
        if !self.pool.owns(buf) {
            return None;
        }
        let at = buf.region_offset();
        self.fixed_pieces
            .iter()
            .position(|&(start, len)| at >= start && at + buf.len() <= start + len)
            .map(|i| i as u16)
    }

    fn start(
        &mut self,
        kind: OpKind,
        file: FileId,
        offset: u64,
        total: usize,
        sga: Sga,
        flags: IoFlags,
    ) -> Result<OpId> {
        let Some(slot) = self.free_op else {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "all {} operation slots are in use; poll and take completed operations, or \
                     raise max_ops",
                    self.ops.len()
                ),
            ));
        };
        let op = &mut self.ops[slot as usize];
        let OpState::Free { next_free } = op.state else {
            unreachable!("free list names a busy slot");
        };
        self.free_op = next_free;
        op.state = OpState::InFlight;
        op.kind = kind;
        op.file = file.slot;
        op.offset = offset;
        op.total = total;
        op.done = 0;
        op.sga = sga;
        op.fixed = flags.fixed;
        op.dsync = flags.dsync;
        op.waker = None;
        let id = OpId::new(slot, op.generation);
        self.files[file.slot as usize]
            .open
            .as_mut()
            .expect("file checked by the caller")
            .in_flight += 1;
        self.stats.ops += 1;
        self.stats.in_flight += 1;
        if let Err(e) = self.push(slot as usize) {
            self.finish(slot as usize, Err(e.clone()));
            self.release(slot as usize);
            return Err(e);
        }
        // A lone operation waits for the wait that submits it and sleeps in one call; with
        // others in flight it goes now, unless the device already has plenty to do.
        let at_device = self.stats.in_flight - self.queued;
        if self.stats.in_flight > 1 && at_device < self.eager_submit_below {
            // The operation is queued whatever happens here: a submission that fails now is
            // retried, and its error reported, by the next poll or wait.
            let _ = self.submit();
        }
        Ok(id)
    }

    /// Builds the submission entry of operation `slot` for its remaining bytes and queues it.
    fn push(&mut self, slot: usize) -> Result<()> {
        let op = &mut self.ops[slot];
        let user_data = OpId::new(slot as u32, op.generation).0;
        let fd = types::Fixed(op.file);
        let offset = op.offset + op.done as u64;
        let left = (op.total - op.done) as u32;
        let entry = match op.kind {
            OpKind::Fsync => opcode::Fsync::new(fd).build(),
            OpKind::Fdatasync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            OpKind::Read | OpKind::Write => {
                let done = op.done;
                op.iovecs.clear();
                let mut skip = done;
                for buf in op.sga.segments_mut() {
                    if skip >= buf.len() {
                        skip -= buf.len();
                        continue;
                    }
                    let base = if op.kind == OpKind::Read {
                        buf.as_mut_slice().as_mut_ptr()
                    } else {
                        buf.as_ptr().cast_mut()
                    };
                    op.iovecs.push(libc::iovec {
                        // SAFETY: `skip < buf.len()`, so the pointer stays inside the buffer.
                        iov_base: unsafe { base.add(skip) }.cast(),
                        iov_len: buf.len() - skip,
                    });
                    skip = 0;
                }
                debug_assert_eq!(
                    op.iovecs.iter().map(|v| v.iov_len).sum::<usize>(),
                    left as usize
                );
                let first = op.iovecs[0];
                let rw_flags = if op.dsync { libc::RWF_DSYNC } else { 0 };
                match (op.kind, op.fixed, op.iovecs.len()) {
                    (OpKind::Read, Some(index), 1) => {
                        self.stats.fixed_buffer_ios += 1;
                        opcode::ReadFixed::new(fd, first.iov_base.cast(), left, index)
                            .offset(offset)
                            .build()
                    }
                    (OpKind::Write, Some(index), 1) => {
                        self.stats.fixed_buffer_ios += 1;
                        opcode::WriteFixed::new(fd, first.iov_base.cast(), left, index)
                            .offset(offset)
                            .rw_flags(rw_flags)
                            .build()
                    }
                    (OpKind::Read, _, 1) => opcode::Read::new(fd, first.iov_base.cast(), left)
                        .offset(offset)
                        .build(),
                    (OpKind::Write, _, 1) => opcode::Write::new(fd, first.iov_base.cast(), left)
                        .offset(offset)
                        .rw_flags(rw_flags)
                        .build(),
                    (OpKind::Read, _, n) => opcode::Readv::new(fd, op.iovecs.as_ptr(), n as u32)
                        .offset(offset)
                        .build(),
                    (_, _, n) => opcode::Writev::new(fd, op.iovecs.as_ptr(), n as u32)
                        .offset(offset)
                        .rw_flags(rw_flags)
                        .build(),
                }
            }
        };
        let entry = entry.user_data(user_data);
        self.push_entry(&entry)
    }

    fn push_entry(&mut self, entry: &squeue::Entry) -> Result<()> {
        for attempt in 0..3 {
            // SAFETY: every pointer in the entry (buffers, iovec array) points into the Sga
            // and iovec vector of its operation slot, which stay untouched and alive until the
            // operation's completion is reaped (`finish` runs only after the CQE arrives, and
            // `Drop` waits for operations in flight). The file is a registered slot that
            // `close` refuses to release while operations on it are in flight.
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                self.queued += 1;
                return Ok(());
            }
            // The queue is full: hand what it holds to the kernel and try again.
            self.submit()?;
            if attempt > 0 && self.sqpoll {
                self.stats.enter_calls += 1;
                self.ring
                    .submitter()
                    .squeue_wait()
                    .map_err(|e| Error::from_io(&e, "waiting for submission queue space"))?;
            }
        }
        Err(Error::new(
            ErrorKind::Busy,
            "the submission queue stays full; poll for completions and retry",
        ))
    }

    /// Whether completions wait in the kernel for an `io_uring_enter` to post them
    /// ([`EngineConfig::defer_taskrun`]).
    fn deferred_work_pending(&mut self) -> bool {
        self.defer_taskrun && self.ring.submission().taskrun()
    }

    /// Submits what is queued, and runs deferred completion work if the kernel flags some:
    /// one `io_uring_enter` if either is there, none otherwise.
    fn submit(&mut self) -> Result<()> {
        if self.queued == 0 && !self.deferred_work_pending() {
            return Ok(());
        }
        loop {
            if !self.sqpoll || self.ring.submission().need_wakeup() {
                self.stats.enter_calls += 1;
            }
            match self.ring.submit() {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Completion queue overflow backlog: reap, then retry.
                    self.reap();
                }
                Err(e) => return Err(Error::from_io(&e, "submitting to the ring")),
            }
        }
    }

    /// Submits everything queued since the last call (one system call at most) and reaps the
    /// completions that have arrived. Returns how many operations completed.
    pub fn poll(&mut self) -> Result<usize> {
        self.submit()?;
        Ok(self.reap())
    }

    /// Like [`Engine::poll`], but if nothing has completed yet and operations are in flight,
    /// sleeps in the kernel until one completes or `timeout` passes (`None`: no limit). What
    /// is queued is submitted by the same system call that waits.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let n = self.reap();
        if n > 0 || self.stats.in_flight == 0 {
            self.submit()?;
            return Ok(n);
        }
        self.stats.enter_calls += 1;
        let result = match timeout {
            None => self.ring.submitter().submit_and_wait(1),
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        // Whatever the outcome, the kernel has taken the entries it consumed.
        self.queued = self.ring.submission().len();
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(Error::from_io(&e, "waiting for completions")),
        }
        let n = self.reap();
        self.submit()?;
        Ok(n)
    }

    /// Like [`Engine::wait`], but busy-polls instead of sleeping: what is queued is submitted
    /// with one `io_uring_enter` at most (none under SQPOLL while the poller is awake), then the
    /// completion queue is read in a loop, with no system call except one when the ring flags
    /// deferred completion work ([`EngineConfig::defer_taskrun`]) or an overflow, until
    /// something completes or `timeout` passes (`None`: no limit). Returns how many operations completed (0 on
    /// timeout, or when nothing is in flight).
    ///
    /// Lower latency than sleeping (no interrupt-driven wake-up of a halted CPU), at the price
    /// of the core it spins on.
    pub fn spin(&mut self, timeout: Option<Duration>) -> Result<usize> {
        let n = self.poll()?;
        if n > 0 || self.stats.in_flight == 0 {
            return Ok(n);
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut rounds = 0u32;
        loop {
            // Completions the kernel could not post (a full completion queue) wait in its
            // overflow list until an enter flushes them; deferred completion work waits for
            // an enter too.
            if self.ring.submission().cq_overflow() || self.deferred_work_pending() {
                self.stats.enter_calls += 1;
                match self.ring.submitter().submit_and_wait(0) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                    Err(e) => return Err(Error::from_io(&e, "flushing completions")),
                }
            }
            let n = self.reap();
            if n > 0 {
                self.submit()?;
                return Ok(n);
            }
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(64) && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
            std::hint::spin_loop();
        }
    }

    fn reap(&mut self) -> usize {
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.clear();
        reaped.extend(
            self.ring
                .completion()
                .map(|c: cqueue::Entry| (c.user_data(), c.result())),
        );
        let mut completed = 0;
        for &(user_data, res) in &reaped {
            completed += self.complete(OpId(user_data), res) as usize;
        }
        self.reaped = reaped;
        completed
    }

    /// Handles one completion; returns whether the operation finished.
    fn complete(&mut self, id: OpId, res: i32) -> bool {
        let slot = id.slot();
        let op = &mut self.ops[slot];
        assert!(
            op.generation == id.generation() && matches!(op.state, OpState::InFlight),
            "completion for an operation that is not in flight"
        );
        if res < 0 {
            let info = &self.files[op.file as usize]
                .open
                .as_ref()
                .expect("a file with operations in flight stays open")
                .info;
            let what = match op.kind {
                OpKind::Read | OpKind::Write => format!(
                    "{} of {} B at offset {} of {}",
                    op.kind.name(),
                    op.total,
                    op.offset + op.done as u64,
                    info.path.display()
                ),
                _ => format!("{} of {}", op.kind.name(), info.path.display()),
            };
            self.finish(slot, Err(Error::from_errno(-res, what)));
            return true;
        }
        let n = res as usize;
        match op.kind {
            OpKind::Fsync | OpKind::Fdatasync => {
                self.finish(slot, Ok(Completion::Sync));
                true
            }
            OpKind::Read | OpKind::Write => {
                assert!(
                    n <= op.total - op.done,
                    "kernel moved more bytes than asked"
                );
                op.done += n;
                let align = self.files[op.file as usize]
                    .open
                    .as_ref()
                    .map(|f| {
                        if f.info.direct {
                            f.info.alignment.offset as usize
                        } else {
                            1
                        }
                    })
                    .unwrap_or(1);
                let finished = op.done == op.total
                    || (op.kind == OpKind::Read && (n == 0 || op.done & (align - 1) != 0));
                if finished {
                    let result = if op.kind == OpKind::Read {
                        Ok(Completion::Read(truncate_sga(
                            std::mem::take(&mut op.sga),
                            op.done,
                        )))
                    } else {
                        Ok(Completion::Write(op.done))
                    };
                    self.finish(slot, result);
                    return true;
                }
                if n == 0 {
                    let what = format!(
                        "write at offset {} of {}",
                        op.offset + op.done as u64,
                        self.files[op.file as usize]
                            .open
                            .as_ref()
                            .map(|f| f.info.path.display().to_string())
                            .unwrap_or_default()
                    );
                    self.finish(
                        slot,
                        Err(Error::new(
                            ErrorKind::Io,
                            format!("{what} made no progress"),
                        )),
                    );
                    return true;
                }
                self.stats.resubmits += 1;
                if let Err(e) = self.push(slot) {
                    self.finish(slot, Err(e));
                    return true;
                }
                false
            }
        }
    }

    /// Stores an operation's result and wakes its waiter.
    fn finish(&mut self, slot: usize, result: Result<Completion>) {
        let op = &mut self.ops[slot];
        debug_assert!(matches!(op.state, OpState::InFlight));
        op.state = OpState::Done(result);
        op.sga = Sga::new();
        let file = &mut self.files[op.file as usize];
        let open = file
            .open
            .as_mut()
            .expect("a file with operations in flight stays open");
        open.in_flight -= 1;
        self.stats.in_flight -= 1;
        self.stats.completed += 1;
        if let Some(w) = op.waker.take() {
            w.wake();
        }
    }

    fn release(&mut self, slot: usize) {
        let op = &mut self.ops[slot];
        op.generation = op.generation.wrapping_add(1);
        op.state = OpState::Free {
            next_free: self.free_op,
        };
        self.free_op = Some(slot as u32);
    }

    /// The result of `op` if it has completed (`Ok(None)` while it is in flight). A result is
    /// handed out once; the id is spent after that.
    pub fn take(&mut self, op: OpId) -> Result<Option<Completion>> {
        let slot = self.slot_of(op)?;
        if matches!(self.ops[slot].state, OpState::InFlight) {
            return Ok(None);
        }
        let state = std::mem::replace(&mut self.ops[slot].state, OpState::InFlight);
        self.release(slot);
        match state {
            OpState::Done(result) => result.map(Some),
            _ => unreachable!("slot_of accepts only busy slots"),
        }
    }

    /// Like [`Engine::take`], but while `op` is in flight records `waker` to be woken when it
    /// completes (replacing an earlier one).
    pub fn poll_op(&mut self, op: OpId, waker: &Waker) -> Poll<Result<Completion>> {
        match self.take(op) {
            Ok(Some(c)) => Poll::Ready(Ok(c)),
            Err(e) => Poll::Ready(Err(e)),
            Ok(None) => {
                let slot = op.slot();
                match &mut self.ops[slot].waker {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Whether `op` has completed (its result is waiting to be taken).
    pub fn is_done(&self, op: OpId) -> bool {
        self.slot_of(op)
            .map(|s| matches!(self.ops[s].state, OpState::Done(_)))
            .unwrap_or(false)
    }

    fn slot_of(&self, op: OpId) -> Result<usize> {
        let slot = op.slot();
        match self.ops.get(slot) {
            Some(s)
                if s.generation == op.generation() && !matches!(s.state, OpState::Free { .. }) =>
            {
                Ok(slot)
            }
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "operation {} is unknown: it never existed or its result was already taken",
                    op.0
                ),
            )),
        }
    }

    /// Submits, then waits until `op` completes and takes its result (for tests, tools and
    /// start-up paths; the data path uses [`Engine::poll`]).
    pub fn wait_for(&mut self, op: OpId) -> Result<Completion> {
        loop {
            if let Some(c) = self.take(op)? {
                return Ok(c);
            }
            self.wait(None)?;
        }
    }
}

impl AsRawFd for Engine {
    /// The ring's file descriptor: readable (for epoll) when completions are waiting.
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The kernel may still write into buffers of reads in flight: wait for every
        // operation to finish before the buffers (and the pool) go away.
        let mut rounds = 0;
        while self.stats.in_flight > 0 && rounds < 10_000 {
            if self.wait(Some(Duration::from_millis(10))).is_err() {
                break;
            }
            rounds += 1;
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("fixed_buffers", &self.fixed_buffers())
            .field("sqpoll", &self.sqpoll)
            .field("stats", &self.stats)
            .finish()
    }
}

/// Checks an O_DIRECT request; returns what is wrong with it.
fn check_alignment(
    info: &FileInfo,
    offset: u64,
    len: usize,
    segments: impl Iterator<Item = (usize, usize)>,
) -> std::result::Result<(), String> {
    let (mem, off) = (
        info.alignment.memory as usize,
        info.alignment.offset as usize,
    );
    if offset & (off as u64 - 1) != 0 {
        return Err(format!("the offset {offset} is not a multiple of {off}"));
    }
    if len & (off - 1) != 0 {
        return Err(format!("the length {len} is not a multiple of {off}"));
    }
    for (i, (addr, seg_len)) in segments.enumerate() {
        if addr & (mem - 1) != 0 {
            return Err(format!(
                "segment {i} starts at address {addr:#x}, not a multiple of {mem}"
            ));
        }
        if seg_len & (off - 1) != 0 {
            return Err(format!(
                "segment {i} is {seg_len} B long, not a multiple of {off}"
            ));
        }
    }
    Ok(())
}

fn misaligned(what: &str, a: &DioAlignment, why: &str) -> Error {
    Error::new(
        ErrorKind::Misaligned,
        format!(
            "O_DIRECT {what} is misaligned: {why}. Offsets and lengths must be multiples of {} B \
             and buffer addresses multiples of {} B; align the request or open the file with \
             direct(false)",
            a.offset, a.memory
        ),
    )
}

/// Keeps the first `len` bytes of `sga`, dropping segments that end up empty.
fn truncate_sga(mut sga: Sga, len: usize) -> Sga {
    if sga.len() == len {
        return sga;
    }
    let mut left = len;
    sga.take_segments()
        .filter_map(|mut b| {
            if left == 0 {
                return None;
            }
            b.truncate(left);
            left -= b.len();
            Some(b)
        })
        .collect()
}
