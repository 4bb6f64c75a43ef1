//! # bypass: one queue API over every kernel-bypass device
//!
//! Applications do network, IPC and storage I/O through one interface (PDPIX, after
//! Demikernel): control calls (`socket`, `bind`, `listen`, `close`) are synchronous; data calls
//! (`accept`, `connect`, `push`, `pushto`, `pop`) return a [`QToken`] at once and never block;
//! [`LibOs::wait`], [`LibOs::wait_any`] and [`LibOs::wait_next_n`] replace epoll. Data travels
//! in [`Sga`]s (scatter-gather arrays of pool buffers) that the LibOs owns while I/O is in
//! flight.
//!
//! ```no_run
//! use bypass::{Config, LibOs, SocketKind, QValue};
//! # fn main() -> bypass::Result<()> {
//! let mut libos = LibOs::new(Config::default())?;
//! let qd = libos.socket(SocketKind::Stream)?;
//! let qt = libos.connect(qd, "127.0.0.1:7000".parse().unwrap())?;
//! libos.wait(qt, None)?.ok()?;
//! let qt = libos.push(qd, libos.sga_from_slice(b"hello")?)?;
//! libos.wait(qt, None)?.ok()?;
//! let qt = libos.pop(qd)?;
//! if let QValue::Popped { sga, .. } = libos.wait(qt, None)?.value {
//!     println!("{} bytes back", sga.len());
//! }
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
mod inet;
mod kernel;
mod libos;
mod queue;
mod shm;
mod slab;
mod socket_rules;
mod storage;
mod sys;
mod turns;
mod types;
mod uring_net;

pub use bypass_runtime::{Buffer, Sga};
pub use config::{
    Config, LibOsName, NetSection, PacketOffloadName, PacketRingName, PollMode, SimSection,
    StorageSection, TcpSection, XdpModeName,
};
pub use error::{Error, ErrorKind, Result};
pub use libos::LibOs;
pub use storage::FileOptions;
pub use types::{OpCode, QDesc, QDescHasher, QDescMap, QResult, QToken, QValue, SocketKind};
