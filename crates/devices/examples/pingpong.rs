//! Raw L2 ping-pong latency over a veth pair between two namespaces, through our own devices
//! at both ends, each end pinned to its own CPU and busy-polling.
//!
//! ```text
//! sudo cargo run --release -p bypass-devices --example pingpong -- [ROUNDS] [KIND...]
//! ```
//! KIND is `xdp-generic`, `xdp-driver`, `packet-v2` or `packet-v3` (default: the first three;
//! V3 waits ~1 ms per frame for its block timer). Frames are 64 bytes. Prints p50/p99/p99.9 of
//! the round trip for each kind.

use std::time::{Duration, Instant};

use bypass_devices::netns;
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_devices::Device;

mod common;
use common::open;

const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const FRAME: usize = 64;
const WARMUP: u32 = 1000;

/// Spins until one of our frames arrives; returns it.
fn recv_one(
    dev: &mut dyn Device,
    batch: &mut Vec<bypass_runtime::Buffer>,
    deadline: Instant,
) -> Option<bypass_runtime::Buffer> {
    loop {
        dev.rx_burst(batch, 32);
        while let Some(f) = batch.pop() {
            if f.len() >= 14 && f[12..14] == ETHERTYPE {
                batch.clear();
                return Some(f);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
    }
}

fn send(dev: &mut dyn Device, frame: bypass_runtime::Buffer) {
    let mut out = vec![frame];
    while !out.is_empty() {
        dev.tx_burst(&mut out);
    }
}

fn run(kind: &str, rounds: u32) -> Vec<Duration> {
    let topo = Topology::up(TopologySpec::unique()).unwrap_or_else(|e| {
        eprintln!("cannot build the topology: {e}");
        std::process::exit(1);
    });
    let spec = topo.spec().clone();
    let (mac_tx, mac_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let spec_b = spec.clone();
        s.spawn(move || {
            netns::enter(&spec_b.ns_b).unwrap();
            netns::pin_current_thread(1).unwrap();
            let mut dev = open(kind, &spec_b.dev_b);
            mac_tx.send(dev.mac()).unwrap();
            let mut batch = Vec::new();
            for _ in 0..WARMUP + rounds {
                let Some(mut f) = recv_one(
                    &mut *dev,
                    &mut batch,
                    Instant::now() + Duration::from_secs(5),
                ) else {
                    eprintln!("echo side: no frame for 5 s, giving up");
                    return;
                };
                let bytes = f.as_mut_slice();
                let (dst, src) = bytes[..12].split_at_mut(6);
                dst.swap_with_slice(src);
                send(&mut *dev, f);
            }
        });
        let handle = s.spawn(move || {
            netns::enter(&spec.ns_a).unwrap();
            netns::pin_current_thread(0).unwrap();
            let mut dev = open(kind, &spec.dev_a);
            let b_mac = mac_rx.recv().unwrap();
            let a_mac = dev.mac();
            let mut batch = Vec::new();
            let mut rtts = Vec::with_capacity(rounds as usize);
            for i in 0..WARMUP + rounds {
                let mut f = dev.pool().alloc().expect("pool exhausted");
                f.extend_from_slice(&b_mac);
                f.extend_from_slice(&a_mac);
                f.extend_from_slice(&ETHERTYPE);
                f.extend_from_slice(&i.to_be_bytes());
                f.extend_from_slice(&[0xab; FRAME - 18]);
                let start = Instant::now();
                send(&mut *dev, f);
                let echo = recv_one(&mut *dev, &mut batch, start + Duration::from_secs(5))
                    .expect("no echo for 5 s");
                let rtt = start.elapsed();
                assert_eq!(echo[14..18], i.to_be_bytes(), "echo out of order");
                if i >= WARMUP {
                    rtts.push(rtt);
                }
            }
            rtts
        });
        handle.join().unwrap()
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut kinds: Vec<String> = args.collect();
    if kinds.is_empty() {
        kinds = ["xdp-generic", "xdp-driver", "packet-v2"]
            .map(String::from)
            .to_vec();
    }
    println!("{rounds} round trips of {FRAME} B frames per kind, both ends pinned and spinning");
    for kind in kinds {
        let rounds = if kind == "packet-v3" {
            rounds.min(500)
        } else {
            rounds
        };
        let mut rtts = run(&kind, rounds);
        rtts.sort();
        let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
        println!(
            "{kind:12} p50 {:>8.2} us   p99 {:>8.2} us   p99.9 {:>8.2} us",
            pct(0.50).as_secs_f64() * 1e6,
            pct(0.99).as_secs_f64() * 1e6,
            pct(0.999).as_secs_f64() * 1e6
        );
    }
}
