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

/// The network interface of a user-space stack libOS (`sim`, `xdp`, `packet`, `tap`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NetSection {
    /// The stack's address and prefix, e.g. "10.0.0.1/24". On `sim`, unset means a free
    /// address of 10.0.1.0/16 picked by the wire.
    pub ip: Option<String>,
    /// Where traffic outside the subnet goes.
    pub gateway: Option<String>,
    /// The interface to drive (`xdp`, `packet`; for `tap`, the TAP interface, created if
    /// missing).
    pub iface: Option<String>,
    /// A network namespace (under /run/netns) to enter before opening the interface.
    /// `LibOs::new` moves the calling thread into it for good.
    pub netns: Option<String>,
    /// AF_XDP attach mode: "generic" (measured faster on veth) or "driver"; the other is
    /// tried if the first fails.
    pub xdp_mode: XdpModeName,
    /// AF_PACKET receive ring: "v2" (latency) or "v3" (throughput; its block timer adds ~1 ms).
    pub packet_ring: PacketRingName,
    /// AF_PACKET checksum and TCP segmentation offload through virtio-net headers: "auto"
    /// (on if the kernel takes them, else off with a warning), "on" (fail if the kernel
    /// refuses) or "off" (the stack computes every checksum and sends MTU-sized segments).
    pub packet_offload: PacketOffloadName,
}

/// AF_PACKET offload settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PacketOffloadName {
    #[default]
    Auto,
    On,
    Off,
}

/// AF_XDP attach modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeName {
    #[default]
    Generic,
    Driver,
}

/// AF_PACKET receive ring versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PacketRingName {
    #[default]
    V2,
    V3,
}

/// The in-process simulated wire of the `sim` libOS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSection {
    /// LibOses of one process configured with the same wire name share one wire.
    pub wire: String,
    /// Probability of dropping a frame in transit, 0.0 to 0.5.
    pub loss: f64,
    /// Seed of the loss decisions.
    pub seed: u64,
    /// The wire fills and verifies IPv4/TCP/UDP checksums, as a NIC with offload would, so
    /// the stack skips its own checksum code (off: the stack computes them, as over xdp or
    /// packet). LibOses on one wire share the setting of the first one.
    pub checksum_offload: bool,
}

impl Eq for SimSection {}

impl Default for SimSection {
    fn default() -> Self {
        SimSection {
            wire: "bypass-sim".into(),
            loss: 0.0,
            seed: 1,
            checksum_offload: false,
        }
    }
}

/// TCP of the user-space stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Nagle's algorithm (off: lowest latency).
    pub nagle: bool,
    /// Longest delay of an ACK in microseconds; 0 acknowledges every segment at once. A short
    /// delay lets a reply carry the ACK (the first segments are acknowledged at once anyway).
    pub delayed_ack_us: u64,
    /// Bytes queued for sending per connection.
    pub send_buffer: usize,
    /// Bytes received and not yet read per connection (bounds the window).
    pub recv_buffer: usize,
    /// "cubic" or "newreno".
    pub congestion: String,
    /// How long a closed connection stays in TIME-WAIT, in milliseconds.
    pub time_wait_ms: u64,
    /// Retransmissions of one segment before the connection fails with a timeout.
    pub max_retries: u32,
    /// Offer SACK, timestamps and window scaling (RFC 2018, RFC 7323).
    pub sack: bool,
    pub timestamps: bool,
    pub window_scaling: bool,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection {
            nagle: false,
            delayed_ack_us: 1000,
            send_buffer: 256 << 10,
            recv_buffer: 256 << 10,
            congestion: "cubic".into(),
            time_wait_ms: 1000,
            max_retries: 12,
            sack: true,
            timestamps: true,
            window_scaling: true,
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
    pub net: NetSection,
    pub sim: SimSection,
    pub tcp: TcpSection,
    pub storage: StorageSection,
}

/// Storage queues: files and block devices served by io_uring (`LibOs::open_file`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Register the large pool with the storage ring as fixed buffers, so one-chunk reads and
    /// writes use READ_FIXED / WRITE_FIXED (skipped if the memory-lock limit forbids it).
    pub fixed_buffers: bool,
    /// Run a kernel submission poller (SQPOLL) pinned to this CPU; unset: no poller.
    pub sqpoll_cpu: Option<u32>,
    /// Milliseconds the poller spins without work before it sleeps.
    pub sqpoll_idle_ms: u32,
    /// Submission queue entries of the storage ring.
    pub ring_entries: u32,
    /// Submit each storage operation as it is started while others are in flight and fewer
    /// than this many are at the device, rather than in a batch at the next turn; 0: always
    /// batch (`bypass_storage::EngineConfig::eager_submit_below`).
    pub eager_submit_below: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            fixed_buffers: true,
            sqpoll_cpu: None,
            sqpoll_idle_ms: 100,
            ring_entries: 256,
            eager_submit_below: 64,
        }
    }
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
        if let Some(ip) = &self.net.ip {
            if ip.parse::<bypass_wire::Ipv4Cidr>().is_err() {
                return bad(format!(
                    "net.ip = '{ip}' is not an address with a prefix such as 10.0.0.1/24"
                ));
            }
        }
        if let Some(gw) = &self.net.gateway {
            if gw.parse::<bypass_wire::Ipv4Address>().is_err() {
                return bad(format!("net.gateway = '{gw}' is not an IPv4 address"));
            }
        }
        if !(0.0..=0.5).contains(&self.sim.loss) {
            return bad(format!(
                "sim.loss = {} must be between 0.0 and 0.5",
                self.sim.loss
            ));
        }
        if !matches!(self.tcp.congestion.as_str(), "cubic" | "newreno") {
            return bad(format!(
                "tcp.congestion = '{}' is unknown; use cubic or newreno",
                self.tcp.congestion
            ));
        }
        if !(1..=32768).contains(&self.storage.ring_entries) {
            return bad(format!(
                "storage.ring_entries = {} must be between 1 and 32768",
                self.storage.ring_entries
            ));
        }
        if self.storage.sqpoll_idle_ms == 0 {
            return bad("storage.sqpoll_idle_ms must be at least 1".into());
        }
        if self.tcp.send_buffer < 4096 || self.tcp.recv_buffer < 4096 {
            return bad("tcp.send_buffer and tcp.recv_buffer must be at least 4096".into());
        }
        Ok(())
    }
}
