//! `nflet bench`: generator → chain → sink in memory, measuring the chain's cost per packet.
//!
//! The benchmark builds an ordinary configuration (so it measures the same code `nflet run`
//! runs): per core a generator paced as fast as the core goes, a firewall with `rules` rules
//! (all but the last miss, so a new flow scans them all), optionally a monitor, and a sink.
//! It reports, per core, the time spent inside chains per packet (`chain ns/pkt`) and the
//! whole loop's time per packet including generating the frame (`loop ns/pkt`).

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::dataplane::{run, RunOptions, StartError, Summary};

/// Benchmark parameters.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub cores: usize,
    pub flows: u32,
    /// Packets per core.
    pub packets: u64,
    pub size: u16,
    pub rules: usize,
    /// NF kinds in order: `fw`, `mon`, `nat`, `lb`, `lb_encap`, `policer`, `policer_flow`, `counter`,
    /// `esp_enc`/`esp_enc256` (IPsec ESP encryption, AES-GCM-128/256) and, after one of
    /// them, `esp_dec`/`esp_dec256` (the peer gateway decrypting it).
    pub chain: Vec<String>,
    pub burst: usize,
}

impl Default for BenchSpec {
    fn default() -> Self {
        BenchSpec {
            cores: 1,
            flows: 10_000,
            packets: 5_000_000,
            size: 64,
            rules: 100,
            chain: vec!["fw".into(), "mon".into()],
            burst: 32,
        }
    }
}

/// Packets per core in the set-up phase: every flow the core owns, once (with a margin for
/// the uneven split of flows between cores).
fn warmup_packets(spec: &BenchSpec) -> u64 {
    let per_core = u64::from(spec.flows).div_ceil(spec.cores.max(1) as u64);
    if spec.cores > 1 {
        per_core + per_core / 20
    } else {
        per_core
    }
}

/// The configuration a benchmark runs.
pub fn bench_config(spec: &BenchSpec) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "[appliance]\ncores = {}\nburst = {}\nidle_sleep_us = 0\nstate_arena_mib = 2048\n",
        spec.cores, spec.burst
    );
    // A load balancer needs its clients to address a VIP: one address, one TCP port (the
    // generator's TCP flows all go to port 80); every other chain sees UDP over a /24.
    let lb = spec.chain.iter().any(|nf| nf == "lb" || nf == "lb_encap");
    let (proto, dst) = if lb { ("tcp", "198.18.0.1/32") } else { ("udp", "198.18.0.0/24") };
    let _ = writeln!(
        t,
        "[[port]]\nname = \"gen\"\nkind = \"generator\"\nflows = {}\nsize = {}\ncount = {}\nseed = 7\nsetup_pass = true\nproto = \"{proto}\"\nsrc = \"10.0.0.0/20\"\ndst = \"{dst}\"\n",
        spec.flows,
        spec.size,
        warmup_packets(spec) + spec.packets
    );
    let _ = writeln!(t, "[[port]]\nname = \"sink\"\nkind = \"sink\"\n");
    // Tables sized for the offered flows plus a quarter, as an operator would configure them.
    let capacity = (u64::from(spec.flows) + u64::from(spec.flows) / 4).max(1024);
    let mut steps = Vec::new();
    for (i, nf) in spec.chain.iter().enumerate() {
        let name = format!("{nf}{i}");
        match nf.as_str() {
            "fw" | "firewall" => {
                let _ = writeln!(t, "[[nf]]\nname = \"{name}\"\nkind = \"firewall\"\ndefault = \"deny\"\nconnections = {capacity}\n");
                // Rules that never match generated traffic (destinations in 100.64/10), then
                // the one that admits it: every new flow walks the whole list.
                for r in 0..spec.rules.saturating_sub(1) {
                    let _ = writeln!(
                        t,
                        "[[nf.rule]]\naction = \"deny\"\nproto = \"udp\"\ndst = \"100.{}.{}.0/24\"\ndport = \"{}-{}\"\n",
                        64 + (r / 250) % 64,
                        r % 250,
                        1000 + r,
                        1000 + r
                    );
                }
                let _ = writeln!(t, "[[nf.rule]]\naction = \"allow\"\nsrc = \"10.0.0.0/8\"\n");
            }
            "nat" => {
                // Enough public addresses for every flow to get its own port (64 k per address).
                let addrs = u64::from(spec.flows).div_ceil(60_000).clamp(1, 256);
                let public: Vec<String> =
                    (0..addrs).map(|i| format!("\"203.0.{}.{}\"", 112 + i / 250, 1 + i % 250)).collect();
                let _ = writeln!(
                    t,
                    "[[nf]]\nname = \"{name}\"\nkind = \"nat\"\ninside = \"gen\"\npublic = [{}]\nmappings = {capacity}\n",
                    public.join(", ")
                );
            }
            "mon" | "monitor" => {
                let _ = writeln!(t, "[[nf]]\nname = \"{name}\"\nkind = \"monitor\"\nflows = {capacity}\n");
            }
            "lb" | "lb_encap" => {
                // Eight equal backends behind the generator's VIP, Maglev table of the default
                // size; every flow is tracked. `lb_encap`: IP-in-IP to the backends instead of
                // rewriting the destination.
                let (mode, port) = if nf == "lb" {
                    ("", ":8080")
                } else {
                    ("mode = \"encap\"\nencap_source = \"10.1.0.254\"\n", "")
                };
                let _ = writeln!(
                    t,
                    "[[nf]]\nname = \"{name}\"\nkind = \"lb\"\nflows = {capacity}\n{mode}\n[[nf.vip]]\naddr = \"198.18.0.1:80\"\nproto = \"tcp\"\n"
                );
                for b in 1..=8 {
                    let _ = writeln!(t, "[[nf.vip.backend]]\naddr = \"10.1.0.{b}{port}\"\n");
                }
            }
            "policer" => {
                // One class for all traffic at a rate it never reaches: every packet is
                // metered and passes green.
                let _ = writeln!(
                    t,
                    "[[nf]]\nname = \"{name}\"\nkind = \"policer\"\n\n[[nf.class]]\nname = \"all\"\ncir = 100000000000\ncbs = 1000000000\nebs = 1000000000\ngreen = {{ kind = \"pass\" }}\nyellow = {{ kind = \"remark\", dscp = 10 }}\nred = {{ kind = \"drop\" }}\n\n[[nf.rule]]\nclass = \"all\"\n"
                );
            }
            "policer_flow" => {
                // As `policer`, but every flow gets its own bucket in a table sized like the
                // other NFs' (flows plus a quarter).
                let _ = writeln!(
                    t,
                    "[[nf]]\nname = \"{name}\"\nkind = \"policer\"\n\n[[nf.class]]\nname = \"all\"\nper = \"flow\"\nflows = {capacity}\ncir = 100000000000\ncbs = 1000000000\nebs = 1000000000\ngreen = {{ kind = \"pass\" }}\nyellow = {{ kind = \"remark\", dscp = 10 }}\nred = {{ kind = \"drop\" }}\n\n[[nf.rule]]\nclass = \"all\"\n"
                );
            }
            "esp_enc" | "esp_enc256" | "esp_dec" | "esp_dec256" => {
                // One SA pair between two tunnel endpoints; the generator's traffic
                // (10.0.0.0/20 → 198.18.0.0/24) is protected. `esp_dec*` is the far gateway:
                // it decrypts what `esp_enc*` sent (same key), so `esp_enc,esp_dec` costs
                // both and `esp_enc` alone the encryption.
                let key = if nf.ends_with("256") {
                    "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc0ffee03"
                } else {
                    "0x000102030405060708090a0b0c0d0e0fc0ffee01"
                };
                let (local, remote, src, dst) = if nf.starts_with("esp_enc") {
                    ("192.0.2.1", "198.51.100.2", "10.0.0.0/8", "198.18.0.0/15")
                } else {
                    ("198.51.100.2", "192.0.2.1", "198.18.0.0/15", "10.0.0.0/8")
                };
                let _ = writeln!(
                    t,
                    "[[nf]]\nname = \"{name}\"\nkind = \"ipsec\"\n\n[[nf.sa]]\nname = \"bench\"\nlocal = \"{local}\"\nremote = \"{remote}\"\noutbound = {{ spi = 0x1001, key = \"{key}\" }}\ninbound = {{ spi = 0x1001, key = \"{key}\" }}\n\n[[nf.policy]]\nsrc = \"{src}\"\ndst = \"{dst}\"\nsa = \"bench\"\n"
                );
            }
            other => {
                let _ = writeln!(t, "[[nf]]\nname = \"{name}\"\nkind = \"{other}\"\n");
            }
        }
        steps.push(format!("\"{name}\""));
    }
    let _ = writeln!(
        t,
        "[[chain]]\nname = \"bench\"\ningress = [\"gen\"]\nsteps = [{}]\noutput = \"sink\"",
        steps.join(", ")
    );
    t
}

/// Benchmark failure.
#[derive(Debug)]
pub enum BenchError {
    Config(ConfigError),
    Start(StartError),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Config(e) => write!(f, "{e}"),
            BenchError::Start(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// One core's costs in the set-up phase (every packet opens a flow) and the steady state.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorePhases {
    pub setup_packets: u64,
    pub setup_chain_ns: f64,
    pub steady_packets: u64,
    /// Nanoseconds per packet inside chains.
    pub steady_chain_ns: f64,
    /// Nanoseconds per packet for the whole loop (generator, parse, chain, sink).
    pub steady_loop_ns: f64,
}

impl CorePhases {
    fn of(c: &crate::dataplane::stats::CoreStats) -> CorePhases {
        let (wp, wc, wb) = c.at_warmup.unwrap_or((0, 0, 0));
        let sp = c.chained.saturating_sub(wp);
        let per = |ns: u64, n: u64| ns as f64 / n.max(1) as f64;
        CorePhases {
            setup_packets: wp,
            setup_chain_ns: per(wc, wp),
            steady_packets: sp,
            steady_chain_ns: per(c.chain_ns.saturating_sub(wc), sp),
            steady_loop_ns: per(c.busy_ns.saturating_sub(wb), sp),
        }
    }
}

/// Per-core results of a benchmark.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub spec: BenchSpec,
    pub summary: Summary,
    pub per_core: Vec<CorePhases>,
    /// Aggregate packets per second over the wall-clock run.
    pub mpps_total: f64,
}

/// Runs a benchmark.
pub fn bench(spec: &BenchSpec) -> Result<BenchResult, BenchError> {
    let text = bench_config(spec);
    let config = Config::parse("<bench>", &text).map_err(BenchError::Config)?;
    let opts = RunOptions { warmup: warmup_packets(spec), ..RunOptions::default() };
    let summary = run(&config, &opts, Arc::new(AtomicBool::new(false))).map_err(BenchError::Start)?;
    let per_core = summary.cores.iter().map(CorePhases::of).collect();
    let total = summary.total.chained as f64;
    let mpps_total = total / summary.elapsed.as_secs_f64().max(1e-9) / 1e6;
    Ok(BenchResult { spec: spec.clone(), summary, per_core, mpps_total })
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.spec;
        writeln!(
            f,
            "chain {} | {} rules | {} flows | {} B | {} core(s) | {} packets/core",
            s.chain.join("→"),
            s.rules,
            s.flows,
            s.size,
            s.cores,
            s.packets
        )?;
        let mpps = |ns: f64| 1e3 / ns.max(1e-9);
        for (i, p) in self.per_core.iter().enumerate() {
            writeln!(
                f,
                "  core{i}: steady {} pkts: chain {:.1} ns/pkt ({:.2} Mpps), loop {:.1} ns/pkt ({:.2} Mpps) | \
                 set-up {} new flows: chain {:.1} ns/flow ({:.2} M flows/s)",
                p.steady_packets,
                p.steady_chain_ns,
                mpps(p.steady_chain_ns),
                p.steady_loop_ns,
                mpps(p.steady_loop_ns),
                p.setup_packets,
                p.setup_chain_ns,
                mpps(p.setup_chain_ns),
            )?;
        }
        let drops = self.summary.total.drops.total();
        write!(f, "  total: {:.2} Mpps wall-clock, {drops} drops", self.mpps_total)
    }
}
