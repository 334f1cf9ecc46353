//! The `nflet gen` report: what the analyzers measured, as text for people and JSON for
//! scripts.

use std::fmt::Write as _;

use serde::Serialize;

use super::streams::ProbeStats;

/// The end-of-run measurement, as written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct GenReport {
    /// Seconds the run lasted.
    pub elapsed_s: f64,
    /// Frames this process's probing generators produced (`null` when none ran here).
    pub sent: Option<u64>,
    /// Frames expected: `sent` when known, else the sum over streams of highest sequence + 1.
    pub expected: u64,
    /// Distinct probe frames received.
    pub received: u64,
    pub lost: u64,
    /// `lost / expected` (0 when nothing was expected).
    pub loss_ratio: f64,
    pub duplicates: u64,
    /// Frames that arrived after a frame of the same stream with a higher sequence number.
    pub reordered: u64,
    /// Reordered frames so late (more than 256 behind) that they were not checked for
    /// duplication.
    pub late: u64,
    pub streams: usize,
    /// Probes of streams beyond the analyzer's `streams` limit (not sequence-checked).
    pub untracked: u64,
    /// Frames that reached an analyzer without a probe (ARP, neighbour discovery, ...).
    pub foreign: u64,
    /// Probes from another nflet process: no latency for them (see the module docs).
    pub other_session: u64,
    /// Frames this nflet's own ports lost before the dataplane saw them (receive ring
    /// overruns): part of `lost` when sender and analyzer are in this process.
    pub port_lost: u64,
    /// Frames this nflet's dataplane dropped (full transmit rings, no chain, NF verdicts).
    pub dataplane_dropped: u64,
    pub throughput: Throughput,
    /// Latency of this session's probes; `null` when none was measured.
    pub latency_ns: Option<Latency>,
}

/// Receive rate of probe frames between the first and the last one.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub window_s: f64,
    pub pps: f64,
    /// Frame bits per second (Ethernet header to end of payload, no FCS or preamble) / 10^6.
    pub mbit_s: f64,
    pub bytes: u64,
}

/// Latency percentiles in nanoseconds (nearest rank, at most 1/64 above the exact value).
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl GenReport {
    /// Builds the report from the analyzers' merged stats; `sent` is what this process's
    /// generators produced, if any ran.
    pub fn new(stats: &ProbeStats, sent: Option<u64>, elapsed_s: f64) -> GenReport {
        let seq = stats.sequence_totals();
        let received = seq.received + seq.untracked;
        let expected = sent.unwrap_or(seq.expected + seq.untracked);
        let lost = expected.saturating_sub(received);
        let window_ns = stats.first_ns.map_or(0, |f| stats.last_ns.saturating_sub(f));
        let window_s = if window_ns > 0 { window_ns as f64 / 1e9 } else { elapsed_s.max(1e-9) };
        let h = &stats.latency;
        let latency = match (h.min(), h.max(), h.mean()) {
            (Some(min), Some(max), Some(mean)) => Some(Latency {
                samples: h.count(),
                min,
                mean,
                p50: h.quantile(0.5).unwrap_or(max),
                p90: h.quantile(0.9).unwrap_or(max),
                p99: h.quantile(0.99).unwrap_or(max),
                p999: h.quantile(0.999).unwrap_or(max),
                max,
            }),
            _ => None,
        };
        GenReport {
            elapsed_s,
            sent,
            expected,
            received,
            lost,
            loss_ratio: if expected > 0 { lost as f64 / expected as f64 } else { 0.0 },
            duplicates: seq.duplicates,
            reordered: seq.reordered,
            late: seq.late,
            streams: stats.streams.len(),
            untracked: seq.untracked,
            foreign: stats.foreign,
            other_session: stats.other_session,
            port_lost: 0,
            dataplane_dropped: 0,
            throughput: Throughput {
                window_s,
                pps: stats.probes as f64 / window_s,
                mbit_s: stats.probe_bytes as f64 * 8.0 / window_s / 1e6,
                bytes: stats.probe_bytes,
            },
            latency_ns: latency,
        }
    }

    /// Adds what the dataplane itself lost or dropped, so a loss can be told from one in the
    /// network under test.
    pub fn with_dataplane(mut self, summary: &crate::dataplane::Summary) -> GenReport {
        self.port_lost = summary.total.port_lost.iter().sum();
        self.dataplane_dropped = summary.total.drops.total();
        self
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "== nflet gen report ({:.2} s)", self.elapsed_s);
        match self.sent {
            Some(n) => {
                let _ = writeln!(o, "sent        {n} frames");
            }
            None => {
                let _ =
                    writeln!(o, "sent        (no generator in this process; expected from sequence numbers)");
            }
        }
        let _ = writeln!(
            o,
            "received    {} frames in {} stream(s): {} duplicate(s), {} reordered ({} late)",
            self.received, self.streams, self.duplicates, self.reordered, self.late
        );
        let _ = writeln!(
            o,
            "lost        {} of {} ({:.3} %); this nflet's ports lost {}, its dataplane dropped {}",
            self.lost,
            self.expected,
            self.loss_ratio * 100.0,
            self.port_lost,
            self.dataplane_dropped
        );
        let t = &self.throughput;
        let _ = writeln!(
            o,
            "throughput  {:.0} pps, {:.3} Mbit/s over {:.3} s of reception",
            t.pps, t.mbit_s, t.window_s
        );
        match &self.latency_ns {
            Some(l) => {
                let _ = writeln!(
                    o,
                    "latency     min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {} ({} samples)",
                    us(l.min),
                    us(l.p50),
                    us(l.p90),
                    us(l.p99),
                    us(l.p999),
                    us(l.max),
                    us(l.mean as u64),
                    l.samples
                );
            }
            None if self.other_session > 0 => {
                let _ = writeln!(o, "latency     not measured: the probes came from another nflet process");
            }
            None => {
                let _ = writeln!(o, "latency     not measured: no probe received");
            }
        }
        let _ = write!(
            o,
            "also        {} frame(s) without a probe, {} probe(s) from other processes, {} untracked",
            self.foreign, self.other_session, self.untracked
        );
        o
    }
}

/// Nanoseconds as microseconds with three decimals.
fn us(ns: u64) -> String {
    format!("{}.{:03} µs", ns / 1000, ns % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::probe::Probe;

    #[test]
    fn report_counts_tail_loss_when_the_number_sent_is_known() {
        let mut s = ProbeStats::new(8);
        // Stream 0: 0..10 but 4 lost and 7 duplicated; stream 1: 0, 2, 1.
        for seq in [0, 1, 2, 3, 5, 6, 7, 7, 8, 9] {
            s.record_probe(&Probe { session: 1, port: 0, stream: 0, seq, tx_ns: 100 }, 100, 1, 1_100 + seq);
        }
        for seq in [0, 2, 1] {
            s.record_probe(&Probe { session: 1, port: 0, stream: 1, seq, tx_ns: 100 }, 100, 1, 2_100);
        }
        // (sent, expected, lost)
        for (sent, expected, lost) in [(None, 13, 1), (Some(13), 13, 1), (Some(20), 20, 8)] {
            let r = GenReport::new(&s, sent, 1.0);
            assert_eq!(
                (r.expected, r.received, r.lost, r.duplicates, r.reordered),
                (expected, 12, lost, 1, 1)
            );
            let l = r.latency_ns.clone().unwrap();
            assert!(l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max);
            assert_eq!((l.samples, l.min, l.max), (13, 1_000, 2_000));
            let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
            assert_eq!(json["lost"], lost);
            assert_eq!(json["latency_ns"]["max"], 2_000);
            assert!(r.text().contains(&format!("lost        {lost} of {expected}")), "{}", r.text());
        }
    }

    #[test]
    fn report_without_probes_says_so() {
        let r = GenReport::new(&ProbeStats::new(1), None, 2.0);
        assert_eq!((r.expected, r.lost, r.loss_ratio), (0, 0, 0.0));
        assert!(r.latency_ns.is_none());
        assert!(r.text().contains("no probe received"));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(json["latency_ns"].is_null());
    }
}
