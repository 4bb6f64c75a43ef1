//! A crash-safe append-only log over the [`Engine`].
//!
//! # Record format
//!
//! Every integer is little-endian. A record is:
//!
//! ```text
//! offset  size  field
//!      0     4  magic, the bytes "BYPL"
//!      4     4  payload length in bytes (at most LogConfig::max_record)
//!      8     8  sequence number: 1 for the first record of the file, +1 for each next one
//!     16     4  CRC-32C (Castagnoli) of bytes 4..16 followed by the payload
//!     20     n  payload
//! ```
//!
//! # File layouts
//!
//! A log file has one of two layouts ([`Layout`]), recognised from its first bytes when it is
//! opened (a new or empty file gets the one [`LogConfig::layout`] names):
//!
//! - [`Layout::Packed`]: records back to back from offset 0, written through the page cache.
//!   Every append grows the file, so every sync also commits the file system's journal (the
//!   new size).
//! - [`Layout::Blocks`]: a [`BLOCK`]-byte file header (the bytes [`FILE_MAGIC`], the rest
//!   zero), then records, each starting at a multiple of [`BLOCK`]; the bytes between a
//!   record's end and the next multiple of [`BLOCK`] are zero. Records are written with
//!   O_DIRECT (through the page cache where the file system has no direct I/O), each at a
//!   fresh block: a block holding an acknowledged record is never written
//!   again, so a torn write can only damage the record being written. The file is kept
//!   [`LogConfig::preallocate`] bytes ahead of the last record, filled with written zeros (not
//!   a hole, not `fallocate`d unwritten space), so a record's write overwrites blocks the file
//!   system has already allocated and initialised and its sync needs no journal commit. Under
//!   [`SyncPolicy::Always`] each record is one write with `RWF_DSYNC` (write and device cache
//!   flush in one operation) instead of a write followed by an `fdatasync`.
//!
//! # Durability
//!
//! [`Log::append`] queues the record's write and returns its sequence number at once; the
//! record is *acknowledged* ([`Log::durable`] reaches its number) only when it and every record
//! before it are durable under the [`SyncPolicy`]:
//!
//! - [`SyncPolicy::Always`]: written and covered by an `fdatasync` issued after the write
//!   completed. Records appended while a sync is in flight share the next one (group commit).
//! - [`SyncPolicy::EveryN`]`(n)`: an `fdatasync` is issued once `n` written records are not yet
//!   covered by one (or when [`Log::flush`] asks); records are acknowledged when it completes.
//!   A tail of fewer than `n` records waits for the next sync or a flush.
//! - [`SyncPolicy::Never`]: acknowledged once written to the page cache: they survive a crash
//!   of the process, not of the machine.
//!
//! Acknowledgements are in sequence order, so the acknowledged records always form a prefix of
//! the log, which is what recovery can restore.
//!
//! # Recovery
//!
//! [`Log::open`] reads the file from the start and hands every good record to a callback. It
//! stops at the first record that is torn (the file ends inside it), has a wrong magic, an
//! impossible length, a wrong checksum, or a sequence number other than the next one expected:
//! nothing after that point is trusted. In the blocks layout a block whose first four bytes are
//! zero where a record should start is the end of the log (the preallocated zeros, or a write
//! that never reached the disk); that is a clean end, not a [`StopReason`]. The file is then
//! cut to the end of the last good record (in the blocks layout: to the next block boundary, so
//! the preallocated space is written afresh) and the cut is made durable before the first new
//! append, so a stale record beyond the cut can never reappear behind new ones. The next append
//! continues with the next sequence number.
//!
//! # Example
//!
//! ```no_run
//! use bypass_runtime::{BufferPool, PoolConfig};
//! use bypass_storage::{Engine, EngineConfig, Log, LogConfig, SyncPolicy};
//!
//! # fn main() -> bypass_storage::Result<()> {
//! let pool = BufferPool::new(&PoolConfig::large(64)).expect("pool");
//! let mut engine = Engine::new(&EngineConfig::default(), pool)?;
//! let config = LogConfig { sync: SyncPolicy::Always, ..LogConfig::default() };
//! let (mut log, recovery) = Log::open(&mut engine, "app.log", config, |seq, payload| {
//!     println!("replaying record {seq}: {} B", payload.len());
//! })?;
//! println!("{} records recovered, next is {}", recovery.records, log.next_seq());
//! let seq = log.append(&mut engine, b"hello")?;
//! // An event loop calls engine.poll() and log.process() and checks log.durable();
//! // this helper does both until the record is durable.
//! log.wait_durable(&mut engine, seq)?;
//! log.close(&mut engine)?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::task::{Poll, Waker};

use bypass_runtime::Sga;

use crate::crc32c::Crc32c;
use crate::engine::{Completion, Engine, FileId, OpId, OpenOptions};
use crate::error::{Error, ErrorKind, Result};

/// The record magic.
pub const MAGIC: [u8; 4] = *b"BYPL";
/// Bytes in a record header.
pub const HEADER_LEN: usize = 20;
/// The unit of the blocks layout: its file header's size and the alignment of every record.
pub const BLOCK: u64 = 4096;
/// The first bytes of a file in the blocks layout.
pub const FILE_MAGIC: [u8; 8] = *b"BYPLBLK1";

/// How records are laid out in the file. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Records back to back from offset 0, through the page cache.
    #[default]
    Packed,
    /// A file header block, then every record at a block boundary, written with O_DIRECT into
    /// preallocated zeroed space.
    Blocks,
}

/// When appended records are made durable. See the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Sync before acknowledging every record.
    Always,
    /// Sync once this many written records are not covered by a sync.
    EveryN(u32),
    /// Never sync: acknowledge once written to the page cache.
    Never,
}

/// The shape of a log, fixed when it is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    pub sync: SyncPolicy,
    /// Largest payload of one record; larger appends are refused, and a header that claims more
    /// marks the end of the good log.
    pub max_record: usize,
    /// Records appended but not yet acknowledged, at most.
    pub max_pending: usize,
    /// Layout of a new (or empty) file; an existing file keeps its own.
    pub layout: Layout,
    /// Blocks layout: bytes of zeroed space kept written ahead of the last record (a multiple
    /// of [`BLOCK`]; the engine's pool must have room for it). When less than half of it is
    /// left, the next stretch is written in the background.
    pub preallocate: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            sync: SyncPolicy::Always,
            max_record: 1 << 20,
            max_pending: 256,
            layout: Layout::Packed,
            preallocate: 1 << 20,
        }
    }
}

/// Why recovery stopped before the end of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The file ends inside a record header.
    TornHeader,
    /// The file ends inside a record's payload.
    TornPayload,
    /// The header does not start with the magic.
    BadMagic,
    /// The header claims a payload longer than `max_record`.
    BadLength,
    /// The checksum does not match the header and payload.
    BadChecksum,
    /// A well-formed record with the wrong sequence number (stale data).
    SequenceGap { expected: u64, found: u64 },
}

/// What [`Log::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Good records replayed.
    pub records: u64,
    /// Sequence number of the last good record (0 if none).
    pub last_seq: u64,
    /// File offset just past the last good record: where the next append goes.
    pub end: u64,
    /// Bytes cut off after `end`. In the blocks layout: up to the last non-zero byte (the
    /// zeroed space prepared ahead is not counted, and is kept when nothing else follows).
    pub discarded: u64,
    /// Why replay stopped before the end of the file, if it did.
    pub stop: Option<StopReason>,
    /// File offset of the record that stopped replay (equals `end` when `stop` is set).
    pub stop_offset: Option<u64>,
    /// The file's layout (what it was written in, or the configured one for a new file).
    pub layout: Layout,
}

struct Pending {
    seq: u64,
    /// The record's write, until it completes.
    write: Option<OpId>,
    /// Blocks layout: a record that lands in space whose zeroing is still in flight waits here
    /// (offset and data) until that write completes.
    staged: Option<(u64, Sga)>,
    waker: Option<Waker>,
}

/// A crash-safe append-only log. See the [module docs](self).
pub struct Log {
    file: FileId,
    path: PathBuf,
    config: LogConfig,
    next_seq: u64,
    next_offset: u64,
    /// Appended and not yet acknowledged, in sequence order.
    pending: VecDeque<Pending>,
    /// Every record up to this one is written.
    written: u64,
    /// The sync in flight and the last record it covers.
    sync: Option<(OpId, u64)>,
    /// The last record covered by an issued sync.
    sync_requested: u64,
    /// Every record up to this one is acknowledged.
    durable: u64,
    /// Sync what is written even if the policy would wait.
    flush: bool,
    /// The first write or sync error: the log refuses appends after it.
    failed: Option<Error>,
    /// The file's layout.
    layout: Layout,
    /// Blocks layout: the file holds written zeros (or a zeroing write is in flight) up to here.
    prepared_end: u64,
    /// Blocks layout: the zeroing write in flight and the range it covers.
    zeroing: Option<(OpId, u64, u64)>,
}

impl Log {
    /// Opens (creating if needed) the log at `path`, replays its good records to `on_record`
    /// in order, cuts off anything after them, and makes the cut durable.
    pub fn open(
        engine: &mut Engine,
        path: impl AsRef<Path>,
        config: LogConfig,
        mut on_record: impl FnMut(u64, &[u8]),
    ) -> Result<(Log, Recovery)> {
        let path = path.as_ref();
        if let SyncPolicy::EveryN(0) = config.sync {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "log config: EveryN(0) syncs never; use Never, or EveryN(1) or more",
            ));
        }
        if config.max_pending == 0
            || config.max_record == 0
            || config.max_record > u32::MAX as usize
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "log config: max_pending must be at least 1 and max_record between 1 and 4 GiB",
            ));
        }
        if config.layout == Layout::Blocks
            && (!config.preallocate.is_multiple_of(BLOCK) || config.preallocate == 0)
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("log config: preallocate must be a positive multiple of {BLOCK} B"),
            ));
        }
        // Recovery reads through the page cache (a file of the packed layout need not be
        // block-sized); the blocks layout then reopens the file with O_DIRECT.
        let file = engine.open(path, &OpenOptions::new().direct(false).create(true))?;
        let recovery = match replay(engine, file, &config, &mut on_record) {
            Ok(r) => r,
            Err(e) => {
                let _ = engine.close(file);
                return Err(e);
            }
        };
        if recovery.discarded > 0 {
            engine.set_len(file, recovery.end)?;
        }
        // Blocks layout: zeros after the end are kept as prepared space.
        let prepared_end = engine.len(file)? / BLOCK * BLOCK;
        let file = if recovery.layout == Layout::Blocks {
            if recovery.end == 0 {
                // A new file: its header block first.
                let mut header = vec![0u8; BLOCK as usize];
                header[..FILE_MAGIC.len()].copy_from_slice(&FILE_MAGIC);
                let sga = Sga::copy_from(engine.pool(), &header).ok_or_else(|| {
                    Error::new(ErrorKind::Busy, "no pool buffer for the log's file header")
                })?;
                let op = engine.write(file, 0, sga)?;
                engine.wait_for(op)?;
            }
            engine.close(file)?;
            match engine.open(path, &OpenOptions::new().direct(true).create(false)) {
                // A file system without direct I/O (some tmpfs): the same layout through the
                // page cache.
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    engine.open(path, &OpenOptions::new().direct(false).create(false))?
                }
                other => other?,
            }
        } else {
            file
        };
        let end = recovery.end.max(if recovery.layout == Layout::Blocks {
            BLOCK
        } else {
            0
        });
        let mut log = Log {
            file,
            path: path.to_path_buf(),
            next_seq: recovery.last_seq + 1,
            next_offset: end,
            pending: VecDeque::with_capacity(config.max_pending),
            written: recovery.last_seq,
            sync: None,
            sync_requested: recovery.last_seq,
            durable: recovery.last_seq,
            flush: false,
            failed: None,
            layout: recovery.layout,
            prepared_end: prepared_end.max(end),
            zeroing: None,
            config,
        };
        if log.layout == Layout::Blocks {
            // The first stretch of zeroed space, made durable with the cut below.
            log.prepare(engine)?;
            if let Some((op, _, _)) = log.zeroing.take() {
                engine.wait_for(op)?;
            }
        }
        // Make the cut (and the file's existence) durable before any new record is written.
        let op = engine.fsync(file)?;
        engine.wait_for(op)?;
        sync_parent_dir(path)?;
        Ok((log, recovery))
    }

    /// Queues a record holding a copy of `payload`; returns its sequence number. The record is
    /// acknowledged when [`Log::durable`] reaches that number.
    pub fn append(&mut self, engine: &mut Engine, payload: &[u8]) -> Result<u64> {
        if let Some(e) = &self.failed {
            return Err(failed(e));
        }
        if payload.len() > self.config.max_record {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "record of {} B is larger than the log's max_record of {} B",
                    payload.len(),
                    self.config.max_record
                ),
            ));
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{} records are waiting to become durable (max_pending); poll the log first",
                    self.pending.len()
                ),
            ));
        }
        let seq = self.next_seq;
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(&MAGIC);
        header[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[8..16].copy_from_slice(&seq.to_le_bytes());
        let mut crc = Crc32c::new();
        crc.update(&header[4..16]);
        crc.update(payload);
        header[16..20].copy_from_slice(&crc.value().to_le_bytes());

        let pad_to = match self.layout {
            Layout::Packed => 1,
            Layout::Blocks => BLOCK as usize,
        };
        let sga = copy_record(engine, &header, payload, pad_to)?;
        let len = sga.len() as u64;
        debug_assert_eq!(
            len,
            (HEADER_LEN + payload.len()).next_multiple_of(pad_to) as u64
        );
        let at = self.next_offset;
        let (write, staged) = match self.zeroing {
            // Zeros are still being written where this record goes: it waits for them.
            Some((_, from, _)) if at + len > from => (None, Some((at, sga))),
            _ => (Some(self.issue_write(engine, at, sga)?), None),
        };
        self.pending.push_back(Pending {
            seq,
            write,
            staged,
            waker: None,
        });
        self.next_seq += 1;
        self.next_offset += len;
        if self.layout == Layout::Blocks {
            // A record beyond the prepared space extends the file itself.
            self.prepared_end = self.prepared_end.max(self.next_offset);
            self.prepare(engine)?;
        }
        Ok(seq)
    }

    /// Writes one record: in the blocks layout under `Always` with `RWF_DSYNC`, so it is
    /// durable when the write completes.
    fn issue_write(&mut self, engine: &mut Engine, at: u64, sga: Sga) -> Result<OpId> {
        if self.dsync_writes() {
            engine.write_dsync(self.file, at, sga)
        } else {
            engine.write(self.file, at, sga)
        }
    }

    /// Whether every record write carries its own sync.
    fn dsync_writes(&self) -> bool {
        self.layout == Layout::Blocks && self.config.sync == SyncPolicy::Always
    }

    /// Blocks layout: starts writing the next stretch of zeros once less than half of
    /// `preallocate` is left ahead of the next record (one stretch in flight at a time).
    fn prepare(&mut self, engine: &mut Engine) -> Result<()> {
        if self.zeroing.is_some()
            || self.prepared_end - self.next_offset >= self.config.preallocate / 2
        {
            return Ok(());
        }
        let from = self.prepared_end;
        let len = self.config.preallocate;
        let pool = engine.pool();
        let cap = pool.data_capacity();
        let need = (len as usize).div_ceil(cap);
        if pool.available() < need {
            // Try again on a later append; records beyond the prepared space still work, they
            // just extend the file themselves.
            return Ok(());
        }
        let mut sga = Sga::new();
        let mut left = len as usize;
        while left > 0 {
            let n = left.min(cap);
            let mut buf = pool.alloc().expect("availability checked");
            buf.append(n).fill(0);
            sga.push(buf);
            left -= n;
        }
        let op = engine.write(self.file, from, sga)?;
        self.zeroing = Some((op, from, from + len));
        self.prepared_end = from + len;
        Ok(())
    }

    /// Asks for a sync of every written record now, whatever the policy (for the tail of an
    /// `EveryN` log). Takes effect at the next [`Log::process`].
    pub fn flush(&mut self) {
        self.flush = true;
    }

    /// Takes the log's completions from the engine (call it after [`Engine::poll`]), issues the
    /// syncs the policy wants, and acknowledges records. A write or sync error fails the log:
    /// it is returned here and by every later append; reopen the log to recover.
    pub fn process(&mut self, engine: &mut Engine) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(failed(e));
        }
        if let Err(e) = self.advance(engine) {
            self.failed = Some(e.clone());
            for p in &mut self.pending {
                if let Some(w) = p.waker.take() {
                    w.wake();
                }
            }
            return Err(e);
        }
        Ok(())
    }

    fn advance(&mut self, engine: &mut Engine) -> Result<()> {
        if let Some((op, _, _)) = self.zeroing {
            if let Some(done) = engine.take(op).transpose() {
                self.zeroing = None;
                done?;
                // The zeros are down: the records that waited for them go now.
                for i in 0..self.pending.len() {
                    if let Some((at, sga)) = self.pending[i].staged.take() {
                        let op = self.issue_write(engine, at, sga)?;
                        self.pending[i].write = Some(op);
                    }
                }
                self.prepare(engine)?;
            }
        }
        let mut first_error = None;
        for p in self.pending.iter_mut() {
            if let Some(op) = p.write {
                match engine.take(op) {
                    Ok(Some(Completion::Write(_))) => p.write = None,
                    Ok(Some(other)) => unreachable!("a log write completed as {other:?}"),
                    Ok(None) => {}
                    Err(e) => {
                        p.write = None;
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Writes complete out of order; `written` moves over the completed prefix only.
        for p in &self.pending {
            if p.seq <= self.written {
                continue;
            }
            if p.write.is_some() || p.staged.is_some() {
                break;
            }
            self.written = p.seq;
        }
        if self.dsync_writes() {
            // Each write carried its own sync.
            self.durable = self.written;
            self.sync_requested = self.written;
        }
        if let Some((op, covers)) = self.sync {
            match engine.take(op) {
                Ok(Some(_)) => {
                    self.sync = None;
                    self.durable = self.durable.max(covers);
                }
                Ok(None) => {}
                Err(e) => {
                    self.sync = None;
                    return Err(e);
                }
            }
        }
        let unsynced = self.written - self.sync_requested;
        let want_sync = unsynced > 0
            && match self.config.sync {
                SyncPolicy::Always => true,
                SyncPolicy::EveryN(n) => unsynced >= u64::from(n) || self.flush,
                SyncPolicy::Never => false,
            };
        if self.sync.is_none() && want_sync {
            // Issued only after the covered writes completed, so it covers them.
            let op = engine.fdatasync(self.file)?;
            self.sync = Some((op, self.written));
            self.sync_requested = self.written;
            self.flush = false;
        }
        if self.config.sync == SyncPolicy::Never {
            self.durable = self.written;
        }
        while let Some(p) = self.pending.front() {
            if p.seq > self.durable {
                break;
            }
            let mut p = self.pending.pop_front().expect("front exists");
            debug_assert!(p.write.is_none(), "an acknowledged record is written");
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
        Ok(())
    }

    /// Every record up to this sequence number is acknowledged (0: none yet).
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Where the next record goes in the file.
    pub fn end_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The log's file in the engine.
    pub fn file(&self) -> FileId {
        self.file
    }

    /// Records appended and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Ready once record `seq` is acknowledged; otherwise records `waker` to wake then.
    pub fn poll_durable(&mut self, seq: u64, waker: &Waker) -> Poll<Result<()>> {
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(failed(e)));
        }
        if seq >= self.next_seq {
            return Poll::Ready(Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "record {seq} was never appended (next is {})",
                    self.next_seq
                ),
            )));
        }
        if seq <= self.durable {
            return Poll::Ready(Ok(()));
        }
        if let Some(p) = self.pending.iter_mut().find(|p| p.seq == seq) {
            p.waker = Some(waker.clone());
        }
        Poll::Pending
    }

    /// Drives the engine until record `seq` is acknowledged (for tools and tests; an event loop
    /// uses [`Log::process`] and [`Log::poll_durable`]).
    pub fn wait_durable(&mut self, engine: &mut Engine, seq: u64) -> Result<()> {
        if seq >= self.next_seq {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "record {seq} was never appended (next is {})",
                    self.next_seq
                ),
            ));
        }
        loop {
            // Under EveryN the record may sit in a group that is not full. Ask for a sync on
            // every round: one asked for while later writes were still in flight does not cover
            // them, and nothing else would ask again.
            if matches!(self.config.sync, SyncPolicy::EveryN(_)) {
                self.flush();
            }
            self.process(engine)?;
            if self.durable >= seq {
                return Ok(());
            }
            engine.wait(None)?;
        }
    }

    /// Waits for every pending record, then closes the file.
    pub fn close(mut self, engine: &mut Engine) -> Result<()> {
        let waited = if self.next_seq > 1 && self.failed.is_none() {
            self.wait_durable(engine, self.next_seq - 1)
        } else {
            Ok(())
        };
        self.drain(engine)?;
        engine.close(self.file)?;
        waited
    }

    /// Takes (and drops) the results of every write and sync still in flight.
    fn drain(&mut self, engine: &mut Engine) -> Result<()> {
        loop {
            let mut busy = false;
            for p in &mut self.pending {
                if let Some(op) = p.write {
                    match engine.take(op) {
                        Ok(None) => busy = true,
                        _ => p.write = None,
                    }
                }
            }
            if let Some((op, _)) = self.sync {
                match engine.take(op) {
                    Ok(None) => busy = true,
                    _ => self.sync = None,
                }
            }
            if let Some((op, _, _)) = self.zeroing {
                match engine.take(op) {
                    Ok(None) => busy = true,
                    _ => self.zeroing = None,
                }
            }
            if !busy {
                return Ok(());
            }
            engine.wait(None)?;
        }
    }
}

fn failed(e: &Error) -> Error {
    Error::new(
        e.kind(),
        format!("the log failed earlier and refuses new work; reopen it to recover: {e}"),
    )
}

/// Header and payload copied into pool buffers, packed, then zeros up to a multiple of
/// `pad_to` bytes.
fn copy_record(engine: &Engine, header: &[u8], payload: &[u8], pad_to: usize) -> Result<Sga> {
    let pool = engine.pool();
    let cap = pool.data_capacity();
    let total = (HEADER_LEN + payload.len()).next_multiple_of(pad_to);
    let need = total.div_ceil(cap);
    if pool.available() < need {
        return Err(Error::new(
            ErrorKind::Busy,
            format!(
                "a record of {} B needs {need} pool buffers, {} are free; poll the log so \
                 completed writes return theirs",
                payload.len(),
                pool.available()
            ),
        ));
    }
    let mut sga = Sga::new();
    let mut first = pool.alloc().expect("availability checked");
    first.extend_from_slice(header);
    let mut rest = payload;
    let n = rest.len().min(first.tailroom());
    first.extend_from_slice(&rest[..n]);
    rest = &rest[n..];
    sga.push(first);
    for piece in rest.chunks(cap) {
        sga.push(pool.alloc_copy(piece).expect("availability checked"));
    }
    let mut pad = total - sga.len();
    while pad > 0 {
        let room = sga.segments().last().map_or(0, |b| b.tailroom());
        if room == 0 {
            sga.push(pool.alloc().expect("availability checked"));
            continue;
        }
        let n = pad.min(room);
        sga.segments_mut()
            .last()
            .expect("a segment exists")
            .append(n)
            .fill(0);
        pad -= n;
    }
    Ok(sga)
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::from_io(&e, format_args!("syncing directory {}", dir.display())))
}

/// A window over the log file, refilled by reads through the engine.
struct Reader {
    file: FileId,
    file_len: u64,
    /// Bytes per read.
    piece: usize,
    window: Vec<u8>,
    /// File offset of `window[0]`.
    window_start: u64,
    /// File offset up to which the window holds data.
    read_to: u64,
    /// Parse position in the window.
    at: usize,
}

impl Reader {
    /// File offset of the parse position.
    fn offset(&self) -> u64 {
        self.window_start + self.at as u64
    }

    fn available(&self) -> usize {
        self.window.len() - self.at
    }

    /// Makes the window hold `need` bytes from the parse position, reading more of the file;
    /// false if the file ends first.
    fn fill(&mut self, engine: &mut Engine, need: usize) -> Result<bool> {
        while self.available() < need {
            if self.read_to >= self.file_len {
                return Ok(false);
            }
            if self.at > 0 {
                self.window.drain(..self.at);
                self.window_start += self.at as u64;
                self.at = 0;
            }
            let n = self.piece.min((self.file_len - self.read_to) as usize);
            let op = engine.read(self.file, self.read_to, n)?;
            let Completion::Read(sga) = engine.wait_for(op)? else {
                unreachable!("a read completes as Read");
            };
            if sga.is_empty() {
                // The file is shorter than it was: what we have is the end.
                self.file_len = self.read_to;
                return Ok(false);
            }
            for seg in sga.segments() {
                self.window.extend_from_slice(seg);
            }
            self.read_to += sga.len() as u64;
        }
        Ok(true)
    }

    fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.window[self.at + range.start..self.at + range.end]
    }

    /// Moves the parse position forward to file offset `to`.
    fn skip_to(&mut self, to: u64) {
        debug_assert!(to >= self.offset());
        if to <= self.window_start + self.window.len() as u64 {
            self.at = (to - self.window_start) as usize;
        } else {
            self.window.clear();
            self.window_start = to;
            self.read_to = to;
            self.at = 0;
        }
    }
}

/// Reads the log from the start; returns where its good part ends.
fn replay(
    engine: &mut Engine,
    file: FileId,
    config: &LogConfig,
    on_record: &mut dyn FnMut(u64, &[u8]),
) -> Result<Recovery> {
    let piece_chunks = engine.pool().available().clamp(1, 16);
    let mut r = Reader {
        file,
        file_len: engine.len(file)?,
        piece: piece_chunks * engine.pool().data_capacity(),
        window: Vec::new(),
        window_start: 0,
        read_to: 0,
        at: 0,
    };
    let mut rec = Recovery {
        records: 0,
        last_seq: 0,
        end: 0,
        discarded: 0,
        stop: None,
        stop_offset: None,
        layout: config.layout,
    };
    // The layout: the file's first bytes say, or the configuration for a new file.
    let known = r.fill(engine, FILE_MAGIC.len())?;
    if known && r.bytes(0..FILE_MAGIC.len()) == FILE_MAGIC {
        rec.layout = Layout::Blocks;
    } else if known && r.bytes(0..MAGIC.len()) == MAGIC {
        rec.layout = Layout::Packed;
    }
    if rec.layout == Layout::Blocks {
        if !known || r.bytes(0..FILE_MAGIC.len()) != FILE_MAGIC {
            // Empty, or a file header that never reached the disk (the file then holds no
            // acknowledged record): start afresh.
            rec.discarded = r.file_len;
            return Ok(rec);
        }
        r.skip_to(BLOCK);
        rec.end = BLOCK;
    }
    loop {
        if rec.layout == Layout::Blocks
            && r.fill(engine, MAGIC.len())?
            && r.bytes(0..MAGIC.len()) == [0u8; 4]
        {
            // Zeroed space where the next record would start: the end of the log.
            break;
        }
        if !r.fill(engine, HEADER_LEN)? {
            if r.available() > 0 {
                rec.stop = Some(StopReason::TornHeader);
            }
            break;
        }
        let h = r.bytes(0..HEADER_LEN);
        if h[0..4] != MAGIC {
            rec.stop = Some(StopReason::BadMagic);
            break;
        }
        let len = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes")) as usize;
        let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes"));
        if len > config.max_record {
            rec.stop = Some(StopReason::BadLength);
            break;
        }
        if !r.fill(engine, HEADER_LEN + len)? {
            rec.stop = Some(StopReason::TornPayload);
            break;
        }
        let mut c = Crc32c::new();
        c.update(r.bytes(4..16));
        c.update(r.bytes(HEADER_LEN..HEADER_LEN + len));
        if c.value() != crc {
            rec.stop = Some(StopReason::BadChecksum);
            break;
        }
        let expected = rec.last_seq + 1;
        if seq != expected {
            rec.stop = Some(StopReason::SequenceGap {
                expected,
                found: seq,
            });
            break;
        }
        on_record(seq, r.bytes(HEADER_LEN..HEADER_LEN + len));
        rec.records += 1;
        rec.last_seq = seq;
        r.at += HEADER_LEN + len;
        if rec.layout == Layout::Blocks {
            // The next record starts at the next block; the padding is not read.
            let next = r.offset().next_multiple_of(BLOCK);
            r.skip_to(next);
        }
        rec.end = r.offset();
    }
    if rec.stop.is_some() {
        rec.stop_offset = Some(rec.end);
    }
    if rec.end > r.file_len {
        // The file ends inside the padding of its last record (only a file cut by hand does):
        // the next record goes at the block boundary all the same.
        debug_assert_eq!(rec.layout, Layout::Blocks);
        engine.set_len(file, rec.end)?;
        r.file_len = rec.end;
    }
    rec.discarded = r.file_len - rec.end;
    if rec.layout == Layout::Blocks {
        // Zeros after the end are the space prepared ahead (kept); only data counts as cut.
        let mut data_end = rec.end;
        loop {
            let have = r.available();
            if have == 0 {
                if !r.fill(engine, 1)? {
                    break;
                }
                continue;
            }
            if let Some(i) = r.bytes(0..have).iter().rposition(|&b| b != 0) {
                data_end = r.offset() + i as u64 + 1;
            }
            r.at += have;
        }
        rec.discarded = data_end - rec.end;
    }
    Ok(rec)
}
