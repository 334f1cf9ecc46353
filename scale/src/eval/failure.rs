//! A worker failure during a run (SNF §6, §9.4) and what recovering from it costs.
//!
//! At the failure tick the worker stops: packets in its queue are lost (output-logger
//! recovery: the logger never saw them, so the state is as if the network had dropped them and
//! the senders retransmit) or replayed (checkpoint/replay recovery keeps an input log). The
//! director orphans the worker's flows. Recovery brings the state of the flows that had a
//! flowlet running back to the recovery side:
//!
//! * output logger: one peer round trip plus the state of those flows on the link;
//! * replay: the same to load the last checkpoint, plus re-processing every byte the failed
//!   worker received since that checkpoint at its capacity.
//!
//! Orphaned flows' packets are held until then ([`super::state::StateModel::recovered_at`]).

use nflet_nfs::time::Nanos;

use crate::director::{Director, StateSource};

use super::run::{FailureSpec, Recovery, RecoveryResult, RunSpec};
use super::state::{StateCosts, StateModel};
use super::stats::percentiles;
use super::trace::{FlowIdx, TracePacket};
use super::workers::{Served, Workers};

/// The failure of one run, if it has one.
#[derive(Debug)]
pub struct Failure {
    spec: Option<FailureSpec>,
    costs: StateCosts,
    capacity: f64,
    checkpoint_start: Nanos,
    bytes_since_checkpoint: u64,
    recovering: Vec<bool>,
    orphan_latency_us: Vec<f64>,
    result: Option<RecoveryResult>,
}

impl Failure {
    pub fn new(spec: &RunSpec, flows: usize) -> Failure {
        let checkpoint_start = match spec.failure.map(|f| (f.at, f.recovery)) {
            Some((at, Recovery::Replay { checkpoint })) if checkpoint.0 > 0 => {
                Nanos(at.0 / checkpoint.0 * checkpoint.0)
            }
            _ => Nanos(u64::MAX),
        };
        Failure {
            spec: spec.failure,
            costs: spec.costs,
            capacity: spec.director.worker_capacity.0,
            checkpoint_start,
            bytes_since_checkpoint: 0,
            recovering: if spec.failure.is_some() { vec![false; flows] } else { Vec::new() },
            orphan_latency_us: Vec::new(),
            result: None,
        }
    }

    /// Fails the worker if its time has come.
    pub fn maybe_fail(
        &mut self,
        now: Nanos,
        director: &mut Director,
        workers: &mut Workers,
        state: &mut StateModel,
    ) {
        let Some(f) = self.spec else { return };
        if self.result.is_some() || now < f.at {
            return;
        }
        let Some(active_flows) =
            director.workers().iter().find(|w| w.id == f.worker).map(|w| w.active_flowlets)
        else {
            return;
        };
        let queued = workers.get(f.worker).map_or(0, |w| w.in_flight(now)) as u64;
        let Ok(orphaned) = director.worker_failed(f.worker) else { return };
        workers.stop(f.worker);
        let c = self.costs;
        let load = c.peer_rtt.saturating_add(c.wire(u64::from(active_flows) * c.state_bytes));
        let (recovery, lost, replayed) = match f.recovery {
            Recovery::OutputLogger => (load, queued, 0),
            Recovery::Replay { .. } => {
                let replay =
                    Nanos((self.bytes_since_checkpoint as f64 * 1e9 / self.capacity.max(1.0)) as u64);
                (load.saturating_add(replay), 0, queued)
            }
        };
        state.recovered_at = now.saturating_add(recovery);
        self.result = Some(RecoveryResult {
            failed_worker: f.worker.0,
            at_ms: now.0 as f64 / 1e6,
            orphaned_flows: orphaned,
            active_flows: active_flows as usize,
            recovery_us: recovery.0 as f64 / 1e3,
            lost,
            replayed,
            held: 0,
            orphan_latency_us: Default::default(),
        });
    }

    /// A flowlet of `flow` started with its state from `source`.
    pub fn flowlet_start(&mut self, flow: FlowIdx, source: StateSource) {
        if let Some(r) = self.recovering.get_mut(flow.0 as usize) {
            *r = matches!(source, StateSource::Recover { .. });
        }
    }

    /// Packet `p` was served by `worker`.
    pub fn served(&mut self, p: &TracePacket, worker: crate::units::WorkerId, s: &Served) {
        let Some(f) = self.spec else { return };
        match self.result.as_mut() {
            None => {
                if worker == f.worker && p.at >= self.checkpoint_start {
                    self.bytes_since_checkpoint += p.len.0;
                }
            }
            Some(r) => {
                if self.recovering.get(p.flow.0 as usize).copied().unwrap_or(false) {
                    self.orphan_latency_us.push(s.latency.0 as f64 / 1e3);
                    r.held += u64::from(s.state_wait.0 > 0);
                }
            }
        }
    }

    pub fn result(&mut self) -> Option<RecoveryResult> {
        let mut r = self.result?;
        r.orphan_latency_us = percentiles(&mut self.orphan_latency_us);
        Some(r)
    }
}
