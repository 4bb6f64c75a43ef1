//! Configuration of a [`crate::LibOs`], read from TOML.
//!
//! Every key is optional; `Config::default()` is the embedded default. Unknown keys are errors,
//! so a typo never passes silently. See `docs/config.toml` in the repository for an example
//! with every key documented.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Which library OS drives the network queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LibOsName {
    /// Linux sockets, non-blocking, driven by epoll.
    #[default]
    Kernel,
    /// Linux sockets driven by io_uring.
    Uring,
    /// The user-space stack over an in-memory simulated wire.
    Sim,
    /// The user-space stack over AF_XDP.
    Xdp,
    /// The user-space stack over AF_PACKET rings.
    Packet,
    /// The user-space stack over a TAP interface.
    Tap,
}

impl LibOsName {
    pub const ALL: [LibOsName; 6] = [
        LibOsName::Kernel,
        LibOsName::Uring,
        LibOsName::Sim,
        LibOsName::Xdp,
        LibOsName::Packet,
        LibOsName::Tap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LibOsName::Kernel => "kernel",
            LibOsName::Uring => "uring",
            LibOsName::Sim => "sim",
            LibOsName::Xdp => "xdp",
            LibOsName::Packet => "packet",
            LibOsName::Tap => "tap",
        }
    }
}

impl std::fmt::Display for LibOsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LibOsName {
    type Err = Error;
    fn from_str(s: &str) -> Result<LibOsName> {
        LibOsName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = LibOsName::ALL.iter().map(|n| n.as_str()).collect();
                Error::new(
                    ErrorKind::Config,
                    format!("unknown libOS '{s}'; choose one of: {}", names.join(", ")),
                )
            })
    }
}

/// How a wait spends its time when nothing is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Busy-poll: lowest latency, one core per LibOs.
    #[default]
    Spin,
    /// Sleep in the kernel when idle (where the libOS can): an idle process burns no core.
    Block,
}

/// Sizes of the buffer pools, fixed at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// 2 KiB chunks for frames and small messages.
    pub frames: usize,
    /// 64 KiB page-aligned chunks for bulk and storage I/O.
    pub large: usize,
    /// Back pools with 2 MiB huge pages when the machine has them reserved.
    pub huge_pages: bool,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            frames: 16 * 1024,
            large: 2 * 1024,
            huge_pages: false,
        }
    }
}

/// Limits of the queue layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Operations pending or completed-but-not-waited-on at once.
    pub max_operations: usize,
    /// Queues open at once.
    pub max_queues: usize,
    /// Largest single push, in bytes.
    pub max_push_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_operations: 64 * 1024,
            max_queues: 64 * 1024,
            max_push_bytes: 64 << 20,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The library OS for network queues.
    pub libos: LibOsName,
    /// What waits do when nothing is ready.
    pub poll: PollMode,
    pub pool: PoolSection,
    pub limits: LimitsSection,
}

impl Config {
    /// The default configuration with another libOS.
    pub fn with_libos(libos: LibOsName) -> Config {
        Config {
            libos,
            ..Config::default()
        }
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| Error::new(ErrorKind::Config, format!("malformed configuration: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::os(
                e,
                format_args!("cannot read configuration file {}", path.display()),
            )
        })?;
        Config::from_toml(&text)
            .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))
    }

    /// Checks values that parse but make no sense together.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::new(ErrorKind::Config, msg));
        if self.pool.frames < 64 {
            return bad(format!(
                "pool.frames = {} is too small; use at least 64",
                self.pool.frames
            ));
        }
        if self.pool.large < 4 {
            return bad(format!(
                "pool.large = {} is too small; use at least 4",
                self.pool.large
            ));
        }
        if self.limits.max_operations == 0 || self.limits.max_operations > u32::MAX as usize {
            return bad("limits.max_operations must be between 1 and 2^32-1".into());
        }
        if self.limits.max_queues == 0 || self.limits.max_queues > 1 << 20 {
            return bad("limits.max_queues must be between 1 and 1048576".into());
        }
        if self.limits.max_push_bytes == 0 {
            return bad("limits.max_push_bytes must be positive".into());
        }
        Ok(())
    }
}
