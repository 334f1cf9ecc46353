//! Director cost: a synthetic trace replayed through the scale-out director, with 4, 16 and
//! 64 workers, reporting ns per packet and ns per new-flowlet assignment (SNF reports about
//! 1 µs per assignment for its controller).
//!
//! `cargo bench -p nflet-scale --bench assign` (optionally `-- FLOWS`, default 200000).
//!
//! Trace (deterministic, seed 1), one per worker count: the flows start uniformly over
//! `8 s / workers` of virtual time (the same flows, arriving faster for a bigger pool); each
//! sends a heavy-tailed number of bytes (Pareto, shape 1.2, minimum 3 KB, capped at 5 MB) as
//! 1448-byte segments with a 64-byte ack every second segment, at a per-flow rate drawn
//! log-uniformly between 50 Mbit/s and 2 Gbit/s, in on/off bursts: bursts of a geometric number
//! of segments (mean 10), then a pause that is short (50–400 µs, inside the 500 µs flowlet
//! timeout) half the time and long (exponential, mean 3 ms) otherwise. The worker count is
//! fixed (`min_workers = max_workers`, so no launch or retirement) and each worker's capacity is
//! set so that the trace's mean rate while flows arrive would fill 60 % of the pool. The
//! director ticks every 500 µs of virtual time. Columns *local/replica/pull* count where later
//! flowlets found their state; *overflows* count flowlets for which no worker had room.
//!
//! Two passes per configuration: one times the whole replay (steer + ticks) with one clock read
//! at each end → *ns/pkt*; one times every `steer` call and splits the sum by whether it
//! started a flowlet → *ns/assignment* and *ns/cont.* (these include one clock-read pair, whose
//! cost alone is printed first; on a VM it is tens of ns and varies from run to run).

use std::hint::black_box;
use std::time::Instant;

use nflet_nfs::flow::{v4, FlowKey, FAMILY_V4};
use nflet_nfs::ids::Bytes;
use nflet_nfs::rng::Rng;
use nflet_nfs::time::Nanos;
use nflet_scale::config::{DirectorConfig, Policy};
use nflet_scale::director::{Decision, Director, DirectorCounters, Steer};
use nflet_scale::units::Rate;

const TICK_NS: u64 = 500_000;

struct Trace {
    keys: Vec<FlowKey>,
    /// (time ns, flow index, bytes), time-ordered.
    packets: Vec<(u64, u32, u16)>,
    bytes: u64,
    duration_ns: u64,
    /// Mean rate while flows are still arriving, the busy part of the trace.
    busy_rate: f64,
    span_ns: u64,
}

fn pareto(rng: &mut Rng, shape: f64, min: f64) -> f64 {
    let u = 1.0 - rng.unit();
    min / u.powf(1.0 / shape)
}

fn trace(flows: u32, span_ns: u64) -> Trace {
    let mut rng = Rng::new(1);
    let mut keys = Vec::with_capacity(flows as usize);
    let mut packets = Vec::new();
    let mut bytes = 0u64;
    for f in 0..flows {
        let client = v4([10, (f >> 16) as u8, (f >> 8) as u8, f as u8]);
        let server = v4([198, 18, 0, (f % 251) as u8]);
        keys.push(FlowKey::new(FAMILY_V4, 6, client, 1024 + (f % 60_000) as u16, server, 443).0);
        let mut left = pareto(&mut rng, 1.2, 3_000.0).min(5.0e6) as u64;
        let bps = 50.0e6 * (40.0f64).powf(rng.unit());
        let gap = (1448.0 * 8.0 / bps * 1e9) as u64;
        let mut t = rng.below(span_ns);
        let mut seg = 0u64;
        while left > 0 {
            // A burst: geometric, mean 10 segments.
            loop {
                let len = left.min(1448);
                packets.push((t, f, len as u16));
                bytes += len;
                left -= len;
                seg += 1;
                if seg & 1 == 0 {
                    packets.push((t + gap / 2, f, 64));
                    bytes += 64;
                }
                t += gap.max(1);
                if left == 0 || rng.below(10) == 0 {
                    break;
                }
            }
            t += if rng.below(2) == 0 {
                50_000 + rng.below(350_000)
            } else {
                (-(1.0 - rng.unit()).ln() * 3.0e6) as u64
            };
        }
    }
    packets.sort_unstable_by_key(|p| p.0);
    let duration_ns = match (packets.first(), packets.last()) {
        (Some(a), Some(b)) => (b.0 - a.0).max(1),
        _ => 1,
    };
    let t0 = packets.first().map_or(0, |p| p.0);
    let busy: u64 = packets.iter().take_while(|p| p.0 < t0 + span_ns).map(|p| u64::from(p.2)).sum();
    let busy_rate = busy as f64 * 1e9 / span_ns as f64;
    Trace { keys, packets, bytes, duration_ns, busy_rate, span_ns }
}

fn director(t: &Trace, workers: u16, policy: Policy, reserve: bool) -> Director {
    let cfg = DirectorConfig {
        policy,
        reserve_active_demand: reserve,
        initial_workers: workers,
        min_workers: workers,
        max_workers: workers,
        worker_capacity: Rate(t.busy_rate / (0.6 * f64::from(workers))),
        flow_capacity: t.keys.len() + t.keys.len() / 4,
        ..DirectorConfig::default()
    };
    match Director::new(cfg) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

/// Replays the trace; when `timed`, sums the time of flowlet-starting and other `steer` calls.
fn replay(t: &Trace, d: &mut Director, timed: bool) -> (f64, f64, u64, u64, u64) {
    let mut out: Vec<Decision> = Vec::with_capacity(1024);
    let mut next_tick = t.packets.first().map_or(0, |p| p.0 / TICK_NS * TICK_NS);
    let (mut start_ns, mut cont_ns, mut starts, mut conts) = (0u64, 0u64, 0u64, 0u64);
    let mut replications = 0u64;
    for &(time, f, len) in &t.packets {
        while next_tick <= time {
            d.tick(Nanos(next_tick), &mut out);
            replications += out.iter().filter(|x| matches!(x, Decision::Replicate(_))).count() as u64;
            out.clear();
            next_tick += TICK_NS;
        }
        let key = t.keys[f as usize];
        if timed {
            let a = Instant::now();
            let s = d.steer(Nanos(time), key, Bytes(u64::from(len)));
            let ns = a.elapsed().as_nanos() as u64;
            if matches!(s, Steer::Flow { start: Some(_), .. }) {
                start_ns += ns;
                starts += 1;
            } else {
                cont_ns += ns;
                conts += 1;
            }
        } else {
            black_box(d.steer(Nanos(time), key, Bytes(u64::from(len))));
        }
    }
    (start_ns as f64, cont_ns as f64, starts, conts, replications)
}

fn clock_pair_ns() -> f64 {
    let n = 1_000_000;
    let mut sum = 0u64;
    for _ in 0..n {
        let a = Instant::now();
        sum += black_box(a.elapsed().as_nanos() as u64);
    }
    sum as f64 / f64::from(n)
}

fn main() {
    let flows: u32 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let overhead = clock_pair_ns();
    println!("clock read pair: {overhead:.1} ns (included in the per-call times)");
    println!();
    println!(
        "| policy | workers | capacity Gbit/s | ns/pkt (whole replay) | ns/assignment | ns/cont. pkt | flowlets | local | replica | pull | overflows | replications |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut traces = Vec::new();
    let runs = [
        (Policy::Flowlet, 4, false),
        (Policy::Flowlet, 16, false),
        (Policy::Flowlet, 16, true),
        (Policy::PerFlow, 16, false),
        (Policy::PerFlowRealloc { period: Nanos::from_millis(50) }, 16, false),
        (Policy::PerFlowRealloc { period: Nanos::from_millis(100) }, 16, false),
        (Policy::Flowlet, 64, false),
    ];
    for (policy, workers, reserve) in runs {
        if !traces.iter().any(|(w, _)| *w == workers) {
            let g = Instant::now();
            // The same flows arrive over a span that shrinks as the pool grows, so that each
            // worker's capacity stays well above a single flow's rate.
            let t = trace(flows, 8_000_000_000 / u64::from(workers));
            eprintln!(
                "trace for {workers} workers: {flows} flows arriving over {} ms, {} packets, {:.1} MB over {:.2} s \
                 virtual ({:.2} Gbit/s while flows arrive), generated in {:.1} s",
                t.span_ns / 1_000_000,
                t.packets.len(),
                t.bytes as f64 / 1e6,
                t.duration_ns as f64 / 1e9,
                t.busy_rate * 8.0 / 1e9,
                g.elapsed().as_secs_f64()
            );
            traces.push((workers, t));
        }
        let Some((_, t)) = traces.iter().find(|(w, _)| *w == workers) else { continue };
        let mut d = director(t, workers, policy, reserve);
        let a = Instant::now();
        replay(t, &mut d, false);
        let whole = a.elapsed().as_nanos() as f64 / t.packets.len() as f64;
        let c: DirectorCounters = d.counters();
        let mut d = director(t, workers, policy, reserve);
        let (s_ns, c_ns, starts, conts, repl) = replay(t, &mut d, true);
        let name = match policy {
            Policy::Flowlet if reserve => "flowlet (SNF), reserving active demand".to_string(),
            Policy::Flowlet => "flowlet (SNF)".to_string(),
            Policy::PerFlow => "per flow".to_string(),
            Policy::PerFlowRealloc { period } => format!("per flow, realloc {} ms", period.0 / 1_000_000),
        };
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
            name,
            workers,
            d.config().worker_capacity.0 * 8.0 / 1e9,
            whole,
            s_ns / starts.max(1) as f64,
            c_ns / conts.max(1) as f64,
            c.flowlets,
            c.state_local,
            c.state_replica,
            c.state_pull,
            c.overflows,
            repl,
        );
    }
}
