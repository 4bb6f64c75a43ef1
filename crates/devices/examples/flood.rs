//! One-way throughput of 64-byte frames over a veth pair between two namespaces, through our
//! own devices at both ends (sender on CPU 0, receiver on CPU 1, both spinning).
//!
//! ```text
//! sudo cargo run --release -p bypass-devices --example flood -- [SECONDS] [KIND...]
//! ```
//! KIND is `xdp-generic`, `xdp-driver`, `packet-v2` or `packet-v3` (default: all four).
//! Prints frames sent and received per second. On veth the receiver's kernel work runs in the
//! sender's `sendto()`, so the sender's core is the bottleneck.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bypass_devices::netns;
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_devices::Device;

mod common;
use common::open;

const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const FRAME: usize = 64;
const BURST: usize = 32;

/// CPU time the calling thread has used (user + system), from /proc (10 ms resolution).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

struct Outcome {
    sent: u64,
    received: u64,
    dropped: u64,
    sender_cpu: Duration,
    receiver_cpu: Duration,
}

/// Floods from A to B for `secs` seconds.
fn run(kind: &str, secs: u64) -> Outcome {
    let topo = Topology::up(TopologySpec::unique()).unwrap_or_else(|e| {
        eprintln!("cannot build the topology: {e}");
        std::process::exit(1);
    });
    let spec = topo.spec().clone();
    let (mac_tx, mac_rx) = std::sync::mpsc::channel();
    let stop = AtomicBool::new(false);
    let sending_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let spec_b = spec.clone();
        let (stop, sending_done) = (&stop, &sending_done);
        let receiver = s.spawn(move || {
            netns::enter(&spec_b.ns_b).unwrap();
            netns::pin_current_thread(1).unwrap();
            let mut dev = open(kind, &spec_b.dev_b);
            mac_tx.send(dev.mac()).unwrap();
            let mut batch = Vec::with_capacity(BURST);
            let mut received = 0u64;
            let mut idle_since = None;
            while !stop.load(Ordering::Relaxed) {
                if dev.rx_burst(&mut batch, BURST) == 0 && sending_done.load(Ordering::Relaxed) {
                    // Drain what is still in flight (a V3 block waits for its timer).
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_millis(50) {
                        break;
                    }
                } else {
                    idle_since = None;
                }
                received += batch.iter().filter(|f| f[12..14] == ETHERTYPE).count() as u64;
                batch.clear();
            }
            (received, dev.stats().rx_dropped, thread_cpu())
        });
        let sender = s.spawn(move || {
            netns::enter(&spec.ns_a).unwrap();
            netns::pin_current_thread(0).unwrap();
            let mut dev = open(kind, &spec.dev_a);
            let b_mac = mac_rx.recv().unwrap();
            let a_mac = dev.mac();
            let mut out = Vec::with_capacity(BURST);
            let mut sent = 0u64;
            let cpu_start = thread_cpu();
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                while out.len() < BURST {
                    let Some(mut f) = dev.pool().alloc() else {
                        break;
                    };
                    f.extend_from_slice(&b_mac);
                    f.extend_from_slice(&a_mac);
                    f.extend_from_slice(&ETHERTYPE);
                    f.extend_from_slice(&[0xab; FRAME - 14]);
                    out.push(f);
                }
                sent += dev.tx_burst(&mut out) as u64;
            }
            sending_done.store(true, Ordering::Relaxed);
            (sent, thread_cpu() - cpu_start)
        });
        let (sent, sender_cpu) = sender.join().unwrap();
        let watchdog = Instant::now();
        while !receiver.is_finished() && watchdog.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        let (received, dropped, receiver_cpu) = receiver.join().unwrap();
        Outcome {
            sent,
            received,
            dropped,
            sender_cpu,
            receiver_cpu,
        }
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut kinds: Vec<String> = args.collect();
    if kinds.is_empty() {
        kinds = ["xdp-generic", "xdp-driver", "packet-v2", "packet-v3"]
            .map(String::from)
            .to_vec();
    }
    println!("{FRAME} B frames for {secs} s per kind, bursts of {BURST}");
    for kind in kinds {
        let r = run(&kind, secs);
        let per_frame = |cpu: Duration, n: u64| cpu.as_secs_f64() * 1e6 / n.max(1) as f64;
        println!(
            "{kind:12} sent {:>6.3} Mpps ({:.2} us CPU/frame)   received {:>6.3} Mpps   \
             receiver drops {}   (receiver spins: {:.1} s CPU)",
            r.sent as f64 / secs as f64 / 1e6,
            per_frame(r.sender_cpu, r.sent),
            r.received as f64 / secs as f64 / 1e6,
            r.dropped,
            r.receiver_cpu.as_secs_f64(),
        );
    }
}
