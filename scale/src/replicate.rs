//! Where to push a flow's state proactively (SNF §5.2.1–§5.2.2, Pseudocode 2).
//!
//! Once a flow has been idle for half the flowlet timeout, its owner pushes the state to K
//! workers, betting that the next flowlet lands on one of them. The assignment packs low IDs
//! first, so the bet picks workers at random with weights inversely proportional to their IDs
//! (`1/(id+1)`: IDs count from 0 here, the paper's from 1), never the owner, without
//! repetition (Pseudocode 2 redraws until it has R distinct workers; drawing from the
//! remaining workers with renormalised weights is the same distribution). The random source is
//! seeded from the configuration, so a run is reproducible.

use nflet_nfs::rng::Rng;

use crate::assign::Candidate;
use crate::units::{Rate, WorkerId};

/// The most replication targets a flow can have.
pub const MAX_REPLICAS: usize = 16;

/// Up to [`MAX_REPLICAS`] workers, inline (no allocation per flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replicas {
    ids: [WorkerId; MAX_REPLICAS],
    len: u8,
}

impl Replicas {
    pub const EMPTY: Replicas = Replicas { ids: [WorkerId(0); MAX_REPLICAS], len: 0 };

    pub fn as_slice(&self) -> &[WorkerId] {
        self.ids.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub fn contains(&self, w: WorkerId) -> bool {
        self.as_slice().contains(&w)
    }

    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `w` unless full or present.
    pub fn push(&mut self, w: WorkerId) {
        if self.contains(w) {
            return;
        }
        if let Some(slot) = self.ids.get_mut(usize::from(self.len)) {
            *slot = w;
            self.len += 1;
        }
    }

    /// Drops `w` (a worker that retired).
    pub fn remove(&mut self, w: WorkerId) {
        let mut out = Replicas::EMPTY;
        for &x in self.as_slice() {
            if x != w {
                out.push(x);
            }
        }
        *self = out;
    }
}

fn weight(w: WorkerId) -> f64 {
    1.0 / (f64::from(w.0) + 1.0)
}

/// Chooses up to `k` distinct workers among `active` (any order), excluding `owner`, with
/// probability inversely proportional to their IDs. Fewer than `k` when fewer are eligible.
/// O(k·workers).
pub fn choose(active: &[WorkerId], owner: Option<WorkerId>, k: usize, rng: &mut Rng) -> Replicas {
    let mut out = Replicas::EMPTY;
    let k = k.min(MAX_REPLICAS);
    while out.len() < k {
        let eligible = |w: &&WorkerId| Some(**w) != owner && !out.contains(**w);
        let total: f64 = active.iter().filter(eligible).map(|&w| weight(w)).sum();
        if total <= 0.0 {
            break;
        }
        let mut x = rng.unit() * total;
        let mut pick = None;
        for &w in active.iter().filter(eligible) {
            pick = Some(w);
            x -= weight(w);
            if x < 0.0 {
                break;
            }
        }
        match pick {
            Some(w) => out.push(w),
            None => break,
        }
    }
    out
}

/// [`crate::config::ReplicaChoice::Packing`]: up to `k` of `candidates`, never `owner`: first
/// those with room for `demand`, fullest first, then the others, least loaded first (where an
/// overflowing flowlet goes); lowest ID on ties.
pub fn by_packing(candidates: &[Candidate], owner: WorkerId, demand: Rate, k: usize) -> Replicas {
    let (mut fit, mut rest): (Vec<_>, Vec<_>) = candidates
        .iter()
        .filter(|c| c.worker != owner)
        .map(|c| (c.utilisation(), c.worker, demand.0 + c.load.0 <= c.capacity.0))
        .partition(|&(_, _, room)| room);
    fit.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    rest.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut out = Replicas::EMPTY;
    for (_, w, _) in fit.into_iter().chain(rest).take(k.min(MAX_REPLICAS)) {
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u16) -> Vec<WorkerId> {
        (0..n).map(WorkerId).collect()
    }

    #[test]
    fn excludes_owner_distinct_and_bounded() {
        // (workers, owner, k, expected count)
        let cases = [
            (8, Some(0), 3, 3),
            (4, Some(2), 3, 3),
            (3, Some(1), 3, 2),
            (1, Some(0), 3, 0),
            (5, None, 5, 5),
            (6, Some(5), 0, 0),
        ];
        let mut rng = Rng::new(7);
        for (n, owner, k, want) in cases {
            for _ in 0..200 {
                let r = choose(&ids(n), owner.map(WorkerId), k, &mut rng);
                assert_eq!(r.len(), want, "{n} workers, owner {owner:?}, k {k}");
                assert!(owner.is_none_or(|o| !r.contains(WorkerId(o))));
                let s = r.as_slice();
                for (i, a) in s.iter().enumerate() {
                    assert!(!s.iter().skip(i + 1).any(|b| b == a), "{s:?} repeats");
                }
            }
        }
    }

    #[test]
    fn frequencies_are_inverse_to_ids() {
        // One draw among workers 0..8 excluding owner 3: P(w) = (1/(w+1)) / Σ.
        let active = ids(8);
        let owner = WorkerId(3);
        let total: f64 = active.iter().filter(|&&w| w != owner).map(|&w| weight(w)).sum();
        let draws = 200_000;
        let mut seen = [0u32; 8];
        let mut rng = Rng::new(42);
        for _ in 0..draws {
            let r = choose(&active, Some(owner), 1, &mut rng);
            seen[usize::from(r.as_slice()[0].0)] += 1;
        }
        assert_eq!(seen[3], 0);
        for w in active.iter().filter(|&&w| w != owner) {
            let want = weight(*w) / total;
            let got = f64::from(seen[usize::from(w.0)]) / f64::from(draws);
            assert!((got - want).abs() < 0.01 + 0.03 * want, "{w}: got {got:.4}, want {want:.4}");
        }
        // With K = 3 each worker's inclusion still falls with its ID.
        let mut incl = [0u32; 8];
        for _ in 0..50_000 {
            for w in choose(&active, Some(owner), 3, &mut rng).as_slice() {
                incl[usize::from(w.0)] += 1;
            }
        }
        let order: Vec<u32> = [0usize, 1, 2, 4, 5, 6, 7].iter().map(|&i| incl[i]).collect();
        assert!(order.windows(2).all(|p| p[0] > p[1]), "{incl:?}");
    }

    #[test]
    fn same_seed_same_choices() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..100).map(|_| choose(&ids(16), Some(WorkerId(1)), 3, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn replicas_push_and_remove() {
        let mut r = Replicas::EMPTY;
        for w in [3, 1, 3, 7] {
            r.push(WorkerId(w));
        }
        assert_eq!(r.as_slice(), &[WorkerId(3), WorkerId(1), WorkerId(7)]);
        r.remove(WorkerId(1));
        assert_eq!(r.as_slice(), &[WorkerId(3), WorkerId(7)]);
        for w in 0..20 {
            r.push(WorkerId(w));
        }
        assert_eq!(r.len(), MAX_REPLICAS);
    }

    #[test]
    fn packing_choice_follows_the_packer() {
        let cand = |id: u16, load: f64| Candidate {
            worker: WorkerId(id),
            load: Rate(load),
            capacity: Rate(100.0),
            has_state: false,
        };
        // Worker 0 owns the flow; demand 20.
        let pool = [cand(0, 10.0), cand(1, 90.0), cand(2, 60.0), cand(3, 70.0), cand(4, 0.0), cand(5, 85.0)];
        // (k, expected): room (≤ 80): 3 (70), 2 (60), 4 (0); then no room, least loaded: 5, 1.
        let cases: [(usize, &[u16]); 4] =
            [(1, &[3]), (3, &[3, 2, 4]), (5, &[3, 2, 4, 5, 1]), (9, &[3, 2, 4, 5, 1])];
        for (k, want) in cases {
            let got = by_packing(&pool, WorkerId(0), Rate(20.0), k);
            let ids: Vec<u16> = got.as_slice().iter().map(|w| w.0).collect();
            assert_eq!(ids, want, "k = {k}");
        }
    }
}
