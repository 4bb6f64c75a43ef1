//! The storage benchmark behind `bypass bench storage`: 4 KiB random reads on one file, with
//! this crate's [`Engine`] next to fio's engines, in one run on the same file.
//!
//! Rows (each at every queue depth of [`BenchOptions::depths`] unless noted):
//!
//! | row | what |
//! |---|---|
//! | `bypass` | the [`Engine`], O_DIRECT, registered file, no fixed buffers; sleeps in the kernel for completions ([`Engine::wait`]) |
//! | `bypass+fixed` | the same with the pool registered as fixed buffers |
//! | `bypass+fixed+batched` | the same with [`EngineConfig::eager_submit_below`] 0: the reads requeued after a wake-up go to the kernel together, in the next wait's `io_uring_enter` |
//! | `bypass+spin` | fixed buffers, busy-polling the completion queue ([`Engine::spin`]), as a LibOs in spin mode does |
//! | `bypass+sqpoll` | fixed buffers, a kernel SQPOLL thread on [`BenchOptions::sqpoll_cpu`], busy-polling the completion queue |
//! | `fio psync` | fio `--ioengine=psync` (queue depth 1 only: it has no queue) |
//! | `fio libaio` | fio `--ioengine=libaio` |
//! | `fio io_uring` | fio `--ioengine=io_uring` |
//! | `fio io_uring+fixed` | with `--fixedbufs --registerfiles` |
//! | `fio io_uring+sqpoll` | with `--sqthread_poll` on the same CPU as ours (fio then busy-polls its completion queue) |
//! | `… page cache` | `bypass` and `fio io_uring` without O_DIRECT on a cached file, depth 32 |
//!
//! Each row reports KIOPS, latency p50/p99 and CPU time per I/O. Latency is measured the same
//! way on both sides: from just before the read is submitted to its completion being reaped.
//! For us that is a timestamp taken when the read is queued (right before the
//! `io_uring_enter` that submits it) and one when its completion is taken; for fio it is its
//! total latency `lat` (`slat + clat`, with `--lat_percentiles=1`). fio's `clat` alone starts
//! only once the submitting `io_uring_enter` has returned, and on a virtual disk that call does
//! most of the work of issuing the request (it is `slat`, ~15 µs here); it is kept in
//! [`BenchRow::fio_clat_p50_us`] for reference, not compared.
//!
//! Submission and waiting are like fio's too. Every row but `+batched` submits each read the
//! moment it is requeued while others are in flight and fewer than 64 at the device
//! ([`EngineConfig::eager_submit_below`]; at depth 128 that is rarely: the device is full), as
//! fio's io_uring engine does with its default `iodepth_batch_submit=1`); a read queued when
//! none is in flight (at depth 1, always) goes with the wait. The sleeping rows wait in an
//! `io_uring_enter` that both submits what is queued and waits for at least one completion
//! (fio makes two calls: one to submit, one to wait); the spinning rows read the completion
//! queue in a loop, entering the kernel only to submit and, when the ring flags deferred
//! completion work ([`EngineConfig::defer_taskrun`]), to run it (SQPOLL: neither while its
//! poller is awake). [`BenchRow::enters_per_io`] counts ours.
//!
//! CPU time per I/O: for us the process's user+system time (which includes the kernel's
//! io_uring worker and SQPOLL threads, as they are threads of this process) divided by the
//! I/Os; for fio its job's `usr_cpu + sys_cpu` (which does *not* include fio's SQPOLL thread).
//! Our loop and fio's job both run pinned to [`BenchOptions::cpu`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bypass_runtime::{BufferPool, PoolConfig, Sga};
use serde::Serialize;

use crate::engine::{Completion, Engine, EngineConfig, OpId, OpenOptions, SqPoll};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// The test file. `None`: `bypass-bench-storage.<pid>` in the current directory. A file
    /// that does not exist (or is shorter than `size`) is created and filled, and deleted at
    /// the end; an existing file of at least `size` bytes is used as it is and kept.
    pub path: Option<PathBuf>,
    /// Bytes of the file the reads spread over (default 1 GiB).
    pub size: u64,
    /// Time per measured point (default 5 s).
    pub runtime: Duration,
    /// Queue depths (default 1, 8, 32, 128).
    pub depths: Vec<u32>,
    /// Run the fio rows (skipped with a note if fio is not installed).
    pub fio: bool,
    /// The fio binary.
    pub fio_path: PathBuf,
    /// CPU the benchmark loop (and fio's job) runs on.
    pub cpu: Option<u32>,
    /// CPU of the SQPOLL threads (ours and fio's); `None` skips the SQPOLL rows.
    pub sqpoll_cpu: Option<u32>,
    /// Also measure page-cache reads (no O_DIRECT, warm cache).
    pub page_cache: bool,
    /// Times every row is measured, the rows taking turns; each number reported is the
    /// median over the rounds (default 1). Single points on a virtual disk move by 10-15 %
    /// from one run to the next, so comparisons within a few percent need several rounds.
    pub rounds: u32,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            path: None,
            size: 1 << 30,
            runtime: Duration::from_secs(5),
            depths: vec![1, 8, 32, 128],
            fio: true,
            fio_path: PathBuf::from("fio"),
            cpu: Some(0),
            sqpoll_cpu: if sys::online_cpus() > 1 {
                Some(1)
            } else {
                None
            },
            page_cache: true,
            rounds: 1,
        }
    }
}

/// One measured point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchRow {
    /// `bypass`, `bypass+fixed`, `fio io_uring`, …
    pub engine: String,
    pub queue_depth: u32,
    /// O_DIRECT (false: page cache).
    pub direct: bool,
    /// Thousands of I/Os per second.
    pub kiops: f64,
    /// Latency from just before submission to the completion reaped, microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    /// CPU time (user + system) per I/O, microseconds.
    pub cpu_us_per_io: f64,
    /// I/Os completed (over all rounds).
    pub ios: u64,
    /// Our rows: `io_uring_enter` calls per I/O.
    pub enters_per_io: Option<f64>,
    /// fio rows: fio's `clat` p50 (from the return of the submitting system call to the
    /// completion), microseconds; for reference only, as it leaves submission out.
    pub fio_clat_p50_us: Option<f64>,
    /// Why the row has no numbers, if it failed.
    pub error: Option<String>,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    pub path: PathBuf,
    pub size: u64,
    pub runtime_secs: f64,
    pub block_size: u32,
    /// Rounds measured; every number is the median over them.
    pub rounds: u32,
    /// `fio --version`, if fio ran.
    pub fio_version: Option<String>,
    pub rows: Vec<BenchRow>,
    /// Things skipped, and why.
    pub notes: Vec<String>,
}

impl BenchReport {
    /// The report as JSON (one object; `rows` is a list).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "4 KiB random reads on {} ({:.1} GiB), {:.0} s per point{}{}",
            self.path.display(),
            self.size as f64 / (1u64 << 30) as f64,
            self.runtime_secs,
            if self.rounds > 1 {
                format!(", median of {} rounds", self.rounds)
            } else {
                String::new()
            },
            self.fio_version
                .as_deref()
                .map(|v| format!(", {v}"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "{:<26} {:>4} {:>9} {:>9} {:>9} {:>11} {:>10}",
            "engine", "QD", "KIOPS", "p50 µs", "p99 µs", "CPU µs/IO", "enters/IO"
        )?;
        for r in &self.rows {
            let name = if r.direct {
                r.engine.clone()
            } else {
                format!("{} page cache", r.engine)
            };
            match &r.error {
                Some(e) => writeln!(f, "{name:<26} {:>4}   failed: {e}", r.queue_depth)?,
                None => writeln!(
                    f,
                    "{name:<26} {:>4} {:>9.1} {:>9.1} {:>9.1} {:>11.2} {:>10}",
                    r.queue_depth,
                    r.kiops,
                    r.p50_us,
                    r.p99_us,
                    r.cpu_us_per_io,
                    r.enters_per_io
                        .map_or_else(|| "-".to_string(), |e| format!("{e:.2}"))
                )?,
            }
        }
        writeln!(
            f,
            "latency: from just before submission to the completion reaped (fio: lat = slat + clat)"
        )?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

const BLOCK: usize = 4096;

/// Runs the benchmark. Blocks for about `rows × runtime × rounds` (31 points by default: ~3
/// minutes).
pub fn bench(opts: &BenchOptions) -> Result<BenchReport> {
    if opts.size < (BLOCK as u64) * 16
        || opts.depths.is_empty()
        || opts.runtime.is_zero()
        || opts.rounds == 0
    {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "bench options: size must be at least 64 KiB, depths non-empty, runtime above zero, \
             rounds at least 1",
        ));
    }
    if let Some(&d) = opts.depths.iter().find(|&&d| d == 0 || d > 4096) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("bench options: queue depth {d} is out of range 1..=4096"),
        ));
    }
    let opts = opts.clone();
    // Run on a thread of its own so pinning it leaves the caller's affinity alone.
    std::thread::spawn(move || run(&opts))
        .join()
        .unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Other,
                "the benchmark thread panicked",
            ))
        })
}

fn run(opts: &BenchOptions) -> Result<BenchReport> {
    let mut notes = Vec::new();
    if let Some(cpu) = opts.cpu {
        if let Err(e) = sys::pin_current_thread(cpu) {
            notes.push(format!(
                "could not pin to CPU {cpu} ({e}); running unpinned"
            ));
        }
    }
    let path = opts
        .path
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bypass-bench-storage.{}", std::process::id())));
    let created = prepare_file(&path, opts.size)?;
    let _cleanup = Cleanup {
        path: created.then(|| path.clone()),
    };
    let mut report = BenchReport {
        path: path.clone(),
        size: opts.size,
        runtime_secs: opts.runtime.as_secs_f64(),
        block_size: BLOCK as u32,
        rounds: opts.rounds,
        fio_version: None,
        rows: Vec::new(),
        notes,
    };

    let fio_version = if opts.fio {
        match Command::new(&opts.fio_path).arg("--version").output() {
            Ok(out) if out.status.success() => {
                Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            _ => {
                report.notes.push(format!(
                    "fio rows skipped: {} not found; install fio (Debian: apt-get install fio)",
                    opts.fio_path.display()
                ));
                None
            }
        }
    } else {
        None
    };
    if opts.sqpoll_cpu.is_none() {
        report
            .notes
            .push("SQPOLL rows skipped: one CPU only (set sqpoll_cpu to force)".into());
    }
    let mut rounds = Vec::with_capacity(opts.rounds as usize);
    for _ in 0..opts.rounds {
        rounds.push(measure_round(&path, opts, fio_version.is_some())?);
    }
    report.rows = median_rows(&rounds);
    report.fio_version = fio_version;
    Ok(report)
}

/// Measures every row once: ours, then fio's, then the page-cache pair.
fn measure_round(path: &Path, opts: &BenchOptions, fio: bool) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    let plain = EngineConfig {
        register_buffers: false,
        ..EngineConfig::default()
    };
    let fixed = EngineConfig::default();
    // Submissions batched until the next wait: what eager submission is measured against.
    let batched = EngineConfig {
        eager_submit_below: 0,
        ..EngineConfig::default()
    };
    let sqpoll = opts.sqpoll_cpu.map(|cpu| EngineConfig {
        sqpoll: Some(SqPoll {
            cpu: Some(cpu),
            idle: Duration::from_millis(50),
        }),
        ..EngineConfig::default()
    });
    let mut ours: Vec<(&str, EngineConfig, Wait)> = vec![
        ("bypass", plain, Wait::Sleep),
        ("bypass+fixed", fixed.clone(), Wait::Sleep),
        ("bypass+fixed+batched", batched, Wait::Sleep),
        ("bypass+spin", fixed, Wait::Spin),
    ];
    if let Some(c) = sqpoll {
        ours.push(("bypass+sqpoll", c, Wait::Spin));
    }
    for (name, config, wait) in &ours {
        for &qd in &opts.depths {
            rows.push(ours_row(name, config, *wait, path, opts, qd, true));
        }
    }

    if fio {
        let mut engines: Vec<(&str, Vec<String>)> = vec![
            ("fio psync", vec!["--ioengine=psync".into()]),
            ("fio libaio", vec!["--ioengine=libaio".into()]),
            ("fio io_uring", vec!["--ioengine=io_uring".into()]),
            (
                "fio io_uring+fixed",
                vec![
                    "--ioengine=io_uring".into(),
                    "--fixedbufs".into(),
                    "--registerfiles".into(),
                ],
            ),
        ];
        if let Some(cpu) = opts.sqpoll_cpu {
            engines.push((
                "fio io_uring+sqpoll",
                vec![
                    "--ioengine=io_uring".into(),
                    "--fixedbufs".into(),
                    "--registerfiles".into(),
                    "--sqthread_poll=1".into(),
                    format!("--sqthread_poll_cpu={cpu}"),
                ],
            ));
        }
        for (name, args) in &engines {
            for &qd in &opts.depths {
                if *name == "fio psync" && qd != 1 {
                    continue;
                }
                rows.push(fio_row(name, args, path, opts, qd, true));
            }
        }
    }

    if opts.page_cache {
        warm_cache(path, opts.size)?;
        rows.push(ours_row(
            "bypass",
            &EngineConfig::default(),
            Wait::Sleep,
            path,
            opts,
            32,
            false,
        ));
        if fio {
            rows.push(fio_row(
                "fio io_uring",
                &["--ioengine=io_uring".to_string()],
                path,
                opts,
                32,
                false,
            ));
        }
    }
    Ok(rows)
}

/// Row by row, the median of each number over the rounds (which all list the same rows in
/// the same order). A row that failed in any round is reported as failed.
fn median_rows(rounds: &[Vec<BenchRow>]) -> Vec<BenchRow> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    assert!(rounds.iter().all(|r| r.len() == first.len()));
    (0..first.len())
        .map(|i| {
            let all: Vec<&BenchRow> = rounds.iter().map(|r| &r[i]).collect();
            if let Some(failed) = all.iter().find(|r| r.error.is_some()) {
                return (*failed).clone();
            }
            let median = |field: fn(&BenchRow) -> Option<f64>| -> Option<f64> {
                let mut v: Vec<f64> = all.iter().filter_map(|r| field(r)).collect();
                if v.is_empty() {
                    return None;
                }
                v.sort_by(f64::total_cmp);
                let mid = v.len() / 2;
                Some(if v.len() % 2 == 1 {
                    v[mid]
                } else {
                    (v[mid - 1] + v[mid]) / 2.0
                })
            };
            BenchRow {
                engine: all[0].engine.clone(),
                queue_depth: all[0].queue_depth,
                direct: all[0].direct,
                kiops: median(|r| Some(r.kiops)).unwrap_or(0.0),
                p50_us: median(|r| Some(r.p50_us)).unwrap_or(0.0),
                p99_us: median(|r| Some(r.p99_us)).unwrap_or(0.0),
                cpu_us_per_io: median(|r| Some(r.cpu_us_per_io)).unwrap_or(0.0),
                ios: all.iter().map(|r| r.ios).sum(),
                enters_per_io: median(|r| r.enters_per_io),
                fio_clat_p50_us: median(|r| r.fio_clat_p50_us),
                error: None,
            }
        })
        .collect()
}

/// Deletes the test file if the benchmark created it, even if it fails.
struct Cleanup {
    path: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Makes sure `path` holds at least `size` bytes of non-zero data; returns whether it wrote it.
fn prepare_file(path: &Path, size: u64) -> Result<bool> {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.is_file() && meta.len() >= size {
            return Ok(false);
        }
    }
    let pool = BufferPool::new(&PoolConfig::large(8 * 16 + 16))
        .map_err(|e| Error::from_io(&e, "mapping the benchmark's buffer pool"))?;
    let mut e = Engine::new(&EngineConfig::default(), pool)?;
    let f = e.open(path, &OpenOptions::new().create(true).truncate(true))?;
    let piece = 1usize << 20;
    let mut in_flight: Vec<OpId> = Vec::new();
    let mut offset = 0u64;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    while offset < size || !in_flight.is_empty() {
        while offset < size && in_flight.len() < 8 {
            let len = piece.min((size - offset) as usize).div_ceil(BLOCK) * BLOCK;
            let mut data = vec![0u8; len];
            for w in data.chunks_exact_mut(8) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                w.copy_from_slice(&seed.to_le_bytes());
            }
            let sga = Sga::copy_from(e.pool(), &data)
                .ok_or_else(|| Error::new(ErrorKind::Busy, "benchmark pool exhausted"))?;
            in_flight.push(e.write(f, offset, sga)?);
            offset += len as u64;
        }
        e.wait(None)?;
        let mut i = 0;
        while i < in_flight.len() {
            if e.take(in_flight[i])?.is_some() {
                in_flight.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    let op = e.fsync(f)?;
    e.wait_for(op)?;
    e.close(f)?;
    Ok(true)
}

/// Reads the file once through the page cache so the page-cache rows hit it.
fn warm_cache(path: &Path, size: u64) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::from_io(&e, format_args!("opening {}", path.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::from_io(&e, format_args!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n as u64);
    }
    Ok(())
}

fn failed_row(engine: &str, qd: u32, direct: bool, error: String) -> BenchRow {
    BenchRow {
        engine: engine.to_string(),
        queue_depth: qd,
        direct,
        kiops: 0.0,
        p50_us: 0.0,
        p99_us: 0.0,
        cpu_us_per_io: 0.0,
        ios: 0,
        enters_per_io: None,
        fio_clat_p50_us: None,
        error: Some(error),
    }
}

/// How our loop waits for completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// [`Engine::wait`]: submit and sleep in one `io_uring_enter`.
    Sleep,
    /// [`Engine::spin`]: submit, then busy-poll the completion queue.
    Spin,
}

fn ours_row(
    name: &str,
    config: &EngineConfig,
    wait: Wait,
    path: &Path,
    opts: &BenchOptions,
    qd: u32,
    direct: bool,
) -> BenchRow {
    match measure_ours(config, wait, path, opts, qd, direct) {
        Ok(row) => BenchRow {
            engine: name.to_string(),
            ..row
        },
        Err(e) => failed_row(name, qd, direct, e.to_string()),
    }
}

/// Keeps `qd` 4 KiB reads at random offsets in flight for `runtime`.
fn measure_ours(
    config: &EngineConfig,
    wait: Wait,
    path: &Path,
    opts: &BenchOptions,
    qd: u32,
    direct: bool,
) -> Result<BenchRow> {
    let chunks = (qd as usize + 8).max(16);
    let pool = BufferPool::new(&PoolConfig::large(chunks))
        .map_err(|e| Error::from_io(&e, "mapping the benchmark's buffer pool"))?;
    let config = EngineConfig {
        entries: qd.next_power_of_two().max(8),
        max_ops: qd as usize * 2,
        ..config.clone()
    };
    let mut e = Engine::new(&config, pool)?;
    let f = e.open(path, &OpenOptions::new().direct(direct).write(false))?;
    let blocks = opts.size / BLOCK as u64;
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(qd);
    let mut next_offset = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % blocks) * BLOCK as u64
    };
    let mut slots: Vec<(OpId, Instant)> = Vec::with_capacity(qd as usize);
    let expected_ios = (opts.runtime.as_secs_f64() * 1_000_000.0) as usize;
    let mut latencies: Vec<u32> = Vec::with_capacity(expected_ios.min(8 << 20));

    // A short warm-up (not measured): fault in the pool and wake the SQPOLL thread.
    let warmup = Instant::now();
    let warmup_time = opts.runtime.min(Duration::from_millis(200));
    let cpu0 = sys::process_cpu_time();
    let mut started = Instant::now();
    let mut measuring = false;
    let mut ios = 0u64;
    for _ in 0..qd {
        slots.push((e.read(f, next_offset(), BLOCK)?, Instant::now()));
    }
    let mut cpu_start = cpu0;
    let mut enters_start = 0;
    loop {
        if !measuring && warmup.elapsed() >= warmup_time {
            measuring = true;
            started = Instant::now();
            cpu_start = sys::process_cpu_time();
            enters_start = e.stats().enter_calls;
            latencies.clear();
            ios = 0;
        }
        if measuring && started.elapsed() >= opts.runtime {
            break;
        }
        // Reads are always in flight here, so neither call can return empty-handed for long.
        match wait {
            // Submit what is queued and sleep in the kernel until a completion arrives, in
            // one system call (fio makes two: submit, then wait).
            Wait::Sleep => e.wait(None)?,
            // Submit (one system call, none under SQPOLL while its poller is awake), then
            // read the completion queue until something completes.
            Wait::Spin => e.spin(None)?,
        };
        for slot in slots.iter_mut() {
            match e.take(slot.0)? {
                None => {}
                Some(Completion::Read(sga)) => {
                    let now = Instant::now();
                    if sga.len() != BLOCK {
                        return Err(Error::new(
                            ErrorKind::Io,
                            format!("a 4 KiB read returned {} B", sga.len()),
                        ));
                    }
                    drop(sga);
                    latencies
                        .push(now.duration_since(slot.1).as_nanos().min(u32::MAX as u128) as u32);
                    ios += 1;
                    *slot = (e.read(f, next_offset(), BLOCK)?, Instant::now());
                }
                Some(other) => unreachable!("a read completed as {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = sys::process_cpu_time().saturating_sub(cpu_start);
    let enters = e.stats().enter_calls - enters_start;
    // Let the reads still in flight finish before the engine goes.
    for (op, _) in slots {
        let _ = e.wait_for(op);
    }
    e.close(f)?;
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[i]) / 1000.0
    };
    Ok(BenchRow {
        engine: String::new(),
        queue_depth: qd,
        direct,
        kiops: ios as f64 / elapsed.as_secs_f64() / 1000.0,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        cpu_us_per_io: if ios > 0 {
            cpu.as_secs_f64() * 1e6 / ios as f64
        } else {
            0.0
        },
        ios,
        enters_per_io: (ios > 0).then(|| enters as f64 / ios as f64),
        fio_clat_p50_us: None,
        error: None,
    })
}

fn fio_row(
    name: &str,
    engine_args: &[String],
    path: &Path,
    opts: &BenchOptions,
    qd: u32,
    direct: bool,
) -> BenchRow {
    let mut cmd = Command::new(&opts.fio_path);
    cmd.arg("--name=bypass-bench")
        .arg(format!("--filename={}", path.display()))
        .arg(format!("--size={}", opts.size))
        .arg("--rw=randread")
        .arg(format!("--bs={BLOCK}"))
        .arg(format!("--direct={}", u8::from(direct)))
        .arg(format!("--iodepth={qd}"))
        .arg(format!("--runtime={}ms", opts.runtime.as_millis()))
        .arg("--ramp_time=200ms")
        .arg("--time_based")
        .arg("--norandommap")
        .arg("--randrepeat=0")
        .arg("--invalidate=0")
        // Percentiles of the total latency (submission included), which is what ours measure.
        .arg("--lat_percentiles=1")
        .arg("--output-format=json")
        .args(engine_args);
    if let Some(cpu) = opts.cpu {
        cmd.arg(format!("--cpus_allowed={cpu}"));
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => return failed_row(name, qd, direct, format!("running fio: {e}")),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err
            .lines()
            .last()
            .unwrap_or("no message")
            .trim()
            .to_string();
        return failed_row(name, qd, direct, format!("fio failed: {err}"));
    }
    match parse_fio(&out.stdout) {
        Ok(row) => BenchRow {
            engine: name.to_string(),
            queue_depth: qd,
            direct,
            ..row
        },
        Err(e) => failed_row(name, qd, direct, e),
    }
}

/// Reads KIOPS, total latency (`lat`) p50/p99, clat p50 and CPU per I/O from fio's JSON output
/// (run with `--lat_percentiles=1`).
pub fn parse_fio(json: &[u8]) -> std::result::Result<BenchRow, String> {
    // fio may print warnings before the JSON object.
    let start = json
        .iter()
        .position(|&b| b == b'{')
        .ok_or("fio printed no JSON")?;
    let v: serde_json::Value =
        serde_json::from_slice(&json[start..]).map_err(|e| format!("fio JSON: {e}"))?;
    let job = &v["jobs"][0];
    let read = &job["read"];
    let num = |x: &serde_json::Value, what: &str| {
        x.as_f64()
            .ok_or_else(|| format!("fio JSON has no number at {what}"))
    };
    let iops = num(&read["iops"], "jobs[0].read.iops")?;
    let ios = num(&read["total_ios"], "jobs[0].read.total_ios")?;
    let runtime_ms = num(&read["runtime"], "jobs[0].read.runtime")?;
    let pcts = &read["lat_ns"]["percentile"];
    let p50 = num(
        &pcts["50.000000"],
        "lat_ns.percentile.50 (run fio with --lat_percentiles=1)",
    )?;
    let p99 = num(&pcts["99.000000"], "lat_ns.percentile.99")?;
    let clat_p50 = read["clat_ns"]["percentile"]["50.000000"].as_f64();
    let cpu_pct =
        num(&job["usr_cpu"], "jobs[0].usr_cpu")? + num(&job["sys_cpu"], "jobs[0].sys_cpu")?;
    let cpu_us = cpu_pct / 100.0 * runtime_ms * 1000.0;
    Ok(BenchRow {
        engine: String::new(),
        queue_depth: 0,
        direct: true,
        kiops: iops / 1000.0,
        p50_us: p50 / 1000.0,
        p99_us: p99 / 1000.0,
        cpu_us_per_io: if ios > 0.0 { cpu_us / ios } else { 0.0 },
        ios: ios as u64,
        enters_per_io: None,
        fio_clat_p50_us: clat_p50.map(|c| c / 1000.0),
        error: None,
    })
}
