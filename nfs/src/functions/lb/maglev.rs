//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI'16, §3.4).
//!
//! Every backend gets a permutation of the lookup-table positions from two hashes of its name
//! (`offset = h1 % M`, `skip = h2 % (M - 1) + 1`, position `j` = `(offset + j·skip) % M`;
//! with `M` prime every `skip` walks all positions). Backends then take turns claiming the
//! next free position of their own permutation until the table is full, so each ends up with
//! about `M / N` positions, and removing one backend mostly frees only its own positions:
//! the other backends keep nearly all of theirs (minimal disruption).
//!
//! Weights (§3.4: "backends with higher weights take more turns"): in every round a backend
//! earns `weight` credits and takes one turn per `max_weight` credits it holds, so its share
//! of the table follows its weight. A backend with weight 0 (draining or removed) takes no
//! turns and appears nowhere in the table.
//!
//! The table is built off the fast path (at init and when the backend set changes) and is
//! immutable afterwards: a lookup is one modulo and one load.

/// A backend as the table builder sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Stable name the permutation derives from (the backend's `addr:port`).
    pub name: &'a str,
    /// Relative share of new flows; 0 takes none.
    pub weight: u32,
}

/// An immutable Maglev lookup table: position → index into the member list it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maglev {
    entries: Box<[u16]>,
}

/// Marks a position no member claimed (only when every weight is 0).
const EMPTY: u16 = u16::MAX;

/// 64-bit FNV-1a of `bytes` from `seed`, finished with the splitmix64 mixer: deterministic
/// across runs, cores and appliances, which Maglev needs (every instance must build the same
/// table from the same backend set).
fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// True if `n` is prime (trial division; table sizes are at most a few million).
pub fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2usize;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl Maglev {
    /// Builds the table of prime size `size` for `members` (at most `u16::MAX - 1` of them;
    /// the caller validates both). A non-prime size still terminates, possibly leaving
    /// positions empty.
    pub fn build(size: usize, members: &[Member<'_>]) -> Maglev {
        let m = size.max(1) as u64;
        let mut entries = vec![EMPTY; size.max(1)];
        let max_weight = members.iter().map(|b| b.weight).max().unwrap_or(0);
        if max_weight == 0 {
            return Maglev { entries: entries.into_boxed_slice() };
        }
        // (offset, skip, next permutation index, credit) per member.
        let mut perm: Vec<(u64, u64, u64, u64)> = members
            .iter()
            .map(|b| {
                let offset = hash64(b.name.as_bytes(), 0x5eed_0ff5) % m;
                let skip = hash64(b.name.as_bytes(), 0x5eed_5c1b) % (m - 1).max(1) + 1;
                (offset, skip, 0, 0)
            })
            .collect();
        let mut filled = 0usize;
        let total = entries.len();
        while filled < total {
            let before = filled;
            let mut turns = 0usize;
            for (i, (b, p)) in members.iter().zip(perm.iter_mut()).enumerate() {
                p.3 += u64::from(b.weight);
                while p.3 >= u64::from(max_weight) && filled < total {
                    p.3 -= u64::from(max_weight);
                    turns += 1;
                    // The member's next preferred position that is still free. At most `m`
                    // steps: with `m` prime the permutation visits every position once.
                    for _ in 0..m {
                        let pos = ((p.0 + p.2 * p.1) % m) as usize;
                        p.2 += 1;
                        match entries.get_mut(pos) {
                            Some(e) if *e == EMPTY => {
                                *e = i as u16;
                                filled += 1;
                                break;
                            }
                            Some(_) => {}
                            None => break,
                        }
                    }
                }
                if filled >= total {
                    break;
                }
            }
            // Only a non-prime size can leave free positions no permutation reaches.
            if turns > 0 && filled == before {
                break;
            }
        }
        Maglev { entries: entries.into_boxed_slice() }
    }

    /// The member index for a flow hash, or `None` if no member has a weight.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<u16> {
        let len = self.entries.len().max(1);
        self.entries.get(hash as usize % len).copied().filter(|e| *e != EMPTY)
    }

    /// Table size `M`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Positions held by member `i`.
    pub fn share(&self, i: u16) -> usize {
        self.entries.iter().filter(|e| **e == i).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members<'a>(names: &'a [String], weights: &[u32]) -> Vec<Member<'a>> {
        names.iter().zip(weights).map(|(n, w)| Member { name: n, weight: *w }).collect()
    }

    #[test]
    fn primes() {
        for (n, want) in
            [(0, false), (1, false), (2, true), (9, false), (251, true), (65537, true), (65536, false)]
        {
            assert_eq!(is_prime(n), want, "{n}");
        }
    }

    #[test]
    fn shares_follow_weights() {
        let names: Vec<String> = (1..=3).map(|i| format!("10.0.0.{i}:80")).collect();
        let cases: &[(&[u32], &[f64])] = &[
            (&[1, 1, 1], &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]),
            (&[1, 2, 3], &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]),
            (&[0, 1, 1], &[0.0, 0.5, 0.5]),
        ];
        for (weights, want) in cases {
            let t = Maglev::build(65537, &members(&names, weights));
            for (i, w) in want.iter().enumerate() {
                let got = t.share(i as u16) as f64 / 65537.0;
                assert!((got - w).abs() < 0.01, "weights {weights:?}: member {i} has {got}, want {w}");
            }
        }
    }

    #[test]
    fn no_weight_means_no_backend() {
        let names = vec!["a".to_string()];
        let t = Maglev::build(7, &members(&names, &[0]));
        assert_eq!(t.lookup(3), None);
        let t = Maglev::build(7, &members(&names, &[5]));
        assert_eq!((0..7).map(|h| t.lookup(h)).collect::<Vec<_>>(), vec![Some(0); 7]);
    }

    #[test]
    fn a_non_prime_size_still_terminates() {
        let names: Vec<String> = (1..=4).map(|i| format!("b{i}")).collect();
        let t = Maglev::build(64, &members(&names, &[1, 1, 1, 1]));
        assert_eq!(t.len(), 64);
    }

    #[test]
    fn same_members_same_table() {
        let names: Vec<String> = (1..=5).map(|i| format!("b{i}")).collect();
        let a = Maglev::build(251, &members(&names, &[1, 1, 2, 1, 1]));
        let b = Maglev::build(251, &members(&names, &[1, 1, 2, 1, 1]));
        assert_eq!(a, b);
    }
}
