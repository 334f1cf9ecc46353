//! Work assignment (SNF §4.2 and §5.2.2, Pseudocode 1 lines 26–39): pack a new flowlet onto
//! one of the active workers.
//!
//! The rule, exactly as the paper's pseudocode and §5.2.2 state it:
//!
//! 1. Walk the active workers in ascending ID order (the deterministic order that makes the
//!    packing greedy and cheap, and that proactive replication bets on).
//! 2. A worker is a candidate only if it has room: `demand + load ≤ capacity`. (Line 31 of
//!    the pseudocode prints the comparison the other way round, which would keep only the
//!    workers *without* room and contradicts the text, "the smallest ID unit with room is
//!    chosen"; we read it as the text says.)
//! 3. Each candidate scores `S = utilisation + α·β` with `utilisation = load / capacity`
//!    and **β = 1 when the worker already holds this flow's state** (the previous owner, or a
//!    worker the state was proactively replicated to), 0 otherwise (§5.2.2: "β is 1 if the
//!    compute unit has the replicated state"). β is a *bonus* for holding the state, not a
//!    penalty for lacking it.
//! 4. The candidate with the **maximum** score wins (line 38); among equal scores the lowest
//!    ID wins.
//!
//! Maximising utilisation packs flowlets onto the fullest worker that still has room, so load
//! concentrates on low IDs and high IDs drain and can be retired; with α = 0 that is the whole
//! rule. α (default 0.25) trades packing against state locality: a worker holding the state
//! wins as long as it has room and no other candidate is more than α fuller. A worker without
//! room is never chosen, however much state it holds, which is what keeps a popular owner from
//! being overloaded. When no worker has room the flowlet goes to the least utilised worker
//! (lowest ID among equals) and the choice is flagged as an overflow; the director's launch
//! rule is what cures that.

use crate::units::{Rate, WorkerId};

/// One active worker as the packer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub worker: WorkerId,
    pub load: Rate,
    pub capacity: Rate,
    /// β: the worker holds this flow's state (previous owner or fresh replica).
    pub has_state: bool,
}

impl Candidate {
    pub fn utilisation(&self) -> f64 {
        self.load.fraction_of(self.capacity)
    }
}

/// The packer's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub worker: WorkerId,
    pub has_state: bool,
    /// No worker had room; `worker` is the least utilised one.
    pub overflow: bool,
}

/// Packs a flowlet of `demand` onto one of `candidates`, which must come in ascending ID
/// order. `None` only when there is no candidate at all.
#[inline]
pub fn pack(candidates: impl IntoIterator<Item = Candidate>, demand: Rate, alpha: f64) -> Option<Choice> {
    let mut best: Option<(f64, Candidate)> = None;
    let mut least: Option<(f64, Candidate)> = None;
    for c in candidates {
        let util = c.utilisation();
        if least.is_none_or(|(u, _)| util < u) {
            least = Some((util, c));
        }
        if demand.0 + c.load.0 > c.capacity.0 {
            continue;
        }
        let score = util + if c.has_state { alpha } else { 0.0 };
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    match (best, least) {
        (Some((_, c)), _) => Some(Choice { worker: c.worker, has_state: c.has_state, overflow: false }),
        (None, Some((_, c))) => Some(Choice { worker: c.worker, has_state: c.has_state, overflow: true }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Workers 0.. with capacity 100, the given loads and state holders.
    fn workers(loads: &[f64], holders: &[u16]) -> Vec<Candidate> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &l)| Candidate {
                worker: WorkerId(i as u16),
                load: Rate(l),
                capacity: Rate(100.0),
                has_state: holders.contains(&(i as u16)),
            })
            .collect()
    }

    #[test]
    fn packing_order_and_state_score() {
        struct Case {
            what: &'static str,
            loads: &'static [f64],
            holders: &'static [u16],
            demand: f64,
            alpha: f64,
            want: u16,
            overflow: bool,
        }
        let cases = [
            Case {
                what: "all empty: lowest ID",
                loads: &[0.0, 0.0, 0.0],
                holders: &[],
                demand: 10.0,
                alpha: 0.25,
                want: 0,
                overflow: false,
            },
            Case {
                what: "fullest with room wins",
                loads: &[20.0, 60.0, 10.0],
                holders: &[],
                demand: 10.0,
                alpha: 0.25,
                want: 1,
                overflow: false,
            },
            Case {
                what: "full worker skipped",
                loads: &[95.0, 60.0, 10.0],
                holders: &[],
                demand: 10.0,
                alpha: 0.25,
                want: 1,
                overflow: false,
            },
            Case {
                what: "exactly fills: has room",
                loads: &[90.0, 60.0],
                holders: &[],
                demand: 10.0,
                alpha: 0.25,
                want: 0,
                overflow: false,
            },
            Case {
                what: "equal scores: lowest ID",
                loads: &[50.0, 50.0, 50.0],
                holders: &[],
                demand: 10.0,
                alpha: 0.25,
                want: 0,
                overflow: false,
            },
            Case {
                what: "holder wins at equal load",
                loads: &[50.0, 50.0, 50.0],
                holders: &[2],
                demand: 10.0,
                alpha: 0.25,
                want: 2,
                overflow: false,
            },
            Case {
                what: "holder wins when less full by < α",
                loads: &[70.0, 50.0],
                holders: &[1],
                demand: 10.0,
                alpha: 0.25,
                want: 1,
                overflow: false,
            },
            Case {
                what: "holder loses when less full by > α",
                loads: &[80.0, 50.0],
                holders: &[1],
                demand: 10.0,
                alpha: 0.25,
                want: 0,
                overflow: false,
            },
            Case {
                what: "holder without room loses",
                loads: &[10.0, 95.0],
                holders: &[1],
                demand: 10.0,
                alpha: 1.0,
                want: 0,
                overflow: false,
            },
            Case {
                what: "α = 0 ignores state",
                loads: &[50.0, 50.0],
                holders: &[1],
                demand: 10.0,
                alpha: 0.0,
                want: 0,
                overflow: false,
            },
            Case {
                what: "two holders: the fuller",
                loads: &[10.0, 30.0, 20.0],
                holders: &[0, 2],
                demand: 10.0,
                alpha: 0.25,
                want: 2,
                overflow: false,
            },
            Case {
                what: "nobody has room: least utilised",
                loads: &[95.0, 92.0, 97.0],
                holders: &[0],
                demand: 10.0,
                alpha: 0.25,
                want: 1,
                overflow: true,
            },
        ];
        for c in cases {
            let got = pack(workers(c.loads, c.holders), Rate(c.demand), c.alpha).unwrap();
            assert_eq!((got.worker, got.overflow), (WorkerId(c.want), c.overflow), "{}", c.what);
            assert_eq!(got.has_state, c.holders.contains(&c.want), "{}", c.what);
        }
        assert_eq!(pack([], Rate(1.0), 0.25), None);
    }

    #[test]
    fn a_holder_keeps_winning_until_it_runs_out_of_room() {
        // Worker 1 holds the state; worker 0 is as loaded as worker 1. Load worker 1 step by
        // step (with worker 0 alongside): it wins every time until demand no longer fits.
        for load in (0..=100).step_by(5) {
            let l = load as f64;
            let got = pack(workers(&[l, l], &[1]), Rate(10.0), 0.25).unwrap();
            // Once neither has room it is an overflow: the least utilised, lowest ID among equals.
            let want = if l + 10.0 <= 100.0 { 1 } else { 0 };
            let overflow = l + 10.0 > 100.0;
            assert_eq!((got.worker, got.overflow), (WorkerId(want), overflow), "load {l}");
        }
        // With an emptier non-holder next to it, the overloaded holder gives way.
        let got = pack(workers(&[50.0, 95.0], &[1]), Rate(10.0), 0.25).unwrap();
        assert_eq!((got.worker, got.has_state, got.overflow), (WorkerId(0), false, false));
    }
}
