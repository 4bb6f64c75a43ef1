//! # bypass-kv: a Redis-protocol key-value server on the bypass queue API
//!
//! A server for the commands most clients and benchmarks use (strings, expiry, INFO, CONFIG
//! GET), speaking RESP2 so `redis-cli` and `redis-benchmark` talk to it unchanged. It is
//! written only against the public [`bypass`] API, so it runs on every library OS: the libOS
//! is whatever the [`bypass::LibOs`] handed to [`serve`] was configured with.
//!
//! Layers, bottom up:
//! - [`resp`]: the incremental, bounded-memory RESP2 request parser and reply encoders;
//! - [`store`]: the keyspace with lazy and swept expiry;
//! - [`command`]: command execution, replies and the replayable form of writes;
//! - [`aof`]: the append-only file and its fsync policies;
//! - [`server`]: the event loop over `pop`/`push`/`wait_next_n`;
//! - [`bench`]: `redis-benchmark` against redis-server and this server, side by side.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use bypass::{Config, LibOs};
//! use bypass_kv::{serve, ServeOptions, ServerLimits};
//! # fn main() -> bypass::Result<()> {
//! let mut libos = LibOs::new(Config::default())?;
//! let stop = AtomicBool::new(false);
//! serve(&mut libos, ServeOptions {
//!     listen: "127.0.0.1:6380".parse().unwrap(),
//!     aof: None,
//!     limits: ServerLimits::default(),
//!     stop: &stop,
//!     stats: None,
//! })?;
//! # Ok(()) }
//! ```

pub mod aof;
pub mod bench;
pub mod command;
pub mod resp;
pub mod server;
pub mod stats;
pub mod store;

pub use aof::{AofFormat, AppendLog, FileAof, FsyncPolicy, Replay, StorageLog};
pub use server::{serve, AofOptions, ServeOptions, Server, ServerLimits, Summary};
pub use stats::Stats;
