//! Two stacks in one thread over a perfect simulated wire, on the machine's clock:
//! a 64-byte echo round trip through the socket API, then one-connection bulk throughput,
//! measured side by side with smoltcp as the baseline.
//!
//! `cargo run --release -p bypass-inet --example bench -- [round_trips] [bulk_mib]
//! [--software-checksums] [--rounds N] [--only bypass|smoltcp]`
//!
//! (defaults: 200,000 round trips, 2,048 MiB, 3 rounds, both stacks).
//!
//! The wire's ports offload IPv4/TCP/UDP checksums (as most NICs do) unless
//! `--software-checksums` is given, which makes both stacks compute and verify them.
//! Round-trip times go into a histogram (no per-sample storage or sorting), so that the
//! instructions a round trip costs can be counted by running the bench under
//! `valgrind --tool=callgrind` with two round-trip counts and taking the difference.
//!
//! # The baseline
//!
//! Absolute numbers mislead on a shared machine (this VM alternates between a fast state and
//! one where everything takes ~1.5 times as long), so the bench runs the same workload on
//! [smoltcp](https://crates.io/crates/smoltcp) (0.14, a dev-dependency only) in the same
//! process and prints the ratios. Its side, in `smoltcp.rs`: two smoltcp `Interface`s with
//! Ethernet medium, MTU 1500, 10.0.0.1/24 and 10.0.0.2/24, joined back to back by a
//! hand-written in-memory `phy::Device` (one queue of frames per direction, frame buffers
//! reused), checksums computed and verified (smoltcp's default `ChecksumCapabilities`), ARP
//! resolved while the connection is set up. TCP sockets with Nagle and delayed ACK off and
//! 4 MiB send and receive buffers, like ours; each interface is driven with
//! `Interface::poll` on the machine's clock, in the pattern our stacks are polled in.
//!
//! Each of `--rounds` rounds (default 3) sets up a fresh pair of stacks and a connection
//! for ours, then for smoltcp (setup not measured), and runs on each: 1,000 warm-up round
//! trips (not recorded), `round_trips` 64-byte round trips (A sends 64 B, B reads and
//! returns them, A reads them; timed from just before A's send to A having read all 64 B),
//! then `bulk_mib` MiB from A to B (B reads and drops; bytes / wall seconds). The
//! histograms are merged per stack across rounds and the bulk bytes and seconds summed;
//! alternating the stacks spreads the machine's slow spells over both. Then:
//!
//! ```text
//! p50 bypass/smoltcp = X
//! bulk bypass/smoltcp = Y
//! ```
//!
//! smoltcp computes its checksums, so compare with `--software-checksums` (without it the
//! bench says that the comparison is not like for like):
//!
//! ```text
//! cargo build --release -p bypass-inet --example bench
//! taskset -c 0 target/release/examples/bench 200000 2048 --software-checksums --rounds 3
//! ```
//!
//! To count the instructions of one stack's round trip, run only that stack under
//! callgrind with two round-trip counts and no bulk, and divide the difference by 10,000:
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/bench 20000 0 --only smoltcp --rounds 1
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/bench 10000 0 --only smoltcp --rounds 1
//! ```
//!
//! (the same with `--only bypass --software-checksums` for ours). `--rounds 1` keeps the
//! difference at 10,000 round trips (each round runs them all). The bench's clock calls
//! `clock_gettime` through libc, which runs under valgrind as it is: no special build is
//! needed any more.
//!
//! First results (smoltcp 0.14.0, 2 cores, fast state, software checksums): smoltcp takes
//! 10,406 instructions per round trip against our 6,917 (0.66), yet its p50 is only
//! ~620-650 ns against our ~560-610 ns (0.84-0.95), and bulk is about even (0.85-1.1, both
//! 3-4 GB/s; per 1,460-byte segment smoltcp runs ~5,500 instructions and we ~3,300). smoltcp
//! sends four frames per round trip (a pure ACK from each receiving poll) to our two, and in
//! bulk B acknowledges once per poll: about one ACK per 1,400 data segments (ours: one per 31).
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

mod smoltcp;

use std::net::SocketAddrV4;
use std::process::ExitCode;

use bypass_devices::sim::{SimConfig, SimPort, SimWire};
use bypass_devices::Device;
use bypass_inet::{Error, Stack, StackConfig};
use bypass_runtime::Clock;
use bypass_wire::{Ipv4Address, Ipv4Cidr};
use hdrhistogram::Histogram;

/// Round trips run before the recorded ones, on each stack in each round.
const WARMUP_ROUND_TRIPS: usize = 1000;

const USAGE: &str = "usage: bench [round_trips] [bulk_mib] [--software-checksums] \
                     [--rounds N] [--only bypass|smoltcp]";

/// The stacks the bench can run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Bypass,
    Smoltcp,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Bypass => "bypass",
            Which::Smoltcp => "smoltcp",
        }
    }
}

/// What to run, from the command line.
struct Params {
    /// Recorded echo round trips per stack and round.
    round_trips: usize,
    /// MiB sent in the bulk run per stack and round; 0 skips it.
    bulk_mib: usize,
    /// Our stacks compute and verify checksums instead of offloading them to the wire.
    software_checksums: bool,
    /// Rounds, each running every selected stack once.
    rounds: usize,
    /// The stacks to run, in order.
    stacks: Vec<Which>,
}

impl Params {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Params, String> {
        let mut params = Params {
            round_trips: 200_000,
            bulk_mib: 2048,
            software_checksums: false,
            rounds: 3,
            stacks: vec![Which::Bypass, Which::Smoltcp],
        };
        let mut positional = 0;
        while let Some(arg) = args.next() {
            // `--flag value` and `--flag=value` both work.
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--software-checksums" => params.software_checksums = true,
                "--rounds" => {
                    params.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?;
                }
                "--only" => {
                    params.stacks = match value()?.as_str() {
                        "bypass" => vec![Which::Bypass],
                        "smoltcp" => vec![Which::Smoltcp],
                        other => return Err(format!("--only: unknown stack {other:?}")),
                    };
                }
                _ if flag.starts_with("--") => return Err(format!("unknown flag {flag}")),
                _ => {
                    let n = arg.parse().map_err(|e| format!("{arg:?}: {e}"))?;
                    match positional {
                        0 => params.round_trips = n,
                        1 => params.bulk_mib = n,
                        _ => return Err(format!("unexpected argument {arg:?}")),
                    }
                    positional += 1;
                }
            }
        }
        Ok(params)
    }
}

/// What one stack did: one round, or the sum of several.
struct Run {
    /// Echo round-trip times in nanoseconds.
    echo: Histogram<u64>,
    /// Bytes moved in the bulk run (0 if it did not run).
    bulk_bytes: u64,
    /// Wall seconds the bulk run took.
    bulk_secs: f64,
    /// CPU seconds (user + system) the bulk run took, if /proc tells.
    bulk_cpu_secs: Option<f64>,
    /// Stack-specific lines (segment counts and the like), printed under the round.
    details: Vec<String>,
}

impl Default for Run {
    fn default() -> Run {
        Run {
            echo: new_histogram(),
            bulk_bytes: 0,
            bulk_secs: 0.0,
            bulk_cpu_secs: Some(0.0),
            details: Vec::new(),
        }
    }
}

impl Run {
    /// Adds `other`'s samples, bytes and seconds to this one (not its details).
    fn merge(&mut self, other: &Run) {
        self.echo
            .add(&other.echo)
            .expect("histograms with the same bounds");
        self.bulk_bytes += other.bulk_bytes;
        self.bulk_secs += other.bulk_secs;
        self.bulk_cpu_secs = self
            .bulk_cpu_secs
            .zip(other.bulk_cpu_secs)
            .map(|(a, b)| a + b);
    }

    /// Bulk throughput in GB/s (wall clock), if the bulk run ran.
    fn bulk_gbps(&self) -> Option<f64> {
        (self.bulk_bytes > 0).then(|| self.bulk_bytes as f64 / self.bulk_secs / 1e9)
    }

    /// One line: the echo percentiles and the bulk throughput.
    fn summary(&self) -> String {
        let pct = |q: f64| self.echo.value_at_quantile(q);
        let mut line = format!(
            "echo 64 B: {} round trips, p50 {} ns, p99 {} ns, p99.9 {} ns",
            self.echo.len(),
            pct(0.5),
            pct(0.99),
            pct(0.999)
        );
        if let Some(gbps) = self.bulk_gbps() {
            line += &format!(
                "; bulk: {} MiB in {:.3} s = {:.2} GB/s",
                self.bulk_bytes >> 20,
                self.bulk_secs,
                gbps
            );
            // /proc counts CPU time in 10 ms ticks: say nothing about shorter runs.
            if let Some(cpu) = self.bulk_cpu_secs.filter(|&cpu| cpu >= 0.1) {
                line += &format!(
                    " ({:.2} GB per CPU-second)",
                    self.bulk_bytes as f64 / cpu / 1e9
                );
            }
        }
        line
    }
}

/// An empty histogram for round-trip times from 1 ns to 10 s, 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("bounds")
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

fn stack(wire: &SimWire, mac: u8, ip: Ipv4Address) -> Stack<SimPort> {
    let port = wire.port([2, 0, 0, 0, 0, mac]).expect("port");
    let mut cfg = StackConfig::new(Ipv4Cidr::new(ip, 24));
    cfg.tcp.send_buffer = 4 << 20;
    cfg.tcp.recv_buffer = 4 << 20;
    Stack::new(port, cfg)
}

/// One round of the bench on our stack: the echo, then (unless `bulk_mib` is 0) the bulk run.
fn run_bypass(params: &Params, clock: &Clock) -> Run {
    let wire = SimWire::new(
        clock.clone(),
        SimConfig {
            pool_chunks: 16384,
            max_in_flight: 16384,
            rx_queue: 8192,
            checksum_offload: !params.software_checksums,
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
    let mut echo = new_histogram();
    let segments = a.stats().tcp_tx_segments + b.stats().tcp_tx_segments;
    for i in 0..params.round_trips + WARMUP_ROUND_TRIPS {
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
        if i >= WARMUP_ROUND_TRIPS {
            echo.saturating_record((clock.now() - t0).as_nanos() as u64);
        }
    }
    let segments = a.stats().tcp_tx_segments + b.stats().tcp_tx_segments - segments;
    let mut run = Run {
        echo,
        details: vec![format!(
            "{:.2} segments per echo round trip (ACKs included)",
            segments as f64 / (params.round_trips + WARMUP_ROUND_TRIPS) as f64
        )],
        ..Run::default()
    };
    if params.bulk_mib == 0 {
        return run;
    }

    // Bulk: A sends, B reads and drops.
    let total = params.bulk_mib << 20;
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
    run.bulk_secs = (clock.now() - t0).as_secs_f64();
    run.bulk_cpu_secs = cpu0.zip(cpu_seconds()).map(|(c0, c1)| c1 - c0);
    assert_eq!(got, total, "B received a different byte count");
    run.bulk_bytes = total as u64;
    let a_segments = a.stats().tcp_tx_segments - a_segments;
    run.details.push(format!(
        "bulk: A sent {} segments, B sent {} ({} B per data segment), {} retransmits",
        a_segments,
        b.stats().tcp_tx_segments - b_segments,
        total as u64 / a_segments.max(1),
        a.stats().tcp_retransmits
    ));
    run.details
        .push(format!("bulk: A: {:?}", a.tcp_info(c).unwrap()));
    run
}

fn main() -> ExitCode {
    let params = match Params::parse(std::env::args().skip(1)) {
        Ok(params) => params,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    for &which in &params.stacks {
        let checksums = match which {
            Which::Bypass if params.software_checksums => "software",
            Which::Bypass => "offloaded to the wire's ports",
            Which::Smoltcp => "software (computed and verified)",
        };
        println!("{:<7} checksums: {checksums}", which.name());
    }

    let clock = Clock::real();
    let mut totals: Vec<(Which, Run)> =
        params.stacks.iter().map(|&w| (w, Run::default())).collect();
    for round in 1..=params.rounds {
        println!("round {round}/{}", params.rounds);
        for (which, total) in &mut totals {
            let run = match which {
                Which::Bypass => run_bypass(&params, &clock),
                Which::Smoltcp => smoltcp::run(&params, &clock),
            };
            println!("  {:<7} {}", which.name(), run.summary());
            for line in &run.details {
                println!("            {line}");
            }
            total.merge(&run);
        }
    }

    println!("over {} rounds:", params.rounds);
    for (which, total) in &totals {
        println!("  {:<7} {}", which.name(), total.summary());
    }
    if let [(Which::Bypass, ours), (Which::Smoltcp, theirs)] = &totals[..] {
        if !params.software_checksums {
            println!(
                "note: our checksums are offloaded to the wire's ports while smoltcp computes \
                 and verifies them: the comparison is not like for like \
                 (add --software-checksums)"
            );
        }
        let p50 = |run: &Run| run.echo.value_at_quantile(0.5) as f64;
        if !ours.echo.is_empty() {
            println!("p50 bypass/smoltcp = {:.2}", p50(ours) / p50(theirs));
        }
        if let (Some(ours), Some(theirs)) = (ours.bulk_gbps(), theirs.bulk_gbps()) {
            println!("bulk bypass/smoltcp = {:.2}", ours / theirs);
        }
    }
    ExitCode::SUCCESS
}
