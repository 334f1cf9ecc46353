//! The worker role (`nflet worker --id N`): runs the configured chains on the frames the
//! director sends it, keeps the state of the flows it serves, pulls the state of flows that
//! moved to it, pushes state to replicas when the director asks, and answers other workers'
//! pulls. One thread; a deployment scales by running more workers.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nflet_nfs::chain::Pipeline;
use nflet_nfs::drop::{DropCounters, DropReason};
use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::{ChainId, CoreId};
use nflet_nfs::nf::{Ctx, Verdict};
use nflet_nfs::packet::{parse, ParsePolicy};
use nflet_nfs::time::{Clock, MonotonicClock, Nanos};
use nflet_scale::units::{LogicalClock, WorkerId};
use nflet_scale::wire::{
    answer_body, is_state_message, split_answer, Direction, Kind, Message, MessageError, Sealer, SteerHeader,
    Verifier, DIRECTOR, HEADER_LEN,
};

use super::fabric::{Fabric, FabricError, Idle, Outgoing};
use super::worker_flows::{Admit, Expired, Held, WorkerFlows};
use crate::config::scale::{Scale, LOGGER};
use crate::config::Config;
use crate::dataplane::StartError;
use crate::traffic::histogram::Histogram;

/// How often NF housekeeping and pull timeouts run.
const HOUSEKEEPING_EVERY: Nanos = Nanos::from_millis(1);

/// Why a worker could not start.
#[derive(Debug)]
pub enum WorkerError {
    NoScale,
    UnknownId {
        id: u16,
        workers: usize,
    },
    Fabric(FabricError),
    Start(StartError),
    /// A chain keeps per-flow state that cannot move between workers.
    NotMigratable {
        chain: String,
        nfs: Vec<String>,
    },
}

impl std::fmt::Display for WorkerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerError::NoScale => f.write_str("the configuration has no `[scale]` section"),
            WorkerError::UnknownId { id, workers } => {
                write!(
                    f,
                    "worker id {id} is not in `[scale] workers` (ids 0 to {})",
                    workers.saturating_sub(1)
                )
            }
            WorkerError::Fabric(e) => write!(f, "{e}"),
            WorkerError::Start(e) => write!(f, "{e}"),
            WorkerError::NotMigratable { chain, nfs } => write!(
                f,
                "chain `{chain}` keeps per-flow state in {} that cannot move between workers; \
                 such NFs cannot run scaled out",
                nfs.join(", ")
            ),
        }
    }
}

impl std::error::Error for WorkerError {}

/// A worker's counters (printed as JSON when it stops).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WorkerCounters {
    pub packets_in: u64,
    pub packets_out: u64,
    pub dropped: u64,
    pub bad_headers: u64,
    pub held: u64,
    pub hold_overflow: u64,
    pub pulls_sent: u64,
    pub pull_retries: u64,
    pub pull_timeouts: u64,
    pub pulls_answered: u64,
    pub pulls_empty: u64,
    pub pulls_served: u64,
    /// Pulls that arrived while this worker was pulling the same flow, answered afterwards.
    pub pulls_deferred: u64,
    /// Answers to pulls no longer pending (repeated or re-aimed requests), ignored.
    pub late_answers: u64,
    /// Pulls re-aimed at a failed worker's output logger on the director's word.
    pub pulls_redirected: u64,
    pub pushes_sent: u64,
    pub pushes_installed: u64,
    pub stale_refused: u64,
    pub imports_failed: u64,
    pub replicate_orders: u64,
    /// Lists of held flows sent to a restarted director (`Kind::Inventory`).
    pub inventories_sent: u64,
    pub state_bytes_sent: u64,
    pub send_errors: u64,
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    /// What `[scale] impair_*` did to this instance's sends.
    pub impaired: super::fabric::ImpairCounters,
}

/// One worker.
pub struct Worker {
    id: WorkerId,
    fabric: Fabric,
    director: SocketAddr,
    /// Where the other instances are (loopback addresses rerouted for a VM).
    scale: Scale,
    /// This worker's output logger: processed frames go through it (SNF §6).
    logger: Option<SocketAddr>,
    heartbeat: Nanos,
    pipeline: Pipeline,
    policy: ParsePolicy,
    flows: WorkerFlows,
    sealer: Sealer,
    verifier: Verifier,
    pull_timeout: Nanos,
    flow_idle: Nanos,
    pub counters: WorkerCounters,
    drops: DropCounters,
    state: Vec<u8>,
    datagram: Vec<u8>,
    /// The director asked this worker to stop.
    stopping: bool,
    /// Pull request to answer, per pull (ns).
    pub pull_latency: Histogram,
    /// Request to answer of the pulls an output logger answered: a failed worker's flows
    /// recovering (SNF §6; the state transfer §9.4 times).
    pub recover_latency: Histogram,
    /// Export, seal and send of the pushes one replication order asks for (ns).
    pub push_cost: Histogram,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

/// Pull attempts: enough to outlast the director's failure detection (timeout plus a
/// heartbeat of slack), at least three.
fn pull_tries(scale: &Scale) -> u8 {
    let patience = scale.failure_timeout.0.saturating_add(scale.heartbeat.0.saturating_mul(2));
    let tries = patience / scale.pull_timeout.0.max(1) + 1;
    u8::try_from(tries.clamp(3, 255)).unwrap_or(255)
}

impl Worker {
    /// Builds worker `id` of the deployment `config` describes (`deployment`: its fingerprint).
    /// With `via`, the loopback addresses of `[scale]` are another machine's (the VM host's),
    /// reached through `via`.
    pub fn new(
        mut config: Config,
        id: u16,
        deployment: u64,
        via: Option<Ipv4Addr>,
    ) -> Result<Worker, WorkerError> {
        let scale = config.scale.clone().ok_or(WorkerError::NoScale)?.rerouted(via);
        let addr = *scale
            .workers
            .get(usize::from(id))
            .ok_or(WorkerError::UnknownId { id, workers: scale.workers.len() })?;
        config.settings.cores = 1;
        let instance =
            nflet_nfs::ids::Instance { id, count: u16::try_from(scale.workers.len()).unwrap_or(u16::MAX) };
        let (mut pipelines, _arenas) =
            crate::dataplane::build_pipelines_for(&config, instance).map_err(WorkerError::Start)?;
        let pipeline = pipelines.pop().ok_or(WorkerError::NoScale)?;
        for (c, chain) in pipeline.chains.iter().enumerate() {
            if let Some(stuck) = pipeline.unmigratable(c).filter(|s| !s.is_empty()) {
                let nfs = stuck.into_iter().map(|(name, kind)| format!("`{name}` ({kind})")).collect();
                return Err(WorkerError::NotMigratable { chain: chain.name.clone(), nfs });
            }
        }
        let mut fabric = Fabric::bind(Scale::bind_address(addr)).map_err(WorkerError::Fabric)?;
        fabric.impair(scale.impair);
        let me = WorkerId(id);
        Ok(Worker {
            id: me,
            fabric,
            director: scale.director,
            logger: scale.loggers.get(usize::from(id)).copied(),
            heartbeat: scale.heartbeat,
            pipeline,
            policy: config.parse,
            flows: WorkerFlows::new(me, scale.hold_packets, pull_tries(&scale)),
            sealer: Sealer::new(&scale.key, me, deployment, super::first_sequence()),
            verifier: Verifier::new(&scale.key, deployment),
            pull_timeout: scale.pull_timeout,
            flow_idle: scale.decisions.flow_idle_timeout,
            counters: WorkerCounters::default(),
            drops: DropCounters::default(),
            state: Vec::new(),
            datagram: Vec::with_capacity(super::fabric::MAX_DATAGRAM),
            stopping: false,
            scale,
            pull_latency: Histogram::default(),
            recover_latency: Histogram::default(),
            push_cost: Histogram::default(),
        })
    }

    /// Serves until `stop` is set.
    pub fn run(&mut self, stop: &Arc<AtomicBool>) {
        let clock = MonotonicClock::new();
        let mut next_hello = Nanos::ZERO;
        let mut next_chores = Nanos::ZERO;
        let mut next_sweep = Nanos::ZERO;
        let mut datagram = Vec::with_capacity(super::fabric::MAX_DATAGRAM);
        let mut idle = Idle::backing_off(Duration::from_micros(50), Duration::from_millis(1));
        while !stop.load(Ordering::Relaxed) && !self.stopping {
            let now = clock.now();
            let mut got = 0;
            while got < 64 {
                if !self.fabric.recv_into(&mut datagram) {
                    break;
                }
                got += 1;
                // Each datagram is stamped as it is read, so a pull's latency is not rounded to
                // poll rounds (one clock read: ~20 ns against the µs of the socket read).
                self.on_datagram(&datagram, clock.now());
            }
            if now >= next_hello {
                next_hello = now.saturating_add(self.heartbeat);
                self.send_message(
                    Kind::Hello,
                    ChainId(0),
                    &FlowKey::default(),
                    LogicalClock::ZERO,
                    &[],
                    self.director,
                );
            }
            if now >= next_chores {
                next_chores = now.saturating_add(HOUSEKEEPING_EVERY);
                self.chores(now);
            }
            if now >= next_sweep {
                next_sweep = now.saturating_add(Nanos::from_secs(1));
                self.flows.sweep(now, self.flow_idle);
            }
            idle.after_poll(got, &mut self.fabric);
        }
        self.counters.send_errors = self.fabric.send_errors;
        self.counters.impaired = self.fabric.impaired;
        self.counters.dropped = self.drops.total();
    }

    fn on_datagram(&mut self, d: &[u8], now: Nanos) {
        if is_state_message(d) {
            match self.verifier.open(d) {
                Ok(m) => self.on_message(m, now),
                Err(e) => self.reject(e),
            }
            return;
        }
        let h = match SteerHeader::parse(d) {
            Ok(h) if h.direction == Direction::ToWorker => h,
            _ => {
                self.counters.bad_headers += 1;
                return;
            }
        };
        self.counters.packets_in += 1;
        self.admit(&h, d.get(HEADER_LEN..).unwrap_or_default().to_vec(), now);
    }

    /// Runs a data packet, holds it while its flow's state is pulled, or drops it (counted).
    fn admit(&mut self, h: &SteerHeader, frame: Vec<u8>, now: Nanos) {
        let mut frame = Some(frame);
        match self.flows.admit(h, &mut frame, now) {
            Admit::Run => {
                if let Some(f) = frame {
                    self.run_packet(h, f, now);
                }
            }
            Admit::Held => self.counters.held += 1,
            Admit::Pull { from } => {
                self.counters.held += 1;
                self.counters.pulls_sent += 1;
                self.pull(&h.flow, h.chain, h.clock, from);
            }
            Admit::Overflow => {
                self.counters.hold_overflow += 1;
                self.drops.count(DropReason::HoldOverflow);
            }
        }
    }

    fn pull(&mut self, flow: &FlowKey, chain: ChainId, clock: LogicalClock, from: WorkerId) {
        if let Some(to) = self.scale.addr_of(from) {
            self.send_message(Kind::PullRequest, chain, flow, clock, &[], to);
        }
    }

    /// Runs one frame through its chain and returns it to the director.
    fn run_packet(&mut self, h: &SteerHeader, frame: Vec<u8>, now: Nanos) {
        let ctx = Ctx { now, core: CoreId(0) };
        let meta = match parse(&frame, h.port, &self.policy) {
            Ok(m) => m,
            Err(reason) => {
                self.drops.count(reason);
                return;
            }
        };
        let mut frames = [frame];
        let mut metas = [meta];
        let mut verdicts = [Verdict::Continue];
        self.pipeline.run(usize::from(h.chain.0), &ctx, &mut frames, &mut metas, &mut verdicts, &[0]);
        if !h.untracked {
            // The tuple the frame leaves with, if an NF rewrote it: the director learns it as
            // an alias from the frame, and a restarted one from the inventory.
            let [meta] = &metas;
            let out = matches!(verdicts, [Verdict::Out(_)]);
            let rewritten = (out && meta.key != h.flow).then_some(meta.key);
            self.flows.applied(&h.flow, h.clock, rewritten);
        }
        let [frame] = frames;
        match verdicts {
            [Verdict::Out(port)] => {
                let back = SteerHeader { direction: Direction::ToDirector, port, worker: self.id, ..*h };
                let mut datagram = std::mem::take(&mut self.datagram);
                datagram.clear();
                datagram.resize(HEADER_LEN, 0);
                back.write(&mut datagram);
                datagram.extend_from_slice(&frame);
                match self.logger {
                    // Output commit (SNF §6): the frame leaves only through the logger, after
                    // the flow's state it reflects.
                    Some(logger) if !h.untracked => {
                        let mut body = std::mem::take(&mut self.state);
                        body.clear();
                        body.extend_from_slice(
                            &u32::try_from(datagram.len()).unwrap_or(u32::MAX).to_be_bytes(),
                        );
                        body.extend_from_slice(&datagram);
                        self.pipeline.copy_flow(usize::from(h.chain.0), &h.flow, &ctx, &mut body);
                        self.send_message(Kind::Logged, h.chain, &h.flow, h.clock, &body, logger);
                        self.state = body;
                    }
                    _ => self.fabric.send(&datagram, self.director),
                }
                self.datagram = datagram;
                self.counters.packets_out += 1;
            }
            [Verdict::Drop(reason)] => self.drops.count(reason),
            _ => self.drops.count(DropReason::NoOutput),
        }
    }

    /// The packets held for `flow`'s pull, now it is answered (or given up): each is admitted
    /// again in order (a later flowlet among them may need another pull), then the peers whose
    /// pulls waited for them are answered.
    fn run_held(&mut self, flow: &FlowKey, held: VecDeque<Held>, now: Nanos) {
        for Held { header, frame } in held {
            self.admit(&header, frame, now);
        }
        for (peer, chain, request) in self.flows.take_waiting(flow) {
            self.answer_pull(flow, chain, peer, request, now);
        }
    }

    /// Sends `peer` this worker's copy of `flow` (its owner moved it on: the copy stops being
    /// the live one), or word that there is none.
    fn answer_pull(
        &mut self,
        flow: &FlowKey,
        chain: ChainId,
        peer: WorkerId,
        request: LogicalClock,
        now: Nanos,
    ) {
        let Some(to) = self.scale.addr_of(peer) else { return };
        self.counters.pulls_served += 1;
        answer_body(request, &mut self.state);
        let ctx = Ctx { now, core: CoreId(0) };
        let records = self.pipeline.export_flow(usize::from(chain.0), flow, &ctx, &mut self.state);
        let clock = self.flows.clock(flow).unwrap_or(LogicalClock::ZERO);
        let kind = if records == 0 { Kind::NoState } else { Kind::State };
        if records > 0 {
            self.flows.gave_away(flow);
        }
        let body = std::mem::take(&mut self.state);
        self.send_message(kind, chain, flow, clock, &body, to);
        self.state = body;
    }

    fn on_message(&mut self, m: Message<'_>, now: Nanos) {
        let ctx = Ctx { now, core: CoreId(0) };
        let chain = usize::from(m.chain.0);
        match m.kind {
            Kind::PullRequest => {
                if self.flows.defer_pull(&m.flow, m.sender, m.chain, m.clock) {
                    self.counters.pulls_deferred += 1;
                } else {
                    self.answer_pull(&m.flow, m.chain, m.sender, m.clock, now);
                }
            }
            Kind::State | Kind::NoState => {
                let Some((request, body)) = split_answer(m.body) else {
                    self.reject(MessageError::Short);
                    return;
                };
                let copy = (m.kind == Kind::State).then_some(m.clock);
                let Some(answered) = self.flows.pull_answered(&m.flow, m.sender, request, copy, now) else {
                    // A late or repeated answer to a request already answered or re-aimed.
                    self.counters.late_answers += 1;
                    return;
                };
                self.pull_latency.record(answered.waited.0);
                if m.sender.0 & LOGGER != 0 && m.sender != DIRECTOR {
                    self.recover_latency.record(answered.round_trip.0);
                }
                if m.kind == Kind::NoState {
                    self.counters.pulls_empty += 1;
                } else if answered.install {
                    self.counters.pulls_answered += 1;
                    if self.pipeline.import_flow(chain, &m.flow, &ctx, body).is_err() {
                        self.counters.imports_failed += 1;
                    }
                } else {
                    self.counters.stale_refused += 1;
                }
                self.run_held(&m.flow, answered.held, now);
            }
            Kind::Push => {
                if !self.flows.push_arrived(&m.flow, m.chain, m.clock, now) {
                    self.counters.stale_refused += 1;
                } else if self.pipeline.import_flow(chain, &m.flow, &ctx, m.body).is_ok() {
                    self.counters.pushes_installed += 1;
                } else {
                    self.counters.imports_failed += 1;
                }
            }
            Kind::Replicate if m.sender == DIRECTOR => {
                self.counters.replicate_orders += 1;
                let started = std::time::Instant::now();
                let targets: Vec<WorkerId> = m
                    .body
                    .chunks_exact(2)
                    .map(|p| WorkerId(u16::from_be_bytes([p[0], p[1]])))
                    .filter(|t| *t != self.id)
                    .collect();
                self.push(&m.flow, m.chain, &targets, now);
                self.push_cost.record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
            Kind::Resync if m.sender == DIRECTOR => {
                // A new output logger: give it every flow held here.
                let Some(logger) = self.logger else { return };
                let held: Vec<(FlowKey, ChainId)> = self.flows.held_state().map(|(f, c, _)| (f, c)).collect();
                for (flow, chain) in held {
                    self.push_to(&flow, chain, logger, now);
                }
            }
            Kind::Inventory if m.sender == DIRECTOR => {
                // A director that took over asks where the state is (`inventory.rs`).
                for body in super::inventory::encode(&self.flows.inventory()) {
                    let (flow, director) = (FlowKey::default(), self.director);
                    self.send_message(Kind::Holding, ChainId(0), &flow, LogicalClock::ZERO, &body, director);
                }
                self.counters.inventories_sent += 1;
            }
            Kind::Moved if m.sender == DIRECTOR => {
                // The flow's state went on from a replica: this copy is no longer the live one.
                self.state.clear();
                self.pipeline.export_flow(chain, &m.flow, &ctx, &mut self.state);
                self.flows.gave_away(&m.flow);
            }
            Kind::Recover if m.sender == DIRECTOR => {
                let id = |b: &[u8]| b.first_chunk::<2>().map(|c| WorkerId(u16::from_be_bytes(*c)));
                let (Some(failed), Some(source)) = (id(m.body), m.body.get(2..).and_then(id)) else {
                    self.reject(MessageError::Short);
                    return;
                };
                if source == self.id {
                    // This worker released the flow's last frames before it moved to the
                    // failed one, whose pull never finished: the copy here is the newest. It
                    // was marked moved when given away (a NAT mapping no longer refreshed);
                    // importing it back makes it live here again.
                    if let Some((chain, held)) = self.flows.settle_here(&m.flow, failed) {
                        self.counters.pulls_redirected += 1;
                        let chain = usize::from(chain.0);
                        let mut copy = std::mem::take(&mut self.state);
                        copy.clear();
                        if self.pipeline.copy_flow(chain, &m.flow, &ctx, &mut copy) > 0
                            && self.pipeline.import_flow(chain, &m.flow, &ctx, &copy).is_err()
                        {
                            self.counters.imports_failed += 1;
                        }
                        self.state = copy;
                        self.run_held(&m.flow, held, now);
                    }
                } else if let Some((to, chain, clock)) = self.flows.recover(&m.flow, failed, source, now) {
                    self.counters.pulls_redirected += 1;
                    self.pull(&m.flow, chain, clock, to);
                }
            }
            Kind::Stop if m.sender == DIRECTOR => self.stopping = true,
            Kind::Replicate
            | Kind::Hello
            | Kind::Stop
            | Kind::Logged
            | Kind::Resync
            | Kind::Moved
            | Kind::Recover
            | Kind::Inventory
            | Kind::Holding => {}
        }
    }

    /// Pushes a copy of the flow's state to each target (replicas).
    fn push(&mut self, flow: &FlowKey, chain: ChainId, targets: &[WorkerId], now: Nanos) {
        for t in targets {
            if let Some(to) = self.scale.addr_of(*t) {
                self.push_to(flow, chain, to, now);
            }
        }
    }

    fn push_to(&mut self, flow: &FlowKey, chain: ChainId, to: SocketAddr, now: Nanos) {
        let ctx = Ctx { now, core: CoreId(0) };
        let mut body = std::mem::take(&mut self.state);
        body.clear();
        if self.pipeline.copy_flow(usize::from(chain.0), flow, &ctx, &mut body) > 0 {
            let clock = self.flows.clock(flow).unwrap_or(LogicalClock::ZERO);
            self.counters.pushes_sent += 1;
            self.send_message(Kind::Push, chain, flow, clock, &body, to);
        }
        self.state = body;
    }

    fn chores(&mut self, now: Nanos) {
        self.pipeline.housekeeping(&Ctx { now, core: CoreId(0) });
        let mut expired = Vec::new();
        self.flows.expired(now, self.pull_timeout, &mut expired);
        for (e, held) in expired {
            match e {
                Expired::Retry { flow, from, chain, clock } => {
                    self.counters.pull_retries += 1;
                    self.pull(&flow, chain, clock, from);
                }
                Expired::GiveUp { flow } => {
                    self.counters.pull_timeouts += 1;
                    self.run_held(&flow, held, now);
                }
            }
        }
    }

    fn send_message(
        &mut self,
        kind: Kind,
        chain: ChainId,
        flow: &FlowKey,
        clock: LogicalClock,
        body: &[u8],
        to: SocketAddr,
    ) {
        let m = Outgoing { kind, chain, flow, clock, body };
        let n = self.fabric.send_message(&mut self.sealer, m, to);
        if matches!(kind, Kind::State | Kind::Push) {
            self.counters.state_bytes_sent += n as u64;
        }
    }

    fn reject(&mut self, e: MessageError) {
        *self.counters.rejected.entry(e.name()).or_default() += 1;
    }

    /// The latency histograms as microsecond percentiles.
    pub fn latencies(&self) -> serde_json::Value {
        let pct = |h: &Histogram| {
            let us = |q: f64| h.quantile(q).map_or(0.0, |ns| ns as f64 / 1e3);
            serde_json::json!({ "count": h.count(), "p50_us": us(0.5), "p99_us": us(0.99), "max_us": h.max().map_or(0.0, |ns| ns as f64 / 1e3) })
        };
        serde_json::json!({
            "pull": pct(&self.pull_latency),
            "recover": pct(&self.recover_latency),
            "push": pct(&self.push_cost),
        })
    }

    /// Every NF's counters, by NF name.
    pub fn nf_counters(&self) -> serde_json::Value {
        let mut all = serde_json::Map::new();
        for (name, _kind, _stats, report) in self.pipeline.reports() {
            let counters: serde_json::Map<String, serde_json::Value> =
                report.counters.iter().map(|(k, v)| ((*k).to_string(), (*v).into())).collect();
            all.insert(name, counters.into());
        }
        all.into()
    }

    /// Drop counters by reason name.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        self.drops.nonzero().map(|(r, n)| (r.name(), n)).collect()
    }
}
