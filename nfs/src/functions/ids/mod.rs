//! `ids`: an intrusion detection / prevention system with Snort-style rules.
//!
//! Rules (a Snort/Suricata subset, see [`parse`]) come from a rules file and/or inline strings.
//! They are compiled once per NF instance into an immutable [`RuleSet`] shared by all cores:
//! the rules, and one Aho-Corasick automaton over every rule's *fast pattern* (the content
//! marked `fast_pattern`, else the longest).
//!
//! Per packet:
//! 1. The flow is looked up (or created) in a per-core [`FlowTable`]; it holds, per direction,
//!    the automaton state after the last payload byte seen, and the handshake tracking that
//!    `flow:established` and `flow:to_server` need (see [`flows`]).
//! 2. The payload is stepped through the automaton byte by byte from that stored state, so a
//!    fast pattern split across packets of one flow direction is found. The automaton is
//!    ASCII-case-insensitive; exact case is checked in step 3.
//! 3. Every rule whose fast pattern ended in this packet is a candidate, as is every rule
//!    without content. A candidate matches when its header (protocol, addresses, ports,
//!    direction `->`/`<>`), its `flow` option, and all its contents match:
//!    - if its fast pattern lies wholly in this packet, all contents (fast pattern included)
//!      are searched in this packet's payload with Snort's per-packet semantics
//!      (offset/depth absolute, distance/within relative to the previous content, retried at
//!      later occurrences; nocase);
//!    - if its fast pattern began in an earlier packet (**cross-packet match**), the fast
//!      pattern is pinned where the automaton found it — a negative start — and the rule's
//!      other contents are searched in *this* packet only. A positioned fast pattern
//!      (offset, depth, distance, within) never matches across packets, and contents before
//!      a relative fast pattern cannot be in earlier packets, so such rules need the whole
//!      match in one packet. The bytes of the fast pattern in earlier packets were matched
//!      ignoring ASCII case (they are no longer available to re-check); the bytes in this
//!      packet are checked exactly. There is no stream reassembly: segments are scanned in
//!      arrival order, retransmissions and reordering are not undone.
//! 4. Snort's action order: if a `pass` rule matched, the packet passes with no alert. Else
//!    every matching `alert` and `drop` rule logs one line (`log::warn!`) and counts; in
//!    `ips` mode a matching `drop` rule drops the packet ([`DropReason::IdsRule`]); in `ids`
//!    mode it only alerts. A rule alerts at most once per packet.
//!
//! In a burst, packets of up to four different flow directions are scanned in lockstep (see
//! `scan`): the verdicts and counters are exactly those of one packet at a time.
//!
//! Counters per sid (`sid_N_alerts`, `sid_N_drops`, `sid_N_passes`, reported when non-zero)
//! and totals are in the NF report. A full flow table refuses the new flow (the packet is
//! dropped as `table_full`) or evicts, per `full_policy`, as the firewall does.

mod content;
pub mod flows;
mod inspect;
pub mod parse;
pub mod rule;
pub mod ruleset;
mod scan;
pub mod spec;

#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod tests;

use crate::frame::Frame;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

pub use content::{Content, Pinned};
pub use flows::{IdsFlow, IdsFlowEntry};
pub use parse::UnknownOptions;
pub use rule::{Action, Rule};
pub use ruleset::{AutomatonKind, BuildError, Hit, Matcher, RuleSet, RuleSource};

use crate::flow::FlowKey;
use crate::nf::ImportError;
use crate::nf::{Burst, Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::Meta;
use crate::state::migrate::{self, Place};
use crate::state::wire::tag;
use crate::state::{FlowTable, FullPolicy, StateDecl, TableSpec};
use crate::time::Nanos;
use inspect::{Core, Scratch};

/// Expired flows reclaimed per housekeeping call.
const SWEEP_PER_BURST: usize = 64;

/// `ids` only alerts; `ips` also drops on `drop` rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Ids,
    Ips,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdsConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Inline rules, one per string.
    #[serde(default)]
    pub rules: Vec<String>,
    /// A rules file (relative paths: from the configuration file's directory). Read by the
    /// appliance's config loader into [`IdsConfig::rules_file_text`].
    #[serde(default)]
    pub rules_file: Option<String>,
    /// The contents of `rules_file` (not a config key).
    #[serde(skip)]
    pub rules_file_text: Option<String>,
    /// Address and port variables (`HOME_NET = "[10.0.0.0/8]"`), used as `$HOME_NET`.
    /// `HOME_NET` and `EXTERNAL_NET` default to `any`.
    #[serde(default)]
    pub vars: HashMap<String, String>,
    #[serde(default)]
    pub unknown_options: UnknownOptions,
    #[serde(default)]
    pub automaton: AutomatonKind,
    /// Maximum tracked flows per core.
    #[serde(default = "default_flows")]
    pub flows: usize,
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// Seconds without packets after which a flow is forgotten.
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
}

fn default_flows() -> usize {
    1 << 16
}

fn default_idle() -> u64 {
    600
}

impl IdsConfig {
    /// Parses and compiles the configured rules.
    pub fn build(&self) -> Result<RuleSet, NfError> {
        let mut sources = Vec::new();
        match (&self.rules_file, &self.rules_file_text) {
            (Some(path), Some(text)) => sources.push(RuleSource { name: path.clone(), text: text.clone() }),
            (Some(path), None) => {
                return Err(NfError::Param {
                    key: "rules_file".into(),
                    detail: format!("`{path}` was not read (the configuration loader reads rules files)"),
                })
            }
            _ => {}
        }
        for (i, r) in self.rules.iter().enumerate() {
            sources.push(RuleSource { name: format!("rules[{i}]"), text: r.clone() });
        }
        let mut vars = self.vars.clone();
        for v in ["HOME_NET", "EXTERNAL_NET"] {
            vars.entry(v.to_string()).or_insert_with(|| "any".to_string());
        }
        let key = if self.rules_file.is_some() { "rules_file" } else { "rules" };
        RuleSet::build(&sources, &vars, self.unknown_options, self.automaton)
            .map_err(|e| NfError::Param { key: key.into(), detail: e.to_string() })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct IdsCounters {
    packets: u64,
    bytes: u64,
    candidates: u64,
    alerts: u64,
    dropped: u64,
    passed: u64,
    table_full: u64,
    non_ip: u64,
}

/// Per-rule counts: alerts, drops, passes.
#[derive(Debug, Default, Clone, Copy)]
struct RuleCount {
    alerts: u64,
    drops: u64,
    passes: u64,
}

/// The IDS on one core.
#[derive(Debug)]
pub struct Ids {
    set: Arc<RuleSet>,
    ips: bool,
    start: u32,
    idle: Nanos,
    flows: FlowTable<IdsFlowEntry>,
    counters: IdsCounters,
    per_rule: Vec<RuleCount>,
    scratch: Scratch,
}

impl NetworkFunction for Ids {
    const KIND: &'static str = "ids";
    type Config = IdsConfig;

    fn init(config: &IdsConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let name = rt.name.to_string();
        let set = rt.global_read("rules", || {
            let set = config.build()?;
            for s in &set.skipped {
                log::warn!("ids {name}: {s}");
            }
            log::info!(
                "ids {name}: {} rules ({} alert, {} drop, {} pass), {} fast patterns, {} skipped options, automaton {} ({} KiB)",
                set.rules.len(),
                set.count(Action::Alert),
                set.count(Action::Drop),
                set.count(Action::Pass),
                set.pattern_rules.len(),
                set.skipped.len(),
                set.automaton_name(),
                set.memory() / 1024
            );
            Ok(set)
        })?;
        let idle = Nanos::from_secs(config.idle_timeout);
        let spec = TableSpec { capacity: config.flows, idle_timeout: idle, full_policy: config.full_policy };
        let flows = FlowTable::new(rt.arena, &format!("{}.flows", rt.name), spec)?;
        let n = set.rules.len();
        let scratch = Scratch::default();
        Ok(Ids {
            start: set.start(),
            set,
            ips: config.mode == Mode::Ips,
            idle,
            flows,
            counters: IdsCounters::default(),
            per_rule: vec![RuleCount::default(); n],
            scratch,
        })
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        let (mut core, mut flows) = self.parts();
        core.one(&mut flows, ctx.now, frame, meta)
    }

    /// Packets of different flow directions are scanned four at a time (see `scan`).
    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        let (mut core, mut flows) = self.parts();
        core.burst(&mut flows, ctx.now, burst);
    }

    /// The flow's automaton states (one per direction) and handshake tracking.
    fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        migrate::export(&[&self.flows], &[place], (tag::IDS, 1), ctx.now, |_, _| {}, out)
    }

    /// Automaton states are only meaningful for the same rules (same configuration); an id
    /// out of range here is refused (the scanner would restart it anyway).
    fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        let set = Arc::clone(&self.set);
        migrate::import(&mut [&mut self.flows], &[place], (tag::IDS, 1), ctx.now, bytes, |f, _, _| {
            if f.initiator > 1 {
                return Err(ImportError::Malformed("initiator"));
            }
            if f.ac.iter().any(|&s| !set.valid_state(s)) {
                return Err(ImportError::Config("automaton state of other rules"));
            }
            Ok(())
        })
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.flows.expire(ctx.now, SWEEP_PER_BURST, |_| {});
    }

    fn report(&self, out: &mut Report) {
        let c = &self.counters;
        out.counter("inspected", c.packets);
        out.counter("bytes", c.bytes);
        out.counter("candidates", c.candidates);
        out.counter("alerts", c.alerts);
        out.counter("dropped", c.dropped);
        out.counter("passed", c.passed);
        out.counter("table_full", c.table_full);
        out.counter("non_ip", c.non_ip);
        out.counter("skipped_options", self.set.skipped.len() as u64);
        for (n, r) in self.set.names.iter().zip(&self.per_rule) {
            for (name, v) in [(n.alerts, r.alerts), (n.drops, r.drops), (n.passes, r.passes)] {
                if v > 0 {
                    out.counter(name, v);
                }
            }
        }
        out.table("flows", StateDecl::PerFlow, self.flows.stats());
    }
}

impl Ids {
    fn parts(&mut self) -> (Core<'_>, crate::state::TableView<'_, IdsFlowEntry>) {
        let core = Core {
            set: &self.set,
            ips: self.ips,
            start: self.start,
            idle: self.idle,
            counters: &mut self.counters,
            per_rule: &mut self.per_rule,
            scratch: &mut self.scratch,
        };
        (core, self.flows.view())
    }

    /// The compiled rule set.
    pub fn rule_set(&self) -> &RuleSet {
        &self.set
    }
}
