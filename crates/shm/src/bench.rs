//! `bypass bench shm`: the shared-memory queue against its physical floor and the kernel's IPC.
//!
//! [`run`] measures, between two threads pinned to two different cores, both busy-polling:
//!
//! - the round trip of a 64 B message over a [`Channel`] (one thread sends, the other echoes
//!   the message back), and the same with the echo dropping each message and answering with a
//!   new one of its own (a fresh reply);
//! - the round trip of a raw cache-line ping-pong (two atomic words, no queue at all): the floor
//!   any shared-memory queue sits on;
//! - the round trip of 64 B over a Unix domain socket pair and over a pair of pipes, with
//!   non-blocking reads spinning on `EAGAIN`;
//! - one-way throughput over a channel: 64 B messages per second, and GB/s with 64 KiB
//!   messages (the sender writes each message into the arena, the receiver reads every byte);
//! - the CPU time per message with both ends on one thread (the queue's software cost).
//!
//! The report prints as a table ([`std::fmt::Display`]) or as JSON ([`BenchReport::to_json`]).

use std::fmt;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bypass_runtime::Sga;
use hdrhistogram::Histogram;

use crate::{Channel, ChannelConfig, Error, ErrorKind, TrySendError};

/// What to measure, and how long.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Round trips timed per latency row (after `warmup` untimed ones).
    pub round_trips: u64,
    pub warmup: u64,
    /// Messages sent for the 64 B throughput row.
    pub small_messages: u64,
    /// Bytes sent for the 64 KiB throughput row.
    pub bulk_bytes: u64,
    /// The two cores; `None` picks the first two this process may run on.
    pub cores: Option<(usize, usize)>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            round_trips: 200_000,
            warmup: 20_000,
            small_messages: 5_000_000,
            bulk_bytes: 4 << 30,
            cores: None,
        }
    }
}

impl BenchOptions {
    /// A run of a second or so, for tests and smoke checks.
    pub fn quick() -> BenchOptions {
        BenchOptions {
            round_trips: 5_000,
            warmup: 1_000,
            small_messages: 200_000,
            bulk_bytes: 64 << 20,
            cores: None,
        }
    }
}

/// Round-trip latency of one path.
#[derive(Clone, Debug, PartialEq)]
pub struct LatencyRow {
    pub path: &'static str,
    pub samples: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// One-way throughput of one message size.
#[derive(Clone, Debug, PartialEq)]
pub struct ThroughputRow {
    pub path: &'static str,
    pub message_bytes: usize,
    pub messages: u64,
    pub seconds: f64,
}

impl ThroughputRow {
    pub fn messages_per_sec(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
    pub fn gbytes_per_sec(&self) -> f64 {
        self.messages as f64 * self.message_bytes as f64 / self.seconds / 1e9
    }
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub cores: (usize, usize),
    pub latency: Vec<LatencyRow>,
    pub throughput: Vec<ThroughputRow>,
    /// CPU ns per 64 B message with both ends on one thread (see the table's last line).
    pub one_thread_ns_per_message: f64,
}

impl BenchReport {
    fn p50(&self, path: &str) -> Option<u64> {
        self.latency
            .iter()
            .find(|r| r.path == path)
            .map(|r| r.p50_ns)
    }

    /// shm round trip p50 over the raw cache-line floor (target: at most 2).
    pub fn ratio_to_floor(&self) -> Option<f64> {
        Some(self.p50(SHM)? as f64 / self.p50(RAW)?.max(1) as f64)
    }

    /// shm round trip p50 over the Unix socket's (target: at most 0.05).
    pub fn ratio_to_unix(&self) -> Option<f64> {
        Some(self.p50(SHM)? as f64 / self.p50(UNIX)?.max(1) as f64)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        let mut s = format!(
            "{{\"cores\":[{},{}],\"latency\":[",
            self.cores.0, self.cores.1
        );
        for (i, r) in self.latency.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"path\":\"{}\",\"samples\":{},\"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"max_ns\":{}}}",
                r.path, r.samples, r.p50_ns, r.p99_ns, r.p999_ns, r.max_ns
            ));
        }
        s.push_str("],\"throughput\":[");
        for (i, r) in self.throughput.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"path\":\"{}\",\"message_bytes\":{},\"messages\":{},\"seconds\":{:.6},\"messages_per_sec\":{:.0},\"gbytes_per_sec\":{:.3}}}",
                r.path,
                r.message_bytes,
                r.messages,
                r.seconds,
                r.messages_per_sec(),
                r.gbytes_per_sec()
            ));
        }
        s.push(']');
        s.push_str(&format!(
            ",\"one_thread_ns_per_message\":{:.1}",
            self.one_thread_ns_per_message
        ));
        let num = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.4}"));
        s.push_str(&format!(
            ",\"ratio_to_floor\":{},\"ratio_to_unix\":{}}}",
            num(self.ratio_to_floor()),
            num(self.ratio_to_unix())
        ));
        s
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: u64| ns as f64 / 1000.0;
        writeln!(
            f,
            "64 B round trip, cores {} and {}, busy-polling",
            self.cores.0, self.cores.1
        )?;
        writeln!(
            f,
            "| path | samples | p50 µs | p99 µs | p99.9 µs | max µs |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        for r in &self.latency {
            writeln!(
                f,
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.1} |",
                r.path,
                r.samples,
                us(r.p50_ns),
                us(r.p99_ns),
                us(r.p999_ns),
                us(r.max_ns)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "One-way throughput")?;
        writeln!(f, "| path | message | messages | messages/s | GB/s |")?;
        writeln!(f, "|---|---|---|---|---|")?;
        for r in &self.throughput {
            writeln!(
                f,
                "| {} | {} B | {} | {:.2} M | {:.2} |",
                r.path,
                r.message_bytes,
                r.messages,
                r.messages_per_sec() / 1e6,
                r.gbytes_per_sec()
            )?;
        }
        writeln!(
            f,
            "\nCPU per 64 B message, both ends on one thread in batches of 32 (send + receive, \
             both copies included): {:.0} ns",
            self.one_thread_ns_per_message
        )?;
        if let (Some(floor), Some(unix)) = (self.ratio_to_floor(), self.ratio_to_unix()) {
            writeln!(f)?;
            writeln!(
                f,
                "shm p50 = {floor:.2} x the cache-line floor (target <= 2), {unix:.3} x the Unix socket (target <= 0.05)"
            )?;
        }
        Ok(())
    }
}

const SHM: &str = "shm channel";
const SHM_FRESH: &str = "shm channel, fresh reply";
const RAW: &str = "raw cache-line ping-pong";
const UNIX: &str = "unix socket pair";
const PIPE: &str = "pipe pair";
const MSG: usize = 64;

/// Runs every measurement and returns the report.
///
/// The calling thread is pinned to the first core while it measures, and gets its former CPU
/// set back before this returns.
pub fn run(opts: &BenchOptions) -> Result<BenchReport, Error> {
    let before =
        rustix::thread::sched_getaffinity(None).map_err(|e| Error::os("sched_getaffinity", e))?;
    let report = measure(opts);
    let _ = rustix::thread::sched_setaffinity(None, &before);
    report
}

fn measure(opts: &BenchOptions) -> Result<BenchReport, Error> {
    let cores = match opts.cores {
        Some(c) => c,
        None => default_cores()?,
    };
    let latency = vec![
        shm_round_trips(SHM, opts, cores, true)?,
        shm_round_trips(SHM_FRESH, opts, cores, false)?,
        raw_round_trips(opts, cores)?,
        stream_round_trips(UNIX, opts, cores, unix_pair()?)?,
        stream_round_trips(PIPE, opts, cores, pipe_pair()?)?,
    ];
    let throughput = vec![
        shm_throughput(cores, MSG, opts.small_messages)?,
        shm_throughput(cores, 64 << 10, (opts.bulk_bytes >> 16).max(1))?,
    ];
    let one_thread_ns_per_message = one_thread_cost(opts.small_messages)?;
    Ok(BenchReport {
        cores,
        latency,
        throughput,
        one_thread_ns_per_message,
    })
}

fn default_cores() -> Result<(usize, usize), Error> {
    let set =
        rustix::thread::sched_getaffinity(None).map_err(|e| Error::os("sched_getaffinity", e))?;
    let allowed: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .take(2)
        .collect();
    match allowed[..] {
        [a, b] => Ok((a, b)),
        [a] => Ok((a, a)),
        _ => Err(Error::new(ErrorKind::Os, "this process may run on no CPU")),
    }
}

fn pin(core: usize) -> Result<(), Error> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(core);
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| Error::os(&format!("pinning a thread to CPU {core}"), e))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static histogram bounds")
}

fn row(path: &'static str, h: &Histogram<u64>) -> LatencyRow {
    LatencyRow {
        path,
        samples: h.len(),
        p50_ns: h.value_at_quantile(0.5),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    }
}

fn bench_name(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bench-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn join<T>(h: std::thread::JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    h.join()
        .unwrap_or_else(|_| Err(Error::new(ErrorKind::Os, "a benchmark thread panicked")))
}

fn small_config() -> ChannelConfig {
    ChannelConfig {
        ring_slots: 1024,
        chunk_size: 2048,
        chunks: 4096,
        headroom: 0,
    }
}

/// With `echo_copies`, the echo side sends back the message it received (64 B travel inline,
/// so the echo copies them out of one ring slot and into another: it reads them); without, it
/// drops each message and answers with a new 64 B message of its own.
fn shm_round_trips(
    path: &'static str,
    opts: &BenchOptions,
    cores: (usize, usize),
    echo_copies: bool,
) -> Result<LatencyRow, Error> {
    let name = bench_name("rtt");
    let mut ch = Channel::create(&name, &small_config())?;
    let echo = std::thread::spawn({
        let name = name.clone();
        move || -> Result<(), Error> {
            pin(cores.1)?;
            let mut ch = Channel::open(&name, Duration::from_secs(5))?;
            let reply = [0x5Au8; MSG];
            loop {
                match ch.recv(None) {
                    Ok(msg) if echo_copies => ch.send(msg, None)?,
                    Ok(msg) => {
                        drop(msg);
                        let mut buf = loop {
                            if let Some(b) = ch.alloc() {
                                break b;
                            }
                        };
                        buf.extend_from_slice(&reply);
                        ch.send(Sga::from(buf), None)?;
                    }
                    Err(e) if e.kind() == ErrorKind::PeerClosed => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    });
    pin(cores.0)?;
    let payload = [0xA5u8; MSG];
    let mut h = histogram();
    for i in 0..opts.warmup + opts.round_trips {
        let start = Instant::now();
        let mut buf = loop {
            if let Some(b) = ch.alloc() {
                break b;
            }
        };
        buf.extend_from_slice(&payload);
        ch.send(Sga::from(buf), None)?;
        let back = ch.recv(Some(Duration::from_secs(10)))?;
        let ns = start.elapsed().as_nanos() as u64;
        debug_assert_eq!(back.len(), MSG);
        drop(back);
        if i >= opts.warmup {
            h.saturating_record(ns);
        }
    }
    drop(ch);
    join(echo)?;
    Ok(row(path, &h))
}

/// Two words on their own cache lines: the pinger writes `i` to `ping`, the ponger copies it
/// to `pong`.
#[repr(C, align(128))]
struct Line(AtomicU64);

fn raw_round_trips(opts: &BenchOptions, cores: (usize, usize)) -> Result<LatencyRow, Error> {
    let lines = Arc::new([Line(AtomicU64::new(0)), Line(AtomicU64::new(0))]);
    let total = opts.warmup + opts.round_trips;
    let ponger = std::thread::spawn({
        let lines = lines.clone();
        move || -> Result<(), Error> {
            pin(cores.1)?;
            let mut seen = 0;
            while seen < total {
                let v = lines[0].0.load(Ordering::Acquire);
                if v != seen {
                    lines[1].0.store(v, Ordering::Release);
                    seen = v;
                } else {
                    std::hint::spin_loop();
                }
            }
            Ok(())
        }
    });
    pin(cores.0)?;
    let mut h = histogram();
    for i in 1..=total {
        let start = Instant::now();
        lines[0].0.store(i, Ordering::Release);
        while lines[1].0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        let ns = start.elapsed().as_nanos() as u64;
        if i > opts.warmup {
            h.saturating_record(ns);
        }
    }
    join(ponger)?;
    Ok(row(RAW, &h))
}

/// A byte stream both ways: (this side's reader, this side's writer, the echo side's reader,
/// the echo side's writer).
type Streams = (
    Box<dyn Read + Send>,
    Box<dyn Write + Send>,
    Box<dyn Read + Send>,
    Box<dyn Write + Send>,
);

fn unix_pair() -> Result<Streams, Error> {
    let (a, b) = UnixStream::pair().map_err(|e| Error::os("socketpair", e))?;
    for s in [&a, &b] {
        s.set_nonblocking(true)
            .map_err(|e| Error::os("setting O_NONBLOCK", e))?;
    }
    let a2 = a.try_clone().map_err(|e| Error::os("dup", e))?;
    let b2 = b.try_clone().map_err(|e| Error::os("dup", e))?;
    Ok((Box::new(a), Box::new(a2), Box::new(b), Box::new(b2)))
}

fn pipe_pair() -> Result<Streams, Error> {
    use rustix::pipe::{pipe_with, PipeFlags};
    let (to_echo_r, to_echo_w) =
        pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe", e))?;
    let (to_me_r, to_me_w) =
        pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC).map_err(|e| Error::os("pipe", e))?;
    Ok((
        Box::new(std::fs::File::from(to_me_r)),
        Box::new(std::fs::File::from(to_echo_w)),
        Box::new(std::fs::File::from(to_echo_r)),
        Box::new(std::fs::File::from(to_me_w)),
    ))
}

/// Reads exactly `buf.len()` bytes, spinning on `EAGAIN`. `Ok(false)` at end of stream.
fn spin_read(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == IoKind::WouldBlock || e.kind() == IoKind::Interrupted => {
                std::hint::spin_loop()
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn spin_write(w: &mut dyn Write, buf: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match w.write(&buf[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == IoKind::WouldBlock || e.kind() == IoKind::Interrupted => {
                std::hint::spin_loop()
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn stream_round_trips(
    path: &'static str,
    opts: &BenchOptions,
    cores: (usize, usize),
    streams: Streams,
) -> Result<LatencyRow, Error> {
    let (mut my_r, mut my_w, mut echo_r, mut echo_w) = streams;
    let echo = std::thread::spawn(move || -> Result<(), Error> {
        pin(cores.1)?;
        let mut buf = [0u8; MSG];
        while spin_read(&mut *echo_r, &mut buf).map_err(|e| Error::os("echo read", e))? {
            spin_write(&mut *echo_w, &buf).map_err(|e| Error::os("echo write", e))?;
        }
        Ok(())
    });
    pin(cores.0)?;
    let mut h = histogram();
    let out = [0x5Au8; MSG];
    let mut back = [0u8; MSG];
    for i in 0..opts.warmup + opts.round_trips {
        let start = Instant::now();
        spin_write(&mut *my_w, &out).map_err(|e| Error::os(path, e))?;
        if !spin_read(&mut *my_r, &mut back).map_err(|e| Error::os(path, e))? {
            return Err(Error::new(
                ErrorKind::Os,
                format!("{path}: the echo side closed"),
            ));
        }
        let ns = start.elapsed().as_nanos() as u64;
        if i >= opts.warmup {
            h.saturating_record(ns);
        }
    }
    // Closing both ends of ours ends the echo side's stream.
    drop((my_r, my_w));
    join(echo)?;
    Ok(row(path, &h))
}

/// Sends `messages` of `size` bytes one way, each written into a buffer of the arena (small
/// ones then travel inline in their ring slots, large ones without a copy); the receiver
/// reads every byte of each one.
fn shm_throughput(
    cores: (usize, usize),
    size: usize,
    messages: u64,
) -> Result<ThroughputRow, Error> {
    let config = if size <= 2048 {
        small_config()
    } else {
        ChannelConfig {
            ring_slots: 1024,
            chunk_size: 64 << 10,
            chunks: 256,
            headroom: 0,
        }
    };
    let name = bench_name("tput");
    let mut ch = Channel::create(&name, &config)?;
    let receiver = std::thread::spawn({
        let name = name.clone();
        move || -> Result<(Duration, u64), Error> {
            pin(cores.1)?;
            let mut ch = Channel::open(&name, Duration::from_secs(5))?;
            let mut start = None;
            let mut sum = 0u64;
            for _ in 0..messages {
                let msg = ch.recv(Some(Duration::from_secs(30)))?;
                start.get_or_insert_with(Instant::now);
                for seg in msg.segments() {
                    sum = seg.iter().fold(sum, |s, &b| s.wrapping_add(u64::from(b)));
                }
            }
            let elapsed = start.map(|s| s.elapsed()).unwrap_or_default();
            Ok((elapsed, sum))
        }
    });
    pin(cores.0)?;
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut sent = 0u64;
    while sent < messages {
        let Some(msg) = ch.alloc_message(&payload) else {
            ch.flush()?;
            continue;
        };
        let mut msg = Some(msg);
        while let Some(m) = msg.take() {
            match ch.stage(m) {
                Ok(()) => {}
                Err(TrySendError::Full(back)) => {
                    ch.flush()?;
                    msg = Some(back);
                }
                Err(TrySendError::Failed(e)) => return Err(e),
            }
        }
        sent += 1;
        if sent.is_multiple_of(32) {
            ch.flush()?;
        }
    }
    ch.flush()?;
    let (elapsed, sum) = join(receiver)?;
    let per_message: u64 = payload.iter().map(|&b| u64::from(b)).sum();
    if sum != per_message.wrapping_mul(messages) {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "the throughput receiver read different bytes than were sent",
        ));
    }
    // The receiver's clock starts at the first message: count the ones after it.
    Ok(ThroughputRow {
        path: SHM,
        message_bytes: size,
        messages: messages.saturating_sub(1).max(1),
        seconds: elapsed.as_secs_f64().max(1e-9),
    })
}

/// CPU time per message with both ends in this thread: the software cost of the queue,
/// free of cache-line transfers and of other processes competing for the cores.
fn one_thread_cost(messages: u64) -> Result<f64, Error> {
    let name = bench_name("cost");
    let mut a = Channel::create(&name, &small_config())?;
    let mut b = Channel::open(&name, Duration::ZERO)?;
    let payload = [0x3Cu8; MSG];
    let batches = (messages / 32).max(1);
    let start = thread_cpu_ns();
    for _ in 0..batches {
        for _ in 0..32 {
            let mut buf = a
                .alloc()
                .ok_or_else(|| Error::new(ErrorKind::Os, "the cost benchmark ran out of chunks"))?;
            buf.extend_from_slice(&payload);
            a.stage(Sga::from(buf)).map_err(|e| match e {
                TrySendError::Full(_) => {
                    Error::new(ErrorKind::Os, "the cost benchmark's ring filled")
                }
                TrySendError::Failed(e) => e,
            })?;
        }
        a.flush()?;
        for _ in 0..32 {
            let msg = b
                .try_recv()?
                .ok_or_else(|| Error::new(ErrorKind::Os, "a staged message did not arrive"))?;
            debug_assert_eq!(msg.len(), MSG);
        }
    }
    Ok((thread_cpu_ns() - start) / (batches * 32) as f64)
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}
