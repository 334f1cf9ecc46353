//! `[scale]`: the scale-out deployment one configuration file describes — the director (which
//! owns the `[[port]]`s), the workers (which run the chains), how they reach each other, the
//! shared key of their state messages, and the director's SNF knobs.

use std::net::SocketAddr;

use nflet_nfs::ids::Bytes;
use nflet_nfs::time::Nanos;
use nflet_scale::config::DirectorConfig;
use nflet_scale::units::Rate;
use serde::Deserialize;

/// `[scale]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScale {
    /// UDP address the director receives workers' packets and messages on.
    pub director: String,
    /// UDP address of each worker, by worker id (0, 1, …); its length is the most workers.
    pub workers: Vec<String>,
    /// UDP address of each worker's output logger, by worker id (empty: no output loggers,
    /// no recovery of a failed worker's flows).
    #[serde(default)]
    pub loggers: Vec<String>,
    /// Workers and loggers say hello this often…
    #[serde(default = "d_heartbeat")]
    pub heartbeat_ms: u64,
    /// …and one silent this long is taken for failed.
    #[serde(default = "d_failure")]
    pub failure_timeout_ms: u64,
    /// Impairment of every instance's fabric sends, for tests and drills: shares (0 to 0.5)
    /// of datagrams dropped, duplicated, and held back to go after the next one.
    #[serde(default)]
    pub impair_loss: f64,
    #[serde(default)]
    pub impair_duplicate: f64,
    #[serde(default)]
    pub impair_reorder: f64,
    /// Where the director keeps its snapshot (flows' owners and clocks, reply aliases) so that
    /// a director restarted after a crash takes over the running workers' flows.
    pub state_file: Option<String>,
    /// Milliseconds between snapshots (the workers' lists of held flows cover what a
    /// snapshot misses, see `scaleout/inventory.rs`).
    #[serde(default = "d_snapshot_interval")]
    pub snapshot_interval_ms: u64,
    /// Secret of the state messages' HMAC-SHA256 (at least 16 bytes; same on every instance).
    pub key: String,
    #[serde(default = "d_initial")]
    pub initial_workers: u16,
    /// Workers started idle ahead of need, so that scaling out is an activation.
    #[serde(default)]
    pub warm_pool: u16,
    /// `process` (the director starts `nflet worker` processes), `command` (it runs
    /// `launch_command` / `stop_command`), or `static` (workers are started by someone else).
    #[serde(default = "d_launcher")]
    pub launcher: String,
    pub launch_command: Option<String>,
    pub stop_command: Option<String>,
    /// `launcher = "qemu"`: the appliance image's kernel and initramfs (relative paths are
    /// relative to this file) and each worker VM's memory.
    pub qemu_kernel: Option<String>,
    pub qemu_initrd: Option<String>,
    #[serde(default = "d_qemu_memory")]
    pub qemu_memory_mib: u32,
    /// What one worker can process, in megabits per second.
    #[serde(default = "d_capacity")]
    pub capacity_mbps: f64,
    #[serde(default = "d_timeout")]
    pub flowlet_timeout_us: u64,
    #[serde(default = "d_max_kb")]
    pub flowlet_max_kb: u64,
    #[serde(default = "d_alpha")]
    pub alpha: f64,
    #[serde(default = "d_replicas")]
    pub replicas: usize,
    /// Where replicas go: `random` (SNF: weighted inversely to IDs) or `packing` (the workers
    /// the packer would pick for the flow's next flowlet).
    #[serde(default)]
    pub replica_choice: ReplicaChoiceName,
    /// Count a worker's load as at least the demand of its running flowlets (see
    /// `nflet_scale::config::DirectorConfig`).
    #[serde(default)]
    pub reserve_active_demand: bool,
    /// With `reserve_active_demand`: release a flowlet's reservation once it is idle for T/2.
    #[serde(default)]
    pub release_idle_reservation: bool,
    /// A flowlet cut by size stays on its worker while that worker is not overloaded.
    #[serde(default)]
    pub size_cut_stays: bool,
    #[serde(default = "d_launch_util")]
    pub launch_utilisation: f64,
    /// Drain the highest worker when the others could carry the load at this utilisation
    /// (0: never; see `nflet_scale::config::DirectorConfig::drain_utilisation`).
    #[serde(default)]
    pub drain_utilisation: f64,
    #[serde(default = "d_retire")]
    pub retire_idle_ms: u64,
    /// A flow idle this long is forgotten by the director (keep it at least as long as the
    /// longest NF state timeout, or a returning flow starts with fresh state).
    #[serde(default = "d_flow_idle")]
    pub flow_idle_s: u64,
    /// Packets a worker holds per flow while it pulls the flow's state.
    #[serde(default = "d_hold")]
    pub hold_packets: usize,
    #[serde(default = "d_pull_timeout")]
    pub pull_timeout_ms: u64,
}

fn d_snapshot_interval() -> u64 {
    100
}

fn d_heartbeat() -> u64 {
    20
}
fn d_failure() -> u64 {
    100
}
fn d_qemu_memory() -> u32 {
    512
}
fn d_initial() -> u16 {
    1
}
fn d_launcher() -> String {
    "process".into()
}
fn d_capacity() -> f64 {
    1000.0
}
fn d_timeout() -> u64 {
    500
}
fn d_max_kb() -> u64 {
    15
}
/// `replica_choice` in the deployment file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaChoiceName {
    #[default]
    Random,
    Packing,
}

fn d_alpha() -> f64 {
    0.25
}
fn d_replicas() -> usize {
    3
}
fn d_launch_util() -> f64 {
    0.9
}
fn d_retire() -> u64 {
    1000
}
fn d_flow_idle() -> u64 {
    7440
}
fn d_hold() -> usize {
    256
}
fn d_pull_timeout() -> u64 {
    20
}

/// How the director gets worker instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LauncherKind {
    Process,
    Command {
        launch: String,
        stop: Option<String>,
    },
    Static,
    /// Worker VMs booted from the appliance image under QEMU.
    Qemu {
        kernel: std::path::PathBuf,
        initrd: std::path::PathBuf,
        memory_mib: u32,
    },
}

/// The validated `[scale]` section.
#[derive(Debug, Clone)]
pub struct Scale {
    pub director: SocketAddr,
    pub workers: Vec<SocketAddr>,
    /// Output logger of each worker (same length as `workers`, or empty).
    pub loggers: Vec<SocketAddr>,
    pub heartbeat: Nanos,
    pub failure_timeout: Nanos,
    pub state_file: Option<std::path::PathBuf>,
    pub snapshot_interval: Nanos,
    pub impair: crate::scaleout::fabric::Impair,
    pub key: Vec<u8>,
    pub warm_pool: u16,
    pub launcher: LauncherKind,
    pub hold_packets: usize,
    pub pull_timeout: Nanos,
    pub decisions: DirectorConfig,
}

fn addr(key: &'static str, text: &str) -> Result<SocketAddr, (&'static str, String)> {
    text.parse().map_err(|_| {
        (key, format!("expected an IP address and UDP port like \"127.0.0.1:4789\", got `{text}`"))
    })
}

/// Validates `[scale]`; errors are `(key, message)`.
pub fn scale(s: RawScale) -> Result<Scale, (&'static str, String)> {
    let director = addr("director", &s.director)?;
    let workers = s.workers.iter().map(|w| addr("workers", w)).collect::<Result<Vec<_>, _>>()?;
    if workers.is_empty() || workers.len() > 1024 {
        return Err(("workers", format!("expected 1 to 1024 worker addresses, got {}", workers.len())));
    }
    let loggers = s.loggers.iter().map(|w| addr("loggers", w)).collect::<Result<Vec<_>, _>>()?;
    if !loggers.is_empty() && loggers.len() != workers.len() {
        return Err((
            "loggers",
            format!("expected one output logger per worker ({}), got {}", workers.len(), loggers.len()),
        ));
    }
    if !(1..=10_000).contains(&s.heartbeat_ms) || s.failure_timeout_ms < 2 * s.heartbeat_ms {
        return Err((
            "failure_timeout_ms",
            format!(
                "expected heartbeat_ms in 1..=10000 and failure_timeout_ms at least twice it, got {} and {}",
                s.heartbeat_ms, s.failure_timeout_ms
            ),
        ));
    }
    if !(10..=3_600_000).contains(&s.snapshot_interval_ms) {
        return Err((
            "snapshot_interval_ms",
            format!("expected 10..=3600000 milliseconds, got {}", s.snapshot_interval_ms),
        ));
    }
    for (key, v) in [
        ("impair_loss", s.impair_loss),
        ("impair_duplicate", s.impair_duplicate),
        ("impair_reorder", s.impair_reorder),
    ] {
        if !(0.0..=0.5).contains(&v) {
            return Err((key, format!("expected a share from 0 to 0.5, got {v}")));
        }
    }
    if s.key.len() < 16 {
        return Err(("key", "expected a secret of at least 16 bytes, the same on every instance".into()));
    }
    let max = u16::try_from(workers.len()).unwrap_or(u16::MAX);
    if s.initial_workers == 0 || s.initial_workers > max {
        return Err((
            "initial_workers",
            format!("expected 1 to {max} (the number of `workers`), got {}", s.initial_workers),
        ));
    }
    let launcher = match s.launcher.as_str() {
        "process" => LauncherKind::Process,
        "static" => LauncherKind::Static,
        "command" => match s.launch_command {
            Some(launch) if !launch.trim().is_empty() => {
                LauncherKind::Command { launch, stop: s.stop_command }
            }
            _ => return Err(("launch_command", "`launcher = \"command\"` needs a `launch_command`".into())),
        },
        "qemu" => {
            let path = |key: &'static str, v: Option<String>| match v {
                Some(p) if !p.trim().is_empty() => Ok(std::path::PathBuf::from(p)),
                _ => Err((key, format!("`launcher = \"qemu\"` needs `{key}` (see images/build.sh)"))),
            };
            if !(128..=65_536).contains(&s.qemu_memory_mib) {
                return Err((
                    "qemu_memory_mib",
                    format!("expected 128 to 65536 MiB, got {}", s.qemu_memory_mib),
                ));
            }
            LauncherKind::Qemu {
                kernel: path("qemu_kernel", s.qemu_kernel)?,
                initrd: path("qemu_initrd", s.qemu_initrd)?,
                memory_mib: s.qemu_memory_mib,
            }
        }
        other => {
            return Err((
                "launcher",
                format!("expected \"process\", \"command\", \"qemu\" or \"static\", got `{other}`"),
            ))
        }
    };
    if !(1..=65_536).contains(&s.hold_packets) {
        return Err(("hold_packets", format!("expected 1 to 65536 packets, got {}", s.hold_packets)));
    }
    if !(1..=10_000).contains(&s.pull_timeout_ms) {
        return Err(("pull_timeout_ms", format!("expected 1 to 10000 ms, got {}", s.pull_timeout_ms)));
    }
    let decisions = DirectorConfig {
        flowlet_timeout: Nanos::from_micros(s.flowlet_timeout_us),
        flowlet_max_bytes: Bytes(s.flowlet_max_kb.saturating_mul(1000)),
        alpha: s.alpha,
        replicas: s.replicas,
        replica_choice: match s.replica_choice {
            ReplicaChoiceName::Random => nflet_scale::config::ReplicaChoice::WeightedRandom,
            ReplicaChoiceName::Packing => nflet_scale::config::ReplicaChoice::Packing,
        },
        reserve_active_demand: s.reserve_active_demand,
        release_idle_reservation: s.release_idle_reservation,
        size_cut_stays: s.size_cut_stays,
        worker_capacity: Rate(s.capacity_mbps * 1e6 / 8.0),
        launch_utilisation: s.launch_utilisation,
        drain_utilisation: s.drain_utilisation,
        retire_after: Nanos::from_millis(s.retire_idle_ms),
        initial_workers: s.initial_workers,
        min_workers: 1,
        max_workers: max,
        flow_idle_timeout: Nanos::from_secs(s.flow_idle_s),
        ..DirectorConfig::default()
    };
    decisions.validate().map_err(|e| {
        let text = e.to_string();
        let key = [
            "flowlet_timeout",
            "flowlet_max",
            "alpha",
            "replicas",
            // Before `launch_utilisation`, which its message also names.
            "drain_utilisation",
            "launch_utilisation",
            "capacity",
            "flow_idle",
        ]
        .into_iter()
        .find(|k| text.contains(k))
        .unwrap_or("scale");
        (key, text)
    })?;
    Ok(Scale {
        director,
        workers,
        loggers,
        heartbeat: Nanos::from_millis(s.heartbeat_ms),
        state_file: s.state_file.map(std::path::PathBuf::from),
        snapshot_interval: Nanos::from_millis(s.snapshot_interval_ms),
        impair: crate::scaleout::fabric::Impair {
            loss: s.impair_loss,
            duplicate: s.impair_duplicate,
            reorder: s.impair_reorder,
        },
        failure_timeout: Nanos::from_millis(s.failure_timeout_ms),
        key: s.key.into_bytes(),
        warm_pool: s.warm_pool,
        launcher,
        hold_packets: s.hold_packets,
        pull_timeout: Nanos::from_millis(s.pull_timeout_ms),
        decisions,
    })
}

/// Output loggers share the id space of state-message senders: logger `n` (of worker `n`) is
/// `LOGGER | n`; the director is `u16::MAX`.
pub const LOGGER: u16 = 0x8000;

impl Scale {
    /// The sender id of worker `n`'s output logger.
    pub fn logger_id(n: u16) -> nflet_scale::units::WorkerId {
        nflet_scale::units::WorkerId(LOGGER | n)
    }

    /// This deployment as seen from a VM whose host's loopback is reached through `via`
    /// (QEMU user networking: 10.0.2.2): loopback addresses are rerouted there.
    pub fn rerouted(mut self, via: Option<std::net::Ipv4Addr>) -> Scale {
        if let Some(via) = via {
            let reroute = |a: &mut SocketAddr| {
                if a.ip().is_loopback() {
                    a.set_ip(via.into());
                }
            };
            reroute(&mut self.director);
            self.workers.iter_mut().for_each(reroute);
            self.loggers.iter_mut().for_each(reroute);
        }
        self
    }

    /// Where an instance configured at `addr` binds: any local address on its port, since
    /// behind NAT or port forwarding (a VM's user networking) packets arrive at another one.
    pub fn bind_address(addr: SocketAddr) -> SocketAddr {
        let any: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        SocketAddr::new(any, addr.port())
    }

    /// The address of a worker or logger id.
    pub fn addr_of(&self, id: nflet_scale::units::WorkerId) -> Option<SocketAddr> {
        if id.0 & LOGGER != 0 && id.0 != u16::MAX {
            self.loggers.get(usize::from(id.0 & !LOGGER)).copied()
        } else {
            self.workers.get(usize::from(id.0)).copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Scale, String> {
        let text = format!(
            "director = \"127.0.0.1:4789\"\nworkers = [\"127.0.0.1:4801\"]\nkey = \"a key of sixteen bytes\"\n{extra}"
        );
        let raw: RawScale = toml::from_str(&text).map_err(|e| e.to_string())?;
        scale(raw).map_err(|(k, m)| format!("{k}: {m}"))
    }

    #[test]
    fn placement_knobs_reach_the_director() {
        let d = parse("").unwrap().decisions;
        assert_eq!(d.replica_choice, nflet_scale::config::ReplicaChoice::WeightedRandom);
        assert!(!d.reserve_active_demand && !d.release_idle_reservation && !d.size_cut_stays);
        let d = parse(
            "replica_choice = \"packing\"\nreserve_active_demand = true\nrelease_idle_reservation = true\n\
             size_cut_stays = true\nalpha = 1.0\nreplicas = 8",
        )
        .unwrap()
        .decisions;
        assert_eq!(d.replica_choice, nflet_scale::config::ReplicaChoice::Packing);
        assert!(d.reserve_active_demand && d.release_idle_reservation && d.size_cut_stays);
        assert_eq!((d.alpha, d.replicas), (1.0, 8));
        assert_eq!(d.drain_utilisation, 0.0);
        assert_eq!(parse("drain_utilisation = 0.8").unwrap().decisions.drain_utilisation, 0.8);
        let e = parse("drain_utilisation = 1.5").unwrap_err();
        assert!(e.starts_with("drain_utilisation:") && e.contains("[0, 1]"), "{e}");
        let e = parse("drain_utilisation = 0.9").unwrap_err();
        assert!(e.starts_with("drain_utilisation:") && e.contains("below `launch_utilisation` = 0.9"), "{e}");
        let e = parse("replica_choice = \"nearest\"").unwrap_err();
        assert!(e.contains("replica_choice") || e.contains("nearest"), "{e}");
    }

    #[test]
    fn the_snapshot_interval_is_checked() {
        assert_eq!(parse("").unwrap().snapshot_interval, Nanos::from_millis(100));
        assert_eq!(parse("snapshot_interval_ms = 5000").unwrap().snapshot_interval, Nanos::from_secs(5));
        for bad in ["snapshot_interval_ms = 0", "snapshot_interval_ms = 9", "snapshot_interval_ms = 3600001"]
        {
            let e = parse(bad).unwrap_err();
            assert!(e.starts_with("snapshot_interval_ms: expected 10..=3600000"), "{bad}: {e}");
        }
    }
}
