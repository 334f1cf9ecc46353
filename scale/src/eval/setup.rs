//! The evaluation's fixed parameters: workers of 1 Gbit/s (SNF §9's `BW_max`), SNF's
//! defaults (T = 500 µs, B = 15 KB, α = 0.25, K = 3), 100 ms epochs, and the experiments'
//! names.

use nflet_nfs::ids::Bytes;
use nflet_nfs::time::Nanos;

use crate::config::DirectorConfig;
use crate::units::Rate;

use super::run::RunSpec;
use super::state::{StateCosts, StateStrategy};
use super::trace::TraceSpec;

/// One of the §9 experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// §9.1: flowlet vs per-flow vs per-flow with reallocation.
    Allocation,
    /// §9.2: proactive replication vs reactive pulls vs an external store.
    State,
    /// §9.3: timeout-only vs timeout + size flowlets under adversarial flows.
    Flowlets,
    /// §9.4: recovery after a worker failure, output logger vs replay.
    Recovery,
    /// §9.6: sensitivity to T, B, K and α.
    Sensitivity,
}

impl Experiment {
    pub const ALL: [Experiment; 5] = [
        Experiment::Allocation,
        Experiment::State,
        Experiment::Flowlets,
        Experiment::Recovery,
        Experiment::Sensitivity,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Experiment::Allocation => "allocation",
            Experiment::State => "state",
            Experiment::Flowlets => "flowlets",
            Experiment::Recovery => "recovery",
            Experiment::Sensitivity => "sensitivity",
        }
    }

    /// The experiment called `name`.
    pub fn parse(name: &str) -> Result<Experiment, UnknownExperiment> {
        Experiment::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| UnknownExperiment(name.to_string()))
    }
}

/// An experiment name that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownExperiment(pub String);

impl std::fmt::Display for UnknownExperiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Experiment::ALL.iter().map(|e| e.name()).collect();
        write!(f, "eval: unknown experiment `{}`; choose from {}", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownExperiment {}

/// What `nflet eval` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// The small trace (tests, a first look).
    pub quick: bool,
    pub seed: u64,
    /// Empty: all of them.
    pub experiments: Vec<Experiment>,
}

/// The shared setup of every run of one evaluation.
#[derive(Debug, Clone)]
pub struct Setup {
    pub quick: bool,
    pub trace: TraceSpec,
    pub director: DirectorConfig,
    pub costs: StateCosts,
    pub launch_delay: Nanos,
    pub epoch: Nanos,
}

/// "No size threshold": flowlets end on the timeout only.
pub const NO_SIZE_LIMIT: Bytes = Bytes(u64::MAX);

impl Setup {
    pub fn new(opts: &EvalOptions) -> Setup {
        let trace = if opts.quick { TraceSpec::quick(opts.seed) } else { TraceSpec::full(opts.seed) };
        Setup {
            quick: opts.quick,
            trace,
            director: DirectorConfig {
                // SNF §9: every compute unit processes up to 1 Gbit/s.
                worker_capacity: Rate(125.0e6),
                initial_workers: 1,
                min_workers: 1,
                max_workers: 64,
                // A worker left idle this long goes (SNF: "a fixed amount of time").
                retire_after: Nanos::from_millis(100),
                seed: opts.seed,
                // Count a worker's load as at least the demand of its running flowlets: with the
                // drained rate alone (100 ms window) the packer keeps filling the fullest worker
                // for up to a window after it is full, and every policy queues for milliseconds.
                // The allocation experiment shows that variant too.
                reserve_active_demand: true,
                ..DirectorConfig::default()
            },
            costs: StateCosts::default(),
            // Launches start at 90 % utilisation to hide the start-up time (SNF §4.2).
            launch_delay: Nanos::from_millis(5),
            epoch: Nanos::from_millis(100),
        }
    }

    /// A run of the settings tuned for state locality and tight provisioning (README,
    /// "Evaluation"): replicas to every active worker (K = 16, more than this trace's pool
    /// ever has), holders preferred by α = 1, a flowlet's reservation released once it is
    /// idle for T/2, size cuts kept on a worker that is not overloaded, the highest worker
    /// drained when the others could carry the load at 80 %, load measured over 10 ms.
    pub fn tuned(&self, name: impl Into<String>) -> RunSpec {
        let mut r = self.run(name);
        r.director.drain_utilisation = 0.8;
        r.director.load_window = Nanos::from_millis(10);
        r.director.replica_choice = crate::config::ReplicaChoice::Packing;
        r.director.alpha = 1.0;
        r.director.replicas = 16;
        r.director.release_idle_reservation = true;
        r.director.size_cut_stays = true;
        r
    }

    /// A run of SNF's defaults with proactive state, to be adjusted.
    pub fn run(&self, name: impl Into<String>) -> RunSpec {
        RunSpec {
            name: name.into(),
            director: self.director.clone(),
            state: StateStrategy::Proactive,
            costs: self.costs,
            launch_delay: self.launch_delay,
            epoch: self.epoch,
            failure: None,
        }
    }
}
