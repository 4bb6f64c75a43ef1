//! Two stacks in one thread over a perfect simulated wire, on the machine's clock:
//! a 64-byte echo round trip through the socket API, then one-connection bulk throughput.
//!
//! `cargo run --release -p bypass-inet --example bench [round_trips] [bulk_mib] [--software-checksums]`
//!
//! The wire's ports offload IPv4/TCP/UDP checksums (as most NICs do) unless
//! `--software-checksums` is given, which makes both stacks compute and verify them.
//! Round-trip times go into a histogram (no per-sample storage or sorting), so that the
//! instructions a round trip costs can be counted by running the bench under
//! `valgrind --tool=callgrind` with two round-trip counts and taking the difference.
//!
//! # Where the instructions go
//!
//! Counted with callgrind on a release build (built with `RUSTFLAGS="--cfg rustix_use_libc"`:
//! the clock's vDSO lookup in rustix does not run under valgrind), as the instructions of
//! `bench 20000 0` minus those of `bench 10000 0`, divided by 10,000. Self instructions per
//! round trip (two 64-byte data segments, the ACKs ride on them), callee-inclusive in brackets:
//!
//! | function | before | after, software checksums | after, offloaded |
//! |---|---|---|---|
//! | `Tcb::emit` (build a segment) | 1,166 (2,072) | 848 (1,298) | 818 (988) |
//! | `Stack::poll` (receive path inlined: Ethernet, IPv4, TCP demux) | 1,020 | 810 | 818 |
//! | `Tcb::on_segment` | 716 (1,662) | 702 (1,232) | 702 (1,232) |
//! | `Tcb::output` | 690 (2,826) | 596 (1,928) | 596 (1,618) |
//! | `TcpRepr::parse` (with the TCP checksum check) | 588 (802) | 468 | 266 |
//! | `Stack::after_event` | 516 | ~0 (only on state changes) | ~0 |
//! | `Stack::flush_dirty` | 384 | 418 | 418 |
//! | `TcpPacket::fill_checksum` (was inlined in `emit`) | – | 232 | – |
//! | `Iface::send_ipv4` (IPv4, ARP lookup, Ethernet) | 278 (558) | 42 (headers from the route) | 30 |
//! | `ipv4::receive` | 240 (376) | 156 (398) | 156 (268) |
//! | `TcpOption::parse` | 214 | 0 (timestamps parsed in one step) | 0 |
//! | `BufferPool::alloc_copy` (a copy of every small received segment) | 192 | 64 (the bench's sends only) | 64 |
//! | `Tcb::receive_data` + `push_rcv` | 348 | 306 | 306 |
//! | `Tcb::recv` + `Tcb::send` | 351 | 351 | 351 |
//! | sim wire (`tx_burst`, `rx_burst`, its queue) | 923 | 666 | 666 |
//! | the bench's loop, clock reads, sample keeping | 873 | 498 | 498 |
//! | **total** | **10,224** | **6,896** | **6,276** |
//!
//! Of the total, the stack itself (inet, wire and the buffer pool) went from 8,429 to 5,732
//! (software checksums) or 5,112 (offloaded); TCP and IPv4 checksums cost about 620 per round
//! trip in software. The bench's own share fell because it keeps samples in a histogram
//! instead of sorting them and checks the echo with one comparison instead of a byte loop.
//! What is left is spread thin: no single function above ~850; roughly 1,000 instructions to
//! build and queue a segment, 1,200 to receive one, and ~170 per poll call (four per round
//! trip here).
//!
//! Bulk (`bench 100 48` minus `bench 100 16`, per 1,448-byte data segment): about 2,500
//! instructions with offloaded checksums, of which ~350 are `memcpy` (the bench copying its
//! data into buffers, `emit` copying it into frames), ~725 building and queueing the
//! segment, ~950 receiving it (demux, `on_segment`, the receive queue); about 3,300 with
//! software checksums, each of the two TCP checksum passes costing ~430 instructions. Those
//! passes run as AVX2 vector code where the CPU has it (32 bytes per add; 3,600 instructions
//! with the scalar 8-bytes-per-add loop, which is what machines without AVX2 run), about four
//! times faster in time than the scalar loop on a full segment. Before: about 5,400
//! (software checksums).

use std::net::SocketAddrV4;
use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimWire};
use bypass_devices::Device;
use bypass_inet::{Error, Stack, StackConfig};
use bypass_runtime::{Clock, Instant};
use bypass_wire::{Ipv4Address, Ipv4Cidr};
use hdrhistogram::Histogram;

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
    let software_checksums = std::env::args().any(|a| a == "--software-checksums");
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let round_trips: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let bulk_mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2048);
    println!(
        "checksums: {}",
        if software_checksums {
            "software"
        } else {
            "offloaded to the wire's ports"
        }
    );

    let clock = Clock::real();
    let wire = SimWire::new(
        clock.clone(),
        SimConfig {
            pool_chunks: 16384,
            max_in_flight: 16384,
            rx_queue: 8192,
            checksum_offload: !software_checksums,
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
    let mut samples = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("bounds");
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
                assert!(buf[..] == msg[..buf.len()], "the echo differs");
                got += buf.len();
            }
        }
        if i >= 1000 {
            samples.saturating_record((clock.now() - t0).as_nanos() as u64);
        }
    }
    let pct = |q: f64| samples.value_at_quantile(q);
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
    let (a_segments, b_segments) = (a.stats().tcp_tx_segments, b.stats().tcp_tx_segments);
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
    let a_segments = a.stats().tcp_tx_segments - a_segments;
    println!(
        "  A sent {} segments, B sent {} ({} B per data segment); A: {:?}",
        a_segments,
        b.stats().tcp_tx_segments - b_segments,
        total as u64 / a_segments.max(1),
        info
    );
    let _ = Instant::ZERO;
    let _ = Duration::ZERO;
}
