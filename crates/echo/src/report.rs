//! What a load run measured: throughput and latency percentiles, as a table and as JSON.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Protocol;

/// Latency summary in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// Summarises a histogram of nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            min: us(h.min()),
            mean: h.mean() / 1_000.0,
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// The result of [`crate::run_load`].
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The libOS the client ran on.
    pub libos: String,
    pub protocol: Protocol,
    /// `closed` (send, wait for the echo, repeat) or `open` (sends on a schedule).
    pub mode: &'static str,
    pub connections: usize,
    /// Bytes per message.
    pub message_size: usize,
    /// Open loop: the rate asked for, messages per second over all connections.
    pub target_rate: Option<f64>,
    /// Messages echoed and checked in the measured phase (warm-up excluded).
    pub messages: u64,
    /// Payload bytes echoed (one direction).
    pub bytes: u64,
    /// Seconds from the start of the measured phase to its last echo.
    pub elapsed_s: f64,
    pub msgs_per_s: f64,
    /// Payload megabytes (10^6 B) per second, one direction.
    pub mb_per_s: f64,
    /// Round-trip latency: closed loop from the send, open loop from the scheduled send.
    pub latency_us: Latency,
    /// Every latency sample, in nanoseconds, for other quantiles or merging.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

impl Report {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// The column headings of [`Report::table_row`].
    pub fn table_header() -> String {
        format!(
            "{:<8} {:<5} {:>5} {:>8} {:<6} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "libos",
            "proto",
            "conns",
            "size B",
            "loop",
            "messages",
            "msgs/s",
            "MB/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs"
        )
    }

    /// One line of a table of reports.
    pub fn table_row(&self) -> String {
        let l = &self.latency_us;
        format!(
            "{:<8} {:<5} {:>5} {:>8} {:<6} {:>9} {:>10.0} {:>8.2} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
            self.libos,
            self.protocol.as_str(),
            self.connections,
            self.message_size,
            self.mode,
            self.messages,
            self.msgs_per_s,
            self.mb_per_s,
            l.p50,
            l.p99,
            l.p999,
            l.max
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", Report::table_header())?;
        write!(f, "{}", self.table_row())
    }
}
