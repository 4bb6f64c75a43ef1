//! The stack over AF_PACKET with checksum and TCP segmentation offload (virtio-net headers),
//! against the kernel's TCP and against itself, across a veth pair between two namespaces.
//! Needs root (skipped otherwise).
//!
//! Each scenario echoes a stream of [`STREAM`] bytes over one connection, every byte checked
//! by the side that sent it, on two topologies:
//! - the usual one, offloads off on the veth pair: the kernel cuts our large segments at the
//!   sending end, and every frame on the wire fits the MTU;
//! - offloads on (`tso`, `gso`, `tx` checksumming): large segments cross the pair whole, from
//!   the kernel's TCP and from our stack alike, and arrive at the receiving packet socket with
//!   checksums only the sending host's kernel could have completed (it never does).
//!
//! Every topology has names of its own and is removed when the test ends, also on failure.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant as StdInstant};

use bypass_devices::af_packet::{AfPacket, Offload, PacketConfig};
use bypass_devices::topo::{Topology, TopologySpec};
use bypass_devices::Device;
use bypass_inet::{Error, SocketHandle, Stack, StackConfig};
use bypass_runtime::{BufferPool, Clock, PoolConfig};
use bypass_wire::{Ipv4Address, Ipv4Cidr};

/// Bytes echoed per scenario.
const STREAM: usize = 24 << 20;
const PORT: u16 = 7100;
/// Longest a scenario may take before it counts as hung.
const DEADLINE: Duration = Duration::from_secs(60);

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root to create network namespaces (CI runs as root)");
    false
}

/// Byte `i` of the stream: no period that a 64 KiB segment or an MSS divides, so a segment
/// delivered at the wrong offset shows.
fn pattern(i: usize) -> u8 {
    let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 56) as u8 ^ (i / 65_521) as u8
}

fn check(data: &[u8], at: usize, who: &str) {
    for (k, &b) in data.iter().enumerate() {
        assert_eq!(
            b,
            pattern(at + k),
            "{who}: byte {} of the echoed stream is wrong",
            at + k
        );
    }
}

fn topology(offloads_on_the_pair: bool) -> Topology {
    let spec = TopologySpec {
        offloads_off: !offloads_on_the_pair,
        ..TopologySpec::unique()
    };
    Topology::up(spec).expect("a veth topology")
}

/// A stack on `dev` owning `ip`/24, with the offloads required.
fn offload_stack(dev: &str, ip: [u8; 4]) -> Stack<AfPacket> {
    let config = PacketConfig {
        offload: Offload::Required,
        owned_address: Some(ip),
        ..PacketConfig::new(dev)
    };
    let device = AfPacket::open(&config).unwrap_or_else(|e| panic!("{e}"));
    let caps = device.caps();
    assert!(caps.frame_offloads, "offloads on: {caps:?}");
    assert!(
        caps.tcp_segmentation_max >= 60_000,
        "TSO up to 64 KiB: {caps:?}"
    );
    let ip = Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]);
    Stack::new(device, StackConfig::new(Ipv4Cidr::new(ip, 24)))
}

/// What one bypass end saw.
#[derive(Debug)]
struct EndReport {
    tx_large_segments: u64,
    rx_large_segments: u64,
}

fn report(stack: &Stack<AfPacket>) -> EndReport {
    let s = stack.stats();
    EndReport {
        tx_large_segments: s.tcp_tx_large_segments,
        rx_large_segments: s.tcp_rx_large_segments,
    }
}

/// Sends [`STREAM`] bytes of the pattern on `h` and reads the echo back at the same time,
/// checking every byte; then closes.
fn bypass_stream_client(stack: &mut Stack<AfPacket>, h: SocketHandle) {
    let clock = Clock::real();
    let app_pool = BufferPool::new(&PoolConfig::large(32)).unwrap();
    let (mut sent, mut echoed) = (0usize, 0usize);
    let started = StdInstant::now();
    while echoed < STREAM {
        assert!(
            started.elapsed() < DEADLINE,
            "stream client: {echoed} of {STREAM} bytes echoed after {DEADLINE:?}; device {:?}, \
             stack {:?}",
            stack.device().stats(),
            stack.stats()
        );
        stack.poll(clock.now());
        if sent < STREAM {
            if let Some(mut b) = app_pool.alloc() {
                let n = (STREAM - sent).min(b.tailroom());
                for (k, byte) in b.append(n).iter_mut().enumerate() {
                    *byte = pattern(sent + k);
                }
                match stack.tcp_send(h, &b) {
                    Ok(taken) => sent += taken,
                    Err(Error::WouldBlock) => {}
                    Err(e) => panic!("stream client: send: {e}"),
                }
            }
        }
        loop {
            match stack.tcp_recv(h) {
                Ok(Some(b)) => {
                    check(&b, echoed, "stream client");
                    echoed += b.len();
                }
                Ok(None) => break,
                Err(e) => panic!("stream client: receive after {echoed} bytes: {e}"),
            }
        }
        stack.flush();
    }
    stack.tcp_close(h).unwrap();
    let until = StdInstant::now() + Duration::from_millis(200);
    while StdInstant::now() < until {
        stack.poll(clock.now());
    }
}

/// Echoes everything received on one accepted connection until the peer closes.
fn bypass_echo_server(stack: &mut Stack<AfPacket>, listener: SocketHandle) {
    let clock = Clock::real();
    let started = StdInstant::now();
    let h = loop {
        assert!(started.elapsed() < DEADLINE, "echo server: no connection");
        stack.poll(clock.now());
        if let Some((h, _)) = stack.tcp_accept(listener).unwrap() {
            break h;
        }
    };
    // Received pieces wait here until the send buffer takes them.
    let mut pending: std::collections::VecDeque<bypass_runtime::Buffer> = Default::default();
    'serve: loop {
        assert!(started.elapsed() < DEADLINE, "echo server: hung");
        stack.poll(clock.now());
        while let Some(front) = pending.front_mut() {
            match stack.tcp_send(h, front) {
                Ok(n) if n == front.len() => {
                    pending.pop_front();
                }
                Ok(n) => {
                    front.advance(n);
                    break;
                }
                Err(Error::WouldBlock) => break,
                Err(e) => panic!("echo server: send: {e}"),
            }
        }
        if pending.is_empty() {
            // Everything received so far, so that it leaves together.
            loop {
                match stack.tcp_recv(h) {
                    Ok(Some(b)) => pending.push_back(b),
                    Ok(None) => break,
                    Err(Error::EndOfStream) if pending.is_empty() => break 'serve,
                    Err(Error::EndOfStream) => break,
                    Err(e) => panic!("echo server: receive: {e}"),
                }
            }
        }
        stack.flush();
    }
    stack.tcp_close(h).unwrap();
    let until = StdInstant::now() + Duration::from_millis(200);
    while StdInstant::now() < until {
        stack.poll(clock.now());
    }
}

/// The kernel's side of an echo: echoes one connection until it closes.
fn kernel_echo_server(listener: TcpListener) {
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = s.read(&mut buf).expect("kernel echo server: read");
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).expect("kernel echo server: write");
    }
}

/// The kernel's side of a stream: sends the pattern and checks the echo, from two threads.
fn kernel_stream_client(server: SocketAddrV4) {
    let s = TcpStream::connect_timeout(&server.into(), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut writer = s.try_clone().unwrap();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            let chunk: Vec<u8> = (0..STREAM).map(pattern).collect();
            writer
                .write_all(&chunk)
                .expect("kernel stream client: write");
        });
        let mut reader = &s;
        let mut buf = vec![0u8; 256 << 10];
        let mut echoed = 0;
        while echoed < STREAM {
            let n = reader.read(&mut buf).expect("kernel stream client: read");
            assert!(n > 0, "kernel stream client: closed after {echoed} bytes");
            check(&buf[..n], echoed, "kernel stream client");
            echoed += n;
        }
    });
}

fn ipv4(ip: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(ip)
}

/// Our echo server on `server` in namespace A (call it on a thread of its own): says so on
/// `ready` once listening, serves one connection and reports what its stack counted.
fn bypass_server_in_a(
    topo: &Topology,
    spec: &TopologySpec,
    server: SocketAddrV4,
    ready: &mpsc::Sender<()>,
) -> EndReport {
    topo.in_a(|| {
        let mut stack = offload_stack(&spec.dev_a, spec.ip_a());
        let l = stack.tcp_listen(server, 4).unwrap();
        ready.send(()).unwrap();
        bypass_echo_server(&mut stack, l);
        report(&stack)
    })
    .unwrap()
}

/// Our stream client on device `dev` with address `ip` (inside its namespace already):
/// sends the stream to `server`, checks the echo, reports what its stack counted.
fn bypass_client(dev: &str, ip: [u8; 4], server: SocketAddrV4) -> EndReport {
    let mut stack = offload_stack(dev, ip);
    let h = stack.tcp_connect(None, server).unwrap();
    bypass_stream_client(&mut stack, h);
    report(&stack)
}

/// Our stream client in namespace A, the kernel's echo server in B.
fn bypass_client_kernel_server(offloads_on_the_pair: bool) -> EndReport {
    let topo = topology(offloads_on_the_pair);
    let spec = topo.spec().clone();
    let server = SocketAddrV4::new(ipv4(spec.ip_b()), PORT);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            topo.in_b(|| {
                let l = TcpListener::bind(server).unwrap();
                ready_tx.send(()).unwrap();
                kernel_echo_server(l);
            })
            .unwrap()
        });
        ready_rx.recv().unwrap();
        topo.in_a(|| bypass_client(&spec.dev_a, spec.ip_a(), server))
            .unwrap()
    })
}

/// Our echo server in namespace A, the kernel's stream client in B.
fn kernel_client_bypass_server(offloads_on_the_pair: bool) -> EndReport {
    let topo = topology(offloads_on_the_pair);
    let spec = topo.spec().clone();
    let server = SocketAddrV4::new(ipv4(spec.ip_a()), PORT);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|sc| {
        let bypass = sc.spawn(|| bypass_server_in_a(&topo, &spec, server, &ready_tx));
        ready_rx.recv().unwrap();
        topo.in_b(|| kernel_stream_client(server)).unwrap();
        bypass.join().unwrap()
    })
}

/// Our stack at both ends: the echo server in A, the stream client in B.
fn bypass_both_ends(offloads_on_the_pair: bool) -> (EndReport, EndReport) {
    let topo = topology(offloads_on_the_pair);
    topo.remove_kernel_address_b().unwrap();
    let spec = topo.spec().clone();
    let server = SocketAddrV4::new(ipv4(spec.ip_a()), PORT);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::scope(|sc| {
        let bypass_server = sc.spawn(|| bypass_server_in_a(&topo, &spec, server, &ready_tx));
        ready_rx.recv().unwrap();
        let client = topo
            .in_b(|| bypass_client(&spec.dev_b, spec.ip_b(), server))
            .unwrap();
        (bypass_server.join().unwrap(), client)
    })
}

#[test]
fn large_segments_reach_the_kernel_cut_at_the_mss() {
    if !root_or_skip("large_segments_reach_the_kernel_cut_at_the_mss") {
        return;
    }
    let client = bypass_client_kernel_server(false);
    eprintln!("bypass client, kernel server, offloads off on the pair: {client:?}");
    // The client queues 64 KiB at a time: its segments are large as soon as the windows
    // allow. (An echo server's depend on how much arrived together: not asserted.)
    assert!(client.tx_large_segments > 0, "{client:?}");
    let server = kernel_client_bypass_server(false);
    eprintln!("kernel client, bypass server, offloads off on the pair: {server:?}");
}

#[test]
fn large_segments_cross_a_pair_with_offloads_whole_both_ways_with_the_kernel() {
    if !root_or_skip("large_segments_cross_a_pair_with_offloads_whole_both_ways_with_the_kernel") {
        return;
    }
    let client = bypass_client_kernel_server(true);
    eprintln!("bypass client, kernel server, offloads on the pair: {client:?}");
    assert!(client.tx_large_segments > 0, "{client:?}");
    assert!(client.rx_large_segments > 0, "{client:?}");
    let server = kernel_client_bypass_server(true);
    eprintln!("kernel client, bypass server, offloads on the pair: {server:?}");
    assert!(server.tx_large_segments > 0, "{server:?}");
    assert!(server.rx_large_segments > 0, "{server:?}");
}

#[test]
fn two_offloading_stacks_echo_a_stream_over_either_pair() {
    if !root_or_skip("two_offloading_stacks_echo_a_stream_over_either_pair") {
        return;
    }
    for offloads_on_the_pair in [false, true] {
        let (server, client) = bypass_both_ends(offloads_on_the_pair);
        eprintln!(
            "bypass at both ends, offloads {} the pair: server {server:?}, client {client:?}",
            if offloads_on_the_pair { "on" } else { "off" }
        );
        assert!(client.tx_large_segments > 0, "{client:?}");
        if offloads_on_the_pair {
            // The client's large segments reach the server whole, and its echo of each
            // goes back as large segments too.
            assert!(server.rx_large_segments > 0, "{server:?}");
            assert!(server.tx_large_segments > 0, "{server:?}");
            assert!(client.rx_large_segments > 0, "{client:?}");
        }
    }
}
