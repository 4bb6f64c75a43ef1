//! The `bypass` binary as a user runs it: every command's success path, and bad input that
//! must end in `error: ...` and a non-zero exit, never a panic.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddrV4, TcpListener};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

fn bypass(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bypass"))
        .args(args)
        .output()
        .expect("the bypass binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the command failed cleanly with a message containing every one of `needles`.
fn assert_fails(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "should fail; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "'{n}' missing from: {stderr}");
    }
}

/// A loopback port free right now: bound, read, released.
fn free_port() -> SocketAddrV4 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    match l.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("not IPv4: {other}"),
    }
}

/// A temporary file removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "bypass-cli-test-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A child process killed and reaped when dropped, even if the test fails.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bypass echo serve` and waits for its "listening" line; returns the rest of its
/// stdout to read.
fn start_server(extra: &[&str]) -> (ChildGuard, SocketAddrV4, BufReader<ChildStdout>) {
    let addr = free_port();
    let listen = addr.to_string();
    let mut args = vec!["echo", "serve", "--libos", "kernel", "--listen", &listen];
    args.extend_from_slice(extra);
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_bypass"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.contains(&format!("listening on {listen}")),
        "server said: {line:?}"
    );
    (child, addr, stdout)
}

#[test]
fn demo_runs_and_prints_a_latency_summary() {
    let out = bypass(&["demo", "--duration", "0.3"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for needle in [
        "user-space TCP/IP stack over the in-process simulated wire",
        "every byte checked",
        "p50",
        "p99.9",
        "msgs/s",
    ] {
        assert!(stdout.contains(needle), "'{needle}' missing: {stdout}");
    }
}

#[test]
fn doctor_reports_every_check_with_a_fix_for_what_is_missing() {
    let out = bypass(&["doctor"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in [
        "kernel",
        "io_uring",
        "AF_XDP",
        "huge pages",
        "root",
        "CAP_NET_RAW",
        "CAP_NET_ADMIN",
        "CAP_BPF",
        "CAP_SYS_ADMIN",
        "CAP_IPC_LOCK",
        "RLIMIT_MEMLOCK",
        "DPDK",
        "ethtool",
        "redis-benchmark",
    ] {
        assert!(stdout.contains(name), "'{name}' missing: {stdout}");
    }
    for line in stdout.lines() {
        assert!(
            line.starts_with("ok ") || (line.starts_with("missing ") && line.contains(" -> ")),
            "each line is ok, or missing with a fix: {line}"
        );
    }
    let json = bypass(&["doctor", "--json"]);
    assert!(json.status.success());
    let checks: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let checks = checks.as_array().unwrap();
    assert_eq!(checks.len(), stdout.lines().count());
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(
            status == "ok" || (status == "missing" && c["fix"].is_string()),
            "{c}"
        );
    }
}

#[test]
fn echo_serve_and_run_talk_across_two_processes() {
    let (mut server, addr, mut server_out) = start_server(&["--max-conns", "4"]);
    let connect = addr.to_string();
    let out = bypass(&[
        "echo",
        "run",
        "--libos",
        "kernel",
        "--connect",
        &connect,
        "--size",
        "1460",
        "--count",
        "400",
        "--conns",
        "4",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["messages"], 400);
    assert_eq!(report["bytes"], 400 * 1460);
    assert_eq!(report["connections"], 4);
    assert_eq!(report["libos"], "kernel");
    // The server served its 4 connections and exits by itself with a summary.
    let status = server.0.wait().unwrap();
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut server.0.stderr.take().unwrap(), &mut errors).unwrap();
    assert!(status.success(), "{errors}");
    assert!(errors.is_empty(), "no errors or warnings: {errors}");
    let mut summary = String::new();
    std::io::Read::read_to_string(&mut server_out, &mut summary).unwrap();
    // 400 measured messages and the default warm-up of 10% more.
    let echoed = format!("{} B echoed", 440 * 1460);
    assert!(summary.starts_with("served 4 connections, "), "{summary}");
    assert!(
        summary.contains(&echoed) && summary.contains(" 0 connection errors"),
        "{summary}"
    );
}

#[test]
fn echo_over_udp_prints_a_table() {
    let (_server, addr, _out) = start_server(&["--udp"]);
    let connect = addr.to_string();
    let out = bypass(&[
        "echo",
        "run",
        "--connect",
        &connect,
        "--udp",
        "--size",
        "512",
        "--count",
        "100",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().contains("p99.9 µs"), "{stdout}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["kernel", "udp", "1", "512", "closed", "100"],
        "{stdout}"
    );
}

#[test]
fn bench_echo_compares_with_linux_sockets() {
    let out = bypass(&[
        "bench",
        "echo",
        "--libos",
        "kernel,sim",
        "--count",
        "400",
        "--rounds",
        "2",
        "--warmup",
        "50",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["target"], "linux");
    assert_eq!(results[1]["target"], "kernel");
    // Both sim LibOses in one thread: every echo checked byte for byte, 200 per round, and a
    // bulk transfer checked byte for byte; the socket targets have no bulk column.
    assert_eq!(results[2]["target"], "sim");
    assert!(results[2]["bulk_gb_per_s"].as_f64().unwrap() > 0.0);
    assert!(results[1].get("bulk_gb_per_s").is_none());
    assert_eq!(results[0]["p50_vs_linux"], 1.0);
    for r in results {
        assert_eq!(r["messages"], 400);
        assert!(r["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn an_unknown_libos_is_an_error_listing_the_choices() {
    let out = bypass(&["echo", "run", "--libos", "warp"]);
    assert_fails(&out, &["unknown libOS 'warp'", "kernel, uring"]);
    let out = bypass(&["bench", "echo", "--libos", "kernel,warp"]);
    assert_fails(&out, &["unknown libOS 'warp'"]);
}

#[test]
fn a_malformed_configuration_names_the_file_and_the_problem() {
    let bad = TempFile::new("libos = 'kernel'\n[pool]\nframes = 'many'\n");
    let out = bypass(&["--config", bad.path(), "echo", "run"]);
    assert_fails(&out, &[bad.path(), "frames"]);
    let typo = TempFile::new("[cli]\nsizee = 64\n");
    let out = bypass(&["--config", typo.path(), "demo"]);
    assert_fails(&out, &["sizee", "docs/config.toml"]);
    let out = bypass(&["--config", "/nonexistent/bypass.toml", "doctor"]);
    assert_fails(&out, &["/nonexistent/bypass.toml"]);
}

#[test]
fn the_configuration_file_sets_echo_defaults() {
    let (_server, addr, _out) = start_server(&[]);
    let file = TempFile::new(&format!(
        "libos = 'kernel'\n[cli]\nconnect = '{addr}'\nsize = 33\ncount = 70\nconns = 2\n"
    ));
    let out = bypass(&["--config", file.path(), "echo", "run", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["message_size"], 33);
    assert_eq!(report["messages"], 70);
    assert_eq!(report["connections"], 2);
}

#[test]
fn an_address_in_use_is_an_error_with_a_hint() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let out = bypass(&["echo", "serve", "--listen", &addr]);
    assert_fails(&out, &["already in use", &addr, "hint: "]);
}

#[test]
fn connection_refused_is_an_error_with_a_hint() {
    let addr = free_port().to_string();
    let out = bypass(&["echo", "run", "--connect", &addr, "--count", "1"]);
    assert_fails(&out, &["refused", &addr, "hint: start a server first"]);
}

#[test]
fn a_bad_address_is_an_error_showing_the_expected_form() {
    for bad in ["1.2.3", "localhost", "1.2.3.4:99999", "[::1]:80"] {
        let out = bypass(&["echo", "run", "--connect", bad]);
        assert_fails(&out, &["not an IPv4 address and port", bad]);
    }
    let out = bypass(&["echo", "serve", "--listen", "nope"]);
    assert_fails(&out, &["nope"]);
}

#[test]
fn bench_echo_across_veth_measures_the_user_space_stack_at_both_ends() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED bench_echo_across_veth_measures_the_user_space_stack_at_both_ends: needs root"
        );
        return;
    }
    let out = bypass(&[
        "bench",
        "echo",
        "--libos",
        "xdp",
        "--topo",
        "veth",
        "--count",
        "300",
        "--rounds",
        "1",
        "--warmup",
        "50",
        "--bulk-mib",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pairs: Vec<(String, String)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["messages"], 300, "{r}");
            assert!(r["bulk_mb_per_s"].as_f64().unwrap() > 0.0, "{r}");
            (
                r["server"].as_str().unwrap().to_string(),
                r["client"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [("linux", "linux"), ("xdp", "linux"), ("xdp", "xdp")];
    assert_eq!(
        pairs,
        expect.map(|(s, c)| (s.to_string(), c.to_string())).to_vec()
    );
}
