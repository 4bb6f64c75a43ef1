//! The append-only file: every write command, in a form that replays to the same state, so a
//! restarted server comes back with every acknowledged write.
//!
//! The server talks to its log through [`AppendLog`]. Two implementations, chosen by
//! [`AofFormat`]:
//!
//! - [`StorageLog`] (the default): the crash-safe [`bypass_storage::Log`] over io_uring. Each
//!   batch of writes is one record with a length, a sequence number and a CRC-32C; recovery
//!   stops at the first torn or corrupt record, so a batch is replayed whole or not at all.
//! - [`FileAof`]: a Redis-style file of RESP requests written with `std::fs`; recovery stops
//!   at the first request that is cut short or malformed. Readable with `cat`, no checksums.
//!
//! Either way, a batch of writes (all the writes of one turn of the event loop, from every
//! connection) is appended at once, and under [`FsyncPolicy::Always`] made durable with one
//! sync before any of its replies is sent: group commit. The storage log does not block the
//! server while a batch is on its way to the disk (see [`AppendLog`]). Recovery cuts the file after the last
//! good record and makes the cut durable before anything new is appended, so garbage never
//! sits between acknowledged records.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bypass::{Error, ErrorKind, Result};

use crate::resp::{Command, Parser, ParserLimits};

/// When appended writes reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FsyncPolicy {
    /// Sync every batch before its replies are sent: an acknowledged write survives a power
    /// failure.
    Always,
    /// Sync at most once a second: a crash of the machine may lose the last second.
    EverySec,
    /// Leave syncing to the kernel: a crash of the process loses nothing, one of the machine
    /// may lose more.
    No,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsyncPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<FsyncPolicy> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!("unknown fsync policy '{s}'; choose one of: always, everysec, no"),
            )),
        }
    }
}

/// How the append-only file is laid out on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AofFormat {
    /// Checksummed records of the storage log ([`StorageLog`]).
    #[default]
    Log,
    /// Plain RESP requests, as Redis writes them ([`FileAof`]).
    Resp,
}

impl FromStr for AofFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<AofFormat> {
        match s {
            "log" => Ok(AofFormat::Log),
            "resp" => Ok(AofFormat::Resp),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!("unknown append-only file format '{s}'; choose log or resp"),
            )),
        }
    }
}

/// A log of write commands, as the server uses it.
///
/// Appending does not wait: [`AppendLog::append`] starts the batch on its way and returns its
/// ticket (1, 2, 3, ... in append order); the batch is as durable as the policy promises, and
/// its replies may be sent, once [`AppendLog::durable`] reaches that ticket. Tickets become
/// durable in order.
pub trait AppendLog {
    /// Appends `batch` (RESP requests, back to back); returns its ticket.
    fn append(&mut self, batch: &[u8]) -> Result<u64>;
    /// Every batch up to this ticket is as durable as the policy promises (0: none yet).
    fn durable(&self) -> u64;
    /// Takes whatever has completed, without blocking.
    fn poll(&mut self) -> Result<()>;
    /// Blocks until [`AppendLog::durable`] moves forward, or returns at once if every batch
    /// appended is durable already. With `spin` it busy-polls rather than sleeping (for a
    /// server that busy-polls its network too: no wake-up of a halted CPU).
    fn wait(&mut self, spin: bool) -> Result<()>;
    /// Called on every turn of the event loop: syncs when the policy says it is time.
    fn tick(&mut self, now: Instant) -> Result<()>;
    /// Makes everything appended durable (at shutdown).
    fn sync(&mut self) -> Result<()>;
    /// Syncs issued since the log was opened.
    fn syncs(&self) -> u64;
    fn policy(&self) -> FsyncPolicy;
}

/// What replay found in an existing log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Complete requests replayed.
    pub commands: u64,
    /// Bytes of those requests: where the next append goes.
    pub end: u64,
    /// Bytes cut off after `end` (a torn or malformed tail).
    pub discarded: u64,
    /// Why replay stopped before the end of the file, if it did.
    pub stop: Option<String>,
}

/// An append-only file of RESP requests. See the [module docs](self).
pub struct FileAof {
    file: File,
    path: PathBuf,
    policy: FsyncPolicy,
    /// Bytes written since the last sync.
    dirty: bool,
    last_sync: Instant,
    syncs: u64,
    /// Batches appended (the last ticket handed out).
    appended: u64,
}

/// Bytes read from the file per `read` during replay.
const REPLAY_CHUNK: usize = 64 << 10;

impl FileAof {
    /// Opens (creating if needed) the file at `path`, replays its complete requests to
    /// `on_command` in order, cuts off a torn or malformed tail, and syncs the cut.
    pub fn open(
        path: &Path,
        policy: FsyncPolicy,
        limits: ParserLimits,
        mut on_command: impl FnMut(Command<'_>),
    ) -> Result<(FileAof, Replay)> {
        let what = |doing: &str| format!("{doing} the append-only file {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::os(e, what("cannot open")))?;
        let size = file
            .metadata()
            .map_err(|e| Error::os(e, what("cannot stat")))?
            .len();
        let mut replay = Replay::default();
        let mut parser = Parser::new(limits);
        let mut chunk = vec![0u8; REPLAY_CHUNK];
        let mut offset = 0u64;
        'read: loop {
            let n = file
                .read(&mut chunk)
                .map_err(|e| Error::os(e, what("cannot read")))?;
            if n == 0 {
                break;
            }
            let mut input = &chunk[..n];
            loop {
                let before = input.len();
                let parsed = parser.next(&mut input);
                offset += (before - input.len()) as u64;
                match parsed {
                    Ok(Some(cmd)) => {
                        on_command(cmd);
                        replay.commands += 1;
                        replay.end = offset;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        replay.stop =
                            Some(format!("malformed request at byte {}: {e}", replay.end));
                        break 'read;
                    }
                }
            }
        }
        if replay.stop.is_none() && !parser.is_idle() {
            replay.stop = Some(format!(
                "the last request, at byte {}, is cut short",
                replay.end
            ));
        }
        debug_assert!(replay.end <= size);
        replay.discarded = size - replay.end;
        if replay.discarded > 0 {
            file.set_len(replay.end)
                .map_err(|e| Error::os(e, what("cannot cut the torn tail of")))?;
        }
        // The cut (and the file itself) is durable before anything new lands behind it.
        file.sync_all()
            .map_err(|e| Error::os(e, what("cannot sync")))?;
        sync_parent_dir(path)?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(replay.end))
            .map_err(|e| Error::os(e, what("cannot seek in")))?;
        Ok((
            FileAof {
                file,
                path: path.to_path_buf(),
                policy,
                dirty: false,
                last_sync: Instant::now(),
                syncs: 0,
                appended: 0,
            },
            replay,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sync_now(&mut self, now: Instant) -> Result<()> {
        self.file.sync_data().map_err(|e| {
            Error::os(
                e,
                format!("cannot sync the append-only file {}", self.path.display()),
            )
        })?;
        self.dirty = false;
        self.last_sync = now;
        self.syncs += 1;
        Ok(())
    }
}

impl AppendLog for FileAof {
    /// Writes (and under `always` syncs) before returning: the ticket is durable at once.
    fn append(&mut self, batch: &[u8]) -> Result<u64> {
        if batch.is_empty() {
            return Ok(self.appended);
        }
        self.file.write_all(batch).map_err(|e| {
            Error::os(
                e,
                format!(
                    "cannot append to the append-only file {} (is the disk full?)",
                    self.path.display()
                ),
            )
        })?;
        self.dirty = true;
        if self.policy == FsyncPolicy::Always {
            self.sync_now(Instant::now())?;
        }
        self.appended += 1;
        Ok(self.appended)
    }

    fn durable(&self) -> u64 {
        self.appended
    }

    fn poll(&mut self) -> Result<()> {
        Ok(())
    }

    fn wait(&mut self, _spin: bool) -> Result<()> {
        Ok(())
    }

    fn tick(&mut self, now: Instant) -> Result<()> {
        if self.policy == FsyncPolicy::EverySec
            && self.dirty
            && now.duration_since(self.last_sync) >= Duration::from_secs(1)
        {
            self.sync_now(now)?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.sync_now(Instant::now())?;
        }
        Ok(())
    }

    fn syncs(&self) -> u64 {
        self.syncs
    }

    fn policy(&self) -> FsyncPolicy {
        self.policy
    }
}

/// Syncs the directory holding `path`, so a newly created file's name is durable too.
fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::os(e, format!("cannot sync the directory {}", dir.display())))
}

// ----- the storage log ----------------------------------------------------------------------

/// Pool chunks (64 KiB each) for records being written, at least.
const LOG_POOL_CHUNKS: usize = 4096;
/// Room in a record beyond the largest request: the writes of one turn are appended once they
/// pass [`crate::server::COMMIT_EARLY`], so a batch is at most that plus one request.
const LOG_RECORD_SLACK: usize = 16 << 20;
/// Zeroed space kept written ahead of the last record (blocks layout).
const LOG_PREALLOCATE: u64 = 4 << 20;

/// The append-only file as a [`bypass_storage::Log`]: each batch of writes is one record with
/// a length, a sequence number and a CRC-32C, written through io_uring. Recovery stops at the
/// first torn or corrupt record, so a batch is replayed whole or not at all.
///
/// Under `always` a new file gets the log's blocks layout: every batch is one O_DIRECT write
/// with `RWF_DSYNC` into space the log has already filled with zeros, at a fresh 4 KiB block
/// (one write and one device cache flush per batch, no journal commit). Under `everysec` and
/// `no` a new file is packed, written through the page cache. An existing file keeps the
/// layout it has. A batch's ticket is its record's sequence number.
pub struct StorageLog {
    engine: Engine,
    log: Option<Log>,
    policy: FsyncPolicy,
    last_sync: Instant,
    syncs: u64,
    path: PathBuf,
    /// The last ticket (record sequence number) handed out.
    appended: u64,
}

use bypass_runtime::{BufferPool, PoolConfig};
use bypass_storage::{Engine, EngineConfig, Layout, Log, LogConfig, SyncPolicy};

fn storage_error(e: bypass_storage::Error, doing: String) -> Error {
    let kind = match e.errno() {
        Some(errno) => ErrorKind::from_errno(errno),
        None => ErrorKind::Io,
    };
    Error::new(kind, format!("{doing}: {e}"))
}

impl StorageLog {
    /// Opens (creating if needed) the log at `path`, replays the requests of every good record
    /// to `on_command` in order, and cuts off a torn or corrupt tail.
    pub fn open(
        path: &Path,
        policy: FsyncPolicy,
        limits: ParserLimits,
        mut on_command: impl FnMut(Command<'_>),
    ) -> Result<(StorageLog, Replay)> {
        let what = |doing: &str| format!("{doing} the append-only log {}", path.display());
        let max_record = limits.max_request.saturating_add(LOG_RECORD_SLACK);
        let chunks = LOG_POOL_CHUNKS.max(2 * max_record.div_ceil(64 << 10));
        let pool = BufferPool::new(&PoolConfig::large(chunks))
            .map_err(|e| Error::os(e, what("cannot map the write buffers of")))?;
        let config = EngineConfig {
            // The log file is not opened O_DIRECT; registering the pool buys nothing here.
            register_buffers: false,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(&config, pool)
            .map_err(|e| storage_error(e, what("cannot start io_uring for")))?;
        let sync = match policy {
            FsyncPolicy::Always => SyncPolicy::Always,
            // Synced by `tick`, which asks for a flush once a second.
            FsyncPolicy::EverySec => SyncPolicy::EveryN(u32::MAX),
            FsyncPolicy::No => SyncPolicy::Never,
        };
        let log_config = LogConfig {
            sync,
            max_record,
            max_pending: 1 << 16,
            layout: if policy == FsyncPolicy::Always {
                Layout::Blocks
            } else {
                Layout::Packed
            },
            preallocate: LOG_PREALLOCATE,
        };
        let mut commands = 0u64;
        let mut bad: Option<String> = None;
        let (log, recovery) = Log::open(&mut engine, path, log_config, |seq, payload| {
            if bad.is_some() {
                return;
            }
            let mut parser = Parser::new(limits);
            let mut input = payload;
            loop {
                match parser.next(&mut input) {
                    Ok(Some(cmd)) => {
                        on_command(cmd);
                        commands += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(format!("record {seq} holds a malformed request: {e}"));
                        return;
                    }
                }
            }
            if !parser.is_idle() {
                bad = Some(format!("record {seq} ends inside a request"));
            }
        })
        .map_err(|e| storage_error(e, what("cannot open")))?;
        if let Some(why) = bad {
            // A record whose checksum holds but whose content is not RESP was not written by
            // this server: refuse to guess.
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{}: {why}; it was not written by this server",
                    what("cannot replay")
                ),
            ));
        }
        let replay = Replay {
            commands,
            end: recovery.end,
            discarded: recovery.discarded,
            stop: recovery
                .stop
                .map(|r| format!("record at byte {}: {r:?}", recovery.end)),
        };
        Ok((
            StorageLog {
                engine,
                log: Some(log),
                policy,
                last_sync: Instant::now(),
                syncs: 0,
                path: path.to_path_buf(),
                appended: recovery.last_seq,
            },
            replay,
        ))
    }

    fn log(&mut self) -> &mut Log {
        self.log.as_mut().expect("the log is open until drop")
    }

    /// Takes completions and lets the log issue syncs and acknowledge records.
    fn process(&mut self) -> Result<()> {
        let path = self.path.display().to_string();
        self.engine
            .poll()
            .map_err(|e| storage_error(e, format!("io_uring failed under {path}")))?;
        let log = self.log.as_mut().expect("open");
        log.process(&mut self.engine)
            .map_err(|e| storage_error(e, format!("the append-only log {path} failed")))
    }

    /// Waits until every record appended so far is acknowledged.
    fn wait_all(&mut self) -> Result<()> {
        let last = self.log().next_seq() - 1;
        self.wait_until(last)
    }

    /// Drives the engine until record `seq` is acknowledged. Under `everysec` a flush is asked
    /// for on every round: a sync issued while later writes were still in flight does not
    /// cover them, and nothing else would ask for another.
    fn wait_until(&mut self, seq: u64) -> Result<()> {
        let path = self.path.display().to_string();
        loop {
            if self.policy == FsyncPolicy::EverySec {
                self.log().flush();
            }
            self.process()?;
            if self.log().durable() >= seq {
                return Ok(());
            }
            self.engine
                .wait(None)
                .map_err(|e| storage_error(e, format!("io_uring failed under {path}")))?;
        }
    }
}

impl AppendLog for StorageLog {
    fn append(&mut self, batch: &[u8]) -> Result<u64> {
        if batch.is_empty() {
            return Ok(self.appended);
        }
        let path = self.path.display().to_string();
        let seq = loop {
            let log = self.log.as_mut().expect("open");
            match log.append(&mut self.engine, batch) {
                Ok(seq) => break seq,
                Err(e) if e.kind() == bypass_storage::ErrorKind::Busy => {
                    // Too many records in flight: let the earlier ones finish first.
                    self.log().flush();
                    self.wait_all()?;
                }
                Err(e) => {
                    return Err(storage_error(
                        e,
                        format!("cannot append to the append-only log {path}"),
                    ))
                }
            }
        };
        self.appended = seq;
        if self.policy == FsyncPolicy::Always {
            self.syncs += 1;
        }
        // Hands the write to the kernel now.
        self.process()?;
        Ok(seq)
    }

    /// `always`: written and synced; `no`: written (to the page cache); `everysec`: at once
    /// (synced within a second by `tick`).
    fn durable(&self) -> u64 {
        match self.policy {
            FsyncPolicy::EverySec => self.appended,
            _ => self.log.as_ref().map_or(self.appended, |l| l.durable()),
        }
    }

    fn poll(&mut self) -> Result<()> {
        self.process()
    }

    fn wait(&mut self, spin: bool) -> Result<()> {
        let before = self.durable();
        let path = self.path.display().to_string();
        loop {
            self.process()?;
            if self.durable() > before || self.durable() >= self.appended {
                return Ok(());
            }
            let waited = if spin {
                self.engine.spin(None)
            } else {
                self.engine.wait(None)
            };
            waited.map_err(|e| storage_error(e, format!("io_uring failed under {path}")))?;
        }
    }

    fn tick(&mut self, now: Instant) -> Result<()> {
        if self.policy == FsyncPolicy::EverySec
            && now.duration_since(self.last_sync) >= Duration::from_secs(1)
        {
            self.last_sync = now;
            if self.log().pending() > 0 {
                self.log().flush();
                self.syncs += 1;
            }
        }
        self.process()
    }

    fn sync(&mut self) -> Result<()> {
        self.log().flush();
        self.wait_all()
    }

    fn syncs(&self) -> u64 {
        self.syncs
    }

    fn policy(&self) -> FsyncPolicy {
        self.policy
    }
}

impl Drop for StorageLog {
    fn drop(&mut self) {
        // Everything acknowledged first: `Log::close` waits with one flush only.
        let _ = self.wait_all();
        if let Some(log) = self.log.take() {
            if let Err(e) = log.close(&mut self.engine) {
                tracing::warn!(path = %self.path.display(), "closing the append-only log: {e}");
            }
        }
    }
}
