//! # bypass-echo: an echo server and a load client over the bypass queue API
//!
//! Both halves use only the public [`bypass`] API (`socket`/`bind`/`listen`, `accept`,
//! `connect`, `push`/`pushto`, `pop`, `wait_next_n`), so they run unchanged on every library
//! OS that [`bypass::LibOs::new`] accepts.
//!
//! - [`server`]: [`Server`] accepts any number of TCP connections and echoes every byte back
//!   (one pop kept pending per connection, each popped Sga pushed back as is), or echoes every
//!   UDP datagram to its sender. One completion loop drives all of it, until a stop flag is
//!   raised or a number of connections has been served.
//! - [`client`]: [`run_load`] opens connections, sends messages in a closed loop (send, wait
//!   for the whole echo, repeat) or an open loop (sends on a fixed schedule, latency measured
//!   from the scheduled time so a slow server cannot hide its queueing), checks every echoed
//!   byte against what was sent, and returns a [`Report`].
//! - [`report`]: throughput and latency percentiles from an HDR histogram, as a table
//!   (`Display`) and as JSON.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use bypass::{Config, LibOs};
//! use bypass_echo::{run_load, LoadOptions, Protocol, ServeOptions, Server};
//!
//! # fn main() -> Result<(), bypass_echo::Error> {
//! let stop = AtomicBool::new(false);
//! let addr = std::thread::scope(|s| {
//!     let (tx, rx) = std::sync::mpsc::channel();
//!     let stop = &stop;
//!     s.spawn(move || -> Result<(), bypass_echo::Error> {
//!         let mut libos = LibOs::new(Config::default()).map_err(bypass_echo::Error::from)?;
//!         let server = Server::bind(&mut libos, ServeOptions::tcp("127.0.0.1:0".parse().unwrap()))?;
//!         tx.send(server.local_addr()).unwrap();
//!         server.run(&mut libos, Some(stop)).map(|_| ())
//!     });
//!     let addr = rx.recv().unwrap();
//!     let mut libos = LibOs::new(Config::default()).unwrap();
//!     let report = run_load(&mut libos, &LoadOptions::new(addr, Protocol::Tcp)).unwrap();
//!     println!("{report}");
//!     stop.store(true, std::sync::atomic::Ordering::Relaxed);
//!     addr
//! });
//! # let _ = addr; Ok(()) }
//! ```

pub mod client;
mod error;
mod pattern;
pub mod report;
pub mod server;

pub use client::{run_load, Limit, LoadOptions};
pub use error::Error;
pub use report::{Latency, Report};
pub use server::{serve, ServeOptions, Server, ServerStats};

/// The transport an echo runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A byte stream: echoes may arrive in any split; each connection is one TCP connection.
    Tcp,
    /// Datagrams: each message is one datagram and comes back as one; each "connection" is
    /// one UDP socket of the client.
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Nanoseconds on the LibOs's clock: time as the library OS sees it (real or virtual).
fn now_ns(libos: &bypass::LibOs) -> u64 {
    libos.clock().now().as_nanos()
}
