//! §9.2: proactive state replication vs reactive pulls vs an external store.

use crate::config::{ConfigError, ReplicaChoice};

use super::{head, runs, ExperimentResult, TraceSummary, Workload};
use crate::eval::report::{latency_cells, packet_check, pct, time_us, Table};
use crate::eval::setup::{Experiment, Setup};
use crate::eval::state::StateStrategy;

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
        s.tuned("proactive, tuned"),
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
        "copies",
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
            r.state.copies.to_string(),
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
        bounds: Vec::new(),
        text,
    })
}
