//! Two stacks joined by a simulated wire, driven on a virtual clock.

#![allow(dead_code)]

use std::net::SocketAddrV4;
use std::time::Duration;

use bypass_devices::sim::{SimConfig, SimPort, SimWire};
use bypass_inet::{Stack, StackConfig};
use bypass_runtime::{Clock, Instant};
use bypass_wire::{Ipv4Address, Ipv4Cidr};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const IP_A: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
pub const IP_B: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

pub fn addr(ip: Ipv4Address, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.into(), port)
}

pub fn config(ip: Ipv4Address, seed: u64) -> StackConfig {
    let mut c = StackConfig::new(Ipv4Cidr::new(ip, 24));
    let mut secret = [0u8; 16];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    secret[8] = ip.0[3];
    c.secret = Some(secret);
    c
}

pub struct Pair {
    pub clock: Clock,
    pub wire: SimWire,
    pub a: Stack<SimPort>,
    pub b: Stack<SimPort>,
}

impl Pair {
    pub fn new(wire_config: SimConfig, a: StackConfig, b: StackConfig) -> Pair {
        let clock = Clock::virtual_at(Instant::from_millis(1));
        let wire = SimWire::new(clock.clone(), wire_config).unwrap();
        let pa = wire.port(MAC_A).unwrap();
        let pb = wire.port(MAC_B).unwrap();
        Pair {
            a: Stack::new(pa, a),
            b: Stack::new(pb, b),
            clock,
            wire,
        }
    }

    pub fn simple(wire_config: SimConfig) -> Pair {
        let seed = wire_config.seed;
        Pair::new(wire_config, config(IP_A, seed), config(IP_B, seed))
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Polls both stacks until neither has work now; returns whether anything happened.
    pub fn settle(&mut self) -> bool {
        let mut any = false;
        for _ in 0..10_000 {
            let now = self.clock.now();
            let pa = self.a.poll(now);
            let pb = self.b.poll(now);
            any |= pa || pb;
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
            if !pa
                && !pb
                && !due(self.a.poll_at())
                && !due(self.b.poll_at())
                && !due(self.wire.next_delivery())
            {
                return any;
            }
        }
        panic!("the stacks never settle at {:?}", self.clock.now());
    }

    /// The next time anything is due (a timer or a frame), if any.
    pub fn next_event(&self) -> Option<Instant> {
        [
            self.a.poll_at(),
            self.b.poll_at(),
            self.wire.next_delivery(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Settles, then moves the clock to the next event if it is no later than `limit`.
    /// Returns false if nothing is due by then (the clock then stands at `limit`).
    pub fn step(&mut self, limit: Instant) -> bool {
        self.settle();
        match self.next_event() {
            Some(t) if t <= limit => {
                if t > self.clock.now() {
                    self.clock.advance_to(t);
                }
                self.settle();
                true
            }
            _ => {
                if limit > self.clock.now() {
                    self.clock.advance_to(limit);
                }
                self.settle();
                false
            }
        }
    }

    /// Runs events until `done` holds or `within` passes; returns whether `done` held.
    pub fn run_until(&mut self, within: Duration, mut done: impl FnMut(&mut Pair) -> bool) -> bool {
        let limit = self.clock.now() + within;
        loop {
            self.settle();
            if done(self) {
                return true;
            }
            if self.clock.now() >= limit {
                return false;
            }
            self.step(limit);
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.clock.now() + d;
        while self.step(limit) {}
    }
}
