//! Lightweight detection: the normalized Shannon entropy of sampled addresses per interval,
//! compared with an exponentially weighted moving average of past intervals.
//!
//! Addresses are counted in a fixed hashed histogram ([`BINS`] bins), so an interval costs a
//! constant amount of memory and its entropy a constant amount of work, whatever the number
//! of hosts. The entropy `H = -Σ p·log2 p` is divided by `log2 m`, `m` the number of non-empty
//! bins (normalized entropy, or evenness, as in Lakhina et al., SIGCOMM 2005): 1 when traffic
//! spreads evenly over the addresses seen, near 0 when one address takes almost all of it.
//! Unlike raw entropy it does not rise and fall with the traffic volume (with more samples,
//! more distinct addresses are seen and raw entropy grows), so benign rate changes do not look
//! like attacks; a flood towards one victim pulls the destination evenness down sharply.

/// Histogram bins per address kind (a power of two).
pub const BINS: usize = 1024;

/// Sampled-address counts of one interval.
#[derive(Debug, Clone)]
pub struct Histogram {
    bins: Vec<u32>,
    total: u32,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { bins: vec![0; BINS], total: 0 }
    }
}

/// What an interval's histogram says.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Entropy {
    /// Shannon entropy in bits.
    pub bits: f64,
    /// `bits / log2(non-empty bins)`, in [0, 1]; 0 when everything fell into one bin.
    pub normalized: f64,
}

impl Histogram {
    /// Counts an address by its hash (the top bits pick the bin).
    #[inline]
    pub fn add(&mut self, hash: u64) {
        let i = (hash >> (64 - BINS.trailing_zeros())) as usize;
        if let Some(b) = self.bins.get_mut(i) {
            *b = b.saturating_add(1);
        }
        self.total = self.total.saturating_add(1);
    }

    pub fn total(&self) -> u32 {
        self.total
    }

    pub fn entropy(&self) -> Entropy {
        if self.total == 0 {
            return Entropy::default();
        }
        let n = f64::from(self.total);
        let (mut sum, mut used) = (0.0f64, 0u32);
        for &c in self.bins.iter().filter(|c| **c > 0) {
            let c = f64::from(c);
            sum += c * c.log2();
            used += 1;
        }
        // H = log2 n - (1/n) Σ c log2 c
        let bits = (n.log2() - sum / n).max(0.0);
        let normalized = if used > 1 { (bits / f64::from(used).log2()).clamp(0.0, 1.0) } else { 0.0 };
        Entropy { bits, normalized }
    }

    pub fn clear(&mut self) {
        self.bins.iter_mut().for_each(|b| *b = 0);
        self.total = 0;
    }
}

/// An exponentially weighted moving average of normalized entropy.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    mean: Option<f64>,
    alpha: f64,
}

impl Baseline {
    pub fn new(alpha: f64) -> Baseline {
        Baseline { mean: None, alpha }
    }

    /// The baseline, once it has seen an interval.
    pub fn mean(&self) -> Option<f64> {
        self.mean
    }

    /// How far `x` lies from the baseline (0 before the first update).
    pub fn deviation(&self, x: f64) -> f64 {
        self.mean.map_or(0.0, |m| (x - m).abs())
    }

    pub fn update(&mut self, x: f64) {
        self.mean = Some(match self.mean {
            None => x,
            Some(m) => m + self.alpha * (x - m),
        });
    }
}

/// A 64-bit hash of an address (and its family), for histogram bins and sketch rows.
#[inline]
pub fn addr_hash(family: u8, addr: &[u8; 16]) -> u64 {
    let a = u128::from_be_bytes(*addr);
    let mut h = ((a >> 64) as u64 ^ u64::from(family)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h = (h ^ a as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{v4, FAMILY_V4};

    fn hist(counts: &[(u32, u32)]) -> Histogram {
        let mut h = Histogram::default();
        for &(addr, n) in counts {
            for _ in 0..n {
                h.add(addr_hash(FAMILY_V4, &v4(addr.to_be_bytes())));
            }
        }
        h
    }

    /// Counts per address, expected bits, expected normalized entropy.
    type Case<'a> = (&'a [(u32, u32)], f64, f64);

    #[test]
    fn entropy_of_known_distributions() {
        let cases: &[Case<'_>] = &[
            (&[], 0.0, 0.0),
            (&[(1, 100)], 0.0, 0.0),
            (&[(1, 50), (2, 50)], 1.0, 1.0),
            (&[(1, 25), (2, 25), (3, 25), (4, 25)], 2.0, 1.0),
            // 3/4 + 1/4: H = 0.811 bits over two addresses.
            (&[(1, 75), (2, 25)], 0.811_278, 0.811_278),
        ];
        for (counts, bits, norm) in cases {
            let e = hist(counts).entropy();
            assert!((e.bits - bits).abs() < 1e-5, "{counts:?}: {e:?}");
            assert!((e.normalized - norm).abs() < 1e-5, "{counts:?}: {e:?}");
        }
    }

    #[test]
    fn normalized_entropy_ignores_volume_but_sees_concentration() {
        let even = |n: u32| hist(&(0..200).map(|a| (a, n)).collect::<Vec<_>>()).entropy().normalized;
        assert!((even(1) - even(20)).abs() < 0.01);
        let mut flood: Vec<_> = (0..200).map(|a| (a, 1)).collect();
        flood.push((7, 800));
        assert!(hist(&flood).entropy().normalized < 0.5);
    }

    #[test]
    fn baseline_is_an_ewma() {
        let mut b = Baseline::new(0.5);
        assert_eq!((b.mean(), b.deviation(3.0)), (None, 0.0));
        b.update(1.0);
        b.update(0.0);
        assert_eq!(b.mean(), Some(0.5));
        assert_eq!(b.deviation(0.75), 0.25);
    }
}
