//! `bypass bench kv`: `redis-benchmark` against redis-server and against this server, in one
//! run, side by side.
//!
//! For every target the benchmark runs `redis-benchmark -t set,get -d 64 --csv` with each
//! combination of client count (`-c`) and pipeline depth (`-P`), parses requests per second
//! and the p50/p99 latencies from its CSV, and reports each row with its ratio to redis-server
//! under the same settings. The *durable* rows run SET only, with every write synced before its
//! reply: redis-server with `appendonly yes` and `appendfsync always`, this server with
//! `fsync always`.
//!
//! Targets: redis-server (started on a free loopback port, no persistence), this server on a
//! thread of this process with each libOS in [`BenchOptions::libos`], and any server already
//! running elsewhere ([`BenchOptions::external`]): the hook for libOSes that need a network
//! topology, e.g. `bypass kv serve --libos xdp` in a namespace across a veth pair.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use bypass::{Config, Error, ErrorKind, LibOs, LibOsName, PollMode, Result};
use bypass_devices::netns;
use bypass_devices::topo::{Topology, TopologySpec};

use crate::aof::{AofFormat, FsyncPolicy};
use crate::server::{AofOptions, ServeOptions, Server, ServerLimits};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Requests per redis-benchmark run (`-n`).
    pub requests: u64,
    /// Requests per durable run (every one waits for an fsync).
    pub durable_requests: u64,
    /// Client counts (`-c`).
    pub clients: Vec<u32>,
    /// Pipeline depths (`-P`).
    pub pipelines: Vec<u32>,
    /// Value size in bytes (`-d`).
    pub value_size: usize,
    /// Key space (`-r`): keys are drawn from this many.
    pub keyspace: u64,
    /// LibOSes to run this server on, in this process.
    pub libos: Vec<LibOsName>,
    /// How this server's LibOs waits. `Block` sleeps in epoll when idle, as redis-server
    /// does; `Spin` busy-polls a core.
    pub poll: PollMode,
    /// Servers already running elsewhere, benchmarked as they are: (name, address).
    pub external: Vec<(String, SocketAddrV4)>,
    /// Run the durable rows.
    pub durable: bool,
    /// Layout of this server's append-only file in the durable rows.
    pub aof_format: AofFormat,
    /// Where durable runs keep their append-only files (a fresh directory is made inside).
    pub dir: PathBuf,
    pub redis_server: PathBuf,
    pub redis_benchmark: PathBuf,
    /// Longest one redis-benchmark run may take before the benchmark gives up on it.
    pub run_timeout: Duration,
    /// Run every server across a veth pair between two network namespaces (made and removed
    /// here; needs root) instead of on loopback: the server in namespace A, redis-benchmark in
    /// B. `xdp` and `packet` need this.
    pub veth: bool,
    /// CPUs to pin (redis-benchmark, the server) to, in veth runs.
    pub cpus: Option<(usize, usize)>,
}

impl Default for BenchOptions {
    fn default() -> BenchOptions {
        BenchOptions {
            requests: 100_000,
            durable_requests: 5_000,
            clients: vec![1, 50],
            pipelines: vec![1, 16],
            value_size: 64,
            keyspace: 100_000,
            libos: vec![LibOsName::Kernel],
            poll: PollMode::Block,
            external: Vec::new(),
            durable: true,
            aof_format: AofFormat::Log,
            dir: std::env::temp_dir(),
            redis_server: "redis-server".into(),
            redis_benchmark: "redis-benchmark".into(),
            run_timeout: Duration::from_secs(300),
            veth: false,
            cpus: None,
        }
    }
}

/// One redis-benchmark result.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Row {
    /// `redis-server`, `bypass/kernel`, or an external target's name.
    pub server: String,
    /// Every write synced before its reply.
    pub durable: bool,
    /// `SET` or `GET`.
    pub test: String,
    pub clients: u32,
    pub pipeline: u32,
    pub requests_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// requests_per_sec over redis-server's in the same settings (1.0 for redis-server).
    pub vs_redis: Option<f64>,
}

/// Everything one benchmark run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The redis-benchmark command line of the first run, with `-p`, `-c`, `-P` varying.
    pub command: String,
    pub value_size: usize,
    pub requests: u64,
    pub durable_requests: u64,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| server | durable | test | clients | pipeline | requests/s | p50 ms | p99 ms | vs redis |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|")?;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        for r in &self.rows {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} |",
                r.server,
                if r.durable { "fsync always" } else { "no" },
                r.test,
                r.clients,
                r.pipeline,
                r.requests_per_sec,
                ms(r.p50_ms),
                ms(r.p99_ms),
                r.vs_redis.map_or("-".to_string(), |v| format!("{v:.2}x")),
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark. Needs `redis-server` and `redis-benchmark` (Debian: redis-server,
/// redis-tools).
pub fn bench(opts: &BenchOptions) -> Result<Report> {
    let mut rows = Vec::new();
    let dir = opts
        .dir
        .join(format!("bypass-kv-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::os(e, format!("cannot create {}", dir.display())))?;
    let _cleanup = RemoveDir(dir.clone());
    let mut command = String::new();

    let tests = |durable: bool| {
        if durable {
            vec!["set"]
        } else {
            vec!["set", "get"]
        }
    };
    let mut modes = vec![false];
    if opts.durable {
        modes.push(true);
    }
    for &durable in &modes {
        let requests = if durable {
            opts.durable_requests
        } else {
            opts.requests
        };
        let mut measure = |server: &str, site: &Site, addr: SocketAddrV4, rows: &mut Vec<Row>| {
            for (c, p) in combos(opts, durable) {
                let out = run_benchmark(
                    opts,
                    site,
                    addr,
                    &tests(durable),
                    requests,
                    c,
                    p,
                    &mut command,
                )?;
                rows.extend(out.into_iter().map(|(test, rps, p50, p99)| Row {
                    server: server.to_string(),
                    durable,
                    test,
                    clients: c,
                    pipeline: p,
                    requests_per_sec: rps,
                    p50_ms: p50,
                    p99_ms: p99,
                    vs_redis: None,
                }));
            }
            Ok::<(), Error>(())
        };
        // redis-server.
        {
            let site = Site::new(opts, true)?;
            let redis = RedisServer::start(opts, &site, &dir, durable)?;
            measure("redis-server", &site, redis.addr, &mut rows)?;
        }
        // This server, on each libOS.
        for &libos in &opts.libos {
            let aof = durable.then(|| AofOptions {
                path: dir.join(format!("bypass-{libos}.aof")),
                fsync: FsyncPolicy::Always,
                format: opts.aof_format,
            });
            let site = Site::new(opts, uses_kernel_stack(libos))?;
            let ours = InProcessServer::start(opts, &site, libos, aof)?;
            measure(&format!("bypass/{libos}"), &site, ours.addr, &mut rows)?;
            ours.stop()?;
        }
        // Servers run elsewhere; their durability is whatever they were started with, so they
        // appear in the plain rows only.
        if !durable {
            for (name, addr) in &opts.external {
                measure(name, &Site::Loopback, *addr, &mut rows)?;
            }
        }
    }
    // Ratios to redis-server in the same settings.
    let baseline: Vec<Row> = rows
        .iter()
        .filter(|r| r.server == "redis-server")
        .cloned()
        .collect();
    for r in &mut rows {
        r.vs_redis = baseline
            .iter()
            .find(|b| {
                b.durable == r.durable
                    && b.test == r.test
                    && b.clients == r.clients
                    && b.pipeline == r.pipeline
            })
            .filter(|b| b.requests_per_sec > 0.0)
            .map(|b| r.requests_per_sec / b.requests_per_sec);
    }
    // Rows of the same settings next to each other (the sort is stable: redis-server first).
    rows.sort_by(|a, b| {
        (a.durable, &a.test, a.clients, a.pipeline)
            .cmp(&(b.durable, &b.test, b.clients, b.pipeline))
    });
    Ok(Report {
        command,
        value_size: opts.value_size,
        requests: opts.requests,
        durable_requests: opts.durable_requests,
        rows,
    })
}

/// (clients, pipeline) pairs to run; durable runs use pipeline 1 only (as a client that waits
/// for each acknowledgement would).
fn combos(opts: &BenchOptions, durable: bool) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &c in &opts.clients {
        for &p in &opts.pipelines {
            if !durable || p == 1 {
                out.push((c, p));
            }
        }
    }
    out
}

type Measured = (String, f64, Option<f64>, Option<f64>);

/// Runs redis-benchmark once; returns (test, requests/s, p50 ms, p99 ms) per test.
#[allow(clippy::too_many_arguments)]
fn run_benchmark(
    opts: &BenchOptions,
    site: &Site,
    addr: SocketAddrV4,
    tests: &[&str],
    requests: u64,
    clients: u32,
    pipeline: u32,
    command: &mut String,
) -> Result<Vec<Measured>> {
    let args: Vec<String> = vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
        "-t".into(),
        tests.join(","),
        "-n".into(),
        requests.to_string(),
        "-c".into(),
        clients.to_string(),
        "-P".into(),
        pipeline.to_string(),
        "-d".into(),
        opts.value_size.to_string(),
        "-r".into(),
        opts.keyspace.to_string(),
        "--csv".into(),
    ];
    if command.is_empty() {
        *command = format!("{} {}", opts.redis_benchmark.display(), args.join(" "));
    }
    let child = site
        .client_command(&opts.redis_benchmark, opts.cpus.map(|(c, _)| c))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::os(
                e,
                format!(
                    "cannot run {} (install Debian's redis-tools)",
                    opts.redis_benchmark.display()
                ),
            )
        })?;
    let out = wait_with_deadline(child, opts.run_timeout).map_err(|e| {
        Error::new(
            e.kind(),
            format!("redis-benchmark against {addr} (-c {clients} -P {pipeline}): {e}"),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Io,
            format!(
                "redis-benchmark against {addr} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let rows = parse_csv(&text);
    if rows.len() != tests.len() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("redis-benchmark against {addr} printed no result for every test:\n{text}"),
        ));
    }
    Ok(rows)
}

/// Waits for `child` to exit and collects its output; kills it after `timeout` (a server that
/// stopped answering would otherwise hang the benchmark forever).
fn wait_with_deadline(mut child: Child, timeout: Duration) -> Result<std::process::Output> {
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(
                    ErrorKind::TimedOut,
                    format!(
                        "did not finish within {} s (the server stopped answering?); killed",
                        timeout.as_secs()
                    ),
                ));
            }
            Err(e) => return Err(Error::os(e, "waiting for redis-benchmark")),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    })
}

/// Parses redis-benchmark's `--csv` output: a header naming the columns, then one quoted row
/// per test. Columns other than test and rps are optional (older versions print only those).
pub fn parse_csv(text: &str) -> Vec<Measured> {
    let split = |line: &str| -> Vec<String> {
        line.split(',')
            .map(|f| f.trim().trim_matches('"').to_string())
            .collect()
    };
    let mut lines = text.lines().filter(|l| l.starts_with('"'));
    let Some(header) = lines.next().map(split) else {
        return Vec::new();
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(test), Some(rps)) = (col("test"), col("rps")) else {
        return Vec::new();
    };
    let (p50, p99) = (col("p50_latency_ms"), col("p99_latency_ms"));
    lines
        .filter_map(|l| {
            let f = split(l);
            let num = |i: Option<usize>| i.and_then(|i| f.get(i)).and_then(|v| v.parse().ok());
            Some((f.get(test)?.clone(), num(Some(rps))?, num(p50), num(p99)))
        })
        .collect()
}

/// Whether this server on `libos` uses the kernel's TCP/IP (and so needs a kernel address).
fn uses_kernel_stack(libos: LibOsName) -> bool {
    matches!(libos, LibOsName::Kernel | LibOsName::Uring)
}

/// Where one server runs and where redis-benchmark reaches it from.
enum Site {
    /// Both on loopback, in this namespace.
    Loopback,
    /// The server in namespace A of a veth topology of its own, redis-benchmark in B.
    Veth(Topology),
}

/// The server's port across a veth pair (the namespaces are fresh, so it is free).
const VETH_PORT: u16 = 6379;

/// `ip netns exec NS taskset -c CPU program`, leaving out what is not asked for.
fn command_in(program: &Path, ns: Option<String>, cpu: Option<usize>) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = ns {
        argv.extend(["ip", "netns", "exec"].map(Into::into));
        argv.push(ns.into());
    }
    if let Some(cpu) = cpu {
        argv.extend(["taskset", "-c"].map(Into::into));
        argv.push(cpu.to_string().into());
    }
    argv.push(program.into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

impl Site {
    /// A loopback site, or with [`BenchOptions::veth`] a fresh veth topology, whose side A
    /// has a kernel address if the server uses kernel sockets.
    fn new(opts: &BenchOptions, kernel_stack: bool) -> Result<Site> {
        if !opts.veth {
            return Ok(Site::Loopback);
        }
        let topo = Topology::up(TopologySpec::unique()).map_err(|e| {
            Error::os(
                e,
                "cannot create a veth topology (needs root, iproute2 and ethtool)",
            )
        })?;
        if kernel_stack {
            topo.add_kernel_address_a()
                .map_err(|e| Error::os(e, "cannot give namespace A its kernel address"))?;
        }
        Ok(Site::Veth(topo))
    }

    /// The address the server listens on; port 0 on loopback asks for a free one.
    fn listen(&self) -> SocketAddrV4 {
        match self {
            Site::Loopback => SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            Site::Veth(t) => SocketAddrV4::new(t.spec().ip_a().into(), VETH_PORT),
        }
    }

    /// `program` run where redis-benchmark runs, on `cpu` if given.
    fn client_command(&self, program: &Path, cpu: Option<usize>) -> Command {
        command_in(program, self.client_ns(), cpu)
    }

    /// `program` run where the server runs, on `cpu` if given.
    fn server_command(&self, program: &Path, cpu: Option<usize>) -> Command {
        let ns = match self {
            Site::Loopback => None,
            Site::Veth(t) => Some(t.spec().ns_a.clone()),
        };
        command_in(program, ns, cpu)
    }

    fn client_ns(&self) -> Option<String> {
        match self {
            Site::Loopback => None,
            Site::Veth(t) => Some(t.spec().ns_b.clone()),
        }
    }

    /// The LibOs configuration of this server on `libos` here.
    fn config(&self, libos: LibOsName, poll: PollMode) -> Config {
        let mut config = Config {
            poll,
            ..Config::with_libos(libos)
        };
        if let Site::Veth(t) = self {
            let spec = t.spec();
            config.net.netns = Some(spec.ns_a.clone());
            if !uses_kernel_stack(libos) {
                config.net.iface = Some(spec.dev_a.clone());
                config.net.ip = Some(format!("{}/24", Ipv4Addr::from(spec.ip_a())));
            }
        }
        config
    }

    /// Waits until the server at `addr` answers PING from where redis-benchmark runs.
    fn wait_for_pong(&self, addr: SocketAddrV4) -> Result<()> {
        match self.client_ns() {
            None => wait_for_pong(addr),
            Some(ns) => netns::run_in(&ns, || wait_for_pong(addr))
                .map_err(|e| Error::os(e, format!("cannot enter namespace {ns}")))?,
        }
    }
}

/// A free loopback port (bound, read, released: racy in principle, fine for a benchmark).
fn free_port() -> Result<u16> {
    let l =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::os(e, "cannot find a free port"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::os(e, "cannot find a free port"))
}

/// redis-server as a child process, killed on drop.
struct RedisServer {
    child: Child,
    addr: SocketAddrV4,
}

impl RedisServer {
    fn start(opts: &BenchOptions, site: &Site, dir: &Path, durable: bool) -> Result<RedisServer> {
        let mut addr = site.listen();
        if addr.port() == 0 {
            addr.set_port(free_port()?);
        }
        let data = dir.join(format!("redis-{}", addr.port()));
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::os(e, format!("cannot create {}", data.display())))?;
        let mut cmd = site.server_command(&opts.redis_server, opts.cpus.map(|(_, s)| s));
        cmd.args([
            "--port",
            &addr.port().to_string(),
            "--bind",
            &addr.ip().to_string(),
            "--save",
            "",
        ])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if durable {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = cmd.spawn().map_err(|e| {
            Error::os(
                e,
                format!(
                    "cannot start {} (install Debian's redis-server)",
                    opts.redis_server.display()
                ),
            )
        })?;
        let server = RedisServer { child, addr };
        site.wait_for_pong(server.addr)?;
        Ok(server)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a server at `addr` answers PING (up to 10 s).
fn wait_for_pong(addr: SocketAddrV4) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answered = TcpStream::connect(addr).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(&buf == b"+PONG\r\n")
        });
        if let Ok(true) = answered {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::new(
                ErrorKind::TimedOut,
                format!("no server answered PING at {addr} within 10 s"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// This server on a thread of this process.
struct InProcessServer {
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl InProcessServer {
    fn start(
        opts: &BenchOptions,
        site: &Site,
        libos: LibOsName,
        aof: Option<AofOptions>,
    ) -> Result<InProcessServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let config = site.config(libos, opts.poll);
        let listen = site.listen();
        let cpu = opts.cpus.map(|(_, s)| s);
        let thread = std::thread::spawn(move || -> Result<()> {
            let started = enter(&config, cpu)
                .and_then(|()| LibOs::new(config))
                .and_then(|mut l| {
                    let server = Server::bind(
                        &mut l,
                        ServeOptions {
                            listen,
                            aof,
                            limits: ServerLimits::default(),
                            stop: &thread_stop,
                            stats: None,
                        },
                    )?;
                    Ok((l, server))
                });
            match started {
                Ok((mut l, server)) => {
                    let _ = tx.send(Ok(server.local_addr()));
                    server.run(&mut l, &thread_stop).map(|_| ())
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Ok(())
                }
            }
        });
        let addr = rx
            .recv()
            .map_err(|_| Error::new(ErrorKind::Io, "the server thread died while starting"))??;
        let server = InProcessServer {
            addr,
            stop,
            thread: Some(thread),
        };
        site.wait_for_pong(addr)?;
        Ok(server)
    }

    fn stop(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::new(ErrorKind::Io, "the server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Puts the calling thread where `config` says a kernel-socket server runs (its network
/// namespace) and on `cpu`.
fn enter(config: &Config, cpu: Option<usize>) -> Result<()> {
    if let Some(cpu) = cpu {
        netns::pin_current_thread(cpu)
            .map_err(|e| Error::os(e, format!("cannot pin the server to CPU {cpu}")))?;
    }
    if let (Some(ns), true) = (&config.net.netns, uses_kernel_stack(config.libos)) {
        netns::enter(ns).map_err(|e| Error::os(e, format!("cannot enter namespace {ns}")))?;
    }
    Ok(())
}

/// Removes a directory tree on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_give_rps_and_percentiles() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"SET\",\"16666.67\",\"0.056\",\"0.016\",\"0.023\",\"0.031\",\"1.551\",\"9.703\"\n\
                    \"GET\",\"18814.68\",\"0.049\",\"0.016\",\"0.023\",\"0.031\",\"0.415\",\"7.903\"\n";
        assert_eq!(
            parse_csv(text),
            vec![
                ("SET".into(), 16666.67, Some(0.023), Some(1.551)),
                ("GET".into(), 18814.68, Some(0.023), Some(0.415)),
            ]
        );
        // Versions that print only test and rps.
        assert_eq!(
            parse_csv("\"test\",\"rps\"\n\"SET\",\"100.5\"\n"),
            vec![("SET".into(), 100.5, None, None)]
        );
        assert!(parse_csv("garbage").is_empty());
    }
}
