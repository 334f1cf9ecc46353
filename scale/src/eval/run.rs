//! One evaluation run: a trace replayed through the real [`Director`] on a virtual clock, its
//! decisions carried out on modelled workers and modelled state.
//!
//! Per packet the director steers; a flowlet start asks the state model when the state is in
//! place; the chosen worker's FIFO gives the packet's latency. The director ticks at every
//! load bucket boundary (500 µs by default) before the packets at or after it: a `Launch` is
//! carried out by starting the modelled worker after the launch delay and reporting it ready;
//! a `Retire` stops it; a `Replicate` is a proactive push in the state model. Every epoch
//! (100 ms, SNF §9.1) records the offered demand, the provisioned capacity (active workers,
//! averaged over the epoch's ticks, times their capacity) and each worker's utilisation.
//!
//! A failure (§9.4) takes a worker down at a tick: its queued packets are lost (or, for replay
//! recovery, replayed), the director orphans its flows, and the recovery model says when its
//! flows' state is back.

use hashbrown::HashMap;
use nflet_nfs::flow::FlowKey;
use nflet_nfs::time::Nanos;
use serde::Serialize;

use crate::config::{ConfigError, DirectorConfig, Policy};
use crate::director::{Decision, Director, DirectorCounters, Steer};
use crate::flowlet::FlowletStart;
use crate::scaling::ScaleDecision;
use crate::units::WorkerId;

use super::failure::Failure;
use super::state::{StateCosts, StateCounters, StateModel, StateStrategy};
use super::stats::{cdf, percentiles, Percentiles};
use super::trace::{FlowIdx, Trace};
use super::workers::Workers;

/// How a failed worker's state comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// SNF §6: the failed worker's output logger holds its state; the recovery pulls it.
    OutputLogger,
    /// Checkpoint + replay (FTMB-like): load the last checkpoint, then re-process the failed
    /// worker's input-logged packets since it at the worker's capacity.
    Replay { checkpoint: Nanos },
}

/// A worker failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureSpec {
    pub at: Nanos,
    pub worker: WorkerId,
    pub recovery: Recovery,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub name: String,
    pub director: DirectorConfig,
    pub state: StateStrategy,
    pub costs: StateCosts,
    pub launch_delay: Nanos,
    pub epoch: Nanos,
    pub failure: Option<FailureSpec>,
}

/// One 100 ms epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Epoch {
    pub start_ms: f64,
    /// Offered load, Gbit/s.
    pub demand_gbps: f64,
    /// Active workers × capacity, averaged over the epoch, Gbit/s.
    pub provisioned_gbps: f64,
    /// Highest worker utilisation in the epoch.
    pub max_utilisation: f64,
}

/// What a failure cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RecoveryResult {
    pub failed_worker: u16,
    pub at_ms: f64,
    /// Flows the failed worker owned, and those with a flowlet running at the failure.
    pub orphaned_flows: usize,
    pub active_flows: usize,
    /// Until the running flows' state is on the recovery side, µs.
    pub recovery_us: f64,
    /// Packets queued at the failed worker and never processed.
    pub lost: u64,
    /// Packets queued at the failed worker and processed again by the replay.
    pub replayed: u64,
    /// Packets of orphaned flows held until their state was back.
    pub held: u64,
    /// Latency of the orphaned flows' packets after the failure, µs.
    pub orphan_latency_us: Percentiles,
}

/// Flowlet sizes seen (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FlowletSizes {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub name: String,
    pub packets: u64,
    pub served: u64,
    pub no_worker: u64,
    /// Times the director placed work: new flows, and every flowlet (SNF) or reallocation.
    pub assignment_opportunities: u64,
    pub flowlets: FlowletSizes,
    /// Packet latency, µs.
    pub latency_us: Percentiles,
    /// (latency µs, fraction of packets at or below it).
    pub latency_cdf_us: Vec<(f64, f64)>,
    /// Per-epoch worker utilisation (one sample per worker per epoch).
    pub utilisation: Percentiles,
    pub overloaded_worker_epochs: usize,
    pub underused_worker_epochs: usize,
    pub worker_epochs: usize,
    pub epochs: Vec<Epoch>,
    /// Provisioned / demand over epochs with demand.
    pub provision_ratio_mean: f64,
    /// Provisioned capacity summed over the epochs / demand summed over the epochs.
    pub provision_ratio_total: f64,
    /// The busiest epoch's demand, Gbit/s.
    pub peak_demand_gbps: f64,
    pub provision_ratio_max: f64,
    /// Per epoch, provisioned capacity ÷ the fewest whole workers that carry the demand
    /// (⌈demand / capacity⌉): 1 means not one worker more than needed. Mean and max over the
    /// epochs with demand.
    pub provision_vs_min_mean: f64,
    pub provision_vs_min_max: f64,
    /// Provisioned ÷ demand over the *busy* epochs, those with at least half the peak
    /// epoch's demand (where whole workers round the capacity up by little): capacity summed
    /// ÷ demand summed, and the worst epoch.
    pub provision_ratio_busy: f64,
    pub provision_ratio_busy_max: f64,
    /// Epochs in which some worker was above capacity.
    pub overloaded_epochs: usize,
    pub mean_workers: f64,
    pub max_workers: usize,
    pub moved_flowlets: u64,
    pub state_in_place: u64,
    pub in_place_share: Option<f64>,
    pub replications: u64,
    /// Packets held for their flow's state, and how long, µs.
    pub held_packets: u64,
    pub state_wait_us: Percentiles,
    pub recovery: Option<RecoveryResult>,
    pub counters: DirectorCounters,
    pub state: StateCounters,
}

/// Maps the director's flow keys back to trace flows.
pub fn key_index(trace: &Trace) -> HashMap<FlowKey, FlowIdx> {
    trace.keys.iter().enumerate().map(|(i, k)| (*k, FlowIdx(i as u32))).collect()
}

struct Epochs {
    len: Nanos,
    end: Nanos,
    offered: u64,
    active_ticks: u64,
    ticks: u64,
    done: Vec<Epoch>,
    utils: Vec<f64>,
}

impl Epochs {
    fn close(&mut self, workers: &mut Workers, capacity: f64) {
        let secs = self.len.as_secs_f64();
        let mut max_util: f64 = 0.0;
        for w in workers.iter_mut() {
            if w.seen_in_epoch {
                let u = w.epoch_bytes as f64 / (capacity * secs);
                max_util = max_util.max(u);
                self.utils.push(u);
            }
            w.epoch_bytes = 0;
            w.seen_in_epoch = w.active;
        }
        let workers_avg = if self.ticks > 0 { self.active_ticks as f64 / self.ticks as f64 } else { 0.0 };
        self.done.push(Epoch {
            start_ms: self.end.saturating_sub(self.len).0 as f64 / 1e6,
            demand_gbps: self.offered as f64 * 8.0 / secs / 1e9,
            provisioned_gbps: workers_avg * capacity * 8.0 / 1e9,
            max_utilisation: max_util,
        });
        self.offered = 0;
        self.active_ticks = 0;
        self.ticks = 0;
        self.end = self.end.saturating_add(self.len);
    }
}

/// Replays `trace` under `spec`.
pub fn run(
    trace: &Trace,
    index: &HashMap<FlowKey, FlowIdx>,
    spec: &RunSpec,
) -> Result<RunResult, ConfigError> {
    let cfg = spec.director.clone();
    let capacity = cfg.worker_capacity.0;
    let mut director = Director::new(cfg.clone())?;
    let mut workers = Workers::new(cfg.max_workers, cfg.initial_workers, cfg.worker_capacity);
    let mut state = StateModel::new(spec.state, spec.costs, trace.keys.len());
    let tick_len = cfg.load_bucket;
    let epoch_len = if spec.epoch.0 > 0 { spec.epoch } else { Nanos::from_millis(100) };
    let mut epochs = Epochs {
        len: epoch_len,
        end: epoch_len,
        offered: 0,
        active_ticks: 0,
        ticks: 0,
        done: Vec::new(),
        utils: Vec::new(),
    };
    let mut next_tick = Nanos::ZERO;
    let (mut decisions, mut up) = (Vec::new(), Vec::new());
    let mut latencies: Vec<f64> = Vec::with_capacity(trace.packets.len());
    let mut waits: Vec<f64> = Vec::new();
    let mut cur_flowlet = vec![0u64; trace.keys.len()];
    let mut flowlet_sizes: Vec<f64> = Vec::new();
    let (mut served, mut no_worker, mut max_workers) = (0u64, 0u64, 0usize);
    let mut fail = Failure::new(spec, trace.keys.len());

    let end = trace.end().saturating_add(tick_len);
    let mut packets = trace.packets.iter().peekable();
    loop {
        let next_packet = packets.peek().map(|p| p.at);
        if next_packet.is_none_or(|at| next_tick <= at) {
            if next_tick > end {
                break;
            }
            // --- tick ---
            let now = next_tick;
            up.clear();
            workers.ready(now, &mut up);
            for id in &up {
                // A launch the director no longer waits for is simply ignored.
                let _ = director.worker_ready(*id);
            }
            fail.maybe_fail(now, &mut director, &mut workers, &mut state);
            decisions.clear();
            director.tick(now, &mut decisions);
            for d in &decisions {
                match *d {
                    Decision::Scale(ScaleDecision::Launch(id)) => workers.launch(id, now, spec.launch_delay),
                    Decision::Scale(ScaleDecision::Retire { worker, .. }) => workers.stop(worker),
                    Decision::Replicate(r) => {
                        if let Some(&f) = index.get(&r.flow) {
                            state.replicate(f, now, r.to.len());
                        }
                    }
                }
            }
            let active = workers.active();
            max_workers = max_workers.max(active);
            for w in workers.iter_mut().filter(|w| w.active) {
                w.seen_in_epoch = true;
            }
            epochs.active_ticks += active as u64;
            epochs.ticks += 1;
            next_tick = next_tick.saturating_add(tick_len);
            if next_tick >= epochs.end {
                epochs.close(&mut workers, capacity);
            }
            continue;
        }
        let Some(p) = packets.next() else { break };
        epochs.offered += p.len.0;
        let Some(&key) = trace.keys.get(p.flow.0 as usize) else { continue };
        let steer = director.steer(p.at, key, p.len);
        let (worker, ready) = match steer {
            Steer::Flow { worker, start, .. } => {
                if let Some(a) = start {
                    let pulls = state.counters.pulls + state.counters.store_reads;
                    state.flowlet_start(p.flow, p.at, a.state);
                    if a.reason == FlowletStart::Size
                        && state.counters.pulls + state.counters.store_reads > pulls
                    {
                        state.counters.after_size_split += 1;
                    }
                    fail.flowlet_start(p.flow, a.state);
                    if let Some(c) = cur_flowlet.get_mut(p.flow.0 as usize) {
                        if *c > 0 {
                            flowlet_sizes.push(*c as f64);
                        }
                        *c = 0;
                    }
                }
                (worker, state.ready(p.flow))
            }
            Steer::Untracked { worker } => (worker, p.at),
            Steer::NoWorker => {
                no_worker += 1;
                continue;
            }
        };
        if let Some(c) = cur_flowlet.get_mut(p.flow.0 as usize) {
            *c += p.len.0;
        }
        let Some(w) = workers.get_mut(worker) else {
            no_worker += 1;
            continue;
        };
        let s = w.serve(p.at, p.len, ready);
        fail.served(p, worker, &s);
        state.departed(p.flow, s.departure);
        served += 1;
        latencies.push(s.latency.0 as f64 / 1e3);
        if s.state_wait.0 > 0 {
            waits.push(s.state_wait.0 as f64 / 1e3);
        }
    }
    flowlet_sizes.extend(cur_flowlet.iter().filter(|&&c| c > 0).map(|&c| c as f64));
    let fs = percentiles(&mut flowlet_sizes);
    let latency_us = percentiles(&mut latencies);
    let latency_cdf_us = cdf(&latencies, 200);
    let utils = &mut epochs.utils;
    let worker_epochs = utils.len();
    let overloaded_worker_epochs = utils.iter().filter(|&&u| u > 1.0).count();
    let underused_worker_epochs = utils.iter().filter(|&&u| u < 0.5).count();
    let utilisation = percentiles(utils);
    let ratios: Vec<f64> = epochs
        .done
        .iter()
        .filter(|e| e.demand_gbps > 0.0)
        .map(|e| e.provisioned_gbps / e.demand_gbps)
        .collect();
    let capacity_gbps = capacity * 8.0 / 1e9;
    let vs_min: Vec<f64> = epochs
        .done
        .iter()
        .filter(|e| e.demand_gbps > 0.0)
        .map(|e| e.provisioned_gbps / ((e.demand_gbps / capacity_gbps).ceil() * capacity_gbps))
        .collect();
    let peak = epochs.done.iter().map(|e| e.demand_gbps).fold(0.0, f64::max);
    let busy: Vec<&Epoch> =
        epochs.done.iter().filter(|e| e.demand_gbps > 0.0 && e.demand_gbps >= peak / 2.0).collect();
    let busy_demand: f64 = busy.iter().map(|e| e.demand_gbps).sum();
    let provision_ratio_busy = if busy_demand > 0.0 {
        busy.iter().map(|e| e.provisioned_gbps).sum::<f64>() / busy_demand
    } else {
        0.0
    };
    let provision_ratio_busy_max =
        busy.iter().map(|e| e.provisioned_gbps / e.demand_gbps).fold(0.0, f64::max);
    let counters = director.counters();
    let opportunities = match cfg.policy {
        Policy::Flowlet => counters.flowlets,
        Policy::PerFlow => counters.new_flows + counters.failover_starts,
        Policy::PerFlowRealloc { .. } => {
            counters.new_flows + counters.realloc_starts + counters.failover_starts
        }
    };
    let mean_workers = if epochs.done.is_empty() {
        0.0
    } else {
        epochs.done.iter().map(|e| e.provisioned_gbps).sum::<f64>() / epochs.done.len() as f64 * 1e9
            / 8.0
            / capacity
    };
    Ok(RunResult {
        name: spec.name.clone(),
        packets: trace.packets.len() as u64,
        served,
        no_worker,
        assignment_opportunities: opportunities,
        flowlets: FlowletSizes { count: fs.count, p50: fs.p50, p99: fs.p99, max: fs.max },
        latency_us,
        latency_cdf_us,
        utilisation,
        overloaded_worker_epochs,
        underused_worker_epochs,
        worker_epochs,
        overloaded_epochs: epochs.done.iter().filter(|e| e.max_utilisation > 1.0).count(),
        provision_ratio_mean: if ratios.is_empty() {
            0.0
        } else {
            ratios.iter().sum::<f64>() / ratios.len() as f64
        },
        provision_ratio_total: {
            let d: f64 = epochs.done.iter().map(|e| e.demand_gbps).sum();
            let p: f64 = epochs.done.iter().map(|e| e.provisioned_gbps).sum();
            if d > 0.0 {
                p / d
            } else {
                0.0
            }
        },
        peak_demand_gbps: peak,
        provision_ratio_busy,
        provision_ratio_busy_max,
        provision_ratio_max: ratios.iter().copied().fold(0.0, f64::max),
        provision_vs_min_mean: if vs_min.is_empty() {
            0.0
        } else {
            vs_min.iter().sum::<f64>() / vs_min.len() as f64
        },
        provision_vs_min_max: vs_min.iter().copied().fold(0.0, f64::max),
        epochs: epochs.done,
        mean_workers,
        max_workers,
        moved_flowlets: state.counters.moved,
        state_in_place: state.counters.in_place,
        in_place_share: state.in_place_share(),
        replications: counters.replications,
        held_packets: waits.len() as u64,
        state_wait_us: percentiles(&mut waits),
        recovery: fail.result(),
        counters,
        state: state.counters,
    })
}
