//! The evaluation harness behind `nflet eval`: SNF's §9 experiments on one host, on a
//! virtual clock.
//!
//! A seeded synthetic trace ([`trace`]) is replayed through the real [`crate::director::Director`]
//! ([`run`]): it steers every packet and ticks every load bucket, and its decisions are carried
//! out on modelled workers ([`workers`]: capacity, FIFO queue, latency) and modelled state
//! ([`state`]: proactive replication, reactive pulls, an external store; [`failure`]: output
//! logger or replay recovery). [`experiments`] defines the five experiments and their tables,
//! [`plot`] draws the SVG figures. Nothing here reads a clock or touches files: [`evaluate`]
//! returns the file contents and the caller writes them, so a run is a pure function of its
//! options (same seed, same numbers).

pub mod experiments;
pub mod failure;
pub mod oracle;
pub mod plot;
pub mod report;
pub mod run;
pub mod setup;
pub mod state;
pub mod stats;
pub mod trace;
pub mod workers;

use serde::Serialize;

use crate::config::ConfigError;

use experiments::{ExperimentResult, Workload};
use plot::{Chart, Series};
use run::{key_index, RunResult};
pub use setup::{EvalOptions, Experiment, Setup, UnknownExperiment};
use trace::{generate, TraceSpec};

/// A file of the evaluation's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub name: String,
    pub contents: String,
}

/// Everything an evaluation produced.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub seed: u64,
    pub quick: bool,
    pub experiments: Vec<ExperimentResult>,
}

/// Why an evaluation could not run.
#[derive(Debug)]
pub enum EvalError {
    Config(ConfigError),
    Json(serde_json::Error),
}

impl std::fmt::Display for EvalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalError::Config(e) => write!(f, "eval: a run's director configuration is invalid: {e}"),
            EvalError::Json(e) => write!(f, "eval: cannot encode results.json: {e}"),
        }
    }
}

impl std::error::Error for EvalError {}

impl From<ConfigError> for EvalError {
    fn from(e: ConfigError) -> Self {
        EvalError::Config(e)
    }
}

/// Runs the chosen experiments (all when none are named) on the synthetic trace; `progress`
/// hears each run's name.
pub fn evaluate(opts: &EvalOptions, progress: &mut dyn FnMut(&str)) -> Result<Evaluation, EvalError> {
    evaluate_on(opts, None, progress)
}

/// [`evaluate`] on `captured` instead of the synthetic trace when given (e.g. a pcap through
/// [`trace::from_packets`]). The adversarial-flowlet experiment always uses synthetic traces
/// (it needs flows that never pause); the failure comes half-way through the capture.
pub fn evaluate_on(
    opts: &EvalOptions,
    captured: Option<trace::Trace>,
    progress: &mut dyn FnMut(&str),
) -> Result<Evaluation, EvalError> {
    let mut setup = Setup::new(opts);
    let chosen: Vec<Experiment> =
        if opts.experiments.is_empty() { Experiment::ALL.to_vec() } else { opts.experiments.clone() };
    let synthetic = setup.trace.clone();
    let base = match captured {
        Some(t) => {
            setup.trace.arrival_span = t.end();
            t
        }
        None => generate(&setup.trace),
    };
    let index = key_index(&base);
    let w = Workload { trace: &base, index: &index };
    let mut experiments = Vec::new();
    for e in chosen {
        let r = match e {
            Experiment::Allocation => experiments::allocation(&setup, &w, progress)?,
            Experiment::State => experiments::state(&setup, &w, progress)?,
            Experiment::Recovery => experiments::recovery(&setup, &w, progress)?,
            Experiment::Sensitivity => experiments::sensitivity(&setup, &w, progress)?,
            Experiment::Flowlets => {
                let traces: Vec<(u32, trace::Trace)> = [100u32, 50, 10]
                    .into_iter()
                    .map(|n| (n, generate(&TraceSpec { adversarial_every: Some(n), ..synthetic.clone() })))
                    .collect();
                let indexes: Vec<_> = traces.iter().map(|(_, t)| key_index(t)).collect();
                let ws: Vec<(u32, Workload<'_>)> = traces
                    .iter()
                    .zip(&indexes)
                    .map(|((n, t), i)| (*n, Workload { trace: t, index: i }))
                    .collect();
                experiments::flowlets(&setup, &ws, progress)?
            }
        };
        experiments.push(r);
    }
    Ok(Evaluation { seed: opts.seed, quick: opts.quick, experiments })
}

fn cdf_series(runs: &[RunResult]) -> Vec<Series> {
    runs.iter()
        .map(|r| Series { name: r.name.clone(), points: r.latency_cdf_us.clone(), dashed: false })
        .collect()
}

fn latency_chart(title: &str, runs: &[RunResult]) -> Chart {
    Chart {
        title: title.into(),
        x_label: "packet latency (µs, log scale)".into(),
        y_label: "fraction of packets".into(),
        log_x: true,
        series: cdf_series(runs),
    }
}

impl Evaluation {
    /// `results.json`, one `<experiment>.txt` per experiment, and the SVG figures.
    pub fn files(&self) -> Result<Vec<OutputFile>, EvalError> {
        let mut out = vec![OutputFile {
            name: "results.json".into(),
            contents: serde_json::to_string_pretty(self).map_err(EvalError::Json)? + "\n",
        }];
        for e in &self.experiments {
            out.push(OutputFile { name: format!("{}.txt", e.experiment), contents: e.text.clone() });
            let svg = |name: &str, c: Chart| OutputFile { name: name.into(), contents: c.svg() };
            match e.experiment {
                "allocation" => {
                    let mut series: Vec<Series> = Vec::new();
                    if let Some(first) = e.runs.first() {
                        series.push(Series {
                            name: "demand".into(),
                            points: first.epochs.iter().map(|p| (p.start_ms, p.demand_gbps)).collect(),
                            dashed: true,
                        });
                    }
                    series.extend(e.runs.iter().map(|r| Series {
                        name: r.name.clone(),
                        points: r.epochs.iter().map(|p| (p.start_ms, p.provisioned_gbps)).collect(),
                        dashed: false,
                    }));
                    out.push(svg(
                        "provisioned.svg",
                        Chart {
                            title: "Provisioned capacity vs demand per 100 ms epoch".into(),
                            x_label: "time (ms)".into(),
                            y_label: "Gbit/s".into(),
                            log_x: false,
                            series,
                        },
                    ));
                    out.push(svg(
                        "latency-allocation.svg",
                        latency_chart("Packet latency CDF by allocation", &e.runs),
                    ));
                }
                "state" => out.push(svg(
                    "latency-state.svg",
                    latency_chart("Packet latency CDF by state strategy", &e.runs),
                )),
                "flowlets" => {
                    let last: Vec<RunResult> = e.runs.iter().rev().take(2).rev().cloned().collect();
                    out.push(svg(
                        "latency-flowlets.svg",
                        latency_chart("Latency CDF, adversarial flows", &last),
                    ));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// All tables, for the terminal.
    pub fn text(&self) -> String {
        self.experiments.iter().map(|e| e.text.as_str()).collect::<Vec<_>>().join("\n")
    }
}

#[cfg(test)]
mod tests;
