//! The crash-safe log through its public API: round trips under every policy, recovery from
//! torn and corrupt tails, acknowledgement rules, and a writer process killed at random points.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bypass_storage::{
    log, Engine, EngineConfig, ErrorKind, Layout, Log, LogConfig, StopReason, SyncPolicy,
};
use common::{engine, Rng, TempDir, TinyFs};

/// The payload of record `seq`: its length and bytes follow from the number alone, so a reader
/// can check every byte without being told what was written.
fn payload(seq: u64) -> Vec<u8> {
    let mut rng = Rng::new(seq);
    let len = match seq % 17 {
        0 => 0,
        1 => 70_000 + rng.below(5_000) as usize, // spans two pool buffers
        _ => rng.below(3_000) as usize,
    };
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

fn config(sync: SyncPolicy) -> LogConfig {
    config_in(sync, Layout::Packed)
}

fn config_in(sync: SyncPolicy, layout: Layout) -> LogConfig {
    LogConfig {
        sync,
        layout,
        ..LogConfig::default()
    }
}

/// Opens the log and returns the replayed records.
fn reopen(
    e: &mut Engine,
    path: &Path,
    sync: SyncPolicy,
) -> (Log, log::Recovery, Vec<(u64, Vec<u8>)>) {
    reopen_in(e, path, sync, Layout::Packed)
}

/// Opens the log (a new file in `layout`) and returns the replayed records.
fn reopen_in(
    e: &mut Engine,
    path: &Path,
    sync: SyncPolicy,
    layout: Layout,
) -> (Log, log::Recovery, Vec<(u64, Vec<u8>)>) {
    let mut records = Vec::new();
    let (log, rec) = Log::open(e, path, config_in(sync, layout), |seq, data| {
        records.push((seq, data.to_vec()))
    })
    .expect("open log");
    (log, rec, records)
}

/// Checks that everything in the file after `end` is zero (no stale record can come back).
fn zero_after(path: &Path, end: u64) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() as u64 >= end);
    assert!(
        bytes[end as usize..].iter().all(|&b| b == 0),
        "the file holds non-zero bytes after the end of the log at {end}"
    );
}

fn check_records(records: &[(u64, Vec<u8>)], count: u64) {
    assert_eq!(records.len() as u64, count);
    for (i, (seq, data)) in records.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(*data, payload(*seq), "record {seq} differs");
    }
}

/// Appends records `from..=to`, keeping up to 32 in flight.
fn append_range(e: &mut Engine, log: &mut Log, from: u64, to: u64) {
    for seq in from..=to {
        while log.pending() >= 32 {
            e.wait(None).unwrap();
            log.process(e).unwrap();
        }
        assert_eq!(log.append(e, &payload(seq)).unwrap(), seq);
        e.poll().unwrap();
        log.process(e).unwrap();
    }
    log.wait_durable(e, to).unwrap();
}

#[test]
fn records_round_trip_under_every_policy() {
    for sync in [SyncPolicy::Always, SyncPolicy::EveryN(5), SyncPolicy::Never] {
        let dir = TempDir::new("roundtrip");
        let path = dir.join("log");
        let mut e = engine(64, &EngineConfig::default());
        let (mut log, rec, records) = reopen(&mut e, &path, sync);
        assert_eq!(rec.records, 0);
        assert!(records.is_empty());
        append_range(&mut e, &mut log, 1, 60);
        assert_eq!(log.durable(), 60);
        let end = log.end_offset();
        let expected_end: u64 = (1..=60)
            .map(|s| (log::HEADER_LEN + payload(s).len()) as u64)
            .sum();
        assert_eq!(end, expected_end);
        log.close(&mut e).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), end);

        let (mut log, rec, records) = reopen(&mut e, &path, sync);
        assert_eq!(rec.records, 60, "{sync:?}");
        assert_eq!(rec.last_seq, 60);
        assert_eq!(rec.end, end);
        assert_eq!(rec.discarded, 0);
        assert_eq!(rec.stop, None);
        check_records(&records, 60);
        assert_eq!(log.next_seq(), 61);
        append_range(&mut e, &mut log, 61, 70);
        log.close(&mut e).unwrap();
        let (log, _, records) = reopen(&mut e, &path, sync);
        check_records(&records, 70);
        log.close(&mut e).unwrap();
    }
}

/// Writes records 1..=20 and returns the file offset where each record starts (plus the end).
fn twenty_records(dir: &TempDir) -> (std::path::PathBuf, Vec<u64>) {
    let path = dir.join("log");
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, _, _) = reopen(&mut e, &path, SyncPolicy::Never);
    let mut starts = vec![0];
    for seq in 1..=20 {
        log.append(&mut e, &payload(seq)).unwrap();
        starts.push(log.end_offset());
    }
    log.close(&mut e).unwrap();
    (path, starts)
}

/// Damages the log file, reopens it, and checks that exactly `good` records survive, that the
/// file is cut right after them, and that the next append continues the sequence.
fn recover_after(damage: impl FnOnce(&Path, &[u64]), good: u64, reason: StopReason) {
    let dir = TempDir::new("damage");
    let (path, starts) = twenty_records(&dir);
    damage(&path, &starts);
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, rec, records) = reopen(&mut e, &path, SyncPolicy::Always);
    assert_eq!(rec.stop, Some(reason));
    assert_eq!(rec.records, good);
    assert_eq!(rec.end, starts[good as usize]);
    assert_eq!(rec.stop_offset, Some(starts[good as usize]));
    check_records(&records, good);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        rec.end,
        "garbage cut off"
    );
    assert_eq!(log.next_seq(), good + 1);
    append_range(&mut e, &mut log, good + 1, good + 3);
    log.close(&mut e).unwrap();
    let (log, rec, records) = reopen(&mut e, &path, SyncPolicy::Always);
    assert_eq!(rec.stop, None);
    check_records(&records, good + 3);
    log.close(&mut e).unwrap();
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn recovery_stops_at_a_flipped_payload_byte() {
    recover_after(
        |p, starts| edit(p, |b| b[starts[7] as usize + log::HEADER_LEN + 1] ^= 0x40),
        7,
        StopReason::BadChecksum,
    );
}

#[test]
fn recovery_stops_at_a_flipped_header_byte() {
    // Byte 9 is inside the sequence number, covered by the checksum.
    recover_after(
        |p, starts| edit(p, |b| b[starts[12] as usize + 9] ^= 1),
        12,
        StopReason::BadChecksum,
    );
}

#[test]
fn recovery_stops_at_a_torn_payload() {
    recover_after(
        |p, starts| edit(p, |b| b.truncate(starts[19] as usize + log::HEADER_LEN + 1)),
        19,
        StopReason::TornPayload,
    );
}

#[test]
fn recovery_stops_at_a_torn_header() {
    recover_after(
        |p, starts| edit(p, |b| b.truncate(starts[19] as usize + 7)),
        19,
        StopReason::TornHeader,
    );
}

#[test]
fn recovery_stops_at_zeroes_and_bad_magic() {
    recover_after(
        |p, starts| edit(p, |b| b[starts[4] as usize..starts[6] as usize].fill(0)),
        4,
        StopReason::BadMagic,
    );
}

#[test]
fn recovery_stops_at_an_impossible_length() {
    recover_after(
        |p, starts| {
            edit(p, |b| {
                let at = starts[3] as usize + 4;
                b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            })
        },
        3,
        StopReason::BadLength,
    );
}

#[test]
fn recovery_refuses_a_stale_record_after_the_tail() {
    // A well-formed copy of record 3 after record 20: its checksum is right, its number is not.
    recover_after(
        |p, starts| {
            edit(p, |b| {
                let r3 = b[starts[2] as usize..starts[3] as usize].to_vec();
                b.extend_from_slice(&r3);
            })
        },
        20,
        StopReason::SequenceGap {
            expected: 21,
            found: 3,
        },
    );
}

#[test]
fn every_n_acknowledges_in_groups_and_flush_syncs_the_tail() {
    let dir = TempDir::new("everyn");
    let path = dir.join("log");
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, _, _) = reopen(&mut e, &path, SyncPolicy::EveryN(4));
    for seq in 1..=3 {
        log.append(&mut e, &payload(seq)).unwrap();
    }
    // Let the three writes complete: without a fourth record no sync is issued.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && e.stats().in_flight > 0 {
        e.wait(Some(Duration::from_millis(10))).unwrap();
        log.process(&mut e).unwrap();
    }
    log.process(&mut e).unwrap();
    assert_eq!(e.stats().in_flight, 0, "no sync in flight");
    assert_eq!(
        log.durable(),
        0,
        "three written records wait for their group"
    );
    log.append(&mut e, &payload(4)).unwrap();
    while log.durable() < 4 {
        e.wait(None).unwrap();
        log.process(&mut e).unwrap();
    }
    assert_eq!(log.durable(), 4);
    log.append(&mut e, &payload(5)).unwrap();
    log.flush();
    while log.durable() < 5 {
        e.wait(None).unwrap();
        log.process(&mut e).unwrap();
    }
    // Too-large records and bad ids are errors.
    let err = log.append(&mut e, &vec![0; (1 << 20) + 1]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("max_record"), "{err}");
    assert_eq!(
        log.wait_durable(&mut e, 99).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    log.close(&mut e).unwrap();
}

#[test]
fn a_failed_write_fails_the_log_until_it_is_reopened() {
    let Some(fs) = TinyFs::mount("logfull", 256 << 10) else {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
        return;
    };
    let path = fs.join("log");
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, _, _) = reopen(&mut e, &path, SyncPolicy::Always);
    // Append until the file system is full; the write error fails the log.
    let mut seq = 1;
    let err = loop {
        if let Err(err) = log.append(&mut e, &payload(seq)) {
            break err;
        }
        seq += 1;
        e.wait(None).unwrap();
        if let Err(err) = log.process(&mut e) {
            break err;
        }
        assert!(seq < 1000, "a 256 KiB file system never filled up");
    };
    assert_eq!(err.kind(), ErrorKind::NoSpace, "{err}");
    let durable = log.durable();
    let again = log.append(&mut e, b"more").unwrap_err();
    assert!(again.message().contains("reopen"), "{again}");
    log.close(&mut e).unwrap();
    // Recovery keeps every acknowledged record and cuts the failed tail.
    let (log2, rec, records) = reopen(&mut e, &path, SyncPolicy::Always);
    assert!(rec.records >= durable, "{} < {durable}", rec.records);
    check_records(&records, rec.records);
    log2.close(&mut e).unwrap();
}

// ---- the blocks layout ------------------------------------------------------------------

/// Padded size of record `seq` in the blocks layout.
fn block_len(seq: u64) -> u64 {
    ((log::HEADER_LEN + payload(seq).len()) as u64).next_multiple_of(log::BLOCK)
}

#[test]
fn blocks_layout_round_trips_under_every_policy_with_space_prepared_ahead() {
    for sync in [SyncPolicy::Always, SyncPolicy::EveryN(5), SyncPolicy::Never] {
        let dir = TempDir::new("blocks-roundtrip");
        let path = dir.join("log");
        let mut e = engine(64, &EngineConfig::default());
        let (mut log, rec, records) = reopen_in(&mut e, &path, sync, Layout::Blocks);
        assert_eq!(rec.layout, Layout::Blocks);
        assert!(records.is_empty());
        // The file header block, then zeros prepared ahead.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], &log::FILE_MAGIC);
        assert_eq!(
            bytes.len() as u64,
            log::BLOCK + LogConfig::default().preallocate
        );
        zero_after(&path, 8);
        append_range(&mut e, &mut log, 1, 60);
        let end = log.end_offset();
        assert_eq!(end, log::BLOCK + (1..=60).map(block_len).sum::<u64>());
        log.close(&mut e).unwrap();
        // Preallocation kept ahead of the records.
        assert!(std::fs::metadata(&path).unwrap().len() > end);
        zero_after(&path, end);

        // The configured layout does not matter for an existing file.
        let (mut log, rec, records) = reopen_in(&mut e, &path, sync, Layout::Packed);
        assert_eq!(rec.layout, Layout::Blocks, "{sync:?}");
        assert_eq!((rec.records, rec.last_seq, rec.end), (60, 60, end));
        assert_eq!(rec.stop, None, "zeroed space is a clean end");
        check_records(&records, 60);
        append_range(&mut e, &mut log, 61, 70);
        log.close(&mut e).unwrap();
        let (log, rec, records) = reopen_in(&mut e, &path, sync, Layout::Blocks);
        assert_eq!(rec.stop, None);
        check_records(&records, 70);
        log.close(&mut e).unwrap();
    }
}

#[test]
fn a_packed_file_stays_packed_when_blocks_are_configured() {
    let dir = TempDir::new("blocks-packed");
    let path = dir.join("log");
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, _, _) = reopen(&mut e, &path, SyncPolicy::Always);
    append_range(&mut e, &mut log, 1, 10);
    log.close(&mut e).unwrap();
    let (mut log, rec, records) = reopen_in(&mut e, &path, SyncPolicy::Always, Layout::Blocks);
    assert_eq!(rec.layout, Layout::Packed);
    check_records(&records, 10);
    append_range(&mut e, &mut log, 11, 12);
    log.close(&mut e).unwrap();
    let (log, _, records) = reopen(&mut e, &path, SyncPolicy::Always);
    check_records(&records, 12);
    log.close(&mut e).unwrap();
}

/// Blocks layout: writes records 1..=20 and returns where each starts (plus the end).
fn twenty_blocks(dir: &TempDir) -> (std::path::PathBuf, Vec<u64>) {
    let path = dir.join("log");
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, _, _) = reopen_in(&mut e, &path, SyncPolicy::Always, Layout::Blocks);
    let mut starts = vec![log.end_offset()];
    for seq in 1..=20 {
        log.append(&mut e, &payload(seq)).unwrap();
        starts.push(log.end_offset());
        log.wait_durable(&mut e, seq).unwrap();
    }
    log.close(&mut e).unwrap();
    (path, starts)
}

/// Damages a blocks-layout log, reopens it, and checks that exactly `good` records survive,
/// that nothing but zeros follows them, and that appends continue the sequence.
fn recover_blocks_after(damage: impl FnOnce(&Path, &[u64]), good: u64, reason: Option<StopReason>) {
    let dir = TempDir::new("blocks-damage");
    let (path, starts) = twenty_blocks(&dir);
    damage(&path, &starts);
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, rec, records) = reopen_in(&mut e, &path, SyncPolicy::Always, Layout::Blocks);
    assert_eq!(rec.stop, reason);
    assert_eq!(rec.records, good);
    assert_eq!(rec.end, starts[good as usize]);
    check_records(&records, good);
    zero_after(&path, rec.end);
    assert_eq!(log.next_seq(), good + 1);
    append_range(&mut e, &mut log, good + 1, good + 3);
    log.close(&mut e).unwrap();
    let (log, rec, records) = reopen_in(&mut e, &path, SyncPolicy::Always, Layout::Blocks);
    assert_eq!(rec.stop, None);
    check_records(&records, good + 3);
    log.close(&mut e).unwrap();
}

#[test]
fn blocks_recovery_stops_at_a_flipped_payload_byte() {
    recover_blocks_after(
        |p, starts| edit(p, |b| b[starts[7] as usize + log::HEADER_LEN + 1] ^= 0x40),
        7,
        Some(StopReason::BadChecksum),
    );
}

#[test]
fn blocks_recovery_stops_at_a_torn_payload() {
    recover_blocks_after(
        |p, starts| edit(p, |b| b.truncate(starts[19] as usize + log::HEADER_LEN + 1)),
        19,
        Some(StopReason::TornPayload),
    );
}

#[test]
fn blocks_recovery_ends_cleanly_at_a_block_that_never_reached_the_disk() {
    // Record 18 spans many blocks; only its first is lost (a torn multi-block write): the log
    // ends before it, and its surviving blocks (and records 19, 20) are wiped, not replayed.
    recover_blocks_after(
        |p, starts| {
            edit(p, |b| {
                let at = starts[17] as usize;
                b[at..at + log::BLOCK as usize].fill(0);
            })
        },
        17,
        None,
    );
}

#[test]
fn blocks_recovery_stops_at_garbage_and_at_a_stale_record() {
    recover_blocks_after(
        |p, starts| {
            edit(p, |b| {
                b[starts[5] as usize..starts[5] as usize + 4].copy_from_slice(b"junk")
            })
        },
        5,
        Some(StopReason::BadMagic),
    );
    // A well-formed copy of record 3 where record 21 would go.
    recover_blocks_after(
        |p, starts| {
            edit(p, |b| {
                let r3 = b[starts[2] as usize..starts[3] as usize].to_vec();
                let at = starts[20] as usize;
                b[at..at + r3.len()].copy_from_slice(&r3);
            })
        },
        20,
        Some(StopReason::SequenceGap {
            expected: 21,
            found: 3,
        }),
    );
}

#[test]
fn blocks_layout_keeps_appending_across_many_preallocated_stretches() {
    // 64 KiB stretches: the records below cross dozens of them, some while zeros are still
    // being written where they go.
    let dir = TempDir::new("blocks-stretch");
    let path = dir.join("log");
    let mut e = engine(64, &EngineConfig::default());
    let config = LogConfig {
        preallocate: 64 << 10,
        ..config_in(SyncPolicy::Always, Layout::Blocks)
    };
    let (mut log, _) = Log::open(&mut e, &path, config.clone(), |_, _| {}).unwrap();
    append_range(&mut e, &mut log, 1, 300);
    log.close(&mut e).unwrap();
    let mut records = Vec::new();
    let (log, rec) = Log::open(&mut e, &path, config, |seq, data| {
        records.push((seq, data.to_vec()))
    })
    .unwrap();
    assert_eq!(rec.stop, None);
    check_records(&records, 300);
    log.close(&mut e).unwrap();
}

// ---- crash test: a writer process killed at random points -------------------------------

const CHILD_ENV: &str = "BYPASS_LOG_WRITER";

/// The writer: opens the log (recovering it), appends records forever, and prints the number
/// of each record as soon as it is acknowledged. Runs until it is killed.
fn writer(path: &Path, sync: SyncPolicy, layout: Layout) -> ! {
    use std::io::Write;
    let mut e = engine(64, &EngineConfig::default());
    let (mut log, rec) =
        Log::open(&mut e, path, config_in(sync, layout), |_, _| {}).expect("writer opens the log");
    let mut out = std::io::stdout().lock();
    writeln!(out, "start {}", rec.last_seq).unwrap();
    out.flush().unwrap();
    let mut acked = log.durable();
    // A bound on the file's growth should the parent fail to kill this process in time.
    let last = rec.last_seq + 20_000;
    loop {
        while log.pending() < 16 && log.next_seq() <= last {
            let seq = log.next_seq();
            log.append(&mut e, &payload(seq)).expect("append");
        }
        if log.pending() == 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        e.wait(None).expect("wait");
        log.process(&mut e).expect("process");
        while acked < log.durable() {
            acked += 1;
            writeln!(out, "{acked}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_records_survive_sigkill_at_random_points() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (policy, rest) = spec.split_once(':').expect("policy:layout:path");
        let (layout, path) = rest.split_once(':').expect("policy:layout:path");
        let sync = match policy {
            "always" => SyncPolicy::Always,
            "every4" => SyncPolicy::EveryN(4),
            _ => SyncPolicy::Never,
        };
        let layout = if layout == "blocks" {
            Layout::Blocks
        } else {
            Layout::Packed
        };
        writer(Path::new(path), sync, layout);
    }
    let iterations: u64 = if std::env::var_os("BYPASS_LONG").is_some() {
        500
    } else {
        50
    };
    let dir = TempDir::new("crash");
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng::new(0xC0FFEE);
    let (mut total_acked, mut torn, mut progressed) = (0u64, 0u64, 0u64);
    for i in 0..iterations {
        let policy = ["always", "every4", "never"][(i % 3) as usize];
        // Two logs, one per layout, each killed and recovered over and over.
        let layout = ["packed", "blocks"][(i / 3 % 2) as usize];
        let path = dir.join(layout);
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "acknowledged_records_survive_sigkill_at_random_points",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{policy}:{layout}:{}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Read acknowledgements on a thread; kill at a random moment after the writer has
        // recovered the log and started appending.
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut max_acked = 0u64;
            let mut started = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness prints "test NAME ... " before the writer's first line.
                if let Some((_, s)) = line.split_once("start ") {
                    started = s.parse::<u64>().ok();
                    let _ = tx.send(());
                } else if let Ok(n) = line.parse::<u64>() {
                    max_acked = max_acked.max(n);
                }
            }
            (started, max_acked)
        });
        let started_in_time = rx.recv_timeout(Duration::from_secs(10)).is_ok();
        if started_in_time {
            std::thread::sleep(Duration::from_micros(rng.below(15_000)));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            started_in_time,
            "iteration {i}: the writer did not start within 10 s"
        );
        let (started, acked) = reader.join().unwrap();

        // Recover in this process and check every byte of every record.
        let mut e = engine(64, &EngineConfig::default());
        let mut next = 1u64;
        let (log, rec) = Log::open(&mut e, &path, config(SyncPolicy::Always), |seq, data| {
            assert_eq!(seq, next, "iteration {i}: records out of order");
            assert_eq!(
                data,
                payload(seq).as_slice(),
                "iteration {i}: record {seq} corrupt"
            );
            next += 1;
        })
        .unwrap();
        assert!(
            rec.last_seq >= acked,
            "iteration {i} ({policy}): record {acked} was acknowledged but only {} recovered \
             (stop: {:?}, {layout})",
            rec.last_seq,
            rec.stop
        );
        if let Some(s) = started {
            assert!(
                rec.last_seq >= s,
                "iteration {i}: recovered records went missing"
            );
        }
        if layout == "packed" {
            assert_eq!(std::fs::metadata(&path).unwrap().len(), rec.end);
        } else {
            assert_eq!(rec.layout, Layout::Blocks);
            zero_after(&path, rec.end);
        }
        total_acked = total_acked.max(acked);
        if rec.stop.is_some() {
            torn += 1;
        }
        if acked > started.unwrap_or(0) {
            progressed += 1;
        }
        log.close(&mut e).unwrap();
    }
    eprintln!(
        "{iterations} kills: {progressed} with new acknowledged records, {torn} recoveries cut \
         a torn or corrupt tail, {total_acked} records acknowledged in all"
    );
    assert!(
        progressed >= iterations / 2,
        "the writer acknowledged new records in only {progressed} of {iterations} runs"
    );
}
