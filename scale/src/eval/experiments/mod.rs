//! The five experiments of SNF §9 on one host: which runs each makes and the table it prints,
//! with the paper's numbers alongside where the paper gives them. One file per experiment;
//! this module holds what they share.

mod allocation;
mod flowlets;
mod recovery;
mod sensitivity;
mod state;

pub use allocation::allocation;
pub use flowlets::flowlets;
pub use recovery::recovery;
pub use sensitivity::sensitivity;
pub use state::state;

use hashbrown::HashMap;
use nflet_nfs::flow::FlowKey;
use serde::Serialize;

use crate::config::ConfigError;

use super::run::{run, RunResult, RunSpec};
use super::trace::{FlowIdx, Trace};

/// What the trace of an experiment looked like.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    pub flows: usize,
    pub packets: usize,
    pub bytes: u64,
    pub last_packet_ms: f64,
    pub adversarial_every: Option<u32>,
}

impl TraceSummary {
    pub fn of(t: &Trace, adversarial_every: Option<u32>) -> TraceSummary {
        TraceSummary {
            flows: t.keys.len(),
            packets: t.packets.len(),
            bytes: t.bytes(),
            last_packet_ms: t.end().0 as f64 / 1e6,
            adversarial_every,
        }
    }
}

/// One experiment's runs and its table.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentResult {
    pub experiment: &'static str,
    pub title: &'static str,
    pub traces: Vec<TraceSummary>,
    pub runs: Vec<RunResult>,
    /// Clairvoyant provisioning bounds on the trace ([`crate::eval::oracle`]), by window.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<crate::eval::oracle::OracleBound>,
    /// The rendered tables and notes.
    pub text: String,
}

/// A trace with its key index, generated once and shared by the runs that use it.
#[derive(Debug)]
pub struct Workload<'a> {
    pub trace: &'a Trace,
    pub index: &'a HashMap<FlowKey, FlowIdx>,
}

pub(crate) fn runs(
    w: &Workload<'_>,
    specs: &[RunSpec],
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<RunResult>, ConfigError> {
    specs
        .iter()
        .map(|s| {
            progress(&s.name);
            run(w.trace, w.index, s)
        })
        .collect()
}

pub(crate) fn head(title: &str, t: &TraceSummary) -> String {
    format!(
        "## {title}\n\nTrace: {} flows, {} packets, {:.1} MB, last packet at {:.0} ms{}.\n\n",
        t.flows,
        t.packets,
        t.bytes as f64 / 1e6,
        t.last_packet_ms,
        t.adversarial_every.map_or(String::new(), |n| format!(", every {n}th flow adversarial"))
    )
}
