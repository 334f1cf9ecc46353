//! Heavyweight check: a count-min sketch of sampled destinations with a short list of the
//! heaviest ones, to say *which* destination an anomaly is about.
//!
//! Count-min (Cormode & Muthukrishnan, 2005): `depth` rows of `width` counters; an address
//! increments one counter per row and its estimate is the row minimum — never below the true
//! count, above it by at most `e/width` of the total with probability `1 - e^-depth`. Row
//! indices come from one 64-bit hash by double hashing (Kirsch & Mitzenmacher). Beside the
//! sketch, the [`TOP`] addresses with the highest estimates seen this interval are kept, so the
//! victim can be named without enumerating the address space.

/// Heavy-hitter candidates kept per interval.
pub const TOP: usize = 8;

/// An address the sketch saw often.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Candidate {
    pub family: u8,
    pub addr: [u8; 16],
    /// Count-min estimate of its sampled packets this interval.
    pub estimate: u32,
}

#[derive(Debug, Clone)]
pub struct CountMin {
    counters: Vec<u32>,
    width_mask: usize,
    depth: usize,
    top: [Candidate; TOP],
}

impl CountMin {
    /// `width` must be a power of two and `depth` at least 1 (the config checks both).
    pub fn new(width: usize, depth: usize) -> CountMin {
        CountMin {
            counters: vec![0; width.saturating_mul(depth)],
            width_mask: width.saturating_sub(1),
            depth,
            top: [Candidate::default(); TOP],
        }
    }

    /// Counts one sampled packet to `addr` (with `hash` = its address hash) and returns the
    /// address's new estimate.
    #[inline]
    pub fn add(&mut self, family: u8, addr: &[u8; 16], hash: u64) -> u32 {
        let (h1, h2) = (hash as u32 as usize, ((hash >> 32) as usize) | 1);
        let width = self.width_mask + 1;
        let mut est = u32::MAX;
        for row in 0..self.depth {
            let col = h1.wrapping_add(row.wrapping_mul(h2)) & self.width_mask;
            if let Some(c) = self.counters.get_mut(row * width + col) {
                *c = c.saturating_add(1);
                est = est.min(*c);
            }
        }
        let est = if est == u32::MAX { 0 } else { est };
        self.offer(family, addr, est);
        est
    }

    /// Keeps `addr` among the top candidates if its estimate earns it a place.
    #[inline]
    fn offer(&mut self, family: u8, addr: &[u8; 16], estimate: u32) {
        if let Some(c) = self.top.iter_mut().find(|c| c.estimate > 0 && c.family == family && c.addr == *addr)
        {
            c.estimate = c.estimate.max(estimate);
            return;
        }
        if let Some(min) = self.top.iter_mut().min_by_key(|c| c.estimate) {
            if estimate > min.estimate {
                *min = Candidate { family, addr: *addr, estimate };
            }
        }
    }

    /// This interval's candidates, heaviest first (empty slots left out).
    pub fn heaviest(&self) -> impl Iterator<Item = Candidate> {
        let mut top = self.top;
        top.sort_unstable_by_key(|c| std::cmp::Reverse(c.estimate));
        top.into_iter().filter(|c| c.estimate > 0)
    }

    pub fn clear(&mut self) {
        self.counters.iter_mut().for_each(|c| *c = 0);
        self.top = [Candidate::default(); TOP];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{v4, FAMILY_V4};
    use crate::functions::ddos::entropy::addr_hash;

    #[test]
    fn heavy_hitters_are_found_and_never_underestimated() {
        let mut s = CountMin::new(256, 4);
        // (address, sampled packets): one heavy destination among 500 light ones.
        let mut truth = vec![(7u32, 3000u32), (9, 600)];
        truth.extend((100..600).map(|a| (a, 2)));
        for round in 0..3000 {
            for &(a, n) in &truth {
                if round < n {
                    let addr = v4(a.to_be_bytes());
                    s.add(FAMILY_V4, &addr, addr_hash(FAMILY_V4, &addr));
                }
            }
        }
        let top: Vec<_> = s.heaviest().collect();
        assert_eq!(top[0].addr, v4(7u32.to_be_bytes()));
        assert_eq!(top[1].addr, v4(9u32.to_be_bytes()));
        // Overestimate bounded by e/width x total (4600) = 49 with high probability.
        assert!((3000..3050).contains(&top[0].estimate), "{}", top[0].estimate);
        assert!((600..650).contains(&top[1].estimate), "{}", top[1].estimate);
        s.clear();
        assert_eq!(s.heaviest().count(), 0);
    }
}
