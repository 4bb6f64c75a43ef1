//! The retransmission timer (RFC 6298).

use std::time::Duration;

/// Smoothed round-trip time and the retransmission timeout derived from it. Kept in
/// nanoseconds (the arithmetic runs on every acknowledgment).
#[derive(Clone, Debug)]
pub struct RttEstimator {
    /// SRTT: smoothed round-trip time, ns.
    srtt: u64,
    /// RTTVAR: round-trip time variation, ns.
    rttvar: u64,
    /// RTO before backoff, ns.
    rto: u64,
    has_sample: bool,
    min_rto: u64,
    max_rto: u64,
}

/// Clock granularity G of RFC 6298 §2 (our clock has nanoseconds; 1 ms keeps the RTO sane).
const GRANULARITY: u64 = 1_000_000;

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RttEstimator {
    /// RFC 6298 §2.1: until a measurement is made, RTO = the initial RTO.
    pub fn new(initial_rto: Duration, min_rto: Duration, max_rto: Duration) -> RttEstimator {
        let (min_rto, max_rto) = (ns(min_rto), ns(max_rto).max(ns(min_rto)));
        RttEstimator {
            srtt: 0,
            rttvar: 0,
            rto: ns(initial_rto).clamp(min_rto, max_rto),
            has_sample: false,
            min_rto,
            max_rto,
        }
    }

    /// Takes a round-trip measurement `r`.
    pub fn sample(&mut self, r: Duration) {
        let r = ns(r).min(self.max_rto);
        if !self.has_sample {
            // RFC 6298 §2.2: SRTT <- R, RTTVAR <- R/2.
            self.srtt = r;
            self.rttvar = r / 2;
            self.has_sample = true;
        } else {
            // RFC 6298 §2.3, alpha = 1/8, beta = 1/4.
            let diff = self.srtt.abs_diff(r);
            self.rttvar = (self.rttvar * 3 + diff) / 4;
            self.srtt = (self.srtt * 7 + r) / 8;
        }
        // RFC 6298 §2.3 and §2.4: RTO = SRTT + max(G, 4 * RTTVAR), at least the minimum
        // (1 s in the RFC; configurable here), at most the maximum (§2.5).
        let rto = self.srtt + GRANULARITY.max(self.rttvar * 4);
        self.rto = rto.clamp(self.min_rto, self.max_rto);
    }

    /// The timeout after `backoffs` consecutive expiries (RFC 6298 §5.5: doubled each time).
    pub fn rto(&self, backoffs: u32) -> Duration {
        let rto = self
            .rto
            .saturating_mul(1 << backoffs.min(30))
            .min(self.max_rto);
        Duration::from_nanos(rto)
    }

    pub fn srtt(&self) -> Option<Duration> {
        self.has_sample.then_some(Duration::from_nanos(self.srtt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc_6298_and_backs_off_to_the_maximum() {
        let ms = Duration::from_millis;
        let mut e = RttEstimator::new(ms(1000), ms(200), ms(60_000));
        assert_eq!(e.rto(0), ms(1000));
        e.sample(ms(100));
        // SRTT 100, RTTVAR 50: RTO 300.
        assert_eq!(e.srtt(), Some(ms(100)));
        assert_eq!(e.rto(0), ms(300));
        e.sample(ms(100));
        // RTTVAR 37.5, SRTT 100: 250.
        assert_eq!(e.rto(0), ms(250));
        assert_eq!(e.rto(1), ms(500));
        assert_eq!(e.rto(30), ms(60_000));
        e.sample(ms(1));
        e.sample(ms(1));
        e.sample(ms(1));
        e.sample(ms(1));
        assert!(e.rto(0) >= ms(200), "the minimum holds");
    }
}
