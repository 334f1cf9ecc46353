//! §9.3: flowlets by timeout only vs timeout + size under adversarial flows.

use crate::config::ConfigError;

use super::{head, runs, ExperimentResult, TraceSummary, Workload};
use crate::eval::report::{packet_check, pct, time_us, Table};
use crate::eval::setup::{Experiment, Setup, NO_SIZE_LIMIT};
use crate::eval::trace::Trace;

/// §9.3: flowlets by timeout only vs timeout + size, with every n-th flow adversarial.
pub fn flowlets(
    s: &Setup,
    workloads: &[(u32, Workload<'_>)],
    progress: &mut dyn FnMut(&str),
) -> Result<ExperimentResult, ConfigError> {
    let mut t = Table::new(&[
        "adversarial",
        "flowlets by",
        "flowlets",
        "largest flowlet",
        "p99 flowlet",
        "p50",
        "p99",
        "max",
        "worker-epochs >100 %",
    ]);
    let (mut all, mut traces) = (Vec::new(), Vec::new());
    for (every, w) in workloads {
        let mut both = s.run(format!("1/{every}: timeout + size"));
        both.director.flowlet_max_bytes = s.director.flowlet_max_bytes;
        let mut only = s.run(format!("1/{every}: timeout only"));
        only.director.flowlet_max_bytes = NO_SIZE_LIMIT;
        let results = runs(w, &[both, only], progress)?;
        for (r, mode) in results.iter().zip(["timeout + size", "timeout only"]) {
            t.row(vec![
                format!("every {every}th flow"),
                mode.into(),
                r.flowlets.count.to_string(),
                format!("{:.1} KB", r.flowlets.max / 1e3),
                format!("{:.1} KB", r.flowlets.p99 / 1e3),
                time_us(r.latency_us.p50),
                time_us(r.latency_us.p99),
                time_us(r.latency_us.max),
                pct(r.overloaded_worker_epochs as f64 / r.worker_epochs.max(1) as f64),
            ]);
        }
        traces.push(TraceSummary::of(w.trace, Some(*every)));
        all.extend(results);
    }
    let first = traces.first().cloned().unwrap_or_else(|| TraceSummary::of(&Trace::default(), None));
    let text = format!(
        "{}Adversarial flows send at least {:.0} KB at {:.0} Mbit/s without pausing. B = {} KB.\n\n{}\nSNF §9.3 \
         (NAT, adversarial every 100th / 50th / 10th flow): median 101 → 87 µs, 201.2 → 93 µs, 752 → 102 µs and tail \
         677.9 → 504.4 µs, 1.5 ms → 702.4 µs, 5.2 ms → 756.2 µs from timeout only to timeout + size.\n\n{}",
        head("Flowlets: timeout only vs timeout + size (SNF §9.3)", &first),
        s.trace.adversarial_bytes as f64 / 1e3,
        s.trace.adversarial_bps / 1e6,
        s.director.flowlet_max_bytes.0 / 1000,
        t.render(),
        packet_check(&all)
    );
    Ok(ExperimentResult {
        experiment: Experiment::Flowlets.name(),
        title: "flowlets",
        traces,
        runs: all,
        bounds: Vec::new(),
        text,
    })
}
