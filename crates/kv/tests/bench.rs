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

fn namespaces_of_this_process() -> Vec<String> {
    let prefix = format!("bypass-{}-", std::process::id());
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn across_a_veth_pair_the_server_runs_on_the_user_space_stack() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED across_a_veth_pair_the_server_runs_on_the_user_space_stack: needs root");
        return;
    }
    let report = bench(&BenchOptions {
        requests: 2000,
        clients: vec![1],
        pipelines: vec![1, 8],
        libos: vec![bypass::LibOsName::Kernel, bypass::LibOsName::Xdp],
        durable: false,
        veth: true,
        // Pinned as the CLI pins, when there are two CPUs to pin to.
        cpus: (std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2).then_some((0, 1)),
        ..BenchOptions::default()
    })
    .expect("benchmark runs across veth (needs root, redis-server, redis-benchmark)");
    // 3 servers x 2 tests x 2 pipelines.
    assert_eq!(report.rows.len(), 12, "{report}");
    for r in &report.rows {
        assert!(r.requests_per_sec > 0.0, "{r:?}");
        assert!(r.vs_redis.is_some(), "{r:?}");
    }
    assert!(
        report.rows.iter().any(|r| r.server == "bypass/xdp"),
        "{report}"
    );
    assert!(
        report.command.contains(" -h 10.77."),
        "redis-benchmark reaches the server across the veth pair: {}",
        report.command
    );
    assert!(
        namespaces_of_this_process().is_empty(),
        "every topology is removed: {:?}",
        namespaces_of_this_process()
    );
}
