//! The benchmark behind `bypass bench shm`, run tiny: every row is measured and reported.

use bypass_shm::bench::{run, BenchOptions};

#[test]
fn a_tiny_run_measures_every_path_and_reports_them() {
    let opts = BenchOptions {
        round_trips: 300,
        warmup: 50,
        small_messages: 2_000,
        bulk_bytes: 2 << 20,
        cores: None,
    };
    let before = allowed_cpus();
    let report = run(&opts).unwrap();
    assert_eq!(allowed_cpus(), before, "the caller's CPU set is given back");
    let paths: Vec<&str> = report.latency.iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "shm channel",
            "shm channel, fresh reply",
            "raw cache-line ping-pong",
            "unix socket pair",
            "pipe pair"
        ]
    );
    for r in &report.latency {
        assert_eq!(r.samples, 300, "{}", r.path);
        assert!(
            r.p50_ns > 0 && r.p50_ns <= r.p99_ns && r.p99_ns <= r.p999_ns,
            "{r:?}"
        );
        assert!(r.p999_ns <= r.max_ns, "{r:?}");
    }
    let sizes: Vec<usize> = report.throughput.iter().map(|r| r.message_bytes).collect();
    assert_eq!(sizes, [64, 64 << 10]);
    assert_eq!(
        report.throughput[0].messages, 1_999,
        "timed from the first message"
    );
    assert_eq!(report.throughput[1].messages, 31);
    for r in &report.throughput {
        assert!(r.seconds > 0.0 && r.messages_per_sec() > 0.0, "{r:?}");
    }
    assert!(report.one_thread_ns_per_message > 0.0);
    assert!(report.ratio_to_floor().unwrap() > 0.0);

    let table = report.to_string();
    for needle in ["| shm channel |", "| pipe pair |", "65536 B", "target <= 2"] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    let json = report.to_json();
    assert!(
        json.starts_with("{\"cores\":[") && json.ends_with('}'),
        "{json}"
    );
    for key in [
        "\"p999_ns\":",
        "\"gbytes_per_sec\":",
        "\"one_thread_ns_per_message\":",
        "\"ratio_to_unix\":",
    ] {
        assert!(json.contains(key), "{key} missing from {json}");
    }
    assert_eq!(json.matches('{').count(), json.matches('}').count());
}

/// The CPUs this thread may run on, as read from /proc (no extra dependency).
fn allowed_cpus() -> String {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .unwrap()
        .to_string()
}
