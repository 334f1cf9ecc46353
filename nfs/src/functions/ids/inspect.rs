//! The packet path: admit (flow lookup and handshake tracking), scan (the automaton from the
//! flow direction's stored state), evaluate (candidate rules), decide (actions, counters, log).
//!
//! A burst is inspected in groups of up to [`LANES`] packets of distinct flow directions,
//! scanned together; a packet of a direction already in the group closes the group first, so
//! every packet starts from the state its predecessor in the same direction left.

use std::net::{Ipv4Addr, Ipv6Addr};

use aho_corasick::automaton::Automaton;

use super::content::{self, Pinned};
use super::flows::{self, IdsFlow, IdsFlowEntry};
use super::rule::{Action, FlowFacts, Rule};
use super::ruleset::{Hit, Matcher, RuleSet};
use super::scan::{scan, scan4, state_of, LANES};
use super::{IdsCounters, RuleCount};
use crate::drop::DropReason;
use crate::flow::FAMILY_V4;
use crate::nf::{Burst, Verdict};
use crate::packet::Meta;
use crate::state::TableView;
use crate::time::Nanos;

/// One packet's working lists, kept between packets so they do not allocate once warm.
#[derive(Debug, Default)]
pub struct Lane {
    candidates: Vec<u32>,
    spanning: Vec<Hit>,
    matched: Vec<u32>,
}

impl Lane {
    fn clear(&mut self) {
        self.candidates.clear();
        self.spanning.clear();
        self.matched.clear();
    }

    /// Sorts a fast-pattern hit into candidates (wholly in this payload) or spanning hits.
    #[inline]
    fn hit(&mut self, pattern_rules: &[Vec<u32>], pid: usize, start: i64) {
        for &rule in pattern_rules.get(pid).map_or(&[][..], Vec::as_slice) {
            if start >= 0 {
                self.candidates.push(rule);
            } else {
                self.spanning.push(Hit { rule, start });
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct Scratch {
    lanes: [Lane; LANES],
}

/// A packet admitted to inspection: what `flow` needs, its direction's side and stored state.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    /// Index in the burst.
    idx: usize,
    facts: FlowFacts,
    side: usize,
    state: u32,
}

/// The NF's parts the packet path needs, borrowed apart from its flow table.
#[derive(Debug)]
pub struct Core<'a> {
    pub set: &'a RuleSet,
    pub ips: bool,
    pub start: u32,
    pub idle: Nanos,
    pub counters: &'a mut IdsCounters,
    pub per_rule: &'a mut [RuleCount],
    pub scratch: &'a mut Scratch,
}

fn payload<'f>(frame: &'f [u8], meta: &Meta) -> &'f [u8] {
    frame.get(usize::from(meta.payload)..usize::from(meta.l3_end)).unwrap_or(&[])
}

impl Core<'_> {
    /// One packet.
    pub fn one(
        &mut self,
        flows: &mut TableView<'_, IdsFlowEntry>,
        now: Nanos,
        frame: &[u8],
        meta: &Meta,
    ) -> Verdict {
        match self.admit(flows, now, meta, 0) {
            Ok(a) => self.finish_one(flows, now, a, frame, meta),
            Err(v) => v,
        }
    }

    /// The active packets of a burst, up to [`LANES`] scanned at once.
    pub fn burst<F: AsMut<[u8]>>(
        &mut self,
        flows: &mut TableView<'_, IdsFlowEntry>,
        now: Nanos,
        burst: &mut Burst<'_, F>,
    ) {
        let mut group: Vec<Admitted> = Vec::with_capacity(LANES);
        for &i in burst.active {
            let i = usize::from(i);
            let Some(meta) = burst.metas.get(i) else { continue };
            let clash = group
                .iter()
                .any(|g| burst.metas.get(g.idx).is_some_and(|m| m.key == meta.key && m.dir == meta.dir));
            if clash {
                self.flush(flows, now, burst, &group);
                group.clear();
            }
            let Some(meta) = burst.metas.get(i) else { continue };
            match self.admit(flows, now, meta, i) {
                Ok(a) => group.push(a),
                Err(v) => {
                    if let Some(out) = burst.verdicts.get_mut(i) {
                        *out = v;
                    }
                }
            }
            if group.len() == LANES {
                self.flush(flows, now, burst, &group);
                group.clear();
            }
        }
        self.flush(flows, now, burst, &group);
    }

    /// Scans, stores and evaluates a group of admitted packets.
    fn flush<F: AsMut<[u8]>>(
        &mut self,
        flows: &mut TableView<'_, IdsFlowEntry>,
        now: Nanos,
        burst: &mut Burst<'_, F>,
        group: &[Admitted],
    ) {
        let four: Option<[Admitted; LANES]> = group.try_into().ok();
        let frames = four.and_then(|g| disjoint(burst.frames, g.map(|a| a.idx)));
        // Only a DFA gains: the NFA's failure-link loops branch too much to overlap.
        let (Some(g), Some(frames), Matcher::Dfa(_)) = (four, frames, &self.set.matcher) else {
            for a in group {
                let (Some(frame), Some(meta)) = (burst.frames.get_mut(a.idx), burst.metas.get(a.idx)) else {
                    continue;
                };
                let v = self.finish_one(flows, now, *a, frame.as_mut(), meta);
                if let Some(out) = burst.verdicts.get_mut(a.idx) {
                    *out = v;
                }
            }
            return;
        };
        let metas = g.map(|a| burst.metas.get(a.idx).copied().unwrap_or_default());
        let frames: [&[u8]; LANES] = frames.map(|f| &*f.as_mut());
        let mut payloads: [&[u8]; LANES] = [&[]; LANES];
        for (p, (f, m)) in payloads.iter_mut().zip(frames.iter().zip(&metas)) {
            *p = payload(f, m);
        }
        let states = g.map(|a| a.state);
        let ends = {
            let (set, lanes) = (self.set, &mut self.scratch.lanes);
            lanes.iter_mut().for_each(Lane::clear);
            match &set.matcher {
                Matcher::Dfa(d) => scan_group(d, &set.pattern_rules, lanes, states, payloads),
                Matcher::Nfa(n) => scan_group(n, &set.pattern_rules, lanes, states, payloads),
                Matcher::Empty => states,
            }
        };
        for (lane, ((a, end), (m, p))) in g.iter().zip(ends).zip(metas.iter().zip(payloads)).enumerate() {
            store(flows, now, m, a.side, end);
            let v = self.evaluate(lane, now, m, p, a.facts);
            if let Some(out) = burst.verdicts.get_mut(a.idx) {
                *out = v;
            }
        }
    }

    fn finish_one(
        &mut self,
        flows: &mut TableView<'_, IdsFlowEntry>,
        now: Nanos,
        a: Admitted,
        frame: &[u8],
        meta: &Meta,
    ) -> Verdict {
        let p = payload(frame, meta);
        let end = {
            let (set, [lane, ..]) = (self.set, &mut self.scratch.lanes);
            lane.clear();
            match &set.matcher {
                Matcher::Empty => a.state,
                Matcher::Dfa(d) => scan_lane(d, &set.pattern_rules, lane, a.state, p),
                Matcher::Nfa(n) => scan_lane(n, &set.pattern_rules, lane, a.state, p),
            }
        };
        store(flows, now, meta, a.side, end);
        self.evaluate(0, now, meta, p, a.facts)
    }

    /// Looks the flow up (or creates it) and tracks the handshake.
    #[inline]
    fn admit(
        &mut self,
        flows: &mut TableView<'_, IdsFlowEntry>,
        now: Nanos,
        meta: &Meta,
        idx: usize,
    ) -> Result<Admitted, Verdict> {
        if !meta.is_ip() {
            self.counters.non_ip += 1;
            return Err(Verdict::Continue);
        }
        self.counters.packets += 1;
        self.counters.bytes += u64::from(meta.payload_len());
        let flow = match flows.find_touch(meta.hash, &meta.key, now, self.idle) {
            Some(e) => {
                e.value.track(meta.dir, meta.proto, meta.tcp_flags);
                e.value
            }
            None => {
                let v = IdsFlow::new(meta.dir, meta.proto, meta.tcp_flags, self.start);
                if flows.insert(meta.hash, meta.key, v, now).is_err() {
                    self.counters.table_full += 1;
                    return Err(Verdict::Drop(DropReason::TableFull));
                }
                v
            }
        };
        let side = flows::side(meta.dir);
        let facts = FlowFacts { established: flow.established(), to_server: flow.to_server(meta.dir) };
        Ok(Admitted { idx, facts, side, state: flow.ac.get(side).copied().unwrap_or(self.start) })
    }

    /// Checks the candidates of `lane` and decides.
    fn evaluate(
        &mut self,
        lane: usize,
        now: Nanos,
        meta: &Meta,
        payload: &[u8],
        facts: FlowFacts,
    ) -> Verdict {
        let set = self.set;
        let Some(l) = self.scratch.lanes.get_mut(lane) else { return Verdict::Continue };
        l.candidates.sort_unstable();
        l.candidates.dedup();
        let header_ok = |r: &Rule| r.header_matches(meta) && r.flow_matches(facts);
        for &i in l.candidates.iter().chain(&set.always) {
            self.counters.candidates += 1;
            if set
                .rules
                .get(i as usize)
                .is_some_and(|r| header_ok(r) && content::matches(&r.contents, payload, None))
            {
                l.matched.push(i);
            }
        }
        for h in &l.spanning {
            if l.matched.contains(&h.rule) {
                continue;
            }
            self.counters.candidates += 1;
            let hit = set.rules.get(h.rule as usize).is_some_and(|r| {
                let pin = r.fast.map(|content| Pinned { content, start: h.start });
                pin.is_some() && header_ok(r) && content::matches(&r.contents, payload, pin)
            });
            if hit {
                l.matched.push(h.rule);
            }
        }
        if l.matched.is_empty() {
            return Verdict::Continue;
        }
        self.decide(lane, now, meta)
    }

    /// Actions of the matched rules (Snort order: pass, then drop and alert).
    fn decide(&mut self, lane: usize, now: Nanos, meta: &Meta) -> Verdict {
        let set = self.set;
        let Some(l) = self.scratch.lanes.get(lane) else { return Verdict::Continue };
        let matched = &l.matched;
        let is_pass = |i: &u32| set.rules.get(*i as usize).is_some_and(|r| r.action == Action::Pass);
        if matched.iter().any(is_pass) {
            for i in matched.iter().filter(|i| is_pass(i)) {
                if let Some(c) = self.per_rule.get_mut(*i as usize) {
                    c.passes += 1;
                }
            }
            self.counters.passed += 1;
            return Verdict::Continue;
        }
        let mut verdict = Verdict::Continue;
        for &i in matched {
            let (Some(r), Some(c)) = (set.rules.get(i as usize), self.per_rule.get_mut(i as usize)) else {
                continue;
            };
            c.alerts += 1;
            self.counters.alerts += 1;
            let dropping = r.action == Action::Drop && self.ips;
            if dropping {
                c.drops += 1;
                verdict = Verdict::Drop(DropReason::IdsRule);
            }
            log::warn!(
                "ids {}.{:09} [1:{}:{}] \"{}\" {} {}:{} -> {}:{} {}",
                now.0 / 1_000_000_000,
                now.0 % 1_000_000_000,
                r.sid,
                r.rev,
                r.msg,
                r.proto.name(),
                Addr(meta.key.family, meta.src),
                meta.sport,
                Addr(meta.key.family, meta.dst),
                meta.dport,
                if dropping { "dropped" } else { "alert" }
            );
        }
        if verdict != Verdict::Continue {
            self.counters.dropped += 1;
        }
        verdict
    }
}

/// The frames at four distinct indices (`<[T]>::get_disjoint_mut` needs Rust 1.86; the
/// workspace supports 1.85).
fn disjoint<F>(frames: &mut [F], idx: [usize; LANES]) -> Option<[&mut F; LANES]> {
    let mut out: [Option<&mut F>; LANES] = [None, None, None, None];
    for (i, f) in frames.iter_mut().enumerate() {
        if let Some(slot) = idx.iter().position(|&x| x == i).and_then(|k| out.get_mut(k)) {
            *slot = Some(f);
        }
    }
    let [a, b, c, d] = out;
    Some([a?, b?, c?, d?])
}

/// Writes a direction's automaton state back to its flow (gone if evicted meanwhile).
fn store(flows: &mut TableView<'_, IdsFlowEntry>, now: Nanos, meta: &Meta, side: usize, state: u32) {
    if let Some(s) =
        flows.find(meta.hash, &meta.key, now).and_then(|i| flows.get_mut(i)).and_then(|f| f.ac.get_mut(side))
    {
        *s = state;
    }
}

fn scan_lane<A: Automaton>(
    a: &A,
    pattern_rules: &[Vec<u32>],
    lane: &mut Lane,
    state: u32,
    payload: &[u8],
) -> u32 {
    let Some(from) = state_of(a, state) else { return state };
    scan(a, from, payload, |pid, start| lane.hit(pattern_rules, pid, start)).as_u32()
}

fn scan_group<A: Automaton>(
    a: &A,
    pattern_rules: &[Vec<u32>],
    lanes: &mut [Lane; LANES],
    states: [u32; LANES],
    payloads: [&[u8]; LANES],
) -> [u32; LANES] {
    let mut from = [aho_corasick::automaton::StateID::ZERO; LANES];
    for (f, s) in from.iter_mut().zip(states) {
        match state_of(a, s) {
            Some(id) => *f = id,
            None => return states,
        }
    }
    let ends = scan4(a, from, payloads, |lane, pid, start| {
        if let Some(l) = lanes.get_mut(lane) {
            l.hit(pattern_rules, pid, start);
        }
    });
    ends.map(|s| s.as_u32())
}

/// An address for log lines.
struct Addr(u8, [u8; 16]);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == FAMILY_V4 {
            let [a, b, c, d, ..] = self.1;
            write!(f, "{}", Ipv4Addr::new(a, b, c, d))
        } else {
            write!(f, "[{}]", Ipv6Addr::from(self.1))
        }
    }
}
