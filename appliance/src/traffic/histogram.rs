//! A latency histogram with log-linear buckets (HdrHistogram's layout, hand-written: the few
//! dozen lines needed do not justify a dependency).
//!
//! Values below 128 ns each have their own bucket. Above, every power of two is split into
//! 64 equal buckets, so a reported percentile is at most 1/64 (1.6 %) above the true one and
//! never below it. The histogram is a fixed array (3776 counters, 30 KiB): recording is an
//! add, merging is element-wise, and nothing is allocated after creation.

/// Values below this are counted exactly.
const LINEAR: u64 = 128;
/// Sub-buckets per power of two above [`LINEAR`] (a power of two).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two from 2^7 to 2^63.
const BUCKETS: usize = LINEAR as usize + (64 - 7) * SUB as usize;

/// Counts of latencies in nanoseconds.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    min: u64,
    max: u64,
    /// Sum of all values (saturating), for the mean.
    sum: u128,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: Box::new([0; BUCKETS]), total: 0, min: u64::MAX, max: 0, sum: 0 }
    }
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= 7
    let sub = (v >> (msb - SUB_BITS)) & (SUB - 1);
    LINEAR as usize + (msb as usize - 7) * SUB as usize + sub as usize
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR as usize {
        return i as u64;
    }
    let k = i - LINEAR as usize;
    let msb = (k / SUB as usize) as u32 + 7;
    let sub = (k % SUB as usize) as u64;
    let width = 1u64 << (msb - SUB_BITS);
    let low = (1u64 << msb) + sub * width;
    low.saturating_add(width - 1)
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        if let Some(c) = self.counts.get_mut(index(ns)) {
            *c += 1;
        }
        self.total += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum = self.sum.saturating_add(u128::from(ns));
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += b;
        }
        self.total += o.total;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum = self.sum.saturating_add(o.sum);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The `q` quantile (0.0 to 1.0): the smallest bucket bound with at least `ceil(q × n)`
    /// values at or below it (nearest-rank), clamped to the exact minimum and maximum.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::rng::Rng;

    /// Nearest-rank quantile of a sorted vector: the reference.
    fn reference(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn buckets_cover_every_value_in_order() {
        let cases = [0u64, 1, 127, 128, 129, 191, 192, 255, 256, 1000, 1 << 20, u64::MAX / 3, u64::MAX];
        for v in cases {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(upper(i) >= v, "{v}: bucket {i} ends at {}", upper(i));
            assert!(i == 0 || upper(i - 1) < v, "{v}: also fits bucket {}", i - 1);
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_match_a_sorted_vector_within_one_bucket() {
        // (name, samples): uniform small, wide log-uniform, a constant, two clusters.
        let mut rng = Rng::new(42);
        let cases: Vec<(&str, Vec<u64>)> = vec![
            ("small", (0..10_000).map(|_| rng.below(120)).collect()),
            ("log-uniform", (0..50_000).map(|_| (1e3 * 1e6f64.powf(rng.unit())) as u64).collect()),
            ("constant", vec![12_345; 1000]),
            (
                "bimodal",
                (0..20_000).map(|i| if i % 10 == 0 { 5_000_000 + i } else { 20_000 + i % 7 }).collect(),
            ),
            ("single", vec![777]),
        ];
        for (name, samples) in cases {
            let mut h = Histogram::default();
            for v in &samples {
                h.record(*v);
            }
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let want = reference(&sorted, q);
                let got = h.quantile(q).unwrap();
                assert!(got >= want, "{name} q={q}: {got} < {want}");
                assert!(got <= want + want / 64, "{name} q={q}: {got} more than 1/64 above {want}");
            }
            assert_eq!(h.min(), sorted.first().copied(), "{name}");
            assert_eq!(h.max(), sorted.last().copied(), "{name}");
            assert_eq!(h.count(), samples.len() as u64);
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::default(), Histogram::default(), Histogram::default());
        for v in 0..5000u64 {
            let x = v * v;
            if v % 3 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            all.record(x);
        }
        a.merge(&b);
        assert_eq!(a, all);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
