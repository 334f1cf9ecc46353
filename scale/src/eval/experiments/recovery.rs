//! §9.4: recovery after a worker failure, output logger vs checkpoint + replay.

use nflet_nfs::time::Nanos;

use crate::config::ConfigError;
use crate::units::WorkerId;

use super::{head, runs, ExperimentResult, TraceSummary, Workload};
use crate::eval::report::{packet_check, time_us, Table};
use crate::eval::run::{FailureSpec, Recovery, RunSpec};
use crate::eval::setup::{Experiment, Setup};

/// §9.4: worker 0 fails at the peak; output-logger recovery vs checkpoint + replay.
pub fn recovery(
    s: &Setup,
    w: &Workload<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ExperimentResult, ConfigError> {
    // At the peak, half-way between two 50 ms checkpoints (the replay's expected case).
    let at = Nanos(s.trace.arrival_span.0 / 2 / 50_000_000 * 50_000_000 + 25_000_000);
    let with = |name: &str, recovery| {
        let mut r: RunSpec = s.run(name);
        r.failure = Some(FailureSpec { at, worker: WorkerId(0), recovery });
        r
    };
    let specs = [
        with("output logger (SNF)", Recovery::OutputLogger),
        with("checkpoint 50 ms + replay", Recovery::Replay { checkpoint: Nanos::from_millis(50) }),
    ];
    let results = runs(w, &specs, progress)?;
    let summary = TraceSummary::of(w.trace, None);
    let mut t = Table::new(&[
        "recovery",
        "failed at",
        "orphaned flows",
        "running flowlets",
        "recovery time",
        "lost",
        "replayed",
        "held",
        "orphans p50",
        "orphans p99",
        "all p99",
    ]);
    for r in &results {
        let Some(x) = r.recovery else { continue };
        t.row(vec![
            r.name.clone(),
            format!("{:.0} ms", x.at_ms),
            x.orphaned_flows.to_string(),
            x.active_flows.to_string(),
            time_us(x.recovery_us),
            x.lost.to_string(),
            x.replayed.to_string(),
            x.held.to_string(),
            time_us(x.orphan_latency_us.p50),
            time_us(x.orphan_latency_us.p99),
            time_us(r.latency_us.p99),
        ]);
    }
    let text = format!(
        "{}Worker 0 (the fullest: packing fills low IDs first) fails at the peak of the load, half-way between two \
         checkpoints; the others take its flows.\n\n{}\nSNF §9.4 (NAT, 50 % load): SNF 140 µs, CHC 3.2 ms, FTMB 25.7 ms (checkpoint every 50 ms).\n\n{}",
        head("Recovery after a worker failure (SNF §6, §9.4)", &summary),
        t.render(),
        packet_check(&results)
    );
    Ok(ExperimentResult {
        experiment: Experiment::Recovery.name(),
        title: "recovery",
        traces: vec![summary],
        runs: results,
        bounds: Vec::new(),
        text,
    })
}
