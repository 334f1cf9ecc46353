//! The dataplane: builds each core's pipeline and queues from the configuration, runs one
//! [`CoreLoop`](core::CoreLoop) thread per core, and gathers their counters.

pub mod core;
pub mod open;
pub mod reload;
pub mod select;

#[cfg(test)]
mod reload_tests;
pub mod stats;
#[cfg(test)]
mod steer_esp_tests;
#[cfg(test)]
mod steer_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod two_cores;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use nflet_nfs::chain::{Chain, NfSlot, NfStats, Pipeline};
use nflet_nfs::functions::AnyNf;
use nflet_nfs::ids::CoreId;
use nflet_nfs::nf::{InitCtx, NfError, SharedRegistry};
use nflet_nfs::state::{Arena, StateDir, StateError};
use nflet_nfs::time::{Clock, MonotonicClock, Nanos};

use self::core::{Control, CoreLoop, Steering};
use self::open::{open_ports, CoreQueues, Offline};
use self::stats::{CoreStats, Snapshot};
use crate::capture::Tap;
use crate::config::Config;
use crate::port::{BufPool, PortError};
use crate::traffic::streams::ProbeStats;
use crate::traffic::ProbeSession;

/// Why the appliance could not start.
#[derive(Debug)]
pub enum StartError {
    Port(PortError),
    Nf { core: CoreId, nf: String, source: NfError },
    State(StateError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Port(e) => write!(f, "{e}"),
            StartError::Nf { core, nf, source } => write!(f, "NF `{nf}` on {core}: {source}"),
            StartError::State(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<PortError> for StartError {
    fn from(e: PortError) -> Self {
        StartError::Port(e)
    }
}

/// Builds the pipelines of every core (NF instances with their state, chains).
pub fn build_pipelines(config: &Config) -> Result<(Vec<Pipeline>, Vec<Arena>), StartError> {
    build_pipelines_in(config, None)
}

/// Opens and locks the configured state directory, if any (`[appliance] state_dir`).
pub fn open_state(config: &Config) -> Result<Option<Arc<StateDir>>, StartError> {
    let Some(dir) = &config.settings.state_dir else { return Ok(None) };
    Ok(Some(Arc::new(StateDir::open(dir, config.settings.cores).map_err(StartError::State)?)))
}

/// [`build_pipelines`], with every core's tables in `state` when given: re-attached when a
/// previous instance left them there with the same layout (hitless restart).
pub fn build_pipelines_in(
    config: &Config,
    state: Option<&Arc<StateDir>>,
) -> Result<(Vec<Pipeline>, Vec<Arena>), StartError> {
    build(config, state, nflet_nfs::ids::Instance::default())
}

/// [`build_pipelines`] for one instance of a scale-out deployment (NFs that split global
/// resources, like the NAT's ports, take this instance's share).
pub fn build_pipelines_for(
    config: &Config,
    instance: nflet_nfs::ids::Instance,
) -> Result<(Vec<Pipeline>, Vec<Arena>), StartError> {
    build(config, None, instance)
}

fn build(
    config: &Config,
    state: Option<&Arc<StateDir>>,
    instance: nflet_nfs::ids::Instance,
) -> Result<(Vec<Pipeline>, Vec<Arena>), StartError> {
    let cores = config.settings.cores;
    let mut shared = SharedRegistry::default();
    let ports = config.port_names();
    let mut pipelines = Vec::with_capacity(cores);
    let mut arenas = Vec::with_capacity(cores);
    for c in 0..cores {
        let core = CoreId(u16::try_from(c).unwrap_or(u16::MAX));
        let mut arena = Arena::new(core, config.settings.arena_bytes, config.settings.backing);
        if let Some(dir) = state {
            arena = arena.with_state_dir(Arc::clone(dir));
        }
        let mut nfs = Vec::with_capacity(config.nfs.len());
        for (name, cfg) in &config.nfs {
            let mut rt = InitCtx {
                instance,
                name,
                core,
                cores,
                ports: &ports,
                arena: &mut arena,
                shared: &mut shared,
            };
            let nf = AnyNf::init(cfg, &mut rt).map_err(|source| StartError::Nf {
                core,
                nf: name.clone(),
                source,
            })?;
            nfs.push(NfSlot { name: name.clone(), nf, stats: NfStats::default() });
        }
        let chains = config
            .chains
            .iter()
            .map(|c| Chain { name: c.name.clone(), steps: c.steps.clone(), output: c.output })
            .collect();
        pipelines.push(Pipeline::new(nfs, chains));
        arenas.push(arena);
    }
    for p in &mut pipelines {
        p.after_init();
    }
    if let Some(dir) = state {
        let (kept, cold) = arenas.iter().fold((0, 0), |(k, c), a| (k + a.persisted().0, c + a.persisted().1));
        log::info!("state in {}: {kept} table(s) re-attached, {cold} started empty", dir.path().display());
        let stale = dir.prune();
        if !stale.is_empty() {
            log::info!("state of tables no longer configured removed: {}", stale.join(", "));
        }
    }
    Ok((pipelines, arenas))
}

/// How to run.
#[derive(Clone, Default)]
pub struct RunOptions<'a> {
    /// Stop after this long (otherwise at Ctrl-C or when all inputs are exhausted).
    pub duration: Option<Duration>,
    /// Print one counter line per second to stderr.
    pub live: bool,
    pub offline: Option<Offline<'a>>,
    /// Packets per core after which each core notes its counters (warm-up end).
    pub warmup: u64,
    /// Called about ten times a second with the latest merged counters (progress bars).
    pub progress: Option<&'a (dyn Fn(&Summary) + Sync)>,
    /// Packet capture driven by the management endpoint; `None`: the cores never capture.
    pub capture: Option<Arc<crate::capture::Hub>>,
    /// Where live reload requests come from (SIGHUP, the management endpoint).
    pub reload: Option<&'a reload::ReloadRequests>,
}

impl std::fmt::Debug for RunOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("duration", &self.duration)
            .field("live", &self.live)
            .field("warmup", &self.warmup)
            .field("offline", &self.offline)
            .field("progress", &self.progress.is_some())
            .field("capture", &self.capture.is_some())
            .field("reload", &self.reload.is_some())
            .finish()
    }
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub elapsed: Duration,
    pub cores: Vec<CoreStats>,
    pub total: CoreStats,
    /// NF reports of every core, by core.
    pub nfs: Vec<Vec<(String, &'static str, NfStats, nflet_nfs::nf::Report)>>,
    pub chains: Vec<nflet_nfs::chain::ChainStats>,
    /// Chain counters of each core (outer index: core).
    pub chains_by_core: Vec<Vec<nflet_nfs::chain::ChainStats>>,
    pub sinks: Vec<(String, u64, u64)>,
    pub chain_names: Vec<String>,
    /// Who is billed for each chain.
    pub chain_tenants: Vec<String>,
    pub port_names: Vec<String>,
    /// Analyzer ports by name, with their stats merged over cores (filled at the end of a run).
    pub analyzers: Vec<(String, ProbeStats)>,
}

/// Runs the appliance described by `config` until it stops; returns the counters.
pub fn run(
    config: &Config,
    opts: &RunOptions<'_>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Summary, StartError> {
    run_in_session(config, opts, stop, &ProbeSession::new())
}

/// [`run`], with probing generators and analyzer ports in `session` (whose halt flag then
/// stops the generators while the rest runs on).
pub fn run_in_session(
    config: &Config,
    opts: &RunOptions<'_>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    session: &ProbeSession,
) -> Result<Summary, StartError> {
    let cores = config.settings.cores;
    let state = open_state(config)?;
    let (pipelines, _arenas) = build_pipelines_in(config, state.as_ref())?;
    let CoreQueues { rx, tx, sinks, analyzers } = open_ports(config, opts.offline.as_ref(), session)?;
    let control = Arc::new(Control::default());
    control.live_inputs.store(cores, Ordering::Release);
    let steering = (cores > 1).then(|| Steering {
        inbound: (0..cores).map(|_| Arc::new(ArrayQueue::new(config.settings.burst * 64))).collect(),
    });
    let exchange = Arc::new(ArrayQueue::new(config.settings.buffers_per_core.max(1)));
    let chains = select::ChainSelector::new(config);
    let publish: Vec<Arc<spin::Mutex<Snapshot>>> =
        (0..cores).map(|_| Arc::new(spin::Mutex::new(Snapshot::default()))).collect();
    let mailboxes: Vec<Arc<reload::Mailbox>> = (0..cores).map(|_| Arc::default()).collect();
    let loops: Vec<CoreLoop> = pipelines
        .into_iter()
        .zip(rx)
        .zip(tx)
        .enumerate()
        .map(|(c, ((pipeline, rx), tx))| CoreLoop {
            id: CoreId(c as u16),
            cores,
            rx,
            tx,
            pool: BufPool::with_exchange(
                config.settings.buffers_per_core,
                config.settings.frame_size,
                Arc::clone(&exchange),
            ),
            pipeline,
            chains: chains.clone(),
            policy: config.parse,
            burst: config.settings.burst,
            idle_sleep: Duration::from_micros(config.settings.idle_sleep_us),
            steering: steering.clone(),
            control: Arc::clone(&control),
            publish: Arc::clone(publish.get(c).unwrap_or(&publish[0])),
            warmup: opts.warmup,
            tap: opts.capture.as_ref().map_or_else(Tap::off, |h| Tap::new(Arc::clone(h), c)),
            mailbox: Arc::clone(mailboxes.get(c).unwrap_or(&mailboxes[0])),
        })
        .collect();
    // The configuration running now: `config` until a live reload replaces it.
    let mut reloaded: Option<Config> = None;
    // With state carried over, time continues from where the previous instance left it, so
    // the timestamps in re-attached tables keep their meaning.
    let clock =
        MonotonicClock::starting_at(state.as_ref().and_then(|s| s.continued_clock()).unwrap_or(Nanos::ZERO));
    let save_clock = || {
        if let Some(s) = &state {
            if let Err(e) = s.save_clock(clock.now()) {
                log::warn!("saving the clock in {}: {e}", s.path().display());
            }
        }
    };
    save_clock();
    let mut clock_saved = Instant::now();
    let started = Instant::now();
    let per_core: Vec<CoreStats> = std::thread::scope(|s| {
        let handles: Vec<_> = loops
            .into_iter()
            .map(|l| {
                let clock = clock.clone();
                let cpu = config.settings.cpus.get(usize::from(l.id.0)).copied();
                std::thread::Builder::new().name(format!("nflet-core{}", l.id.0)).spawn_scoped(s, move || {
                    if let Some(cpu) = cpu {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                            log::warn!("{}: could not pin to CPU {cpu}; running unpinned", l.id);
                        }
                    }
                    l.run(&clock)
                })
            })
            .collect();
        let mut last_line = Instant::now();
        let mut prev = CoreStats::default();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let snaps: Vec<Snapshot> = publish.iter().map(|p| p.lock().clone()).collect();
            let ended: Vec<bool> =
                handles.iter().map(|h| h.as_ref().map_or(true, |h| h.is_finished())).collect();
            if ended.iter().all(|e| *e) {
                break;
            }
            // A core that ended without publishing its final counters failed: stop the rest.
            if ended.iter().zip(&snaps).any(|(e, s)| *e && !s.finished) {
                log::error!("a dataplane core stopped unexpectedly; stopping all cores");
                control.stop.store(true, Ordering::Relaxed);
            }
            let timed_out = opts.duration.is_some_and(|d| started.elapsed() >= d);
            if stop.load(Ordering::Relaxed) || timed_out {
                control.stop.store(true, Ordering::Relaxed);
            }
            if clock_saved.elapsed() >= Duration::from_secs(1) {
                save_clock();
                clock_saved = Instant::now();
            }
            let current = reloaded.as_ref().unwrap_or(config);
            if let Some(replies) = opts.reload.and_then(|r| r.take()) {
                let alive = || handles.iter().all(|h| h.as_ref().is_ok_and(|h| !h.is_finished()));
                let result = match reload::reload(current, &mailboxes, &alive) {
                    Ok((new, note)) => {
                        log::info!("{note}");
                        reloaded = Some(new);
                        Ok(note)
                    }
                    Err(e) => {
                        log::error!("reload refused: {e}");
                        Err(e)
                    }
                };
                for r in replies {
                    let _ = r.send(result.clone());
                }
                continue;
            }
            if let Some(cb) = opts.progress {
                cb(&merge(&snaps, started.elapsed(), current, &sinks));
            }
            if opts.live && last_line.elapsed() >= Duration::from_secs(1) {
                let now = merge(&snaps, started.elapsed(), current, &sinks);
                eprintln!("{}", live_line(&now.total, &prev, last_line.elapsed()));
                prev = now.total;
                last_line = Instant::now();
            }
        }
        handles.into_iter().filter_map(|h| h.ok()).filter_map(|h| h.join().ok()).collect()
    });
    // The cores have stopped: the tables hold their last state, stamped on this clock.
    save_clock();
    let snaps: Vec<Snapshot> = publish.iter().map(|p| p.lock().clone()).collect();
    let mut summary = merge(&snaps, started.elapsed(), reloaded.as_ref().unwrap_or(config), &sinks);
    summary.cores = per_core;
    // The cores have ended and their analyzer queues handed over their stats.
    summary.analyzers = analyzers
        .iter()
        .map(|(name, slots)| {
            let mut merged = ProbeStats::default();
            for s in slots {
                merged.merge(&s.lock());
            }
            (name.clone(), merged)
        })
        .collect();
    Ok(summary)
}

fn merge(
    snaps: &[Snapshot],
    elapsed: Duration,
    config: &Config,
    sinks: &[(String, Arc<crate::port::sink::SinkTotals>)],
) -> Summary {
    let mut total = CoreStats::new(config.ports.len());
    let mut chains = vec![nflet_nfs::chain::ChainStats::default(); config.chains.len()];
    for s in snaps {
        total.merge(&s.core);
        for (a, b) in chains.iter_mut().zip(&s.chains) {
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.forwarded += b.forwarded;
            a.dropped += b.dropped;
        }
    }
    Summary {
        elapsed,
        cores: snaps.iter().map(|s| s.core.clone()).collect(),
        total,
        nfs: snaps.iter().map(|s| s.nfs.clone()).collect(),
        chains,
        chains_by_core: snaps.iter().map(|s| s.chains.clone()).collect(),
        sinks: sinks
            .iter()
            .map(|(n, t)| (n.clone(), t.packets.load(Ordering::Relaxed), t.bytes.load(Ordering::Relaxed)))
            .collect(),
        chain_names: config.chains.iter().map(|c| c.name.clone()).collect(),
        chain_tenants: config.chains.iter().map(|c| c.tenant.clone()).collect(),
        port_names: config.port_names(),
        analyzers: Vec::new(),
    }
}

fn live_line(now: &CoreStats, prev: &CoreStats, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-9);
    let rx = now.rx_total();
    let tx = now.tx_total();
    let prx = prev.rx_total();
    let ptx = prev.tx_total();
    let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
    let busy = if now.polls > prev.polls {
        (now.busy_polls - prev.busy_polls) as f64 / (now.polls - prev.polls) as f64 * 100.0
    } else {
        0.0
    };
    format!(
        "rx {:>10.0} pps {:>8.1} Mbit/s | tx {:>10.0} pps | drops {:>8.0}/s (total {}) | busy {:>5.1}%",
        rate(rx.packets, prx.packets),
        rate(rx.bytes, prx.bytes) * 8.0 / 1e6,
        rate(tx.packets, ptx.packets),
        rate(now.drops.total(), prev.drops.total()),
        now.drops.total(),
        busy
    )
}
