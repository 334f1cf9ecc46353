//! `ddos`: a volumetric-DDoS detection and mitigation pipeline, after the event-driven
//! anomaly-detection design in Aditya et al. (HotNets 2019, Fig. 5):
//!
//! 1. **Statistics collector** — a random sample of packets (on average one in
//!    `sample_every`, as sFlow does) feeds per-interval histograms of destination and source
//!    addresses and a count-min sketch of destinations ([`entropy`], [`sketch`]).
//! 2. **Lightweight detection** — at the end of each `interval_ms`, the normalized Shannon
//!    entropy of sampled destinations and of sampled sources is compared with an EWMA
//!    baseline of past normal intervals; a deviation of `entropy_threshold` or more in either
//!    is an anomaly. Anomalous intervals do not feed the baseline, so an attack cannot teach
//!    the detector that it is normal.
//! 3. **Heavyweight check / victim identification** — only on an anomaly, the sketch's
//!    heaviest destinations are examined: one that received at least `victim_share` of the
//!    interval's samples at an estimated `victim_min_pps` or more is a victim.
//! 4. **Mitigation** — traffic towards a victim is policed by the policer's token bucket to
//!    `rate_limit_pps` (or dropped outright), counted, and announced with a `warn` log line;
//!    a victim is released (and logged) once the traffic towards it stayed under
//!    `release_pps` for `release_intervals` intervals ([`mitigation`]).
//!
//! Everything is per core and runs on the runtime clock (`ctx.now`), so tests drive it with a
//! virtual clock. With RSS spreading a victim's traffic over N cores, each core sees about 1/N
//! of it: rates in the configuration are per core. The packet path reads only the parsed
//! metadata and costs a countdown per packet plus, for sampled packets, two histogram bins
//! and `sketch_depth` counters; the interval work (two 1024-bin entropies) is done by the
//! first packet or housekeeping call after the interval ends.
//!
//! Scale-out: no per-flow state (the sketches and entropy histograms are per-core aggregates
//! over all traffic), so nothing moves with a flow and the NF does not migrate.

pub mod entropy;
pub mod mitigation;
pub mod sketch;
#[cfg(test)]
mod tests;

use crate::frame::Frame;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

use self::entropy::{addr_hash, Baseline, Entropy, Histogram};
use self::mitigation::{Mitigation, Release};
pub use self::mitigation::{Mode, Victim};
use self::sketch::CountMin;
use crate::drop::DropReason;
use crate::flow::{FAMILY_V4, FAMILY_V6};
use crate::ids::PortId;
use crate::nf::{Burst, Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::{L3Kind, Meta};
use crate::rng::Rng;
use crate::time::Nanos;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdosConfig {
    /// Ports whose incoming traffic is watched (and mitigated); empty: all ports.
    pub ports: Vec<String>,
    /// Detection interval in milliseconds.
    pub interval_ms: u64,
    /// Sample on average one packet in this many (1: every packet).
    pub sample_every: u32,
    /// Intervals with fewer samples are not judged (too little data for an entropy).
    pub min_samples: u32,
    /// Anomaly when the normalized entropy (0..1) of destinations or sources moves this far
    /// from its baseline.
    pub entropy_threshold: f64,
    /// Weight of a new normal interval in the EWMA baseline (0 < alpha <= 1).
    pub ewma_alpha: f64,
    /// Judged intervals used only to learn the baseline after start.
    pub warmup_intervals: u32,
    /// Count-min sketch counters per row (a power of two) and rows.
    pub sketch_width: usize,
    pub sketch_depth: usize,
    /// A victim received at least this share (0..1) of an anomalous interval's samples …
    pub victim_share: f64,
    /// … at an estimated rate of at least this many packets/s (per core).
    pub victim_min_pps: u64,
    /// Victims mitigated at once per core; further ones are counted, not mitigated.
    pub max_victims: usize,
    /// `rate_limit` (police to `rate_limit_pps`) or `drop`.
    pub mitigation: Mode,
    /// Token bucket for `rate_limit`: packets/s and burst (packets), per victim per core.
    pub rate_limit_pps: u64,
    pub rate_limit_burst: u64,
    /// A victim is released after its offered rate stayed under `release_pps` for
    /// `release_intervals` intervals in a row.
    pub release_pps: u64,
    pub release_intervals: u32,
}

impl Default for DdosConfig {
    fn default() -> Self {
        DdosConfig {
            ports: Vec::new(),
            interval_ms: 1000,
            sample_every: 16,
            min_samples: 128,
            entropy_threshold: 0.1,
            ewma_alpha: 0.2,
            warmup_intervals: 5,
            sketch_width: 2048,
            sketch_depth: 4,
            victim_share: 0.2,
            victim_min_pps: 10_000,
            max_victims: 8,
            mitigation: Mode::RateLimit,
            rate_limit_pps: 1000,
            rate_limit_burst: 100,
            release_pps: 5000,
            release_intervals: 3,
        }
    }
}

/// The validated detection settings.
#[derive(Debug, Clone)]
struct Settings {
    ports: Vec<PortId>,
    interval: Nanos,
    sample_every: u32,
    min_samples: u32,
    threshold: f64,
    victim_share: f64,
    victim_min_pps: u64,
    release: Release,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    packets: u64,
    sampled: u64,
    intervals: u64,
    judged: u64,
    anomalies: u64,
    victims_detected: u64,
    victims_released: u64,
    victims_overflow: u64,
    mitigated_dropped: u64,
    mitigated_passed: u64,
    not_watched: u64,
}

/// One interval's statistics (stage 1).
#[derive(Debug)]
struct Collector {
    rng: Rng,
    /// Packets to skip before the next sample.
    skip: u32,
    dst: Histogram,
    src: Histogram,
    sketch: CountMin,
}

/// The DDoS pipeline on one core.
#[derive(Debug)]
pub struct Ddos {
    name: String,
    core: u16,
    settings: Settings,
    collector: Collector,
    dst_base: Baseline,
    src_base: Baseline,
    warmup_left: u32,
    mitigation: Mitigation,
    /// Start and end of the current interval; `None` until the first packet.
    window: Option<(Nanos, Nanos)>,
    last: Option<IntervalSummary>,
    counters: Counters,
}

/// What the last judged interval looked like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalSummary {
    pub samples: u32,
    pub dst: Entropy,
    pub src: Entropy,
    pub anomaly: bool,
}

fn param(key: &str, detail: String) -> NfError {
    NfError::Param { key: key.to_string(), detail }
}

impl NetworkFunction for Ddos {
    const KIND: &'static str = "ddos";
    type Config = DdosConfig;

    fn init(c: &DdosConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let checks: [(bool, &str, String); 10] = [
            (c.interval_ms == 0, "interval_ms", "must be at least 1".into()),
            (c.sample_every == 0, "sample_every", "must be at least 1 (1 samples every packet)".into()),
            (
                !(c.entropy_threshold > 0.0 && c.entropy_threshold <= 1.0),
                "entropy_threshold",
                format!("normalized entropy lies in 0..1; got {}", c.entropy_threshold),
            ),
            (
                !(c.ewma_alpha > 0.0 && c.ewma_alpha <= 1.0),
                "ewma_alpha",
                format!("must be in (0, 1]; got {}", c.ewma_alpha),
            ),
            (
                !(c.sketch_width >= 16 && c.sketch_width <= 1 << 20 && c.sketch_width.is_power_of_two()),
                "sketch_width",
                format!("must be a power of two from 16 to 1048576; got {}", c.sketch_width),
            ),
            (
                !(1..=16).contains(&c.sketch_depth),
                "sketch_depth",
                format!("must be 1..=16; got {}", c.sketch_depth),
            ),
            (
                !(c.victim_share > 0.0 && c.victim_share <= 1.0),
                "victim_share",
                format!("must be in (0, 1]; got {}", c.victim_share),
            ),
            (
                !(1..=64).contains(&c.max_victims),
                "max_victims",
                format!("must be 1..=64; got {}", c.max_victims),
            ),
            (
                c.release_pps > c.victim_min_pps,
                "release_pps",
                format!(
                    "must not exceed victim_min_pps ({}), or a victim would be released while still flooded",
                    c.victim_min_pps
                ),
            ),
            (c.release_intervals == 0, "release_intervals", "must be at least 1".into()),
        ];
        if let Some((_, key, detail)) = checks.into_iter().find(|(bad, _, _)| *bad) {
            return Err(param(key, detail));
        }
        let mut ports = Vec::new();
        for (i, p) in c.ports.iter().enumerate() {
            ports.push(rt.port(&format!("ports[{i}]"), p)?);
        }
        let settings = Settings {
            ports,
            interval: Nanos::from_millis(c.interval_ms),
            sample_every: c.sample_every,
            min_samples: c.min_samples,
            threshold: c.entropy_threshold,
            victim_share: c.victim_share,
            victim_min_pps: c.victim_min_pps,
            release: Release { below_pps: c.release_pps, intervals: c.release_intervals },
        };
        let seed = 0x0dd0_5eed ^ (u64::from(rt.core.0) << 32);
        Ok(Ddos {
            name: rt.name.to_string(),
            core: rt.core.0,
            settings,
            collector: Collector {
                rng: Rng::new(seed),
                skip: 0,
                dst: Histogram::default(),
                src: Histogram::default(),
                sketch: CountMin::new(c.sketch_width, c.sketch_depth),
            },
            dst_base: Baseline::new(c.ewma_alpha),
            src_base: Baseline::new(c.ewma_alpha),
            warmup_left: c.warmup_intervals,
            mitigation: Mitigation::new(c.max_victims, c.mitigation, c.rate_limit_pps, c.rate_limit_burst),
            window: None,
            last: None,
            counters: Counters::default(),
        })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        self.tick(ctx.now);
        burst.for_each(|_, meta| self.packet(ctx.now, meta));
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, _frame: &mut [u8], meta: &mut Meta) -> Verdict {
        self.tick(ctx.now);
        self.packet(ctx.now, meta)
    }

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.tick(ctx.now);
    }

    fn report(&self, out: &mut Report) {
        let c = &self.counters;
        out.counter("packets", c.packets);
        out.counter("sampled", c.sampled);
        out.counter("intervals", c.intervals);
        out.counter("intervals_judged", c.judged);
        out.counter("anomalies", c.anomalies);
        out.counter("victims_detected", c.victims_detected);
        out.counter("victims_released", c.victims_released);
        out.counter("victims_overflow", c.victims_overflow);
        out.counter("victims_active", self.mitigation.victims().len() as u64);
        out.counter("mitigated_dropped", c.mitigated_dropped);
        out.counter("mitigated_passed", c.mitigated_passed);
        out.counter("not_watched", c.not_watched);
    }
}

impl Ddos {
    /// Stage 1 and stage 4 for one packet: sample it, then police it if it goes to a victim.
    #[inline]
    fn packet(&mut self, now: Nanos, meta: &Meta) -> Verdict {
        let family = match meta.l3_kind {
            L3Kind::Ipv4 => FAMILY_V4,
            L3Kind::Ipv6 => FAMILY_V6,
            L3Kind::Arp => {
                self.counters.not_watched += 1;
                return Verdict::Continue;
            }
        };
        if !self.settings.ports.is_empty() && !self.settings.ports.contains(&meta.ingress) {
            self.counters.not_watched += 1;
            return Verdict::Continue;
        }
        self.counters.packets += 1;
        let col = &mut self.collector;
        if col.skip == 0 {
            // Uniform gap in 0..=2(n-1): one sample per `sample_every` packets on average, at
            // times an attacker cannot predict.
            let n = u64::from(self.settings.sample_every);
            col.skip = u32::try_from(col.rng.below(2 * n - 1)).unwrap_or(0);
            let dh = addr_hash(family, &meta.dst);
            col.dst.add(dh);
            col.src.add(addr_hash(family, &meta.src));
            col.sketch.add(family, &meta.dst, dh);
            self.counters.sampled += 1;
        } else {
            col.skip -= 1;
        }
        if self.mitigation.is_empty() {
            return Verdict::Continue;
        }
        match self.mitigation.admit(family, &meta.dst, now) {
            None => Verdict::Continue,
            Some(true) => {
                self.counters.mitigated_passed += 1;
                Verdict::Continue
            }
            Some(false) => {
                self.counters.mitigated_dropped += 1;
                Verdict::Drop(DropReason::DdosMitigated)
            }
        }
    }

    /// Closes the current interval once `now` has passed its end.
    #[inline]
    fn tick(&mut self, now: Nanos) {
        match self.window {
            Some((_, end)) if now < end => {}
            Some((start, _)) => self.close_interval(start, now),
            None => self.window = Some((now, now.saturating_add(self.settings.interval))),
        }
    }

    /// Stages 2 and 3 at an interval boundary, then the release check.
    #[cold]
    fn close_interval(&mut self, start: Nanos, now: Nanos) {
        let len = self.settings.interval;
        // Every counted packet arrived in [start, start + len): a packet past the end closes
        // the interval before it is counted. Whole intervals after that saw no traffic.
        let passed = now.saturating_sub(start).0 / len.0.max(1);
        let empty_after = u32::try_from(passed.saturating_sub(1)).unwrap_or(u32::MAX);
        let next = Nanos(start.0.saturating_add(len.0.saturating_mul(passed.max(1))));
        self.window = Some((next, next.saturating_add(len)));
        self.counters.intervals += 1;

        // Detection first: the release rule then skips victims found in this very interval.
        let samples = self.collector.dst.total();
        if samples >= self.settings.min_samples {
            self.judge(samples, now);
        }
        let (name, core) = (&self.name, self.core);
        let released = &mut self.counters.victims_released;
        self.mitigation.end_interval(len, empty_after, self.settings.release, |v| {
            *released += 1;
            log::warn!(
                "{name} (core {core}): releasing DDoS victim {} after {:.1} s: {} packets dropped, {} passed",
                ip(v.family, v.addr),
                now.saturating_sub(v.since).as_secs_f64(),
                v.dropped,
                v.passed
            );
        });

        let col = &mut self.collector;
        col.dst.clear();
        col.src.clear();
        col.sketch.clear();
    }

    fn judge(&mut self, samples: u32, now: Nanos) {
        self.counters.judged += 1;
        let dst = self.collector.dst.entropy();
        let src = self.collector.src.entropy();
        let s = &self.settings;
        let anomaly = self.warmup_left == 0
            && (self.dst_base.deviation(dst.normalized) >= s.threshold
                || self.src_base.deviation(src.normalized) >= s.threshold);
        self.last = Some(IntervalSummary { samples, dst, src, anomaly });
        if !anomaly {
            self.warmup_left = self.warmup_left.saturating_sub(1);
            self.dst_base.update(dst.normalized);
            self.src_base.update(src.normalized);
            return;
        }
        self.counters.anomalies += 1;
        // Stage 3: only now look at the sketch.
        let scale = f64::from(s.sample_every) * 1e9 / s.interval.0.max(1) as f64;
        for cand in self.collector.sketch.heaviest() {
            let share = f64::from(cand.estimate) / f64::from(samples);
            let pps = f64::from(cand.estimate) * scale;
            if share < s.victim_share || pps < s.victim_min_pps as f64 {
                break; // heaviest first: the rest are lighter
            }
            if self.mitigation.contains(cand.family, &cand.addr) {
                continue;
            }
            if self.mitigation.is_full() {
                self.counters.victims_overflow += 1;
                continue;
            }
            self.mitigation.add(cand.family, cand.addr, now);
            self.counters.victims_detected += 1;
            log::warn!(
                "{} (core {}): DDoS victim {} detected: ~{:.0} pkt/s, {:.0}% of sampled traffic; \
                 destination entropy {:.2} (baseline {:.2}), source entropy {:.2} (baseline {:.2}); \
                 mitigation: {:?}",
                self.name,
                self.core,
                ip(cand.family, cand.addr),
                pps,
                share * 100.0,
                dst.normalized,
                self.dst_base.mean().unwrap_or(0.0),
                src.normalized,
                self.src_base.mean().unwrap_or(0.0),
                self.mitigation.mode(),
            );
        }
    }

    /// Destinations under mitigation on this core.
    pub fn victims(&self) -> &[Victim] {
        self.mitigation.victims()
    }

    /// The last judged interval.
    pub fn last_interval(&self) -> Option<IntervalSummary> {
        self.last
    }
}

fn ip(family: u8, addr: [u8; 16]) -> IpAddr {
    if family == FAMILY_V6 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        let [a, b, c, d, ..] = addr;
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }
}
