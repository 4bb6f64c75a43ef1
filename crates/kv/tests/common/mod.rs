//! Shared by the integration tests: a server on a thread, and clients (redis-cli, raw TCP).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use bypass::{Config, LibOs, LibOsName, PollMode};
use bypass_kv::{AofOptions, ServeOptions, Server, ServerLimits, Stats, Summary};

/// A server running on its own thread on the kernel libOS, on an ephemeral loopback port.
/// Dropping it stops it.
pub struct TestServer {
    pub addr: SocketAddrV4,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<bypass::Result<Summary>>>,
}

impl TestServer {
    pub fn start(aof: Option<AofOptions>) -> TestServer {
        TestServer::start_with(aof, ServerLimits::default())
    }

    pub fn start_with(aof: Option<AofOptions>, limits: ServerLimits) -> TestServer {
        TestServer::try_start(aof, limits).expect("server starts")
    }

    pub fn try_start(aof: Option<AofOptions>, limits: ServerLimits) -> bypass::Result<TestServer> {
        TestServer::try_start_polling(aof, limits, PollMode::Block)
    }

    /// A server whose LibOs busy-polls (it keeps a core busy while it runs).
    pub fn start_spinning() -> TestServer {
        TestServer::try_start_polling(None, ServerLimits::default(), PollMode::Spin)
            .expect("server starts")
    }

    fn try_start_polling(
        aof: Option<AofOptions>,
        limits: ServerLimits,
        poll: PollMode,
    ) -> bypass::Result<TestServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread_stop = stop.clone();
        let thread = std::thread::spawn(move || {
            // Block when idle unless asked: tests run side by side on few cores.
            let config = Config {
                poll,
                ..Config::with_libos(LibOsName::Kernel)
            };
            let mut libos = LibOs::new(config)?;
            let server = Server::bind(
                &mut libos,
                ServeOptions {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    aof,
                    limits,
                    stop: &thread_stop,
                    stats: None,
                },
            );
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            let _ = tx.send(Ok((server.local_addr(), server.stats())));
            server.run(&mut libos, &thread_stop)
        });
        let (addr, stats) = rx.recv().expect("server thread reports")?;
        Ok(TestServer {
            addr,
            stats,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// Stops the server and returns what it reports.
    pub fn stop(mut self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .expect("server thread")
            .expect("server ran cleanly")
    }

    /// A raw connection to the server.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Runs `redis-cli -p PORT --no-raw ARGS...`; returns its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port(), "--no-raw"])
            .args(args)
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(out.status.success(), "redis-cli {args:?} failed: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// `cli` with the trailing newline removed.
    pub fn cli1(&self, args: &[&str]) -> String {
        let mut s = self.cli(args);
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `request` and reads exactly `expected.len()` bytes back, which must equal `expected`.
pub fn roundtrip(s: &mut TcpStream, request: &[u8], expected: &[u8]) {
    s.write_all(request).unwrap();
    let got = read_exact_len(s, expected.len());
    assert!(
        got == expected,
        "reply differs:\n got: {:?}\nwant: {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

pub fn read_exact_len(s: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0u8; len];
    s.read_exact(&mut got).unwrap_or_else(|e| {
        panic!("reading {len} reply bytes: {e}");
    });
    got
}

/// Reads until the server closes the connection; returns everything read.
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the server closes the connection");
    got
}

/// A RESP multibulk request.
pub fn req(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    bypass_kv::resp::request(&mut out, args.iter().copied());
    out
}

/// A path for a test's files, unique to the process and call, removed by the guard.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bypass-kv-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
