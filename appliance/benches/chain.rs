//! `cargo bench -p nflet`: the chain benchmarks recorded in BENCHMARKS.md, run side by side
//! in one process so their ratios are comparable on a noisy machine. Same code as
//! `nflet bench`; set NFLET_BENCH_PACKETS to change the per-core packet count.

use nflet::bench::{bench, BenchSpec};

fn main() {
    let packets = std::env::var("NFLET_BENCH_PACKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000_000);
    let chains: [&[&str]; 3] = [&["counter"], &["fw"], &["fw", "mon"]];
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
                    Ok(r) => println!("{r}\n"),
                    Err(e) => {
                        eprintln!("bench {spec:?}: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
    }
}
