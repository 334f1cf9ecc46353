//! The worker pool and the scaling rules: when to ask for a worker, when to let one go.
//!
//! SNF §4.2: "the controller adds new compute units if the existing ones are saturated, and
//! existing compute units are made inactive if they do not receive any packets for a fixed
//! amount of time", and launches are started early, "when existing units start to get heavily
//! utilized (say all have load > 90%)", to hide start-up time. Here:
//!
//! * **Launch** when every active worker is above the launch utilisation, no launch is pending
//!   and the pool is below its maximum. The new worker gets the lowest free ID and is *pending*
//!   (not packed onto) until the caller reports it ready; at most one launch is pending.
//! * **Retire** a worker that has been idle — no active flowlet assigned to it and a drained
//!   rate below the idle utilisation — for the retire delay, never below the minimum pool size,
//!   highest ID first, one at a time. A worker with an active flowlet is never retired: it
//!   drains first, and its idle time only starts counting once its last flowlet has ended.
//!
//! * **Drain** (with `drain_utilisation` > 0): when the summed load would fit on all
//!   but the highest-ID active worker at no more than the drain utilisation each, that worker
//!   stops receiving new flowlets; it retires the moment its last flowlet ends. When the
//!   others fill up (all above the launch utilisation, or a flowlet finds no room on them)
//!   it is taken back before any launch.
//!
//! A worker's load for packing and for these rules is its drained rate over the load window, as
//! in the paper, or, with `reserve_active_demand`, the larger of that and the summed demand
//! estimates of its active flowlets (see [`DirectorConfig::reserve_active_demand`]). Idleness
//! always looks at the drained rate and the active flowlets themselves.

use nflet_nfs::time::Nanos;

use crate::config::DirectorConfig;
use crate::load::LoadWindow;
use crate::units::{Rate, WorkerId};

/// One worker as the director tracks it.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: WorkerId,
    pub drained: LoadWindow,
    /// Flowlets assigned to this worker that have not ended.
    pub active_flowlets: u32,
    /// Sum of the demand estimates of those flowlets.
    pub reserved: Rate,
    /// Since when the worker has been idle, if it is.
    pub idle_since: Option<Nanos>,
    /// Not packed onto; retires once its flowlets have ended (module doc, "Drain").
    pub draining: bool,
    reserve: bool,
}

impl Worker {
    fn new(id: WorkerId, cfg: &DirectorConfig) -> Worker {
        Worker {
            id,
            drained: LoadWindow::new(cfg.load_bucket, cfg.load_window),
            active_flowlets: 0,
            reserved: Rate::ZERO,
            idle_since: None,
            draining: false,
            reserve: cfg.reserve_active_demand,
        }
    }

    /// The load the packer and the scaling rules see (as of the last window advance).
    #[inline]
    pub fn load(&self) -> Rate {
        let d = self.drained.last_rate();
        if self.reserve && self.reserved.0 > d.0 {
            self.reserved
        } else {
            d
        }
    }

    /// A flowlet of `demand` starts on this worker.
    pub fn flowlet_started(&mut self, demand: Rate) {
        self.active_flowlets = self.active_flowlets.saturating_add(1);
        self.reserved = Rate(self.reserved.0 + demand.0);
        self.idle_since = None;
    }

    /// A flowlet of `demand` on this worker stops being reserved before it ends.
    pub fn release(&mut self, demand: Rate) {
        self.reserved = Rate((self.reserved.0 - demand.0).max(0.0));
    }

    /// A flowlet on this worker ended; `demand` is what was still reserved for it.
    pub fn flowlet_ended(&mut self, demand: Rate) {
        self.active_flowlets = self.active_flowlets.saturating_sub(1);
        // Floating-point sums drift: reset exactly when nothing is active.
        self.reserved =
            if self.active_flowlets == 0 { Rate::ZERO } else { Rate((self.reserved.0 - demand.0).max(0.0)) };
    }
}

/// A scaling decision, for the caller to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDecision {
    /// Start a worker with this ID and report it with [`Pool::ready`] once it runs.
    Launch(WorkerId),
    /// Stop this worker; it has no active flowlet. The state of the flows it owned is handed
    /// to `successor` (the director re-points those flows).
    Retire { worker: WorkerId, successor: WorkerId },
}

/// The caller named a worker the pool does not know in the state it claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotPending(pub WorkerId);

impl std::fmt::Display for NotPending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scale: {} is not a pending launch", self.0)
    }
}

impl std::error::Error for NotPending {}

/// The caller named a worker that is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotActive(pub WorkerId);

impl std::fmt::Display for NotActive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "scale: {} is not an active worker", self.0)
    }
}

impl std::error::Error for NotActive {}

/// The active workers (ascending ID) and the pending launch.
#[derive(Debug, Clone)]
pub struct Pool {
    active: Vec<Worker>,
    pending: Option<WorkerId>,
    template: DirectorConfig,
    /// Workers that started draining.
    drains: u64,
    /// Ids a launch must not take ([`Pool::set_unavailable`]).
    unavailable: Vec<WorkerId>,
}

impl Pool {
    /// `cfg.initial_workers` active workers, IDs 0…
    pub fn new(cfg: &DirectorConfig) -> Pool {
        let active = (0..cfg.initial_workers).map(|i| Worker::new(WorkerId(i), cfg)).collect();
        Pool { active, pending: None, template: cfg.clone(), drains: 0, unavailable: Vec::new() }
    }

    /// Active workers in ascending ID order.
    pub fn active(&self) -> &[Worker] {
        &self.active
    }

    pub fn pending(&self) -> Option<WorkerId> {
        self.pending
    }

    pub fn get_mut(&mut self, id: WorkerId) -> Option<&mut Worker> {
        let i = self.active.binary_search_by_key(&id, |w| w.id).ok()?;
        self.active.get_mut(i)
    }

    pub fn get(&self, id: WorkerId) -> Option<&Worker> {
        let i = self.active.binary_search_by_key(&id, |w| w.id).ok()?;
        self.active.get(i)
    }

    /// Moves every worker's load window to `now`.
    pub fn advance(&mut self, now: Nanos) {
        for w in &mut self.active {
            w.drained.advance(now);
        }
    }

    /// Ids the launch rule must not choose (the caller's: a new process under them would
    /// reuse resources still in use), until the next call.
    pub fn set_unavailable(&mut self, ids: Vec<WorkerId>) {
        self.unavailable = ids;
    }

    /// The lowest id below `max_workers` neither active nor unavailable.
    fn lowest_free_id(&self) -> Option<WorkerId> {
        let taken = |id: WorkerId| self.get(id).is_some() || self.unavailable.contains(&id);
        (0..self.template.max_workers).map(WorkerId).find(|&id| !taken(id))
    }

    /// The launch rule; records the launch as pending when it fires.
    pub fn launch_decision(&mut self) -> Option<ScaleDecision> {
        let cfg = &self.template;
        if self.pending.is_some() || self.active.len() >= usize::from(cfg.max_workers) {
            return None;
        }
        // Below `min_workers` (workers failed): launch whatever the load. Without this a pool
        // whose last worker failed never launched again (the rule below needs a serving
        // worker to be saturated).
        if self.active.len() >= usize::from(cfg.min_workers) {
            let saturated = |w: &Worker| w.load().fraction_of(cfg.worker_capacity) > cfg.launch_utilisation;
            let mut serving = self.active.iter().filter(|w| !w.draining).peekable();
            if serving.peek().is_none() || !serving.all(saturated) {
                return None;
            }
            // A draining worker is taken back before anything is launched.
            if self.undrain() {
                return None;
            }
        }
        let id = self.lowest_free_id()?;
        self.pending = Some(id);
        Some(ScaleDecision::Launch(id))
    }

    /// The pending worker `id` runs: it becomes active and is packed onto from now on.
    pub fn ready(&mut self, id: WorkerId) -> Result<(), NotPending> {
        if self.pending != Some(id) {
            return Err(NotPending(id));
        }
        self.pending = None;
        let at = self.active.partition_point(|w| w.id < id);
        let worker = Worker::new(id, &self.template);
        self.active.insert(at, worker);
        Ok(())
    }

    /// The pending launch of `id` is served by worker `instead` (a warm one already running,
    /// not active): `instead` becomes the pending launch.
    pub fn redirect(&mut self, id: WorkerId, instead: WorkerId) -> Result<(), NotPending> {
        if self.pending != Some(id) || self.get(instead).is_some() {
            return Err(NotPending(id));
        }
        self.pending = Some(instead);
        Ok(())
    }

    /// The pending launch of `id` failed; a later saturation may ask again.
    pub fn launch_failed(&mut self, id: WorkerId) -> Result<(), NotPending> {
        if self.pending != Some(id) {
            return Err(NotPending(id));
        }
        self.pending = None;
        Ok(())
    }

    /// The active worker `id` failed (fail-stop): it leaves the pool at once, whatever it was
    /// doing. `false` when `id` is not active.
    pub fn fail(&mut self, id: WorkerId) -> bool {
        match self.active.binary_search_by_key(&id, |w| w.id) {
            Ok(i) => {
                self.active.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    /// Workers that started draining so far.
    pub fn drains(&self) -> u64 {
        self.drains
    }

    /// Takes a draining worker back into the packing; false if none was draining.
    pub fn undrain(&mut self) -> bool {
        match self.active.iter_mut().find(|w| w.draining) {
            Some(w) => {
                w.draining = false;
                true
            }
            None => false,
        }
    }

    /// The drain rule (module doc): starts draining the highest-ID worker when the others can
    /// carry the pool's summed load at no more than `drain_utilisation`.
    fn drain_decision(&mut self) {
        let cfg = &self.template;
        let others = self.active.len().saturating_sub(1);
        if cfg.drain_utilisation <= 0.0
            || self.pending.is_some()
            || others < usize::from(cfg.min_workers)
            || self.active.iter().any(|w| w.draining)
        {
            return;
        }
        // The load the launch rule sees, so the two rules do not undo each other.
        let load: f64 = self.active.iter().map(|w| w.load().0).sum();
        if load <= cfg.drain_utilisation * others as f64 * cfg.worker_capacity.0 {
            if let Some(w) = self.active.last_mut() {
                w.draining = true;
                self.drains += 1;
            }
        }
    }

    /// The drain and retire rules at `now` (windows already advanced); removes the worker it
    /// retires.
    pub fn retire_decision(&mut self, now: Nanos) -> Option<ScaleDecision> {
        self.drain_decision();
        let cfg = &self.template;
        for w in &mut self.active {
            let idle = w.active_flowlets == 0
                && w.drained.last_rate().fraction_of(cfg.worker_capacity) < cfg.idle_utilisation;
            w.idle_since = if idle { Some(w.idle_since.unwrap_or(now)) } else { None };
        }
        if self.active.len() <= usize::from(cfg.min_workers) {
            return None;
        }
        let due = |w: &Worker| {
            (w.draining && w.active_flowlets == 0)
                || w.idle_since.is_some_and(|t| now.saturating_sub(t) >= cfg.retire_after)
        };
        let i = self.active.iter().rposition(due)?;
        let gone = self.active.remove(i);
        let successor = self.active.first()?.id;
        Some(ScaleDecision::Retire { worker: gone.id, successor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(workers: u16) -> DirectorConfig {
        DirectorConfig {
            // The tests set load through the reservation.
            reserve_active_demand: true,
            initial_workers: workers,
            max_workers: 4,
            worker_capacity: Rate(1000.0),
            retire_after: Nanos::from_millis(10),
            ..DirectorConfig::default()
        }
    }

    /// Puts `util` of capacity of reserved load on each worker.
    fn load(p: &mut Pool, utils: &[f64]) {
        for (w, u) in p.active.iter_mut().zip(utils) {
            w.reserved = Rate(u * 1000.0);
        }
    }

    #[test]
    fn launch_only_when_all_saturated_one_pending_at_a_time() {
        // (utilisations, launch expected)
        let cases: [(&[f64], bool); 4] =
            [(&[0.95, 0.95], true), (&[0.95, 0.5], false), (&[0.9, 0.95], false), (&[0.91, 0.99], true)];
        for (utils, want) in cases {
            let mut p = Pool::new(&cfg(2));
            load(&mut p, utils);
            assert_eq!(p.launch_decision(), want.then_some(ScaleDecision::Launch(WorkerId(2))), "{utils:?}");
        }
        let mut p = Pool::new(&cfg(2));
        load(&mut p, &[0.95, 0.95]);
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(2))));
        assert_eq!(p.launch_decision(), None, "one pending launch at a time");
        assert_eq!(p.ready(WorkerId(3)), Err(NotPending(WorkerId(3))));
        assert_eq!(p.ready(WorkerId(2)), Ok(()));
        assert_eq!(p.active().iter().map(|w| w.id.0).collect::<Vec<_>>(), [0, 1, 2]);
        // The new worker is empty, so not all are saturated.
        assert_eq!(p.launch_decision(), None);
        load(&mut p, &[0.95, 0.95, 0.95]);
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(3))));
        assert_eq!(p.launch_failed(WorkerId(3)), Ok(()));
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(3))));
        assert_eq!(p.ready(WorkerId(3)), Ok(()));
        load(&mut p, &[0.95, 0.95, 0.95, 0.95]);
        assert_eq!(p.launch_decision(), None, "max_workers reached");
    }

    #[test]
    fn a_launch_skips_unavailable_ids_and_waits_when_none_is_left() {
        let mut p = Pool::new(&cfg(2));
        load(&mut p, &[0.95, 0.95]);
        p.set_unavailable(vec![WorkerId(2)]);
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(3))));
        assert_eq!(p.launch_failed(WorkerId(3)), Ok(()));
        // Every id below max_workers (4) active or unavailable: no launch at all.
        p.set_unavailable(vec![WorkerId(2), WorkerId(3)]);
        assert_eq!(p.launch_decision(), None);
        p.set_unavailable(Vec::new());
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(2))));
    }

    #[test]
    fn a_pool_below_its_floor_launches_whatever_the_load() {
        let mut p = Pool::new(&cfg(1));
        // One idle worker: nothing to launch.
        assert_eq!(p.launch_decision(), None);
        assert!(p.fail(WorkerId(0)));
        // Its id still carries flows that started there: the next one is taken.
        p.set_unavailable(vec![WorkerId(0)]);
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(1))));
        assert_eq!(p.launch_decision(), None, "one pending at a time");
        assert_eq!(p.ready(WorkerId(1)), Ok(()));
        assert_eq!(p.launch_decision(), None, "back at the floor, idle");
        // No id left to take: the pool waits.
        assert!(p.fail(WorkerId(1)));
        p.set_unavailable((0..4).map(WorkerId).collect());
        assert_eq!(p.launch_decision(), None);
    }

    #[test]
    fn retire_after_idle_never_with_active_flowlets() {
        let ms = Nanos::from_millis;
        let mut p = Pool::new(&cfg(3));
        // Worker 2 has an active flowlet, worker 1 is idle, worker 0 is loaded.
        p.active[0].reserved = Rate(500.0);
        p.active[0].active_flowlets = 1;
        p.active[2].flowlet_started(Rate(0.0));
        assert_eq!(p.retire_decision(ms(0)), None);
        assert_eq!(p.retire_decision(ms(9)), None, "idle 9 ms < 10 ms");
        assert_eq!(
            p.retire_decision(ms(10)),
            Some(ScaleDecision::Retire { worker: WorkerId(1), successor: WorkerId(0) })
        );
        // Worker 2 stays while its flowlet is active, however long.
        assert_eq!(p.retire_decision(ms(100)), None);
        p.active[1].flowlet_ended(Rate(0.0));
        assert_eq!(p.retire_decision(ms(105)), None, "idle time starts when the flowlet ends");
        assert_eq!(
            p.retire_decision(ms(115)),
            Some(ScaleDecision::Retire { worker: WorkerId(2), successor: WorkerId(0) })
        );
        // Worker 0 goes idle but is the last one (min_workers = 1).
        p.active[0].flowlet_ended(Rate(500.0));
        assert_eq!(p.retire_decision(ms(200)), None);
        assert_eq!(p.retire_decision(ms(300)), None);
        // A retired ID is the next one launched.
        p.active[0].reserved = Rate(950.0);
        assert_eq!(p.launch_decision(), Some(ScaleDecision::Launch(WorkerId(1))));
    }

    #[test]
    fn load_is_drained_rate_unless_reserving() {
        for (reserve, want) in [(false, 10_000.0), (true, 500.0e3)] {
            let mut w =
                Worker::new(WorkerId(0), &DirectorConfig { reserve_active_demand: reserve, ..cfg(1) });
            // 1000 B drained in the 100 ms window: 10 kB/s; a 500 kB/s flowlet active.
            w.drained.record(Nanos(0), 1_000);
            w.flowlet_started(Rate(500.0e3));
            assert!((w.load().0 - want).abs() < 1e-6, "reserve {reserve}: {:?}", w.load());
        }
    }

    #[test]
    fn reserved_load_resets_when_nothing_is_active() {
        let mut w = Worker::new(WorkerId(0), &cfg(1));
        w.flowlet_started(Rate(0.1));
        w.flowlet_started(Rate(0.2));
        w.flowlet_ended(Rate(0.1));
        assert!((w.load().0 - 0.2).abs() < 1e-12);
        w.flowlet_ended(Rate(0.2));
        assert_eq!((w.load(), w.active_flowlets), (Rate::ZERO, 0));
    }
}
