//! The director's configuration: SNF's knobs with their defaults, validated before use.

use nflet_nfs::ids::Bytes;
use nflet_nfs::time::Nanos;

use crate::units::Rate;

/// What a worker's load and a flowlet's demand are measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Metric {
    /// Bytes per second (SNF specifies capacity as `BW_max` bps).
    #[default]
    Bytes,
    /// Packets per second (SNF footnote 3: capacity at a given packet size).
    Packets,
}

/// Where a flow's state is pushed proactively.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaChoice {
    /// SNF Pseudocode 2: K workers at random with weights inversely proportional to their IDs,
    /// load-unaware.
    #[default]
    WeightedRandom,
    /// The K workers the packer would choose for the flow's next flowlet if it started now:
    /// those with room for the flow's demand, fullest first (the packer maximises
    /// utilisation), then the least loaded. Load-aware: SNF §5.2.2 avoids this because a
    /// controller at scale lacks current loads, but this director has them at every tick.
    Packing,
}

/// How new work is assigned: SNF's flowlets, or one of the baselines it is evaluated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// SNF: every flowlet is packed anew with the state-aware score (§4.2, §5.2.2), and flows
    /// idle for half the flowlet timeout get replication targets (§5.2.1).
    #[default]
    Flowlet,
    /// Vanilla per-flow assignment: a flow is packed once, at its first packet, and stays on
    /// that worker for its lifetime (or until the worker retires).
    PerFlow,
    /// Per-flow assignment, with every flow re-packed (state-unaware, α = 0) at its first packet
    /// after each period boundary; the state moves with the flow when the worker changes.
    PerFlowRealloc { period: Nanos },
}

/// The director's configuration. [`DirectorConfig::default`] gives SNF's values where the
/// paper states them.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectorConfig {
    pub policy: Policy,
    /// T: a packet after more than this gap starts a new flowlet (SNF: 500 µs).
    pub flowlet_timeout: Nanos,
    /// B: a packet that would take the current flowlet past this size starts a new flowlet
    /// (SNF: 15 KB), which bounds the damage an adversarial flowlet does.
    pub flowlet_max_bytes: Bytes,
    /// δ of the demand EWMA: weight of the previous flowlet's measured rate against the
    /// previous estimate. SNF gives no value; 0.5 lets a rate spike show up at half strength
    /// in the very next flowlet's estimate while one odd flowlet cannot take over.
    pub ewma_weight: f64,
    /// Demand assumed for a first flowlet before any flowlet has been measured.
    pub initial_demand: Rate,
    pub metric: Metric,
    /// Load measurement: drained amounts in buckets of this length…
    pub load_bucket: Nanos,
    /// …summed over this sliding window.
    pub load_window: Nanos,
    /// Count a worker's load as the larger of its drained rate and the summed demand estimates
    /// of its active flowlets, instead of the drained rate alone (SNF §4.2, the default). The
    /// drained rate over a 100 ms window grows slowly after new flowlets are assigned, so the
    /// fullest worker keeps winning the packing for a while; the reservation reacts at once but
    /// overestimates bursty flows (an estimate covers a flowlet until T after its last packet).
    pub reserve_active_demand: bool,
    /// With `reserve_active_demand`: stop reserving a flowlet's demand once it has been idle
    /// for T/2 (when its state is pushed), instead of until it ends T after its last packet.
    /// A burst of a bursty flow then holds its reservation for its own length plus T/2.
    pub release_idle_reservation: bool,
    /// A flowlet cut by size (B) stays on its worker while that worker has room for it,
    /// instead of being packed anew: the cut has no idle gap to replicate in, so a move
    /// always waits for a pull. (Cuts still let a flow move when its worker fills up.)
    pub size_cut_stays: bool,
    /// What one worker can process, in the metric per second (SNF's `BW_max`).
    pub worker_capacity: Rate,
    /// α of the assignment score `utilisation + α·β` (§5.2.2), in [0, 1]; default 0.25.
    pub alpha: f64,
    /// Launch a worker when every active worker is above this utilisation (SNF: 90 %).
    pub launch_utilisation: f64,
    /// Consolidation: when the active workers' summed load would fit on all but the
    /// highest-ID one at no more than this utilisation each, that one *drains* — no new
    /// flowlet is packed onto it — and retires as soon as its running flowlets have ended,
    /// without waiting out `retire_after`. A flowlet that finds no room elsewhere takes the
    /// draining worker back. Flowlets are short, so a drain takes milliseconds; SNF retires
    /// only workers that received nothing for a fixed time, which leaves the pool sized for
    /// the sub-millisecond peaks of the demand. 0 disables it (the default); otherwise it
    /// must be below `launch_utilisation`, or draining would trigger a launch at once.
    pub drain_utilisation: f64,
    /// Retire a worker after it has been idle (no active flowlet, load below
    /// `idle_utilisation`) for this long.
    pub retire_after: Nanos,
    /// A worker under this utilisation with no active flowlet counts as idle.
    pub idle_utilisation: f64,
    pub initial_workers: u16,
    pub min_workers: u16,
    pub max_workers: u16,
    /// K: workers chosen to receive a flow's state proactively (SNF default 3); 0 disables
    /// proactive replication. At most [`crate::replicate::MAX_REPLICAS`].
    pub replicas: usize,
    /// How the K targets are chosen.
    pub replica_choice: ReplicaChoice,
    /// Seed of the replication choice; same seed, same choices.
    pub seed: u64,
    /// Flows the director tracks at most; a new flow beyond it is refused (counted) and steered
    /// by its hash, untracked.
    pub flow_capacity: usize,
    /// A flow idle this long is forgotten (swept at most every half of this).
    pub flow_idle_timeout: Nanos,
}

impl Default for DirectorConfig {
    fn default() -> Self {
        DirectorConfig {
            policy: Policy::Flowlet,
            flowlet_timeout: Nanos::from_micros(500),
            flowlet_max_bytes: Bytes(15_000),
            ewma_weight: 0.5,
            initial_demand: Rate(1.0e6),
            metric: Metric::Bytes,
            load_bucket: Nanos::from_micros(500),
            load_window: Nanos::from_millis(100),
            reserve_active_demand: false,
            release_idle_reservation: false,
            size_cut_stays: false,
            // 10 Gbit/s.
            worker_capacity: Rate(1.25e9),
            alpha: 0.25,
            launch_utilisation: 0.9,
            drain_utilisation: 0.0,
            retire_after: Nanos::from_secs(1),
            idle_utilisation: 0.01,
            initial_workers: 1,
            min_workers: 1,
            max_workers: 64,
            replicas: 3,
            replica_choice: ReplicaChoice::WeightedRandom,
            seed: 1,
            flow_capacity: 1 << 20,
            flow_idle_timeout: Nanos::from_secs(10),
        }
    }
}

/// A configuration value that cannot work, with the key and what to change.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    Zero {
        key: &'static str,
    },
    OutOfRange {
        key: &'static str,
        value: f64,
        range: &'static str,
    },
    WindowNotMultiple {
        window: Nanos,
        bucket: Nanos,
    },
    Workers {
        initial: u16,
        min: u16,
        max: u16,
    },
    TooManyReplicas {
        value: usize,
        max: usize,
    },
    /// Draining at or above the launch utilisation would drain a worker only to launch one.
    DrainNotBelowLaunch {
        drain: f64,
        launch: f64,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Zero { key } => write!(f, "scale: `{key}` must be greater than zero"),
            ConfigError::OutOfRange { key, value, range } => {
                write!(f, "scale: `{key}` = {value} is outside {range}")
            }
            ConfigError::WindowNotMultiple { window, bucket } => write!(
                f,
                "scale: `load_window` ({} ns) must be a whole number of `load_bucket`s ({} ns)",
                window.0, bucket.0
            ),
            ConfigError::Workers { initial, min, max } => write!(
                f,
                "scale: workers must satisfy 1 <= min_workers ({min}) <= initial_workers \
                 ({initial}) <= max_workers ({max})"
            ),
            ConfigError::TooManyReplicas { value, max } => {
                write!(f, "scale: `replicas` = {value}; at most {max} are supported")
            }
            ConfigError::DrainNotBelowLaunch { drain, launch } => write!(
                f,
                "scale: `drain_utilisation` = {drain} must be below `launch_utilisation` = {launch} \
                 (or 0 for no draining): the drained workers' load would launch one at once"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

fn in_range(key: &'static str, value: f64, lo: f64, hi: f64, range: &'static str) -> Result<(), ConfigError> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { key, value, range })
    }
}

impl DirectorConfig {
    /// Checks every value the director relies on; the director refuses a config that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            ("flowlet_timeout", self.flowlet_timeout.0),
            ("flowlet_max_bytes", self.flowlet_max_bytes.0),
            ("load_bucket", self.load_bucket.0),
            ("load_window", self.load_window.0),
            ("flow_capacity", self.flow_capacity as u64),
            ("flow_idle_timeout", self.flow_idle_timeout.0),
        ];
        for (key, v) in nonzero {
            if v == 0 {
                return Err(ConfigError::Zero { key });
            }
        }
        if let Policy::PerFlowRealloc { period } = self.policy {
            if period.0 == 0 {
                return Err(ConfigError::Zero { key: "policy.period" });
            }
        }
        let (w, b) = (self.load_window.0, self.load_bucket.0);
        if w / b * b != w {
            return Err(ConfigError::WindowNotMultiple {
                window: self.load_window,
                bucket: self.load_bucket,
            });
        }
        in_range("ewma_weight", self.ewma_weight, 0.0, 1.0, "[0, 1]")?;
        in_range("alpha", self.alpha, 0.0, 1.0, "[0, 1]")?;
        in_range("launch_utilisation", self.launch_utilisation, 0.0, 1.0, "[0, 1]")?;
        in_range("drain_utilisation", self.drain_utilisation, 0.0, 1.0, "[0, 1]")?;
        if self.drain_utilisation > 0.0 && self.drain_utilisation >= self.launch_utilisation {
            return Err(ConfigError::DrainNotBelowLaunch {
                drain: self.drain_utilisation,
                launch: self.launch_utilisation,
            });
        }
        in_range("idle_utilisation", self.idle_utilisation, 0.0, 1.0, "[0, 1]")?;
        in_range("worker_capacity", self.worker_capacity.0, f64::MIN_POSITIVE, f64::MAX, "(0, inf)")?;
        in_range("initial_demand", self.initial_demand.0, 0.0, f64::MAX, "[0, inf)")?;
        let (initial, min, max) = (self.initial_workers, self.min_workers, self.max_workers);
        if !(1 <= min && min <= initial && initial <= max) {
            return Err(ConfigError::Workers { initial, min, max });
        }
        if self.replicas > crate::replicate::MAX_REPLICAS {
            return Err(ConfigError::TooManyReplicas {
                value: self.replicas,
                max: crate::replicate::MAX_REPLICAS,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        assert_eq!(DirectorConfig::default().validate(), Ok(()));
        type Edit = fn(&mut DirectorConfig);
        let cases: Vec<(Edit, &str)> = vec![
            (|c| c.flowlet_timeout = Nanos::ZERO, "flowlet_timeout"),
            (|c| c.alpha = 1.5, "alpha"),
            (|c| c.ewma_weight = -0.1, "ewma_weight"),
            (|c| c.load_window = Nanos(1_000_001_000), "load_window"),
            (|c| c.min_workers = 0, "min_workers"),
            (|c| c.initial_workers = 65, "initial_workers"),
            (|c| c.replicas = 99, "replicas"),
            (|c| c.policy = Policy::PerFlowRealloc { period: Nanos::ZERO }, "policy.period"),
            (|c| c.worker_capacity = Rate(0.0), "worker_capacity"),
            (|c| c.drain_utilisation = 1.2, "drain_utilisation"),
            (|c| c.drain_utilisation = 0.9, "below `launch_utilisation`"),
        ];
        for (edit, key) in cases {
            let mut c = DirectorConfig::default();
            edit(&mut c);
            let err = c.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
