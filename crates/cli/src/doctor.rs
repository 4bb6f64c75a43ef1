//! `bypass doctor`: what this machine offers the libOSes, one check per line, with what to do
//! about anything missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::CliError;
use crate::{sys, Global};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Missing,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    /// What to do when it is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn missing(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Missing,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub(crate) fn run(_global: &Global, args: Args) -> Result<(), CliError> {
    let mut checks = vec![kernel()];
    checks.extend(io_uring());
    checks.push(af_xdp());
    checks.push(af_packet_offloads());
    checks.push(huge_pages());
    checks.extend(privileges());
    checks.push(memlock());
    checks.push(dpdk());
    for (tool, package) in TOOLS {
        checks.push(tool_check(tool, package));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).expect("checks always serialise")
        );
        return Ok(());
    }
    for c in &checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Missing => "missing",
        };
        print!("{status:<8} {:<22} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            print!(" -> {fix}");
        }
        println!();
    }
    Ok(())
}

/// Tools the tests, benchmarks and scripts call, and the Debian package holding each.
const TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("ethtool", "ethtool"),
    ("fio", "fio"),
    ("redis-server", "redis-server"),
    ("redis-benchmark", "redis-tools"),
];

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn kernel() -> Check {
    match read("/proc/sys/kernel/osrelease") {
        Some(r) => ok("kernel", format!("Linux {}", r.trim())),
        None => missing(
            "kernel",
            "cannot read /proc/sys/kernel/osrelease",
            "run on Linux with /proc mounted",
        ),
    }
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> Option<(u32, u32)> {
    let r = read("/proc/sys/kernel/osrelease")?;
    let mut parts = r.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn io_uring() -> Vec<Check> {
    let ring = match io_uring::IoUring::new(8) {
        Ok(ring) => ring,
        Err(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::EPERM) => "io_uring is disabled: set /proc/sys/kernel/io_uring_disabled to 0 (or 1 and join its group)",
                Some(libc::ENOSYS) => "the kernel lacks io_uring: use Linux 5.10 or later built with CONFIG_IO_URING",
                _ => "the uring libOS cannot run here; use --libos kernel",
            };
            return vec![missing(
                "io_uring",
                format!("io_uring_setup failed: {e}"),
                fix,
            )];
        }
    };
    let mut checks = vec![ok("io_uring", "io_uring_setup works")];
    checks.push(
        match io_uring::IoUring::<io_uring::squeue::Entry>::builder()
            .setup_sqpoll(100)
            .build(8)
        {
            Ok(_) => ok("io_uring SQPOLL", "a kernel polling thread can be started"),
            Err(e) => missing(
                "io_uring SQPOLL",
                format!("setup with IORING_SETUP_SQPOLL failed: {e}"),
                "run as root or with CAP_SYS_NICE (kernels before 5.11 need CAP_SYS_ADMIN)",
            ),
        },
    );
    checks.push(
        match io_uring::IoUring::<io_uring::squeue::Entry>::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(8)
        {
            Ok(_) => ok(
                "io_uring DEFER_TASKRUN",
                "storage completions run in the LibOs's own thread",
            ),
            Err(e) => missing(
                "io_uring DEFER_TASKRUN",
                format!("setup with IORING_SETUP_DEFER_TASKRUN failed: {e}"),
                "needs Linux 6.1+; storage queues work without it, completing a little later",
            ),
        },
    );
    checks.push(match ring.submitter().register_buffers_sparse(1) {
        Ok(()) => ok(
            "io_uring reg. buffers",
            "a registered buffer table can be made",
        ),
        Err(e) => missing(
            "io_uring reg. buffers",
            format!("IORING_REGISTER_BUFFERS2 failed: {e}"),
            "needs Linux 5.19+ and RLIMIT_MEMLOCK room (ulimit -l) for the buffers",
        ),
    });
    let mut probe = io_uring::Probe::new();
    match ring.submitter().register_probe(&mut probe) {
        Ok(()) => {
            use io_uring::opcode;
            checks.push(if probe.is_supported(opcode::SendZc::CODE) {
                ok("io_uring SEND_ZC", "IORING_OP_SEND_ZC is supported")
            } else {
                missing(
                    "io_uring SEND_ZC",
                    "IORING_OP_SEND_ZC is not supported",
                    "zero-copy sends need Linux 6.0+; sends copy instead",
                )
            });
            // Multishot is a flag of ACCEPT/RECV, which the probe cannot show: infer it from
            // the kernel version (multishot accept 5.19, multishot recv 6.0).
            let multishot = kernel_version().is_some_and(|v| v >= (6, 0));
            let recv = probe.is_supported(opcode::Recv::CODE);
            checks.push(if multishot && recv {
                ok(
                    "io_uring multishot",
                    "multishot accept and recv (Linux 6.0+)",
                )
            } else {
                missing(
                    "io_uring multishot",
                    "multishot accept/recv need Linux 6.0+",
                    "one-shot operations are used instead",
                )
            });
        }
        Err(e) => checks.push(missing(
            "io_uring opcodes",
            format!("IORING_REGISTER_PROBE failed: {e}"),
            "needs Linux 5.6+",
        )),
    }
    checks
}

fn af_xdp() -> Check {
    match sys::probe_socket(libc::AF_XDP, libc::SOCK_RAW) {
        Ok(()) => ok("AF_XDP", "an AF_XDP socket can be opened"),
        Err(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => "needs CAP_NET_RAW: run as root (sudo)",
                Some(libc::EAFNOSUPPORT) => {
                    "the kernel lacks AF_XDP: use a kernel built with CONFIG_XDP_SOCKETS"
                }
                _ => "the xdp libOS cannot run here; use --libos packet or kernel",
            };
            missing("AF_XDP", format!("socket(AF_XDP) failed: {e}"), fix)
        }
    }
}

fn af_packet_offloads() -> Check {
    const NAME: &str = "AF_PACKET offloads";
    match bypass_devices::af_packet::probe_offloads() {
        Ok(()) => ok(
            NAME,
            "virtio-net headers work: the packet libOS offloads checksums and TCP segmentation",
        ),
        Err(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => "needs CAP_NET_RAW: run as root (sudo)",
                _ => "the packet libOS runs without offloads (net.packet_offload = \"auto\" falls back)",
            };
            missing(NAME, format!("PACKET_VNET_HDR: {e}"), fix)
        }
    }
}

/// A `Key: value` field of a /proc file.
fn proc_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

fn huge_pages() -> Check {
    let Some(info) = read("/proc/meminfo") else {
        return missing("huge pages", "cannot read /proc/meminfo", "mount /proc");
    };
    let total = proc_field(&info, "HugePages_Total").and_then(|v| v.parse::<u64>().ok());
    let free = proc_field(&info, "HugePages_Free").and_then(|v| v.parse::<u64>().ok());
    let size = proc_field(&info, "Hugepagesize").unwrap_or_else(|| "?".into());
    match (total, free) {
        (Some(t), Some(f)) if t > 0 => ok("huge pages", format!("{f} of {t} free ({size} each)")),
        _ => missing(
            "huge pages",
            "none reserved (HugePages_Total: 0); pools use normal pages",
            "reserve some: echo 512 | sudo tee /proc/sys/vm/nr_hugepages, then set pool.huge_pages = true",
        ),
    }
}

/// Capability bits (linux/capability.h).
const CAPS: [(&str, u32); 5] = [
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_BPF", 39),
];

fn privileges() -> Vec<Check> {
    let status = read("/proc/self/status").unwrap_or_default();
    let uid = proc_field(&status, "Uid")
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "?".into());
    let root = if uid == "0" {
        ok("root", "running as root (effective uid 0)")
    } else {
        missing(
            "root",
            format!("effective uid {uid}"),
            "the xdp, packet and tap libOSes and the namespace tests need root: use sudo",
        )
    };
    let caps = proc_field(&status, "CapEff").and_then(|v| u64::from_str_radix(&v, 16).ok());
    let mut checks = vec![root];
    for (name, bit) in CAPS {
        checks.push(match caps {
            Some(c) if c & (1 << bit) != 0 => ok(name, "held"),
            Some(_) => missing(
                name,
                "not held",
                format!(
                    "run as root, or sudo setcap {}+ep $(which bypass)",
                    name.to_lowercase()
                ),
            ),
            None => missing(
                name,
                "cannot read CapEff from /proc/self/status",
                "mount /proc",
            ),
        });
    }
    checks
}

fn memlock() -> Check {
    let limits = read("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"));
    let soft = line.and_then(|l| l.split_whitespace().nth(3).map(str::to_string));
    match soft.as_deref() {
        Some("unlimited") => ok("RLIMIT_MEMLOCK", "unlimited"),
        Some(bytes) => {
            let mib = bytes.parse::<u64>().map(|b| b >> 20).unwrap_or(0);
            let detail = format!("{mib} MiB");
            if mib >= 64 {
                ok("RLIMIT_MEMLOCK", detail)
            } else {
                missing(
                    "RLIMIT_MEMLOCK",
                    format!("{detail}: too little for large AF_XDP UMEMs or registered buffers without CAP_IPC_LOCK"),
                    "raise it: ulimit -l unlimited (or memlock in /etc/security/limits.conf), or run as root",
                )
            }
        }
        None => missing(
            "RLIMIT_MEMLOCK",
            "cannot read /proc/self/limits",
            "mount /proc",
        ),
    }
}

/// Where `tool` is on PATH.
fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn dpdk() -> Check {
    let pkg = Command::new("pkg-config")
        .args(["--modversion", "libdpdk"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match (pkg, which("dpdk-testpmd")) {
        (Some(v), _) => ok("DPDK", format!("libdpdk {v} (pkg-config)")),
        (None, Some(p)) => ok(
            "DPDK",
            format!("{} (no libdpdk.pc for building)", p.display()),
        ),
        (None, None) => missing(
            "DPDK",
            "neither pkg-config libdpdk nor dpdk-testpmd found",
            "apt-get install dpdk libdpdk-dev pkg-config (only for the dpdk feature)",
        ),
    }
}

fn tool_check(tool: &'static str, package: &str) -> Check {
    match which(tool) {
        Some(p) => ok(tool, p.display().to_string()),
        None => missing(tool, "not on PATH", format!("apt-get install {package}")),
    }
}
