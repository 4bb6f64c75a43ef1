//! The benchmarks' ping-pong clients: [`socket_ping_pong`], the `linux` reference over a plain
//! non-blocking socket, and [`api_ping_pong`], the same through the queue API (send a message,
//! read until its echo is whole, compare, record), so a ratio between the two measures the
//! libOS and not the client; [`one_thread_ping_pong`] and [`one_thread_bulk`] for both `sim`
//! ends in one thread; and the bulk stream every bulk client fills and checks.

use std::io::{self, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bypass::{Error, ErrorKind, LibOs, QDesc, QResult, QValue, Sga, SocketKind};
use bypass_echo::Limit;
use hdrhistogram::Histogram;

/// Longest a round trip may take before the run fails.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a ping-pong run returns: the messages measured, the nanoseconds they took, and their
/// round-trip histogram.
pub(crate) type PingPong = (u64, u64, Histogram<u64>);

/// A histogram of round trips in nanoseconds, up to an hour.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("static bounds are valid")
}

/// What both clients keep: the message and its echo, the warm-up, then the measured phase
/// until the limit, and the histogram of the measured round trips.
struct Run {
    warmup: u64,
    limit: Limit,
    seq: u64,
    measured: u64,
    start: Instant,
    histogram: Histogram<u64>,
    msg: Vec<u8>,
    back: Vec<u8>,
}

impl Run {
    fn new(size: usize, limit: Limit, warmup: u64) -> Run {
        Run {
            warmup,
            limit,
            seq: 0,
            measured: 0,
            start: Instant::now(),
            histogram: new_histogram(),
            msg: (0..size).map(|i| (i % 251) as u8).collect(),
            back: vec![0u8; size],
        }
    }

    /// Sequence number of the next message (now in `msg`), or `None` once the limit is met.
    fn next(&mut self) -> Option<u64> {
        if self.seq == self.warmup {
            self.start = Instant::now();
        }
        if self.seq >= self.warmup {
            let done = match self.limit {
                Limit::Count(n) => self.measured >= n,
                Limit::Duration(d) => self.start.elapsed() >= d,
            };
            if done {
                return None;
            }
        }
        self.msg[0] = self.seq as u8;
        Some(self.seq)
    }

    /// Copies `sga`, the next piece of the echo of the current message, into `back` after the
    /// `got` bytes already there; returns the bytes there now. More than the message is an
    /// error.
    fn take_echo(&mut self, got: usize, sga: &Sga) -> bypass::Result<usize> {
        if got + sga.len() > self.msg.len() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("more bytes came back than message {} had", self.seq),
            ));
        }
        Ok(got + sga.copy_to(&mut self.back[got..]))
    }

    /// Checks the echo in `back` against the message and records its round trip `rtt`.
    fn record(&mut self, rtt: Duration) -> Result<(), String> {
        let seq = self.seq;
        self.seq += 1;
        if self.back != self.msg {
            return Err(format!("the echo of message {seq} differs"));
        }
        if seq >= self.warmup {
            self.histogram
                .saturating_record((rtt.as_nanos() as u64).max(1));
            self.measured += 1;
        }
        Ok(())
    }

    /// Messages measured, the nanoseconds they took, their histogram.
    fn result(self) -> PingPong {
        (
            self.measured,
            self.start.elapsed().as_nanos() as u64,
            self.histogram,
        )
    }
}

/// Bytes per push of a bypass client's bulk transfer.
pub(crate) const BULK_CHUNK: usize = 64 << 10;

/// The bulk stream repeats with this period: byte `i` is `i % 251`.
pub(crate) const BULK_PERIOD: usize = 251;

/// Byte `i` of a bulk stream.
pub(crate) fn bulk_byte(i: u64) -> u8 {
    (i % BULK_PERIOD as u64) as u8
}

/// The bulk stream from every phase: `&pattern[i % 251..]` starts with byte `i` and holds at
/// least [`BULK_CHUNK`] bytes. Clients fill and check the stream by slices of it (a copy, a
/// comparison), so the client's CPU goes to the datapath, not to one division per byte.
pub(crate) fn bulk_pattern() -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..(BULK_CHUNK + BULK_PERIOD) as u64)
            .map(bulk_byte)
            .collect()
    })
}

/// Fills `out` with the bulk stream from byte `at` on.
pub(crate) fn fill_bulk(out: &mut [u8], at: u64) {
    let pattern = bulk_pattern();
    let mut done = 0;
    while done < out.len() {
        let phase = ((at + done as u64) % BULK_PERIOD as u64) as usize;
        let n = (out.len() - done).min(pattern.len() - phase);
        out[done..done + n].copy_from_slice(&pattern[phase..phase + n]);
        done += n;
    }
}

/// Checks `data`, which starts at byte `at` of the bulk stream.
pub(crate) fn check_bulk(data: &[u8], at: u64) -> io::Result<()> {
    let pattern = bulk_pattern();
    let mut done = 0;
    while done < data.len() {
        let phase = ((at + done as u64) % BULK_PERIOD as u64) as usize;
        let n = (data.len() - done).min(pattern.len() - phase);
        let (got, want) = (&data[done..done + n], &pattern[phase..phase + n]);
        if got != want {
            let i = done + got.iter().zip(want).take_while(|(a, b)| a == b).count();
            return Err(io::Error::other(format!(
                "bulk stream byte {} differs",
                at + i as u64
            )));
        }
        done += n;
    }
    Ok(())
}

/// Writes all of `data` to a non-blocking stream, spinning on `WouldBlock`; gives up once
/// `stop` is set.
pub(crate) fn write_all_spinning(
    stream: &mut TcpStream,
    mut data: &[u8],
    stop: Option<&AtomicBool>,
) -> io::Result<()> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Err(io::Error::other("stopped while sending"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `linux` reference server for one connection: sets TCP_NODELAY and non-blocking mode,
/// then echoes whatever arrives, spinning on `read`, until the peer closes or `stop` is set.
pub(crate) fn socket_echo(
    stream: &mut TcpStream,
    buf: &mut [u8],
    stop: Option<&AtomicBool>,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    loop {
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Ok(());
        }
        let n = match stream.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        write_all_spinning(stream, &buf[..n], stop)?;
    }
}

/// The `linux` reference client: `warmup` round trips, then round trips until `limit`, over a
/// connected non-blocking stream with TCP_NODELAY, spinning on `read`. Returns what
/// [`api_ping_pong`] returns.
pub(crate) fn socket_ping_pong(
    stream: &mut TcpStream,
    size: usize,
    limit: Limit,
    warmup: u64,
) -> io::Result<PingPong> {
    let mut run = Run::new(size, limit, warmup);
    while let Some(seq) = run.next() {
        let t0 = Instant::now();
        write_all_spinning(stream, &run.msg, None)?;
        let mut got = 0;
        let mut spins = 0u32;
        while got < size {
            match stream.read(&mut run.back[got..]) {
                Ok(0) => return Err(io::Error::other("the server closed the connection")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The clock only now and then: the reference's spin stays a bare read.
                    spins = spins.wrapping_add(1);
                    if spins.is_multiple_of(4096) && t0.elapsed() > DEADLINE {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no echo of message {seq} for {} s", DEADLINE.as_secs()),
                        ));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        run.record(t0.elapsed()).map_err(io::Error::other)?;
    }
    Ok(run.result())
}

/// `warmup` round trips, then round trips of `size`-byte messages over a new connection to
/// `server` until `limit`. Returns the measured messages, the nanoseconds they took, and their
/// round-trip histogram (from just before the push to the last byte of the echo).
pub(crate) fn api_ping_pong(
    libos: &mut LibOs,
    server: SocketAddrV4,
    size: usize,
    limit: Limit,
    warmup: u64,
) -> bypass::Result<PingPong> {
    let qd = libos.socket(SocketKind::Stream)?;
    let result = (|| {
        let qt = libos.connect(qd, server)?;
        libos.wait(qt, Some(DEADLINE))?.ok()?;
        let mut run = Run::new(size, limit, warmup);
        while let Some(seq) = run.next() {
            let t0 = Instant::now();
            let push = libos.push(qd, libos.sga_from_slice(&run.msg)?)?;
            let mut got = 0;
            while got < size {
                let pop = libos.pop(qd)?;
                let sga = popped(
                    libos.wait(pop, Some(DEADLINE))?,
                    "server",
                    format_args!("during message {seq}"),
                )?;
                got = run.take_echo(got, &sga)?;
            }
            let rtt = t0.elapsed();
            libos.wait(push, Some(DEADLINE))?.ok()?;
            run.record(rtt)
                .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        }
        Ok(run.result())
    })();
    let _ = libos.close(qd);
    result
}

/// The `sim` target: a client and a server LibOs in this one thread, joined by the in-process
/// wire, driven in turn through the queue API. Each round trip: the client pushes the message;
/// both LibOses are polled, the server echoing whatever its pop brings, until the client's pops
/// have brought the whole echo back. Nothing crosses a CPU or the kernel, so this is the stack
/// and the queue API alone, both ends' work on one core. Returns what [`api_ping_pong`] returns.
pub(crate) fn one_thread_ping_pong(
    server: &mut LibOs,
    client: &mut LibOs,
    listen: SocketAddrV4,
    size: usize,
    limit: Limit,
    warmup: u64,
) -> bypass::Result<PingPong> {
    in_one_thread(server, client, listen, |server, client, s, c, spins| {
        let mut run = Run::new(size, limit, warmup);
        let mut spop = server.pop(s)?;
        let mut echoes = Vec::with_capacity(4);
        while let Some(seq) = run.next() {
            let t0 = Instant::now();
            let push = client.push(c, client.sga_from_slice(&run.msg)?)?;
            let mut cpop = client.pop(c)?;
            let mut got = 0;
            while got < size {
                poll_both(server, client, t0, spins)?;
                if server.is_done(spop)? {
                    let sga = popped(
                        server.wait(spop, None)?,
                        "client",
                        format_args!("during message {seq}"),
                    )?;
                    echoes.push(server.push(s, sga)?);
                    spop = server.pop(s)?;
                }
                if client.is_done(cpop)? {
                    let sga = popped(
                        client.wait(cpop, None)?,
                        "server",
                        format_args!("during message {seq}"),
                    )?;
                    got = run.take_echo(got, &sga)?;
                    if got < size {
                        cpop = client.pop(c)?;
                    }
                }
            }
            let rtt = t0.elapsed();
            client.wait(push, None)?.ok()?;
            for echo in echoes.drain(..) {
                while !server.is_done(echo)? {
                    poll_both(server, client, t0, spins)?;
                }
                server.wait(echo, None)?.ok()?;
            }
            run.record(rtt)
                .map_err(|e| Error::new(ErrorKind::InvalidArgument, e))?;
        }
        Ok(run.result())
    })
}

/// Opens a connection from `client` to a listener of `server` at `listen`, both LibOses in
/// this thread, runs `f` on it (with the server's accepted queue, the client's queue, and the
/// spin count [`poll_both`] keeps), then closes both ends whatever `f` returned.
fn in_one_thread<T>(
    server: &mut LibOs,
    client: &mut LibOs,
    listen: SocketAddrV4,
    f: impl FnOnce(&mut LibOs, &mut LibOs, QDesc, QDesc, &mut u32) -> bypass::Result<T>,
) -> bypass::Result<T> {
    let l = server.socket(SocketKind::Stream)?;
    let c = client.socket(SocketKind::Stream)?;
    let mut spins = 0;
    let result = (|| {
        server.bind(l, listen)?;
        server.listen(l, 1)?;
        let addr = server.local_addr(l)?;
        let accept = server.accept(l)?;
        let connect = client.connect(c, addr)?;
        let started = Instant::now();
        while !(server.is_done(accept)? && client.is_done(connect)?) {
            poll_both(server, client, started, &mut spins)?;
        }
        client.wait(connect, None)?.ok()?;
        let s = match server.wait(accept, None)?.ok()?.value {
            QValue::Accepted { qd, .. } => qd,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    format!("accept completed as {other:?}"),
                ))
            }
        };
        let result = f(server, client, s, c, &mut spins);
        let _ = server.close(s);
        result
    })();
    let _ = client.close(c);
    let _ = server.close(l);
    result
}

/// Pushes kept in flight by [`one_thread_bulk`].
const BULK_PUSHES: usize = 8;

/// One-connection bulk on `sim` with both LibOses in this thread, as [`one_thread_ping_pong`]
/// runs them: the client pushes `total` bytes of the bulk stream in 64 KiB pushes (up to
/// [`BULK_PUSHES`] in flight), the server pops them and checks every byte. Returns the
/// nanoseconds from the first push to the last byte checked.
pub(crate) fn one_thread_bulk(
    server: &mut LibOs,
    client: &mut LibOs,
    listen: SocketAddrV4,
    total: u64,
) -> bypass::Result<u64> {
    in_one_thread(server, client, listen, |server, client, s, c, spins| {
        let t0 = Instant::now();
        let (mut sent, mut received) = (0u64, 0u64);
        let mut pushes = std::collections::VecDeque::with_capacity(BULK_PUSHES);
        let mut pop = server.pop(s)?;
        while received < total {
            while pushes.len() < BULK_PUSHES && sent < total {
                let n = (total - sent).min(BULK_CHUNK as u64) as usize;
                let mut sga = client.sga_alloc(n)?;
                for seg in sga.segments_mut() {
                    let bytes = seg.as_mut_slice();
                    fill_bulk(bytes, sent);
                    sent += bytes.len() as u64;
                }
                pushes.push_back(client.push(c, sga)?);
            }
            poll_both(server, client, t0, spins)?;
            while let Some(&push) = pushes.front() {
                if !client.is_done(push)? {
                    break;
                }
                client.wait(push, None)?.ok()?;
                pushes.pop_front();
            }
            if server.is_done(pop)? {
                let sga = popped(
                    server.wait(pop, None)?,
                    "client",
                    format_args!("after {received} of {total} B"),
                )?;
                for seg in sga.segments() {
                    check_bulk(seg.as_slice(), received)
                        .map_err(|e| Error::new(ErrorKind::InvalidArgument, e.to_string()))?;
                    received += seg.len() as u64;
                }
                if received > total {
                    return Err(Error::new(
                        ErrorKind::InvalidArgument,
                        format!("{received} B arrived of the {total} B sent"),
                    ));
                }
                if received < total {
                    pop = server.pop(s)?;
                }
            }
        }
        let ns = t0.elapsed().as_nanos() as u64;
        while let Some(push) = pushes.pop_front() {
            while !client.is_done(push)? {
                poll_both(server, client, t0, spins)?;
            }
            client.wait(push, None)?.ok()?;
        }
        Ok(ns)
    })
}

/// The data a completed pop brought. End of stream is an error: "the `peer` closed `when`".
fn popped(result: QResult, peer: &str, when: impl std::fmt::Display) -> bypass::Result<Sga> {
    let sga = result.into_sga()?;
    if sga.is_empty() {
        return Err(Error::new(
            ErrorKind::ConnectionReset,
            format!("the {peer} closed {when}"),
        ));
    }
    Ok(sga)
}

/// One turn of each LibOs; fails once `since` is [`DEADLINE`] ago (the clock is read only
/// every 4096 calls, counted in `spins`, as the reference client does).
fn poll_both(
    server: &mut LibOs,
    client: &mut LibOs,
    since: Instant,
    spins: &mut u32,
) -> bypass::Result<()> {
    server.poll()?;
    client.poll()?;
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(4096) && since.elapsed() > DEADLINE {
        return Err(Error::new(
            ErrorKind::TimedOut,
            format!("no progress for {} s", DEADLINE.as_secs()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_stream_is_checked_from_its_offset() {
        let data: Vec<u8> = (300..400).map(bulk_byte).collect();
        assert!(check_bulk(&data, 300).is_ok());
        let e = check_bulk(&data, 301).unwrap_err().to_string();
        assert!(e.contains("301"), "{e}");
    }

    #[test]
    fn a_filled_bulk_stream_checks_at_any_offset_and_length() {
        for (at, len) in [
            (0u64, 1usize),
            (250, 2),
            (251, 600),
            (1000, BULK_CHUNK + 700),
        ] {
            let mut data = vec![0u8; len];
            fill_bulk(&mut data, at);
            let expect: Vec<u8> = (at..at + len as u64).map(bulk_byte).collect();
            assert_eq!(data, expect, "at {at}, {len} bytes");
            assert!(check_bulk(&data, at).is_ok());
        }
    }

    #[test]
    fn a_wrong_byte_deep_in_a_long_echo_is_named() {
        let mut data = vec![0u8; 3 * BULK_CHUNK];
        fill_bulk(&mut data, 77);
        data[2 * BULK_CHUNK + 5] ^= 1;
        let e = check_bulk(&data, 77).unwrap_err().to_string();
        let wrong = 77 + 2 * BULK_CHUNK as u64 + 5;
        assert!(e.contains(&format!("byte {wrong} differs")), "{e}");
    }
}
