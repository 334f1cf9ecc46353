//! Modelled per-flow state: when a flowlet's state is in place on the worker the director
//! chose, under SNF's proactive replication or one of the baselines of §9.2.
//!
//! * **Proactive** (SNF §5.2): the director's replication decisions push the flow's state to
//!   its K targets; the push leaves once the owner has processed the flow's last packet and
//!   takes half a peer round trip plus the state's serialisation on the link. A flowlet whose
//!   worker holds a fresh replica (the director checks the logical clock, §5.3) finds its
//!   state in place if the push has landed, and otherwise waits for it ("hold off
//!   processing"); any other moved flowlet pulls reactively.
//! * **Reactive**: no replication (the director runs with K = 0); a moved flowlet pulls the
//!   state from the previous owner: a peer round trip plus serialisation, starting no earlier
//!   than the previous owner's last packet of the flow.
//! * **External** (SNF's "optimized external" store): every packet's state update is written
//!   behind to a store, and a moved flowlet reads it back: a store round trip plus
//!   serialisation, no earlier than half a store round trip after the previous owner's last
//!   packet of the flow (the write must have landed).
//!
//! Recovery after a worker failure (§6, §9.4) sets one time at which the state of the failed
//! worker's running flows is back; every orphaned flow's first flowlet waits for it, or for
//! its own pull from the output logger, whichever is later.

use nflet_nfs::time::Nanos;

use crate::director::StateSource;
use crate::units::Rate;

use super::trace::FlowIdx;

/// How flow state follows a flow's flowlets between workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateStrategy {
    Proactive,
    Reactive,
    External,
}

impl StateStrategy {
    pub fn name(self) -> &'static str {
        match self {
            StateStrategy::Proactive => "proactive (SNF)",
            StateStrategy::Reactive => "reactive pull",
            StateStrategy::External => "external store",
        }
    }
}

/// The costs of moving state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateCosts {
    /// Per-flow state size (SNF §5.2: a few KB at most for PRADS and Snort).
    pub state_bytes: u64,
    /// Link rate between workers (and to the store, and to an output logger), bytes/s.
    pub link: Rate,
    pub peer_rtt: Nanos,
    pub store_rtt: Nanos,
}

impl Default for StateCosts {
    fn default() -> Self {
        StateCosts {
            state_bytes: 2_000,
            // 10 Gbit/s.
            link: Rate(1.25e9),
            peer_rtt: Nanos::from_micros(100),
            store_rtt: Nanos::from_micros(150),
        }
    }
}

impl StateCosts {
    /// Serialisation of `bytes` on the link.
    pub fn wire(&self, bytes: u64) -> Nanos {
        if self.link.0 > 0.0 {
            Nanos((bytes as f64 * 1e9 / self.link.0).ceil() as u64)
        } else {
            Nanos(u64::MAX)
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct FlowState {
    /// When the owner finished the flow's last packet so far.
    last_departure: Nanos,
    /// When the latest proactive push lands at its targets.
    replica_lands: Option<Nanos>,
    /// The current flowlet's state is in place from this time.
    ready: Nanos,
}

/// What the state model counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct StateCounters {
    /// Flowlets that started on another worker than the flow's previous one.
    pub moved: u64,
    /// Of those, the ones whose state was already in place on arrival.
    pub in_place: u64,
    /// Of those, the ones that waited for a proactive push still in transit.
    pub waited_for_push: u64,
    pub pulls: u64,
    /// Pulls (or store reads) of flowlets cut by the size threshold: no gap to push in.
    pub after_size_split: u64,
    pub store_reads: u64,
    pub recoveries: u64,
    pub pushes: u64,
    /// State copies sent: each push goes to every one of its targets.
    pub copies: u64,
}

/// Per-flow state placement under one strategy.
#[derive(Debug, Clone)]
pub struct StateModel {
    pub strategy: StateStrategy,
    pub costs: StateCosts,
    flows: Vec<FlowState>,
    /// After a failure: when the failed worker's state is available again.
    pub recovered_at: Nanos,
    pub counters: StateCounters,
}

impl StateModel {
    pub fn new(strategy: StateStrategy, costs: StateCosts, flows: usize) -> StateModel {
        StateModel {
            strategy,
            costs,
            flows: vec![FlowState::default(); flows],
            recovered_at: Nanos::ZERO,
            counters: StateCounters::default(),
        }
    }

    /// The director pushed `flow`'s state at `now` (proactive only).
    /// The push goes to `targets` workers one copy after the other on the owner's link, so
    /// the last lands after all of them are serialised.
    pub fn replicate(&mut self, flow: FlowIdx, now: Nanos, targets: usize) {
        self.counters.copies += targets as u64;
        let copies = u64::try_from(targets.max(1)).unwrap_or(u64::MAX);
        let wire = self.costs.wire(self.costs.state_bytes);
        let push = Nanos(self.costs.peer_rtt.0 / 2).saturating_add(Nanos(wire.0.saturating_mul(copies)));
        if let Some(f) = self.flows.get_mut(flow.0 as usize) {
            f.replica_lands = Some(now.max(f.last_departure).saturating_add(push));
            self.counters.pushes += 1;
        }
    }

    /// A flowlet of `flow` starts at `now` with its state coming from `source`: sets and
    /// returns when its state is in place.
    pub fn flowlet_start(&mut self, flow: FlowIdx, now: Nanos, source: StateSource) -> Nanos {
        let c = self.costs;
        let wire = c.wire(c.state_bytes);
        let recovered_at = self.recovered_at;
        let Some(f) = self.flows.get_mut(flow.0 as usize) else { return now };
        let counters = &mut self.counters;
        let pull = |f: &FlowState, counters: &mut StateCounters| match self.strategy {
            StateStrategy::External => {
                counters.store_reads += 1;
                let written = f.last_departure.saturating_add(Nanos(c.store_rtt.0 / 2));
                now.max(written).saturating_add(c.store_rtt).saturating_add(wire)
            }
            StateStrategy::Proactive | StateStrategy::Reactive => {
                counters.pulls += 1;
                now.max(f.last_departure).saturating_add(c.peer_rtt).saturating_add(wire)
            }
        };
        let ready = match source {
            StateSource::Fresh | StateSource::Local => now,
            StateSource::Replica { .. } => {
                counters.moved += 1;
                match f.replica_lands {
                    Some(at) if at <= now => {
                        counters.in_place += 1;
                        now
                    }
                    Some(at) => {
                        counters.waited_for_push += 1;
                        at
                    }
                    None => pull(f, counters),
                }
            }
            StateSource::Pull { .. } => {
                counters.moved += 1;
                pull(f, counters)
            }
            StateSource::Recover { .. } => {
                // From the output logger: the recovery batch, or on demand for a flow that was
                // idle at the failure.
                counters.recoveries += 1;
                recovered_at.max(now.saturating_add(c.peer_rtt).saturating_add(wire))
            }
        };
        f.ready = ready;
        f.replica_lands = None;
        ready
    }

    /// When `flow`'s current flowlet has its state.
    pub fn ready(&self, flow: FlowIdx) -> Nanos {
        self.flows.get(flow.0 as usize).map_or(Nanos::ZERO, |f| f.ready)
    }

    /// `flow`'s packet left its worker at `departure`.
    pub fn departed(&mut self, flow: FlowIdx, departure: Nanos) {
        if let Some(f) = self.flows.get_mut(flow.0 as usize) {
            f.last_departure = f.last_departure.max(departure);
        }
    }

    /// Share of moved flowlets that found their state in place, if any moved.
    pub fn in_place_share(&self) -> Option<f64> {
        (self.counters.moved > 0).then(|| self.counters.in_place as f64 / self.counters.moved as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::WorkerId;

    const US: u64 = 1_000;

    fn costs() -> StateCosts {
        // 2000 B at 1.25 GB/s: 1.6 µs on the wire.
        StateCosts::default()
    }

    #[test]
    fn ready_times_by_strategy_and_source() {
        let from = WorkerId(0);
        // (strategy, replicate at, source, start at) -> ready
        let cases = [
            (StateStrategy::Proactive, Some(100), StateSource::Replica { from }, 300, 300), // landed at 151.6
            (StateStrategy::Proactive, Some(100), StateSource::Replica { from }, 120, 152), // in transit
            (StateStrategy::Proactive, None, StateSource::Pull { from }, 300, 402),
            (StateStrategy::Reactive, None, StateSource::Pull { from }, 300, 402),
            (StateStrategy::External, None, StateSource::Pull { from }, 300, 452),
            // The store write of the last packet (departed at 80 µs) lands at 155 µs.
            (StateStrategy::External, None, StateSource::Pull { from }, 100, 307),
            (StateStrategy::Reactive, None, StateSource::Local, 300, 300),
            (StateStrategy::Reactive, None, StateSource::Fresh, 300, 300),
        ];
        for (strategy, rep, source, at, want_us) in cases {
            let mut m = StateModel::new(strategy, costs(), 1);
            m.departed(FlowIdx(0), Nanos(80 * US));
            if let Some(r) = rep {
                m.replicate(FlowIdx(0), Nanos(r * US), 1);
            }
            let ready = m.flowlet_start(FlowIdx(0), Nanos(at * US), source);
            assert_eq!(ready.0.div_ceil(US), want_us, "{strategy:?} {source:?} at {at}");
            assert_eq!(m.ready(FlowIdx(0)), ready);
        }
    }

    #[test]
    fn in_place_share_counts_moved_flowlets_only() {
        let from = WorkerId(1);
        let mut m = StateModel::new(StateStrategy::Proactive, costs(), 3);
        m.replicate(FlowIdx(0), Nanos(0), 1);
        m.flowlet_start(FlowIdx(0), Nanos(1_000 * US), StateSource::Replica { from });
        m.flowlet_start(FlowIdx(1), Nanos(1_000 * US), StateSource::Pull { from });
        m.flowlet_start(FlowIdx(2), Nanos(1_000 * US), StateSource::Local);
        assert_eq!((m.counters.moved, m.counters.in_place, m.counters.pulls), (2, 1, 1));
        assert_eq!(m.in_place_share(), Some(0.5));
        m.recovered_at = Nanos(5_000 * US);
        let r = m.flowlet_start(FlowIdx(2), Nanos(2_000 * US), StateSource::Recover { failed: from });
        assert_eq!((r, m.counters.recoveries), (Nanos(5_000 * US), 1));
    }
}
