//! The `--quick` evaluation end to end: structural facts of the results that hold for any
//! seed and would fail if the harness or the director broke.

use super::*;

fn quick(experiments: Vec<Experiment>) -> Evaluation {
    let opts = EvalOptions { quick: true, seed: 1, experiments };
    evaluate(&opts, &mut |_| {}).unwrap()
}

#[test]
fn quick_evaluation_structural_facts() {
    let e =
        quick(vec![Experiment::Allocation, Experiment::State, Experiment::Flowlets, Experiment::Recovery]);
    let by_name = |exp: &str, run: &str| -> RunResult {
        let x = e.experiments.iter().find(|x| x.experiment == exp).unwrap();
        x.runs.iter().find(|r| r.name == run).unwrap().clone()
    };
    // Every run accounts for every packet of its trace.
    for x in &e.experiments {
        for r in &x.runs {
            let lost = r.recovery.map_or(0, |f| f.lost);
            assert_eq!(r.served + r.no_worker, r.packets, "{}: {}", x.experiment, r.name);
            assert!(lost <= r.served, "{}", r.name);
            assert_eq!(r.latency_us.count as u64, r.served, "{}", r.name);
        }
    }
    // Allocation: per flow places each flow once; flowlets place far more often.
    let flowlet = by_name("allocation", "flowlet (SNF)");
    let per_flow = by_name("allocation", "per flow");
    let realloc = by_name("allocation", "per flow, realloc 50 ms");
    assert!(flowlet.assignment_opportunities > 2 * per_flow.assignment_opportunities);
    assert!(realloc.assignment_opportunities >= per_flow.assignment_opportunities);
    assert!(flowlet.max_workers > 1, "the ramp needs more than one worker");
    // State: proactive replication finds state in place more often than pulls ever can.
    let pro = by_name("state", "proactive (SNF)");
    let rea = by_name("state", "reactive pull");
    let ext = by_name("state", "external store");
    assert!(pro.moved_flowlets > 0 && rea.moved_flowlets > 0);
    assert!(pro.in_place_share.unwrap() > 0.5, "{:?}", pro.in_place_share);
    assert_eq!((rea.state_in_place, ext.state_in_place), (0, 0));
    assert!(pro.state.pulls < rea.state.pulls, "{:?} {:?}", pro.state, rea.state);
    // Flowlets: the size threshold bounds flowlets; timeout-only lets adversarial ones grow.
    for every in [100, 50, 10] {
        let both = by_name("flowlets", &format!("1/{every}: timeout + size"));
        let only = by_name("flowlets", &format!("1/{every}: timeout only"));
        assert!(both.flowlets.max <= 15_000.0, "{}", both.flowlets.max);
        assert!(only.flowlets.max > 4.0 * 15_000.0, "{}", only.flowlets.max);
    }
    // Recovery: the output logger loses the failed queue but recovers faster than a replay.
    let ol = by_name("recovery", "output logger (SNF)").recovery.unwrap();
    let rp = by_name("recovery", "checkpoint 50 ms + replay").recovery.unwrap();
    assert!(ol.recovery_us < rp.recovery_us, "{ol:?} {rp:?}");
    assert_eq!((ol.replayed, rp.lost), (0, 0));
    assert!(ol.orphaned_flows > 0);
    // Outputs: the JSON, one table per experiment, the figures.
    let files = e.files().unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for want in ["results.json", "allocation.txt", "provisioned.svg", "latency-state.svg", "recovery.txt"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[test]
fn sensitivity_moves_the_way_the_knobs_say() {
    let e = quick(vec![Experiment::Sensitivity]);
    let runs = &e.experiments.first().unwrap().runs;
    let get = |n: &str| runs.iter().find(|r| r.name == n).unwrap();
    // A shorter timeout cuts more flowlets; a smaller B too.
    assert!(get("T = 100 µs").assignment_opportunities >= get("T = 1000 µs").assignment_opportunities);
    assert!(get("B = 5 KB").assignment_opportunities > get("B = ∞").assignment_opportunities);
    // α = 1 prefers the replicas at least as often as α = 0; more replicas, more hits.
    assert!(get("α = 1").state_in_place >= get("α = 0").state_in_place);
    assert!(get("K = 8").state_in_place > get("K = 1").state_in_place);
    // Higher launch and drain thresholds keep fewer workers for the same trace.
    let (low, high) = (get("tuned, launch/drain at 90/80 %"), get("tuned, launch/drain at 97/90 %"));
    assert!(high.mean_workers < low.mean_workers, "{} vs {}", high.mean_workers, low.mean_workers);
}

#[test]
fn unknown_experiment_names_the_choices() {
    assert_eq!(Experiment::parse("state"), Ok(Experiment::State));
    let e = Experiment::parse("nope").unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("allocation, state"), "{e}");
}
