//! The per-core run-to-completion loop: receive a burst, parse, run the chain, transmit.
//!
//! A core owns everything it touches on the packet path: its receive and transmit queues,
//! its buffer pool, its NF instances and their state. The only cross-core traffic is
//! software steering through bounded lock-free queues, and the counter snapshot it publishes
//! every 100 ms. A frame is steered to another core when
//! - an NF of the chain it enters names that core
//!   ([`NetworkFunction::steer`](nflet_nfs::nf::NetworkFunction::steer): the NAT, for replies
//!   to a public port another core owns), whatever the port's own spreading; else
//! - its flow hash belongs to that core, for ports that do not spread flows themselves.
//!
//! A steered frame runs its whole chain on the core it was moved to, and is not steered again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use nflet_nfs::chain::Pipeline;
use nflet_nfs::drop::DropReason;
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Ctx, Verdict};
use nflet_nfs::packet::{parse, Meta, ParsePolicy};
use nflet_nfs::time::{Clock, MonotonicClock, Nanos};

use super::stats::{CoreStats, Snapshot};
use crate::port::{BufPool, PktBuf, RxQueue, RxStatus, TxQueue};

/// How often a core publishes its counters.
const PUBLISH_EVERY: Nanos = Nanos::from_millis(100);
/// NF housekeeping runs once every this many loop iterations.
const HOUSEKEEPING_EVERY: u32 = 16;
/// Empty polls in a row before the core starts sleeping between polls.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 64;

/// A frame on its way to another core, with what the parser learned.
pub type Steered = (PktBuf, Meta);

/// Software steering between cores: one inbound queue per core.
#[derive(Debug, Clone)]
pub struct Steering {
    pub inbound: Vec<Arc<ArrayQueue<Steered>>>,
}

/// How the frames of one receive burst may be steered (module doc).
#[derive(Debug, Clone, Copy)]
struct Steer {
    /// By flow hash: the port does not spread flows itself.
    by_hash: bool,
    /// By an NF of the frame's chain.
    by_nf: bool,
}

/// Shared run control.
#[derive(Debug, Default)]
pub struct Control {
    /// Set to stop every core.
    pub stop: AtomicBool,
    /// Cores whose receive queues are not all exhausted yet.
    pub live_inputs: AtomicUsize,
}

/// Everything one core needs.
pub struct CoreLoop {
    pub id: CoreId,
    pub cores: usize,
    /// Receive queues with their port.
    pub rx: Vec<(PortId, Box<dyn RxQueue>)>,
    /// Transmit queue per port (index = port id), `None` for receive-only ports.
    pub tx: Vec<Option<Box<dyn TxQueue>>>,
    pub pool: BufPool,
    pub pipeline: Pipeline,
    /// Which chain each received frame enters.
    pub chains: super::select::ChainSelector,
    pub policy: ParsePolicy,
    pub burst: usize,
    pub idle_sleep: Duration,
    pub steering: Option<Steering>,
    pub control: Arc<Control>,
    pub publish: Arc<spin::Mutex<Snapshot>>,
    /// Packets after which the counters are noted as the end of a warm-up (benchmarks).
    pub warmup: u64,
    /// Packet capture: this core's copy of matching frames (`crate::capture`).
    pub tap: crate::capture::Tap,
    /// Where a new configuration arrives (live reload).
    pub mailbox: Arc<super::reload::Mailbox>,
}

impl std::fmt::Debug for CoreLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreLoop").field("id", &self.id).field("rx_queues", &self.rx.len()).finish()
    }
}

/// Per-burst working arrays, allocated once.
struct Work {
    frames: Vec<PktBuf>,
    metas: Vec<Meta>,
    verdicts: Vec<Verdict>,
    active: Vec<u16>,
    chains: Vec<Option<usize>>,
    rx: Vec<PktBuf>,
    pending: Vec<Vec<PktBuf>>,
}

impl CoreLoop {
    /// Runs until told to stop, or until every input everywhere is exhausted.
    pub fn run(mut self, clock: &MonotonicClock) -> CoreStats {
        let ports = self.tx.len();
        let mut stats = CoreStats::new(ports);
        stats.chain_cpu_ns = vec![0; self.pipeline.chains.len()];
        let cap = self.burst * 2;
        let mut w = Work {
            frames: Vec::with_capacity(cap),
            metas: Vec::with_capacity(cap),
            verdicts: Vec::with_capacity(cap),
            active: Vec::with_capacity(cap),
            chains: Vec::with_capacity(cap),
            rx: Vec::with_capacity(cap),
            pending: (0..ports).map(|_| Vec::with_capacity(cap)).collect(),
        };
        let mut nf_steer = self.nf_steering(ports);
        let mut exhausted = vec![false; self.rx.len()];
        let mut inputs_done = self.rx.is_empty();
        if inputs_done {
            self.control.live_inputs.fetch_sub(1, Ordering::AcqRel);
        }
        let mut idle_run = 0u32;
        let mut iteration = 0u32;
        let mut last_publish = clock.now();
        loop {
            if self.control.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.mailbox.pending() {
                self.switch(&mut stats);
                nf_steer = self.nf_steering(ports);
            }
            let start = clock.now();
            self.tap.poll(start);
            let ctx = Ctx { now: start, core: self.id };
            let mut got = 0usize;
            for q in 0..self.rx.len() {
                if exhausted.get(q).copied().unwrap_or(true) {
                    continue;
                }
                let Some((port, queue)) = self.rx.get_mut(q) else { continue };
                let port = *port;
                match queue.rx_burst(&mut self.pool, &mut w.rx, self.burst) {
                    RxStatus::Received(0) => {}
                    RxStatus::Received(n) => {
                        got += n;
                        let steer = Steer {
                            by_hash: self.cores > 1 && !queue.steered(),
                            by_nf: nf_steer.get(usize::from(port.0)).copied().unwrap_or(false),
                        };
                        if let Some(l) = stats.port_lost.get_mut(usize::from(port.0)) {
                            *l = queue.lost();
                        }
                        self.tap.rx(port, &w.rx);
                        self.ingest(port, steer, &mut w, &mut stats);
                        self.process(&ctx, &mut w, &mut stats);
                    }
                    RxStatus::Exhausted => {
                        if let Some(e) = exhausted.get_mut(q) {
                            *e = true;
                        }
                    }
                }
            }
            got += self.receive_steered(&ctx, &mut w, &mut stats);
            if !inputs_done && exhausted.iter().all(|e| *e) {
                inputs_done = true;
                self.control.live_inputs.fetch_sub(1, Ordering::AcqRel);
            }
            iteration = iteration.wrapping_add(1);
            if iteration.is_multiple_of(HOUSEKEEPING_EVERY) {
                self.pipeline.housekeeping(&ctx);
            }
            stats.polls += 1;
            if got > 0 {
                idle_run = 0;
                stats.busy_polls += 1;
                stats.busy_ns += clock.now().saturating_sub(start).0;
                if self.warmup > 0 && stats.at_warmup.is_none() && stats.chained >= self.warmup {
                    stats.at_warmup = Some((stats.chained, stats.chain_ns, stats.busy_ns));
                }
            } else {
                idle_run = idle_run.saturating_add(1);
                if idle_run == IDLE_POLLS_BEFORE_SLEEP {
                    self.flush();
                }
                let everyone_done = self.control.live_inputs.load(Ordering::Acquire) == 0;
                if everyone_done && self.steered_backlog() == 0 {
                    break;
                }
                if idle_run >= IDLE_POLLS_BEFORE_SLEEP && !self.idle_sleep.is_zero() {
                    std::thread::sleep(self.idle_sleep);
                }
            }
            if start.saturating_sub(last_publish) >= PUBLISH_EVERY {
                last_publish = start;
                self.publish(&stats, false);
            }
        }
        self.flush();
        self.pipeline.housekeeping(&Ctx { now: clock.now(), core: self.id });
        self.publish(&stats, true);
        stats
    }

    /// Per port: does a chain entered from it hold an NF that steers at ingress?
    fn nf_steering(&self, ports: usize) -> Vec<bool> {
        (0..ports)
            .map(|p| self.cores > 1 && self.chains.chains_of(p).any(|c| self.pipeline.steers(c)))
            .collect()
    }

    /// Live reload: switches to the plan in the mailbox, between two bursts.
    fn switch(&mut self, stats: &mut CoreStats) {
        let started = Instant::now();
        let Some(mut plan) = self.mailbox.take_plan() else { return };
        self.chains = std::mem::take(&mut plan.selector);
        let retired = super::reload::apply(&mut self.pipeline, plan, &mut stats.chain_cpu_ns);
        let pause = started.elapsed();
        self.mailbox.done(super::reload::Applied { pause, retired });
    }

    /// Parses the received frames into the work arrays; hands frames that belong to other
    /// cores to them (module doc).
    fn ingest(&mut self, port: PortId, steer: Steer, w: &mut Work, stats: &mut CoreStats) {
        let mut rx = super::stats::Tally::default();
        let me = usize::from(self.id.0);
        for buf in w.rx.drain(..) {
            rx.add(buf.len());
            match parse(buf.data(), port, &self.policy) {
                Ok(meta) => {
                    let by_nf = if steer.by_nf {
                        self.chains
                            .select(&meta)
                            .and_then(|c| self.pipeline.steer(c, &meta, buf.data()))
                            .map(|core| usize::from(core.0))
                            .filter(|&t| t < self.cores)
                    } else {
                        None
                    };
                    let target = by_nf
                        .or_else(|| steer.by_hash.then(|| nflet_nfs::flow::core_for(meta.hash, self.cores)));
                    if let Some(target) = target.filter(|&t| t != me) {
                        self.steer(target, buf, meta, by_nf.is_some(), stats);
                        continue;
                    }
                    w.frames.push(buf);
                    w.metas.push(meta);
                }
                Err(reason) => {
                    stats.drops.count(reason);
                    self.pool.put(buf);
                }
            }
        }
        if let Some(t) = stats.rx.get_mut(usize::from(port.0)) {
            t.merge(&rx);
        }
    }

    fn steer(&mut self, target: usize, buf: PktBuf, meta: Meta, by_nf: bool, stats: &mut CoreStats) {
        let q = self.steering.as_ref().and_then(|s| s.inbound.get(target));
        let Some(q) = q else { return };
        // A full queue hands the frame back; it is dropped and counted.
        #[allow(clippy::result_large_err)]
        let pushed = q.push((buf, meta));
        match pushed {
            Ok(()) => {
                stats.steered_out += 1;
                stats.steered_by_nf += u64::from(by_nf);
            }
            Err((buf, _)) => {
                stats.drops.count(DropReason::SteeringFull);
                self.pool.put(buf);
            }
        }
    }

    fn steered_backlog(&self) -> usize {
        self.steering.as_ref().and_then(|s| s.inbound.get(usize::from(self.id.0))).map_or(0, |q| q.len())
    }

    fn receive_steered(&mut self, ctx: &Ctx, w: &mut Work, stats: &mut CoreStats) -> usize {
        let Some(q) = self.steering.as_ref().and_then(|s| s.inbound.get(usize::from(self.id.0))).cloned()
        else {
            return 0;
        };
        let mut n = 0;
        while n < self.burst {
            let Some((buf, meta)) = q.pop() else { break };
            w.frames.push(buf);
            w.metas.push(meta);
            n += 1;
        }
        if n > 0 {
            stats.steered_in += n as u64;
            self.process(ctx, w, stats);
        }
        n
    }

    /// Runs the parsed frames through their chains and transmits the survivors.
    fn process(&mut self, ctx: &Ctx, w: &mut Work, stats: &mut CoreStats) {
        let n = w.frames.len();
        if n == 0 {
            return;
        }
        w.verdicts.clear();
        w.verdicts.resize(n, Verdict::Drop(DropReason::NoChain));
        let t0 = Instant::now();
        // Group by chain; a burst almost always comes from one port, hence one chain.
        w.chains.clear();
        w.chains.extend(w.metas.iter().map(|m| self.chains.select(m)));
        let mut start = 0;
        while let Some(first) = w.chains.iter().skip(start).position(Option::is_some).map(|p| p + start) {
            let chain = w.chains.get(first).copied().flatten();
            w.active.clear();
            for (i, c) in w.chains.iter_mut().enumerate().skip(first) {
                if *c == chain {
                    w.active.push(i as u16);
                    *c = None;
                }
            }
            if let Some(c) = chain {
                self.tap.chain(c, &w.frames, &w.active);
                let before = Instant::now();
                self.pipeline.run(c, ctx, &mut w.frames, &mut w.metas, &mut w.verdicts, &w.active);
                let spent = before.elapsed().as_nanos() as u64;
                stats.chain_ns += spent;
                if let Some(b) = stats.chain_cpu_ns.get_mut(c) {
                    *b += spent;
                }
            }
            start = first + 1;
        }
        stats.chained += n as u64;
        for (buf, v) in w.frames.drain(..).zip(w.verdicts.iter()) {
            match v {
                Verdict::Out(p) => match w.pending.get_mut(usize::from(p.0)) {
                    Some(q) => q.push(buf),
                    None => {
                        stats.drops.count(DropReason::NoOutput);
                        self.pool.put(buf);
                    }
                },
                Verdict::Drop(r) => {
                    stats.drops.count(*r);
                    self.pool.put(buf);
                }
                Verdict::Continue | Verdict::Label(_) => {
                    stats.drops.count(DropReason::NoOutput);
                    self.pool.put(buf);
                }
            }
        }
        w.metas.clear();
        self.transmit(w, stats);
        stats.bursts.record(t0.elapsed().as_nanos() as u64);
    }

    fn transmit(&mut self, w: &mut Work, stats: &mut CoreStats) {
        for (p, pending) in w.pending.iter_mut().enumerate() {
            if pending.is_empty() {
                continue;
            }
            let tally = stats.tx.get_mut(p);
            match self.tx.get_mut(p).and_then(|t| t.as_mut()) {
                Some(q) => {
                    self.tap.tx(p, pending);
                    let before: usize = pending.iter().map(PktBuf::len).sum();
                    let sent = q.tx_burst(pending, &mut self.pool);
                    let left: usize = pending.iter().map(PktBuf::len).sum();
                    if let Some(t) = tally {
                        t.packets += sent as u64;
                        t.bytes += (before - left) as u64;
                    }
                    for b in pending.drain(..) {
                        stats.drops.count(DropReason::TxFull);
                        self.pool.put(b);
                    }
                }
                None => {
                    for b in pending.drain(..) {
                        stats.drops.count(DropReason::NoOutput);
                        self.pool.put(b);
                    }
                }
            }
        }
    }

    fn flush(&mut self) {
        for q in self.tx.iter_mut().flatten() {
            q.flush();
        }
    }

    fn publish(&self, stats: &CoreStats, finished: bool) {
        let snap = Snapshot {
            core: stats.clone(),
            nfs: self.pipeline.reports(),
            chains: self.pipeline.chain_stats.clone(),
            finished,
        };
        *self.publish.lock() = snap;
    }
}
