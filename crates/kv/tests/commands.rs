//! Every command, driven with `redis-cli` (Debian's redis-tools) against the server on the
//! kernel libOS, and pipelining over a raw socket.

mod common;

use std::io::Write;
use std::thread;
use std::time::Duration;

use common::{read_exact_len, req, roundtrip, TestServer};

#[test]
fn string_commands_reply_like_redis() {
    let s = TestServer::start(None);
    assert_eq!(s.cli1(&["PING"]), "PONG");
    assert_eq!(s.cli1(&["PING", "hello world"]), "\"hello world\"");
    assert_eq!(s.cli1(&["ECHO", "bytes\twith tab"]), "\"bytes\\twith tab\"");
    assert_eq!(s.cli1(&["GET", "k"]), "(nil)");
    assert_eq!(s.cli1(&["SET", "k", "v1"]), "OK");
    assert_eq!(s.cli1(&["GET", "k"]), "\"v1\"");
    assert_eq!(s.cli1(&["SET", "k", "v2", "NX"]), "(nil)");
    assert_eq!(s.cli1(&["GET", "k"]), "\"v1\"");
    assert_eq!(s.cli1(&["SET", "k", "v2", "XX"]), "OK");
    assert_eq!(s.cli1(&["SET", "missing", "x", "XX"]), "(nil)");
    assert_eq!(s.cli1(&["SET", "fresh", "x", "NX"]), "OK");
    assert_eq!(s.cli1(&["SET", "k", "v3", "GET"]), "\"v2\"");
    assert_eq!(s.cli1(&["GET", "k"]), "\"v3\"");
    assert_eq!(
        s.cli1(&["EXISTS", "k", "fresh", "missing", "k"]),
        "(integer) 3"
    );
    assert_eq!(s.cli1(&["DEL", "k", "missing", "fresh"]), "(integer) 2");
    assert_eq!(s.cli1(&["EXISTS", "k"]), "(integer) 0");
    assert_eq!(s.cli1(&["INCR", "n"]), "(integer) 1");
    assert_eq!(s.cli1(&["INCRBY", "n", "41"]), "(integer) 42");
    assert_eq!(s.cli1(&["DECR", "n"]), "(integer) 41");
    assert_eq!(s.cli1(&["DECRBY", "n", "-9"]), "(integer) 50");
    assert_eq!(s.cli1(&["INCRBY", "n", "-100"]), "(integer) -50");
    assert_eq!(s.cli1(&["GET", "n"]), "\"-50\"");
    assert_eq!(s.cli1(&["MSET", "a", "1", "b", "2", "c", ""]), "OK");
    assert_eq!(
        s.cli(&["MGET", "a", "nope", "b", "c"]),
        "1) \"1\"\n2) (nil)\n3) \"2\"\n4) \"\"\n"
    );
    assert_eq!(s.cli1(&["DBSIZE"]), "(integer) 4");
    assert_eq!(s.cli1(&["SELECT", "0"]), "OK");
    assert_eq!(s.cli1(&["FLUSHALL"]), "OK");
    assert_eq!(s.cli1(&["DBSIZE"]), "(integer) 0");
    assert_eq!(s.cli1(&["MGET", "a"]), "1) (nil)");
    // Binary-safe values, through a raw socket.
    let mut c = s.connect();
    let value: Vec<u8> = (0..=255u8).collect();
    roundtrip(&mut c, &req(&[b"SET", b"bin\r\n", &value]), b"+OK\r\n");
    let mut want = format!("${}\r\n", value.len()).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\n");
    roundtrip(&mut c, &req(&[b"GET", b"bin\r\n"]), &want);
}

#[test]
fn errors_are_worded_as_redis_words_them() {
    let s = TestServer::start(None);
    assert_eq!(
        s.cli1(&["FOO", "a", "b"]),
        "(error) ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        s.cli1(&["GET"]),
        "(error) ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        s.cli1(&["get", "a", "b"]),
        "(error) ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        s.cli1(&["MSET", "a", "1", "b"]),
        "(error) ERR wrong number of arguments for 'mset' command"
    );
    s.cli1(&["SET", "s", "text"]);
    assert_eq!(
        s.cli1(&["INCR", "s"]),
        "(error) ERR value is not an integer or out of range"
    );
    assert_eq!(
        s.cli1(&["INCRBY", "n", "1.5"]),
        "(error) ERR value is not an integer or out of range"
    );
    s.cli1(&["SET", "max", &i64::MAX.to_string()]);
    assert_eq!(
        s.cli1(&["INCR", "max"]),
        "(error) ERR increment or decrement would overflow"
    );
    assert_eq!(
        s.cli1(&["SET", "k", "v", "BOGUS"]),
        "(error) ERR syntax error"
    );
    assert_eq!(
        s.cli1(&["SET", "k", "v", "NX", "XX"]),
        "(error) ERR syntax error"
    );
    assert_eq!(s.cli1(&["SET", "k", "v", "EX"]), "(error) ERR syntax error");
    assert_eq!(
        s.cli1(&["SET", "k", "v", "EX", "ten"]),
        "(error) ERR value is not an integer or out of range"
    );
    assert_eq!(
        s.cli1(&["SET", "k", "v", "PX", "0"]),
        "(error) ERR invalid expire time in 'set' command"
    );
    assert_eq!(
        s.cli1(&["EXPIRE", "s", "x"]),
        "(error) ERR value is not an integer or out of range"
    );
    assert_eq!(
        s.cli1(&["SELECT", "1"]),
        "(error) ERR DB index is out of range"
    );
    assert_eq!(
        s.cli1(&["CONFIG", "SET", "save", ""]),
        "(error) ERR unknown subcommand 'SET'. Try CONFIG HELP."
    );
    // No failed command changed anything.
    assert_eq!(s.cli1(&["GET", "s"]), "\"text\"");
    assert_eq!(s.cli1(&["EXISTS", "k", "n"]), "(integer) 0");
}

#[test]
fn keys_expire_on_access_and_by_the_sweep() {
    let s = TestServer::start(None);
    assert_eq!(s.cli1(&["SET", "k", "v", "EX", "100"]), "OK");
    assert_eq!(s.cli1(&["TTL", "k"]), "(integer) 100");
    let pttl: i64 = s
        .cli1(&["PTTL", "k"])
        .trim_start_matches("(integer) ")
        .parse()
        .unwrap();
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(s.cli1(&["TTL", "nokey"]), "(integer) -2");
    assert_eq!(s.cli1(&["SET", "p", "v"]), "OK");
    assert_eq!(s.cli1(&["TTL", "p"]), "(integer) -1");
    assert_eq!(s.cli1(&["EXPIRE", "p", "50"]), "(integer) 1");
    assert_eq!(s.cli1(&["TTL", "p"]), "(integer) 50");
    assert_eq!(s.cli1(&["PERSIST", "p"]), "(integer) 1");
    assert_eq!(s.cli1(&["TTL", "p"]), "(integer) -1");
    assert_eq!(s.cli1(&["EXPIRE", "nokey", "50"]), "(integer) 0");
    // INCR keeps the expiry; SET without options clears it; KEEPTTL keeps it.
    assert_eq!(s.cli1(&["SET", "n", "1", "EX", "100"]), "OK");
    assert_eq!(s.cli1(&["INCR", "n"]), "(integer) 2");
    assert_eq!(s.cli1(&["TTL", "n"]), "(integer) 100");
    assert_eq!(s.cli1(&["SET", "n", "3", "KEEPTTL"]), "OK");
    assert_eq!(s.cli1(&["TTL", "n"]), "(integer) 100");
    assert_eq!(s.cli1(&["SET", "n", "4"]), "OK");
    assert_eq!(s.cli1(&["TTL", "n"]), "(integer) -1");
    // A non-positive EXPIRE deletes.
    assert_eq!(s.cli1(&["EXPIRE", "n", "0"]), "(integer) 1");
    assert_eq!(s.cli1(&["EXISTS", "n"]), "(integer) 0");
    // Lazy expiry: gone at the first access after its time.
    assert_eq!(s.cli1(&["SET", "short", "v", "PX", "150"]), "OK");
    assert_eq!(s.cli1(&["GET", "short"]), "\"v\"");
    thread::sleep(Duration::from_millis(250));
    assert_eq!(s.cli1(&["GET", "short"]), "(nil)");
    // The sweep removes keys nobody touches: DBSIZE counts them until then.
    let mut c = s.connect();
    let mut burst = Vec::new();
    for i in 0..50 {
        burst.extend(req(&[
            b"SET",
            format!("t{i}").as_bytes(),
            b"v",
            b"PX",
            b"100",
        ]));
    }
    c.write_all(&burst).unwrap();
    assert_eq!(read_exact_len(&mut c, 5 * 50), b"+OK\r\n".repeat(50));
    assert_eq!(s.cli1(&["DBSIZE"]), "(integer) 52");
    thread::sleep(Duration::from_millis(500));
    assert_eq!(s.cli1(&["DBSIZE"]), "(integer) 2");
    assert!(s.cli(&["INFO", "stats"]).contains("expired_keys:51"));
}

#[test]
fn info_config_command_and_quit_satisfy_the_redis_tools() {
    let s = TestServer::start(None);
    s.cli1(&["MSET", "a", "1", "b", "2"]);
    s.cli1(&["SET", "c", "3", "EX", "100"]);
    let info = s.cli(&["INFO"]);
    for needle in [
        "# Server",
        "redis_version:",
        "bypass_libos:kernel",
        &format!("tcp_port:{}", s.addr.port()),
        "# Clients",
        "connected_clients:1",
        "# Memory",
        "# Stats",
        "total_connections_received:",
        "# Keyspace",
        "db0:keys=3,expires=1,avg_ttl=0",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle:?}:\n{info}");
    }
    let keyspace = s.cli(&["INFO", "keyspace"]);
    assert!(keyspace.starts_with("# Keyspace"), "{keyspace}");
    assert!(!keyspace.contains("# Server"), "{keyspace}");
    assert_eq!(s.cli(&["CONFIG", "GET", "save"]), "1) \"save\"\n2) \"\"\n");
    assert_eq!(
        s.cli(&["CONFIG", "GET", "appendonly"]),
        "1) \"appendonly\"\n2) \"no\"\n"
    );
    assert_eq!(s.cli1(&["CONFIG", "GET", "no-such-thing"]), "(empty array)");
    assert_eq!(s.cli(&["CONFIG", "GET", "app*"]).lines().count(), 4);
    assert_eq!(s.cli1(&["COMMAND", "DOCS"]), "(empty array)");
    assert_eq!(s.cli1(&["COMMAND", "COUNT"]), "(integer) 27");
    // QUIT replies OK and closes; what was sent after it is not executed.
    let mut c = s.connect();
    c.write_all(&[req(&[b"QUIT"]), req(&[b"SET", b"after", b"quit"])].concat())
        .unwrap();
    assert_eq!(common::read_to_close(&mut c), b"+OK\r\n");
    assert_eq!(s.cli1(&["EXISTS", "after"]), "(integer) 0");
    // Inline commands, as typed into telnet.
    let mut c = s.connect();
    roundtrip(
        &mut c,
        b"SET inline \"two words\"\r\nGET inline\r\n\r\nPING\n",
        b"+OK\r\n$9\r\ntwo words\r\n+PONG\r\n",
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = TestServer::start(None);
    let mut c = s.connect();
    let n = 5000;
    let mut burst = Vec::new();
    let mut want = Vec::new();
    for i in 0..n {
        let key = format!("key:{i}");
        let value = format!("value-{i}-{}", "x".repeat(i % 97));
        burst.extend(req(&[b"SET", key.as_bytes(), value.as_bytes()]));
        burst.extend(req(&[b"GET", key.as_bytes()]));
        burst.extend(req(&[b"INCR", b"counter"]));
        want.extend_from_slice(b"+OK\r\n");
        want.extend(format!("${}\r\n{value}\r\n", value.len()).bytes());
        want.extend(format!(":{}\r\n", i + 1).bytes());
    }
    // Written from another thread: the replies flow back while requests are still going out.
    let mut writer = c.try_clone().unwrap();
    let t = thread::spawn(move || {
        // Odd-sized pieces split requests at arbitrary points.
        for piece in burst.chunks(7919) {
            writer.write_all(piece).unwrap();
        }
    });
    let got = read_exact_len(&mut c, want.len());
    t.join().unwrap();
    assert!(got == want, "pipelined replies differ");
    assert_eq!(s.cli1(&["DBSIZE"]), format!("(integer) {}", n + 1));
}

#[test]
fn redis_cli_pipe_mode_loads_a_stream_of_requests() {
    let s = TestServer::start(None);
    let mut input = Vec::new();
    for i in 0..2000 {
        input.extend(req(&[
            b"SET",
            format!("p{i}").as_bytes(),
            format!("{}", i * 3).as_bytes(),
        ]));
    }
    let mut child = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &s.port(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("errors: 0, replies: 2000"), "{text}");
    assert_eq!(s.cli1(&["GET", "p1999"]), "\"5997\"");
    assert_eq!(s.cli1(&["DBSIZE"]), "(integer) 2000");
}

#[test]
fn many_clients_at_once_each_see_their_own_replies() {
    let s = TestServer::start(None);
    let addr = s.addr;
    let threads: Vec<_> = (0..32)
        .map(|t| {
            thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                for i in 0..100 {
                    let key = format!("c{t}:{i}");
                    roundtrip(
                        &mut c,
                        &req(&[b"SET", key.as_bytes(), key.as_bytes()]),
                        b"+OK\r\n",
                    );
                    let want = format!("${}\r\n{key}\r\n", key.len());
                    roundtrip(&mut c, &req(&[b"GET", key.as_bytes()]), want.as_bytes());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.cli1(&["DBSIZE"]), "(integer) 3200");
    let summary = s.stop();
    assert_eq!(summary.keys, 3200);
    assert!(summary.connections >= 33, "{summary:?}");
    assert!(summary.commands >= 6401, "{summary:?}");
}

#[test]
fn a_spinning_server_serves_many_idle_and_busy_clients() {
    let s = TestServer::start_spinning();
    // More connections than a spinning kernel libOS retries directly: the idle ones must still
    // be seen when they speak.
    let mut conns: Vec<_> = (0..12).map(|_| s.connect()).collect();
    for round in 0..20 {
        for (i, c) in conns.iter_mut().enumerate() {
            if (i + round) % 3 == 0 {
                let key = format!("r{round}c{i}");
                roundtrip(c, &req(&[b"SET", key.as_bytes(), b"v"]), b"+OK\r\n");
            }
        }
    }
    roundtrip(&mut conns[0], &req(&[b"DBSIZE"]), b":80\r\n");
}
