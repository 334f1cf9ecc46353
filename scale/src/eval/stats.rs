//! Summaries of measured samples: percentiles and empirical CDFs.

use serde::Serialize;

/// Percentiles of a sample set, in the samples' unit.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p1: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The `q`-quantile (0..=1) of sorted `v` (nearest rank), 0 for no samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// Sorts `v` and summarises it.
pub fn percentiles(v: &mut [f64]) -> Percentiles {
    v.sort_unstable_by(f64::total_cmp);
    let mean = if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    Percentiles {
        count: v.len(),
        p1: quantile(v, 0.01),
        p25: quantile(v, 0.25),
        p50: quantile(v, 0.50),
        p75: quantile(v, 0.75),
        p99: quantile(v, 0.99),
        max: v.last().copied().unwrap_or(0.0),
        mean,
    }
}

/// `points` (value, fraction ≤ value) of the empirical CDF of sorted `v`, at evenly spaced
/// fractions plus the extreme tail (99.9 %, 100 %).
pub fn cdf(sorted: &[f64], points: usize) -> Vec<(f64, f64)> {
    let n = points.max(2);
    let mut out: Vec<(f64, f64)> =
        (0..n).map(|i| i as f64 / (n - 1) as f64).map(|q| (quantile(sorted, q), q)).collect();
    if !sorted.is_empty() {
        out.push((quantile(sorted, 0.999), 0.999));
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_hundred_one() {
        let mut v: Vec<f64> = (0..=100).rev().map(f64::from).collect();
        let p = percentiles(&mut v);
        assert_eq!(
            (p.count, p.p1, p.p25, p.p50, p.p75, p.p99, p.max),
            (101, 1.0, 25.0, 50.0, 75.0, 99.0, 100.0)
        );
        assert!((p.mean - 50.0).abs() < 1e-9);
        assert_eq!(percentiles(&mut []).p50, 0.0);
        let c = cdf(&v, 3);
        assert_eq!(c, vec![(0.0, 0.0), (50.0, 0.5), (100.0, 0.999), (100.0, 1.0)]);
    }
}
