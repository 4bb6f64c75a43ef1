//! A test topology: two network namespaces joined by a veth pair.
//!
//! ```text
//!   namespace A                         namespace B
//!   dev_a (no kernel IPv4 address)  <-veth->  dev_b 10.77.N.2/24 (the kernel's)
//!   user-space stack owns 10.77.N.1
//! ```
//!
//! Side A is the one a bypass device drives. Its interface deliberately has **no kernel IPv4
//! address** (and IPv6 is disabled in both namespaces): the user-space stack owns 10.77.N.1, so
//! the kernel of namespace A never answers ARP, ICMP or TCP for it (no RST racing our SYN-ACK,
//! no duplicate echo replies). AF_PACKET and generic-XDP sockets see frames *as well as* the
//! kernel, so this is what keeps the two from both replying. Side B is an ordinary kernel host
//! at 10.77.N.2 (a peer to ping, to run `redis-benchmark` from, ...). Addresses exist only
//! inside the two namespaces; nothing is routed anywhere else.
//!
//! Offloads: by default both veth ends get `ethtool -K DEV rx off tx off tso off gso off gro
//! off`.
//! - `tx` (measured): with transmit checksum offload on, a UDP datagram the kernel of B sends
//!   reaches a raw reader on A with only the pseudo-header sum in its checksum field
//!   (CHECKSUM_PARTIAL; the datagram fails verification); with it off the kernel computes the
//!   full checksum (the test `kernel_frames_arrive_with_complete_checksums...` checks it).
//! - `tso`/`gso` (off for safety): with segmentation offload on, B's TCP hands veth
//!   segments of up to 64 KiB, which cross the pair whole (measured): larger than one AF_XDP
//!   frame (the kernel drops them) and than the MTU of a device without offloads. The
//!   AF_PACKET device with offloads (`af_packet::Offload`) takes them, and its own large
//!   segments then cross whole too; [`TopologySpec::offloads_off`] false leaves the pair so.
//! - `rx` (measured): makes no difference on this kernel: B's kernel drops a UDP datagram
//!   from A with a bad checksum whether it is on or off (the test
//!   `side_b_drops_frames_from_a_with_bad_checksums` checks the default). Off so that no
//!   driver may mark our frames as verified.
//! - `gro` (not measured): off so that B's frames reach an AF_PACKET reader on A one MTU each.
//!
//! Everything is done by running `ip` (iproute2) and `ethtool`; [`Topology::up`] and
//! [`Topology::down`] are idempotent, and a [`Topology`] removes its namespaces on drop
//! (deleting a namespace deletes the veth end in it, and with it the pair).

use std::io;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns;

/// Names and addresses of a topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologySpec {
    pub ns_a: String,
    pub ns_b: String,
    /// The veth end in `ns_a`, driven by a bypass device.
    pub dev_a: String,
    /// The veth end in `ns_b`, driven by the kernel.
    pub dev_b: String,
    /// N in 10.77.N.0/24.
    pub subnet: u8,
    /// Turn checksum and segmentation offloads off on both ends (see the module docs).
    pub offloads_off: bool,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TopologySpec {
    /// Names no other process or test uses at the same time: they include the pid and a
    /// per-process counter.
    pub fn unique() -> TopologySpec {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        TopologySpec {
            ns_a: format!("bypass-{pid}-{n}-a"),
            ns_b: format!("bypass-{pid}-{n}-b"),
            // At most 2 + 7 + 1 + 4 + 1 = 15 bytes, the kernel's limit is IFNAMSIZ - 1 = 15.
            dev_a: format!("bx{pid}n{}a", n % 10_000),
            dev_b: format!("bx{pid}n{}b", n % 10_000),
            subnet: (n % 250) as u8 + 1,
            offloads_off: true,
        }
    }

    /// Fixed names for a long-lived topology (`bypass topo up`): `NAME-a`/`NAME-b` namespaces
    /// with `NAME-a`/`NAME-b` veth ends (NAME at most 13 bytes), subnet 10.77.`subnet`.0/24.
    pub fn named(name: &str, subnet: u8) -> io::Result<TopologySpec> {
        if name.is_empty()
            || name.len() > 13
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("topology name {name:?} must be 1-13 letters, digits or '-'"),
            ));
        }
        Ok(TopologySpec {
            ns_a: format!("{name}-a"),
            ns_b: format!("{name}-b"),
            dev_a: format!("{name}-a"),
            dev_b: format!("{name}-b"),
            subnet,
            offloads_off: true,
        })
    }

    /// 10.77.N.1: the address the user-space stack on side A owns (not given to the kernel).
    pub fn ip_a(&self) -> [u8; 4] {
        [10, 77, self.subnet, 1]
    }

    /// 10.77.N.2: the kernel's address on side B.
    pub fn ip_b(&self) -> [u8; 4] {
        [10, 77, self.subnet, 2]
    }
}

fn run(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot run {program}: {e} (install it: apt-get install iproute2 ethtool)"),
        )
    })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> io::Result<String> {
    run("ip", args)
}

/// Whether network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    netns::path(name).exists()
}

fn link_exists(ns: &str, dev: &str) -> bool {
    ip(&["-n", ns, "link", "show", "dev", dev]).is_ok()
}

/// The output of `ip -d link show dev DEV` in namespace `ns` (it names an attached XDP
/// program, for instance).
pub fn link_show(ns: &str, dev: &str) -> io::Result<String> {
    ip(&["-n", ns, "-d", "link", "show", "dev", dev])
}

fn disable_ipv6(ns: &str) -> io::Result<()> {
    netns::run_in(ns, || -> io::Result<()> {
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            match std::fs::write(&path, "1") {
                Ok(()) => {}
                // A kernel without IPv6 sends no IPv6 frames either.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("writing {path}: {e}"))),
            }
        }
        Ok(())
    })?
}

/// Two namespaces and a veth pair; removed on drop unless [`Topology::keep`] is called.
#[derive(Debug)]
pub struct Topology {
    spec: TopologySpec,
    remove_on_drop: bool,
}

impl Topology {
    /// Creates whatever of `spec` does not exist yet (so calling it twice is harmless; each
    /// returned value removes the topology on drop unless [`Topology::keep`] is called on it).
    /// If a step fails, the namespaces of `spec` are removed again.
    pub fn up(spec: TopologySpec) -> io::Result<Topology> {
        let topo = Topology {
            spec,
            remove_on_drop: true,
        };
        topo.create()?;
        Ok(topo)
    }

    fn create(&self) -> io::Result<()> {
        let s = &self.spec;
        for ns in [&s.ns_a, &s.ns_b] {
            if !netns_exists(ns) {
                ip(&["netns", "add", ns])?;
            }
            disable_ipv6(ns)?;
            ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
        }
        if !link_exists(&s.ns_a, &s.dev_a) {
            // A half-made pair (dev_b alone) cannot be reused: remove it first.
            if link_exists(&s.ns_b, &s.dev_b) {
                ip(&["-n", &s.ns_b, "link", "del", "dev", &s.dev_b])?;
            }
            ip(&[
                "link", "add", "name", &s.dev_a, "netns", &s.ns_a, "type", "veth", "peer", "name",
                &s.dev_b, "netns", &s.ns_b,
            ])?;
        }
        let addr_b = format!("{}/24", fmt_ip(s.ip_b()));
        ip(&["-n", &s.ns_b, "addr", "replace", &addr_b, "dev", &s.dev_b])?;
        if s.offloads_off {
            for (ns, dev) in [(&s.ns_a, &s.dev_a), (&s.ns_b, &s.dev_b)] {
                run(
                    "ip",
                    &[
                        "netns", "exec", ns, "ethtool", "-K", dev, "rx", "off", "tx", "off", "tso",
                        "off", "gso", "off", "gro", "off",
                    ],
                )?;
            }
        }
        for (ns, dev) in [(&s.ns_a, &s.dev_a), (&s.ns_b, &s.dev_b)] {
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        Ok(())
    }

    /// Removes the namespaces of `spec` (and with them the veth pair); missing ones are fine.
    pub fn down(spec: &TopologySpec) -> io::Result<()> {
        let mut first_err = None;
        for ns in [&spec.ns_a, &spec.ns_b] {
            if netns_exists(ns) {
                if let Err(e) = ip(&["netns", "del", ns]) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// Leaves everything in place when this value drops (for `bypass topo up`).
    pub fn keep(mut self) -> TopologySpec {
        self.remove_on_drop = false;
        self.spec.clone()
    }

    /// Gives side A the kernel address 10.77.S.1/24, for a peer that uses kernel sockets in
    /// namespace A (the user-space stack owns that address otherwise).
    pub fn add_kernel_address_a(&self) -> io::Result<()> {
        let s = &self.spec;
        let addr = format!("{}/24", fmt_ip(s.ip_a()));
        ip(&["-n", &s.ns_a, "addr", "replace", &addr, "dev", &s.dev_a]).map(drop)
    }

    /// Removes side B's kernel address, so a user-space stack can own 10.77.S.2 there without
    /// the kernel answering ARP for it or resetting its connections.
    pub fn remove_kernel_address_b(&self) -> io::Result<()> {
        let s = &self.spec;
        ip(&["-n", &s.ns_b, "addr", "flush", "dev", &s.dev_b]).map(drop)
    }

    /// Runs `f` on a thread inside namespace A.
    pub fn in_a<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        netns::run_in(&self.spec.ns_a, f)
    }

    /// Runs `f` on a thread inside namespace B.
    pub fn in_b<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        netns::run_in(&self.spec.ns_b, f)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if self.remove_on_drop {
            if let Err(e) = Topology::down(&self.spec) {
                // Not a log line: a leaked namespace must be visible in test output.
                eprintln!("topology {:?}: cleanup failed: {e}", self.spec.ns_a);
            }
        }
    }
}

/// Dotted-quad text of an IPv4 address.
pub fn fmt_ip(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_fit_the_kernels_limits_and_differ() {
        let a = TopologySpec::unique();
        let b = TopologySpec::unique();
        assert_ne!(a.ns_a, b.ns_a);
        assert_ne!(a.dev_a, b.dev_a);
        for dev in [&a.dev_a, &a.dev_b, &b.dev_a, &b.dev_b] {
            assert!(dev.len() <= 15, "{dev} is too long for an interface name");
        }
        assert_eq!(a.ip_a(), [10, 77, a.subnet, 1]);
        assert_eq!(fmt_ip(a.ip_b()), format!("10.77.{}.2", a.subnet));
    }

    #[test]
    fn named_topologies_reject_names_that_would_not_fit() {
        let s = TopologySpec::named("demo", 9).unwrap();
        assert_eq!(
            (s.ns_a.as_str(), s.dev_b.as_str(), s.ip_a()),
            ("demo-a", "demo-b", [10, 77, 9, 1])
        );
        assert!(TopologySpec::named("much-too-long-name", 1).is_err());
        assert!(TopologySpec::named("bad/name", 1).is_err());
        assert!(TopologySpec::named("", 1).is_err());
    }
}
