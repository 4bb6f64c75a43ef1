//! The echo server: every byte that arrives goes back where it came from.
//!
//! TCP: each connection keeps one pop pending; each popped Sga is pushed back unchanged (no
//! copy). A connection stops popping while more than
//! [`ServeOptions::max_unsent_per_connection`] bytes wait to be pushed, so a client that does
//! not read cannot make the server hold unbounded memory. When the client closes its side, the
//! server finishes pushing what it has and closes the connection.
//!
//! UDP: one socket keeps one pop pending and `pushto`s every datagram back to its sender.
//!
//! One loop over `wait_next_n` drives everything; it returns when the stop flag is raised (after
//! handling the completions already there) or, for TCP, when
//! [`ServeOptions::max_connections`] connections have been served and closed.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bypass::{ErrorKind, LibOs, OpCode, QDesc, QDescMap, QResult, QValue, SocketKind};
use serde::Serialize;

use crate::{Error, Protocol};

/// How often the loop looks at the stop flag when no I/O completes.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// How a server listens and when it stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Address to listen on; port 0 picks a free one (see [`Server::local_addr`]).
    pub listen: SocketAddrV4,
    pub protocol: Protocol,
    /// TCP: return after this many connections were accepted and closed again; `None` serves
    /// forever (or until the stop flag). Must be `None` for UDP, which has no connections.
    pub max_connections: Option<u64>,
    /// TCP listen backlog.
    pub backlog: usize,
    /// TCP: bytes popped but not yet pushed back above which a connection stops popping.
    pub max_unsent_per_connection: usize,
}

impl ServeOptions {
    /// A TCP echo server on `listen` that serves until stopped.
    pub fn tcp(listen: SocketAddrV4) -> ServeOptions {
        ServeOptions {
            listen,
            protocol: Protocol::Tcp,
            max_connections: None,
            backlog: 1024,
            max_unsent_per_connection: 256 * 1024,
        }
    }

    /// A UDP echo server on `listen` that serves until stopped.
    pub fn udp(listen: SocketAddrV4) -> ServeOptions {
        ServeOptions {
            protocol: Protocol::Udp,
            ..ServeOptions::tcp(listen)
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.protocol == Protocol::Udp && self.max_connections.is_some() {
            return Err(Error::Options(
                "max_connections applies to TCP only; stop a UDP server with its stop flag".into(),
            ));
        }
        if self.backlog == 0 {
            return Err(Error::Options(
                "the listen backlog must be at least 1".into(),
            ));
        }
        if self.max_unsent_per_connection == 0 {
            return Err(Error::Options(
                "max_unsent_per_connection must be at least 1 byte".into(),
            ));
        }
        Ok(())
    }
}

/// What a server did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    /// TCP connections accepted (0 for UDP).
    pub connections_accepted: u64,
    /// TCP connections closed after the client finished (or failed).
    pub connections_closed: u64,
    /// Connections that ended in an error (reset, failed push); their ends were closed.
    pub connection_errors: u64,
    /// Pops that brought data (TCP segments of any size, UDP datagrams).
    pub pops: u64,
    /// Bytes pushed back to clients.
    pub bytes_echoed: u64,
}

/// A bound echo server, ready to [`Server::run`].
pub struct Server {
    qd: QDesc,
    local: SocketAddrV4,
    opts: ServeOptions,
}

/// Binds (and for TCP listens) as `opts` say, then serves until stopped.
pub fn serve(
    libos: &mut LibOs,
    opts: ServeOptions,
    stop: Option<&AtomicBool>,
) -> Result<ServerStats, Error> {
    Server::bind(libos, opts)?.run(libos, stop)
}

/// The state of one TCP connection.
#[derive(Default)]
struct Conn {
    pop_pending: bool,
    /// Bytes popped and pushed back whose push has not completed.
    unsent: usize,
    /// The client closed its side: close ours once `unsent` drains.
    closing: bool,
}

impl Server {
    /// Opens the socket and binds it (TCP: and listens). Errors such as an address in use come
    /// from here, before anything runs.
    pub fn bind(libos: &mut LibOs, opts: ServeOptions) -> Result<Server, Error> {
        opts.validate()?;
        let kind = match opts.protocol {
            Protocol::Tcp => SocketKind::Stream,
            Protocol::Udp => SocketKind::Datagram,
        };
        let qd = libos
            .socket(kind)
            .map_err(|e| Error::api("cannot open the server socket", e))?;
        let bound = libos
            .bind(qd, opts.listen)
            .and_then(|()| match opts.protocol {
                Protocol::Tcp => libos.listen(qd, opts.backlog),
                Protocol::Udp => Ok(()),
            });
        let local = bound.and_then(|()| libos.local_addr(qd));
        match local {
            Ok(local) => Ok(Server { qd, local, opts }),
            Err(e) => {
                let _ = libos.close(qd);
                Err(Error::api(
                    format!("cannot serve {} on {}", opts.protocol, opts.listen),
                    e,
                ))
            }
        }
    }

    /// The address the server is bound to (with the port the system picked for port 0).
    pub fn local_addr(&self) -> SocketAddrV4 {
        self.local
    }

    /// Echoes until `stop` is raised or, for TCP, `max_connections` have been served. Closes
    /// every queue it opened before returning.
    pub fn run(self, libos: &mut LibOs, stop: Option<&AtomicBool>) -> Result<ServerStats, Error> {
        let result = match self.opts.protocol {
            Protocol::Tcp => self.run_tcp(libos, stop),
            Protocol::Udp => self.run_udp(libos, stop),
        };
        let _ = libos.close(self.qd);
        result
    }

    fn run_tcp(&self, libos: &mut LibOs, stop: Option<&AtomicBool>) -> Result<ServerStats, Error> {
        let mut stats = ServerStats::default();
        let mut conns: QDescMap<Conn> = QDescMap::default();
        let max = self.opts.max_connections.unwrap_or(u64::MAX);
        let limit = self.opts.max_unsent_per_connection;
        if max > 0 {
            libos.accept(self.qd).map_err(|e| Error::api("accept", e))?;
        }
        let result = loop {
            if stats.connections_accepted >= max && conns.is_empty() {
                break Ok(());
            }
            let stopping = stopping(stop);
            let r = match next_completion(libos, stopping) {
                Ok(Some(r)) => r,
                Ok(None) if stopping => break Ok(()),
                Ok(None) => continue,
                Err(e) => break Err(e),
            };
            let qd = r.qd;
            match (r.opcode, r.value) {
                (OpCode::Accept, QValue::Accepted { qd: conn, peer }) => {
                    tracing::debug!(%peer, %conn, "accepted");
                    stats.connections_accepted += 1;
                    if stats.connections_accepted < max {
                        if let Err(e) = libos.accept(self.qd) {
                            break Err(Error::api("accept", e));
                        }
                    }
                    conns.insert(conn, Conn::default());
                    if let Err(e) = pop(libos, conn, &mut conns) {
                        tracing::warn!(%conn, "pop failed: {e}");
                        drop_conn(libos, conn, &mut conns, &mut stats, true);
                    }
                }
                (OpCode::Accept, QValue::Failed(e)) => {
                    break Err(Error::api(format!("accept on {}", self.local), e));
                }
                (OpCode::Pop, QValue::Popped { sga, .. }) => {
                    let Some(c) = conns.get_mut(&qd) else {
                        continue;
                    };
                    c.pop_pending = false;
                    let len = sga.len();
                    stats.pops += 1;
                    c.unsent += len;
                    let again = c.unsent < limit;
                    let pushed = libos.push(qd, sga);
                    let popped = if again {
                        pop(libos, qd, &mut conns)
                    } else {
                        Ok(())
                    };
                    if let Err(e) = pushed.and(popped) {
                        tracing::warn!(%qd, "echo failed: {e}");
                        drop_conn(libos, qd, &mut conns, &mut stats, true);
                    }
                }
                (OpCode::Pop, QValue::EndOfStream) => {
                    let Some(c) = conns.get_mut(&qd) else {
                        continue;
                    };
                    c.pop_pending = false;
                    c.closing = true;
                    if c.unsent == 0 {
                        drop_conn(libos, qd, &mut conns, &mut stats, false);
                    }
                }
                (OpCode::Push, QValue::Pushed { bytes }) => {
                    stats.bytes_echoed += bytes as u64;
                    let Some(c) = conns.get_mut(&qd) else {
                        continue;
                    };
                    assert!(bytes <= c.unsent, "pushed more than was popped");
                    c.unsent -= bytes;
                    if c.closing {
                        if c.unsent == 0 {
                            drop_conn(libos, qd, &mut conns, &mut stats, false);
                        }
                    } else if !c.pop_pending && c.unsent < limit {
                        if let Err(e) = pop(libos, qd, &mut conns) {
                            tracing::warn!(%qd, "pop failed: {e}");
                            drop_conn(libos, qd, &mut conns, &mut stats, true);
                        }
                    }
                }
                (_, QValue::Failed(e)) => {
                    // Operations of a connection we closed come back canceled: nothing to do.
                    if conns.contains_key(&qd) {
                        if e.kind() != ErrorKind::Canceled {
                            tracing::debug!(%qd, "connection failed: {e}");
                        }
                        drop_conn(libos, qd, &mut conns, &mut stats, true);
                    }
                }
                (op, value) => {
                    tracing::warn!(?op, %qd, "unexpected completion {value:?}");
                }
            }
        };
        for (&qd, _) in conns.iter() {
            let _ = libos.close(qd);
        }
        result.map(|()| stats)
    }

    fn run_udp(&self, libos: &mut LibOs, stop: Option<&AtomicBool>) -> Result<ServerStats, Error> {
        let mut stats = ServerStats::default();
        libos.pop(self.qd).map_err(|e| Error::api("pop", e))?;
        loop {
            let stopping = stopping(stop);
            let Some(r) = next_completion(libos, stopping)? else {
                if stopping {
                    return Ok(stats);
                }
                continue;
            };
            match (r.opcode, r.value) {
                (OpCode::Pop, QValue::Popped { sga, from }) => {
                    libos.pop(self.qd).map_err(|e| Error::api("pop", e))?;
                    stats.pops += 1;
                    let Some(to) = from else {
                        tracing::warn!("a datagram without a sender; dropped");
                        continue;
                    };
                    if let Err(e) = libos.pushto(self.qd, sga, to) {
                        tracing::warn!(%to, "pushto failed: {e}");
                        stats.connection_errors += 1;
                    }
                }
                (OpCode::Push, QValue::Pushed { bytes }) => stats.bytes_echoed += bytes as u64,
                (OpCode::Pop, QValue::Failed(e)) => {
                    // A failed pop of a UDP socket (e.g. an ICMP error reported by the kernel)
                    // does not end the server: count it and pop again.
                    tracing::debug!("pop failed: {e}");
                    stats.connection_errors += 1;
                    libos.pop(self.qd).map_err(|e| Error::api("pop", e))?;
                }
                (_, QValue::Failed(e)) => {
                    tracing::debug!("pushto failed: {e}");
                    stats.connection_errors += 1;
                }
                (op, value) => tracing::warn!(?op, "unexpected completion {value:?}"),
            }
        }
    }
}

/// Whether the stop flag is raised. Once it is, the loops handle the completions that are
/// already there (so the stats count every echo a client saw) and return.
fn stopping(stop: Option<&AtomicBool>) -> bool {
    stop.is_some_and(|s| s.load(Ordering::Relaxed))
}

/// The next completion of any operation, or `None` if none came within [`STOP_CHECK`] (or at
/// once, when `stopping`).
fn next_completion(libos: &mut LibOs, stopping: bool) -> Result<Option<QResult>, Error> {
    let mut got = None;
    let wait = if stopping { Duration::ZERO } else { STOP_CHECK };
    match libos.wait_next_n(1, Some(wait), |r| {
        got = Some(r);
        false
    }) {
        Ok(_) => Ok(got),
        Err(e) if e.kind() == ErrorKind::TimedOut => Ok(None),
        Err(e) => Err(Error::api("wait", e)),
    }
}

fn pop(libos: &mut LibOs, qd: QDesc, conns: &mut QDescMap<Conn>) -> bypass::Result<()> {
    libos.pop(qd)?;
    if let Some(c) = conns.get_mut(&qd) {
        c.pop_pending = true;
    }
    Ok(())
}

fn drop_conn(
    libos: &mut LibOs,
    qd: QDesc,
    conns: &mut QDescMap<Conn>,
    stats: &mut ServerStats,
    failed: bool,
) {
    if conns.remove(&qd).is_some() {
        let _ = libos.close(qd);
        stats.connections_closed += 1;
        stats.connection_errors += u64::from(failed);
    }
}
