//! A TAP interface: the kernel's virtual Ethernet device whose "wire" is a file descriptor.
//!
//! Opening `/dev/net/tun` with `IFF_TAP | IFF_NO_PI` attaches the descriptor to the interface
//! (creating it if it does not exist). Every `write` injects one frame into the kernel as if it
//! had arrived on the interface; every `read` returns one frame the kernel sent out of it. The
//! kernel side (`ip addr add ... dev NAME`) is the peer of the user-space stack, so this device
//! needs no second namespace to talk to a kernel host.
//!
//! If this device created the interface it is not persistent, and the kernel removes it when
//! the descriptor closes (on drop). An interface made beforehand with `ip tuntap add` is left
//! alone.
//!
//! One system call per frame: simple and portable, but the slowest device here.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use bypass_runtime::{Buffer, BufferPool, PoolConfig};

use crate::sys::{os, retry_busy};
use crate::{Device, DeviceCaps, DeviceError, DeviceStats, ErrorKind};

const NEEDS: &str = "root or CAP_NET_ADMIN (to create or attach a TAP interface)";
const INSTEAD: &str =
    "try --libos kernel, or create it first with `ip tuntap add NAME mode tap user USER`";
const ETH_HLEN: usize = 14;
/// How long an attach keeps retrying while a previous TAP of the same name is torn down.
const ATTACH_BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// How to open a TAP device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (at most 15 bytes); created if it does not exist.
    pub name: String,
    /// The user-space stack's MAC address; `None` picks a random locally administered one.
    /// (The kernel's side of the interface has its own.)
    pub mac: Option<[u8; 6]>,
    /// Set the interface administratively up.
    pub bring_up: bool,
    pub pool: PoolConfig,
}

impl TapConfig {
    pub fn new(name: &str) -> TapConfig {
        TapConfig {
            name: name.to_string(),
            mac: None,
            bring_up: true,
            pool: PoolConfig::frames(1024),
        }
    }
}

/// A TAP interface driven through its file descriptor.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    created: bool,
    pool: BufferPool,
    mac: [u8; 6],
    mtu: usize,
    stats: DeviceStats,
}

/// A locally administered unicast MAC that differs between processes and calls.
fn random_mac() -> [u8; 6] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let v = h.finish().to_le_bytes();
    [0x02, v[0], v[1], v[2], v[3], v[4]]
}

impl Tap {
    /// Attaches to (or creates) the TAP interface `config.name` in the calling thread's
    /// network namespace.
    pub fn open(config: &TapConfig) -> Result<Tap, DeviceError> {
        let name = &config.name;
        let what = |step: &str| format!("TAP {step} for {name}");
        if name.is_empty() || name.len() > 15 || name.contains(['/', '\0', ' ']) {
            return Err(DeviceError::new(
                ErrorKind::InvalidConfig,
                what("configuration"),
                format!("interface name {name:?} must be 1-15 bytes without '/', spaces or NUL"),
            ));
        }
        if config.pool.chunk_size < config.pool.headroom + ETH_HLEN + 1500 {
            return Err(DeviceError::new(
                ErrorKind::InvalidConfig,
                what("configuration"),
                "pool chunks must hold a 1514-byte frame after their headroom",
            ));
        }
        let existed = os::if_index(name).is_ok();
        let err = |step: &str| {
            let what = what(step);
            move |e: io::Error| DeviceError::os(what, e, NEEDS, INSTEAD)
        };
        let fd = os::open("/dev/net/tun", libc::O_RDWR | libc::O_NONBLOCK).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                DeviceError::new(
                    ErrorKind::Unsupported,
                    what("open of /dev/net/tun"),
                    "this kernel or container has no TUN/TAP support (load the tun module); try --libos kernel",
                )
            } else {
                err("open of /dev/net/tun")(e)
            }
        })?;
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // Closing the last file of a TAP tears its interface down after the close returns;
        // attaching to the same name meanwhile answers EBUSY.
        let name = retry_busy(
            ATTACH_BUSY_TIMEOUT,
            Duration::from_millis(2),
            Duration::from_millis(50),
            || os::tun_set_iff(&fd, name, flags),
        )
        .map_err(err("attach (TUNSETIFF)"))?;
        if config.bring_up {
            os::if_set_up(&name).map_err(err("bring-up"))?;
        }
        let mtu = os::if_mtu(&name).map_err(err("reading the MTU"))?;
        let pool = BufferPool::new(&config.pool).map_err(err("buffer pool allocation"))?;
        Ok(Tap {
            fd,
            name,
            created: !existed,
            pool,
            mac: config.mac.unwrap_or_else(random_mac),
            mtu,
            stats: DeviceStats::default(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this device created the interface (and so removes it on drop).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The MAC address of the kernel's side of the interface.
    pub fn kernel_mac(&self) -> io::Result<[u8; 6]> {
        os::if_hwaddr(&self.name)
    }
}

impl Device for Tap {
    fn rx_burst(&mut self, frames: &mut Vec<Buffer>, max: usize) -> usize {
        let before = frames.len();
        while frames.len() - before < max {
            let Some(mut buf) = self.pool.alloc() else {
                // Frames wait in the kernel's queue until buffers come back.
                break;
            };
            let room = buf.tailroom();
            match os::read(&self.fd, buf.append(room)) {
                Ok(n) if n >= ETH_HLEN => {
                    buf.truncate(n);
                    self.stats.rx_frames += 1;
                    self.stats.rx_bytes += n as u64;
                    frames.push(buf);
                }
                Ok(_) => self.stats.rx_dropped += 1,
                Err(_) => break, // EAGAIN: nothing more queued (or the interface went away).
            }
        }
        frames.len() - before
    }

    fn tx_burst(&mut self, frames: &mut Vec<Buffer>) -> usize {
        let max_frame = self.mtu + ETH_HLEN;
        let mut taken = 0;
        for frame in frames.iter() {
            if frame.len() < ETH_HLEN || frame.len() > max_frame {
                self.stats.tx_dropped += 1;
                taken += 1;
                continue;
            }
            match os::write(&self.fd, frame) {
                Ok(_) => {
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += frame.len() as u64;
                    taken += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The interface is down or the frame was refused: it cannot be sent.
                    self.stats.tx_dropped += 1;
                    taken += 1;
                }
            }
        }
        frames.drain(..taken);
        taken
    }

    fn pool(&self) -> &BufferPool {
        &self.pool
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn caps(&self) -> DeviceCaps {
        DeviceCaps {
            mtu: self.mtu,
            max_burst: 32,
            rx_checksum_offload: false,
            tx_checksum_offload: false,
            ..DeviceCaps::default()
        }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("name", &self.name)
            .field("fd", &self.fd)
            .field("created", &self.created)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_any_system_call() {
        for name in ["", "sixteen-bytes-xx", "a/b"] {
            let e = Tap::open(&TapConfig::new(name)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{name:?}");
            assert!(e.to_string().contains("1-15 bytes"), "{e}");
        }
    }

    #[test]
    fn random_macs_are_locally_administered_unicast() {
        let mac = random_mac();
        assert_eq!(mac[0] & 0x03, 0x02);
    }
}
