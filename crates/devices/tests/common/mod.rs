//! Helpers shared by the privileged device tests: a root check, a plain raw socket to play the
//! peer, test frames whose every byte is known, and an exchange/ping-pong harness.
//!
//! These tests create network namespaces, so they need root. Without it they print why and
//! return (CI runs them as root). Each test builds its own topology with names that include
//! the process id and a counter, and removes it on drop, also when the test fails.
//!
//! `BYPASS_LONG=1` makes the exchange tests send 5000 frames each way instead of 300.
#![allow(dead_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use bypass_devices::netns;
use bypass_devices::topo::Topology;
use bypass_devices::Device;
use bypass_runtime::Buffer;

/// An ethertype for local experiments (IEEE 802 "local experimental ethertype 1").
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// Whether we may create namespaces; prints why the test is skipped if not.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root to create network namespaces (CI runs as root)");
    false
}

/// A frame of `len` bytes (at least 20) from `src` to `dst`: the test ethertype, a 4-byte
/// sequence number, then bytes derived from the sequence number and their position.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    assert!(len >= 20);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    for i in 18..len {
        f.push((seq as usize).wrapping_mul(31).wrapping_add(i * 7) as u8);
    }
    f
}

/// The length of frame `seq` in a test run: 60 to 1514 bytes, varying.
pub fn frame_len(seq: u32) -> usize {
    60 + (seq as usize * 97) % (1514 - 60 + 1)
}

/// Whether `frame` is one of our test frames from `src`; returns its sequence number.
pub fn test_seq(frame: &[u8], src: [u8; 6]) -> Option<u32> {
    if frame.len() < 18 || frame[6..12] != src || frame[12..14] != TEST_ETHERTYPE.to_be_bytes() {
        return None;
    }
    Some(u32::from_be_bytes(frame[14..18].try_into().unwrap()))
}

/// A plain `AF_PACKET` raw socket bound to one interface: the independent peer.
pub struct RawSocket {
    fd: OwnedFd,
    pub mac: [u8; 6],
}

impl RawSocket {
    pub fn bind(interface: &str) -> io::Result<RawSocket> {
        let name = std::ffi::CString::new(interface).unwrap();
        // SAFETY: valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain system call.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                proto as i32,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: i32 = 1;
        // SAFETY: an int option, passed with its size. PACKET_IGNORE_OUTGOING = 23.
        unsafe {
            libc::setsockopt(fd.as_raw_fd(), 263, 23, (&one as *const i32).cast(), 4);
        }
        // Room for a whole test run even if this thread is not scheduled for a while.
        let rcvbuf: i32 = 16 << 20;
        // SAFETY: an int option, passed with its size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&rcvbuf as *const i32).cast(),
                4,
            );
        }
        let mac = if_mac(interface)?;
        Ok(RawSocket { fd, mac })
    }

    /// Sends one frame, retrying while the kernel pushes back.
    pub fn send(&self, frame: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // SAFETY: `frame` is readable for its length.
            let r =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if r == frame.len() as isize {
                return;
            }
            let e = io::Error::last_os_error();
            assert!(
                r < 0 && matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)),
                "raw send failed: {e}"
            );
            assert!(Instant::now() < deadline, "raw send kept failing: {e}");
            std::thread::yield_now();
        }
    }

    /// One received frame, if any is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> Option<usize> {
        // SAFETY: `buf` is writable for its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (r >= 0).then_some(r as usize)
    }

    /// The next test frame from `src`, waiting up to `timeout`.
    pub fn recv_test_frame(&self, src: [u8; 6], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 2048];
        while Instant::now() < deadline {
            match self.try_recv(&mut buf) {
                Some(n) if test_seq(&buf[..n], src).is_some() => return Some(buf[..n].to_vec()),
                Some(_) => {}
                None => std::thread::yield_now(),
            }
        }
        None
    }
}

/// The MAC address of an interface, read from sysfs-free ioctl via the devices crate's view.
pub fn if_mac(interface: &str) -> io::Result<[u8; 6]> {
    // /sys/class/net reflects the namespace sysfs was mounted in, not ours: ask `ip` instead.
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", interface])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .ok_or_else(|| io::Error::other(format!("no MAC for {interface} in {text:?}")))?;
    let mut bytes = [0u8; 6];
    for (b, part) in bytes.iter_mut().zip(mac.split(':')) {
        *b = u8::from_str_radix(part, 16).map_err(io::Error::other)?;
    }
    Ok(bytes)
}

/// Receives frames from `dev` until `want` test frames from `src` arrived or `timeout` passed.
pub fn recv_test_frames<D: Device>(
    dev: &mut D,
    src: [u8; 6],
    want: usize,
    timeout: Duration,
) -> Vec<Buffer> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut batch = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        if dev.rx_burst(&mut batch, 32) == 0 {
            std::thread::yield_now();
        }
        for f in batch.drain(..) {
            if test_seq(&f, src).is_some() {
                got.push(f);
            }
        }
    }
    got
}

/// Sends every frame through `dev`, retrying what it could not take yet.
pub fn send_all<D: Device>(dev: &mut D, frames: Vec<Buffer>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pending = frames;
    while !pending.is_empty() {
        if dev.tx_burst(&mut pending) == 0 {
            assert!(Instant::now() < deadline, "device stopped taking frames");
            std::thread::yield_now();
        }
    }
    // One more call flushes a kick the kernel pushed back on.
    dev.tx_burst(&mut pending);
}

/// Copies `data` into a buffer of the device's pool.
pub fn buffer<D: Device>(dev: &D, data: &[u8]) -> Buffer {
    dev.pool().alloc_copy(data).expect("device pool exhausted")
}

/// Frames per direction in the exchange tests: 300, or 5000 with `BYPASS_LONG=1`.
pub fn frames() -> u32 {
    if std::env::var("BYPASS_LONG").is_ok_and(|v| v == "1") {
        5000
    } else {
        300
    }
}

/// Where the two ends of a test run: the device under test in namespace `a_ns`, and a raw
/// socket on interface `b_iface` of namespace `b_ns`.
#[derive(Clone, Copy, Debug)]
pub struct Sides<'a> {
    pub a_ns: &'a str,
    pub b_ns: &'a str,
    pub b_iface: &'a str,
}

impl<'a> Sides<'a> {
    /// The device on the A end of a veth topology, the raw socket on the B end.
    pub fn of(topo: &'a Topology) -> Sides<'a> {
        let s = topo.spec();
        Sides {
            a_ns: &s.ns_a,
            b_ns: &s.ns_b,
            b_iface: &s.dev_b,
        }
    }
}

/// Runs `a` (with the device opened by `open`) and `b` (with the raw socket) at once, each in
/// its namespace; `a` learns B's MAC and `b` learns the device's MAC before either starts.
fn run_sides<D: Device, T: Send>(
    sides: Sides,
    open: impl FnOnce() -> D + Send,
    a: impl FnOnce(&mut D, [u8; 6], [u8; 6]) -> T + Send,
    b: impl FnOnce(&RawSocket, [u8; 6], [u8; 6]) + Send,
) -> T {
    let (a_mac_tx, a_mac_rx) = std::sync::mpsc::channel();
    let (b_mac_tx, b_mac_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let b_thread = s.spawn(move || {
            netns::enter(sides.b_ns).unwrap();
            let sock = RawSocket::bind(sides.b_iface).unwrap();
            b_mac_tx.send(sock.mac).unwrap();
            let a_mac = a_mac_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("side A never opened its device");
            b(&sock, a_mac, sock.mac);
        });
        let a_thread = s.spawn(move || {
            netns::enter(sides.a_ns).unwrap();
            let mut dev = open();
            let a_mac = dev.mac();
            a_mac_tx.send(a_mac).unwrap();
            let b_mac = b_mac_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("side B never opened its socket");
            a(&mut dev, a_mac, b_mac)
        });
        let a_result = a_thread.join();
        let b_result = b_thread.join();
        if let Err(p) = b_result {
            std::panic::resume_unwind(p);
        }
        a_result.unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A sends [`frames()`] frames of varying length through the device; B checks every byte and
/// the order. Then B sends as many and A checks them. Returns A's device statistics.
pub fn exchange<D: Device>(
    sides: Sides,
    open: impl FnOnce() -> D + Send,
) -> bypass_devices::DeviceStats {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let n = frames();
    // How many of B's frames A has checked: B sends 32 at a time and waits for A, so any
    // ring of at least 32 frames holds what is in flight, however the threads are scheduled.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = progress.clone();
    run_sides(
        sides,
        open,
        move |dev, a_mac, b_mac| {
            for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
                let frames = chunk
                    .iter()
                    .map(|&seq| buffer(&*dev, &test_frame(b_mac, a_mac, seq, frame_len(seq))))
                    .collect();
                send_all(dev, frames);
            }
            done_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("B did not receive A's frames");
            // Check each frame as it comes and drop it, so the pool never runs dry.
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut next = 0u32;
            let mut batch = Vec::new();
            while next < n {
                assert!(Instant::now() < deadline, "A received {next} of {n} frames");
                if dev.rx_burst(&mut batch, 32) == 0 {
                    std::thread::yield_now();
                }
                for f in batch.drain(..) {
                    if test_seq(&f, b_mac).is_some() {
                        let want = test_frame(a_mac, b_mac, next, frame_len(next));
                        assert_eq!(&f[..], &want[..], "frame {next} at A");
                        next += 1;
                        seen.store(next, std::sync::atomic::Ordering::Release);
                    }
                }
            }
            dev.stats()
        },
        move |sock, a_mac, b_mac| {
            for seq in 0..n {
                let f = sock
                    .recv_test_frame(a_mac, Duration::from_secs(10))
                    .unwrap_or_else(|| panic!("B: frame {seq} from A never arrived"));
                assert_eq!(
                    f,
                    test_frame(b_mac, a_mac, seq, frame_len(seq)),
                    "frame {seq} at B"
                );
            }
            done_tx.send(()).unwrap();
            for seq in 0..n {
                sock.send(&test_frame(a_mac, b_mac, seq, frame_len(seq)));
                if seq % 32 == 31 {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while progress.load(std::sync::atomic::Ordering::Acquire) <= seq {
                        assert!(Instant::now() < deadline, "A stopped receiving after {seq}");
                        std::thread::yield_now();
                    }
                }
            }
        },
    )
}

/// L2 ping-pong: A sends a frame, B checks it and echoes it with the addresses swapped, A
/// checks every byte of the echo. Returns the round-trip times.
pub fn ping_pong<D: Device>(
    sides: Sides,
    open: impl FnOnce() -> D + Send,
    rounds: u32,
) -> Vec<Duration> {
    run_sides(
        sides,
        open,
        |dev, a_mac, b_mac| {
            let mut rtts = Vec::with_capacity(rounds as usize);
            for seq in 0..rounds {
                let len = if seq % 2 == 0 { 64 } else { frame_len(seq) };
                let start = Instant::now();
                send_all(
                    dev,
                    vec![buffer(&*dev, &test_frame(b_mac, a_mac, seq, len))],
                );
                let echo = recv_test_frames(dev, b_mac, 1, Duration::from_secs(5));
                rtts.push(start.elapsed());
                assert_eq!(echo.len(), 1, "no echo of ping {seq}");
                assert_eq!(
                    &echo[0][..],
                    &test_frame(a_mac, b_mac, seq, len)[..],
                    "echo {seq}"
                );
            }
            rtts
        },
        |sock, a_mac, b_mac| {
            for seq in 0..rounds {
                let mut f = sock
                    .recv_test_frame(a_mac, Duration::from_secs(5))
                    .unwrap_or_else(|| panic!("B: ping {seq} never arrived"));
                assert_eq!(test_seq(&f, a_mac), Some(seq));
                let len = if seq % 2 == 0 { 64 } else { frame_len(seq) };
                assert_eq!(f, test_frame(b_mac, a_mac, seq, len), "ping {seq} at B");
                f[0..6].copy_from_slice(&a_mac);
                f[6..12].copy_from_slice(&b_mac);
                sock.send(&f);
            }
        },
    )
}

/// The median of some durations.
pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// MAC of `dev` in namespace `ns`.
pub fn if_mac_in(ns: &str, dev: &str) -> [u8; 6] {
    netns::run_in(ns, || if_mac(dev)).unwrap().unwrap()
}

/// Drops every capability of the calling thread (capabilities are per thread on Linux), so
/// the next privileged call fails as it would for an unprivileged user.
pub fn drop_all_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and two data structs, which we pass.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    assert_eq!(r, 0, "capset failed: {}", io::Error::last_os_error());
}

/// Opens a device in A, has B send `count` test frames while A does not poll, then lets A
/// take what its ring kept. Returns the sequence numbers A received and A's statistics.
pub fn overflow<D: Device>(
    sides: Sides,
    open: impl FnOnce() -> D + Send,
    count: u32,
) -> (Vec<u32>, bypass_devices::DeviceStats) {
    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<()>();
    run_sides(
        sides,
        open,
        move |dev, _a_mac, b_mac| {
            sent_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("B did not send");
            let got = recv_test_frames(dev, b_mac, count as usize, Duration::from_millis(300));
            let seqs = got.iter().map(|f| test_seq(f, b_mac).unwrap()).collect();
            (seqs, dev.stats())
        },
        move |sock, a_mac, b_mac| {
            for seq in 0..count {
                sock.send(&test_frame(a_mac, b_mac, seq, 100));
            }
            sent_tx.send(()).unwrap();
        },
    )
}

/// A hands `count` frames to the device in one `tx_burst` call, which must take exactly
/// `first_call` of them (what fits its TX ring) and leave the rest in the vector; further calls
/// take the rest. Then A makes no call until B has received every frame, in order: the device
/// must have sent them all by itself.
pub fn one_burst<D: Device>(
    sides: Sides,
    open: impl FnOnce() -> D + Send,
    count: u32,
    first_call: u32,
) {
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    run_sides(
        sides,
        open,
        move |dev, a_mac, b_mac| {
            let mut burst: Vec<Buffer> = (0..count)
                .map(|seq| buffer(&*dev, &test_frame(b_mac, a_mac, seq, frame_len(seq))))
                .collect();
            assert_eq!(dev.tx_burst(&mut burst), first_call as usize);
            assert_eq!(
                burst.len(),
                (count - first_call) as usize,
                "untaken frames stay"
            );
            if !burst.is_empty() {
                assert_eq!(
                    test_seq(&burst[0], a_mac),
                    Some(first_call),
                    "the untaken frames are the last ones, in order"
                );
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while !burst.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the device stopped taking frames"
                );
                dev.tx_burst(&mut burst);
            }
            done_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("B did not receive the burst");
        },
        move |sock, a_mac, b_mac| {
            for seq in 0..count {
                let f = sock
                    .recv_test_frame(a_mac, Duration::from_secs(5))
                    .unwrap_or_else(|| panic!("B: frame {seq} of the burst never arrived"));
                assert_eq!(
                    f,
                    test_frame(b_mac, a_mac, seq, frame_len(seq)),
                    "frame {seq} at B"
                );
            }
            done_tx.send(()).unwrap();
        },
    )
}
