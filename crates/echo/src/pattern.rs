//! The bytes the client sends: a different, recognisable sequence for every message of every
//! connection, so a byte echoed on the wrong connection, twice, or out of order is caught.

/// Bytes cycle with this period (a prime, so it does not line up with power-of-two sizes).
const PERIOD: usize = 251;

/// Every message is a window of one precomputed ramp.
pub(crate) struct Pattern {
    ramp: Vec<u8>,
    size: usize,
}

impl Pattern {
    pub(crate) fn new(size: usize) -> Pattern {
        let ramp = (0..size + PERIOD).map(|i| (i % PERIOD) as u8).collect();
        Pattern { ramp, size }
    }

    /// The bytes of message `seq` of connection `conn`.
    pub(crate) fn message(&self, conn: usize, seq: u64) -> &[u8] {
        let start = ((seq % PERIOD as u64) as usize * 7 + conn * 13 + 1) % PERIOD;
        let bytes = &self.ramp[start..start + self.size];
        debug_assert_eq!(bytes.len(), self.size);
        bytes
    }
}

/// The offset of the first byte where `got` differs from `expected` (same length).
pub(crate) fn first_difference(expected: &[u8], got: &[u8]) -> Option<usize> {
    debug_assert_eq!(expected.len(), got.len());
    if expected == got {
        return None;
    }
    expected.iter().zip(got).position(|(a, b)| a != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_messages_and_connections_differ_in_every_first_byte() {
        let p = Pattern::new(64);
        for conn in 0..64 {
            for seq in 0..1000u64 {
                let a = p.message(conn, seq);
                let b = p.message(conn, seq + 1);
                assert_eq!(a.len(), 64);
                assert_ne!(a[0], b[0], "conn {conn} seq {seq}");
                assert_ne!(a[0], p.message(conn + 1, seq)[0], "conn {conn} seq {seq}");
            }
        }
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"abc", b"abc"), None);
    }
}
