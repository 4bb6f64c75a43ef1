//! A small run of the benchmark: redis-server and this server, plain and durable rows.

use bypass_kv::bench::{bench, BenchOptions};

#[test]
fn a_small_benchmark_run_measures_every_target_and_ratio() {
    let report = bench(&BenchOptions {
        requests: 2000,
        durable_requests: 100,
        clients: vec![1, 4],
        pipelines: vec![1, 4],
        poll: bypass::PollMode::Block,
        ..BenchOptions::default()
    })
    .expect("benchmark runs (needs redis-server and redis-benchmark)");
    // Plain: 2 servers x 2 tests x 4 combos; durable: 2 servers x SET x 2 client counts.
    assert_eq!(report.rows.len(), 16 + 4, "{report}");
    for r in &report.rows {
        assert!(r.requests_per_sec > 0.0, "{r:?}");
        assert!(r.p50_ms.is_some() && r.p99_ms.is_some(), "{r:?}");
        let ratio = r.vs_redis.expect("every row has a redis-server baseline");
        if r.server == "redis-server" {
            assert_eq!(ratio, 1.0);
        } else {
            assert_eq!(r.server, "bypass/kernel");
        }
        assert!(!r.durable || (r.test == "SET" && r.pipeline == 1), "{r:?}");
    }
    let table = report.to_string();
    assert_eq!(table.lines().count(), 2 + report.rows.len());
    assert!(
        table.contains("| bypass/kernel | fsync always | SET | 4 | 1 |"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), report.rows.len());
    assert!(
        report
            .command
            .starts_with("redis-benchmark -h 127.0.0.1 -p "),
        "{}",
        report.command
    );
}
