//! The load client: connections that send messages and check every echoed byte.
//!
//! *Closed loop* (no rate): each connection sends a message, waits until the whole echo is
//! back and checked, and sends the next; latency runs from the send to the last echoed byte.
//!
//! *Open loop* (`rate`): each connection sends on a fixed schedule whether or not earlier
//! echoes are back, and latency runs from the *scheduled* send time. A stalled server thus
//! shows up as latency of every message that should have been sent during the stall, instead
//! of silently lowering the send rate (coordinated omission).
//!
//! A run has an optional warm-up phase (same connections, not recorded) and a measured phase.
//! Every message has its own byte pattern (see `pattern.rs`); the first byte that differs ends
//! the run with [`Error::Mismatch`], naming the connection, the message and the offset.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bypass::{ErrorKind, LibOs, OpCode, QDesc, QDescMap, QResult, QValue, SocketKind};
use hdrhistogram::Histogram;

use crate::pattern::{first_difference, Pattern};
use crate::report::{Latency, Report};
use crate::{now_ns, Error, Protocol};

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;
/// Longest the loop waits for a completion before it looks at its timers.
const TICK: Duration = Duration::from_millis(10);
/// Largest latency the histogram records exactly (longer ones are recorded as this).
const MAX_LATENCY_NS: u64 = 3_600 * 1_000_000_000;

/// How much a phase sends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// This many messages in total, spread evenly over the connections.
    Count(u64),
    /// Send for this long, then wait for the echoes still on their way.
    Duration(Duration),
}

/// What [`run_load`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// The echo server.
    pub remote: SocketAddrV4,
    pub protocol: Protocol,
    /// Connections (UDP: sockets) that send at the same time.
    pub connections: usize,
    /// Bytes per message (UDP: at most 65 507).
    pub message_size: usize,
    /// How much the measured phase sends.
    pub limit: Limit,
    /// Open loop at this many messages per second over all connections; `None` is closed loop.
    pub rate: Option<f64>,
    /// The warm-up phase before measuring; `Limit::Count(0)` skips it.
    pub warmup: Limit,
    /// A message whose echo is not complete this long after it was sent fails the run.
    pub reply_timeout: Duration,
    /// Open loop: messages a connection may have in flight; later sends wait (and their
    /// latency grows, as it should).
    pub max_in_flight: usize,
}

impl LoadOptions {
    /// One TCP or UDP connection, 64 B messages, 1000 of them, closed loop, no warm-up.
    pub fn new(remote: SocketAddrV4, protocol: Protocol) -> LoadOptions {
        LoadOptions {
            remote,
            protocol,
            connections: 1,
            message_size: 64,
            limit: Limit::Count(1000),
            rate: None,
            warmup: Limit::Count(0),
            reply_timeout: Duration::from_secs(10),
            max_in_flight: 1024,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::Options(m));
        if self.connections == 0 || self.connections > 65_536 {
            return bad(format!(
                "connections = {} is out of range; use 1 to 65536",
                self.connections
            ));
        }
        if self.message_size == 0 {
            return bad("the message size must be at least 1 byte".into());
        }
        if self.protocol == Protocol::Udp && self.message_size > MAX_DATAGRAM {
            return bad(format!(
                "a UDP message holds at most {MAX_DATAGRAM} B, not {}; use TCP for larger messages",
                self.message_size
            ));
        }
        if self.limit == Limit::Count(0) || self.limit == Limit::Duration(Duration::ZERO) {
            return bad("the run must send something: give a count or duration above 0".into());
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(format!(
                    "rate = {rate} must be a positive number of messages per second"
                ));
            }
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1".into());
        }
        if self.reply_timeout.is_zero() {
            return bad("reply_timeout must be above 0".into());
        }
        Ok(())
    }
}

/// A message sent and not yet fully echoed.
#[derive(Clone, Copy)]
struct InFlight {
    /// When it was scheduled (open loop) or sent (closed loop): latency runs from here.
    due: u64,
    /// When it was actually pushed: the reply timeout runs from here.
    sent: u64,
}

struct Conn {
    qd: QDesc,
    /// Messages this connection still sends in the current phase.
    quota: u64,
    /// Sequence number of the next message to send (over the whole run).
    next_seq: u64,
    /// Open loop: when the next message is due.
    next_due: u64,
    in_flight: VecDeque<InFlight>,
    /// The message being received and how many of its bytes came back.
    recv_seq: u64,
    recv_off: usize,
    pop_pending: bool,
}

/// Opens the connections, runs the warm-up and measured phases, closes everything, and
/// returns what the measured phase saw.
pub fn run_load(libos: &mut LibOs, opts: &LoadOptions) -> Result<Report, Error> {
    opts.validate()?;
    let mut load = Load {
        opts,
        pattern: Pattern::new(opts.message_size),
        conns: Vec::with_capacity(opts.connections),
        index: QDescMap::with_capacity_and_hasher(opts.connections, Default::default()),
    };
    let result = load.open(libos).and_then(|()| {
        let mut histogram = Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
            .expect("static histogram bounds are valid");
        if opts.warmup != Limit::Count(0) && opts.warmup != Limit::Duration(Duration::ZERO) {
            load.phase(libos, opts.warmup, &mut histogram)?;
            histogram.reset();
        }
        let (messages, elapsed) = load.phase(libos, opts.limit, &mut histogram)?;
        Ok(load.report(libos, messages, elapsed, histogram))
    });
    load.close(libos);
    result
}

struct Load<'a> {
    opts: &'a LoadOptions,
    pattern: Pattern,
    conns: Vec<Conn>,
    /// Connection index of each queue.
    index: QDescMap<usize>,
}

impl Load<'_> {
    /// Opens (TCP: connects) every connection.
    fn open(&mut self, libos: &mut LibOs) -> Result<(), Error> {
        let remote = self.opts.remote;
        let mut connecting = 0usize;
        for i in 0..self.opts.connections {
            let qd = match self.opts.protocol {
                Protocol::Tcp => {
                    let qd = libos
                        .socket(SocketKind::Stream)
                        .map_err(|e| Error::api(format!("connection {i}: socket"), e))?;
                    self.add(qd);
                    libos.connect(qd, remote).map_err(|e| {
                        Error::api(format!("connection {i}: connect to {remote}"), e)
                    })?;
                    connecting += 1;
                    qd
                }
                Protocol::Udp => {
                    let qd = libos
                        .socket(SocketKind::Datagram)
                        .map_err(|e| Error::api(format!("connection {i}: socket"), e))?;
                    self.add(qd);
                    libos
                        .bind(qd, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
                        .map_err(|e| Error::api(format!("connection {i}: bind"), e))?;
                    qd
                }
            };
            debug_assert_eq!(self.index.get(&qd), Some(&i));
        }
        let deadline = now_ns(libos) + duration_ns(self.opts.reply_timeout);
        while connecting > 0 {
            let Some(r) = next_completion(libos, TICK)? else {
                if now_ns(libos) > deadline {
                    return Err(Error::api(
                        format!("connect to {remote}"),
                        bypass::Error::new(
                            ErrorKind::TimedOut,
                            format!(
                                "{connecting} connections still not established after {:?}; is the server reachable?",
                                self.opts.reply_timeout
                            ),
                        ),
                    ));
                }
                continue;
            };
            let Some(&i) = self.index.get(&r.qd) else {
                continue;
            };
            match r.value {
                QValue::Connected => connecting -= 1,
                // The error names the remote address already.
                QValue::Failed(e) => return Err(Error::api(format!("connection {i}"), e)),
                other => tracing::warn!(i, "unexpected completion while connecting: {other:?}"),
            }
        }
        for i in 0..self.conns.len() {
            self.pop(libos, i)?;
        }
        Ok(())
    }

    fn add(&mut self, qd: QDesc) {
        self.index.insert(qd, self.conns.len());
        self.conns.push(Conn {
            qd,
            quota: 0,
            next_seq: 0,
            next_due: 0,
            in_flight: VecDeque::new(),
            recv_seq: 0,
            recv_off: 0,
            pop_pending: false,
        });
    }

    fn close(&mut self, libos: &mut LibOs) {
        for c in &self.conns {
            let _ = libos.close(c.qd);
        }
        // Collect the canceled operations so a later run on this LibOs does not see them.
        let _ = libos.wait_next_n(usize::MAX, Some(Duration::ZERO), |_| true);
        self.conns.clear();
        self.index.clear();
    }

    /// Sends `limit` worth of messages and waits for all their echoes. Returns the number of
    /// messages echoed and the nanoseconds from the start to the last echo.
    fn phase(
        &mut self,
        libos: &mut LibOs,
        limit: Limit,
        histogram: &mut Histogram<u64>,
    ) -> Result<(u64, u64), Error> {
        let n = self.conns.len() as u64;
        let start = now_ns(libos);
        let (send_until, total) = match limit {
            Limit::Count(total) => (u64::MAX, total),
            Limit::Duration(d) => (start.saturating_add(duration_ns(d)), u64::MAX),
        };
        // Open loop: each connection sends every `interval` ns, staggered by `1 / rate`.
        let interval = self.opts.rate.map(|r| (n as f64 * 1e9 / r).max(1.0) as u64);
        for (i, c) in self.conns.iter_mut().enumerate() {
            c.quota = if total == u64::MAX {
                u64::MAX
            } else {
                total / n + u64::from((i as u64) < total % n)
            };
            c.next_due = start + interval.map_or(0, |iv| iv * i as u64 / n);
            debug_assert!(c.in_flight.is_empty());
        }
        let mut done = 0u64;
        let mut last_echo = start;
        let mut last_check = start;
        if interval.is_none() {
            for i in 0..self.conns.len() {
                self.send_closed(libos, i, start, send_until)?;
            }
        }
        loop {
            let now = now_ns(libos);
            let mut next_due = u64::MAX;
            if let Some(interval) = interval {
                for i in 0..self.conns.len() {
                    next_due = next_due.min(self.send_open(libos, i, now, send_until, interval)?);
                }
            }
            if self.conns.iter().all(|c| {
                (c.quota == 0
                    || c.next_due >= send_until
                    || (interval.is_none() && now >= send_until))
                    && c.in_flight.is_empty()
            }) {
                break;
            }
            if now.saturating_sub(last_check) >= duration_ns(TICK) {
                last_check = now;
                self.check_timeouts(now)?;
            }
            let wait = Duration::from_nanos(next_due.saturating_sub(now)).min(TICK);
            let Some(r) = next_completion(libos, wait)? else {
                continue;
            };
            let echoed = self.complete(libos, r, histogram, send_until)?;
            if echoed > 0 {
                done += echoed;
                last_echo = now_ns(libos);
            }
        }
        Ok((done, last_echo.saturating_sub(start)))
    }

    /// Closed loop: sends the next message of connection `i` if it has nothing in flight.
    fn send_closed(
        &mut self,
        libos: &mut LibOs,
        i: usize,
        now: u64,
        until: u64,
    ) -> Result<(), Error> {
        let c = &self.conns[i];
        if c.quota > 0 && c.in_flight.is_empty() && now < until {
            // Latency runs from this very moment, not from when the last echo was handled.
            let start = now_ns(libos);
            self.send(libos, i, start, start)?;
        }
        Ok(())
    }

    /// Open loop: sends every message of connection `i` that is due; returns when the next is.
    fn send_open(
        &mut self,
        libos: &mut LibOs,
        i: usize,
        now: u64,
        until: u64,
        interval: u64,
    ) -> Result<u64, Error> {
        loop {
            let c = &self.conns[i];
            if c.quota == 0 || c.next_due >= until {
                return Ok(u64::MAX);
            }
            if c.next_due > now || c.in_flight.len() >= self.opts.max_in_flight {
                return Ok(c.next_due);
            }
            let due = c.next_due;
            self.send(libos, i, due, now)?;
            self.conns[i].next_due = due + interval;
        }
    }

    fn send(&mut self, libos: &mut LibOs, i: usize, due: u64, now: u64) -> Result<(), Error> {
        let c = &mut self.conns[i];
        let seq = c.next_seq;
        let sga = libos
            .sga_from_slice(self.pattern.message(i, seq))
            .map_err(|e| Error::api(format!("connection {i}: buffer for message {seq}"), e))?;
        let pushed = match self.opts.protocol {
            Protocol::Tcp => libos.push(c.qd, sga),
            Protocol::Udp => libos.pushto(c.qd, sga, self.opts.remote),
        };
        pushed.map_err(|e| Error::api(format!("connection {i}: push of message {seq}"), e))?;
        c.next_seq += 1;
        c.quota -= 1;
        c.in_flight.push_back(InFlight { due, sent: now });
        Ok(())
    }

    fn pop(&mut self, libos: &mut LibOs, i: usize) -> Result<(), Error> {
        let c = &mut self.conns[i];
        debug_assert!(!c.pop_pending);
        libos
            .pop(c.qd)
            .map_err(|e| Error::api(format!("connection {i}: pop"), e))?;
        c.pop_pending = true;
        Ok(())
    }

    /// Handles one completion; returns how many messages it completed.
    fn complete(
        &mut self,
        libos: &mut LibOs,
        r: QResult,
        histogram: &mut Histogram<u64>,
        send_until: u64,
    ) -> Result<u64, Error> {
        let Some(&i) = self.index.get(&r.qd) else {
            return Ok(0);
        };
        match (r.opcode, r.value) {
            (OpCode::Push, QValue::Pushed { bytes }) => {
                debug_assert_eq!(bytes, self.opts.message_size);
                Ok(0)
            }
            (OpCode::Pop, QValue::Popped { sga, .. }) => {
                let now = now_ns(libos);
                self.conns[i].pop_pending = false;
                let echoed = match self.opts.protocol {
                    Protocol::Tcp => {
                        let mut echoed = 0;
                        for seg in sga.segments() {
                            echoed += self.check_stream(i, seg, now, histogram)?;
                        }
                        echoed
                    }
                    Protocol::Udp => self.check_datagram(i, &sga, now, histogram)?,
                };
                // Send the next message before popping again: a pop may try a receive at once,
                // and that system call must not sit between two messages of a closed loop.
                if self.opts.rate.is_none() {
                    self.send_closed(libos, i, now, send_until)?;
                }
                self.pop(libos, i)?;
                Ok(echoed)
            }
            (OpCode::Pop, QValue::EndOfStream) => {
                let c = &self.conns[i];
                Err(Error::Closed {
                    connection: i,
                    message: c.recv_seq,
                    offset: c.recv_off,
                })
            }
            (op, QValue::Failed(e)) => {
                let what = match op {
                    OpCode::Push => "push",
                    OpCode::Pop => "pop",
                    _ => "operation",
                };
                Err(Error::api(format!("connection {i}: {what}"), e))
            }
            (op, value) => {
                tracing::warn!(i, ?op, "unexpected completion {value:?}");
                Ok(0)
            }
        }
    }

    /// Checks stream bytes against the messages in flight; returns how many it completed.
    fn check_stream(
        &mut self,
        i: usize,
        mut data: &[u8],
        now: u64,
        histogram: &mut Histogram<u64>,
    ) -> Result<u64, Error> {
        let size = self.opts.message_size;
        let c = &mut self.conns[i];
        let mut echoed = 0;
        while !data.is_empty() {
            let Some(front) = c.in_flight.front().copied() else {
                return Err(Error::Unexpected {
                    connection: i,
                    bytes: data.len(),
                });
            };
            let want = &self.pattern.message(i, c.recv_seq)[c.recv_off..];
            let n = want.len().min(data.len());
            if let Some(at) = first_difference(&want[..n], &data[..n]) {
                return Err(Error::Mismatch {
                    connection: i,
                    message: c.recv_seq,
                    offset: c.recv_off + at,
                    expected: want[at],
                    got: data[at],
                });
            }
            data = &data[n..];
            c.recv_off += n;
            if c.recv_off == size {
                c.in_flight.pop_front();
                histogram.saturating_record(now.saturating_sub(front.due).max(1));
                c.recv_seq += 1;
                c.recv_off = 0;
                echoed += 1;
            }
        }
        Ok(echoed)
    }

    /// Checks one echoed datagram against the oldest message in flight.
    fn check_datagram(
        &mut self,
        i: usize,
        sga: &bypass::Sga,
        now: u64,
        histogram: &mut Histogram<u64>,
    ) -> Result<u64, Error> {
        let size = self.opts.message_size;
        let c = &mut self.conns[i];
        let Some(front) = c.in_flight.front().copied() else {
            return Err(Error::Unexpected {
                connection: i,
                bytes: sga.len(),
            });
        };
        if sga.len() != size {
            return Err(Error::WrongLength {
                connection: i,
                message: c.recv_seq,
                expected: size,
                got: sga.len(),
            });
        }
        let want = self.pattern.message(i, c.recv_seq);
        let mut off = 0;
        for seg in sga.segments() {
            let want = &want[off..off + seg.len()];
            if let Some(at) = first_difference(want, seg) {
                return Err(Error::Mismatch {
                    connection: i,
                    message: c.recv_seq,
                    offset: off + at,
                    expected: want[at],
                    got: seg[at],
                });
            }
            off += seg.len();
        }
        c.in_flight.pop_front();
        histogram.saturating_record(now.saturating_sub(front.due).max(1));
        c.recv_seq += 1;
        Ok(1)
    }

    fn check_timeouts(&self, now: u64) -> Result<(), Error> {
        let limit = duration_ns(self.opts.reply_timeout);
        for (i, c) in self.conns.iter().enumerate() {
            if let Some(front) = c.in_flight.front() {
                let waited = now.saturating_sub(front.sent);
                if waited > limit {
                    return Err(Error::NoReply {
                        connection: i,
                        message: c.recv_seq,
                        waited: Duration::from_nanos(waited),
                    });
                }
            }
        }
        Ok(())
    }

    fn report(
        &self,
        libos: &LibOs,
        messages: u64,
        elapsed_ns: u64,
        histogram: Histogram<u64>,
    ) -> Report {
        let o = self.opts;
        let elapsed_s = elapsed_ns as f64 / 1e9;
        let bytes = messages * o.message_size as u64;
        let per_s = |x: f64| if elapsed_s > 0.0 { x / elapsed_s } else { 0.0 };
        debug_assert_eq!(histogram.len(), messages);
        Report {
            libos: libos.name().to_string(),
            protocol: o.protocol,
            mode: if o.rate.is_some() { "open" } else { "closed" },
            connections: o.connections,
            message_size: o.message_size,
            target_rate: o.rate,
            messages,
            bytes,
            elapsed_s,
            msgs_per_s: per_s(messages as f64),
            mb_per_s: per_s(bytes as f64) / 1e6,
            latency_us: Latency::from_histogram(&histogram),
            histogram,
        }
    }
}

/// The next completion of any operation within `wait`, or `None`.
fn next_completion(libos: &mut LibOs, wait: Duration) -> Result<Option<QResult>, Error> {
    let mut got = None;
    match libos.wait_next_n(1, Some(wait), |r| {
        got = Some(r);
        false
    }) {
        Ok(_) => Ok(got),
        Err(e) if e.kind() == ErrorKind::TimedOut => Ok(None),
        Err(e) => Err(Error::api("wait", e)),
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
