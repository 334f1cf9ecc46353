//! `nflet gen`: run the configured ports and chains with probing generators, stop sending
//! when the generators are done (their `count`, `--duration` or Ctrl-C), wait for the frames
//! in flight, and report what the analyzer ports measured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::GenReport;
use super::streams::ProbeStats;
use super::ProbeSession;
use crate::config::{Config, RawPortKind};
use crate::dataplane::{run_in_session, RunOptions, StartError, Summary};

/// How `nflet gen` runs.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Stop sending after this long (otherwise when every generator reached its `count`).
    pub duration: Option<Duration>,
    /// Once sending has ended, stop when no frame reached an analyzer for this long.
    pub drain: Duration,
    /// Print one counter line per second to stderr.
    pub live: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions { duration: None, drain: Duration::from_millis(500), live: false }
    }
}

/// A finished `nflet gen` run.
#[derive(Debug, Clone)]
pub struct GenOutcome {
    pub summary: Summary,
    pub report: GenReport,
}

/// Why `nflet gen` could not run.
#[derive(Debug)]
pub enum GenError {
    /// The configuration has no analyzer port, so nothing would be measured.
    NoAnalyzer {
        source: String,
    },
    Start(StartError),
}

impl std::fmt::Display for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenError::NoAnalyzer { source } => write!(
                f,
                "{source}: `nflet gen` needs a port with `kind = \"analyzer\"` and a chain whose `output` \
                 is that port (the frames to measure)"
            ),
            GenError::Start(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GenError {}

/// Switches every generator and every capture replay (`pcap` with `read`) of `config` to
/// probing; returns whether there is any (a sender), and the analyzer ports' indices.
fn probe_everything(config: &mut Config) -> (bool, Vec<usize>) {
    let mut senders = false;
    let mut analyzers = Vec::new();
    for (i, p) in config.ports.iter_mut().enumerate() {
        match &mut p.kind {
            RawPortKind::Generator(g) => {
                g.probe = true;
                senders = true;
            }
            RawPortKind::Pcap(c) if c.read.is_some() => {
                c.probe = true;
                senders = true;
            }
            RawPortKind::Analyzer(_) => analyzers.push(i),
            _ => {}
        }
    }
    (senders, analyzers)
}

/// When to end the run: sending first, then the drain.
#[derive(Debug)]
struct Drain {
    started: Instant,
    sending_ended: Option<Instant>,
    analyzed: u64,
    last_change: Instant,
}

/// Runs `config` (its generators and capture replays switched to probing) until they are
/// done and the frames in flight have arrived; `user_stop` (Ctrl-C) ends sending early.
/// Without any sender (an analyzer for another process's probes) it runs until
/// `opts.duration` or Ctrl-C.
pub fn run_gen(
    mut config: Config,
    opts: &GenOptions,
    user_stop: Arc<AtomicBool>,
) -> Result<GenOutcome, GenError> {
    let (senders, analyzers) = probe_everything(&mut config);
    if analyzers.is_empty() {
        return Err(GenError::NoAnalyzer { source: config.source.clone() });
    }
    let session = ProbeSession::new();
    let stop = Arc::new(AtomicBool::new(false));
    let now = Instant::now();
    let drain = spin::Mutex::new(Drain { started: now, sending_ended: None, analyzed: 0, last_change: now });
    let sum = |v: &[crate::dataplane::stats::Tally], ports: &[usize]| -> u64 {
        ports.iter().filter_map(|p| v.get(*p)).map(|t| t.packets).sum()
    };
    let watch = |s: &Summary| {
        let generated = session.sent();
        let analyzed = sum(&s.total.tx, &analyzers);
        let mut d = drain.lock();
        let now = Instant::now();
        let out_of_time = opts.duration.is_some_and(|limit| now.duration_since(d.started) >= limit);
        if out_of_time || user_stop.load(Ordering::Relaxed) {
            session.halt.store(true, Ordering::Relaxed);
        }
        let all_sent = senders && session.senders_done();
        if d.sending_ended.is_none() && (session.halt.load(Ordering::Relaxed) || all_sent) {
            d.sending_ended = Some(now);
            d.last_change = now;
        }
        let changed = analyzed != d.analyzed;
        if changed {
            d.analyzed = analyzed;
            d.last_change = now;
        }
        if d.sending_ended.is_some() {
            // Everything generated has arrived (and the count held still for a tick), or
            // nothing arrived for the drain time.
            let all_in = senders && analyzed >= generated && !changed;
            if all_in || now.duration_since(d.last_change) >= opts.drain {
                stop.store(true, Ordering::Relaxed);
            }
        }
    };
    let run_opts = RunOptions {
        duration: None,
        live: opts.live,
        warmup: 0,
        offline: None,
        progress: Some(&watch),
        capture: None,
        reload: None,
    };
    let summary = run_in_session(&config, &run_opts, Arc::clone(&stop), &session).map_err(GenError::Start)?;
    let mut merged = ProbeStats::default();
    for (_, s) in &summary.analyzers {
        merged.merge(s);
    }
    let sent = senders.then(|| session.sent());
    let report = GenReport::new(&merged, sent, summary.elapsed.as_secs_f64()).with_dataplane(&summary);
    Ok(GenOutcome { summary, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cores: usize, count: u64, analyzer: bool) -> Config {
        let an = if analyzer { "kind = \"analyzer\"" } else { "kind = \"sink\"" };
        let text = format!(
            r#"
[appliance]
cores = {cores}
idle_sleep_us = 10
[[port]]
name = "gen"
kind = "generator"
flows = 32
count = {count}
size = 100
proto = "mix"
[[port]]
name = "an"
{an}
[[nf]]
name = "fw"
kind = "firewall"
default = "allow"
[[chain]]
name = "c"
ingress = ["gen"]
steps = ["fw"]
output = "an"
"#
        );
        Config::parse("gen.toml", &text).unwrap()
    }

    #[test]
    fn in_memory_run_measures_every_frame_without_loss() {
        for cores in [1, 2] {
            let out = run_gen(config(cores, 5000, true), &GenOptions::default(), Arc::default()).unwrap();
            let r = &out.report;
            let total = 5000 * cores as u64;
            assert_eq!(
                (r.sent, r.received, r.lost, r.duplicates, r.reordered),
                (Some(total), total, 0, 0, 0)
            );
            assert_eq!(
                (r.foreign, r.other_session, r.untracked, r.streams),
                (0, 0, 0, 32),
                "{cores} core(s)"
            );
            assert_eq!((r.port_lost, r.dataplane_dropped), (0, 0));
            let l = r.latency_ns.clone().unwrap();
            assert_eq!(l.samples, total);
            assert!(l.min <= l.p50 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");
            assert_eq!(out.summary.analyzers.len(), 1);
        }
    }

    #[test]
    fn without_an_analyzer_it_says_what_to_add() {
        let e = run_gen(config(1, 10, false), &GenOptions::default(), Arc::default()).unwrap_err();
        assert!(e.to_string().contains("kind = \"analyzer\""), "{e}");
    }

    #[test]
    fn duration_ends_an_endless_generator_and_drains() {
        let opts = GenOptions { duration: Some(Duration::from_millis(300)), ..GenOptions::default() };
        let mut cfg = config(1, 0, true);
        if let RawPortKind::Generator(g) = &mut cfg.ports[0].kind {
            g.rate_pps = 20_000;
        }
        let started = Instant::now();
        let out = run_gen(cfg, &opts, Arc::default()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let r = &out.report;
        assert!(r.received > 1000, "{r:?}");
        assert_eq!((r.sent, r.lost), (Some(r.received), 0));
    }
}
