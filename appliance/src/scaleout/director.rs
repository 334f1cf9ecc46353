//! The director role (`nflet director`): owns the ports, steers every frame's flowlet to a
//! worker (SNF §4 through [`nflet_scale::director::Director`]), transmits what the workers send
//! back, and carries out the library's decisions — launching, activating and retiring workers
//! through the [`Launcher`](super::launcher::Launcher) and ordering proactive state pushes.
//!
//! Reply steering: a worker's frame comes back with the director's flow key in its header; if
//! an NF rewrote the tuple (the NAT's public address and port), the director records the new
//! tuple as an alias of the flow, so the replies to it — which carry the rewritten tuple — are
//! steered as packets of the same flow, with the same clock sequence and worker.
//!
//! Worker life cycle: `Down → Starting → (Warm | Active)`; a warm worker is running but gets no
//! flowlets until the library asks for a launch, which then is an activation. A retired worker
//! keeps running until no tracked flow's state is on it any more (the next flowlet of each
//! such flow pulls the state from it), then returns to the warm pool or is stopped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::{Bytes, ChainId, PortId};
use nflet_nfs::packet::{parse, ParsePolicy};
use nflet_nfs::time::{Clock, MonotonicClock, Nanos};
use nflet_scale::director::{Decision, Director, StateSource, Steer};
use nflet_scale::scaling::ScaleDecision;
use nflet_scale::units::{LogicalClock, WorkerId};
use nflet_scale::wire::{
    is_state_message, Direction, Kind, Sealer, SteerHeader, Verifier, DIRECTOR, HEADER_LEN,
};

use super::fabric::{Fabric, FabricError, Idle, Outgoing};
use super::inventory::Inventories;
use super::launcher::{Launcher, Role};
use super::snapshot::Snapshot;
use crate::config::scale::Scale;
use crate::config::Config;
use crate::dataplane::open::open_ports;
use crate::dataplane::select::ChainSelector;
use crate::port::{BufPool, PktBuf, PortError, RxQueue, RxStatus, TxQueue};
use crate::traffic::ProbeSession;

/// Aliases kept at most (rewritten tuples of tracked flows).
const MAX_ALIASES: usize = 1 << 20;
const BURST: usize = 32;

/// Why the director could not start.
#[derive(Debug)]
pub enum DirectorError {
    NoScale,
    Ports(PortError),
    Fabric(FabricError),
    Decisions(String),
    Launcher(String),
}

impl std::fmt::Display for DirectorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectorError::NoScale => f.write_str("the configuration has no `[scale]` section"),
            DirectorError::Ports(e) => write!(f, "{e}"),
            DirectorError::Fabric(e) => write!(f, "{e}"),
            DirectorError::Decisions(e) | DirectorError::Launcher(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for DirectorError {}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Down,
    /// Launched, no hello yet; `activate`: it joins the packing once it says hello.
    Starting {
        since: Instant,
        activate: bool,
    },
    Warm,
    Active,
    /// Retired by the scaling rule; still answers pulls for the flows whose state it holds.
    Retired,
}

/// Launch, activation and retirement events with their latencies (also logged).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Event {
    pub at_ms: f64,
    pub worker: u16,
    pub what: &'static str,
    /// Launch: start to first hello. Activation: decision to active. Others: 0.
    pub latency_us: f64,
}

/// The launch decision for worker `w`.
fn launch_of(w: WorkerId) -> Decision {
    Decision::Scale(ScaleDecision::Launch(w))
}

/// Where the state of a flow whose holder `failed` is to be pulled from, given `confirmed`:
/// the worker whose processed frames of the flow last came back. Normally the failed worker's
/// output logger, which stored the state of every frame the worker released. But a worker
/// that never released a frame of the flow (it died while its own pull of the flow's state
/// was waiting) left nothing at its logger: the worker that last released one still holds
/// the state (a pull answered keeps a copy), and asking the logger would come back empty
/// and run the flow on no state — a NAT connection would get a second public port.
/// Without loggers, the failed worker itself (in case it was only suspected).
fn state_after_failure(confirmed: Option<WorkerId>, failed: WorkerId, loggers: bool) -> WorkerId {
    match confirmed {
        Some(w) if w != failed => w,
        _ if loggers => Scale::logger_id(failed.0),
        _ => failed,
    }
}

/// The director's own counters (the library's are reported beside them).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DirectorRoleCounters {
    pub received: u64,
    pub not_parsed: u64,
    pub no_chain: u64,
    pub no_worker: u64,
    pub to_workers: Vec<u64>,
    pub from_workers: u64,
    pub transmitted: u64,
    pub tx_dropped: u64,
    pub bad_headers: u64,
    pub aliases_learned: u64,
    pub alias_table_full: u64,
    pub replicate_orders: u64,
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    pub send_errors: u64,
    /// Flows taken over from a previous director's snapshot.
    pub restored_flows: u64,
    /// Flows the snapshot missed that a worker reported holding (`inventory.rs`).
    pub inventory_added: u64,
    /// Flows whose newest state a worker reported on another worker than the snapshot's.
    pub inventory_moved: u64,
    /// Reply aliases (rewritten tuples) the workers reported.
    pub inventory_aliases: u64,
    /// Adopted workers whose list of held flows did not arrive whole in time.
    pub inventories_incomplete: u64,
    /// Pulls re-aimed at a failed worker's output logger (`Kind::Recover` to the puller).
    pub pulls_redirected: u64,
    pub snapshot_errors: u64,
    /// What `[scale] impair_*` did to this instance's sends.
    pub impaired: super::fabric::ImpairCounters,
}

/// An output logger's liveness, by worker id.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LoggerSlot {
    Down,
    Starting,
    /// Up; its worker must push it every flow it holds once it says hello (a replacement).
    Up {
        resync: bool,
    },
}

/// The director.
pub struct DirectorRole {
    decisions: Director,
    fabric: Fabric,
    scale: Scale,
    workers: Vec<SocketAddr>,
    slots: Vec<Slot>,
    /// Last hello of each worker, and of each logger.
    last_hello: Vec<Option<Instant>>,
    loggers: Vec<LoggerSlot>,
    /// Failed workers whose logger still holds state some flow needs.
    failed: Vec<WorkerId>,
    warm_target: usize,
    launcher: Box<dyn Launcher>,
    rx: Vec<(PortId, Box<dyn RxQueue>)>,
    tx: Vec<Option<Box<dyn TxQueue>>>,
    pending: Vec<Vec<PktBuf>>,
    pool: BufPool,
    selector: ChainSelector,
    policy: ParsePolicy,
    aliases: HashMap<FlowKey, FlowKey>,
    /// The worker whose processed frames of each flow last came back (so it, or its logger,
    /// holds the state every released frame reflects).
    confirmed: HashMap<FlowKey, WorkerId>,
    sealer: Sealer,
    verifier: Verifier,
    started: Instant,
    /// While taking over from a crashed director: the adopted workers' lists of held flows.
    inventories: Option<Inventories>,
    pub counters: DirectorRoleCounters,
    pub events: Vec<Event>,
    out: Vec<u8>,
}

impl std::fmt::Debug for DirectorRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorRole").field("workers", &self.workers.len()).finish()
    }
}

impl DirectorRole {
    pub fn new(
        mut config: Config,
        launcher: Box<dyn Launcher>,
        deployment: u64,
    ) -> Result<DirectorRole, DirectorError> {
        let scale = config.scale.clone().ok_or(DirectorError::NoScale)?;
        config.settings.cores = 1;
        let decisions =
            Director::new(scale.decisions.clone()).map_err(|e| DirectorError::Decisions(e.to_string()))?;
        let fabric = Fabric::bind_patiently(scale.director, std::time::Duration::from_secs(5))
            .map_err(DirectorError::Fabric)?;
        let mut fabric = fabric;
        fabric.impair(scale.impair);
        let mut queues = open_ports(&config, None, &ProbeSession::new()).map_err(DirectorError::Ports)?;
        let rx = queues.rx.pop().unwrap_or_default();
        let tx = queues.tx.pop().unwrap_or_default();
        let nports = tx.len();
        let nworkers = scale.workers.len();
        Ok(DirectorRole {
            decisions,
            fabric,
            last_hello: vec![None; nworkers * 2],
            loggers: vec![LoggerSlot::Down; scale.loggers.len()],
            failed: Vec::new(),
            scale: scale.clone(),
            slots: vec![Slot::Down; nworkers],
            warm_target: usize::from(scale.warm_pool),
            launcher,
            rx,
            tx,
            pending: (0..nports).map(|_| Vec::with_capacity(BURST)).collect(),
            pool: BufPool::new(config.settings.buffers_per_core, config.settings.frame_size),
            selector: ChainSelector::new(&config),
            policy: config.parse,
            aliases: HashMap::new(),
            confirmed: HashMap::new(),
            sealer: Sealer::new(&scale.key, DIRECTOR, deployment, super::first_sequence()),
            verifier: Verifier::new(&scale.key, deployment),
            started: Instant::now(),
            inventories: None,
            counters: DirectorRoleCounters { to_workers: vec![0; nworkers], ..Default::default() },
            events: Vec::new(),
            workers: scale.workers,
            out: Vec::with_capacity(super::fabric::MAX_DATAGRAM),
        })
    }

    fn event(&mut self, worker: WorkerId, what: &'static str, latency_us: f64) {
        let at_ms = self.started.elapsed().as_secs_f64() * 1e3;
        log::info!("{worker}: {what} (latency {latency_us:.0} µs) at {at_ms:.1} ms");
        self.events.push(Event { at_ms, worker: worker.0, what, latency_us });
    }

    fn start_logger(&mut self, id: WorkerId, resync: bool) {
        let Some(addr) = self.scale.loggers.get(usize::from(id.0)).copied() else { return };
        match self.launcher.start(Role::Logger, id, addr) {
            Ok(()) => {
                if let Some(l) = self.loggers.get_mut(usize::from(id.0)) {
                    *l = if resync { LoggerSlot::Up { resync: true } } else { LoggerSlot::Starting };
                }
                if let Some(h) = self.last_hello.get_mut(self.workers.len() + usize::from(id.0)) {
                    *h = Some(Instant::now());
                }
            }
            Err(e) => log::error!("{e}"),
        }
    }

    fn start_worker(&mut self, id: WorkerId, activate: bool) -> bool {
        let Some(addr) = self.workers.get(usize::from(id.0)).copied() else { return false };
        if self.loggers.get(usize::from(id.0)) == Some(&LoggerSlot::Down) {
            self.start_logger(id, false);
        }
        match self.launcher.start(Role::Worker, id, addr) {
            Ok(()) => {
                if let Some(s) = self.slots.get_mut(usize::from(id.0)) {
                    *s = Slot::Starting { since: Instant::now(), activate };
                }
                true
            }
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    fn stop_worker(&mut self, id: WorkerId) {
        let Some(addr) = self.workers.get(usize::from(id.0)).copied() else { return };
        self.send(Kind::Stop, &FlowKey::default(), &[], addr);
        self.launcher.stop(Role::Worker, id);
        if let Some(s) = self.slots.get_mut(usize::from(id.0)) {
            *s = Slot::Down;
        }
        self.event(id, "stopped", 0.0);
        if !self.failed.contains(&id) {
            self.stop_logger(id);
        }
    }

    fn stop_logger(&mut self, id: WorkerId) {
        let Some(addr) = self.scale.loggers.get(usize::from(id.0)).copied() else { return };
        self.send(Kind::Stop, &FlowKey::default(), &[], addr);
        self.launcher.stop(Role::Logger, id);
        if let Some(l) = self.loggers.get_mut(usize::from(id.0)) {
            *l = LoggerSlot::Down;
        }
    }

    /// Ids whose process is down while tracked flows that started on it live (on other
    /// workers, with its NAT ports: `Director::started_on`): no new process may take them.
    fn unavailable_ids(&self) -> Vec<WorkerId> {
        if !self.slots.contains(&Slot::Down) {
            return Vec::new();
        }
        let started = self.decisions.started_counts();
        (0..self.slots.len())
            .filter(|&i| self.slots.get(i) == Some(&Slot::Down) && started.get(i).is_some_and(|&n| n > 0))
            .filter_map(|i| u16::try_from(i).ok().map(WorkerId))
            .collect()
    }

    /// The lowest id from `from` on that is down and not in `unavailable`.
    fn fresh_id(&self, from: usize, unavailable: &[WorkerId]) -> Option<WorkerId> {
        (from..self.slots.len()).find_map(|i| {
            let id = WorkerId(u16::try_from(i).ok()?);
            (self.slots.get(i) == Some(&Slot::Down) && !unavailable.contains(&id)).then_some(id)
        })
    }

    /// Tops the warm pool up with the lowest ids that are down and free to take.
    fn refill_warm(&mut self) {
        let warm = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Warm | Slot::Starting { activate: false, .. }))
            .count();
        let mut missing = self.warm_target.saturating_sub(warm);
        if missing == 0 {
            return;
        }
        let unavailable = self.unavailable_ids();
        let mut from = 0;
        while missing > 0 {
            let Some(id) = self.fresh_id(from, &unavailable) else { break };
            from = usize::from(id.0) + 1;
            if self.start_worker(id, false) {
                missing -= 1;
            }
        }
    }

    /// Runs until `stop` is set; stops every worker on the way out.
    pub fn run(&mut self, stop: &Arc<AtomicBool>) {
        let clock = MonotonicClock::new();
        self.take_over(&clock);
        let initial = self.decisions.workers().iter().map(|w| w.id).collect::<Vec<_>>();
        for id in initial {
            if self.slots.get(usize::from(id.0)) == Some(&Slot::Down) {
                self.start_worker(id, true);
            }
        }
        self.refill_warm();
        let bucket = self.decisions.config().load_bucket;
        let mut next_tick = Nanos::ZERO;
        let mut next_manage = Nanos::ZERO;
        let mut next_save = Nanos::ZERO;
        let mut next_check = Nanos::ZERO;
        let mut bufs = Vec::with_capacity(BURST);
        let mut datagram = Vec::with_capacity(super::fabric::MAX_DATAGRAM);
        let mut decisions = Vec::new();
        let mut idle = Idle::new(std::time::Duration::from_micros(20));
        while !stop.load(Ordering::Relaxed) {
            let now = clock.now();
            let mut got = 0;
            for q in 0..self.rx.len() {
                let Some((port, queue)) = self.rx.get_mut(q) else { continue };
                let port = *port;
                if let RxStatus::Received(n) = queue.rx_burst(&mut self.pool, &mut bufs, BURST) {
                    got += n;
                }
                for buf in bufs.drain(..) {
                    self.steer(port, buf.data(), now);
                    self.pool.put(buf);
                }
            }
            while got < 256 {
                if !self.fabric.recv_into(&mut datagram) {
                    break;
                }
                got += 1;
                self.on_fabric(&datagram);
            }
            self.flush();
            if now >= next_tick {
                next_tick = now.saturating_add(bucket);
                decisions.clear();
                self.decisions.tick(now, &mut decisions);
                for d in decisions.drain(..) {
                    self.carry_out(d);
                }
            }
            if now >= next_check {
                next_check = now.saturating_add(self.scale.heartbeat);
                self.detect_failures();
            }
            if now >= next_manage {
                next_manage = now.saturating_add(Nanos::from_millis(100));
                self.manage();
            }
            if now >= next_save {
                next_save = now.saturating_add(self.scale.snapshot_interval);
                self.save();
            }
            if idle.after_poll(got, &mut self.fabric) {
                self.flush_ports();
            }
        }
        // The workers' last frames may still be on their way back.
        let until = Instant::now() + std::time::Duration::from_millis(50);
        while Instant::now() < until {
            match self.fabric.recv() {
                Some((d, _)) => {
                    let d = d.to_vec();
                    self.on_fabric(&d);
                }
                None => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        self.flush();
        self.flush_ports();
        self.failed.clear();
        for i in 0..self.slots.len() {
            let id = WorkerId(u16::try_from(i).unwrap_or(u16::MAX));
            if self.slots.get(i) != Some(&Slot::Down) {
                self.stop_worker(id);
            } else if self.loggers.get(i).is_some_and(|l| *l != LoggerSlot::Down) {
                self.stop_logger(id);
            }
        }
        self.counters.send_errors = self.fabric.send_errors;
        self.counters.impaired = self.fabric.impaired;
        // Every worker is stopped: nothing is left to take over.
        if let Some(path) = &self.scale.state_file {
            let _ = std::fs::remove_file(path);
        }
    }

    /// After a crash: reads the previous director's snapshot, if any, restores its flows and
    /// aliases, and listens one failure timeout long for the instances still running, which
    /// it adopts instead of launching new ones.
    fn take_over(&mut self, clock: &MonotonicClock) {
        let Some(path) = self.scale.state_file.clone() else { return };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                log::warn!("director snapshot {}: {e}; starting with no flows", path.display());
                return;
            }
        };
        let snap = match Snapshot::decode(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("director snapshot {}: {e}; starting with no flows", path.display());
                return;
            }
        };
        // Each worker that says hello is adopted and asked which flows it holds.
        self.inventories = Some(Inventories::default());
        let listen = std::time::Duration::from_nanos(self.scale.failure_timeout.0);
        let started = Instant::now();
        self.listen(started + listen);
        // Ask again for lists that lost parts on the way, for at most two more timeouts.
        let heartbeat = std::time::Duration::from_nanos(self.scale.heartbeat.0.max(1_000_000));
        loop {
            let missing = self.inventories.as_ref().map(Inventories::incomplete).unwrap_or_default();
            if missing.is_empty() || started.elapsed() >= listen * 3 {
                break;
            }
            for id in missing {
                self.ask_inventory(id);
            }
            self.listen(Instant::now() + heartbeat);
        }
        let inventories = self.inventories.take().unwrap_or_default();
        let (flows, merged) = inventories.merge(&snap.flows);
        self.counters.inventories_incomplete = inventories.incomplete().len() as u64;
        self.counters.inventory_added = merged.added;
        self.counters.inventory_moved = merged.moved;
        // A clock margin far above what the previous director can have numbered since its
        // last snapshot (100 ms of packets).
        let restored = self.decisions.restore(clock.now(), &flows, 1 << 32);
        self.aliases.extend(snap.aliases);
        // The workers' rewritten tuples are at least as recent as the snapshot's.
        let reported = inventories.aliases();
        self.counters.inventory_aliases = reported.len() as u64;
        self.aliases.extend(reported);
        let adopted = self.slots.iter().filter(|s| matches!(s, Slot::Active | Slot::Warm)).count();
        log::info!(
            "took over from {}: {restored} flow(s) ({} the snapshot missed, {} moved since it, as the \
             workers reported; {} list(s) incomplete), {} alias(es), {adopted} running worker(s) adopted",
            path.display(),
            merged.added,
            merged.moved,
            self.counters.inventories_incomplete,
            self.aliases.len()
        );
        self.counters.restored_flows = restored as u64;
    }

    /// Handles the fabric's messages until `until` (no frames are steered yet).
    fn listen(&mut self, until: Instant) {
        let mut datagram = Vec::new();
        while Instant::now() < until {
            match self.fabric.recv() {
                Some((d, _)) => {
                    datagram.clear();
                    datagram.extend_from_slice(d);
                    if is_state_message(&datagram) {
                        self.on_fabric(&datagram);
                    }
                }
                None => std::thread::sleep(std::time::Duration::from_micros(200)),
            }
        }
    }

    /// Asks worker `id` which flows it holds (while taking over).
    fn ask_inventory(&mut self, id: WorkerId) {
        let Some(addr) = self.workers.get(usize::from(id.0)).copied() else { return };
        if let Some(inv) = self.inventories.as_mut() {
            inv.asked(id);
        }
        self.send(Kind::Inventory, &FlowKey::default(), &[], addr);
    }

    fn save(&mut self) {
        let Some(path) = self.scale.state_file.clone() else { return };
        let bytes = Snapshot::encode(&self.decisions.saved_flows(), &self.aliases);
        if let Err(e) = Snapshot::write(&path, &bytes) {
            self.counters.snapshot_errors += 1;
            log::warn!("director snapshot {}: {e}", path.display());
        }
    }

    /// A frame from a port: to its flowlet's worker.
    fn steer(&mut self, port: PortId, frame: &[u8], now: Nanos) {
        self.counters.received += 1;
        let Ok(meta) = parse(frame, port, &self.policy) else {
            self.counters.not_parsed += 1;
            return;
        };
        let Some(chain) = self.selector.select(&meta) else {
            self.counters.no_chain += 1;
            return;
        };
        let flow = self.aliases.get(&meta.key).copied().unwrap_or(meta.key);
        let len = Bytes(u64::try_from(frame.len()).unwrap_or(u64::MAX));
        let (worker, clock, start, flowlet, source, untracked) = match self.decisions.steer(now, flow, len) {
            Steer::Flow { worker, clock, start, flowlet, source } => {
                (worker, clock, start, flowlet, source, false)
            }
            Steer::Untracked { worker } => {
                (worker, LogicalClock::ZERO, None, LogicalClock::ZERO, StateSource::Fresh, true)
            }
            Steer::NoWorker => {
                self.counters.no_worker += 1;
                return;
            }
        };
        let Some(addr) = self.workers.get(usize::from(worker.0)).copied() else {
            self.counters.no_worker += 1;
            return;
        };
        if let (Some(_), StateSource::Replica { from }) = (start, source) {
            // No pull will tell the previous owner: say it, so its copy stops living.
            if let Some(to) = self.workers.get(usize::from(from.0)).copied() {
                let chain_id = ChainId(u16::try_from(chain).unwrap_or(u16::MAX));
                self.send_on(Kind::Moved, chain_id, &flow, &[], to);
            }
        }
        // Every packet of a moved flowlet names where its state is (module doc of the header).
        let from = match source {
            StateSource::Recover { failed } => Some(state_after_failure(
                self.confirmed.get(&flow).copied(),
                failed,
                !self.scale.loggers.is_empty(),
            )),
            other => other.moves_from(),
        };
        let h = SteerHeader {
            direction: Direction::ToWorker,
            chain: ChainId(u16::try_from(chain).unwrap_or(u16::MAX)),
            port,
            worker,
            prev_owner: from,
            clock,
            flow,
            flowlet,
            flowlet_start: start.is_some(),
            moved: from.is_some(),
            untracked,
        };
        self.out.clear();
        self.out.resize(HEADER_LEN, 0);
        h.write(&mut self.out);
        self.out.extend_from_slice(frame);
        self.fabric.send(&self.out, addr);
        if let Some(c) = self.counters.to_workers.get_mut(usize::from(worker.0)) {
            *c += 1;
        }
    }

    /// A datagram from a worker: a processed frame to transmit, or a message.
    fn on_fabric(&mut self, d: &[u8]) {
        if is_state_message(d) {
            match self.verifier.open(d) {
                Ok(m) if m.kind == Kind::Hello => self.hello(m.sender),
                Ok(m) if m.kind == Kind::Holding => {
                    if let Some(inv) = self.inventories.as_mut() {
                        inv.part(m.sender, m.body);
                    }
                }
                Ok(_) => {}
                Err(e) => *self.counters.rejected.entry(e.name()).or_default() += 1,
            }
            return;
        }
        let h = match SteerHeader::parse(d) {
            Ok(h) if h.direction == Direction::ToDirector => h,
            _ => {
                self.counters.bad_headers += 1;
                return;
            }
        };
        self.counters.from_workers += 1;
        let frame = d.get(HEADER_LEN..).unwrap_or_default();
        if !h.untracked {
            match self.confirmed.get_mut(&h.flow) {
                Some(w) => *w = h.worker,
                None => {
                    self.confirmed.insert(h.flow, h.worker);
                }
            }
            if let Ok(meta) = parse(frame, h.port, &self.policy) {
                if meta.key != h.flow && !self.aliases.contains_key(&meta.key) {
                    if self.aliases.len() < MAX_ALIASES {
                        self.aliases.insert(meta.key, h.flow);
                        self.counters.aliases_learned += 1;
                    } else {
                        self.counters.alias_table_full += 1;
                    }
                }
            }
        }
        let Some(mut buf) = self.pool.get() else {
            self.counters.tx_dropped += 1;
            return;
        };
        if !buf.fill(frame) {
            self.pool.put(buf);
            self.counters.tx_dropped += 1;
            return;
        }
        match self.pending.get_mut(usize::from(h.port.0)) {
            Some(q) => q.push(buf),
            None => {
                self.pool.put(buf);
                self.counters.tx_dropped += 1;
            }
        }
    }

    fn flush(&mut self) {
        for (p, q) in self.pending.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            if let Some(txq) = self.tx.get_mut(p).and_then(Option::as_mut) {
                self.counters.transmitted += txq.tx_burst(q, &mut self.pool) as u64;
            }
            // Whatever the port did not take now is dropped: the loop must not stall.
            self.counters.tx_dropped += q.len() as u64;
            for b in q.drain(..) {
                self.pool.put(b);
            }
        }
    }

    /// Pushes out what the ports buffer (capture writers, kernel rings).
    fn flush_ports(&mut self) {
        for q in self.tx.iter_mut().flatten() {
            q.flush();
        }
    }

    fn hello(&mut self, id: WorkerId) {
        if id.0 & crate::config::scale::LOGGER != 0 {
            return self.logger_hello(WorkerId(id.0 & !crate::config::scale::LOGGER));
        }
        let Some(slot) = self.slots.get(usize::from(id.0)).copied() else { return };
        if let Some(h) = self.last_hello.get_mut(usize::from(id.0)) {
            *h = Some(Instant::now());
        }
        if slot == Slot::Down {
            // Running without this director having started it: adopt it (after a director
            // restart, or a worker a site started by itself).
            let active = self.decisions.workers().iter().any(|w| w.id == id);
            if let Some(s) = self.slots.get_mut(usize::from(id.0)) {
                *s = if active { Slot::Active } else { Slot::Warm };
            }
            self.event(id, "adopted", 0.0);
            if self.inventories.is_some() {
                self.ask_inventory(id);
            }
            return;
        }
        if let Slot::Starting { since, activate } = slot {
            let us = since.elapsed().as_secs_f64() * 1e6;
            self.event(id, "launched", us);
            let next = if activate {
                if self.decisions.pending_launch() == Some(id) {
                    let _ = self.decisions.worker_ready(id);
                }
                Slot::Active
            } else {
                Slot::Warm
            };
            if let Some(s) = self.slots.get_mut(usize::from(id.0)) {
                *s = next;
            }
        }
    }

    fn logger_hello(&mut self, id: WorkerId) {
        let n = usize::from(id.0);
        if let Some(h) = self.last_hello.get_mut(self.workers.len() + n) {
            *h = Some(Instant::now());
        }
        match self.loggers.get(n).copied() {
            Some(LoggerSlot::Starting | LoggerSlot::Down) => {
                if let Some(l) = self.loggers.get_mut(n) {
                    *l = LoggerSlot::Up { resync: false };
                }
            }
            Some(LoggerSlot::Up { resync: true }) => {
                // A replacement logger: its worker gives it every flow it holds.
                if let Some(addr) = self.workers.get(n).copied() {
                    self.send(Kind::Resync, &FlowKey::default(), &[], addr);
                }
                if let Some(l) = self.loggers.get_mut(n) {
                    *l = LoggerSlot::Up { resync: false };
                }
                self.event(id, "logger replaced, resync ordered", 0.0);
            }
            _ => {}
        }
    }

    /// Workers and loggers silent for the failure timeout are taken for failed (fail-stop).
    fn detect_failures(&mut self) {
        let limit = std::time::Duration::from_nanos(self.scale.failure_timeout.0);
        let silent = |h: Option<&Option<Instant>>| h.copied().flatten().is_some_and(|t| t.elapsed() > limit);
        for i in 0..self.slots.len() {
            let id = WorkerId(u16::try_from(i).unwrap_or(u16::MAX));
            let slot = self.slots.get(i).copied();
            if matches!(slot, Some(Slot::Active | Slot::Warm | Slot::Retired))
                && silent(self.last_hello.get(i))
            {
                let since = self
                    .last_hello
                    .get(i)
                    .copied()
                    .flatten()
                    .map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e6);
                if slot == Some(Slot::Active) {
                    let orphaned = self.decisions.worker_failed(id).unwrap_or(0);
                    log::warn!(
                        "{id} failed: silent for {:.1} ms; {orphaned} flow(s) to recover",
                        since / 1e3
                    );
                    if !self.scale.loggers.is_empty() {
                        self.failed.push(id);
                    }
                }
                self.event(id, "failed", since);
                if !self.scale.loggers.is_empty() {
                    self.redirect_pulls(id);
                }
                self.launcher.stop(Role::Worker, id);
                if let Some(s) = self.slots.get_mut(i) {
                    *s = Slot::Down;
                }
                if let Some(h) = self.last_hello.get_mut(i) {
                    *h = None;
                }
            }
            let li = self.workers.len() + i;
            if matches!(self.loggers.get(i), Some(LoggerSlot::Up { .. })) && silent(self.last_hello.get(li)) {
                self.event(id, "logger failed", 0.0);
                self.launcher.stop(Role::Logger, id);
                // Its worker refills the replacement once it is up.
                self.start_logger(id, true);
            }
        }
        // A failed worker's logger may stop once no flow needs its state.
        let decisions = &self.decisions;
        let done: Vec<WorkerId> =
            self.failed.iter().copied().filter(|w| decisions.owned_by(*w) == 0).collect();
        for id in done {
            self.failed.retain(|w| *w != id);
            if self.slots.get(usize::from(id.0)) == Some(&Slot::Down) {
                self.stop_logger(id);
            }
        }
    }

    fn carry_out(&mut self, d: Decision) {
        match d {
            Decision::Scale(ScaleDecision::Launch(id)) => {
                let slot = self.slots.get(usize::from(id.0)).copied().unwrap_or(Slot::Down);
                match slot {
                    Slot::Warm | Slot::Retired => {
                        let t = Instant::now();
                        let ok = self.decisions.worker_ready(id).is_ok();
                        let us = t.elapsed().as_secs_f64() * 1e6;
                        if let Some(s) = self.slots.get_mut(usize::from(id.0)) {
                            *s = Slot::Active;
                        }
                        if ok {
                            self.event(id, "activated", us);
                        }
                        self.refill_warm();
                    }
                    Slot::Down => {
                        // A warm spare under another id serves the launch at once.
                        let spare = self.slots.iter().position(|s| *s == Slot::Warm);
                        let spare = spare.and_then(|i| u16::try_from(i).ok()).map(WorkerId);
                        // A new process takes the lowest id free to take (`fresh_id`).
                        let unavailable = self.unavailable_ids();
                        let fresh =
                            if unavailable.contains(&id) { self.fresh_id(0, &unavailable) } else { Some(id) };
                        match (spare, fresh) {
                            (Some(w), _) if self.decisions.redirect_launch(id, w).is_ok() => {
                                self.carry_out(launch_of(w))
                            }
                            (_, Some(w)) if w == id => {
                                if !self.start_worker(id, true) {
                                    let _ = self.decisions.launch_failed(id);
                                }
                            }
                            (_, Some(w)) if self.decisions.redirect_launch(id, w).is_ok() => {
                                self.event(id, "launch moved to a free id: flows started here live on", 0.0);
                                self.carry_out(launch_of(w))
                            }
                            _ => {
                                log::warn!(
                                    "scale: no worker id free to launch under (every one has live flows)"
                                );
                                let _ = self.decisions.launch_failed(id);
                            }
                        }
                    }
                    Slot::Starting { since, .. } => {
                        if let Some(s) = self.slots.get_mut(usize::from(id.0)) {
                            *s = Slot::Starting { since, activate: true };
                        }
                    }
                    Slot::Active => {
                        let _ = self.decisions.worker_ready(id);
                    }
                }
            }
            Decision::Scale(ScaleDecision::Retire { worker, .. }) => {
                if let Some(s) = self.slots.get_mut(usize::from(worker.0)) {
                    *s = Slot::Retired;
                }
                self.event(worker, "retired", 0.0);
            }
            Decision::Replicate(r) => {
                let Some(addr) = self.workers.get(usize::from(r.from.0)).copied() else { return };
                let body: Vec<u8> = r.to.as_slice().iter().flat_map(|w| w.0.to_be_bytes()).collect();
                self.counters.replicate_orders += 1;
                self.send(Kind::Replicate, &r.flow, &body, addr);
            }
        }
    }

    /// Retired workers whose flows all moved go back to the warm pool or stop; aliases of
    /// forgotten flows go.
    fn manage(&mut self) {
        for i in 0..self.slots.len() {
            let id = WorkerId(u16::try_from(i).unwrap_or(u16::MAX));
            if self.slots.get(i) != Some(&Slot::Retired) || self.decisions.owned_by(id) > 0 {
                continue;
            }
            let warm = self.slots.iter().filter(|s| matches!(s, Slot::Warm)).count();
            if warm < self.warm_target {
                if let Some(s) = self.slots.get_mut(i) {
                    *s = Slot::Warm;
                }
                self.event(id, "back to the warm pool", 0.0);
            } else {
                self.stop_worker(id);
            }
        }
        // No launch under an id whose process is gone while flows that started on it live.
        let unavailable = self.unavailable_ids();
        self.decisions.set_unavailable(unavailable);
        let decisions = &self.decisions;
        self.aliases.retain(|_, flow| decisions.flow(flow).is_some());
        self.confirmed.retain(|flow, _| decisions.flow(flow).is_some());
    }

    /// Workers whose moved flowlet pulls its state from `failed` are told where to pull it
    /// from instead ([`state_after_failure`]): no packet of the flow may come to re-aim the
    /// pull, and a pull left waiting on a dead worker would give up and run the flow on no
    /// state.
    fn redirect_pulls(&mut self, failed: WorkerId) {
        let loggers = !self.scale.loggers.is_empty();
        let mut body = [0u8; 4];
        body[..2].copy_from_slice(&failed.0.to_be_bytes());
        for (flow, owner) in self.decisions.pulling_from(failed) {
            let Some(to) = self.workers.get(usize::from(owner.0)).copied() else { continue };
            let source = state_after_failure(self.confirmed.get(&flow).copied(), failed, loggers);
            body[2..].copy_from_slice(&source.0.to_be_bytes());
            self.send(Kind::Recover, &flow, &body, to);
            self.counters.pulls_redirected += 1;
        }
    }

    fn send(&mut self, kind: Kind, flow: &FlowKey, body: &[u8], to: SocketAddr) {
        self.send_on(kind, ChainId(0), flow, body, to);
    }

    fn send_on(&mut self, kind: Kind, chain: ChainId, flow: &FlowKey, body: &[u8], to: SocketAddr) {
        let m = Outgoing { kind, chain, flow, clock: LogicalClock::ZERO, body };
        self.fabric.send_message(&mut self.sealer, m, to);
    }

    /// The summary printed when the director stops.
    pub fn summary(&self) -> serde_json::Value {
        let c = self.decisions.counters();
        serde_json::json!({
            "director": self.counters,
            "events": self.events,
            "decisions": {
                "packets": c.packets, "flowlets": c.flowlets, "new_flows": c.new_flows,
                "idle_starts": c.idle_starts, "size_starts": c.size_starts,
                "state_local": c.state_local, "state_replica": c.state_replica, "state_pull": c.state_pull,
                "state_recover": c.state_recover, "failover_starts": c.failover_starts, "failures": c.failures,
                "overflows": c.overflows, "untracked": c.untracked, "no_worker": c.no_worker,
                "replications": c.replications, "launches": c.launches, "retirements": c.retirements,
                "drains": c.drains,
            },
            "flows": self.decisions.flows(),
            "aliases": self.aliases.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_workers_flow_state_comes_from_its_logger_or_the_last_worker_that_released_it() {
        let (w0, w1) = (WorkerId(0), WorkerId(1));
        let logger1 = Scale::logger_id(1);
        // Worker 1 released frames of the flow: its logger holds their state.
        assert_eq!(state_after_failure(Some(w1), w1, true), logger1);
        // No frame of the flow came back yet: nothing released depends on any state; the
        // logger is as good a place to ask as any.
        assert_eq!(state_after_failure(None, w1, true), logger1);
        // Worker 1 died while pulling the flow from worker 0 (its own pull, or a pull
        // another worker made of it, was waiting): worker 0 still holds the state; logger 1
        // has none.
        assert_eq!(state_after_failure(Some(w0), w1, true), w0);
        assert_eq!(state_after_failure(Some(w0), w1, false), w0);
        assert_eq!(state_after_failure(Some(w1), w1, false), w1);
    }
}
