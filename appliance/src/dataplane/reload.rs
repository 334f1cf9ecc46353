//! Live reload: a new configuration replaces the running chains and NFs between two bursts on
//! every core, without a restart.
//!
//! Everything slow happens off the fast path, on the run loop's main thread: reading and
//! validating the file, checking it can be applied live (same ports, cores and settings —
//! those need a restart), and building the NF instances whose configuration changed, with
//! their state. An NF whose name, kind and parameters are unchanged is *kept*: the core moves
//! the running instance, state and counters included, into its new pipeline. Each core then
//! swaps its pipeline and chain selector at the top of a loop iteration — a handful of moves —
//! and hands the retired instances back so that their memory is freed off the fast path.
//!
//! A configuration that fails to load, validate or build is refused with its error, and the
//! old one keeps running untouched.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nflet_nfs::chain::{Chain, ChainStats, NfSlot, NfStats, Pipeline};
use nflet_nfs::functions::AnyNf;
use nflet_nfs::ids::CoreId;
use nflet_nfs::nf::{InitCtx, SharedRegistry};
use nflet_nfs::state::Arena;

use super::select::ChainSelector;
use crate::config::Config;

/// The outcome of a reload request: what changed, or why nothing did.
pub type ReloadResult = Result<String, String>;

/// Reload requests from outside the run: SIGHUP and the management endpoint.
#[derive(Debug, Default)]
pub struct ReloadRequests {
    /// Raised by a signal handler (SIGHUP); nobody waits for the answer but the log.
    pub signal: Arc<AtomicBool>,
    waiting: Mutex<Vec<Sender<ReloadResult>>>,
}

impl ReloadRequests {
    /// Asks for a reload; the answer arrives on the returned channel.
    pub fn request(&self) -> Receiver<ReloadResult> {
        let (tx, rx) = channel();
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// The pending requests' reply channels, when there is any request (a signal has none).
    pub(super) fn take(&self) -> Option<Vec<Sender<ReloadResult>>> {
        let signalled = self.signal.swap(false, Ordering::AcqRel);
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        (signalled || !waiting.is_empty()).then_some(waiting)
    }
}

/// One NF of the new pipeline, in the new configuration's order.
#[derive(Debug)]
pub enum NextNf {
    /// The running instance of this name carries on.
    Keep(String),
    /// A new instance (new NF, or changed parameters).
    Fresh(Box<NfSlot>),
}

/// What a core switches to.
#[derive(Debug)]
pub struct Plan {
    pub nfs: Vec<NextNf>,
    pub chains: Vec<Chain>,
    pub selector: ChainSelector,
}

/// What a core hands back once it has switched.
#[derive(Debug)]
pub struct Applied {
    /// Time the core spent switching, between two bursts.
    pub pause: Duration,
    /// Instances no longer in use, to be dropped off the fast path.
    pub retired: Vec<NfSlot>,
}

/// The mailbox between the main thread and one core.
#[derive(Debug, Default)]
pub struct Mailbox {
    pending: AtomicBool,
    plan: spin::Mutex<Option<Plan>>,
    applied: spin::Mutex<Option<Applied>>,
}

impl Mailbox {
    /// Checked by the core once per loop iteration: one load when nothing is pending (acquire,
    /// so that the plan stored before the flag was raised is seen).
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// The core takes its plan...
    pub fn take_plan(&self) -> Option<Plan> {
        self.plan.lock().take()
    }

    /// ...and answers.
    pub fn done(&self, applied: Applied) {
        *self.applied.lock() = Some(applied);
        self.pending.store(false, Ordering::Release);
    }
}

/// Switches `pipeline` to `plan`, on the core, between bursts. Kept NFs move over with their
/// state and counters; chain counters follow chains by name.
pub fn apply(pipeline: &mut Pipeline, plan: Plan, chain_cpu_ns: &mut Vec<u64>) -> Vec<NfSlot> {
    let mut running: HashMap<String, NfSlot> =
        std::mem::take(&mut pipeline.nfs).into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut nfs = Vec::with_capacity(plan.nfs.len());
    for next in plan.nfs {
        match next {
            NextNf::Keep(name) => match running.remove(&name) {
                Some(slot) => nfs.push(slot),
                // The plan was made from this core's own configuration, so this cannot happen;
                // should it, the NF is left out and its chain steps skip nothing silently:
                // the main thread checks every core kept what it was told to.
                None => log::error!("reload: NF `{name}` to keep is not running on this core"),
            },
            NextNf::Fresh(slot) => nfs.push(*slot),
        }
    }
    let old_stats: HashMap<&str, (ChainStats, u64)> = pipeline
        .chains
        .iter()
        .zip(&pipeline.chain_stats)
        .enumerate()
        .map(|(i, (c, s))| (c.name.as_str(), (*s, chain_cpu_ns.get(i).copied().unwrap_or(0))))
        .collect();
    let carried: Vec<(ChainStats, u64)> =
        plan.chains.iter().map(|c| old_stats.get(c.name.as_str()).copied().unwrap_or_default()).collect();
    *pipeline = Pipeline::new(nfs, plan.chains);
    for (stats, (s, _)) in pipeline.chain_stats.iter_mut().zip(&carried) {
        *stats = *s;
    }
    *chain_cpu_ns = carried.iter().map(|(_, ns)| *ns).collect();
    running.into_values().collect()
}

/// Checks that `new` can replace `running` live; returns the names of the NFs to keep.
pub fn compatible(running: &Config, new: &Config) -> Result<Vec<String>, String> {
    let restart =
        |what: &str| Err(format!("{what} changed; that needs a restart (the running configuration is kept)"));
    if format!("{:?}", running.ports) != format!("{:?}", new.ports) {
        return restart("the ports");
    }
    if format!("{:?}", running.settings) != format!("{:?}", new.settings) {
        return restart("[appliance]");
    }
    if format!("{:?}", running.parse) != format!("{:?}", new.parse) {
        return restart("[parse]");
    }
    if format!("{:?}", running.dpdk) != format!("{:?}", new.dpdk) {
        return restart("[dpdk]");
    }
    // An NF is the same when its name, kind and every parameter are: the parsed parameters
    // (rules read from files included) print the same.
    let before: HashMap<&str, String> =
        running.nfs.iter().map(|(n, c)| (n.as_str(), format!("{c:?}"))).collect();
    Ok(new
        .nfs
        .iter()
        .filter(|(n, c)| before.get(n.as_str()).is_some_and(|b| *b == format!("{c:?}")))
        .map(|(n, _)| n.clone())
        .collect())
}

/// Builds each core's plan for `new`: fresh instances for every NF not in `keep`.
pub fn plan(new: &Config, keep: &[String]) -> Result<Vec<Plan>, String> {
    let cores = new.settings.cores;
    let ports = new.port_names();
    let mut shared = SharedRegistry::default();
    let selector = ChainSelector::new(new);
    let chains: Vec<Chain> = new
        .chains
        .iter()
        .map(|c| Chain { name: c.name.clone(), steps: c.steps.clone(), output: c.output })
        .collect();
    let mut plans = Vec::with_capacity(cores);
    for c in 0..cores {
        let core = CoreId(u16::try_from(c).unwrap_or(u16::MAX));
        // New instances get a fresh arena: the old instances' memory is freed once every core
        // has switched.
        let mut arena = Arena::new(core, new.settings.arena_bytes, new.settings.backing);
        let mut nfs = Vec::with_capacity(new.nfs.len());
        for (name, cfg) in &new.nfs {
            if keep.contains(name) {
                nfs.push(NextNf::Keep(name.clone()));
                continue;
            }
            let mut rt = InitCtx {
                instance: nflet_nfs::ids::Instance::default(),
                name,
                core,
                cores,
                ports: &ports,
                arena: &mut arena,
                shared: &mut shared,
            };
            let nf = AnyNf::init(cfg, &mut rt).map_err(|e| format!("NF `{name}` on {core}: {e}"))?;
            nfs.push(NextNf::Fresh(Box::new(NfSlot { name: name.clone(), nf, stats: NfStats::default() })));
        }
        plans.push(Plan { nfs, chains: chains.clone(), selector: selector.clone() });
    }
    for p in &mut plans {
        for next in &mut p.nfs {
            if let NextNf::Fresh(slot) = next {
                slot.nf.after_init();
            }
        }
    }
    Ok(plans)
}

/// Loads the configuration again from where `running` came from, checks it, and switches
/// every core to it. Returns the new configuration and a one-line account.
pub fn reload(
    running: &Config,
    mailboxes: &[Arc<Mailbox>],
    core_alive: &dyn Fn() -> bool,
) -> Result<(Config, String), String> {
    let path = Path::new(&running.source);
    if !path.is_file() {
        return Err(format!("the configuration came from {}, not a file: nothing to reload", running.source));
    }
    let mut new = Config::load(path).map_err(|e| e.to_string())?;
    // The core count may have come from the command line (`--cores`).
    new.settings.cores = running.settings.cores;
    new.settings.cpus.clone_from(&running.settings.cpus);
    let keep = compatible(running, &new)?;
    let started = Instant::now();
    let plans = plan(&new, &keep)?;
    let built = started.elapsed();
    for (mb, p) in mailboxes.iter().zip(plans) {
        *mb.plan.lock() = Some(p);
        mb.pending.store(true, Ordering::Release);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while mailboxes.iter().any(|m| m.pending()) {
        if Instant::now() > deadline || !core_alive() {
            return Err("a core did not take the new configuration within 10 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut pause = Duration::ZERO;
    let mut retired = 0;
    for mb in mailboxes {
        if let Some(a) = mb.applied.lock().take() {
            pause = pause.max(a.pause);
            retired += a.retired.len();
            drop(a.retired);
        }
    }
    let fresh: Vec<&str> =
        new.nfs.iter().map(|(n, _)| n.as_str()).filter(|n| !keep.iter().any(|k| k == n)).collect();
    let mut note = format!(
        "reloaded {}: kept [{}], rebuilt [{}], retired {} instance(s); built in {} ms, longest core pause {} µs",
        new.source,
        keep.join(", "),
        fresh.join(", "),
        retired,
        built.as_millis(),
        pause.as_micros()
    );
    if running.management != new.management || running.billing != new.billing {
        note.push_str("; [management] and [billing] changes take effect at the next start");
    }
    Ok((new, note))
}
