//! The storage benchmark, run tiny: every row of ours measures something, the report renders as
//! a table and as JSON, and the file it created is gone afterwards.

mod common;

use std::time::Duration;

use bypass_storage::{bench, BenchOptions};
use common::TempDir;

#[test]
fn a_tiny_run_measures_every_row_of_ours_and_cleans_up() {
    let dir = TempDir::new("bench");
    let path = dir.join("bench-file");
    let opts = BenchOptions {
        path: Some(path.clone()),
        size: 8 << 20,
        runtime: Duration::from_millis(150),
        depths: vec![1, 4],
        fio: false,
        sqpoll_cpu: Some(0),
        ..BenchOptions::default()
    };
    let report = bench(&opts).unwrap();
    assert!(!path.exists(), "the file the benchmark created is deleted");
    let names: Vec<(&str, u32, bool)> = report
        .rows
        .iter()
        .map(|r| (r.engine.as_str(), r.queue_depth, r.direct))
        .collect();
    assert_eq!(
        names,
        [
            ("bypass", 1, true),
            ("bypass", 4, true),
            ("bypass+fixed", 1, true),
            ("bypass+fixed", 4, true),
            ("bypass+fixed+batched", 1, true),
            ("bypass+fixed+batched", 4, true),
            ("bypass+spin", 1, true),
            ("bypass+spin", 4, true),
            ("bypass+sqpoll", 1, true),
            ("bypass+sqpoll", 4, true),
            ("bypass", 32, false),
        ]
    );
    for r in &report.rows {
        assert_eq!(r.error, None, "{r:?}");
        assert!(r.ios > 0 && r.kiops > 0.0, "{r:?}");
        assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{r:?}");
        assert!(r.cpu_us_per_io > 0.0, "{r:?}");
        // System calls per I/O: a batched sleeping row submits and waits in one
        // `io_uring_enter` per wake-up, so at most one per I/O; the eager sleeping rows add a
        // submit per requeued read, so at most two (one read per wake-up at least); the
        // spinning row submits at requeue and makes one call per batch of completions to run
        // the deferred completion work, so at most two; SQPOLL submits and reaps without
        // calls. Give or take the call in flight when the measurement starts.
        let bound = match r.engine.as_str() {
            "bypass" | "bypass+fixed" | "bypass+spin" => 2.0,
            _ => 1.0,
        };
        let enters = r.enters_per_io.expect("our rows count their system calls");
        assert!(enters <= bound + 2.0 / r.ios as f64, "{r:?}");
    }
    let table = report.to_string();
    assert!(table.contains("bypass+sqpoll"), "{table}");
    assert!(table.contains("bypass page cache"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 11);
    assert_eq!(json["rows"][0]["engine"], "bypass");
    assert_eq!(json["size"], 8 << 20);
}

#[test]
fn rounds_take_turns_and_report_the_median_of_each_row() {
    let dir = TempDir::new("bench-rounds");
    let path = dir.join("bench-file");
    let opts = BenchOptions {
        path: Some(path.clone()),
        size: 8 << 20,
        runtime: Duration::from_millis(100),
        depths: vec![1],
        fio: false,
        sqpoll_cpu: None,
        page_cache: false,
        rounds: 3,
        ..BenchOptions::default()
    };
    let report = bench(&opts).unwrap();
    assert_eq!(report.rounds, 3);
    let names: Vec<&str> = report.rows.iter().map(|r| r.engine.as_str()).collect();
    assert_eq!(
        names,
        [
            "bypass",
            "bypass+fixed",
            "bypass+fixed+batched",
            "bypass+spin"
        ],
        "one row per engine, not one per round"
    );
    for r in &report.rows {
        assert_eq!(r.error, None, "{r:?}");
        // Three rounds of 100 ms at depth 1 on any disk: well over one read per round.
        assert!(r.ios >= 3 && r.kiops > 0.0, "{r:?}");
        assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{r:?}");
    }
    assert!(report.to_string().contains("median of 3 rounds"));
    let zero = BenchOptions {
        rounds: 0,
        ..opts.clone()
    };
    let err = bench(&zero).unwrap_err();
    assert!(err.to_string().contains("rounds"), "{err}");
}

#[test]
fn an_existing_file_is_used_and_kept() {
    let dir = TempDir::new("bench-keep");
    let path = dir.join("mine");
    std::fs::write(&path, vec![1u8; 1 << 20]).unwrap();
    let opts = BenchOptions {
        path: Some(path.clone()),
        size: 1 << 20,
        runtime: Duration::from_millis(50),
        depths: vec![2],
        fio: false,
        sqpoll_cpu: None,
        page_cache: false,
        ..BenchOptions::default()
    };
    let report = bench(&opts).unwrap();
    assert_eq!(report.rows.len(), 4);
    assert!(report
        .notes
        .iter()
        .any(|n| n.contains("SQPOLL rows skipped")));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![1u8; 1 << 20],
        "kept, unchanged"
    );
    let err = bench(&BenchOptions {
        depths: vec![0],
        ..opts
    })
    .unwrap_err();
    assert!(err.message().contains("queue depth 0"), "{err}");
}

#[test]
fn fio_json_is_parsed_into_kiops_latency_and_cpu() {
    let json = br#"fio: some warning
{
  "fio version" : "fio-3.33",
  "jobs" : [ {
      "jobname" : "bypass-bench",
      "usr_cpu" : 10.0,
      "sys_cpu" : 30.0,
      "read" : {
        "iops" : 50000.5,
        "total_ios" : 250000,
        "runtime" : 5000,
        "clat_ns" : { "percentile" : { "50.000000" : 60416, "99.000000" : 120832 } },
        "lat_ns" : { "percentile" : { "50.000000" : 75776, "99.000000" : 150528 } }
      }
  } ]
}"#;
    let row = bypass_storage::bench::parse_fio(json).unwrap();
    assert!((row.kiops - 50.0005).abs() < 1e-9);
    assert!((row.p50_us - 75.776).abs() < 1e-9);
    assert!((row.p99_us - 150.528).abs() < 1e-9);
    assert_eq!(row.fio_clat_p50_us, Some(60.416));
    assert_eq!(row.enters_per_io, None);
    // 40 % of 5 s = 2 s of CPU over 250 000 I/Os = 8 µs each.
    assert!((row.cpu_us_per_io - 8.0).abs() < 1e-9);
    assert_eq!(row.ios, 250_000);
    assert!(bypass_storage::bench::parse_fio(b"not json").is_err());
    assert!(bypass_storage::bench::parse_fio(b"{\"jobs\": []}").is_err());
}
