//! The director: per packet, which worker processes it and with which logical clock; per
//! tick, the scaling and replication decisions. It performs none of them.
//!
//! Per packet ([`Director::steer`]): look the flow up (direction-normalised key), detect
//! whether the packet starts a flowlet ([`crate::flowlet`]), and if so estimate the flowlet's
//! demand ([`crate::demand`]) and assign it under the configured [`Policy`]
//! ([`crate::assign`] for SNF); then number the packet with the flow's next logical clock and
//! count it as drained to its worker ([`crate::load`]).
//!
//! Per tick ([`Director::tick`], meant to run once per load bucket, 500 µs by default): move
//! the load windows, fire the flows' timers — half the flowlet timeout after a flow's last
//! packet choose its replication targets ([`crate::replicate`]), past the timeout end its
//! flowlet — then apply the launch and retire rules ([`crate::scaling`]) and, rarely, sweep
//! flows idle for the flow idle timeout. Each flow has at most one timer queued, so the queue
//! is bounded by the flow table.
//!
//! A flowlet's measured rate does not depend on when its end is noticed (it is measured up to
//! T after its last packet), but the global average learns of it only then — at the tick after
//! that, or at the flow's next packet — so first-flowlet estimates follow the tick cadence.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use nflet_nfs::flow::{core_for, FlowKey};
use nflet_nfs::ids::Bytes;
use nflet_nfs::rng::Rng;
use nflet_nfs::time::Nanos;

pub use crate::decision::{
    Decision, DirectorCounters, FlowView, FlowletAssignment, Replication, StateSource, Steer,
};

use crate::assign::{pack, Candidate};
use crate::config::{ConfigError, DirectorConfig, Policy, ReplicaChoice};
use crate::demand::{ewma, measured_rate, GlobalAverage};
use crate::flowlet::{detect, FlowTable, FlowletStart, FlowletStats, TableCounters};
use crate::replicate::{by_packing, choose, Replicas};
use crate::scaling::{NotActive, NotPending, Pool, ScaleDecision, Worker};
use crate::units::{LogicalClock, Rate, WorkerId};

/// The director's record of one flow.
#[derive(Debug, Clone, Copy)]
struct FlowRecord {
    flowlet: FlowletStats,
    owner: WorkerId,
    /// The worker that ran the flow's first flowlet: the NFs there allocated its resources
    /// from their instance's share (a NAT mapping's public port), which other workers then
    /// carry along when the flow moves. Restored flows count their owner at the restore.
    origin: WorkerId,
    /// Demand estimate of the current (or last) flowlet.
    demand: Rate,
    /// Measured rate of the last ended flowlet, for the next estimate.
    measured: Option<Rate>,
    /// The current flowlet is counted on its owner.
    active: bool,
    /// Its demand estimate is still reserved on the owner (see
    /// [`DirectorConfig::release_idle_reservation`]).
    reserving: bool,
    clock: LogicalClock,
    replicas: Replicas,
    /// The flow's clock when the replicas were chosen; they hold current state only while the
    /// flow's clock has not moved since.
    replicas_clock: Option<LogicalClock>,
    timer_armed: bool,
    epoch: u64,
    /// The owner failed: the next packet starts a flowlet whose state comes from the failed
    /// owner's output logger.
    orphaned: bool,
    /// The clock of the current flowlet's first packet, and where its state came from.
    flowlet_clock: LogicalClock,
    source: StateSource,
}

impl FlowRecord {
    fn fresh_replicas(&self) -> Option<&Replicas> {
        (self.replicas_clock == Some(self.clock)).then_some(&self.replicas)
    }
}

/// A flow's next timer; ordered by due time only.
#[derive(Debug, Clone, Copy)]
struct Timer {
    due: Nanos,
    key: FlowKey,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        self.due.cmp(&other.due)
    }
}

/// What of a flow survives a director restart: where its state is, the worker it started on
/// (whose NAT port share its mapping came from: see [`Director::started_on`]) and how far its
/// clock got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedFlow {
    pub flow: FlowKey,
    pub owner: WorkerId,
    pub origin: WorkerId,
    pub clock: LogicalClock,
}

/// The scale-out director (one per steering point; no shared state).
#[derive(Debug)]
pub struct Director {
    cfg: DirectorConfig,
    flows: FlowTable<FlowRecord>,
    pool: Pool,
    global: GlobalAverage,
    timers: BinaryHeap<Reverse<Timer>>,
    rng: Rng,
    counters: DirectorCounters,
    next_sweep: Nanos,
    scratch: Vec<WorkerId>,
}

/// Ends `r`'s active flowlet: the owner stops counting it and its measured rate feeds the
/// global average and the flow's next estimate. `split_at`: the packet that cut the flowlet
/// (size, reallocation); `None` when it ended idle, T after its last packet.
fn end_flowlet(
    r: &mut FlowRecord,
    split_at: Option<Nanos>,
    pool: &mut Pool,
    global: &mut GlobalAverage,
    cfg: &DirectorConfig,
) {
    if !r.active {
        return;
    }
    r.active = false;
    let end = split_at.unwrap_or(r.flowlet.last.saturating_add(cfg.flowlet_timeout));
    let m = measured_rate(&r.flowlet, end, cfg.metric);
    global.record(r.flowlet.amount(cfg.metric), end.saturating_sub(r.flowlet.start));
    r.measured = Some(m);
    let reserved = if r.reserving { r.demand } else { Rate::ZERO };
    r.reserving = false;
    if let Some(w) = pool.get_mut(r.owner) {
        w.flowlet_ended(reserved);
    }
}

fn candidates<'a>(
    pool: &'a [Worker],
    cap: Rate,
    holds: impl Fn(WorkerId) -> bool + 'a,
) -> impl Iterator<Item = Candidate> + 'a {
    pool.iter().filter(|w| !w.draining).map(move |w| Candidate {
        worker: w.id,
        load: w.load(),
        capacity: cap,
        has_state: holds(w.id),
    })
}

/// The director's parts a flowlet start updates besides the flow's record.
struct Parts<'a> {
    pool: &'a mut Pool,
    global: &'a mut GlobalAverage,
    counters: &'a mut DirectorCounters,
    cfg: &'a DirectorConfig,
}

/// Starts a flowlet of `r` at the packet (`now`, `len`): ends the previous one, estimates the
/// demand, assigns a worker under the policy and says where the state comes from. `None` when
/// there is no worker at all.
fn start_flowlet(
    r: &mut FlowRecord,
    p: Parts<'_>,
    reason: FlowletStart,
    new: bool,
    now: Nanos,
    len: Bytes,
    epoch: u64,
) -> Option<FlowletAssignment> {
    let cfg = p.cfg;
    let split_at = match reason {
        FlowletStart::Size | FlowletStart::Realloc | FlowletStart::Failover => Some(now),
        FlowletStart::NewFlow | FlowletStart::Idle => None,
    };
    end_flowlet(r, split_at, p.pool, p.global, cfg);
    let demand = match (new, r.measured) {
        (false, Some(m)) => ewma(cfg.ewma_weight, m, r.demand),
        _ => p.global.get(),
    };
    let previous = r.owner;
    let fresh = r.fresh_replicas().copied();
    let holds = move |w: WorkerId| !new && (w == previous || fresh.is_some_and(|f| f.contains(w)));
    let repack = match (cfg.policy, reason) {
        (_, FlowletStart::NewFlow | FlowletStart::Failover)
        | (Policy::Flowlet, _)
        | (Policy::PerFlowRealloc { .. }, FlowletStart::Realloc) => true,
        (Policy::PerFlow | Policy::PerFlowRealloc { .. }, _) => false,
    };
    let alpha = if cfg.policy == Policy::Flowlet { cfg.alpha } else { 0.0 };
    // A size cut has no gap in which a replica could have been pushed: moving it always
    // pulls. With `size_cut_stays` it stays where it is while its owner is not overloaded
    // (the owner's load already counts the flow: staying adds nothing).
    let stays = cfg.size_cut_stays
        && reason == FlowletStart::Size
        && p.pool
            .active()
            .iter()
            .any(|w| w.id == previous && !w.draining && w.load().0 <= cfg.worker_capacity.0);
    let (worker, overflow) = if stays {
        (previous, false)
    } else if repack || p.pool.get(previous).is_none() {
        let mut choice = pack(candidates(p.pool.active(), cfg.worker_capacity, &holds), demand, alpha);
        // No room on the serving workers: a draining one serves again (module doc of
        // `scaling`, "Drain").
        if choice.is_none_or(|c| c.overflow) && p.pool.undrain() {
            choice = pack(candidates(p.pool.active(), cfg.worker_capacity, &holds), demand, alpha);
        }
        match choice {
            Some(c) => (c.worker, c.overflow),
            None => {
                p.counters.no_worker += 1;
                return None;
            }
        }
    } else {
        (previous, false)
    };
    let state = if new {
        StateSource::Fresh
    } else if r.orphaned && !fresh.is_some_and(|f| f.contains(worker)) {
        StateSource::Recover { failed: previous }
    } else if worker == previous {
        StateSource::Local
    } else if fresh.is_some_and(|f| f.contains(worker)) {
        StateSource::Replica { from: previous }
    } else {
        StateSource::Pull { from: previous }
    };
    let c = &mut *p.counters;
    c.flowlets += 1;
    c.overflows += u64::from(overflow);
    match reason {
        FlowletStart::NewFlow => c.new_flows += 1,
        FlowletStart::Idle => c.idle_starts += 1,
        FlowletStart::Size => c.size_starts += 1,
        FlowletStart::Realloc => c.realloc_starts += 1,
        FlowletStart::Failover => c.failover_starts += 1,
    }
    match state {
        StateSource::Fresh => {}
        StateSource::Local => c.state_local += 1,
        StateSource::Replica { .. } => c.state_replica += 1,
        StateSource::Pull { .. } => c.state_pull += 1,
        StateSource::Recover { .. } => c.state_recover += 1,
    }
    r.owner = worker;
    if new {
        r.origin = worker;
    }
    r.demand = demand;
    r.flowlet = FlowletStats::first(now, len);
    r.active = true;
    r.reserving = true;
    r.replicas = Replicas::EMPTY;
    r.replicas_clock = None;
    r.epoch = epoch;
    r.orphaned = false;
    if let Some(w) = p.pool.get_mut(worker) {
        w.flowlet_started(demand);
    }
    Some(FlowletAssignment { reason, state, demand, overflow })
}

impl Director {
    pub fn new(cfg: DirectorConfig) -> Result<Director, ConfigError> {
        cfg.validate()?;
        Ok(Director {
            flows: FlowTable::new(cfg.flow_capacity),
            pool: Pool::new(&cfg),
            global: GlobalAverage::new(cfg.initial_demand),
            timers: BinaryHeap::with_capacity(cfg.flow_capacity.min(1 << 16)),
            rng: Rng::new(cfg.seed),
            counters: DirectorCounters::default(),
            next_sweep: Nanos(cfg.flow_idle_timeout.0 / 2),
            scratch: Vec::with_capacity(usize::from(cfg.max_workers)),
            cfg,
        })
    }

    pub fn config(&self) -> &DirectorConfig {
        &self.cfg
    }

    pub fn counters(&self) -> DirectorCounters {
        DirectorCounters { drains: self.pool.drains(), ..self.counters }
    }

    pub fn table_counters(&self) -> TableCounters {
        self.flows.counters()
    }

    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Active workers, ascending ID.
    pub fn workers(&self) -> &[Worker] {
        self.pool.active()
    }

    pub fn pending_launch(&self) -> Option<WorkerId> {
        self.pool.pending()
    }

    /// The global average flowlet rate (the estimate for first flowlets).
    pub fn global_average(&self) -> Rate {
        self.global.get()
    }

    pub fn flow(&self, key: &FlowKey) -> Option<FlowView> {
        self.flows.get(key).map(|r| FlowView {
            owner: r.owner,
            clock: r.clock,
            flowlet: r.flowlet,
            flowlet_active: r.active,
            demand: r.demand,
            replicas: r.fresh_replicas().copied(),
        })
    }

    /// Every tracked flow's owner and clock, for a snapshot that a restarted director
    /// [restores](Director::restore).
    pub fn saved_flows(&self) -> Vec<SavedFlow> {
        self.flows
            .iter()
            .map(|(k, r)| SavedFlow { flow: *k, owner: r.owner, origin: r.origin, clock: r.clock })
            .collect()
    }

    /// Takes over flows a previous director saved, at `now`. Each becomes a tracked flow whose
    /// flowlet has ended, owned where it was, its clock moved `margin` ahead (the previous
    /// director may have numbered packets after its snapshot; a worker takes a clock far
    /// ahead as "pull first" unless it holds the state itself). The flow's next packet starts
    /// a flowlet: on the owner if it is active here and packed there, else on another worker
    /// that pulls the state from the owner. Flows already tracked are left alone; returns
    /// how many were restored (the table's capacity bounds it).
    pub fn restore(&mut self, now: Nanos, saved: &[SavedFlow], margin: u64) -> usize {
        let mut restored = 0;
        // The flowlet ended before `now`, so the flow's next packet starts one.
        let ended = Nanos(now.0.saturating_sub(self.cfg.flowlet_timeout.0.saturating_add(1)));
        for s in saved {
            let record = || FlowRecord {
                flowlet: FlowletStats::first(ended, Bytes(0)),
                owner: s.owner,
                origin: s.origin,
                demand: self.global.get(),
                measured: None,
                active: false,
                clock: LogicalClock(s.clock.0.saturating_add(margin)),
                replicas: Replicas::EMPTY,
                replicas_clock: None,
                timer_armed: false,
                epoch: 0,
                orphaned: false,
                reserving: false,
                flowlet_clock: LogicalClock::ZERO,
                source: StateSource::Fresh,
            };
            if let Ok((_, true)) = self.flows.get_or_insert(s.flow, record) {
                restored += 1;
            }
        }
        restored
    }

    /// Tracked flows whose state is on worker `id` (still answering pulls after it retired).
    pub fn owned_by(&self, id: WorkerId) -> usize {
        self.flows.values().filter(|r| r.owner == id).count()
    }

    /// Tracked flows that started on worker `id` (see `FlowRecord::origin`), wherever they
    /// run now. While any is tracked, a *new* process must not take `id`: it would hand out
    /// the NAT ports of `id`'s share that those flows still use elsewhere. (The running
    /// process under `id`, warm or retired, knows its ports and may serve again.)
    pub fn started_on(&self, id: WorkerId) -> usize {
        self.started_counts().get(usize::from(id.0)).copied().unwrap_or(0)
    }

    /// [`Director::started_on`] of every worker id at once (index = id), in one pass over the
    /// flows.
    pub fn started_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; usize::from(self.cfg.max_workers)];
        for r in self.flows.values() {
            let i = usize::from(r.origin.0);
            if counts.len() <= i {
                counts.resize(i + 1, 0);
            }
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        }
        counts
    }

    /// Ids a launch must not take, as the caller knows them (see [`Director::started_on`]);
    /// replaces the previous list.
    pub fn set_unavailable(&mut self, ids: Vec<WorkerId>) {
        self.pool.set_unavailable(ids);
    }

    /// The pending launch `id` is up: it joins the packing.
    pub fn worker_ready(&mut self, id: WorkerId) -> Result<(), NotPending> {
        self.pool.ready(id)
    }

    /// The pending launch `id` is served by `instead`, a worker already running but not
    /// active (a warm spare with another id): see [`Pool::redirect`].
    pub fn redirect_launch(&mut self, id: WorkerId, instead: WorkerId) -> Result<(), NotPending> {
        self.pool.redirect(id, instead)
    }

    /// The pending launch `id` failed.
    pub fn launch_failed(&mut self, id: WorkerId) -> Result<(), NotPending> {
        self.pool.launch_failed(id)
    }

    fn arm(timers: &mut BinaryHeap<Reverse<Timer>>, r: &mut FlowRecord, key: FlowKey, due: Nanos) {
        if !r.timer_armed {
            r.timer_armed = true;
            timers.push(Reverse(Timer { due, key }));
        }
    }

    /// The active worker `id` failed (fail-stop, SNF §6). It leaves the pool at once; every
    /// flow it owned is orphaned: the flow's next packet starts a flowlet (reason
    /// [`FlowletStart::Failover`] if the flowlet was still running) on a live worker, which
    /// takes the state from a fresh replica if it holds one and otherwise recovers it from the
    /// failed worker's output logger ([`StateSource::Recover`]). Replicas on the failed worker
    /// are forgotten. Returns the number of flows orphaned, or `NotActive` for a worker that
    /// is not active. The launch rule replaces the capacity if the others are saturated.
    pub fn worker_failed(&mut self, id: WorkerId) -> Result<usize, NotActive> {
        if !self.pool.fail(id) {
            return Err(NotActive(id));
        }
        self.counters.failures += 1;
        let mut orphaned = 0;
        for r in self.flows.values_mut() {
            r.replicas.remove(id);
            if r.owner == id {
                // The flowlet's demand left with the worker's counts.
                orphaned += 1;
                r.orphaned = true;
            }
        }
        Ok(orphaned)
    }

    /// Flows whose current flowlet runs on a live worker that was to pull the state from
    /// `failed` (a moved flowlet whose pull may still be waiting), with that worker: the
    /// state is to come from `failed`'s output logger instead.
    pub fn pulling_from(&self, failed: WorkerId) -> Vec<(FlowKey, WorkerId)> {
        self.flows
            .iter()
            .filter(|(_, r)| r.owner != failed && r.source.moves_from() == Some(failed))
            .map(|(k, r)| (*k, r.owner))
            .collect()
    }

    /// Steers one packet of `len` bytes of flow `key` arriving at `now`.
    pub fn steer(&mut self, now: Nanos, key: FlowKey, len: Bytes) -> Steer {
        self.counters.packets += 1;
        let cfg = &self.cfg;
        let half = Nanos(cfg.flowlet_timeout.0 / 2);
        let epoch = match cfg.policy {
            Policy::PerFlowRealloc { period } => now.0 / period.0.max(1),
            Policy::Flowlet | Policy::PerFlow => 0,
        };
        let placeholder = || FlowRecord {
            flowlet: FlowletStats::first(now, len),
            owner: WorkerId(0),
            origin: WorkerId(0),
            demand: Rate::ZERO,
            measured: None,
            active: false,
            clock: LogicalClock::ZERO,
            replicas: Replicas::EMPTY,
            replicas_clock: None,
            timer_armed: false,
            epoch,
            orphaned: false,
            reserving: false,
            flowlet_clock: LogicalClock::ZERO,
            source: StateSource::Fresh,
        };
        let (r, new) = match self.flows.get_or_insert(key, placeholder) {
            Ok(x) => x,
            Err(_) => {
                let active = self.pool.active();
                if active.is_empty() {
                    self.counters.no_worker += 1;
                    return Steer::NoWorker;
                }
                let i = core_for(key.hash(), active.len());
                let Some(w) = active.get(i).map(|w| w.id) else {
                    self.counters.no_worker += 1;
                    return Steer::NoWorker;
                };
                self.counters.untracked += 1;
                return Steer::Untracked { worker: w };
            }
        };

        let reason = if new {
            Some(FlowletStart::NewFlow)
        } else if r.orphaned {
            // Never to the failed worker, even within a flowlet.
            Some(
                detect(&r.flowlet, now, len, cfg.flowlet_timeout, cfg.flowlet_max_bytes)
                    .unwrap_or(FlowletStart::Failover),
            )
        } else if epoch > r.epoch {
            Some(FlowletStart::Realloc)
        } else {
            detect(&r.flowlet, now, len, cfg.flowlet_timeout, cfg.flowlet_max_bytes)
        };

        let mut start = None;
        if let Some(reason) = reason {
            let parts =
                Parts { pool: &mut self.pool, global: &mut self.global, counters: &mut self.counters, cfg };
            match start_flowlet(r, parts, reason, new, now, len, epoch) {
                Some(a) => start = Some(a),
                None => return Steer::NoWorker,
            }
        } else {
            r.flowlet.add(now, len);
        }
        r.clock = r.clock.next();
        if let Some(a) = &start {
            r.flowlet_clock = r.clock;
            r.source = a.state;
        }
        // Replication (SNF policy only) or the reservation's release at half the timeout;
        // the end of the flowlet otherwise.
        let due = if (cfg.policy == Policy::Flowlet && cfg.replicas > 0) || cfg.release_idle_reservation {
            half
        } else {
            cfg.flowlet_timeout.saturating_add(Nanos(1))
        };
        Self::arm(&mut self.timers, r, key, now.saturating_add(due));
        let worker = r.owner;
        let amount = match cfg.metric {
            crate::config::Metric::Bytes => len.0,
            crate::config::Metric::Packets => 1,
        };
        if let Some(w) = self.pool.get_mut(worker) {
            w.drained.record(now, amount);
        }
        Steer::Flow { worker, clock: r.clock, start, flowlet: r.flowlet_clock, source: r.source }
    }

    /// Runs the director's timers and rules at `now`, appending decisions to `out`.
    pub fn tick(&mut self, now: Nanos, out: &mut Vec<Decision>) {
        self.pool.advance(now);
        self.fire_timers(now, out);
        if let Some(d) = self.pool.launch_decision() {
            self.counters.launches += 1;
            out.push(Decision::Scale(d));
        }
        if let Some(d) = self.pool.retire_decision(now) {
            if let ScaleDecision::Retire { worker, .. } = d {
                self.counters.retirements += 1;
                // Flows keep the retired worker as their owner: the next flowlet of each is
                // packed onto an active worker, which pulls the state from the retired one
                // (the caller keeps it answering pulls while [`Director::owned_by`] is not 0).
                for r in self.flows.values_mut() {
                    r.replicas.remove(worker);
                }
            }
            out.push(Decision::Scale(d));
        }
        if now >= self.next_sweep {
            let idle = self.cfg.flow_idle_timeout;
            self.next_sweep = now.saturating_add(Nanos(idle.0 / 2));
            self.flows.sweep(|r| !r.active && !r.timer_armed && now.saturating_sub(r.flowlet.last) >= idle);
        }
    }

    fn fire_timers(&mut self, now: Nanos, out: &mut Vec<Decision>) {
        let cfg = &self.cfg;
        let half = Nanos(cfg.flowlet_timeout.0 / 2);
        let replicate = cfg.policy == Policy::Flowlet && cfg.replicas > 0;
        while let Some(Reverse(t)) = self.timers.peek().copied() {
            if t.due > now {
                break;
            }
            self.timers.pop();
            let Some(r) = self.flows.get_mut(&t.key) else { continue };
            r.timer_armed = false;
            if !r.active {
                continue;
            }
            let idle = now.saturating_sub(r.flowlet.last);
            // A tick later than half the timeout (ticks are a load bucket apart, as long as T
            // by default) still pushes the state, even when the flowlet has ended meanwhile:
            // the state is final then, and the next flowlet will want it.
            if replicate && idle >= half && r.fresh_replicas().is_none() && !r.orphaned {
                self.scratch.clear();
                self.scratch.extend(self.pool.active().iter().map(|w| w.id));
                let to = match cfg.replica_choice {
                    ReplicaChoice::WeightedRandom => {
                        choose(&self.scratch, Some(r.owner), cfg.replicas, &mut self.rng)
                    }
                    ReplicaChoice::Packing => {
                        let cands: Vec<Candidate> =
                            candidates(self.pool.active(), cfg.worker_capacity, |_| false).collect();
                        by_packing(&cands, r.owner, r.demand, cfg.replicas)
                    }
                };
                r.replicas = to;
                r.replicas_clock = Some(r.clock);
                self.counters.replications += 1;
                out.push(Decision::Replicate(Replication { flow: t.key, from: r.owner, to, clock: r.clock }));
            }
            if idle > cfg.flowlet_timeout {
                end_flowlet(r, None, &mut self.pool, &mut self.global, cfg);
                continue;
            }
            if cfg.release_idle_reservation && r.reserving && idle >= half {
                // Idle for T/2: the burst is over, whether or not the flowlet is (it ends at T).
                r.reserving = false;
                if let Some(w) = self.pool.get_mut(r.owner) {
                    w.release(r.demand);
                }
            }
            let next = if (replicate && r.fresh_replicas().is_none() && !r.orphaned)
                || (cfg.release_idle_reservation && r.reserving)
            {
                r.flowlet.last.saturating_add(half)
            } else {
                r.flowlet.last.saturating_add(cfg.flowlet_timeout).saturating_add(Nanos(1))
            };
            Self::arm(&mut self.timers, r, t.key, next.max(now.saturating_add(Nanos(1))));
        }
    }
}

#[cfg(test)]
#[path = "director_tests.rs"]
mod tests;
