//! Scale-out: the director and worker roles of an nflet deployment (SNF §3–§5).
//!
//! One configuration file with a `[scale]` section describes the whole deployment. The
//! *director* (`nflet director`) owns the `[[port]]`s: it receives every frame, asks the
//! director decision library ([`nflet_scale::director`]) which worker runs the frame's
//! flowlet, and sends the frame to that worker in VXLAN with nflet's metadata
//! ([`nflet_scale::wire::header`]). A *worker* (`nflet worker --id N`) runs the configured
//! chains on what it receives and sends each frame back with its egress port; the director
//! transmits it there. Both directions of a flow therefore pass the director, which also
//! learns the tuple an NF rewrote a flow to (the NAT's public side) so that replies find the
//! flow's worker.
//!
//! Per-flow NF state lives on the worker that runs the flow's current flowlet. When the
//! director moves a flowlet, the new worker pulls the state from the previous owner and holds
//! the flow's packets meanwhile (bounded), unless a proactive replica (pushed when the flow
//! went idle for half the flowlet timeout) is already current by the logical-clock rule
//! ([`nflet_scale::clock`]). State messages are HMAC-authenticated and replay-protected
//! ([`nflet_scale::wire::message`]).
//!
//! Instances reach each other over plain UDP/IP ([`fabric`]), so they may run on one host or
//! on many. The director starts and stops workers through a [`launcher`].

pub mod director;
pub mod fabric;
pub mod inventory;
pub mod launcher;
pub mod logger;
pub mod snapshot;
pub mod worker;
mod worker_flows;

pub use nflet_scale::wire::deployment_fingerprint as fingerprint;

/// Nanoseconds since the Unix epoch: the first sequence number of this instance's messages,
/// so that a restarted instance never reuses one.
pub fn first_sequence() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `nflet director`: runs the director of the deployment in `path` until `stop` is set (or
/// for `duration`), then prints its summary as one JSON line.
pub fn run_director(
    path: &std::path::Path,
    duration: Option<std::time::Duration>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let (config, deployment) = load(path)?;
    let scale = config.scale.clone().ok_or("the configuration has no `[scale]` section")?;
    let launcher = launcher::from_config(&scale.launcher, path.to_path_buf())?;
    let mut role = director::DirectorRole::new(config, launcher, deployment).map_err(|e| e.to_string())?;
    if let Some(d) = duration {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    log::info!("director of {} up: {} worker slot(s)", path.display(), scale.workers.len());
    role.run(&stop);
    let summary = role.summary();
    // Dropping the director waits for the instances it stopped (its launcher reaps them and
    // relays their output), so their summary lines are out before this one.
    drop(role);
    print_line(&summary);
    Ok(())
}

/// `nflet worker --id N` / `nflet logger --id N`: serves as worker `id` (or its output
/// logger) of the deployment in `path` until the director stops it or `stop` is set, then
/// prints its counters as one JSON line.
pub fn run_instance(
    path: &std::path::Path,
    role: launcher::Role,
    id: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serve(&path.display().to_string(), &text, role, id, None, stop)
}

/// Worker `id` of the deployment in `text` (from `origin`), or its output logger; `via`:
/// see [`worker::Worker::new`].
pub fn serve(
    origin: &str,
    text: &str,
    role: launcher::Role,
    id: u16,
    via: Option<std::net::Ipv4Addr>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), String> {
    let config = crate::config::Config::parse(origin, text).map_err(|e| e.to_string())?;
    let deployment = fingerprint(text);
    let summary = match role {
        launcher::Role::Worker => {
            let mut w =
                worker::Worker::new(config, id, deployment, via).map_err(|e| format!("worker {id}: {e}"))?;
            log::info!("worker {id} of {origin} up");
            w.run(&stop);
            serde_json::json!({
                "worker": id, "counters": w.counters, "drops": w.drops(), "nf": w.nf_counters(),
                "latency": w.latencies(),
            })
        }
        launcher::Role::Logger => {
            let scale = config.scale.ok_or("the configuration has no `[scale]` section")?.rerouted(via);
            let mut l = logger::Logger::new(scale, id, deployment)?;
            log::info!("output logger of worker {id} up");
            l.run(&stop);
            serde_json::json!({ "logger": id, "counters": l.counters })
        }
    };
    print_line(&summary);
    Ok(())
}

/// Prints a summary line; an instance whose output is gone (its director died, say) has no
/// one left to tell, which is no reason to fail its stop.
fn print_line(summary: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{summary}").and_then(|()| out.flush()).is_err() {
        log::warn!("standard output is closed; summary not printed");
    }
}

fn load(path: &std::path::Path) -> Result<(crate::config::Config, u64), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let config =
        crate::config::Config::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    Ok((config, fingerprint(&text)))
}
