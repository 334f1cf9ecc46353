//! Demand estimation (SNF §4.1, Pseudocode 1 lines 40–49).
//!
//! The first flowlet of a flow is assumed to need the global average rate of all flowlets
//! measured so far. A later flowlet gets an exponentially weighted moving average over the
//! previous flowlet's *measured* rate and the previous estimate:
//! `est(n) = δ·measured(n−1) + (1−δ)·est(n−1)`.

use nflet_nfs::time::Nanos;

use crate::config::Metric;
use crate::flowlet::FlowletStats;
use crate::units::Rate;

/// The shortest span a flowlet's rate is measured over, so that packets with one timestamp do
/// not give an infinite rate.
const MIN_SPAN: Nanos = Nanos(1_000);

/// The measured rate of a finished flowlet. With `n ≥ 2` packets over `last − first`, the
/// flowlet's span counts one more mean inter-packet gap (`span·n/(n−1)`) so that its amount
/// and its duration cover the same packets; a one-packet flowlet had no packet for more than
/// the timeout after it, so its span is taken as `timeout`.
pub fn measured_rate(f: &FlowletStats, metric: Metric, timeout: Nanos) -> Rate {
    let span = if f.packets >= 2 {
        let raw = f.last.saturating_sub(f.start).0 as f64;
        raw * f.packets as f64 / (f.packets - 1) as f64
    } else {
        timeout.0 as f64
    };
    let span = span.max(MIN_SPAN.0 as f64);
    Rate(f.amount(metric) as f64 * 1e9 / span)
}

/// `δ·measured + (1−δ)·previous`.
#[inline]
pub fn ewma(delta: f64, measured: Rate, previous: Rate) -> Rate {
    Rate(delta * measured.0 + (1.0 - delta) * previous.0)
}

/// The running average of every measured flowlet, the estimate for first flowlets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalAverage {
    mean: f64,
    count: u64,
    initial: Rate,
}

impl GlobalAverage {
    /// Starts at `initial` until a flowlet has been measured.
    pub fn new(initial: Rate) -> GlobalAverage {
        GlobalAverage { mean: 0.0, count: 0, initial }
    }

    pub fn record(&mut self, measured: Rate) {
        self.count = self.count.saturating_add(1);
        self.mean += (measured.0 - self.mean) / self.count as f64;
    }

    pub fn get(&self) -> Rate {
        if self.count == 0 {
            self.initial
        } else {
            Rate(self.mean)
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::ids::Bytes;

    fn close(a: Rate, b: f64) -> bool {
        (a.0 - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn ewma_follows_the_paper() {
        // (δ, measured, previous, expected)
        let cases = [
            (0.5, 100.0, 0.0, 50.0),
            (0.5, 100.0, 100.0, 100.0),
            (0.25, 200.0, 100.0, 125.0),
            (1.0, 7.0, 1e9, 7.0), // δ = 1: the last flowlet only
            (0.0, 7.0, 3.0, 3.0), // δ = 0: never moves
        ];
        for (d, m, p, want) in cases {
            assert!(close(ewma(d, Rate(m), Rate(p)), want), "δ {d} m {m} p {p}");
        }
        // A spike decays geometrically once the flow calms down.
        let mut est = Rate(100.0);
        for (m, want) in [(1000.0, 550.0), (100.0, 325.0), (100.0, 212.5)] {
            est = ewma(0.5, Rate(m), est);
            assert!(close(est, want), "{est:?}");
        }
    }

    #[test]
    fn measured_rate_of_flowlets() {
        const T: Nanos = Nanos(500_000);
        // (start ns, last ns, bytes, packets, metric, expected per second)
        let cases = [
            // 10 packets of 1500 B, 1 µs apart: 9 µs span + one gap = 10 µs → 1.5 GB/s.
            (0, 9_000, 15_000, 10, Metric::Bytes, 1.5e9),
            (0, 9_000, 15_000, 10, Metric::Packets, 1.0e6),
            // One packet: over T.
            (5, 5, 1_000, 1, Metric::Bytes, 2.0e6),
            // Same timestamp: floored at 1 µs.
            (5, 5, 3_000, 2, Metric::Bytes, 3.0e9),
        ];
        for (s, l, b, n, metric, want) in cases {
            let f = FlowletStats { start: Nanos(s), last: Nanos(l), bytes: Bytes(b), packets: n };
            let r = measured_rate(&f, metric, T);
            assert!(close(r, want), "{s}..{l} {b} B {n} pkts {metric:?}: {r:?}");
        }
    }

    #[test]
    fn global_average_starts_at_initial_then_averages() {
        let mut g = GlobalAverage::new(Rate(42.0));
        assert_eq!((g.get(), g.count()), (Rate(42.0), 0));
        for m in [10.0, 20.0, 60.0] {
            g.record(Rate(m));
        }
        assert!(close(g.get(), 30.0));
        assert_eq!(g.count(), 3);
    }
}
