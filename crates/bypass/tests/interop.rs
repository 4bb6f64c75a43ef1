//! Interop of the user-space stack with the Linux kernel over real datapaths: AF_XDP (generic
//! mode, and driver mode once), AF_PACKET (TPACKET_V2) and TAP.
//!
//! Every test builds its own network: for AF_XDP and AF_PACKET two namespaces joined by a veth
//! pair (`bypass_devices::topo`: side A's end has no kernel IPv4 address, the user-space stack
//! owns 10.77.N.1 there; side B is a kernel host at 10.77.N.2); for TAP one namespace holding
//! a TAP interface whose kernel side is 10.77.N.2 while the user-space stack owns 10.77.N.1
//! through the TAP descriptor. The peer is always the kernel's own sockets (`std::net`) on a
//! thread inside the peer namespace. Names include the process id and a counter; namespaces
//! (and with them the veth pair, the TAP interface, nftables tables and XDP programs) are
//! removed by a guard on drop, so also when a test fails.
//!
//! What each datapath is checked for, every byte compared against what was sent:
//! - TCP echo, bypass server with kernel clients and kernel server with bypass clients, with
//!   1 and 200 connections open at once; and against a kernel listener that answers with SYN
//!   cookies;
//! - bulk transfer in each direction (a deterministic pattern, checked as it arrives);
//! - bulk transfer in each direction with 2% random loss injected by nftables on both ends;
//! - UDP echo both ways, and `ping` of the stack's address from the kernel;
//! - the kernel peer closing, resetting (SO_LINGER 0) or disappearing (nftables drops
//!   everything) mid-transfer: the bypass side ends the connection with `EndOfStream`,
//!   `ConnectionReset` or `TimedOut` within a bound, never hangs.
//!
//! Sizes. By default (CI) each datapath moves 256 MiB each way without loss and 16 MiB each way
//! with 2% loss, and AF_XDP driver mode 16 MiB each way. `BYPASS_LONG=1` runs the full matrix:
//! 256 MiB each way with loss too, and 256 MiB each way over AF_XDP driver mode. The whole
//! file takes about 80 s on two cores by default. Tests of this file run one at a time (a lock):
//! each keeps a core busy-polling, and the machine may have two.
//!
//! They need root (namespaces, veth, XDP) and the tools `ip`, `ethtool`, `nft` (nftables) and
//! `ping` (iputils-ping). Without root they print why and return.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use bypass::{
    Config, ErrorKind, LibOs, LibOsName, PacketOffloadName, PacketRingName, QDesc, QToken, QValue,
    SocketKind, XdpModeName,
};
use bypass_devices::netns;
use bypass_devices::topo::{Topology, TopologySpec};
use common::linger;

/// The longest any single wait may take before the test fails (instead of hanging).
mod common;

const WAIT: Duration = Duration::from_secs(30);
const WAIT_OPT: Option<Duration> = Some(WAIT);

fn long() -> bool {
    std::env::var_os("BYPASS_LONG").is_some_and(|v| v != "0")
}

const MIB: u64 = 1 << 20;

// ----- environment ---------------------------------------------------------------------------

/// Whether we may create namespaces; prints why the test is skipped if not.
fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root to create network namespaces (CI runs as root)");
    false
}

/// One test at a time: each busy-polls a core.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs a command; its failure is an error naming the command and its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{program} {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        )));
    }
    Ok(stdout)
}

/// The datapath under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    XdpGeneric,
    XdpDriver,
    /// AF_PACKET with its default offloads (checksum and segmentation, if the kernel takes
    /// them).
    Packet,
    /// AF_PACKET with `net.packet_offload = "off"`: plain frames of at most the MTU.
    PacketPlain,
    Tap,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A TAP namespace, removed on drop.
struct TapNs(String);

impl Drop for TapNs {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.0], None) {
            eprintln!("namespace {}: cleanup failed: {e}", self.0);
        }
    }
}

/// The network of one test: where the bypass side runs, where the kernel peer runs.
struct Net {
    path: Path,
    /// Namespace of the bypass libOS.
    ns_a: String,
    /// Namespace of the kernel peer.
    ns_b: String,
    /// The interface the bypass libOS drives.
    iface: String,
    /// Where nftables hooks go, as (namespace, device, hook): each end's ingress on veth; the
    /// TAP interface's ingress (frames from the stack) and egress (frames to it).
    hooks: Vec<(String, String, &'static str)>,
    /// The kernel peer's hooks (where "the peer disappears" drops everything).
    peer_hooks: Vec<(String, String, &'static str)>,
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
    _topo: Option<Topology>,
    _tap: Option<TapNs>,
}

impl Net {
    fn up(path: Path) -> Net {
        match path {
            Path::Tap => Net::tap(),
            _ => Net::veth(path),
        }
    }

    fn veth(path: Path) -> Net {
        let topo = Topology::up(TopologySpec::unique()).expect("the veth topology comes up");
        let s = topo.spec().clone();
        Net {
            path,
            ns_a: s.ns_a.clone(),
            ns_b: s.ns_b.clone(),
            iface: s.dev_a.clone(),
            hooks: vec![
                (s.ns_a.clone(), s.dev_a.clone(), "ingress"),
                (s.ns_b.clone(), s.dev_b.clone(), "ingress"),
            ],
            peer_hooks: vec![
                (s.ns_b.clone(), s.dev_b.clone(), "ingress"),
                (s.ns_b.clone(), s.dev_b.clone(), "egress"),
            ],
            ip_a: s.ip_a().into(),
            ip_b: s.ip_b().into(),
            _topo: Some(topo),
            _tap: None,
        }
    }

    fn tap() -> Net {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = format!("bypass-{pid}-t{n}");
        let dev = format!("bt{pid}n{}", n % 10_000);
        let subnet = (n % 250) as u8 + 1;
        let (ip_a, ip_b) = (
            Ipv4Addr::new(10, 77, subnet, 1),
            Ipv4Addr::new(10, 77, subnet, 2),
        );
        run("ip", &["netns", "add", &ns], None).expect("a TAP namespace is created");
        let guard = TapNs(ns.clone());
        netns::run_in(&ns, || {
            for conf in ["all", "default"] {
                let p = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                let _ = std::fs::write(p, "1");
            }
        })
        .expect("entering the TAP namespace");
        let addr = format!("{ip_b}/24");
        for args in [
            &["-n", &ns, "link", "set", "dev", "lo", "up"][..],
            &["-n", &ns, "tuntap", "add", "dev", &dev, "mode", "tap"],
            &["-n", &ns, "addr", "add", &addr, "dev", &dev],
            &["-n", &ns, "link", "set", "dev", &dev, "up"],
        ] {
            run("ip", args, None).expect("the TAP interface is set up");
        }
        Net {
            path: Path::Tap,
            ns_a: ns.clone(),
            ns_b: ns.clone(),
            iface: dev.clone(),
            hooks: vec![
                (ns.clone(), dev.clone(), "ingress"),
                (ns.clone(), dev.clone(), "egress"),
            ],
            peer_hooks: vec![
                (ns.clone(), dev.clone(), "ingress"),
                (ns.clone(), dev.clone(), "egress"),
            ],
            ip_a,
            ip_b,
            _topo: None,
            _tap: Some(guard),
        }
    }

    /// The bypass libOS's configuration for this network.
    fn config(&self) -> Config {
        let libos = match self.path {
            Path::XdpGeneric | Path::XdpDriver => LibOsName::Xdp,
            Path::Packet | Path::PacketPlain => LibOsName::Packet,
            Path::Tap => LibOsName::Tap,
        };
        let mut c = Config::with_libos(libos);
        c.net.iface = Some(self.iface.clone());
        c.net.ip = Some(format!("{}/24", self.ip_a));
        c.net.netns = Some(self.ns_a.clone());
        c.net.xdp_mode = match self.path {
            Path::XdpDriver => XdpModeName::Driver,
            _ => XdpModeName::Generic,
        };
        c.net.packet_ring = PacketRingName::V2;
        if self.path == Path::PacketPlain {
            c.net.packet_offload = PacketOffloadName::Off;
        }
        c
    }

    fn addr_a(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip_a, port)
    }

    fn addr_b(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip_b, port)
    }

    /// Drops `percent`% of frames at random on every hook of `hooks` (nftables, inside the
    /// namespaces: the tables go with them).
    fn drop_frames(hooks: &[(String, String, &'static str)], percent: u32) {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let rule = if percent >= 100 {
            "drop".to_string()
        } else {
            format!("numgen random mod 100 < {percent} drop")
        };
        for (i, (ns, dev, hook)) in hooks.iter().enumerate() {
            let table = format!("bypass_loss_{}_{n}_{i}", std::process::id());
            let script = format!(
                "table netdev {table} {{\n  chain c {{\n    type filter hook {hook} device {dev} priority 0;\n    {rule}\n  }}\n}}\n"
            );
            run(
                "ip",
                &["netns", "exec", ns, "nft", "-f", "-"],
                Some(&script),
            )
            .unwrap_or_else(|e| panic!("installing loss on {dev} in {ns}: {e} (needs nftables)"));
        }
    }

    /// 2% (or `percent`) random loss on both ends.
    fn add_loss(&self, percent: u32) {
        Net::drop_frames(&self.hooks, percent);
    }

    /// The kernel peer vanishes from the wire: every frame to or from it is dropped.
    fn cut_peer(&self) {
        Net::drop_frames(&self.peer_hooks, 100);
    }
}

/// Runs `f` on a new thread with a LibOs of `config` (which enters the namespace).
fn on_bypass<T: Send + 'static>(
    config: Config,
    f: impl FnOnce(&mut LibOs) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name("bypass".into())
        .spawn(move || {
            let mut libos =
                LibOs::new(config).unwrap_or_else(|e| panic!("the bypass libOS starts: {e}"));
            f(&mut libos)
        })
        .expect("spawning the bypass thread")
}

/// Runs `f` on a new thread inside namespace `ns`, with the kernel's sockets.
fn on_kernel<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let ns = ns.to_string();
    thread::Builder::new()
        .name("kernel".into())
        .spawn(move || {
            netns::enter(&ns).unwrap_or_else(|e| panic!("entering {ns}: {e}"));
            f()
        })
        .expect("spawning the kernel thread")
}

fn join<T>(h: thread::JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Keeps the libOS running (retransmissions, FINs, ACKs) until `done` fires or `limit` passes.
fn drive_until(libos: &mut LibOs, done: &mpsc::Receiver<()>, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match done.try_recv() {
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => libos.poll().expect("the libOS polls"),
        }
    }
}

fn kernel_stream(s: &TcpStream) {
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
}

/// Accepts one connection, waiting at most [`WAIT`].
fn accept_one(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let end = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                kernel_stream(&s);
                return s;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < end => {
                thread::sleep(Duration::from_micros(200))
            }
            Err(e) => panic!("the kernel's accept: {e}"),
        }
    }
}

/// A kernel listener with a backlog of 1024. (With std's 128, 200 SYNs at once overflow it:
/// the kernel answers with SYN cookies and drops third ACKs it has no room for, and a cookie
/// connection whose first ACK was dropped is reset when later data arrives; that is the
/// kernel's behaviour with any client.)
fn listen_kernel(at: SocketAddrV4) -> TcpListener {
    let l = TcpListener::bind(at).unwrap_or_else(|e| panic!("the kernel listens on {at}: {e}"));
    // SAFETY: the descriptor is a bound TCP socket, open for the call; listen(2) on a
    // listening socket only changes its backlog.
    let r = unsafe { libc::listen(l.as_raw_fd(), 1024) };
    assert_eq!(r, 0, "listen: {}", io::Error::last_os_error());
    l
}

fn connect_kernel(to: SocketAddrV4) -> TcpStream {
    let s = TcpStream::connect_timeout(&SocketAddr::V4(to), WAIT)
        .unwrap_or_else(|e| panic!("the kernel connects to {to}: {e}"));
    kernel_stream(&s);
    s
}

/// Keeps the libOS running until `signal` fires; fails the test after [`WAIT`].
fn wait_for_signal(libos: &mut LibOs, signal: &mpsc::Receiver<()>, what: &str) {
    let end = Instant::now() + WAIT;
    loop {
        match signal.try_recv() {
            Ok(()) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                panic!("waiting until {what}: the other side failed")
            }
            Err(mpsc::TryRecvError::Empty) if Instant::now() < end => {
                libos.poll().expect("the libOS polls")
            }
            Err(mpsc::TryRecvError::Empty) => panic!("waited {WAIT:?} until {what}"),
        }
    }
}

/// Waits for `qt`; a wait longer than [`WAIT`] is a hang and fails the test.
fn wait(libos: &mut LibOs, qt: QToken, what: &str) -> QValue {
    libos
        .wait(qt, WAIT_OPT)
        .unwrap_or_else(|e| panic!("{what} did not complete within {WAIT:?}: {e}"))
        .value
}

/// Waits for every token of `tokens`; `check` sees each result.
fn wait_all(libos: &mut LibOs, mut tokens: Vec<QToken>, what: &str, check: impl Fn(&QValue)) {
    while !tokens.is_empty() {
        let left = tokens.len();
        let (i, r) = libos
            .wait_any(&tokens, WAIT_OPT)
            .unwrap_or_else(|e| panic!("{left} {what} did not complete within {WAIT:?}: {e}"));
        tokens.swap_remove(i);
        check(&r.value);
    }
}

fn connect_bypass(libos: &mut LibOs, to: SocketAddrV4) -> QDesc {
    let qd = libos.socket(SocketKind::Stream).unwrap();
    let qt = libos.connect(qd, to).unwrap();
    match wait(libos, qt, "connect") {
        QValue::Connected => qd,
        other => panic!("connecting to {to}: {other:?}"),
    }
}

fn listen_bypass(libos: &mut LibOs, at: SocketAddrV4, backlog: usize) -> QDesc {
    let l = libos.socket(SocketKind::Stream).unwrap();
    libos.bind(l, at).unwrap();
    libos.listen(l, backlog).unwrap();
    l
}

fn accept_bypass(libos: &mut LibOs, l: QDesc) -> QDesc {
    let qt = libos.accept(l).unwrap();
    match wait(libos, qt, "accept") {
        QValue::Accepted { qd, .. } => qd,
        other => panic!("accept: {other:?}"),
    }
}

// ----- data patterns ------------------------------------------------------------------------

/// The bulk pattern repeats every `PERIOD` bytes (a prime, so no segment, buffer or window
/// size lines up with it): a shifted, dropped or duplicated piece shows.
const PERIOD: usize = 65_521;
/// Largest piece [`pattern`] hands out.
const PIECE: usize = 60_000;

fn pattern_table() -> &'static [u8] {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut t: Vec<u8> = (0..PERIOD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        t.extend_from_within(..PERIOD);
        t
    })
}

/// The pattern's bytes at stream offset `off`: `max` of them, or [`PIECE`] if fewer.
fn pattern(off: u64, max: usize) -> &'static [u8] {
    let start = (off % PERIOD as u64) as usize;
    &pattern_table()[start..start + max.min(PIECE)]
}

/// Checks that `data` is the pattern at stream offset `off`; names the first wrong byte.
fn check_pattern(what: &str, off: u64, data: &[u8]) {
    let mut done = 0;
    while done < data.len() {
        let want = pattern(off + done as u64, data.len() - done);
        let got = &data[done..done + want.len()];
        if got != want {
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap();
            panic!(
                "{what}: byte {} of the stream is {:#04x}, expected {:#04x}",
                off + (done + i) as u64,
                got[i],
                want[i]
            );
        }
        done += want.len();
    }
}

fn kernel_send_pattern(s: &mut TcpStream, total: u64) {
    let mut off = 0;
    while off < total {
        let p = pattern(off, (total - off).min(PIECE as u64) as usize);
        s.write_all(p)
            .unwrap_or_else(|e| panic!("the kernel sends at byte {off} of {total}: {e}"));
        off += p.len() as u64;
    }
}

/// Reads until end of stream, checking every byte; returns the count.
fn kernel_recv_pattern(s: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 256 << 10];
    let mut off = 0;
    loop {
        let n = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("the kernel receives after byte {off}: {e}"));
        if n == 0 {
            return off;
        }
        check_pattern("bypass -> kernel", off, &buf[..n]);
        off += n as u64;
    }
}

/// Pushes `total` bytes of the pattern, four pushes in flight. A failed push is returned; a
/// push that neither completes nor fails within [`WAIT`] fails the test.
fn bypass_send_pattern(libos: &mut LibOs, qd: QDesc, total: u64) -> bypass::Result<()> {
    let mut off = 0;
    let mut inflight: VecDeque<(QToken, usize)> = VecDeque::new();
    while off < total || !inflight.is_empty() {
        if off < total && inflight.len() < 4 {
            let p = pattern(off, (total - off).min(PIECE as u64) as usize);
            let qt = libos.push(qd, libos.sga_from_slice(p)?)?;
            inflight.push_back((qt, p.len()));
            off += p.len() as u64;
            continue;
        }
        let (qt, len) = inflight.pop_front().expect("a push is in flight");
        match wait(libos, qt, "push") {
            QValue::Pushed { bytes } => assert_eq!(bytes, len, "a push took part of its Sga"),
            QValue::Failed(e) => return Err(e),
            other => panic!("push: {other:?}"),
        }
    }
    Ok(())
}

/// Pops until end of stream, checking every byte; returns the count (or the failure).
fn bypass_recv_pattern(libos: &mut LibOs, qd: QDesc) -> bypass::Result<u64> {
    let mut off = 0;
    loop {
        let qt = libos.pop(qd)?;
        match wait(libos, qt, "pop") {
            QValue::Popped { sga, .. } => {
                assert!(!sga.is_empty(), "an empty pop before end of stream");
                for seg in sga.segments() {
                    check_pattern("kernel -> bypass", off, seg.as_slice());
                    off += seg.len() as u64;
                }
            }
            QValue::EndOfStream => return Ok(off),
            QValue::Failed(e) => return Err(e),
            other => panic!("pop: {other:?}"),
        }
    }
}

/// Message `round` of connection `conn` in the echo tests: 1 to 3000 bytes, each derived from
/// the connection, the round and its position.
fn message(conn: usize, round: usize) -> Vec<u8> {
    let len = 1 + (conn * 977 + round * 1031) % 3000;
    (0..len)
        .map(|k| (conn * 7 + round * 13 + k * 31 + (k >> 8)) as u8)
        .collect()
}

const ROUNDS: usize = 3;

/// Reads exactly `len` bytes from a bypass stream.
fn pop_exact(libos: &mut LibOs, qd: QDesc, len: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(len);
    while got.len() < len {
        let qt = libos.pop(qd).unwrap();
        match wait(libos, qt, "pop") {
            QValue::Popped { sga, .. } => got.extend_from_slice(&sga.to_vec()),
            other => panic!("pop gave {other:?} after {} of {len} B", got.len()),
        }
    }
    assert_eq!(got.len(), len, "more bytes came back than were sent");
    got
}

// ----- TCP echo -----------------------------------------------------------------------------

/// Echoes every connection until end of stream, for `conns` connections; returns the bytes
/// echoed.
fn bypass_echo_server(
    libos: &mut LibOs,
    at: SocketAddrV4,
    conns: usize,
    ready: mpsc::Sender<()>,
) -> u64 {
    let l = listen_bypass(libos, at, 256);
    ready.send(()).unwrap();
    let echoed = common::echo_server(libos, l, conns, WAIT);
    libos.close(l).unwrap();
    linger(libos, Duration::from_millis(200));
    echoed
}

/// `conns` kernel connections open at once, [`ROUNDS`] messages each, every byte checked.
fn kernel_echo_clients(server: SocketAddrV4, conns: usize) -> u64 {
    let mut streams: Vec<TcpStream> = (0..conns).map(|_| connect_kernel(server)).collect();
    let mut sent = 0u64;
    for round in 0..ROUNDS {
        for (i, s) in streams.iter_mut().enumerate() {
            let m = message(i, round);
            s.write_all(&m)
                .unwrap_or_else(|e| panic!("connection {i} round {round}: send: {e}"));
            sent += m.len() as u64;
        }
        for (i, s) in streams.iter_mut().enumerate() {
            let m = message(i, round);
            let mut back = vec![0u8; m.len()];
            s.read_exact(&mut back)
                .unwrap_or_else(|e| panic!("connection {i} round {round}: echo: {e}"));
            assert!(back == m, "connection {i} round {round}: the echo differs");
        }
    }
    sent
}

/// A kernel echo server: one thread per connection, for `conns` connections.
fn kernel_echo_server(l: &TcpListener, conns: usize) -> u64 {
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let mut s = accept_one(l);
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                let mut echoed = 0u64;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => return echoed,
                        Ok(n) => {
                            s.write_all(&buf[..n]).expect("the kernel echoes");
                            echoed += n as u64;
                        }
                        Err(e) => panic!("the kernel echo server reads: {e}"),
                    }
                }
            })
        })
        .collect();
    handles.into_iter().map(join).sum()
}

/// `conns` bypass connections open at once, [`ROUNDS`] messages each, every byte checked.
fn bypass_echo_clients(libos: &mut LibOs, server: SocketAddrV4, conns: usize) -> u64 {
    let qds: Vec<QDesc> = (0..conns)
        .map(|_| libos.socket(SocketKind::Stream).unwrap())
        .collect();
    let connects = qds
        .iter()
        .map(|&qd| libos.connect(qd, server).unwrap())
        .collect();
    wait_all(libos, connects, "connects", |v| {
        assert!(matches!(v, QValue::Connected), "connect: {v:?}")
    });
    let mut sent = 0u64;
    for round in 0..ROUNDS {
        let mut pushes = Vec::new();
        for (i, &qd) in qds.iter().enumerate() {
            let m = message(i, round);
            sent += m.len() as u64;
            pushes.push(libos.push(qd, libos.sga_from_slice(&m).unwrap()).unwrap());
        }
        wait_all(libos, pushes, "pushes", |v| {
            assert!(matches!(v, QValue::Pushed { .. }), "push: {v:?}")
        });
        for (i, &qd) in qds.iter().enumerate() {
            let m = message(i, round);
            let back = pop_exact(libos, qd, m.len());
            assert!(back == m, "connection {i} round {round}: the echo differs");
        }
    }
    for qd in qds {
        libos.close(qd).unwrap();
    }
    sent
}

/// A bypass echo server, kernel clients: 1 connection, then 200 open at once.
fn echo_bypass_server(net: &Net) {
    let server = net.addr_a(7);
    let (ready_tx, ready_rx) = mpsc::channel();
    let bypass = on_bypass(net.config(), move |libos| {
        bypass_echo_server(libos, server, 1 + 200, ready_tx)
    });
    let kernel = on_kernel(&net.ns_b, move || {
        ready_rx
            .recv_timeout(WAIT)
            .expect("the bypass echo server listens");
        kernel_echo_clients(server, 1) + kernel_echo_clients(server, 200)
    });
    let sent = join(kernel);
    assert_eq!(join(bypass), sent, "the server echoed other than was sent");
}

/// A kernel echo server, bypass clients: 1 connection, then 200 open at once.
fn echo_kernel_server(net: &Net) {
    let server = net.addr_b(7);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let kernel = on_kernel(&net.ns_b, move || {
        let l = listen_kernel(server);
        ready_tx.send(()).unwrap();
        let echoed = kernel_echo_server(&l, 1 + 200);
        let _ = done_tx.send(());
        echoed
    });
    let bypass = on_bypass(net.config(), move |libos| {
        ready_rx
            .recv_timeout(WAIT)
            .expect("the kernel echo server listens");
        let sent = bypass_echo_clients(libos, server, 1) + bypass_echo_clients(libos, server, 200);
        // The kernel's threads end at our FINs: keep sending them until it is done.
        drive_until(libos, &done_rx, WAIT);
        sent
    });
    let sent = join(bypass);
    assert_eq!(join(kernel), sent, "the server echoed other than was sent");
}

/// A kernel server that answers every SYN with a SYN cookie (`tcp_syncookies = 2`, what a
/// listener under a SYN flood or with a full backlog does): bypass clients connect and echo.
fn echo_kernel_server_with_syn_cookies(net: &Net) {
    netns::run_in(&net.ns_b, || {
        std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2").expect("setting tcp_syncookies")
    })
    .expect("entering the peer namespace");
    let server = net.addr_b(7);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let kernel = on_kernel(&net.ns_b, move || {
        let l = listen_kernel(server);
        ready_tx.send(()).unwrap();
        let echoed = kernel_echo_server(&l, 4);
        let _ = done_tx.send(());
        echoed
    });
    let bypass = on_bypass(net.config(), move |libos| {
        ready_rx
            .recv_timeout(WAIT)
            .expect("the kernel echo server listens");
        let sent = bypass_echo_clients(libos, server, 4);
        drive_until(libos, &done_rx, WAIT);
        sent
    });
    let sent = join(bypass);
    assert_eq!(join(kernel), sent, "the server echoed other than was sent");
}

// ----- bulk ---------------------------------------------------------------------------------

fn report(what: &str, net: &Net, bytes: u64, elapsed: Duration) {
    eprintln!(
        "{:?} {what}: {} MiB in {:.2} s = {:.1} MB/s",
        net.path,
        bytes / MIB,
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64() / 1e6
    );
}

/// The bypass side connects to a kernel server and sends `total` bytes.
fn bulk_to_kernel(net: &Net, total: u64) {
    let server = net.addr_b(5001);
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let kernel = on_kernel(&net.ns_b, move || {
        let l = listen_kernel(server);
        ready_tx.send(()).unwrap();
        let mut s = accept_one(&l);
        let got = kernel_recv_pattern(&mut s);
        let _ = done_tx.send(());
        got
    });
    let bypass = on_bypass(net.config(), move |libos| {
        ready_rx.recv_timeout(WAIT).expect("the kernel listens");
        let qd = connect_bypass(libos, server);
        let t0 = Instant::now();
        bypass_send_pattern(libos, qd, total).unwrap_or_else(|e| panic!("bypass sends: {e}"));
        libos.close(qd).unwrap();
        // Queued data and the FIN go out after close: run until the kernel has it all.
        drive_until(libos, &done_rx, WAIT);
        t0.elapsed()
    });
    let elapsed = join(bypass);
    assert_eq!(
        join(kernel),
        total,
        "the kernel received other than was sent"
    );
    report("bypass -> kernel", net, total, elapsed);
}

/// A kernel client connects to the bypass side and sends `total` bytes.
fn bulk_from_kernel(net: &Net, total: u64) {
    let server = net.addr_a(5002);
    let (ready_tx, ready_rx) = mpsc::channel();
    let bypass = on_bypass(net.config(), move |libos| {
        let l = listen_bypass(libos, server, 4);
        ready_tx.send(()).unwrap();
        let qd = accept_bypass(libos, l);
        let t0 = Instant::now();
        let got = bypass_recv_pattern(libos, qd).unwrap_or_else(|e| panic!("bypass receives: {e}"));
        let elapsed = t0.elapsed();
        libos.close(qd).unwrap();
        libos.close(l).unwrap();
        linger(libos, Duration::from_millis(100));
        (got, elapsed)
    });
    let kernel = on_kernel(&net.ns_b, move || {
        ready_rx
            .recv_timeout(WAIT)
            .expect("the bypass side listens");
        let mut s = connect_kernel(server);
        kernel_send_pattern(&mut s, total);
    });
    join(kernel);
    let (got, elapsed) = join(bypass);
    assert_eq!(got, total, "the bypass side received other than was sent");
    report("kernel -> bypass", net, total, elapsed);
}

fn bulk(net: &Net, total: u64) {
    bulk_to_kernel(net, total);
    bulk_from_kernel(net, total);
}

// ----- UDP and ICMP -------------------------------------------------------------------------

const DATAGRAM_SIZES: [usize; 5] = [1, 100, 1000, 1460, 1472];

fn datagram(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| (i * 59 + k * 3 + (k >> 7)) as u8)
        .collect()
}

/// UDP echo with the bypass side serving, then with the kernel serving; `ping` of the stack's
/// address in between.
fn udp_and_ping(net: &Net) {
    let bypass_addr = net.addr_a(9);
    let kernel_addr = net.addr_b(9);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (kernel_ready_tx, kernel_ready_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let bypass = on_bypass(net.config(), move |libos| {
        // Serving: echo as many datagrams as there are sizes.
        let s = libos.socket(SocketKind::Datagram).unwrap();
        libos.bind(s, bypass_addr).unwrap();
        ready_tx.send(()).unwrap();
        for _ in DATAGRAM_SIZES {
            let qt = libos.pop(s).unwrap();
            let QValue::Popped { sga, from } = wait(libos, qt, "UDP pop") else {
                panic!("UDP pop failed")
            };
            let qt = libos
                .pushto(s, sga, from.expect("a datagram has a source"))
                .unwrap();
            assert!(matches!(
                wait(libos, qt, "UDP pushto"),
                QValue::Pushed { .. }
            ));
        }
        // Client of the kernel's echo server. The last echo may still wait in the stack's
        // transmit queue: keep polling while waiting.
        wait_for_signal(libos, &kernel_ready_rx, "the kernel UDP server is bound");
        for (i, len) in DATAGRAM_SIZES.into_iter().enumerate() {
            let data = datagram(i, len);
            let qt = libos
                .pushto(s, libos.sga_from_slice(&data).unwrap(), kernel_addr)
                .unwrap();
            assert!(matches!(
                wait(libos, qt, "UDP pushto"),
                QValue::Pushed { .. }
            ));
            let qt = libos.pop(s).unwrap();
            let QValue::Popped { sga, from } = wait(libos, qt, "UDP pop") else {
                panic!("UDP pop failed")
            };
            assert_eq!(from, Some(kernel_addr));
            assert!(
                sga.to_vec() == data,
                "a {len} B datagram came back different"
            );
        }
        // Stay up for the ping.
        drive_until(libos, &stop_rx, WAIT);
        libos.close(s).unwrap();
    });
    let kernel = on_kernel(&net.ns_b, move || {
        ready_rx
            .recv_timeout(WAIT)
            .expect("the bypass UDP socket is bound");
        let c = UdpSocket::bind(SocketAddrV4::new(*kernel_addr.ip(), 0)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 2048];
        for (i, len) in DATAGRAM_SIZES.into_iter().enumerate() {
            let data = datagram(i, len);
            c.send_to(&data, bypass_addr).unwrap();
            let (n, from) = c
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("the {len} B datagram's echo: {e}"));
            assert_eq!(from, SocketAddr::V4(bypass_addr));
            assert!(
                buf[..n] == data[..],
                "a {len} B datagram came back different"
            );
        }
        let srv = UdpSocket::bind(kernel_addr).unwrap();
        srv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        kernel_ready_tx.send(()).unwrap();
        for len in DATAGRAM_SIZES {
            let (n, from) = srv
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("the bypass side's {len} B datagram: {e}"));
            assert_eq!(n, len);
            srv.send_to(&buf[..n], from).unwrap();
        }
    });
    join(kernel);
    let ip = net.ip_a.to_string();
    let out = run(
        "ip",
        &[
            "netns", "exec", &net.ns_b, "ping", "-c", "3", "-W", "1", &ip,
        ],
        None,
    );
    let _ = stop_tx.send(());
    join(bypass);
    let out = out.unwrap_or_else(|e| panic!("ping of {ip} (needs iputils-ping): {e}"));
    assert!(
        out.contains("3 packets transmitted, 3 received"),
        "ping of the stack's address:\n{out}"
    );
}

// ----- the peer going away ------------------------------------------------------------------

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the descriptor is open for the call; the option value is a valid `linger` of
    // the size passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// Reads and checks the pattern until `n` bytes came.
fn kernel_read_pattern(s: &mut TcpStream, n: u64) {
    let mut buf = vec![0u8; 64 << 10];
    let mut off = 0;
    while off < n {
        let want = buf.len().min((n - off) as usize);
        let got = s.read(&mut buf[..want]).expect("the kernel reads");
        assert!(got > 0, "end of stream after {off} B");
        check_pattern("bypass -> kernel", off, &buf[..got]);
        off += got as u64;
    }
}

/// The kernel peer closes, resets, then vanishes; the bypass side ends each connection with
/// the matching error within a bound.
fn peer_goes_away(net: &Net) {
    let server = net.addr_b(5003);
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (cut_tx, cut_rx) = mpsc::channel::<()>();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let kernel = on_kernel(&net.ns_b, move || {
        let l = listen_kernel(server);
        ready_tx.send(()).unwrap();
        // 1. Send 100 000 bytes and close.
        let mut s = accept_one(&l);
        kernel_send_pattern(&mut s, 100_000);
        drop(s);
        // 2. Read 1 MiB of the bypass side's stream, then reset.
        let mut s = accept_one(&l);
        kernel_read_pattern(&mut s, MIB);
        set_linger_zero(&s);
        drop(s);
        // 3. Read 1 MiB, ask for the cut, go on reading until told to stop.
        let mut s = accept_one(&l);
        kernel_read_pattern(&mut s, MIB);
        cut_tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = vec![0u8; 64 << 10];
        while stop_rx.try_recv().is_err() {
            match s.read(&mut buf) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    });
    let mut config = net.config();
    config.tcp.max_retries = 3;
    let bypass = on_bypass(config, move |libos| {
        ready_rx.recv_timeout(WAIT).expect("the kernel listens");
        // 1. The peer closes: every byte, then end of stream.
        let qd = connect_bypass(libos, server);
        let got = bypass_recv_pattern(libos, qd).unwrap_or_else(|e| panic!("after a close: {e}"));
        assert_eq!(got, 100_000, "bytes before the peer's FIN");
        libos.close(qd).unwrap();
        // 2. The peer resets mid-transfer.
        let qd = connect_bypass(libos, server);
        let t0 = Instant::now();
        let e = bypass_send_pattern(libos, qd, 256 * MIB).expect_err("the peer reset");
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "after a reset: {e}");
        let reset_after = t0.elapsed();
        libos.close(qd).unwrap();
        // 3. The peer vanishes mid-transfer: retransmissions run out.
        let qd = connect_bypass(libos, server);
        let t0 = Instant::now();
        let e = bypass_send_pattern(libos, qd, 1 << 40).expect_err("the peer vanished");
        let vanish_after = t0.elapsed();
        assert_eq!(
            e.kind(),
            ErrorKind::TimedOut,
            "after the peer vanished: {e}"
        );
        libos.close(qd).unwrap();
        (reset_after, vanish_after)
    });
    cut_rx
        .recv_timeout(WAIT)
        .expect("the kernel read the third connection's first MiB");
    let cut_at = Instant::now();
    net.cut_peer();
    let (reset_after, vanish_after) = join(bypass);
    let detected = cut_at.elapsed();
    let _ = stop_tx.send(());
    join(kernel);
    eprintln!(
        "{:?}: reset seen {:.3} s into the transfer; vanished peer detected {:.1} s after the cut ({:.1} s into the transfer)",
        net.path,
        reset_after.as_secs_f64(),
        detected.as_secs_f64(),
        vanish_after.as_secs_f64()
    );
    assert!(
        detected < Duration::from_secs(20),
        "a vanished peer took {detected:?} to detect with tcp.max_retries = 3"
    );
}

// ----- the tests ----------------------------------------------------------------------------

/// Bytes each way without loss.
fn bulk_size() -> u64 {
    256 * MIB
}

/// Bytes each way with 2% loss.
fn lossy_size() -> u64 {
    if long() {
        256 * MIB
    } else {
        16 * MIB
    }
}

macro_rules! datapath_tests {
    ($name:ident, $path:expr) => {
        mod $name {
            use super::*;

            fn net(test: &str) -> Option<(MutexGuard<'static, ()>, Net)> {
                if !root_or_skip(test) {
                    return None;
                }
                let lock = serial();
                Some((lock, Net::up($path)))
            }

            #[test]
            fn tcp_echo_bypass_server_kernel_clients_1_and_200_connections() {
                let Some((_lock, net)) = net("tcp_echo_bypass_server") else {
                    return;
                };
                echo_bypass_server(&net);
            }

            #[test]
            fn tcp_echo_kernel_server_bypass_clients_1_and_200_connections() {
                let Some((_lock, net)) = net("tcp_echo_kernel_server") else {
                    return;
                };
                echo_kernel_server(&net);
            }

            #[test]
            fn tcp_echo_kernel_server_answering_with_syn_cookies() {
                let Some((_lock, net)) = net("tcp_echo_syn_cookies") else {
                    return;
                };
                echo_kernel_server_with_syn_cookies(&net);
            }

            #[test]
            fn bulk_transfer_each_direction() {
                let Some((_lock, net)) = net("bulk_transfer_each_direction") else {
                    return;
                };
                bulk(&net, bulk_size());
            }

            #[test]
            fn bulk_transfer_each_direction_with_2_percent_loss() {
                let Some((_lock, net)) = net("bulk_transfer_with_loss") else {
                    return;
                };
                net.add_loss(2);
                bulk(&net, lossy_size());
            }

            #[test]
            fn udp_echo_both_ways_and_ping() {
                let Some((_lock, net)) = net("udp_echo_both_ways_and_ping") else {
                    return;
                };
                udp_and_ping(&net);
            }

            #[test]
            fn peer_closing_resetting_or_vanishing_ends_the_connection_cleanly() {
                let Some((_lock, net)) = net("peer_goes_away") else {
                    return;
                };
                peer_goes_away(&net);
            }
        }
    };
}

datapath_tests!(xdp, Path::XdpGeneric);
datapath_tests!(packet, Path::Packet);
datapath_tests!(tap, Path::Tap);

/// AF_XDP in driver (native) mode on veth: echo and bulk once.
#[test]
fn xdp_driver_mode_echo_and_bulk() {
    if !root_or_skip("xdp_driver_mode_echo_and_bulk") {
        return;
    }
    let _lock = serial();
    let net = Net::up(Path::XdpDriver);
    echo_bypass_server(&net);
    bulk(&net, if long() { 256 * MIB } else { 16 * MIB });
}

/// AF_PACKET with its offloads turned off: echo, and bulk with 2% loss, every byte checked.
#[test]
fn packet_without_offloads_echo_and_bulk_with_loss() {
    if !root_or_skip("packet_without_offloads_echo_and_bulk_with_loss") {
        return;
    }
    let _lock = serial();
    let net = Net::up(Path::PacketPlain);
    echo_bypass_server(&net);
    net.add_loss(2);
    bulk(&net, lossy_size());
}
