//! Demand estimation (SNF §4.1, Pseudocode 1 lines 40–49).
//!
//! The first flowlet of a flow is assumed to need the average load of all flowlets measured so
//! far ([`GlobalAverage`]). A later flowlet gets an exponentially weighted moving average over the
//! previous flowlet's *measured* rate and the previous estimate:
//! `est(n) = δ·measured(n−1) + (1−δ)·est(n−1)`.

use nflet_nfs::time::Nanos;

use crate::config::Metric;
use crate::flowlet::FlowletStats;
use crate::units::Rate;

/// The shortest span a flowlet's rate is measured over, so that packets with one timestamp do
/// not give an infinite rate.
const MIN_SPAN: Nanos = Nanos(1_000);

/// The measured rate of a flowlet that ended at `end`: its amount over the time it was assigned
/// to its worker, from its first packet until it ended — `T` after its last packet when it ended
/// idle, or the packet that split it (size threshold, reallocation).
///
/// SNF does not define the measured rate further. This definition makes a worker's summed
/// demand estimates integrate to what it is actually sent (each flowlet is counted on its worker
/// for exactly that time, see [`crate::scaling`]), while a stream split by the size threshold is
/// still measured at its real rate (its flowlets end at the split, with no idle tail), which is
/// what the EWMA needs to catch an adversarial flowlet.
pub fn measured_rate(f: &FlowletStats, end: Nanos, metric: Metric) -> Rate {
    let span = end.saturating_sub(f.start).max(MIN_SPAN);
    Rate(f.amount(metric) as f64 * 1e9 / span.0 as f64)
}

/// `δ·measured + (1−δ)·previous`.
#[inline]
pub fn ewma(delta: f64, measured: Rate, previous: Rate) -> Rate {
    Rate(delta * measured.0 + (1.0 - delta) * previous.0)
}

/// The average load of all flowlets measured so far, the estimate for first flowlets.
///
/// It is the ratio of sums — everything the measured flowlets carried over the total time they
/// were assigned — not the mean of their rates: that is the load an average active flowlet puts
/// on its worker, so the estimates of a worker's active flowlets add up to what it is sent. A
/// plain mean of rates would be dominated by the many short, fast flowlets the size threshold
/// cuts large flows into, and would overestimate every new flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalAverage {
    amount: f64,
    span_ns: f64,
    count: u64,
    initial: Rate,
}

impl GlobalAverage {
    /// Starts at `initial` until a flowlet has been measured.
    pub fn new(initial: Rate) -> GlobalAverage {
        GlobalAverage { amount: 0.0, span_ns: 0.0, count: 0, initial }
    }

    /// A flowlet that carried `amount` (in the metric) over `span`.
    pub fn record(&mut self, amount: u64, span: Nanos) {
        self.count = self.count.saturating_add(1);
        self.amount += amount as f64;
        self.span_ns += span.max(MIN_SPAN).0 as f64;
    }

    pub fn get(&self) -> Rate {
        if self.count == 0 || self.span_ns <= 0.0 {
            self.initial
        } else {
            Rate(self.amount * 1e9 / self.span_ns)
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
        // (start ns, last ns, end ns, bytes, packets, metric, expected per second)
        let cases = [
            // 10 packets of 1500 B over 9 µs, ended idle T = 500 µs later: over 509 µs.
            (0, 9_000, 509_000, 15_000, 10, Metric::Bytes, 15_000.0 / 509e-6),
            (0, 9_000, 509_000, 15_000, 10, Metric::Packets, 10.0 / 509e-6),
            // The same flowlet split by the next packet at 10 µs: its real rate.
            (0, 9_000, 10_000, 15_000, 10, Metric::Bytes, 1.5e9),
            // Split at its own timestamp: floored at 1 µs.
            (5, 5, 5, 3_000, 2, Metric::Bytes, 3.0e9),
        ];
        for (s, l, e, b, n, metric, want) in cases {
            let f = FlowletStats { start: Nanos(s), last: Nanos(l), bytes: Bytes(b), packets: n };
            let r = measured_rate(&f, Nanos(e), metric);
            assert!(close(r, want), "{s}..{l} ended {e}, {b} B {n} pkts {metric:?}: {r:?}");
        }
    }

    #[test]
    fn global_average_starts_at_initial_then_averages() {
        let mut g = GlobalAverage::new(Rate(42.0));
        assert_eq!((g.get(), g.count()), (Rate(42.0), 0));
        // A fast short flowlet (1 MB/s over 1 ms) and a slow long one (1 KB/s over 1 s): the
        // average is per unit of flowlet time, 2000 B / 1.001 s, not the mean of the rates.
        g.record(1_000, Nanos::from_millis(1));
        g.record(1_000, Nanos::from_secs(1));
        assert!(close(g.get(), 2_000.0 / 1.001), "{:?}", g.get());
        assert_eq!(g.count(), 2);
        // Zero-length spans are floored like measured rates.
        let mut z = GlobalAverage::new(Rate(1.0));
        z.record(5, Nanos::ZERO);
        assert!(close(z.get(), 5.0e6));
    }
}
