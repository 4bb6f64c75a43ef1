//! Malformed RESP over raw sockets: an error reply and a closed connection, never a crash or an
//! unbounded allocation; other clients are served throughout.

mod common;

use std::io::Write;
use std::time::Duration;

use bypass_kv::resp::ParserLimits;
use bypass_kv::{ServerLimits, Stats};
use common::{read_to_close, req, roundtrip, TestServer};

#[test]
fn malformed_requests_get_a_protocol_error_and_a_close() {
    let s = TestServer::start(None);
    let mut bystander = s.connect();
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$-5\r\n", "invalid bulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*1\r\n$1000000000\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*99999999\r\n", "invalid multibulk length"),
        (b"*1\r\n+GET\r\n", "expected '$', got '+'"),
        (b"*2\r\n$3\r\nGETxx", "expected CRLF after bulk data"),
        (b"*1\r\n$4\r\nPING\n\n", "expected CRLF after bulk data"),
        (b"*1\n", "invalid multibulk length"),
        (b"*1\r\n$4\n", "invalid bulk length"),
        (b"SET \"unbalanced\r\n", "unbalanced quotes in request"),
    ];
    for (i, (input, why)) in cases.iter().enumerate() {
        let mut c = s.connect();
        c.write_all(input).unwrap();
        let got = read_to_close(&mut c);
        let want = format!("-ERR Protocol error: {why}\r\n");
        assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "case {i}: {:?}",
            String::from_utf8_lossy(input)
        );
        roundtrip(&mut bystander, &req(&[b"PING"]), b"+PONG\r\n");
    }
    // Requests before the bad one in the same burst are answered first.
    let mut c = s.connect();
    c.write_all(
        &[
            req(&[b"SET", b"a", b"1"]),
            b"*1\r\n$q\r\n".to_vec(),
            req(&[b"SET", b"b", b"2"]),
        ]
        .concat(),
    )
    .unwrap();
    assert_eq!(
        read_to_close(&mut c),
        b"+OK\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    roundtrip(
        &mut bystander,
        &req(&[b"MGET", b"a", b"b"]),
        b"*2\r\n$1\r\n1\r\n$-1\r\n",
    );
    assert_eq!(Stats::get(&s.stats.protocol_errors), cases.len() as u64 + 1);
}

#[test]
fn oversized_lines_and_requests_hit_their_limits() {
    let limits = ServerLimits {
        parser: ParserLimits {
            max_bulk: 1 << 20,
            max_elements: 1000,
            max_inline: 4096,
            max_request: 5 << 19,
        },
        ..ServerLimits::default()
    };
    let s = TestServer::start_with(None, limits);
    let mut c = s.connect();
    c.write_all(&vec![b'a'; 5000]).unwrap();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR Protocol error: too big inline request\r\n"
    );
    let mut c = s.connect();
    c.write_all(b"*1001\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR Protocol error: invalid multibulk length\r\n"
    );
    let mut c = s.connect();
    c.write_all(b"*1\r\n$1048577\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    let mut c = s.connect();
    c.write_all(b"*1\r\n$00000000000000000000000000000000001\r\n")
        .unwrap();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR Protocol error: too big bulk count string\r\n"
    );
    // Three bulks of 1 MiB each are fine alone but exceed the 2.5 MiB request limit together.
    // (The error comes at the third header, after which the client sends nothing: a close with
    // unread bytes would reset the connection and lose the reply.)
    let mut c = s.connect();
    let big = vec![b'v'; 1 << 20];
    c.write_all(
        &[
            b"*4\r\n$3\r\nSET\r\n".to_vec(),
            format!("${}\r\n", big.len()).into_bytes(),
            big.clone(),
            b"\r\n".to_vec(),
        ]
        .concat(),
    )
    .unwrap();
    c.write_all(
        &[
            format!("${}\r\n", big.len()).into_bytes(),
            big.clone(),
            b"\r\n".to_vec(),
        ]
        .concat(),
    )
    .unwrap();
    c.write_all(format!("${}\r\n", big.len()).as_bytes())
        .unwrap();
    let got = read_to_close(&mut c);
    assert_eq!(
        String::from_utf8_lossy(&got),
        "-ERR Protocol error: request larger than the server's limit of 2621440 bytes\r\n"
    );
    // A 1 MiB value within the limits round-trips.
    let mut c = s.connect();
    roundtrip(&mut c, &req(&[b"SET", b"big", &big]), b"+OK\r\n");
    let mut want = format!("${}\r\n", big.len()).into_bytes();
    want.extend_from_slice(&big);
    want.extend_from_slice(b"\r\n");
    roundtrip(&mut c, &req(&[b"GET", b"big"]), &want);
}

#[test]
fn a_declared_huge_bulk_costs_only_the_bytes_that_arrive() {
    let s = TestServer::start(None);
    // 60 MB declared (under the 64 MiB default limit), 100 KB sent, then the client stalls.
    let mut c = s.connect();
    c.write_all(b"*2\r\n$3\r\nGET\r\n$60000000\r\n").unwrap();
    c.write_all(&vec![b'z'; 100_000]).unwrap();
    let mut bystander = s.connect();
    // Once the bystander is answered, the stalled client's bytes were read (one event loop).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Stats::get(&s.stats.input_buffered) < 100_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server read the partial bulk"
        );
        roundtrip(&mut bystander, &req(&[b"PING"]), b"+PONG\r\n");
    }
    let peak = Stats::get(&s.stats.peak_input_buffered);
    assert!(
        (100_000..=400_000).contains(&peak),
        "buffered {peak} B for 100 KB received of a 60 MB declaration"
    );
    // A truncated frame followed by a close frees everything.
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Stats::get(&s.stats.input_buffered) > 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "buffers freed after close"
        );
        roundtrip(&mut bystander, &req(&[b"PING"]), b"+PONG\r\n");
    }
    roundtrip(
        &mut bystander,
        &req(&[b"SET", b"still", b"here"]),
        b"+OK\r\n",
    );
    assert_eq!(Stats::get(&s.stats.connected_clients), 1);
}

#[test]
fn connections_past_max_clients_are_refused_with_an_error() {
    let s = TestServer::start_with(
        None,
        ServerLimits {
            max_clients: 2,
            ..ServerLimits::default()
        },
    );
    let mut a = s.connect();
    let mut b = s.connect();
    roundtrip(&mut a, &req(&[b"PING"]), b"+PONG\r\n");
    roundtrip(&mut b, &req(&[b"PING"]), b"+PONG\r\n");
    let mut c = s.connect();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR max number of clients reached\r\n"
    );
    assert_eq!(Stats::get(&s.stats.rejected_connections), 1);
    drop(a);
    // The freed slot is taken by the next client.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Stats::get(&s.stats.connected_clients) > 1 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut d = s.connect();
    roundtrip(&mut d, &req(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn a_client_that_does_not_read_its_replies_stalls_itself_not_the_server() {
    let max_output = 64 << 10;
    let s = TestServer::start_with(
        None,
        ServerLimits {
            max_output,
            ..ServerLimits::default()
        },
    );
    let mut c = s.connect();
    let value: Vec<u8> = (0..32 << 10).map(|i| (i % 251) as u8).collect();
    roundtrip(&mut c, &req(&[b"SET", b"big", &value]), b"+OK\r\n");
    // 1000 pipelined GETs ask for 32 MB of replies, more than the socket buffers hold.
    let n = 1000;
    c.write_all(&req(&[b"GET", b"big"]).repeat(n)).unwrap();
    let mut bystander = s.connect();
    std::thread::sleep(Duration::from_millis(300));
    roundtrip(&mut bystander, &req(&[b"PING"]), b"+PONG\r\n");
    let reply_len = value.len() + 10;
    let held = Stats::get(&s.stats.output_in_flight) as usize;
    assert!(
        held > 0 && held <= max_output + reply_len,
        "{held} B of replies held for a client that does not read"
    );
    assert!(Stats::get(&s.stats.input_buffered) <= 64 << 10);
    // Reading resumes the held-back requests: every reply arrives, in order, byte for byte.
    let mut want = format!("${}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\n");
    for i in 0..n {
        let got = common::read_exact_len(&mut c, want.len());
        assert!(got == want, "reply {i} differs");
    }
    roundtrip(&mut c, &req(&[b"DBSIZE"]), b":1\r\n");
    assert_eq!(Stats::get(&s.stats.output_in_flight), 0);
}
