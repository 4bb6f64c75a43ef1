//! A server with `fsync always` killed (SIGKILL) while many clients write: every write it
//! acknowledged is there after a restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bypass_kv::{AofFormat, AofOptions, FsyncPolicy};
use common::{req, roundtrip, TempDir, TestServer};

const CHILD_ENV: &str = "BYPASS_KV_CRASH_SERVER";
const CLIENTS: usize = 12;

fn aof(path: PathBuf) -> Option<AofOptions> {
    Some(AofOptions {
        path,
        fsync: FsyncPolicy::Always,
        format: AofFormat::Log,
    })
}

/// The server process: serves the log at `path` and prints its port; runs until killed.
fn server(path: PathBuf) -> ! {
    let s = TestServer::start(aof(path));
    println!("port {}", s.addr.port());
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One client: SETs `{round}-{client}-{i}` for i = 0, 1, ... one request at a time until the
/// connection breaks or `stop` is set; returns how many were acknowledged.
fn writer(port: u16, round: u32, client: usize, stop: Arc<AtomicBool>) -> u64 {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let mut acked = 0u64;
    let mut reply = [0u8; 5];
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{round}-{client}-{acked}");
        let request = req(&[b"SET", key.as_bytes(), format!("v{acked}").as_bytes()]);
        if c.write_all(&request).is_err() || c.read_exact(&mut reply).is_err() {
            break;
        }
        assert_eq!(&reply, b"+OK\r\n");
        acked += 1;
    }
    acked
}

#[test]
fn every_acknowledged_write_survives_sigkill_of_the_server() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        server(PathBuf::from(path));
    }
    let dir = TempDir::new("crash");
    let path = dir.path("appendonly.aof");
    let exe = std::env::current_exe().unwrap();
    // Acknowledged counts per round and client.
    let mut acked: Vec<Vec<u64>> = Vec::new();
    for round in 0..6u32 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "every_acknowledged_write_survives_sigkill_of_the_server",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let port = BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .find_map(|l| {
                l.split_once("port ")
                    .and_then(|(_, p)| p.parse::<u16>().ok())
            });
        let Some(port) = port else {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("round {round}: the server did not start");
        };
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let stop = stop.clone();
                std::thread::spawn(move || writer(port, round, client, stop))
            })
            .collect();
        // Kill at a different point of the stream each round.
        std::thread::sleep(Duration::from_millis(40 + 37 * u64::from(round)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        acked.push(clients.into_iter().map(|t| t.join().unwrap()).collect());

        // Restart on the same log: every acknowledged write of every round is there.
        let s = TestServer::start(aof(path.clone()));
        let mut c = s.connect();
        for (r, counts) in acked.iter().enumerate() {
            for (client, &n) in counts.iter().enumerate() {
                for i in 0..n {
                    let value = format!("v{i}");
                    roundtrip(
                        &mut c,
                        &req(&[b"GET", format!("{r}-{client}-{i}").as_bytes()]),
                        format!("${}\r\n{value}\r\n", value.len()).as_bytes(),
                    );
                }
            }
        }
        s.stop();
    }
    let total: u64 = acked.iter().flatten().sum();
    eprintln!("{total} acknowledged writes survived 6 kills");
    assert!(total > 0, "no write was ever acknowledged");
}
