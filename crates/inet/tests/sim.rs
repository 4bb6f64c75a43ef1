//! Deterministic simulation: random workloads over random fault profiles on a virtual clock.
//!
//! Each seed builds two stacks joined by a [`SimWire`] with faults drawn from the seed, opens
//! a few connections with random message sizes in both directions, half-closes, reads to the
//! end and closes, and sometimes aborts. Every run checks that each direction of each
//! connection delivered every byte exactly once and in order, or that the connection ended
//! with a clean error (reset, timed out, refused) after delivering a correct prefix; that no
//! run hangs; and that once everything is closed no socket and no buffer is left behind.
//!
//! `BYPASS_SIM_SEEDS=N` runs N seeds per profile (default 1000), starting at
//! `BYPASS_SIM_SEED_BASE` (default 0); `BYPASS_SIM_SEED=S` replays only seed S. A failure
//! prints the command that replays it.

mod common;

use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimRng};
use bypass_devices::Device;
use bypass_inet::{CongestionKind, Error, SocketHandle, StackConfig, TcpState};
use bypass_runtime::{Instant, Sga};
use common::*;

#[derive(Clone, Copy, Debug)]
enum Profile {
    Clean,
    Lossy,
    Chaos,
    Partition,
    Slow,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Clean => "clean",
            Profile::Lossy => "lossy",
            Profile::Chaos => "chaos",
            Profile::Partition => "partition",
            Profile::Slow => "slow",
        }
    }

    fn wire(self, rng: &mut SimRng, seed: u64) -> SimConfig {
        let us = |rng: &mut SimRng, lo, hi| Duration::from_micros(rng.range(lo, hi));
        let mut c = SimConfig {
            seed,
            delay: us(rng, 5, 500),
            jitter: us(rng, 0, 50),
            ..SimConfig::default()
        };
        match self {
            Profile::Clean => {}
            Profile::Lossy => c.loss = rng.unit() * 0.3,
            Profile::Chaos => {
                c.loss = rng.unit() * 0.1;
                c.duplicate = rng.unit() * 0.1;
                c.reorder = rng.unit() * 0.2;
                c.reorder_delay = us(rng, 10, 3000);
                c.corrupt = rng.unit() * 0.05;
            }
            Profile::Partition => c.loss = rng.unit() * 0.05,
            Profile::Slow => {
                c.bandwidth_bps = Some(rng.range(5_000_000, 200_000_000));
                c.loss = rng.unit() * 0.02;
            }
        }
        c
    }
}

fn stack_config(
    rng: &mut SimRng,
    ip: bypass_wire::Ipv4Address,
    seed: u64,
    profile: Profile,
) -> StackConfig {
    let mut c = config(ip, seed);
    let t = &mut c.tcp;
    t.min_rto = Duration::from_millis(rng.range(5, 200));
    t.initial_rto = Duration::from_millis(rng.range(50, 1000));
    t.time_wait = Duration::from_millis(rng.range(10, 500));
    t.timestamps = rng.chance(0.7);
    t.window_scaling = rng.chance(0.7);
    t.sack = rng.chance(0.5);
    t.nagle = rng.chance(0.3);
    t.delayed_ack = if rng.chance(0.7) {
        Some(Duration::from_micros(rng.range(100, 5000)))
    } else {
        None
    };
    t.congestion = if rng.chance(0.5) {
        CongestionKind::Cubic
    } else {
        CongestionKind::NewReno
    };
    if rng.chance(0.3) || matches!(profile, Profile::Slow) {
        // Small buffers: zero windows and many window updates.
        t.send_buffer = rng.range(1000, 20_000) as usize;
        t.recv_buffer = rng.range(1000, 20_000) as usize;
    }
    t.max_out_of_order_pieces = rng.range(1, 64) as usize;
    // Keep-alive turns a peer that vanished (its RST lost) into a clean error instead of an
    // endless wait.
    t.keepalive = Some(Duration::from_secs(rng.range(5, 60)));
    t.keepalive_interval = Duration::from_secs(rng.range(1, 10));
    t.keepalive_probes = rng.range(3, 9) as u32;
    c
}

/// The byte at `offset` of direction `dir` of connection `conn`.
fn pattern(seed: u64, conn: usize, dir: usize, offset: usize) -> u8 {
    let mut z = seed ^ ((conn as u64) << 40) ^ ((dir as u64) << 56) ^ (offset as u64 / 8);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z >> ((offset % 8) * 8)) as u8
}

/// One end of one connection, as the application sees it.
#[derive(Debug)]
struct End {
    handle: Option<SocketHandle>,
    to_send: usize,
    sent: usize,
    received: usize,
    eof: bool,
    shut: bool,
    closed: bool,
    error: Option<Error>,
    /// Read only at or after this time (a slow reader).
    read_at: Instant,
}

impl End {
    fn new(to_send: usize) -> End {
        End {
            handle: None,
            to_send,
            sent: 0,
            received: 0,
            eof: false,
            shut: false,
            closed: false,
            error: None,
            read_at: Instant::ZERO,
        }
    }
}

#[derive(Debug)]
struct Conn {
    port: u16,
    start_at: Instant,
    ends: [End; 2],
    /// Side 0 aborts after sending this many bytes.
    abort_after: Option<usize>,
    aborted: bool,
}

impl Conn {
    /// Over: both ends read everything and the end of stream, or the connection failed.
    fn finished(&self) -> bool {
        self.aborted
            || self.ends.iter().any(|e| e.error.is_some())
            || self.ends.iter().all(|e| e.eof && e.shut)
    }
}

struct Run {
    seed: u64,
    pair: Pair,
    rng: SimRng,
    conns: Vec<Conn>,
    listener: SocketHandle,
    max_msg: usize,
    slow_reader: bool,
}

const PORT: u16 = 80;

fn side(pair: &mut Pair, s: usize) -> &mut bypass_inet::Stack<bypass_devices::sim::SimPort> {
    if s == 0 {
        &mut pair.a
    } else {
        &mut pair.b
    }
}

impl Run {
    fn new(profile: Profile, seed: u64) -> Run {
        let mut rng = SimRng::new(seed ^ 0x5eed);
        let wire = profile.wire(&mut rng, seed);
        let ca = stack_config(&mut rng, IP_A, seed, profile);
        let cb = stack_config(&mut rng, IP_B, seed, profile);
        let mut pair = Pair::new(wire, ca, cb);
        let listener = pair.b.tcp_listen(addr(IP_B, PORT), 16).unwrap();
        let n = rng.range(1, 4) as usize;
        let max_msg = [100, 1500, 5000][rng.below(3) as usize];
        let max_total = if matches!(profile, Profile::Clean) {
            200_000
        } else {
            30_000
        };
        let conns = (0..n)
            .map(|k| Conn {
                port: 10_000 + k as u16,
                start_at: pair.now() + Duration::from_micros(rng.below(20_000)),
                ends: [
                    End::new(rng.below(max_total) as usize),
                    End::new(rng.below(max_total) as usize),
                ],
                abort_after: rng.chance(0.1).then(|| rng.below(10_000) as usize),
                aborted: false,
            })
            .collect();
        let slow_reader = rng.chance(0.3);
        Run {
            seed,
            pair,
            rng,
            conns,
            listener,
            max_msg,
            slow_reader,
        }
    }

    fn check_bytes(&self, k: usize, dir: usize, at: usize, data: &[u8]) -> Result<(), String> {
        let limit = self.conns[k].ends[dir].to_send;
        if at + data.len() > limit {
            return Err(format!(
                "conn {k} dir {dir}: {} bytes received past the {limit} sent",
                at + data.len() - limit
            ));
        }
        for (i, &b) in data.iter().enumerate() {
            let want = pattern(self.seed, k, dir, at + i);
            if b != want {
                return Err(format!(
                    "conn {k} dir {dir}: byte {} is {b:#04x}, sent {want:#04x}",
                    at + i
                ));
            }
        }
        Ok(())
    }

    /// The applications act: connect, accept, send, read, shut down, close, abort.
    fn act(&mut self) -> Result<(), String> {
        let now = self.pair.now();
        // Accept on B and match by A's port.
        while let Some((h, peer)) = self
            .pair
            .b
            .tcp_accept(self.listener)
            .map_err(|e| e.to_string())?
        {
            let k = self
                .conns
                .iter()
                .position(|c| c.port == peer.port())
                .ok_or_else(|| format!("accepted an unknown peer {peer}"))?;
            if self.conns[k].ends[1].handle.is_some() {
                return Err(format!("conn {k} accepted twice"));
            }
            self.conns[k].ends[1].handle = Some(h);
        }
        for k in 0..self.conns.len() {
            if self.conns[k].ends[0].handle.is_none()
                && !self.conns[k].aborted
                && now >= self.conns[k].start_at
            {
                let h = self
                    .pair
                    .a
                    .tcp_connect(Some(self.conns[k].port), addr(IP_B, PORT))
                    .map_err(|e| format!("connect: {e}"))?;
                self.conns[k].ends[0].handle = Some(h);
            }
            for s in 0..2 {
                self.act_end(k, s, now)?;
            }
        }
        Ok(())
    }

    fn act_end(&mut self, k: usize, s: usize, now: Instant) -> Result<(), String> {
        let Some(h) = self.conns[k].ends[s].handle else {
            return Ok(());
        };
        if self.conns[k].ends[s].closed || self.conns[k].aborted {
            return Ok(());
        }
        // Send.
        let state = side(&mut self.pair, s)
            .tcp_state(h)
            .map_err(|e| format!("state: {e}"))?;
        let established = matches!(state, TcpState::Established | TcpState::CloseWait);
        while established && self.conns[k].ends[s].sent < self.conns[k].ends[s].to_send {
            let e = &self.conns[k].ends[s];
            let n = (1 + self.rng.below(self.max_msg as u64) as usize).min(e.to_send - e.sent);
            let bytes: Vec<u8> = (0..n)
                .map(|i| pattern(self.seed, k, s, e.sent + i))
                .collect();
            let stack = side(&mut self.pair, s);
            let Some(sga) = Sga::copy_from(stack.device().pool(), &bytes) else {
                break;
            };
            match stack.tcp_send_sga(h, &sga) {
                Ok(0) | Err(Error::WouldBlock) => break,
                Ok(taken) => {
                    self.conns[k].ends[s].sent += taken;
                    if taken < n {
                        break;
                    }
                }
                Err(e) => {
                    self.conns[k].ends[s].error = Some(e);
                    return Ok(());
                }
            }
            if s == 0 {
                if let Some(limit) = self.conns[k].abort_after {
                    if self.conns[k].ends[0].sent >= limit {
                        side(&mut self.pair, 0)
                            .tcp_abort(h)
                            .map_err(|e| format!("abort: {e}"))?;
                        self.conns[k].aborted = true;
                        self.conns[k].ends[0].closed = true;
                        return Ok(());
                    }
                }
            }
        }
        let e = &self.conns[k].ends[s];
        if established && e.sent == e.to_send && !e.shut {
            side(&mut self.pair, s)
                .tcp_shutdown(h)
                .map_err(|e| format!("shutdown: {e}"))?;
            self.conns[k].ends[s].shut = true;
        }
        // Read.
        if now >= self.conns[k].ends[s].read_at {
            loop {
                match side(&mut self.pair, s).tcp_recv(h) {
                    Ok(Some(b)) => {
                        let at = self.conns[k].ends[s].received;
                        self.check_bytes(k, 1 - s, at, &b)?;
                        self.conns[k].ends[s].received += b.len();
                    }
                    Ok(None) => break,
                    Err(Error::EndOfStream) => {
                        let e = &self.conns[k].ends[s];
                        let want = self.conns[k].ends[1 - s].to_send;
                        if e.received != want && !self.conns[k].aborted {
                            return Err(format!(
                                "conn {k}: side {s} saw the end of stream after {} of {want} bytes",
                                e.received
                            ));
                        }
                        self.conns[k].ends[s].eof = true;
                        break;
                    }
                    Err(
                        e @ (Error::ConnectionReset | Error::TimedOut | Error::ConnectionRefused),
                    ) => {
                        self.conns[k].ends[s].error = Some(e);
                        break;
                    }
                    Err(e) => return Err(format!("conn {k} side {s}: recv: {e}")),
                }
                if self.slow_reader && self.rng.chance(0.3) {
                    self.conns[k].ends[s].read_at =
                        now + Duration::from_micros(self.rng.below(3000));
                    break;
                }
            }
        }
        let e = &self.conns[k].ends[s];
        if e.eof && e.shut && !e.closed {
            side(&mut self.pair, s)
                .tcp_close(h)
                .map_err(|e| format!("close: {e}"))?;
            self.conns[k].ends[s].closed = true;
        }
        Ok(())
    }

    /// Every connection stays inside its configured buffers (the receive side may pass its
    /// buffer by less than one unit of window scaling, 2^14 bytes, from rounding the window
    /// up so it never shrinks).
    fn check_memory(&self) -> Result<(), String> {
        for (name, stack) in [("A", &self.pair.a), ("B", &self.pair.b)] {
            let cfg = stack.tcp_config();
            for (l, r, info) in stack.tcp_connections() {
                if info.recv_queued + info.out_of_order > cfg.recv_buffer + (1 << 14) {
                    return Err(format!(
                        "{name} {l}->{r} holds too much received data: {info:?}"
                    ));
                }
                if info.send_queued > cfg.send_buffer {
                    return Err(format!("{name} {l}->{r} holds too much to send: {info:?}"));
                }
            }
        }
        Ok(())
    }

    fn next_app_time(&self) -> Instant {
        let mut t = Instant::FAR_FUTURE;
        for c in &self.conns {
            if c.ends[0].handle.is_none() && !c.aborted {
                t = t.min(c.start_at);
            }
            for e in &c.ends {
                if e.handle.is_some() && !e.closed && e.read_at > self.pair.now() {
                    t = t.min(e.read_at);
                }
            }
        }
        t
    }

    fn run(&mut self, profile: Profile) -> Result<(), String> {
        let deadline = self.pair.now() + Duration::from_secs(1200);
        let mut partition_at = self.pair.now() + Duration::from_millis(self.rng.range(1, 50));
        let mut heal_at = Instant::FAR_FUTURE;
        let mut steps = 0u64;
        loop {
            self.act()?;
            self.check_memory()?;
            if self.conns.iter().all(Conn::finished) {
                break;
            }
            let now = self.pair.now();
            if now >= deadline {
                let mut info = String::new();
                for (name, stack) in [("A", &self.pair.a), ("B", &self.pair.b)] {
                    for (l, r, i) in stack.tcp_connections() {
                        info += &format!("{name} {l} -> {r}: {i:?}\n");
                    }
                }
                return Err(format!(
                    "hang: not finished at {now:?}: {:#?}\n{info}A: {:?}\nB: {:?}\nwire: {:?}",
                    self.conns,
                    self.pair.a.stats(),
                    self.pair.b.stats(),
                    self.pair.wire.stats()
                ));
            }
            if matches!(profile, Profile::Partition) {
                if now >= partition_at && !self.pair.wire.is_partitioned() {
                    self.pair.wire.partition();
                    heal_at = now + Duration::from_millis(self.rng.range(1, 3000));
                }
                if now >= heal_at {
                    self.pair.wire.heal();
                    heal_at = Instant::FAR_FUTURE;
                    partition_at = now + Duration::from_millis(self.rng.range(10, 2000));
                }
            }
            let mut limit = self.next_app_time().min(deadline);
            if matches!(profile, Profile::Partition) {
                limit = if self.pair.wire.is_partitioned() {
                    limit.min(heal_at)
                } else {
                    limit.min(partition_at)
                };
            }
            if !self.pair.step(limit)
                && self.pair.next_event().is_none()
                && limit == Instant::FAR_FUTURE
            {
                return Err(format!(
                    "deadlock at {now:?}: nothing scheduled: {:#?}",
                    self.conns
                ));
            }
            steps += 1;
            if steps > 2_000_000 {
                return Err("too many steps".into());
            }
        }
        // Wind down: close what is left, calm the wire, let every timer run out.
        self.pair.wire.calm();
        for k in 0..self.conns.len() {
            for s in 0..2 {
                let e = &self.conns[k].ends[s];
                if let (Some(h), false) = (e.handle, e.closed) {
                    let stack = side(&mut self.pair, s);
                    if stack.tcp_state(h).is_ok() {
                        stack
                            .tcp_abort(h)
                            .map_err(|e| format!("final abort: {e}"))?;
                    }
                    self.conns[k].ends[s].closed = true;
                }
            }
        }
        self.pair.run_for(Duration::from_secs(120));
        // A connection B accepted after everything finished (a late SYN) is reset by closing
        // the listener.
        self.pair
            .b
            .tcp_close_listener(self.listener)
            .map_err(|e| e.to_string())?;
        self.pair.run_for(Duration::from_secs(120));
        for (name, stack) in [("A", &self.pair.a), ("B", &self.pair.b)] {
            if stack.socket_count() != 0 {
                return Err(format!(
                    "{name} still has {} sockets after closing everything",
                    stack.socket_count()
                ));
            }
            let pool = stack.device().pool();
            if pool.available() != pool.chunks() {
                return Err(format!(
                    "{name} leaks buffers: {} of {} free",
                    pool.available(),
                    pool.chunks()
                ));
            }
        }
        Ok(())
    }
}

fn seeds() -> (Vec<u64>, bool) {
    if let Ok(s) = std::env::var("BYPASS_SIM_SEED") {
        return (
            vec![s.parse().expect("BYPASS_SIM_SEED must be a number")],
            true,
        );
    }
    let n = std::env::var("BYPASS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000u64);
    let base = std::env::var("BYPASS_SIM_SEED_BASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0u64);
    ((base..base + n).collect(), false)
}

fn run_profile(profile: Profile, test_name: &str) {
    let (seeds, replay) = seeds();
    let mut failures = Vec::new();
    for seed in seeds {
        let result = std::panic::catch_unwind(|| {
            let mut run = Run::new(profile, seed);
            run.run(profile)
        });
        let msg = match result {
            Ok(Ok(())) => continue,
            Ok(Err(msg)) => msg,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        };
        eprintln!(
            "profile {} seed {seed} failed: {msg}\n  replay: BYPASS_SIM_SEED={seed} cargo test -p bypass-inet --test sim {test_name}",
            profile.name()
        );
        failures.push(seed);
        if replay || failures.len() >= 5 {
            break;
        }
    }
    assert!(
        failures.is_empty(),
        "profile {} failed for seeds {failures:?}",
        profile.name()
    );
}

#[test]
fn sim_clean() {
    run_profile(Profile::Clean, "sim_clean");
}

#[test]
fn sim_lossy() {
    run_profile(Profile::Lossy, "sim_lossy");
}

#[test]
fn sim_chaos() {
    run_profile(Profile::Chaos, "sim_chaos");
}

#[test]
fn sim_partition() {
    run_profile(Profile::Partition, "sim_partition");
}

#[test]
fn sim_slow() {
    run_profile(Profile::Slow, "sim_slow");
}

#[test]
fn a_seed_replays_exactly() {
    let run = |seed| {
        let mut r = Run::new(Profile::Chaos, seed);
        r.run(Profile::Chaos).unwrap();
        (
            r.pair.a.stats().clone(),
            r.pair.b.stats().clone(),
            r.pair.wire.stats(),
            r.pair.now(),
        )
    };
    for seed in [3, 77] {
        assert_eq!(run(seed), run(seed));
    }
    assert_ne!(run(3), run(77));
}
