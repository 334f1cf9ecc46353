//! The compiled rule set: parsed rules, the multi-pattern automaton over their fast patterns,
//! and the rules each pattern leads to. Built once per NF instance (off the fast path),
//! immutable, and shared by every core behind an `Arc`.

use std::collections::HashMap;

use aho_corasick::automaton::Automaton;
use aho_corasick::{dfa, nfa, Anchored, MatchKind, StartKind};
use serde::Deserialize;

use super::parse::{parse_rules, ParseError, Skipped, UnknownOptions};
use super::rule::{Action, Rule};
use super::spec::Vars;

/// Which automaton the prefilter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutomatonKind {
    /// A DFA up to [`AUTO_DFA_MAX_PATTERN_BYTES`] bytes of fast patterns, the contiguous NFA
    /// above.
    #[default]
    Auto,
    /// Always a DFA: one table lookup per byte, large for big pattern sets.
    Dfa,
    /// Always the contiguous NFA: compact, a few more steps per byte.
    Nfa,
}

/// Above this many bytes of distinct fast patterns, `auto` picks the contiguous NFA. A DFA
/// has at most one state per pattern byte and up to 1 KiB of transitions per state (4 bytes
/// per byte class); 10 k patterns of 8–20 bytes made a 59 MiB DFA here, built in 0.2 s, and
/// it scans 4–7 times faster than the NFA (BENCHMARKS.md).
pub const AUTO_DFA_MAX_PATTERN_BYTES: usize = 256 * 1024;

/// The prefilter automaton. Both kinds step one byte at a time, so the state between two
/// packets of a flow is a single [`StateID`].
#[derive(Debug)]
pub enum Matcher {
    /// No rule has a content: nothing to scan.
    Empty,
    Dfa(dfa::DFA),
    Nfa(nfa::contiguous::NFA),
}

/// Rule text from one source, before parsing.
#[derive(Debug, Clone)]
pub struct RuleSource {
    /// A path, or `rules[i]` for inline rules.
    pub name: String,
    pub text: String,
}

/// A rule set that failed to build.
#[derive(Debug)]
pub enum BuildError {
    Parse(ParseError),
    DuplicateSid { sid: u32, first: String, again: String },
    Automaton(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Parse(e) => write!(f, "{e}"),
            BuildError::DuplicateSid { sid, first, again } => {
                write!(f, "{again}: sid {sid} is already used at {first}; give every rule its own sid")
            }
            BuildError::Automaton(e) => write!(f, "building the pattern automaton: {e}"),
        }
    }
}

/// Counter names of one rule (built once, so reports allocate nothing).
#[derive(Debug, Clone, Copy)]
pub struct RuleNames {
    pub alerts: &'static str,
    pub drops: &'static str,
    pub passes: &'static str,
}

/// The immutable rule set.
#[derive(Debug)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub matcher: Matcher,
    /// Pattern id → rules whose fast pattern it is.
    pub pattern_rules: Vec<Vec<u32>>,
    /// Rules without content: checked on every packet.
    pub always: Vec<u32>,
    pub names: Vec<RuleNames>,
    pub skipped: Vec<Skipped>,
    /// The automaton states reachable from the start, computed on first use
    /// ([`RuleSet::valid_state`]).
    pub reachable: std::sync::OnceLock<std::collections::HashSet<u32>>,
}

impl RuleSet {
    /// Parses and compiles `sources`.
    pub fn build(
        sources: &[RuleSource],
        vars: &Vars,
        unknown: UnknownOptions,
        kind: AutomatonKind,
    ) -> Result<RuleSet, BuildError> {
        let mut rules = Vec::new();
        let mut skipped = Vec::new();
        for s in sources {
            rules.extend(
                parse_rules(&s.name, &s.text, vars, unknown, &mut skipped).map_err(BuildError::Parse)?,
            );
        }
        let mut sids: HashMap<u32, usize> = HashMap::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            if let Some(first) = sids.insert(r.sid, i) {
                let first = rules.get(first).map(|f| f.origin.to_string()).unwrap_or_default();
                return Err(BuildError::DuplicateSid { sid: r.sid, first, again: r.origin.to_string() });
            }
        }
        // One automaton pattern per distinct fast pattern, compared case-insensitively (the
        // automaton is ASCII-case-insensitive; exact case is checked on the candidates).
        let mut by_bytes: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut pattern_rules: Vec<Vec<u32>> = Vec::new();
        let mut always = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            let idx = u32::try_from(i).map_err(|_| BuildError::Automaton("more than 2^32 rules".into()))?;
            let Some(fp) = r.fast.and_then(|f| r.contents.get(f)) else {
                always.push(idx);
                continue;
            };
            let key = fp.bytes.to_ascii_lowercase();
            let pid = *by_bytes.entry(key.clone()).or_insert_with(|| {
                patterns.push(key);
                pattern_rules.push(Vec::new());
                patterns.len() - 1
            });
            if let Some(list) = pattern_rules.get_mut(pid) {
                list.push(idx);
            }
        }
        let use_dfa = match kind {
            AutomatonKind::Auto => patterns.iter().map(Vec::len).sum::<usize>() <= AUTO_DFA_MAX_PATTERN_BYTES,
            AutomatonKind::Dfa => true,
            AutomatonKind::Nfa => false,
        };
        let matcher = if patterns.is_empty() {
            Matcher::Empty
        } else if use_dfa {
            let a = dfa::DFA::builder()
                .match_kind(MatchKind::Standard)
                .start_kind(StartKind::Unanchored)
                .ascii_case_insensitive(true)
                .build(&patterns)
                .map_err(|e| BuildError::Automaton(e.to_string()))?;
            Matcher::Dfa(a)
        } else {
            let a = nfa::contiguous::NFA::builder()
                .match_kind(MatchKind::Standard)
                .ascii_case_insensitive(true)
                .build(&patterns)
                .map_err(|e| BuildError::Automaton(e.to_string()))?;
            Matcher::Nfa(a)
        };
        // Leaked once per rule set: report counters are named by `&'static str`, and a rule
        // set lives as long as the appliance runs.
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let names = rules
            .iter()
            .map(|r| RuleNames {
                alerts: leak(format!("sid_{}_alerts", r.sid)),
                drops: leak(format!("sid_{}_drops", r.sid)),
                passes: leak(format!("sid_{}_passes", r.sid)),
            })
            .collect();
        Ok(RuleSet { rules, matcher, pattern_rules, always, names, skipped, reachable: Default::default() })
    }

    /// The automaton's start state, stored in new flows (0 when there is no automaton).
    pub fn start(&self) -> u32 {
        let s = match &self.matcher {
            Matcher::Empty => return 0,
            Matcher::Dfa(a) => a.start_state(Anchored::No),
            Matcher::Nfa(a) => a.start_state(Anchored::No),
        };
        s.map_or(0, |id| id.as_u32())
    }

    /// Whether `stored` is a state the automaton reaches from its start: a flow's state
    /// imported from another instance must be one, since the scanner would otherwise index
    /// the transition table with it. The reachable set is built on first use, off the packet
    /// path (a walk over every state and byte value).
    pub fn valid_state(&self, stored: u32) -> bool {
        self.reachable
            .get_or_init(|| match &self.matcher {
                Matcher::Empty => std::iter::once(0).collect(),
                Matcher::Dfa(a) => reachable(a),
                Matcher::Nfa(a) => reachable(a),
            })
            .contains(&stored)
    }

    /// Automaton memory in bytes.
    pub fn memory(&self) -> usize {
        match &self.matcher {
            Matcher::Empty => 0,
            Matcher::Dfa(a) => a.memory_usage(),
            Matcher::Nfa(a) => a.memory_usage(),
        }
    }

    pub fn automaton_name(&self) -> &'static str {
        match &self.matcher {
            Matcher::Empty => "none",
            Matcher::Dfa(_) => "dfa",
            Matcher::Nfa(_) => "contiguous_nfa",
        }
    }

    pub fn count(&self, action: Action) -> usize {
        self.rules.iter().filter(|r| r.action == action).count()
    }
}

/// Every state of `a` reachable from its unanchored start state.
fn reachable<A: Automaton>(a: &A) -> std::collections::HashSet<u32> {
    let mut seen = std::collections::HashSet::new();
    let Ok(start) = a.start_state(Anchored::No) else { return seen };
    let mut todo = vec![start];
    seen.insert(start.as_u32());
    while let Some(s) = todo.pop() {
        for b in 0..=255u8 {
            let next = a.next_state(Anchored::No, s, b);
            if seen.insert(next.as_u32()) {
                todo.push(next);
            }
        }
    }
    seen
}

/// One fast-pattern hit while scanning: the rule and where the match started, relative to the
/// current payload (negative: it began in an earlier packet of the same flow direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: u32,
    pub start: i64,
}
