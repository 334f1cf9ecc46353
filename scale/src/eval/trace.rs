//! The evaluation's workload: a seeded synthetic packet trace shaped like the WAN traces SNF
//! replays (§9: many short flows, a few elephants, bursty TCP senders), with the offered load
//! ramping up and down over the run.
//!
//! * Flows arrive as a Poisson process whose rate follows a ramp: from `low` of the peak up to
//!   the peak over the first 35 % of the arrival span, flat for 30 %, down again for the last
//!   35 % (thinning of a peak-rate Poisson process).
//! * Flow sizes are Pareto (heavy tailed), capped; each flow sends MSS-sized segments with a
//!   64-byte ack every second segment, at a per-flow rate drawn log-uniformly, reached by
//!   doubling from the bottom of the range burst after burst (TCP slow start).
//! * TCP-like on/off: a flow sends bursts of a geometric number of segments separated by
//!   gaps of at least `gap_min` (≫ the 500 µs flowlet timeout) plus an exponential part, so
//!   every burst is a flowlet.
//! * Adversarial flows (SNF §9.3): every `n`-th flow, if asked, sends at least
//!   `adversarial_bytes` at `adversarial_bps` without ever pausing.
//! * `time_scale` divides every timestamp (SNF scales its traces by shrinking the packet
//!   inter-arrival times).
//!
//! Same spec and seed, same trace, packet for packet. [`from_packets`] makes a trace of a
//! capture instead.

use nflet_nfs::flow::{v4, FlowKey, FAMILY_V4};
use nflet_nfs::ids::Bytes;
use nflet_nfs::rng::Rng;
use nflet_nfs::time::Nanos;

/// Index of a flow in [`Trace::keys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowIdx(pub u32);

/// One packet of the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TracePacket {
    pub at: Nanos,
    pub flow: FlowIdx,
    pub len: Bytes,
}

/// What the generator makes.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpec {
    pub seed: u64,
    /// Flows arrive during this span (their packets may run past it).
    pub arrival_span: Nanos,
    /// Poisson flow arrival rate at the peak of the ramp, flows per second.
    pub peak_flows_per_sec: f64,
    /// Arrival rate at the ends of the ramp, as a fraction of the peak.
    pub low: f64,
    /// Pareto shape and minimum of the flow size, and the cap, in bytes.
    pub pareto_shape: f64,
    pub min_flow_bytes: f64,
    pub max_flow_bytes: f64,
    /// Per-flow sending rate while in a burst, log-uniform in this range, bit/s.
    pub rate_bps: (f64, f64),
    /// Mean burst length in segments (geometric).
    pub burst_segments: f64,
    /// Gap between bursts: `gap_min` plus an exponential with mean `gap_mean`.
    pub gap_min: Nanos,
    pub gap_mean: Nanos,
    pub mss: u64,
    /// Every n-th flow is adversarial (never pauses).
    pub adversarial_every: Option<u32>,
    pub adversarial_bytes: u64,
    pub adversarial_bps: f64,
    /// Timestamps are divided by this (> 1 compresses the trace, raising the load).
    pub time_scale: f64,
}

impl TraceSpec {
    /// The full run's trace: 4 s of arrivals, 80 000 new flows/s at the peak.
    pub fn full(seed: u64) -> TraceSpec {
        TraceSpec {
            seed,
            arrival_span: Nanos::from_secs(4),
            peak_flows_per_sec: 80_000.0,
            low: 0.15,
            pareto_shape: 1.2,
            min_flow_bytes: 3_000.0,
            max_flow_bytes: 10.0e6,
            rate_bps: (50.0e6, 800.0e6),
            burst_segments: 8.0,
            gap_min: Nanos::from_millis(1),
            gap_mean: Nanos::from_millis(4),
            mss: 1448,
            adversarial_every: None,
            adversarial_bytes: 60_000,
            adversarial_bps: 500.0e6,
            time_scale: 1.0,
        }
    }

    /// A small trace for tests and `--quick`: 0.6 s of arrivals, 50 000 new flows/s at the peak.
    pub fn quick(seed: u64) -> TraceSpec {
        TraceSpec {
            arrival_span: Nanos::from_millis(600),
            peak_flows_per_sec: 50_000.0,
            max_flow_bytes: 2.0e6,
            ..TraceSpec::full(seed)
        }
    }
}

/// A time-ordered packet trace.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    pub keys: Vec<FlowKey>,
    pub packets: Vec<TracePacket>,
    /// Bytes of each flow.
    pub flow_bytes: Vec<u64>,
}

impl Trace {
    pub fn bytes(&self) -> u64 {
        self.flow_bytes.iter().sum()
    }

    /// Time of the last packet.
    pub fn end(&self) -> Nanos {
        self.packets.last().map_or(Nanos::ZERO, |p| p.at)
    }
}

/// Pareto sample with `shape` and minimum `min`.
pub fn pareto(rng: &mut Rng, shape: f64, min: f64) -> f64 {
    let u = 1.0 - rng.unit();
    min / u.powf(1.0 / shape)
}

/// Exponential sample with `mean`.
fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    -(1.0 - rng.unit()).ln() * mean
}

/// The ramp's arrival rate at `t` as a fraction of the peak.
fn ramp(t: f64, span: f64, low: f64) -> f64 {
    let x = if span > 0.0 { t / span } else { 0.0 };
    let shape = if x < 0.35 {
        x / 0.35
    } else if x < 0.65 {
        1.0
    } else {
        ((1.0 - x) / 0.35).max(0.0)
    };
    low + (1.0 - low) * shape
}

fn flow_key(i: u32) -> FlowKey {
    let [_, a, b, c] = i.to_be_bytes();
    let client = v4([10, a, b, c]);
    let server = v4([198, 18, 0, (i % 251) as u8]);
    FlowKey::new(FAMILY_V4, 6, client, 1024 + (i % 60_000) as u16, server, 443).0
}

/// Generates the trace of `spec`.
pub fn generate(spec: &TraceSpec) -> Trace {
    let mut rng = Rng::new(spec.seed);
    let span = spec.arrival_span.0 as f64;
    let mean_gap_ns = 1e9 / spec.peak_flows_per_sec.max(1e-9);
    let scale = if spec.time_scale > 0.0 { spec.time_scale } else { 1.0 };
    let (mut keys, mut flow_bytes, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut t = 0.0;
    loop {
        t += exponential(&mut rng, mean_gap_ns);
        if t >= span {
            break;
        }
        if rng.unit() >= ramp(t, span, spec.low) {
            continue;
        }
        let i = keys.len() as u32;
        let adversarial = spec.adversarial_every.is_some_and(|n| n > 0 && (i + 1).is_multiple_of(n));
        let mut size =
            pareto(&mut rng, spec.pareto_shape, spec.min_flow_bytes).min(spec.max_flow_bytes) as u64;
        let (lo, hi) = spec.rate_bps;
        let mut bps = lo * (hi / lo).powf(rng.unit());
        if adversarial {
            size = size.max(spec.adversarial_bytes);
            bps = spec.adversarial_bps;
        }
        keys.push(flow_key(i));
        flow_bytes.push(0u64);
        let bytes = emit_flow(spec, &mut rng, FlowIdx(i), t, size, bps, adversarial, &mut raw);
        if let Some(b) = flow_bytes.last_mut() {
            *b = bytes;
        }
    }
    raw.sort_by(|a: &(f64, u32, u64), b| a.0.total_cmp(&b.0));
    let packets = raw
        .into_iter()
        .map(|(at, f, len)| TracePacket { at: Nanos((at / scale) as u64), flow: FlowIdx(f), len: Bytes(len) })
        .collect();
    Trace { keys, packets, flow_bytes }
}

/// Appends one flow's packets (time ns, flow, bytes) from `start`; returns its bytes.
#[allow(clippy::too_many_arguments)]
fn emit_flow(
    spec: &TraceSpec,
    rng: &mut Rng,
    flow: FlowIdx,
    start: f64,
    size: u64,
    bps: f64,
    adversarial: bool,
    out: &mut Vec<(f64, u32, u64)>,
) -> u64 {
    let mss = spec.mss.max(1);
    let p_end_burst = 1.0 / spec.burst_segments.max(1.0);
    let (mut t, mut left, mut seg, mut total) = (start, size.max(1), 0u64, 0u64);
    // Slow start: the sending rate doubles with every burst from the lower end of the range
    // up to the flow's own rate, so an elephant's first flowlets understate its demand.
    let mut rate = if adversarial { bps } else { spec.rate_bps.0.min(bps) };
    while left > 0 {
        let spacing = mss as f64 * 8.0 / rate * 1e9;
        rate = (rate * 2.0).min(bps);
        loop {
            let len = left.min(mss);
            out.push((t, flow.0, len));
            total += len;
            left -= len;
            seg += 1;
            if seg % 2 == 0 {
                out.push((t + spacing / 2.0, flow.0, 64));
                total += 64;
            }
            t += spacing;
            if left == 0 || (!adversarial && rng.unit() < p_end_burst) {
                break;
            }
        }
        t += spec.gap_min.0 as f64 + exponential(rng, spec.gap_mean.0 as f64);
    }
    total
}

/// A trace from captured packets `(capture time, flow key, bytes)`, in capture order: flows are
/// numbered by first appearance, times start at the first packet and are divided by
/// `time_scale` (SNF §9 scales its traces the same way), and packets are put in time order
/// (captures are not always monotonic).
pub fn from_packets(records: impl IntoIterator<Item = (Nanos, FlowKey, Bytes)>, time_scale: f64) -> Trace {
    let scale = if time_scale > 0.0 { time_scale } else { 1.0 };
    let mut index: hashbrown::HashMap<FlowKey, FlowIdx> = hashbrown::HashMap::new();
    let (mut keys, mut flow_bytes, mut packets) = (Vec::new(), Vec::new(), Vec::new());
    let mut t0: Option<Nanos> = None;
    for (at, key, len) in records {
        let start = *t0.get_or_insert(at);
        let flow = *index.entry(key).or_insert_with(|| {
            keys.push(key);
            flow_bytes.push(0u64);
            FlowIdx((keys.len() - 1) as u32)
        });
        if let Some(b) = flow_bytes.get_mut(flow.0 as usize) {
            *b += len.0;
        }
        let rel = Nanos((at.saturating_sub(start).0 as f64 / scale) as u64);
        packets.push(TracePacket { at: rel, flow, len });
    }
    packets.sort_by_key(|p| p.at);
    Trace { keys, packets, flow_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> TraceSpec {
        TraceSpec {
            arrival_span: Nanos::from_millis(200),
            peak_flows_per_sec: 5_000.0,
            ..TraceSpec::quick(seed)
        }
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let (a, b, c) = (generate(&small(3)), generate(&small(3)), generate(&small(4)));
        assert_eq!(a, b);
        assert_ne!(a.packets, c.packets);
        assert!(a.packets.windows(2).all(|w| w.first().map(|p| p.at) <= w.get(1).map(|p| p.at)));
        // Every byte of every flow is in the packets.
        let sum: u64 = a.packets.iter().map(|p| p.len.0).sum();
        assert_eq!(sum, a.bytes());
    }

    #[test]
    fn captured_packets_become_a_trace() {
        let (a, b) = (flow_key(1), flow_key(2));
        let recs = [
            (Nanos(1_000), a, Bytes(100)),
            (Nanos(3_000), b, Bytes(60)),
            (Nanos(2_000), a, Bytes(40)), // captured out of order
            (Nanos(5_000), b, Bytes(1500)),
        ];
        let t = from_packets(recs, 2.0);
        assert_eq!(t.keys, vec![a, b]);
        assert_eq!(t.flow_bytes, vec![140, 1560]);
        let got: Vec<(u64, u32, u64)> = t.packets.iter().map(|p| (p.at.0, p.flow.0, p.len.0)).collect();
        assert_eq!(got, vec![(0, 0, 100), (500, 0, 40), (1_000, 1, 60), (2_000, 1, 1500)]);
    }

    #[test]
    fn flow_sizes_are_heavy_tailed() {
        let t = generate(&TraceSpec { max_flow_bytes: 1e12, ..small(5) });
        let mut sizes = t.flow_bytes.clone();
        sizes.sort_unstable();
        let n = sizes.len();
        assert!(n > 500, "{n} flows");
        let total: u64 = sizes.iter().sum();
        let top: u64 = sizes.iter().skip(n - n / 20).sum();
        // Pareto 1.2: the top 5 % of flows carry far more than 5 % of the bytes (about 60 %).
        assert!(top as f64 > 0.35 * total as f64, "top 5 % carry {top} of {total}");
        let median = sizes.get(n / 2).copied().unwrap_or(0);
        let max = sizes.last().copied().unwrap_or(0);
        assert!(max > 100 * median, "max {max}, median {median}");
    }

    #[test]
    fn bursts_are_separated_by_gaps_longer_than_the_flowlet_timeout() {
        let spec = small(6);
        let t = generate(&spec);
        let mut last: Vec<Option<Nanos>> = vec![None; t.keys.len()];
        let (mut gaps_over_t, mut gaps_mid) = (0u64, 0u64);
        for p in &t.packets {
            let Some(slot) = last.get_mut(p.flow.0 as usize) else { continue };
            if let Some(prev) = *slot {
                let gap = p.at.saturating_sub(prev);
                if gap >= spec.gap_min {
                    gaps_over_t += 1;
                } else if gap > Nanos::from_micros(500) {
                    gaps_mid += 1;
                }
            }
            *slot = Some(p.at);
        }
        // Within a burst packets are at most a 50 Mbit/s segment time (232 µs) apart; between
        // bursts at least gap_min (1 ms): nothing falls in between.
        assert!(gaps_over_t > 100, "{gaps_over_t} burst gaps");
        assert_eq!(gaps_mid, 0);
    }

    #[test]
    fn adversarial_flows_never_pause_and_the_ramp_shapes_arrivals() {
        let t = generate(&TraceSpec { adversarial_every: Some(10), ..small(7) });
        let adv = FlowIdx(9);
        let times: Vec<Nanos> = t.packets.iter().filter(|p| p.flow == adv).map(|p| p.at).collect();
        assert!(times.len() >= 40, "{}", times.len());
        assert!(times.windows(2).all(|w| match w {
            [a, b] => b.saturating_sub(*a) < Nanos::from_micros(100),
            _ => true,
        }));
        assert!((ramp(0.0, 1.0, 0.2) - 0.2).abs() < 1e-12);
        assert!((ramp(0.5, 1.0, 0.2) - 1.0).abs() < 1e-12);
        assert!((ramp(1.0, 1.0, 0.2) - 0.2).abs() < 1e-12);
    }
}
