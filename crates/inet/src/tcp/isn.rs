//! Initial sequence numbers (RFC 6528) and the keyed hash they come from.

use bypass_runtime::Instant;
use bypass_wire::{Ipv4Address, TcpSeqNumber};

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of `data` under `key`: a keyed hash an
/// off-path attacker cannot predict.
pub fn siphash24(key: &[u8; 16], data: &[u8]) -> u64 {
    let k0 = u64::from_le_bytes(key[0..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(key[8..16].try_into().expect("8 bytes"));
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    let m = u64::from_le_bytes(last) | ((data.len() as u64 & 0xff) << 56);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

fn tuple_bytes(local: (Ipv4Address, u16), remote: (Ipv4Address, u16), salt: u8) -> [u8; 13] {
    let mut b = [0u8; 13];
    b[0..4].copy_from_slice(&local.0 .0);
    b[4..6].copy_from_slice(&local.1.to_be_bytes());
    b[6..10].copy_from_slice(&remote.0 .0);
    b[10..12].copy_from_slice(&remote.1.to_be_bytes());
    b[12] = salt;
    b
}

/// RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a timer
/// ticking every 4 microseconds.
pub fn initial_sequence_number(
    key: &[u8; 16],
    local: (Ipv4Address, u16),
    remote: (Ipv4Address, u16),
    now: Instant,
) -> TcpSeqNumber {
    let m = (now.as_nanos() / 4_000) as u32;
    let f = siphash24(key, &tuple_bytes(local, remote, 0)) as u32;
    TcpSeqNumber(m.wrapping_add(f))
}

/// A per-connection offset for the Timestamps clock (RFC 7323 §7.1 recommends randomising it
/// per connection, computed like the ISN).
pub fn timestamp_offset(
    key: &[u8; 16],
    local: (Ipv4Address, u16),
    remote: (Ipv4Address, u16),
) -> u32 {
    siphash24(key, &tuple_bytes(local, remote, 1)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vector() {
        // Reference: key 00..0f, message 00..0e (15 bytes) -> a129ca6149be45e5.
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash24(&key, &msg), 0xa129_ca61_49be_45e5);
        assert_eq!(siphash24(&key, &[]), 0x726f_db47_dd0e_0e31);
    }

    #[test]
    fn isns_differ_per_tuple_and_advance_with_time() {
        let key = [7; 16];
        let a = (Ipv4Address::new(10, 0, 0, 1), 1000);
        let b = (Ipv4Address::new(10, 0, 0, 2), 80);
        let c = (Ipv4Address::new(10, 0, 0, 2), 81);
        let t0 = Instant::ZERO;
        assert_ne!(
            initial_sequence_number(&key, a, b, t0),
            initial_sequence_number(&key, a, c, t0)
        );
        let later = Instant::from_nanos(4_000 * 1000);
        assert_eq!(
            initial_sequence_number(&key, a, b, later).0,
            initial_sequence_number(&key, a, b, t0).0.wrapping_add(1000)
        );
    }
}
