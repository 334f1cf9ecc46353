//! A worker's load: what the director drained to it, in fixed buckets over a sliding window.
//!
//! SNF §4.2 measures a compute unit's load as "the rate at which packets are drained" to it.
//! [`LoadWindow`] keeps one counter per bucket (default 500 µs) in a ring covering the window
//! (default 100 ms); recording or reading at time `now` first zeroes the buckets that fell out
//! of the window, so the rate is always the sum of the last `window` divided by `window`.
//! Memory is fixed at construction; every operation is O(1) amortised (a jump forward by more
//! than a window clears the ring once).

use nflet_nfs::time::Nanos;

use crate::units::Rate;

/// Drained amounts (bytes or packets) in a ring of buckets.
#[derive(Debug, Clone)]
pub struct LoadWindow {
    buckets: Vec<u64>,
    bucket_len: u64,
    /// Absolute index (`time / bucket_len`) of the newest bucket in the ring.
    head: u64,
    sum: u64,
    window_secs: f64,
}

impl LoadWindow {
    /// A window of `window / bucket` buckets (both non-zero, `window` a multiple of `bucket`:
    /// see [`crate::config::DirectorConfig::validate`]; degenerate values give one bucket).
    pub fn new(bucket: Nanos, window: Nanos) -> LoadWindow {
        let bucket_len = bucket.0.max(1);
        let n = (window.0 / bucket_len).max(1);
        LoadWindow {
            buckets: vec![0; usize::try_from(n).unwrap_or(1)],
            bucket_len,
            head: 0,
            sum: 0,
            window_secs: (n * bucket_len) as f64 / 1e9,
        }
    }

    fn slot(&self, abs: u64) -> usize {
        (abs % self.buckets.len() as u64) as usize
    }

    /// Moves the window so that `now` falls in its newest bucket. Time never runs backwards
    /// here: an older `now` leaves the window where it is.
    pub fn advance(&mut self, now: Nanos) {
        let target = now.0 / self.bucket_len;
        if target <= self.head {
            return;
        }
        let steps = (target - self.head).min(self.buckets.len() as u64);
        for i in 1..=steps {
            let s = self.slot(self.head + i);
            if let Some(b) = self.buckets.get_mut(s) {
                self.sum -= *b;
                *b = 0;
            }
        }
        self.head = target;
    }

    /// Counts `amount` drained at `now`.
    pub fn record(&mut self, now: Nanos, amount: u64) {
        self.advance(now);
        let s = self.slot(self.head);
        if let Some(b) = self.buckets.get_mut(s) {
            *b = b.saturating_add(amount);
            self.sum = self.sum.saturating_add(amount);
        }
    }

    /// The drained rate over the window ending at `now`.
    pub fn rate(&mut self, now: Nanos) -> Rate {
        self.advance(now);
        Rate(self.sum as f64 / self.window_secs)
    }

    /// The drained rate as of the last advance (no expiry): for read-only views.
    pub fn last_rate(&self) -> Rate {
        Rate(self.sum as f64 / self.window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;

    #[test]
    fn buckets_expire_as_the_window_slides() {
        // 4 buckets of 500 µs: a 2 ms window.
        struct Case {
            what: &'static str,
            records: &'static [(u64, u64)],
            read_at: u64,
            sum: u64,
        }
        let cases = [
            Case { what: "empty", records: &[], read_at: 0, sum: 0 },
            Case { what: "one bucket", records: &[(0, 100), (499 * US, 50)], read_at: 499 * US, sum: 150 },
            Case {
                what: "whole window",
                records: &[(0, 1), (600 * US, 2), (1999 * US, 4)],
                read_at: 1999 * US,
                sum: 7,
            },
            Case {
                what: "first bucket expires",
                records: &[(0, 1), (600 * US, 2), (1999 * US, 4)],
                read_at: 2000 * US,
                sum: 6,
            },
            Case {
                what: "two expire",
                records: &[(0, 1), (600 * US, 2), (1999 * US, 4)],
                read_at: 2500 * US,
                sum: 4,
            },
            Case {
                what: "jump past window",
                records: &[(0, 1), (600 * US, 2)],
                read_at: 10_000 * US,
                sum: 0,
            },
            Case {
                what: "record after jump",
                records: &[(0, 1), (9_000 * US, 8)],
                read_at: 9_100 * US,
                sum: 8,
            },
            Case {
                what: "late record lands in newest bucket",
                records: &[(1500 * US, 1), (100 * US, 2)],
                read_at: 3400 * US,
                sum: 3,
            },
        ];
        for c in cases {
            let mut w = LoadWindow::new(Nanos(500 * US), Nanos(2000 * US));
            for &(t, n) in c.records {
                w.record(Nanos(t), n);
            }
            let r = w.rate(Nanos(c.read_at));
            assert!((r.0 - c.sum as f64 / 0.002).abs() < 1e-6, "{}: {r:?}", c.what);
            assert_eq!(w.last_rate(), r, "{}", c.what);
        }
    }

    #[test]
    fn default_window_is_two_hundred_buckets() {
        let mut w = LoadWindow::new(Nanos::from_micros(500), Nanos::from_millis(100));
        assert_eq!(w.buckets.len(), 200);
        // 1 MB spread over 100 ms is 10 MB/s; it is all gone 100 ms after the last record.
        for i in 0..200u64 {
            w.record(Nanos(i * 500 * US), 5_000);
        }
        assert!((w.rate(Nanos(99_999 * US)).0 - 1.0e7).abs() < 1e-3);
        assert_eq!(w.rate(Nanos(200_000 * US)).0, 0.0);
    }
}
