//! The five experiments of SNF §9 on one host: which runs each makes and the table it prints,
//! with the paper's numbers alongside where the paper gives them.

use hashbrown::HashMap;
use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::Bytes;
use nflet_nfs::time::Nanos;
use serde::Serialize;

use crate::config::{ConfigError, Policy, ReplicaChoice};
use crate::units::WorkerId;

use super::report::{latency_cells, packet_check, pct, time_us, Table};
use super::run::{run, FailureSpec, Recovery, RunResult, RunSpec};
use super::setup::{Experiment, Setup, NO_SIZE_LIMIT};
use super::state::StateStrategy;
use super::trace::{FlowIdx, Trace};

/// What the trace of an experiment looked like.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    pub flows: usize,
    pub packets: usize,
    pub bytes: u64,
    pub last_packet_ms: f64,
    pub adversarial_every: Option<u32>,
}

impl TraceSummary {
    pub fn of(t: &Trace, adversarial_every: Option<u32>) -> TraceSummary {
        TraceSummary {
            flows: t.keys.len(),
            packets: t.packets.len(),
            bytes: t.bytes(),
            last_packet_ms: t.end().0 as f64 / 1e6,
            adversarial_every,
        }
    }
}

/// One experiment's runs and its table.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentResult {
    pub experiment: &'static str,
    pub title: &'static str,
    pub traces: Vec<TraceSummary>,
    pub runs: Vec<RunResult>,
    /// The rendered tables and notes.
    pub text: String,
}

/// A trace with its key index, generated once and shared by the runs that use it.
#[derive(Debug)]
pub struct Workload<'a> {
    pub trace: &'a Trace,
    pub index: &'a HashMap<FlowKey, FlowIdx>,
}

fn runs(
    w: &Workload<'_>,
    specs: &[RunSpec],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<RunResult>, ConfigError> {
    specs
        .iter()
        .map(|s| {
            progress(&s.name);
            run(w.trace, w.index, s)
        })
        .collect()
}

fn head(title: &str, t: &TraceSummary) -> String {
    format!(
        "## {title}\n\nTrace: {} flows, {} packets, {:.1} MB, last packet at {:.0} ms{}.\n\n",
        t.flows,
        t.packets,
        t.bytes as f64 / 1e6,
        t.last_packet_ms,
        t.adversarial_every.map_or(String::new(), |n| format!(", every {n}th flow adversarial"))
    )
}

/// §9.1: flowlet (SNF) vs per-flow vs per-flow with reallocation every 50 and 100 ms.
pub fn allocation(
    s: &Setup,
    w: &Workload<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ExperimentResult, ConfigError> {
    let with = |name: &str, policy| {
        let mut r = s.run(name);
        r.director.policy = policy;
        r
    };
    let drained = |name: &str, policy| {
        let mut r = with(name, policy);
        r.director.reserve_active_demand = false;
        r
    };
    let specs = [
        with("flowlet (SNF)", Policy::Flowlet),
        with("per flow", Policy::PerFlow),
        with("per flow, realloc 50 ms", Policy::PerFlowRealloc { period: Nanos::from_millis(50) }),
        with("per flow, realloc 100 ms", Policy::PerFlowRealloc { period: Nanos::from_millis(100) }),
        drained("flowlet, drained rate only", Policy::Flowlet),
        drained("per flow, drained rate only", Policy::PerFlow),
    ];
    let results = runs(w, &specs, progress)?;
    let summary = TraceSummary::of(w.trace, None);
    let per_flow =
        results.iter().find(|r| r.name == "per flow").map_or(1, |r| r.assignment_opportunities.max(1));
    let mut prov = Table::new(&[
        "policy",
        "assignments",
        "× per flow",
        "provisioned/demand overall",
        "per epoch mean",
        "max",
        "overloaded epochs",
        "mean workers",
        "util p25/p50/p75",
        "worker-epochs >100 %",
        "<50 %",
    ]);
    let mut lat = Table::new(&["policy", "p1", "p25", "p50", "p75", "p99"]);
    for r in &results {
        prov.row(vec![
            r.name.clone(),
            r.assignment_opportunities.to_string(),
            format!("{:.2}", r.assignment_opportunities as f64 / per_flow as f64),
            format!("{:.2}", r.provision_ratio_total),
            format!("{:.2}", r.provision_ratio_mean),
            format!("{:.2}", r.provision_ratio_max),
            format!("{} / {}", r.overloaded_epochs, r.epochs.len()),
            format!("{:.1}", r.mean_workers),
            format!("{:.2}/{:.2}/{:.2}", r.utilisation.p25, r.utilisation.p50, r.utilisation.p75),
            pct(r.overloaded_worker_epochs as f64 / r.worker_epochs.max(1) as f64),
            pct(r.underused_worker_epochs as f64 / r.worker_epochs.max(1) as f64),
        ]);
        let mut cells = vec![r.name.clone()];
        cells.extend(latency_cells(&r.latency_us));
        lat.row(cells);
    }
    let text = format!(
        "{}### Provisioning (100 ms epochs, workers of 1 Gbit/s; peak epoch demand {:.2} Gbit/s)\n\n{}\nA worker's load is its drained rate over 100 ms or, when larger, the \
         demand of its running flowlets (`reserve_active_demand`); the *drained rate only* rows use the drained rate \
         alone, SNF §8's measure. SNF §9.1: flowlets give 3.36× the assignment opportunities of the per-flow modes; \
         per-flow modes over-provision and overload more.\n\n\
         ### Packet latency\n\n{}\nSNF §9.1 (NAT): flowlet p50 5 µs, p99 2.8 ms; p75 per flow 275.4 ms, realloc 100 ms \
         64.5 ms, realloc 50 ms 41.1 ms.\n\n{}",
        head("Allocation: flowlets vs flows (SNF §9.1)", &summary),
        results.first().map_or(0.0, |r| r.peak_demand_gbps),
        prov.render(),
        lat.render(),
        packet_check(&results)
    );
    Ok(ExperimentResult {
        experiment: Experiment::Allocation.name(),
        title: "allocation",
        traces: vec![summary],
        runs: results,
        text,
    })
}

/// §9.2: proactive replication vs reactive pulls vs an external store.
pub fn state(
    s: &Setup,
    w: &Workload<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ExperimentResult, ConfigError> {
    let with = |strategy: StateStrategy| {
        let mut r = s.run(strategy.name());
        r.state = strategy;
        if strategy != StateStrategy::Proactive {
            r.director.replicas = 0;
        }
        r
    };
    let mut packing = with(StateStrategy::Proactive);
    packing.name = "proactive, packing-order targets".into();
    packing.director.replica_choice = ReplicaChoice::Packing;
    let specs = [
        with(StateStrategy::Proactive),
        packing,
        with(StateStrategy::Reactive),
        with(StateStrategy::External),
    ];
    let results = runs(w, &specs, progress)?;
    let summary = TraceSummary::of(w.trace, None);
    let mut t = Table::new(&[
        "strategy",
        "moved flowlets",
        "state in place",
        "excluding size cuts",
        "waited for push",
        "pulls/reads",
        "of them after size cut",
        "pushes",
        "held packets",
        "hold p50",
        "hold p99",
        "p1",
        "p25",
        "p50",
        "p75",
        "p99",
    ]);
    for r in &results {
        let mut cells = vec![
            r.name.clone(),
            r.moved_flowlets.to_string(),
            r.in_place_share.map_or("-".into(), pct),
            pct(r.state_in_place as f64
                / r.moved_flowlets.saturating_sub(r.state.after_size_split).max(1) as f64),
            r.state.waited_for_push.to_string(),
            (r.state.pulls + r.state.store_reads).to_string(),
            r.state.after_size_split.to_string(),
            r.state.pushes.to_string(),
            r.held_packets.to_string(),
            time_us(r.state_wait_us.p50),
            time_us(r.state_wait_us.p99),
        ];
        cells.extend(latency_cells(&r.latency_us));
        t.row(cells);
    }
    let c = s.costs;
    let text = format!(
        "{}State: {} B per flow, peer RTT {}, store RTT {}, link {:.0} Gbit/s.\n\n{}\nSNF §9.2 (NAT): p50 0.44 / 0.61 / \
         0.67 µs and p99 11.01 / 132.74 / 168.18 µs for proactive / reactive / external; 90.43 % of moved flowlets \
         found their state in place.\n\n{}",
        head("State: proactive vs reactive vs external (SNF §9.2)", &summary),
        c.state_bytes,
        time_us(c.peer_rtt.0 as f64 / 1e3),
        time_us(c.store_rtt.0 as f64 / 1e3),
        c.link.0 * 8.0 / 1e9,
        t.render(),
        packet_check(&results)
    );
    Ok(ExperimentResult {
        experiment: Experiment::State.name(),
        title: "state",
        traces: vec![summary],
        runs: results,
        text,
    })
}

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
        text,
    })
}

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
        text,
    })
}

/// §9.6: T, B, K and α one at a time around SNF's defaults.
pub fn sensitivity(
    s: &Setup,
    w: &Workload<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ExperimentResult, ConfigError> {
    let mut specs: Vec<(String, String, RunSpec)> = Vec::new();
    let mut add = |param: &str, value: String, edit: &dyn Fn(&mut RunSpec)| {
        let mut r = s.run(format!("{param} = {value}"));
        edit(&mut r);
        specs.push((param.to_string(), value, r));
    };
    for us in [100u64, 500, 1000] {
        add("T", format!("{us} µs"), &|r| r.director.flowlet_timeout = Nanos::from_micros(us));
    }
    for kb in [5u64, 15, 50] {
        add("B", format!("{kb} KB"), &|r| r.director.flowlet_max_bytes = Bytes(kb * 1000));
    }
    add("B", "∞".into(), &|r| r.director.flowlet_max_bytes = NO_SIZE_LIMIT);
    for k in [1usize, 3, 5, 8] {
        add("K", k.to_string(), &|r| r.director.replicas = k);
    }
    for a in [0.0, 0.25, 0.5, 0.75, 1.0] {
        add("α", format!("{a}"), &|r| r.director.alpha = a);
    }
    for k in [1usize, 3] {
        add("K, packing-order targets", k.to_string(), &|r| {
            r.director.replicas = k;
            r.director.replica_choice = ReplicaChoice::Packing;
        });
    }
    let only: Vec<RunSpec> = specs.iter().map(|(_, _, r)| r.clone()).collect();
    let results = runs(w, &only, progress)?;
    let flows = w.trace.keys.len().max(1) as f64;
    let mut t = Table::new(&[
        "parameter",
        "value",
        "assignments × per flow",
        "mean workers",
        "state in place",
        "p50",
        "p99",
    ]);
    for ((param, value, _), r) in specs.iter().zip(&results) {
        t.row(vec![
            param.clone(),
            value.clone(),
            format!("{:.2}", r.assignment_opportunities as f64 / flows),
            format!("{:.2}", r.mean_workers),
            r.in_place_share.map_or("-".into(), pct),
            time_us(r.latency_us.p50),
            time_us(r.latency_us.p99),
        ]);
    }
    let summary = TraceSummary::of(w.trace, None);
    let text = format!(
        "{}One parameter at a time; the others at SNF's defaults (T = 500 µs, B = 15 KB, K = 3, α = 0.25). \
         *Assignments × per flow*: flowlet assignments over the trace's flows (a per-flow policy assigns each flow \
         once).\n\n{}\nSNF §9.6: 5.18× (T = 100 µs) and 4.66× (T = 500 µs) the per-flow assignment opportunities; a \
         larger B lowers latency (fewer pulls) but uses more workers; for K = 3 the p99 falls from 107 µs to 6.8 µs as \
         α goes from 0 to 0.75, and rises from 6.8 µs to 15.2 µs as K goes from 3 to 9.\n\n{}",
        head("Sensitivity to T, B, K, α (SNF §9.6)", &summary),
        t.render(),
        packet_check(&results)
    );
    Ok(ExperimentResult {
        experiment: Experiment::Sensitivity.name(),
        title: "sensitivity",
        traces: vec![summary],
        runs: results,
        text,
    })
}
