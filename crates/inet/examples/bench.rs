//! Two stacks in one thread over a perfect simulated wire, on the machine's clock:
//! a 64-byte echo round trip through the socket API, then one-connection bulk throughput.
//!
//! `cargo run --release -p bypass-inet --example bench [round_trips] [bulk_mib]`

use std::net::SocketAddrV4;
use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimWire};
use bypass_devices::Device;
use bypass_inet::{Error, Stack, StackConfig};
use bypass_runtime::{Clock, Instant};
use bypass_wire::{Ipv4Address, Ipv4Cidr};

fn stack(wire: &SimWire, mac: u8, ip: Ipv4Address) -> Stack<SimPort> {
    let port = wire.port([2, 0, 0, 0, 0, mac]).expect("port");
    let mut cfg = StackConfig::new(Ipv4Cidr::new(ip, 24));
    cfg.tcp.send_buffer = 4 << 20;
    cfg.tcp.recv_buffer = 4 << 20;
    Stack::new(port, cfg)
}

/// CPU time of this process so far (user + system), from /proc (Linux; 10 ms resolution):
/// on a shared machine, throughput per CPU-second says more than per wall-second.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let round_trips: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let bulk_mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);

    let clock = Clock::real();
    let wire = SimWire::new(
        clock.clone(),
        SimConfig {
            pool_chunks: 16384,
            max_in_flight: 16384,
            rx_queue: 8192,
            ..SimConfig::default()
        },
    )
    .expect("wire");
    let ip_a = Ipv4Address::new(10, 0, 0, 1);
    let ip_b = Ipv4Address::new(10, 0, 0, 2);
    let mut a = stack(&wire, 1, ip_a);
    let mut b = stack(&wire, 2, ip_b);
    let l = b.tcp_listen(SocketAddrV4::new(ip_b.into(), 7), 4).unwrap();
    let c = a
        .tcp_connect(None, SocketAddrV4::new(ip_b.into(), 7))
        .unwrap();
    let s = loop {
        let now = clock.now();
        a.poll(now);
        b.poll(now);
        if let Some((s, _)) = b.tcp_accept(l).unwrap() {
            break s;
        }
    };
    for _ in 0..10 {
        let now = clock.now();
        a.poll(now);
        b.poll(now);
    }

    // Echo: A sends 64 B, B echoes them, A reads them back.
    let msg = [0x5au8; 64];
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..round_trips + 1000 {
        let t0 = clock.now();
        let out = a.device().pool().alloc_copy(&msg).unwrap();
        assert_eq!(a.tcp_send(c, &out).unwrap(), 64);
        drop(out);
        let mut echoed = 0;
        let mut got = 0;
        while got < 64 {
            let now = clock.now();
            a.poll(now);
            b.poll(now);
            while echoed < 64 {
                match b.tcp_recv(s) {
                    Ok(Some(buf)) => {
                        echoed += buf.len();
                        b.tcp_send(s, &buf).unwrap();
                    }
                    Ok(None) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            let now = clock.now();
            b.poll(now);
            a.poll(now);
            while let Ok(Some(buf)) = a.tcp_recv(c) {
                assert!(buf.iter().all(|&x| x == 0x5a));
                got += buf.len();
            }
        }
        if i >= 1000 {
            samples.push((clock.now() - t0).as_nanos() as u64);
        }
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "echo 64 B: {} round trips, p50 {} ns, p99 {} ns, p99.9 {} ns",
        samples.len(),
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );

    if bulk_mib == 0 {
        return;
    }
    // Bulk: A sends, B reads and drops.
    let total = bulk_mib << 20;
    let cpu0 = cpu_seconds();
    let chunk = a.device().pool().data_capacity();
    let payload = vec![0xa5u8; chunk];
    let (mut sent, mut got) = (0usize, 0usize);
    let t0 = clock.now();
    while got < total {
        while sent < total {
            let n = chunk.min(total - sent);
            let Some(buf) = a.device().pool().alloc_copy(&payload[..n]) else {
                break;
            };
            match a.tcp_send(c, &buf) {
                Ok(k) => sent += k,
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let now = clock.now();
        a.poll(now);
        b.poll(now);
        while let Ok(Some(buf)) = b.tcp_recv(s) {
            got += buf.len();
        }
        b.poll(clock.now());
    }
    let secs = (clock.now() - t0).as_secs_f64();
    if let (Some(c0), Some(c1)) = (cpu0, cpu_seconds()) {
        println!(
            "bulk: {:.2} GB per CPU-second ({:.2} CPU-s)",
            total as f64 / (c1 - c0).max(0.01) / 1e9,
            c1 - c0
        );
    }
    println!(
        "bulk: {} MiB in {:.3} s = {:.2} GB/s ({} retransmits)",
        bulk_mib,
        secs,
        total as f64 / secs / 1e9,
        a.stats().tcp_retransmits
    );
    let info = a.tcp_info(c).unwrap();
    println!(
        "  A sent {} segments, B sent {} ({} B per data segment); A: {:?}",
        a.stats().tcp_tx_segments,
        b.stats().tcp_tx_segments,
        total as u64 / a.stats().tcp_tx_segments.max(1),
        info
    );
    let _ = Instant::ZERO;
    let _ = Duration::ZERO;
}
