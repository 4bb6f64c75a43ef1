//! Helpers shared by this crate's tests and its peer program (`bypass-shm-peer`), which the
//! two-process tests start as the other side of a channel. Not part of the stable API.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::{Channel, ChannelConfig, ErrorKind};

/// Byte `j` of message `seq`: different for every message and every position, so a byte out of
/// place, a message delivered twice or a stale chunk shows up.
pub fn pattern_byte(seq: u64, j: usize) -> u8 {
    let x = seq
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((j as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    (x >> 56) as u8 ^ (j >> 8) as u8
}

pub fn pattern(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| pattern_byte(seq, j)).collect()
}

/// The index of the first byte that differs from the pattern, if any.
pub fn check_pattern(seq: u64, data: &[u8]) -> Option<usize> {
    data.iter()
        .enumerate()
        .position(|(j, &b)| b != pattern_byte(seq, j))
}

/// Writes `pattern(seq, len)` as the message: its first 8 bytes are replaced by `seq` (LE) when
/// `len >= 8`, so a receiver can tell which message it got.
pub fn numbered(seq: u64, len: usize) -> Vec<u8> {
    let mut v = pattern(seq, len);
    if len >= 8 {
        v[..8].copy_from_slice(&seq.to_le_bytes());
    }
    v
}

/// Checks a message made by [`numbered`]; returns its sequence number.
pub fn check_numbered(data: &[u8]) -> Result<u64, String> {
    if data.len() < 8 {
        return Err(format!(
            "message of {} B is too short to be numbered",
            data.len()
        ));
    }
    let seq = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    for (j, &b) in data.iter().enumerate().skip(8) {
        if b != pattern_byte(seq, j) {
            return Err(format!(
                "message {seq} of {} B: byte {j} is {b:#04x}, want {:#04x}",
                data.len(),
                pattern_byte(seq, j)
            ));
        }
    }
    Ok(seq)
}

/// A deterministic xorshift generator (tests must replay from a seed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Writes random garbage into the region of the channel through `file` (the shared-memory
/// object opened as a file): `writes` writes of 1 to 16 bytes, half of them into the header
/// and rings (`control_len` bytes), half anywhere.
pub fn scribble(file: &std::fs::File, rng: &mut Rng, control_len: u64, writes: usize) {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return;
    }
    for _ in 0..writes {
        let span = if rng.below(2) == 0 {
            control_len.min(len)
        } else {
            len
        };
        let at = rng.below(span);
        let n = (1 + rng.below(16)).min(len - at) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        let _ = file.write_at(&bytes, at);
    }
}

/// The configuration the two-process tests use: 4 KiB chunks (a 1 MiB message is 256 of
/// them), 1024 of them per side, 512 ring slots.
pub fn test_config() -> ChannelConfig {
    ChannelConfig {
        ring_slots: 512,
        chunk_size: 4096,
        chunks: 1024,
        headroom: 0,
    }
}

/// Entry point of the peer program: `bypass-shm-peer ROLE NAME [ARGS]`. Returns the exit code.
///
/// Roles:
/// - `echo NAME`: opens NAME and sends every message back until the creator closes.
/// - `sink NAME COUNT`: receives COUNT [`numbered`] messages, checks each byte and the order,
///   answers with the count as 8 bytes, then waits for the creator to close.
/// - `stream NAME CHUNK`: sends [`numbered`] messages of 8 B to 3 chunks, forever.
/// - `create NAME`: creates NAME, prints `ready`, and sleeps (to be killed).
/// - `hostile NAME SEED`: opens NAME, sends a few good messages, then writes garbage into the
///   region for up to 2 s.
pub fn peer_main(args: &[String]) -> i32 {
    let fail = |msg: String| {
        eprintln!("bypass-shm-peer: {msg}");
        2
    };
    let (Some(role), Some(name)) = (args.first(), args.get(1)) else {
        return fail("usage: bypass-shm-peer ROLE NAME [ARGS]".into());
    };
    let arg = |i: usize| args.get(i).and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
    match role.as_str() {
        "create" => {
            let _ch = match Channel::create(name, &test_config()) {
                Ok(ch) => ch,
                Err(e) => return fail(e.to_string()),
            };
            println!("ready");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "hostile" => return hostile(name, arg(2)),
        _ => {}
    }
    let mut ch = match Channel::open(name, Duration::from_secs(10)) {
        Ok(ch) => ch,
        Err(e) => return fail(e.to_string()),
    };
    // Tests share two cores with other tests: sleep rather than spin when idle.
    ch.set_wait_mode(crate::WaitMode::Block { spins: 2000 });
    match role.as_str() {
        "echo" => loop {
            let msg = match ch.recv(None) {
                Ok(m) => m,
                Err(e) if e.kind() == ErrorKind::PeerClosed => return 0,
                Err(e) => return fail(e.to_string()),
            };
            if let Err(e) = ch.send(msg, None) {
                return fail(e.to_string());
            }
        },
        "sink" => {
            let count = arg(2);
            for want in 0..count {
                let msg = match ch.recv(Some(Duration::from_secs(30))) {
                    Ok(m) => m,
                    Err(e) => return fail(format!("after {want} messages: {e}")),
                };
                let mut bytes = [0u8; 16];
                if msg.len() != 16 {
                    return fail(format!("message {want} has {} B, want 16", msg.len()));
                }
                msg.copy_to(&mut bytes);
                match check_numbered(&bytes) {
                    Ok(seq) if seq == want => {}
                    Ok(seq) => return fail(format!("got message {seq}, want {want}")),
                    Err(e) => return fail(e),
                }
            }
            let Some(reply) = ch.alloc_message(&count.to_le_bytes()) else {
                return fail("no buffer for the reply".into());
            };
            if let Err(e) = ch.send(reply, Some(Duration::from_secs(10))) {
                return fail(e.to_string());
            }
            match ch.recv(Some(Duration::from_secs(30))) {
                Err(e) if e.kind() == ErrorKind::PeerClosed => 0,
                other => fail(format!("expected the creator to close, got {other:?}")),
            }
        }
        "stream" => {
            let chunk = arg(2).max(8) as usize;
            for seq in 0.. {
                let len = 8 + (seq as usize * 7919) % (3 * chunk);
                let Some(msg) = ch.alloc_message(&numbered(seq, len)) else {
                    std::thread::yield_now();
                    continue;
                };
                if let Err(e) = ch.send(msg, None) {
                    return fail(e.to_string());
                }
            }
            0
        }
        other => fail(format!("unknown role {other:?}")),
    }
}

fn hostile(name: &str, seed: u64) -> i32 {
    let path = match crate::object_path(name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bypass-shm-peer: {e}");
            return 2;
        }
    };
    // Open the object as a file before attaching (attaching removes the name).
    let deadline = Instant::now() + Duration::from_secs(10);
    let file = loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => break f,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => {
                eprintln!("bypass-shm-peer: opening {}: {e}", path.display());
                return 2;
            }
        }
    };
    let mut ch = match Channel::open(name, Duration::from_secs(10)) {
        Ok(ch) => ch,
        Err(e) => {
            eprintln!("bypass-shm-peer: {e}");
            return 2;
        }
    };
    for seq in 0..100 {
        if let Some(msg) = ch.alloc_message(&numbered(seq, 64)) {
            let _ = ch.try_send(msg);
        }
    }
    let mut rng = Rng::new(seed);
    let c = test_config();
    let geometry = c.geometry();
    let control = geometry.layout().half[0] as u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        scribble(&file, &mut rng, control, 64);
        // Keep the channel moving too, so garbage meets live traffic.
        if let Some(msg) = ch.alloc_message(&numbered(rng.next_u64(), 64)) {
            let _ = ch.try_send(msg);
        }
        let _ = ch.try_recv();
        std::thread::sleep(Duration::from_micros(100));
    }
    0
}
