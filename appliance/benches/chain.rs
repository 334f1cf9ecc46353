//! `cargo bench -p nflet --bench chain`: the chain benchmarks recorded in BENCHMARKS.md, run
//! side by side in one process so their ratios are comparable on a noisy machine. Same code
//! as `nflet bench`; set NFLET_BENCH_PACKETS to change the per-core packet count. Prints each
//! run, then the Markdown table that BENCHMARKS.md shows (per-core figures averaged).

use nflet::bench::{bench, BenchResult, BenchSpec};

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (n, s) = v.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

fn row(r: &BenchResult) -> String {
    let steady = mean(r.per_core.iter().map(|p| p.steady_chain_ns));
    let lp = mean(r.per_core.iter().map(|p| p.steady_loop_ns));
    let setup = mean(r.per_core.iter().map(|p| p.setup_chain_ns));
    format!(
        "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
        r.spec.chain.join("→"),
        r.spec.flows,
        r.spec.cores,
        steady,
        1e3 / steady.max(1e-9),
        lp,
        setup,
        r.mpps_total
    )
}

fn main() {
    let packets = std::env::var("NFLET_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000_000);
    let chains: [&[&str]; 7] =
        [&["counter"], &["fw"], &["fw", "mon"], &["nat"], &["fw", "mon", "nat"], &["lb"], &["policer_flow"]];
    let mut rows = Vec::new();
    for cores in [1, 2] {
        for flows in [10_000u32, 100_000, 1_000_000] {
            for chain in chains {
                let spec = BenchSpec {
                    cores,
                    flows,
                    packets,
                    chain: chain.iter().map(|s| s.to_string()).collect(),
                    ..BenchSpec::default()
                };
                match bench(&spec) {
                    Ok(r) => {
                        println!("{r}\n");
                        rows.push(row(&r));
                    }
                    Err(e) => {
                        eprintln!("bench {spec:?}: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }
    println!("| chain | flows | cores | chain ns/pkt (steady) | Mpps/core (chain) | loop ns/pkt (steady) | set-up ns/new flow | total Mpps (wall) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}
