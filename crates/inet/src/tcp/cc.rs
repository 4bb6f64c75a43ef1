//! Congestion control behind one trait: NewReno (RFC 5681 / RFC 6582) and CUBIC (RFC 9438).
//!
//! The connection owns the loss-recovery mechanics (which segment to retransmit, window
//! inflation during NewReno recovery, RFC 6582); an algorithm decides how the congestion window
//! grows on ACKs and how far it falls on a congestion event or a timeout. All windows are in
//! bytes.

use std::time::Duration;

use bypass_runtime::Instant;

/// Which algorithm a connection uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CongestionKind {
    /// CUBIC (RFC 9438), the default.
    #[default]
    Cubic,
    /// NewReno (RFC 5681 window growth, RFC 6582 recovery).
    NewReno,
}

impl CongestionKind {
    pub(crate) fn build(self, mss: usize, initial_segments: usize) -> Box<dyn CongestionControl> {
        let initial = initial_window(mss, initial_segments);
        match self {
            CongestionKind::Cubic => Box::new(Cubic::new(initial)),
            CongestionKind::NewReno => Box::new(NewReno::new(initial)),
        }
    }
}

/// RFC 6928 §2: IW = min(10 * MSS, max(2 * MSS, 14600)) when asked for 10 segments; other
/// counts scale the same way.
fn initial_window(mss: usize, segments: usize) -> usize {
    (segments * mss)
        .min((2 * mss).max(1460 * segments))
        .max(mss)
}

/// A congestion-control algorithm.
pub trait CongestionControl {
    fn name(&self) -> &'static str;
    /// The congestion window, bytes.
    fn cwnd(&self) -> usize;
    /// Sets the window (loss recovery inflates and deflates it, RFC 6582 §3.2).
    fn set_cwnd(&mut self, cwnd: usize);
    /// The slow-start threshold, bytes.
    fn ssthresh(&self) -> usize;
    /// `acked` bytes of new data were acknowledged outside loss recovery.
    fn on_ack(&mut self, acked: usize, mss: usize, now: Instant, srtt: Option<Duration>);
    /// A loss was detected by duplicate ACKs: set the slow-start threshold (the connection
    /// then sets the recovery window from it). `flight` is the data outstanding.
    fn on_congestion(&mut self, flight: usize, mss: usize, now: Instant);
    /// The retransmission timer expired (RFC 5681 §3.1, equation 4; window to one segment).
    fn on_timeout(&mut self, flight: usize, mss: usize, now: Instant);
    /// The connection sent nothing for longer than an RTO: restart from the initial window
    /// (RFC 5681 §4.1).
    fn on_idle_restart(&mut self, mss: usize, initial_segments: usize);
}

/// RFC 5681: slow start, then one segment per window of ACKs.
#[derive(Debug)]
pub struct NewReno {
    cwnd: usize,
    ssthresh: usize,
    /// Bytes acknowledged in congestion avoidance since the window last grew.
    acked_acc: usize,
}

impl NewReno {
    pub fn new(initial: usize) -> NewReno {
        NewReno {
            cwnd: initial,
            ssthresh: usize::MAX,
            acked_acc: 0,
        }
    }
}

impl CongestionControl for NewReno {
    fn name(&self) -> &'static str {
        "newreno"
    }
    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn set_cwnd(&mut self, cwnd: usize) {
        self.cwnd = cwnd;
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn on_ack(&mut self, acked: usize, mss: usize, _now: Instant, _srtt: Option<Duration>) {
        if self.cwnd < self.ssthresh {
            // RFC 5681 §3.1, equation 2: cwnd += min(N, SMSS).
            self.cwnd += acked.min(mss);
        } else {
            // RFC 5681 §3.1, equation 3, counted in bytes (RFC 3465 §2.1).
            self.acked_acc += acked;
            if self.acked_acc >= self.cwnd {
                self.acked_acc -= self.cwnd;
                self.cwnd += mss;
            }
        }
    }
    fn on_congestion(&mut self, flight: usize, mss: usize, _now: Instant) {
        // RFC 5681 §3.2, equation 4.
        self.ssthresh = (flight / 2).max(2 * mss);
        self.acked_acc = 0;
    }
    fn on_timeout(&mut self, flight: usize, mss: usize, _now: Instant) {
        self.ssthresh = (flight / 2).max(2 * mss);
        self.cwnd = mss;
        self.acked_acc = 0;
    }
    fn on_idle_restart(&mut self, mss: usize, initial_segments: usize) {
        self.cwnd = self.cwnd.min(initial_window(mss, initial_segments));
    }
}

/// RFC 9438 CUBIC.
#[derive(Debug)]
pub struct Cubic {
    cwnd: usize,
    ssthresh: usize,
    /// W_max, segments: the window before the last reduction.
    w_max: f64,
    /// K, seconds: time to grow back to W_max.
    k: f64,
    /// Start of the current congestion-avoidance epoch.
    epoch_start: Option<Instant>,
    /// W_est, segments: the Reno-friendly estimate (RFC 9438 §4.3).
    w_est: f64,
    /// cwnd at the start of the epoch, segments.
    cwnd_epoch: f64,
}

/// RFC 9438 §4.1 / §5: C = 0.4, beta_cubic = 0.7.
const C: f64 = 0.4;
const BETA: f64 = 0.7;

impl Cubic {
    pub fn new(initial: usize) -> Cubic {
        Cubic {
            cwnd: initial,
            ssthresh: usize::MAX,
            w_max: 0.0,
            k: 0.0,
            epoch_start: None,
            w_est: 0.0,
            cwnd_epoch: 0.0,
        }
    }

    fn reduce(&mut self, mss: usize) {
        let cwnd = self.cwnd as f64 / mss as f64;
        // RFC 9438 §4.7 fast convergence.
        self.w_max = if cwnd < self.w_max {
            cwnd * (1.0 + BETA) / 2.0
        } else {
            cwnd
        };
        // RFC 9438 §4.6: ssthresh = cwnd * beta_cubic, at least 2 segments.
        // (In integers: beta_cubic = 7/10, so no rounding of the float product.)
        self.ssthresh = (self.cwnd * 7 / 10).max(2 * mss);
        self.epoch_start = None;
    }
}

impl CongestionControl for Cubic {
    fn name(&self) -> &'static str {
        "cubic"
    }
    fn cwnd(&self) -> usize {
        self.cwnd
    }
    fn set_cwnd(&mut self, cwnd: usize) {
        self.cwnd = cwnd;
    }
    fn ssthresh(&self) -> usize {
        self.ssthresh
    }
    fn on_ack(&mut self, acked: usize, mss: usize, now: Instant, srtt: Option<Duration>) {
        if self.cwnd < self.ssthresh {
            // RFC 9438 §4.10: slow start as in RFC 5681.
            self.cwnd += acked.min(mss);
            return;
        }
        let m = mss as f64;
        let cwnd = self.cwnd as f64 / m;
        let start = *self.epoch_start.get_or_insert_with(|| {
            // RFC 9438 §4.2: a new epoch; K from W_max and the window now.
            self.k = if self.w_max > cwnd {
                ((self.w_max - cwnd) / C).cbrt()
            } else {
                0.0
            };
            if self.w_max < cwnd {
                self.w_max = cwnd;
            }
            self.w_est = cwnd;
            self.cwnd_epoch = cwnd;
            now
        });
        let rtt = srtt.unwrap_or(Duration::from_millis(100)).as_secs_f64();
        let t = (now - start).as_secs_f64();
        // RFC 9438 §4.2, equation 1, evaluated one RTT ahead.
        let d = t + rtt - self.k;
        let target = (C * d * d * d + self.w_max).clamp(cwnd, 1.5 * cwnd);
        // RFC 9438 §4.3: the Reno-friendly region, alpha = 3(1-beta)/(1+beta).
        let alpha = 3.0 * (1.0 - BETA) / (1.0 + BETA);
        self.w_est += alpha * (acked as f64 / m) / cwnd;
        let next = if self.w_est > target {
            // §4.3: follow W_est.
            cwnd + (self.w_est - cwnd).max(0.0) * (acked as f64 / m) / cwnd
        } else {
            // §4.4: grow by (target - cwnd) / cwnd per segment acknowledged.
            cwnd + (target - cwnd) * (acked as f64 / m) / cwnd
        };
        self.cwnd = ((next * m) as usize).max(self.cwnd);
    }
    fn on_congestion(&mut self, _flight: usize, mss: usize, _now: Instant) {
        self.reduce(mss);
    }
    fn on_timeout(&mut self, _flight: usize, mss: usize, _now: Instant) {
        self.reduce(mss);
        self.cwnd = mss;
    }
    fn on_idle_restart(&mut self, mss: usize, initial_segments: usize) {
        self.cwnd = self.cwnd.min(initial_window(mss, initial_segments));
        self.epoch_start = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_window_follows_rfc_6928() {
        assert_eq!(initial_window(1460, 10), 14600);
        assert_eq!(initial_window(9000, 10), 18000);
        assert_eq!(initial_window(536, 10), 5360);
    }

    #[test]
    fn newreno_slow_starts_then_grows_one_segment_per_window() {
        let mss = 1000;
        let mut r = NewReno::new(2000);
        r.on_ack(1000, mss, Instant::ZERO, None);
        r.on_ack(5000, mss, Instant::ZERO, None);
        assert_eq!(r.cwnd(), 4000, "slow start: at most one MSS per ACK");
        r.on_congestion(8000, mss, Instant::ZERO);
        assert_eq!(r.ssthresh(), 4000);
        r.set_cwnd(4000);
        r.on_ack(3000, mss, Instant::ZERO, None);
        assert_eq!(r.cwnd(), 4000);
        r.on_ack(1000, mss, Instant::ZERO, None);
        assert_eq!(r.cwnd(), 5000);
        r.on_timeout(5000, mss, Instant::ZERO);
        assert_eq!((r.cwnd(), r.ssthresh()), (1000, 2500));
    }

    #[test]
    fn cubic_reduces_by_beta_and_regrows_towards_w_max() {
        let mss = 1000;
        let mut c = Cubic::new(100_000);
        c.on_congestion(100_000, mss, Instant::ZERO);
        assert_eq!(c.ssthresh(), 70_000);
        c.set_cwnd(70_000);
        let mut now = Instant::ZERO;
        for _ in 0..2000 {
            now += Duration::from_millis(1);
            c.on_ack(1000, mss, now, Some(Duration::from_millis(10)));
        }
        // K = cbrt(30 / 0.4) = 4.2 s: after 2 s the window is between 70 and 100 segments.
        assert!(c.cwnd() > 70_000 && c.cwnd() < 100_000, "cwnd {}", c.cwnd());
        for _ in 0..8000 {
            now += Duration::from_millis(1);
            c.on_ack(1000, mss, now, Some(Duration::from_millis(10)));
        }
        assert!(
            c.cwnd() > 100_000,
            "past K the window probes beyond W_max: {}",
            c.cwnd()
        );
    }
}
