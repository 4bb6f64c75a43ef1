//! `bypass topo up|down`: a two-namespace veth topology to run bypass against the kernel on
//! one machine, and the `--netns/--iface/--ip/--gateway` flags shared by `echo` and `bench`.
//!
//! ```text
//!   namespace bypass-N-a                     namespace bypass-N-b
//!   bypass-N-a (no kernel IPv4 address) <-veth-> bypass-N-b 10.77.S.2/24 (the kernel's)
//!   the user-space stack owns 10.77.S.1
//! ```
//!
//! Side A carries no kernel address on purpose: the user-space stack (AF_XDP, AF_PACKET)
//! sees frames *as well as* the kernel there, and a kernel owning the same address would answer
//! ARP and reset our TCP connections. S is derived from N (or `--subnet`), so `up` twice makes
//! the same topology. To run the user-space stack on side B as well, remove B's kernel address
//! (`ip -n bypass-N-b addr flush dev bypass-N-b`) and give the stack 10.77.S.2.

use bypass_devices::netns;
use bypass_devices::topo::{fmt_ip, Topology, TopologySpec};
use clap::{Args, Subcommand};

use crate::config::FileConfig;
use crate::error::CliError;
use crate::Global;

// ----- shared network flags ------------------------------------------------------------------

/// Where a libOS's network lives: `net.*` of the configuration, from flags.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct NetArgs {
    /// Network namespace (under /run/netns) to run in (config key `net.netns`). For kernel
    /// and uring the thread that runs the libOS enters it; for xdp/packet/tap the libOS opens
    /// its interface there.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// Interface driven by xdp/packet/tap (config key `net.iface`).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// The user-space stack's address and prefix, e.g. 10.77.1.1/24 (config key `net.ip`).
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<String>,
    /// Where the user-space stack sends traffic outside its subnet (config key `net.gateway`).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<String>,
}

impl NetArgs {
    /// Whether no network flag was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.netns.is_none() && self.iface.is_none() && self.ip.is_none() && self.gateway.is_none()
    }

    /// Writes the given flags into `config.net` (flags win over the file) and checks them.
    pub(crate) fn apply(&self, config: &mut bypass::Config) -> Result<(), CliError> {
        let net = &mut config.net;
        if let Some(ns) = &self.netns {
            net.netns = Some(ns.clone());
        }
        if let Some(iface) = &self.iface {
            net.iface = Some(iface.clone());
        }
        if let Some(ip) = &self.ip {
            net.ip = Some(ip.clone());
        }
        if let Some(gw) = &self.gateway {
            net.gateway = Some(gw.clone());
        }
        config.validate().map_err(CliError::from)
    }

    /// Moves the calling thread into `config.net.netns`, if one is set. Threads it spawns
    /// afterwards start there too.
    pub(crate) fn enter(config: &bypass::Config) -> Result<(), CliError> {
        match &config.net.netns {
            Some(ns) => netns::enter(ns).map_err(|e| {
                CliError::new(format!("cannot enter network namespace '{ns}': {e}"))
                    .hint("create it with `bypass topo up` or `ip netns add NAME`; needs root")
            }),
            None => Ok(()),
        }
    }
}

/// The file's configuration with the network flags applied; enters `--netns` (or the file's
/// `net.netns`) on the calling thread, so kernel-socket libOSes run there too.
pub(crate) fn with_net(file: &FileConfig, net: &NetArgs) -> Result<FileConfig, CliError> {
    let mut file = file.clone();
    net.apply(&mut file.bypass)?;
    NetArgs::enter(&file.bypass)?;
    Ok(file)
}

// ----- bypass topo ---------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create (or complete) the two-namespace veth topology and print how to use it.
    Up(TopoArgs),
    /// Remove the topology's namespaces (and with them the veth pair).
    Down(TopoArgs),
}

#[derive(Args, Debug)]
pub(crate) struct TopoArgs {
    /// Name of the topology: namespaces and interfaces are bypass-NAME-a and bypass-NAME-b
    /// (NAME: at most 6 letters, digits or '-').
    #[arg(long, value_name = "NAME", default_value = "demo")]
    name: String,
    /// N of the subnet 10.77.N.0/24 (1-254; default derived from the name).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    subnet: Option<u8>,
}

pub(crate) fn run(_global: &Global, cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Up(args) => up(&args),
        Command::Down(args) => down(&args),
    }
}

/// A subnet number in 1..=250 that depends only on the name (FNV-1a).
fn subnet_of(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h % 250) as u8 + 1
}

fn spec_of(args: &TopoArgs) -> Result<TopologySpec, CliError> {
    let subnet = args.subnet.unwrap_or_else(|| subnet_of(&args.name));
    TopologySpec::named(&format!("bypass-{}", args.name), subnet).map_err(|e| {
        CliError::new(format!("--name {}: {e}", args.name))
            .hint("use at most 6 letters, digits or '-', e.g. --name demo")
    })
}

pub(crate) fn need_root(what: &str) -> Result<(), CliError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            CliError::new(format!("{what} needs root (network namespaces and veth)"))
                .hint("run it with sudo"),
        );
    }
    Ok(())
}

fn up(args: &TopoArgs) -> Result<(), CliError> {
    need_root("bypass topo up")?;
    let spec = spec_of(args)?;
    let topo = Topology::up(spec).map_err(|e| {
        CliError::new(format!("cannot create the topology: {e}"))
            .hint("it needs iproute2 and ethtool (apt-get install iproute2 ethtool)")
    })?;
    let s = topo.keep();
    let (a, b) = (fmt_ip(s.ip_a()), fmt_ip(s.ip_b()));
    println!("topology '{}' is up (10.77.{}.0/24):", args.name, s.subnet);
    println!(
        "  namespace {:<16} interface {:<16} no kernel address: the user-space stack owns {a}",
        s.ns_a, s.dev_a
    );
    println!(
        "  namespace {:<16} interface {:<16} {b}/24, the kernel's",
        s.ns_b, s.dev_b
    );
    println!("try:");
    println!(
        "  bypass echo serve --libos xdp --netns {} --iface {} --ip {a}/24 --listen {a}:7000",
        s.ns_a, s.dev_a
    );
    println!("  ip netns exec {} ping -c 3 {a}", s.ns_b);
    println!(
        "  bypass echo run --libos kernel --netns {} --connect {a}:7000",
        s.ns_b
    );
    println!("  (--libos packet works the same way; tap needs no topology)");
    println!("remove it with: bypass topo down --name {}", args.name);
    Ok(())
}

fn down(args: &TopoArgs) -> Result<(), CliError> {
    need_root("bypass topo down")?;
    let spec = spec_of(args)?;
    let existed = [&spec.ns_a, &spec.ns_b]
        .iter()
        .filter(|ns| bypass_devices::topo::netns_exists(ns))
        .count();
    Topology::down(&spec).map_err(|e| CliError::new(format!("cannot remove the topology: {e}")))?;
    if existed == 0 {
        println!("topology '{}' was not up; nothing to remove", args.name);
    } else {
        println!(
            "topology '{}' removed (namespaces {} and {})",
            args.name, spec.ns_a, spec.ns_b
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_names_and_subnets_follow_the_name() {
        let args = TopoArgs {
            name: "demo".into(),
            subnet: None,
        };
        let s = spec_of(&args).unwrap();
        assert_eq!(s.ns_a, "bypass-demo-a");
        assert_eq!(s.dev_b, "bypass-demo-b");
        assert_eq!(s.subnet, subnet_of("demo"));
        assert_eq!(
            spec_of(&args).unwrap(),
            s,
            "the same name gives the same topology"
        );
        assert!((1..=250).contains(&subnet_of("x")));
        let e = spec_of(&TopoArgs {
            name: "far-too-long".into(),
            subnet: Some(3),
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("far-too-long"), "{e}");
        let s = spec_of(&TopoArgs {
            name: "x".into(),
            subnet: Some(3),
        })
        .unwrap();
        assert_eq!(s.ip_a(), [10, 77, 3, 1]);
    }

    /// Removes a topology when dropped, also when the test fails.
    struct Down(TopologySpec);

    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Topology::down(&self.0);
        }
    }

    #[test]
    fn up_is_idempotent_and_down_removes_everything() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED up_is_idempotent_and_down_removes_everything: needs root");
            return;
        }
        let args = TopoArgs {
            name: format!("t{}", std::process::id() % 100_000),
            subnet: None,
        };
        let spec = spec_of(&args).unwrap();
        let _guard = Down(spec.clone());
        up(&args).unwrap();
        up(&args).unwrap();
        for ns in [&spec.ns_a, &spec.ns_b] {
            assert!(bypass_devices::topo::netns_exists(ns), "{ns} exists");
        }
        let b = bypass_devices::topo::link_show(&spec.ns_b, &spec.dev_b).unwrap();
        assert!(b.contains("UP"), "{b}");
        let addrs = std::process::Command::new("ip")
            .args(["-n", &spec.ns_a, "-4", "addr", "show", "dev", &spec.dev_a])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&addrs.stdout).contains("inet "),
            "side A must have no kernel IPv4 address"
        );
        down(&args).unwrap();
        down(&args).unwrap();
        for ns in [&spec.ns_a, &spec.ns_b] {
            assert!(!bypass_devices::topo::netns_exists(ns), "{ns} is gone");
        }
    }

    #[test]
    fn net_flags_set_the_configuration_and_bad_ones_are_named() {
        let mut config = bypass::Config::default();
        let args = NetArgs {
            netns: Some("bypass-demo-a".into()),
            iface: Some("bypass-demo-a".into()),
            ip: Some("10.77.3.1/24".into()),
            gateway: Some("10.77.3.254".into()),
        };
        args.apply(&mut config).unwrap();
        assert_eq!(config.net.netns.as_deref(), Some("bypass-demo-a"));
        assert_eq!(config.net.iface.as_deref(), Some("bypass-demo-a"));
        assert_eq!(config.net.ip.as_deref(), Some("10.77.3.1/24"));
        assert_eq!(config.net.gateway.as_deref(), Some("10.77.3.254"));
        let bad = NetArgs {
            ip: Some("10.77.3.1".into()),
            ..NetArgs::default()
        };
        let e = bad
            .apply(&mut bypass::Config::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.77.3.1"), "{e}");
    }
}
