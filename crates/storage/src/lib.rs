//! Storage for bypass: files and block devices driven through io_uring, and a crash-safe log.
//!
//! - [`engine`]: the [`Engine`], asynchronous reads, writes and syncs at offsets, with
//!   registered files, registered (fixed) pool buffers, optional SQPOLL, batched submission, and
//!   O_DIRECT alignment checked before submission.
//! - [`log`]: the [`Log`], checksummed sequenced records with a per-log [`SyncPolicy`] and
//!   recovery that stops at the first torn or corrupt record.
//! - [`crc32c`]: the records' checksum.
//! - [`bench`](mod@bench): the storage benchmark behind `bypass bench storage`, next to fio.

//!
//! Errors are [`Error`]s with an [`ErrorKind`], the kernel's errno when there is one, and a
//! message that says what to do.

pub mod bench;
pub mod crc32c;
pub mod engine;
mod error;
pub mod log;
mod sys;

pub use bench::{bench, BenchOptions, BenchReport, BenchRow};
pub use engine::{
    Completion, Engine, EngineConfig, EngineStats, FileId, FileInfo, OpId, OpenOptions, SqPoll,
};
pub use error::{Error, ErrorKind, Result};
pub use log::{Layout, Log, LogConfig, Recovery, StopReason, SyncPolicy};
pub use sys::DioAlignment;
