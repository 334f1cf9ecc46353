//! Usage billing: the work each tenant's chains did — packets, bytes, and the CPU time spent
//! inside them — as periodic usage records.
//!
//! CPU time is what the cores measured around each chain's execution per burst
//! ([`CoreStats::chain_cpu_ns`](crate::dataplane::stats::CoreStats)): bursts without packets
//! are never timed, so idle polling bills nothing, and a chain is billed only for its own
//! steps, not for receiving, parsing or transmitting.
//!
//! Every `[billing] interval_s` the [`Ledger`] writes one file, `usage-<start>.jsonl` in
//! `[billing] dir`, holding one JSON line per chain and core with what that core did for the
//! chain during the interval:
//!
//! ```text
//! {"start":1764628800.000,"end":1764628860.000,"tenant":"acme","chain":"edge","core":0,"packets":1200,"bytes":840000,"cpu_ns":51234}
//! ```
//!
//! A file appears whole or not at all: it is written under a temporary name, synced, then
//! renamed. The last, shorter interval is written when the run ends.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::Billing;
use crate::dataplane::Summary;

/// What one core did for one chain, cumulative since the start of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub packets: u64,
    pub bytes: u64,
    pub cpu_ns: u64,
}

impl Usage {
    fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
        }
    }
}

/// Cumulative usage by chain (outer index) and core (inner index).
pub fn usage(s: &Summary) -> Vec<Vec<Usage>> {
    (0..s.chain_names.len())
        .map(|c| {
            s.cores
                .iter()
                .zip(&s.chains_by_core)
                .map(|(core, chains)| {
                    let stats = chains.get(c).copied().unwrap_or_default();
                    Usage {
                        packets: stats.packets,
                        bytes: stats.bytes,
                        cpu_ns: core.chain_cpu_ns.get(c).copied().unwrap_or(0),
                    }
                })
                .collect()
        })
        .collect()
}

/// Writes usage records at the end of every interval.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    interval: Duration,
    /// Cumulative usage per chain (by name) and core when the current interval started.
    base: HashMap<String, Vec<Usage>>,
    started_at: SystemTime,
    started: Instant,
    written: u64,
}

impl Ledger {
    /// A ledger for `config`'s chains; creates the directory.
    pub fn new(billing: &Billing) -> Result<Ledger, String> {
        std::fs::create_dir_all(&billing.dir)
            .map_err(|e| format!("billing: cannot create {}: {e}", billing.dir.display()))?;
        Ok(Ledger {
            dir: billing.dir.clone(),
            interval: billing.interval,
            base: HashMap::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            written: 0,
        })
    }

    /// Takes the latest counters; writes a record when the interval is over.
    pub fn observe(&mut self, s: &Summary) {
        if self.started.elapsed() >= self.interval {
            self.close_interval(s);
        }
    }

    /// Writes the last (partial) interval.
    pub fn finish(&mut self, s: &Summary) {
        self.close_interval(s);
    }

    /// Usage files written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    fn close_interval(&mut self, s: &Summary) {
        let now = usage(s);
        let end_at = SystemTime::now();
        let lines = self.lines(s, &now, end_at);
        match write_atomically(&self.dir, &file_name(self.started_at, self.written), lines.as_bytes()) {
            Ok(()) => self.written += 1,
            // The interval stays open: the next attempt bills it together with the next one.
            Err(e) => {
                log::error!("billing: cannot write a usage record in {}: {e}", self.dir.display());
                return;
            }
        }
        self.base = s.chain_names.iter().cloned().zip(now).collect();
        self.started_at = end_at;
        self.started = Instant::now();
    }

    /// One line per chain and core. Chains are matched by name, so a live reload that adds,
    /// removes or reorders chains bills each for its own work.
    fn lines(&self, s: &Summary, now: &[Vec<Usage>], end_at: SystemTime) -> String {
        let mut out = String::new();
        for (c, (chain, cores)) in s.chain_names.iter().zip(now).enumerate() {
            let tenant = s.chain_tenants.get(c).unwrap_or(chain);
            for (core, u) in cores.iter().enumerate() {
                let base = self.base.get(chain).and_then(|b| b.get(core)).copied().unwrap_or_default();
                let d = u.since(&base);
                let line = serde_json::json!({
                    "start": unix_seconds(self.started_at),
                    "end": unix_seconds(end_at),
                    "tenant": tenant,
                    "chain": chain,
                    "core": core,
                    "packets": d.packets,
                    "bytes": d.bytes,
                    "cpu_ns": d.cpu_ns,
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        out
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    let s = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    (s * 1000.0).round() / 1000.0
}

/// `usage-<start in ms since the epoch>-<sequence>.jsonl`: names sort by time, and two short
/// intervals starting in the same millisecond (the last one, at a quick stop) stay apart.
fn file_name(start: SystemTime, seq: u64) -> String {
    format!("usage-{:015}-{seq:06}.jsonl", start.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
}

/// Writes `dir/name` so that readers see the whole file or none of it.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::stats::CoreStats;
    use nflet_nfs::chain::ChainStats;

    fn summary(per_core: &[(u64, u64, u64)]) -> Summary {
        let cores = per_core
            .iter()
            .map(|&(_, _, ns)| CoreStats { chain_cpu_ns: vec![ns], ..CoreStats::default() })
            .collect();
        let chains_by_core = per_core
            .iter()
            .map(|&(p, b, _)| vec![ChainStats { packets: p, bytes: b, ..ChainStats::default() }])
            .collect();
        Summary {
            cores,
            chains_by_core,
            chain_names: vec!["edge".into()],
            chain_tenants: vec!["acme".into()],
            ..Summary::default()
        }
    }

    #[test]
    fn records_hold_each_cores_work_during_the_interval() {
        let dir = std::env::temp_dir().join(format!("nflet-billing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let billing = Billing { dir: dir.clone(), interval: Duration::from_secs(3600) };
        let mut l = Ledger::new(&billing).unwrap();
        l.observe(&summary(&[(10, 1000, 500), (4, 400, 200)]));
        assert_eq!(l.written(), 0, "the interval is not over");
        l.finish(&summary(&[(10, 1000, 500), (4, 400, 200)]));
        l.finish(&summary(&[(15, 1500, 800), (4, 400, 200)]));
        assert_eq!(l.written(), 2);
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}: no temporary files left");
        let parse = |p: &PathBuf| -> Vec<serde_json::Value> {
            std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        };
        let first = parse(&files[0]);
        assert_eq!(first.len(), 2, "one line per core");
        assert_eq!(first[0]["tenant"], "acme");
        assert_eq!((first[0]["packets"].as_u64(), first[0]["cpu_ns"].as_u64()), (Some(10), Some(500)));
        assert_eq!((first[1]["core"].as_u64(), first[1]["bytes"].as_u64()), (Some(1), Some(400)));
        let second = parse(&files[1]);
        assert_eq!(
            (second[0]["packets"].as_u64(), second[0]["bytes"].as_u64(), second[0]["cpu_ns"].as_u64()),
            (Some(5), Some(500), Some(300)),
            "deltas, not totals"
        );
        assert_eq!(second[1]["cpu_ns"].as_u64(), Some(0), "an idle core bills nothing");
        assert_eq!(second[0]["start"], first[0]["end"], "intervals are contiguous");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
