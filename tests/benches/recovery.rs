//! How long a recovering worker waits for a failed worker's state (SNF §9.4), in the real
//! deployment: a director, three workers and their output loggers as processes, TCP
//! connections through the NAT between two network namespaces, and worker 0 killed (SIGKILL)
//! a second in. The survivors time each pull their logger answered (`latency.recover`: request
//! sent → state read), which is the state transfer after detection.
//!
//! It runs the deployment with 1, 4 and 16 connections (flows to recover at once), each under
//! two loads, alternating: `light` (50 kB/s per connection) and `test` (1 MB/s, as
//! `scaleout_failover::killing_a_worker_breaks_no_connection` with 16). On a machine with fewer
//! cores than instances each hop may wait for a CPU; the sweep shows what the figure follows.
//!
//! Root (network namespaces) and release builds:
//! `cargo build --release -p nflet && cargo bench -p nflet-tests --bench recovery -- [runs] [connections...]`
//! (3 runs of 1, 4 and 16 connections unless given).

use std::process::Command;

use nflet_tests::scaleout::{director_summary, site, transfers, worker_kill_scale, worker_summaries};
use nflet_tests::{binary, is_root};

struct Load {
    name: &'static str,
    rate: u64,
}

const LOADS: [Load; 2] = [Load { name: "light", rate: 50_000 }, Load { name: "test", rate: 1_000_000 }];
/// Each transfer lasts about three seconds; the kill comes one second in.
const SECONDS: u64 = 3;

fn main() {
    // Positional: runs, then connection counts. `cargo bench` adds `--bench`.
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let runs = numbers.first().copied().unwrap_or(3);
    let sweep = match numbers.get(1..) {
        Some(c) if !c.is_empty() => c.to_vec(),
        _ => vec![1, 4, 16],
    };
    if !is_root() {
        eprintln!("recovery bench: needs root (network namespaces)");
        std::process::exit(1);
    }
    let nflet = binary("nflet");
    println!("nflet: {}", nflet.display());
    println!("| run | connections | load | flows recovered | packets held | pull retries | p50 µs | p99 µs | max µs | detection ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut medians: Vec<(usize, &str, f64)> = Vec::new();
    for run in 1..=runs {
        for &conns in &sweep {
            for load in &LOADS {
                match once(load, conns) {
                    Ok(r) => {
                        println!(
                            "| {run} | {conns} | {} ({} kB/s each) | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} |",
                            load.name,
                            load.rate / 1000,
                            r.recovered,
                            r.held,
                            r.retries,
                            r.p50,
                            r.p99,
                            r.max,
                            r.detection_ms
                        );
                        medians.push((conns, load.name, r.p50));
                    }
                    Err(e) => println!("| {run} | {conns} | {} | failed: {e} |", load.name),
                }
            }
        }
    }
    for &conns in &sweep {
        for load in &LOADS {
            let mut p50s: Vec<f64> = medians
                .iter()
                .filter(|(c, n, _)| *c == conns && *n == load.name)
                .map(|(_, _, v)| *v)
                .collect();
            p50s.sort_by(f64::total_cmp);
            let list: Vec<String> = p50s.iter().map(|v| format!("{v:.0}")).collect();
            println!("{conns} connection(s), {}: recovery round trip p50 {} µs", load.name, list.join(" / "));
        }
    }
}

struct Recovery {
    recovered: u64,
    /// Packets the survivors held while their pulls were out.
    held: u64,
    /// Pull requests the survivors sent again (no answer within `pull_timeout_ms`).
    retries: u64,
    /// Of the survivor that timed the most pulls (each survivor keeps its own histogram).
    p50: f64,
    p99: f64,
    max: f64,
    detection_ms: f64,
}

fn once(load: &Load, conns: usize) -> Result<Recovery, String> {
    let (t, path, director) = site("rb", 26_000, worker_kill_scale);
    let bytes = load.rate * SECONDS;
    let results = transfers(&t, 9700, conns, bytes, load.rate, || {
        let pattern = format!("worker --config {} --id 0", path.display());
        let _ = Command::new("pkill").args(["-KILL", "-f", &pattern]).status();
    });
    let (out, err) = director.stop();
    let _ = std::fs::remove_file(&path);
    let complete = |g: &str| g.split_whitespace().any(|w| w == format!("bytes={bytes}"));
    let broken = results.iter().filter(|(_, g)| !complete(g)).count();
    if broken > 0 {
        return Err(format!("{broken} of {conns} transfers incomplete"));
    }
    let summary = director_summary(&out, &err);
    let detection_ms = summary["events"]
        .as_array()
        .and_then(|e| e.iter().find(|e| e["what"] == "failed"))
        .and_then(|e| e["latency_us"].as_f64())
        .ok_or("no failure detected")?
        / 1e3;
    let logger0 = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["logger"] == 0)
        .ok_or("no summary from logger 0")?;
    let c = &logger0["counters"];
    let recovered = c["pulls_served"].as_u64().unwrap_or(0) - c["pulls_empty"].as_u64().unwrap_or(0);
    let workers = worker_summaries(&out);
    let histograms: Vec<&serde_json::Value> = workers.iter().map(|w| &w["latency"]["recover"]).collect();
    let sum = |k: &str| workers.iter().map(|w| w["counters"][k].as_u64().unwrap_or(0)).sum();
    let (held, retries) = (sum("held"), sum("pull_retries"));
    let most =
        histograms.iter().max_by_key(|h| h["count"].as_u64().unwrap_or(0)).ok_or("no worker summaries")?;
    let field = |k: &str| most[k].as_f64().unwrap_or(f64::NAN);
    Ok(Recovery {
        recovered,
        held,
        retries,
        p50: field("p50_us"),
        p99: field("p99_us"),
        max: field("max_us"),
        detection_ms,
    })
}
