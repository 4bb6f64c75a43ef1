//! The append-only file: acknowledged writes survive a restart; a torn tail is cut cleanly.

mod common;

use std::io::Write;

use bypass_kv::{AofFormat, AofOptions, FsyncPolicy, Stats};
use common::{read_exact_len, req, roundtrip, TempDir, TestServer};

const FORMATS: [AofFormat; 2] = [AofFormat::Log, AofFormat::Resp];

fn aof(dir: &TempDir, fsync: FsyncPolicy, format: AofFormat) -> Option<AofOptions> {
    Some(AofOptions {
        path: dir.path("appendonly.aof"),
        fsync,
        format,
    })
}

/// Writes `n` keys `k{i}` = `value-{i}` through one pipelined burst; returns once every write
/// is acknowledged.
fn write_keys(s: &TestServer, range: std::ops::Range<usize>) {
    let mut c = s.connect();
    let mut burst = Vec::new();
    for i in range.clone() {
        burst.extend(req(&[
            b"SET",
            format!("k{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
        ]));
    }
    c.write_all(&burst).unwrap();
    assert_eq!(
        read_exact_len(&mut c, 5 * range.len()),
        b"+OK\r\n".repeat(range.len())
    );
}

/// After a restart cut a bad tail off the file at `path` (keys 0..99 good): `SET after cut`,
/// restart again, and check that the old keys and the new one are there and nothing was
/// discarded. Returns the file's bytes.
fn write_after_the_cut_survives_a_restart(
    dir: &TempDir,
    policy: FsyncPolicy,
    format: AofFormat,
    path: &std::path::Path,
) -> Vec<u8> {
    let s = TestServer::start(aof(dir, policy, format));
    let mut c = s.connect();
    roundtrip(&mut c, &req(&[b"SET", b"after", b"cut"]), b"+OK\r\n");
    s.stop();
    let s = TestServer::start(aof(dir, policy, format));
    check_keys(&s, 0..99);
    let mut c = s.connect();
    roundtrip(&mut c, &req(&[b"GET", b"after"]), b"$3\r\ncut\r\n");
    let replay = s.stop().replay.unwrap();
    assert_eq!(
        (replay.commands, replay.discarded, replay.stop),
        (100, 0, None),
        "{format:?}"
    );
    std::fs::read(path).unwrap()
}

fn check_keys(s: &TestServer, range: std::ops::Range<usize>) {
    let mut c = s.connect();
    for i in range {
        let v = format!("value-{i}");
        roundtrip(
            &mut c,
            &req(&[b"GET", format!("k{i}").as_bytes()]),
            format!("${}\r\n{v}\r\n", v.len()).as_bytes(),
        );
    }
}

#[test]
fn every_acknowledged_write_survives_a_restart_under_each_policy() {
    for (policy, format) in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No]
        .into_iter()
        .flat_map(|p| FORMATS.map(|f| (p, f)))
    {
        let dir = TempDir::new("restart");
        let s = TestServer::start(aof(&dir, policy, format));
        write_keys(&s, 0..300);
        if policy == FsyncPolicy::Always {
            // Group commit: one pipelined burst of 300 writes takes a few syncs, not 300.
            let syncs = Stats::get(&s.stats.aof_syncs);
            assert!((1..100).contains(&syncs), "{format:?}: {syncs} syncs");
            assert_eq!(Stats::get(&s.stats.aof_appends), syncs);
        }
        let mut c = s.connect();
        // Every kind of write, with the state each leaves.
        let script: &[(&[&[u8]], &[u8])] = &[
            (&[b"INCRBY", b"n", b"40"], b":40\r\n"),
            (&[b"INCR", b"n"], b":41\r\n"),
            (&[b"DECR", b"n"], b":40\r\n"),
            (&[b"DECRBY", b"n", b"-2"], b":42\r\n"),
            (&[b"MSET", b"m1", b"a", b"m2", b"b"], b"+OK\r\n"),
            (&[b"DEL", b"m2", b"k0"], b":2\r\n"),
            (&[b"SET", b"ttl", b"x", b"EX", b"1000"], b"+OK\r\n"),
            (&[b"SET", b"gone", b"x", b"PX", b"1"], b"+OK\r\n"),
            (&[b"EXPIRE", b"k1", b"2000"], b":1\r\n"),
            (&[b"SET", b"k2", b"nx", b"NX"], b"$-1\r\n"),
        ];
        for (args, reply) in script {
            roundtrip(&mut c, &req(args), reply);
        }
        let summary = s.stop();
        assert!(summary.replay.as_ref().unwrap().commands == 0);

        let s = TestServer::start(aof(&dir, policy, format));
        check_keys(&s, 1..300);
        let mut c = s.connect();
        roundtrip(&mut c, &req(&[b"GET", b"n"]), b"$2\r\n42\r\n");
        roundtrip(
            &mut c,
            &req(&[b"MGET", b"m1", b"m2", b"k0", b"gone"]),
            b"*4\r\n$1\r\na\r\n$-1\r\n$-1\r\n$-1\r\n",
        );
        roundtrip(&mut c, &req(&[b"TTL", b"ttl"]), b":1000\r\n");
        roundtrip(&mut c, &req(&[b"TTL", b"k1"]), b":2000\r\n");
        roundtrip(&mut c, &req(&[b"GET", b"k2"]), b"$7\r\nvalue-2\r\n");
        roundtrip(&mut c, &req(&[b"DBSIZE"]), b":302\r\n");
        let summary = s.stop();
        let replay = summary.replay.unwrap();
        // 300 SETs, 4 counter writes, MSET, 2 DELs, 3 timed writes.
        assert_eq!(replay.commands, 310, "{policy} {format:?}: {replay:?}");
        assert_eq!(replay.discarded, 0);
        assert_eq!(replay.stop, None);
    }
}

/// Writes keys one request at a time, so each is its own batch (one record of the log).
fn write_keys_one_by_one(s: &TestServer, range: std::ops::Range<usize>) {
    let mut c = s.connect();
    for i in range {
        roundtrip(
            &mut c,
            &req(&[
                b"SET",
                format!("k{i}").as_bytes(),
                format!("value-{i}").as_bytes(),
            ]),
            b"+OK\r\n",
        );
    }
}

#[test]
fn a_torn_tail_is_cut_and_replay_stops_cleanly_before_it() {
    // The storage log's packed layout (what `everysec` creates) and the RESP file.
    for (format, policy) in [
        (AofFormat::Log, FsyncPolicy::EverySec),
        (AofFormat::Resp, FsyncPolicy::Always),
    ] {
        let dir = TempDir::new("torn");
        let path = dir.path("appendonly.aof");
        let s = TestServer::start(aof(&dir, policy, format));
        write_keys_one_by_one(&s, 0..100);
        s.stop();
        let full = std::fs::read(&path).unwrap();
        let last = req(&[b"SET", b"k99", b"value-99"]);
        // The last record ends with the last request in both formats (the log's record header
        // comes before its payload).
        assert!(
            full.ends_with(&last),
            "{format:?}: the file ends with the last request"
        );
        let last_record = match format {
            AofFormat::Resp => last.len(),
            AofFormat::Log => last.len() + bypass_storage_header(),
        };
        // Tear the last record: drop its final 5 bytes (inside "value-99\r\n").
        std::fs::write(&path, &full[..full.len() - 5]).unwrap();

        let s = TestServer::start(aof(&dir, policy, format));
        check_keys(&s, 0..99);
        let mut c = s.connect();
        roundtrip(&mut c, &req(&[b"EXISTS", b"k99"]), b":0\r\n");
        let replay = s.stop().replay.unwrap();
        assert_eq!(replay.commands, 99, "{format:?}");
        assert_eq!(replay.discarded, last_record as u64 - 5, "{format:?}");
        assert!(replay.stop.is_some(), "{format:?}: {replay:?}");
        let good = full[..full.len() - last_record].to_vec();
        assert!(
            std::fs::read(&path).unwrap() == good,
            "{format:?}: cut at the last good record"
        );

        // New writes go right after the cut and survive the next restart with the old ones.
        let expected = write_after_the_cut_survives_a_restart(&dir, policy, format, &path);
        assert!(expected.starts_with(&good));

        // Garbage behind the good records stops replay there too, and is cut off.
        let mut bad = expected.clone();
        bad.extend_from_slice(b"*1\r\n$x\r\n");
        bad.extend(req(&[b"SET", b"behind", b"garbage"]));
        std::fs::write(&path, &bad).unwrap();
        let s = TestServer::start(aof(&dir, policy, format));
        let mut c = s.connect();
        roundtrip(
            &mut c,
            &req(&[b"MGET", b"after", b"behind"]),
            b"*2\r\n$3\r\ncut\r\n$-1\r\n",
        );
        let replay = s.stop().replay.unwrap();
        assert_eq!(replay.commands, 100, "{format:?}");
        assert!(replay.stop.is_some(), "{format:?}: {replay:?}");
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "{format:?}: garbage cut off"
        );
    }
}

/// Where the log record holding `request` (the last such) starts in the file.
fn record_start(file: &[u8], request: &[u8]) -> usize {
    let at = file
        .windows(request.len())
        .rposition(|w| w == request)
        .expect("the request is in the file");
    at - bypass_storage_header()
}

#[test]
fn a_torn_block_of_the_log_is_cut_and_replay_stops_cleanly_before_it() {
    // `always` writes the storage log in blocks: a file header, then each batch at a 4 KiB
    // boundary, then zeros prepared ahead.
    let dir = TempDir::new("torn-blocks");
    let path = dir.path("appendonly.aof");
    let s = TestServer::start(aof(&dir, FsyncPolicy::Always, AofFormat::Log));
    write_keys_one_by_one(&s, 0..100);
    s.stop();
    let full = std::fs::read(&path).unwrap();
    let last = req(&[b"SET", b"k99", b"value-99"]);
    let start = record_start(&full, &last);
    assert_eq!(start % 4096, 0, "records start at block boundaries");
    let end = start + bypass_storage_header() + last.len();
    assert!(
        full[end..].iter().all(|&b| b == 0),
        "zeros after the last record"
    );
    // Tear the last record: its final 5 bytes never reached the disk.
    let mut torn = full.clone();
    torn[end - 5..end].fill(0);
    std::fs::write(&path, &torn).unwrap();

    let s = TestServer::start(aof(&dir, FsyncPolicy::Always, AofFormat::Log));
    check_keys(&s, 0..99);
    let mut c = s.connect();
    roundtrip(&mut c, &req(&[b"EXISTS", b"k99"]), b":0\r\n");
    let replay = s.stop().replay.unwrap();
    assert_eq!(replay.commands, 99);
    assert_eq!(replay.discarded, (end - 5 - start) as u64);
    assert!(replay.stop.is_some(), "{replay:?}");
    let cut = std::fs::read(&path).unwrap();
    assert_eq!(
        cut[..start],
        full[..start],
        "the good records are untouched"
    );
    assert!(
        cut[start..].iter().all(|&b| b == 0),
        "the torn record is gone"
    );

    // New writes go where the torn record was and survive the next restart with the old ones.
    let expected =
        write_after_the_cut_survives_a_restart(&dir, FsyncPolicy::Always, AofFormat::Log, &path);
    let after = req(&[b"SET", b"after", b"cut"]);
    assert_eq!(record_start(&expected, &after), start);

    // Garbage in the block where the next record would go stops replay there too, and is
    // wiped.
    let mut bad = expected.clone();
    let next = start + 4096;
    bad[next..next + 8].copy_from_slice(b"*1\r\n$x\r\n");
    std::fs::write(&path, &bad).unwrap();
    let s = TestServer::start(aof(&dir, FsyncPolicy::Always, AofFormat::Log));
    let mut c = s.connect();
    roundtrip(
        &mut c,
        &req(&[b"MGET", b"after", b"k98"]),
        b"*2\r\n$3\r\ncut\r\n$8\r\nvalue-98\r\n",
    );
    let replay = s.stop().replay.unwrap();
    assert_eq!(replay.commands, 100);
    assert!(replay.stop.is_some(), "{replay:?}");
    let wiped = std::fs::read(&path).unwrap();
    assert_eq!(wiped[..next], expected[..next]);
    assert!(wiped[next..].iter().all(|&b| b == 0), "garbage wiped");
}

/// Bytes of a storage-log record header (magic, length, sequence number, checksum).
fn bypass_storage_header() -> usize {
    20
}

#[test]
fn a_log_that_cannot_be_opened_is_a_clear_error() {
    let dir = TempDir::new("bad-path");
    for format in FORMATS {
        let e = TestServer::try_start(
            Some(AofOptions {
                path: dir.path("no/such/dir/appendonly.aof"),
                fsync: FsyncPolicy::Always,
                format,
            }),
            Default::default(),
        )
        .err()
        .expect("opening fails");
        assert_eq!(e.kind(), bypass::ErrorKind::NotFound, "{format:?}: {e}");
        assert!(e.message().contains("no/such/dir/appendonly.aof"), "{e}");
    }
    let e = "sometimes".parse::<FsyncPolicy>().unwrap_err();
    assert!(e.message().contains("always, everysec, no"), "{e}");
    assert_eq!(
        "everysec".parse::<FsyncPolicy>().unwrap(),
        FsyncPolicy::EverySec
    );
    assert_eq!("resp".parse::<AofFormat>().unwrap(), AofFormat::Resp);
    assert!("xml"
        .parse::<AofFormat>()
        .unwrap_err()
        .message()
        .contains("log or resp"));
}

#[test]
fn large_values_from_many_clients_survive_a_restart() {
    for format in FORMATS {
        let dir = TempDir::new("large");
        let s = TestServer::start(aof(&dir, FsyncPolicy::Always, format));
        let value =
            |i: usize| -> Vec<u8> { (0..5 << 20).map(|j| ((j * 7 + i) % 253) as u8).collect() };
        // Four clients send 5 MiB each at once: more than one turn's early-append threshold.
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let mut c = s.connect();
                std::thread::spawn(move || {
                    roundtrip(
                        &mut c,
                        &req(&[b"SET", format!("big{i}").as_bytes(), &value(i)]),
                        b"+OK\r\n",
                    );
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        s.stop();
        let s = TestServer::start(aof(&dir, FsyncPolicy::Always, format));
        let mut c = s.connect();
        for i in 0..4 {
            let v = value(i);
            let mut want = format!("${}\r\n", v.len()).into_bytes();
            want.extend_from_slice(&v);
            want.extend_from_slice(b"\r\n");
            roundtrip(&mut c, &req(&[b"GET", format!("big{i}").as_bytes()]), &want);
        }
        let replay = s.stop().replay.unwrap();
        assert_eq!((replay.commands, replay.stop), (4, None), "{format:?}");
    }
}
