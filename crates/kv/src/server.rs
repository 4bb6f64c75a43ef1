//! The server: one event loop over the queue API, serving many connections.
//!
//! Every connection has at most one `pop` in flight. A turn of the loop takes every completion
//! the LibOs has ([`LibOs::wait_next_n`]), feeds popped bytes to the connection's parser,
//! executes each complete request in order and appends its reply to the connection's output.
//! Then the writes of the whole turn go to the append-only file in one append (one record and
//! one sync under `fsync always`), and each connection's output of the turn leaves in one
//! `push` once that append is durable: a pipelined burst of requests gets its replies in one
//! push, and no reply (not even a read's) leaves before every write appended before it is as
//! durable as promised.
//!
//! # Group commit
//!
//! The loop does not sit idle while an append is on its way to the disk, and the disk does not
//! sit idle while the loop sends replies. While an append is in flight the loop sleeps on the
//! append-only file, not on the network: requests that arrive meanwhile wait in the kernel's
//! socket buffers (or the LibOs's rings). The moment the append is durable the loop takes every
//! request that has arrived, executes them, issues the *next* append covering all their writes,
//! and only then sends the replies the finished append released. So one sync is in flight
//! almost all the time under load, each covering everything that arrived during the previous
//! one, as redis-server does with its one `fsync` per event-loop iteration, except that the
//! replies go out while the next sync is already running.
//!
//! # Limits
//!
//! Requests are bounded by the parser's [`ParserLimits`]. Replies are bounded per connection by
//! [`ServerLimits::max_output`]: while more reply bytes than that are in flight, the connection
//! is not read, so a client that sends without reading stalls itself, not the server.
//!
//! # Failures
//!
//! A connection's error (reset, a full pool for its reply) closes that connection only. An
//! append-only file that cannot be written or synced stops the server with that error: a write
//! that cannot be made durable is never acknowledged.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bypass::{
    Error, ErrorKind, LibOs, PollMode, QDesc, QDescMap, QResult, QToken, QValue, Result, SocketKind,
};

use crate::aof::{AofFormat, AppendLog, FileAof, FsyncPolicy, Replay, StorageLog};
use crate::command::{Db, Effects, Flow, ServerEnv};
use crate::resp::{self, Command, Parser, ParserLimits};
use crate::stats::Stats;

/// Where and how the server keeps its append-only file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AofOptions {
    pub path: PathBuf,
    pub fsync: FsyncPolicy,
    pub format: AofFormat,
}

/// Limits of a server, fixed at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// What one connection's request parser may hold.
    pub parser: ParserLimits,
    /// Connections served at once; more are answered with an error and closed.
    pub max_clients: usize,
    /// Reply bytes in flight on one connection before it stops being read.
    pub max_output: usize,
    /// Completions taken per turn of the event loop.
    pub max_batch: usize,
    /// Expired keys removed per sweep (one sweep every [`SWEEP_PERIOD`]).
    pub sweep_budget: usize,
}

impl Default for ServerLimits {
    fn default() -> ServerLimits {
        ServerLimits {
            parser: ParserLimits::default(),
            max_clients: 10_000,
            max_output: 16 << 20,
            max_batch: 1024,
            sweep_budget: 10_000,
        }
    }
}

/// How often expired keys are swept and the append-only file's timer runs.
pub const SWEEP_PERIOD: Duration = Duration::from_millis(100);
/// Logged writes of one turn beyond which they are appended at once rather than at the end of
/// the turn: an append holds at most this plus one connection's request.
pub const COMMIT_EARLY: usize = 8 << 20;
/// Longest a turn of the loop waits for a completion before checking the stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// Everything [`serve`] needs.
pub struct ServeOptions<'a> {
    /// Address to listen on; port 0 picks a free one (see [`Stats::port`]).
    pub listen: SocketAddrV4,
    pub aof: Option<AofOptions>,
    pub limits: ServerLimits,
    /// The server returns soon after this becomes true.
    pub stop: &'a AtomicBool,
    /// Counters to update; a fresh set if `None`.
    pub stats: Option<Arc<Stats>>,
}

/// What a server did, returned when it stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub connections: u64,
    pub commands: u64,
    pub keys: u64,
    /// What replay found in the append-only file at start.
    pub replay: Option<Replay>,
}

/// Listens on `opts.listen` with `libos`, replays the append-only file if there is one, and
/// serves until `opts.stop` is set. Runs on the calling thread (a LibOs is single-threaded).
pub fn serve(libos: &mut LibOs, opts: ServeOptions<'_>) -> Result<Summary> {
    let stop = opts.stop;
    Server::bind(libos, opts)?.run(libos, stop)
}

/// How far [`Server::feed`] got.
enum Fed {
    /// Every byte was consumed.
    All,
    /// Replies are backed up; the rest waits in the backlog.
    Paused,
    /// The connection is closing; the rest is dropped.
    Stopped,
}

/// One connection.
struct Conn {
    qd: QDesc,
    parser: Parser,
    /// Replies not yet pushed.
    out: Vec<u8>,
    /// Sizes of the pushes in flight, in issue order (a stream's pushes complete in order).
    pushes: VecDeque<usize>,
    /// Bytes in `pushes`.
    in_flight: usize,
    /// A pop is in flight.
    reading: bool,
    /// Send what is queued, then close (QUIT, a protocol error, or the peer finished).
    closing: bool,
    /// `parser.buffered()` as last added to the stats.
    buffered: usize,
    /// Counted in `connected_clients` (not refused at accept).
    admitted: bool,
    /// Listed in `Server::dirty`.
    marked: bool,
    /// Bytes read but not yet parsed, held back while replies are backed up (at most one
    /// pop's worth: no pop is issued while it is not empty).
    backlog: Vec<u8>,
    /// The peer closed its sending side: close once the backlog is served.
    peer_done: bool,
    /// Replies waiting for an append to become durable: (ticket, bytes), in order.
    held: VecDeque<(u64, Vec<u8>)>,
    /// Bytes in `held`.
    held_bytes: usize,
    /// Listed in `Server::holding`.
    holding: bool,
}

impl Conn {
    /// Reply bytes queued, held or in flight.
    fn output(&self) -> usize {
        self.in_flight + self.held_bytes + self.out.len()
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: QDesc,
    addr: SocketAddrV4,
    limits: ServerLimits,
    db: Db,
    aof: Option<Box<dyn AppendLog>>,
    /// Writes of the current turn, waiting for the append-only file.
    log: Vec<u8>,
    conns: QDescMap<Conn>,
    /// Connections with replies or state changes this turn.
    dirty: Vec<QDesc>,
    /// Connections with held replies.
    holding: Vec<QDesc>,
    /// Ticket of the last append: replies produced now wait until it is durable.
    gate: u64,
    accept: Option<QToken>,
    stats: Arc<Stats>,
    started: Instant,
    /// The libOS serving the connections, for INFO.
    libos: &'static str,
    replay: Option<Replay>,
}

impl Server {
    /// Replays the append-only file (if any) and starts listening.
    pub fn bind(libos: &mut LibOs, opts: ServeOptions<'_>) -> Result<Server> {
        let stats = opts.stats.unwrap_or_default();
        let started = Instant::now();
        let mut db = Db::new();
        let mut replay = None;
        let aof: Option<Box<dyn AppendLog>> = match &opts.aof {
            None => None,
            Some(a) => {
                let now = unix_ms();
                let env = ServerEnv {
                    stats: &stats,
                    libos: libos.name().as_str(),
                    started,
                    aof_fsync: Some(a.fsync.as_str()),
                };
                let mut scratch = Vec::new();
                let replay_one = |cmd: Command<'_>| {
                    scratch.clear();
                    let mut fx = Effects {
                        reply: &mut scratch,
                        log: None,
                    };
                    db.execute(cmd, now, &env, &mut fx);
                };
                let (file, found): (Box<dyn AppendLog>, Replay) = match a.format {
                    AofFormat::Log => {
                        let (log, found) =
                            StorageLog::open(&a.path, a.fsync, opts.limits.parser, replay_one)?;
                        (Box::new(log), found)
                    }
                    AofFormat::Resp => {
                        let (file, found) =
                            FileAof::open(&a.path, a.fsync, opts.limits.parser, replay_one)?;
                        (Box::new(file), found)
                    }
                };
                if let Some(why) = &found.stop {
                    tracing::warn!(
                        path = %a.path.display(),
                        discarded = found.discarded,
                        "append-only file replay stopped early: {why}; the tail was cut off"
                    );
                }
                Stats::set(&stats.aof_replayed, found.commands);
                replay = Some(found);
                Some(file)
            }
        };
        let listener = libos.socket(SocketKind::Stream)?;
        let bound = libos
            .bind(listener, opts.listen)
            .and_then(|()| libos.listen(listener, 1024))
            .and_then(|()| libos.local_addr(listener));
        let addr = match bound {
            Ok(a) => a,
            Err(e) => {
                let _ = libos.close(listener);
                return Err(Error::new(
                    e.kind(),
                    format!("cannot listen on {}: {e}", opts.listen),
                ));
            }
        };
        Stats::set(&stats.port, u64::from(addr.port()));
        Stats::set(&stats.keys, db.store.len() as u64);
        Ok(Server {
            listener,
            addr,
            limits: opts.limits,
            db,
            aof,
            log: Vec::new(),
            conns: QDescMap::default(),
            dirty: Vec::new(),
            holding: Vec::new(),
            gate: 0,
            accept: None,
            stats,
            started,
            libos: libos.name().as_str(),
            replay,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The server's live counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until `stop` is set; then closes every connection, syncs the append-only file,
    /// and returns what it did.
    pub fn run(mut self, libos: &mut LibOs, stop: &AtomicBool) -> Result<Summary> {
        let result = self.event_loop(libos, stop);
        let closed = self.shut_down(libos);
        result.and(closed)?;
        Ok(Summary {
            connections: Stats::get(&self.stats.total_connections),
            commands: Stats::get(&self.stats.total_commands),
            keys: self.db.store.len() as u64,
            replay: self.replay,
        })
    }

    fn event_loop(&mut self, libos: &mut LibOs, stop: &AtomicBool) -> Result<()> {
        self.accept = Some(libos.accept(self.listener)?);
        let mut batch: Vec<QResult> = Vec::with_capacity(self.limits.max_batch);
        let mut next_sweep = Instant::now() + SWEEP_PERIOD;
        while !stop.load(Ordering::Relaxed) {
            if let Some(aof) = self.aof.as_mut().filter(|a| a.durable() < self.gate) {
                // An append is on its way: sleep on it, then take everything that arrived
                // meanwhile (see "Group commit" in the module docs).
                aof.wait(libos.config().poll == PollMode::Spin)?;
                let collect = |r: QResult| {
                    batch.push(r);
                    true
                };
                match libos.wait_next_n(self.limits.max_batch, Some(Duration::ZERO), collect) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::TimedOut => {}
                    Err(e) => return Err(e),
                }
                self.turn(libos, &mut batch)?;
                continue;
            }
            let collect = |r: QResult| {
                batch.push(r);
                true
            };
            match libos.wait_next_n(1, Some(IDLE_WAIT), collect) {
                Ok(_) => {
                    let more = self.limits.max_batch.saturating_sub(1);
                    if more > 0 {
                        let collect = |r: QResult| {
                            batch.push(r);
                            true
                        };
                        match libos.wait_next_n(more, Some(Duration::ZERO), collect) {
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::TimedOut => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
            self.turn(libos, &mut batch)?;
            let tick = Instant::now();
            if tick >= next_sweep {
                next_sweep = tick + SWEEP_PERIOD;
                self.db.store.sweep(unix_ms(), self.limits.sweep_budget);
                if let Some(aof) = &mut self.aof {
                    aof.tick(tick)?;
                    Stats::set(&self.stats.aof_syncs, aof.syncs());
                }
            }
            Stats::set(&self.stats.keys, self.db.store.len() as u64);
            Stats::set(&self.stats.data_bytes, self.db.store.bytes() as u64);
            Stats::set(&self.stats.expired_keys, self.db.store.expired());
        }
        Ok(())
    }

    /// Handles a turn's completions, appends its writes, sends the replies whose appends are
    /// durable and holds the others.
    fn turn(&mut self, libos: &mut LibOs, batch: &mut Vec<QResult>) -> Result<()> {
        let now = unix_ms();
        for r in batch.drain(..) {
            self.complete(libos, r, now)?;
        }
        // The next append is issued before the replies the last one released are sent.
        self.commit()?;
        self.release(libos)?;
        self.flush(libos);
        Ok(())
    }

    /// Sends the held replies whose appends are durable.
    fn release(&mut self, libos: &mut LibOs) -> Result<()> {
        if self.holding.is_empty() {
            return Ok(());
        }
        let durable = match &mut self.aof {
            Some(aof) => {
                aof.poll()?;
                aof.durable()
            }
            None => u64::MAX,
        };
        let holding = std::mem::take(&mut self.holding);
        for &qd in &holding {
            let Some(c) = self.conns.get_mut(&qd) else {
                continue;
            };
            let mut result = Ok(());
            while c.held.front().is_some_and(|(ticket, _)| *ticket <= durable) {
                let (_, bytes) = c.held.pop_front().expect("front exists");
                c.held_bytes -= bytes.len();
                if result.is_ok() {
                    result = push_output(libos, c, &self.stats, &bytes);
                }
            }
            if let Err(e) = result {
                tracing::warn!("closing {qd}: {e}");
                self.close(libos, qd);
                continue;
            }
            if c.held.is_empty() {
                c.holding = false;
                // Closing and reading depend on what is held: look at it again this turn.
                self.mark(qd);
            } else {
                self.holding.push(qd);
            }
        }
        Ok(())
    }

    /// Handles one completion.
    fn complete(&mut self, libos: &mut LibOs, r: QResult, now: u64) -> Result<()> {
        if r.qd == self.listener {
            self.accept = None;
            match r.value {
                QValue::Accepted { qd, .. } => self.open(qd),
                QValue::Failed(e) => tracing::warn!("accept failed: {e}"),
                other => tracing::warn!("accept completed with {other:?}"),
            }
            self.accept = Some(libos.accept(self.listener)?);
            return Ok(());
        }
        let qd = r.qd;
        if !self.conns.contains_key(&qd) {
            // A completion of a connection closed earlier (cancelled operations).
            return Ok(());
        }
        match r.value {
            QValue::Popped { sga, .. } => {
                self.conn(qd).reading = false;
                let mut paused = false;
                for seg in sga.segments() {
                    if paused {
                        // Bounded: no pop is issued while a backlog waits.
                        self.conn(qd).backlog.extend_from_slice(seg);
                        continue;
                    }
                    match self.feed(qd, seg, now) {
                        Fed::All => {}
                        Fed::Paused => paused = true,
                        Fed::Stopped => break,
                    }
                }
                self.note_buffered(qd);
                self.mark(qd);
                if self.log.len() >= COMMIT_EARLY {
                    // Keep one append (one record of the log) bounded; the replies still wait
                    // for the end of the turn.
                    self.commit()?;
                }
            }
            QValue::EndOfStream => {
                let c = self.conn(qd);
                c.reading = false;
                c.peer_done = true;
                self.mark(qd);
            }
            QValue::Pushed { bytes } => {
                let max_output = self.limits.max_output;
                let c = self.conns.get_mut(&qd).expect("connection is open");
                let sent = c
                    .pushes
                    .pop_front()
                    .expect("a push completed, so one was in flight");
                debug_assert_eq!(sent, bytes, "a push completes whole");
                c.in_flight -= sent;
                let resume = !c.backlog.is_empty() && !c.closing && c.output() <= max_output;
                let backlog = if resume {
                    std::mem::take(&mut c.backlog)
                } else {
                    Vec::new()
                };
                Stats::sub(&self.stats.output_in_flight, sent as u64);
                if resume {
                    // Resume the requests that were read but held back.
                    self.feed(qd, &backlog, now);
                    self.note_buffered(qd);
                    if self.log.len() >= COMMIT_EARLY {
                        self.commit()?;
                    }
                }
                self.mark(qd);
            }
            QValue::Failed(e) => {
                if e.kind() != ErrorKind::ConnectionReset {
                    tracing::debug!("closing {qd}: {e}");
                }
                self.close(libos, qd);
            }
            other => {
                tracing::warn!("closing {qd}: unexpected completion {other:?}");
                self.close(libos, qd);
            }
        }
        Ok(())
    }

    fn conn(&mut self, qd: QDesc) -> &mut Conn {
        self.conns.get_mut(&qd).expect("connection is open")
    }

    fn mark(&mut self, qd: QDesc) {
        let c = self.conn(qd);
        if !c.marked {
            c.marked = true;
            self.dirty.push(qd);
        }
    }

    fn open(&mut self, qd: QDesc) {
        Stats::add(&self.stats.total_connections, 1);
        let mut conn = Conn {
            qd,
            parser: Parser::new(self.limits.parser),
            out: Vec::new(),
            pushes: VecDeque::new(),
            in_flight: 0,
            reading: false,
            closing: false,
            buffered: 0,
            admitted: false,
            marked: false,
            backlog: Vec::new(),
            peer_done: false,
            held: VecDeque::new(),
            held_bytes: 0,
            holding: false,
        };
        if self.conns.len() >= self.limits.max_clients {
            Stats::add(&self.stats.rejected_connections, 1);
            resp::error(&mut conn.out, "ERR max number of clients reached");
            conn.closing = true;
        } else {
            conn.admitted = true;
            Stats::add(&self.stats.connected_clients, 1);
        }
        self.conns.insert(qd, conn);
        self.mark(qd);
    }

    /// Parses and executes the requests `input` completes, in order. Stops early when the
    /// connection closes, or when its replies exceed `max_output` (the rest of `input` waits in
    /// the connection's backlog until pushes complete).
    fn feed(&mut self, qd: QDesc, mut input: &[u8], now: u64) -> Fed {
        let env = ServerEnv {
            stats: &self.stats,
            libos: self.libos,
            started: self.started,
            aof_fsync: self.aof.as_ref().map(|a| a.policy().as_str()),
        };
        let conn = self.conns.get_mut(&qd).expect("connection is open");
        if conn.closing {
            return Fed::Stopped;
        }
        let mut fed = Fed::All;
        let mut commands = 0;
        loop {
            if conn.output() > self.limits.max_output && !input.is_empty() {
                debug_assert!(
                    conn.backlog.is_empty(),
                    "a backlog is fed whole or kept whole"
                );
                conn.backlog.extend_from_slice(input);
                fed = Fed::Paused;
                break;
            }
            match conn.parser.next(&mut input) {
                Ok(Some(cmd)) => {
                    commands += 1;
                    let mut fx = Effects {
                        reply: &mut conn.out,
                        log: self.aof.is_some().then_some(&mut self.log),
                    };
                    if self.db.execute(cmd, now, &env, &mut fx) == Flow::Close {
                        conn.closing = true;
                        fed = Fed::Stopped;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    resp::error(&mut conn.out, &format!("ERR {e}"));
                    Stats::add(&self.stats.protocol_errors, 1);
                    conn.closing = true;
                    fed = Fed::Stopped;
                    break;
                }
            }
        }
        Stats::add(&self.stats.total_commands, commands);
        fed
    }

    /// Brings the input-buffer counters up to date with a connection's parser and backlog.
    fn note_buffered(&mut self, qd: QDesc) {
        let stats = self.stats.clone();
        let c = self.conn(qd);
        let buffered = c.parser.buffered() + c.backlog.capacity();
        Stats::raise(&stats.peak_input_buffered, buffered as u64);
        Stats::add(&stats.input_buffered, buffered as u64);
        Stats::sub(&stats.input_buffered, c.buffered as u64);
        c.buffered = buffered;
    }

    /// Appends the writes of this turn to the append-only file (syncing as the policy says)
    /// before any of their replies leaves.
    fn commit(&mut self) -> Result<()> {
        if self.log.is_empty() {
            return Ok(());
        }
        let aof = self
            .aof
            .as_mut()
            .expect("writes are logged only with an append-only file");
        self.gate = aof.append(&self.log)?;
        Stats::add(&self.stats.aof_appends, 1);
        Stats::set(&self.stats.aof_syncs, aof.syncs());
        self.log.clear();
        Ok(())
    }

    /// Pushes queued replies, re-arms reading, and closes finished connections.
    fn flush(&mut self, libos: &mut LibOs) {
        let dirty = std::mem::take(&mut self.dirty);
        for &qd in &dirty {
            if let Err(e) = self.flush_one(libos, qd) {
                tracing::warn!("closing {qd}: {e}");
                self.close(libos, qd);
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    fn flush_one(&mut self, libos: &mut LibOs, qd: QDesc) -> Result<()> {
        let max_output = self.limits.max_output;
        let durable = self.aof.as_ref().map_or(u64::MAX, |a| a.durable());
        let Some(c) = self.conns.get_mut(&qd) else {
            return Ok(());
        };
        c.marked = false;
        if !c.out.is_empty() {
            if self.gate > durable || !c.held.is_empty() {
                // Wait for the append of this turn (or an earlier one still held here).
                let out = std::mem::take(&mut c.out);
                c.held_bytes += out.len();
                c.held.push_back((self.gate, out));
                if !c.holding {
                    c.holding = true;
                    self.holding.push(qd);
                }
            } else {
                let mut out = std::mem::take(&mut c.out);
                push_output(libos, c, &self.stats, &out)?;
                out.clear();
                c.out = out;
                if c.out.capacity() > 1 << 20 {
                    c.out = Vec::new();
                }
            }
        }
        if c.peer_done && c.backlog.is_empty() {
            c.closing = true;
        }
        if c.closing {
            if c.pushes.is_empty() && c.held.is_empty() {
                self.close(libos, qd);
            }
        } else if !c.reading
            && !c.peer_done
            && c.backlog.is_empty()
            && c.in_flight + c.held_bytes <= max_output
        {
            libos.pop(qd)?;
            c.reading = true;
        }
        Ok(())
    }

    fn close(&mut self, libos: &mut LibOs, qd: QDesc) {
        let Some(c) = self.conns.remove(&qd) else {
            return;
        };
        if c.admitted {
            Stats::sub(&self.stats.connected_clients, 1);
        }
        Stats::sub(&self.stats.input_buffered, c.buffered as u64);
        Stats::sub(&self.stats.output_in_flight, c.in_flight as u64);
        if let Err(e) = libos.close(qd) {
            tracing::debug!("close {qd}: {e}");
        }
    }

    fn shut_down(&mut self, libos: &mut LibOs) -> Result<()> {
        let open: Vec<QDesc> = self.conns.keys().copied().collect();
        for qd in open {
            self.close(libos, qd);
        }
        let _ = libos.close(self.listener);
        // Take the cancelled operations' completions so the LibOs is left clean.
        let _ = libos.wait_next_n(usize::MAX, Some(Duration::ZERO), |_| true);
        match &mut self.aof {
            Some(aof) => aof.sync(),
            None => Ok(()),
        }
    }
}

/// Pushes `bytes` to the connection in pieces of at most the LibOs's largest push.
fn push_output(libos: &mut LibOs, c: &mut Conn, stats: &Stats, bytes: &[u8]) -> Result<()> {
    let max_push = libos.config().limits.max_push_bytes;
    for piece in bytes.chunks(max_push) {
        let sga = libos.sga_from_slice(piece)?;
        libos.push(c.qd, sga)?;
        c.pushes.push_back(piece.len());
        c.in_flight += piece.len();
        Stats::add(&stats.output_in_flight, piece.len() as u64);
    }
    Ok(())
}

/// Wall-clock milliseconds since the Unix epoch (expiry times are wall-clock, as in Redis).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
