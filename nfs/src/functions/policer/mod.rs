//! `policer`: QoS metering with RFC 2697 srTCM or RFC 2698 trTCM token buckets and an action
//! per colour: pass, remark the DSCP (IPv4 with an incremental header-checksum update, IPv6 in
//! the traffic class; TCP/UDP checksums do not cover it), or drop.
//!
//! - **Classes** are picked by the first matching rule ([`classify`]: protocol, source and
//!   destination prefixes, port ranges, DSCP, ingress port); unmatched packets pass unmetered.
//! - **Buckets** are per class or, with `per = "flow" | "src" | "dst"`, one per flow direction
//!   or host in a bounded per-core table ([`flows`]) with idle expiry on the runtime clock.
//!   When that table is full a new key is metered by the class bucket, dropped, or evicts the
//!   least recently used bucket (`on_full`), always counted.
//! - **Colour-aware** classes (`aware = true`) take the packet's pre-colour from its DSCP
//!   (AF drop precedence by default, or explicit `green_dscp`/`yellow_dscp`/`red_dscp` lists)
//!   and apply the colour-aware rules of RFC 2697 §3 / RFC 2698 §3: a packet is never
//!   coloured better than it arrived.
//!
//! Rates are **per core**: each core owns its buckets outright, so nothing is shared on the
//! packet path. With RSS spreading a class over N cores the aggregate limit is N × the
//! configured rate (configure rate / N for an appliance-wide limit); per-flow and per-host
//! buckets are exact as long as a flow (or host) stays on one core.
//!
//! Scale-out: per-flow buckets move with their flow (`migrate.rs`); class and per-host buckets
//! stay with their instance.
//!
//! Malformed packets never panic: a remark that does not fit the frame drops it with the
//! rewrite's reason.

pub mod classify;
pub mod flows;
pub mod meter;
mod migrate;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_flows;

use crate::frame::Frame;
use serde::Deserialize;

use self::classify::{Rule, RuleConfig};
use self::flows::{bucket_hash, bucket_key, BucketEntry, OnFull, Per};
use self::meter::{Colour, MeterState, Profile};
use crate::drop::DropReason;
use crate::nf::{Burst, Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::ipv6::Ipv6Packet;
use crate::packet::{rewrite, L3Kind, Meta};
use crate::state::{FlowTable, FullPolicy, StateDecl, TableSpec};
use crate::time::Nanos;

/// Expired buckets reclaimed per class per housekeeping call (bounded work per burst).
const SWEEP_PER_BURST: usize = 64;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    Packets,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Action {
    Pass,
    Remark { dscp: u8 },
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    pub name: String,
    #[serde(default = "unit_bytes")]
    pub unit: Unit,
    /// Committed rate (units/s) and bursts. `pir`/`pbs` select trTCM; `ebs` selects srTCM.
    pub cir: u64,
    pub cbs: u64,
    #[serde(default)]
    pub ebs: u64,
    pub pir: Option<u64>,
    pub pbs: Option<u64>,
    pub green: Action,
    pub yellow: Action,
    pub red: Action,
    /// What gets its own bucket.
    #[serde(default)]
    pub per: Per,
    /// Maximum buckets per core when `per` is not `class`.
    #[serde(default = "default_flows")]
    pub flows: usize,
    /// Seconds a per-flow or per-host bucket lives without packets.
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
    #[serde(default)]
    pub on_full: OnFull,
    /// Colour-aware metering: the pre-colour comes from the DSCP.
    #[serde(default)]
    pub aware: bool,
    #[serde(default)]
    pub green_dscp: Vec<u8>,
    #[serde(default)]
    pub yellow_dscp: Vec<u8>,
    #[serde(default)]
    pub red_dscp: Vec<u8>,
}

fn unit_bytes() -> Unit {
    Unit::Bytes
}

fn default_flows() -> usize {
    65_536
}

fn default_idle() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicerConfig {
    /// `[[nf.class]]` tables, as the firewall's `[[nf.rule]]`.
    #[serde(rename = "class")]
    pub classes: Vec<ClassConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug)]
struct Class {
    name: String,
    unit: Unit,
    profile: Profile,
    /// The class bucket (also the fallback of a full per-flow table).
    state: MeterState,
    actions: [Action; 3],
    per: Per,
    /// Per-flow or per-host buckets (`per != class`).
    buckets: Option<FlowTable<BucketEntry>>,
    idle: Nanos,
    on_full: OnFull,
    /// Pre-colour by DSCP (colour-aware classes only).
    precolour: Option<[Colour; 64]>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counters {
    /// Packets coloured green, yellow, red.
    coloured: [u64; 3],
    remarked: u64,
    /// Dropped by a colour's `drop` action.
    dropped: u64,
    unclassified: u64,
    /// Per-flow or per-host buckets created.
    buckets_new: u64,
    /// Packets whose new bucket did not fit (metered by the class bucket or dropped).
    table_full: u64,
}

#[derive(Debug)]
pub struct Policer {
    rules: Vec<Rule>,
    classes: Vec<Class>,
    /// Some rule matches on DSCP or some class is colour-aware: read the DSCP first.
    need_dscp: bool,
    counters: Counters,
}

fn param(key: String, detail: &str) -> NfError {
    NfError::Param { key, detail: detail.to_string() }
}

/// RFC 2597 AF drop precedence: AFx1 green, AFx2 yellow, AFx3 red; everything else green.
fn af_precolour() -> [Colour; 64] {
    let mut map = [Colour::Green; 64];
    for x in 1..=4u8 {
        for (y, c) in [(2u8, Colour::Yellow), (3, Colour::Red)] {
            if let Some(m) = map.get_mut(usize::from(8 * x + 2 * y)) {
                *m = c;
            }
        }
    }
    map
}

fn precolour(i: usize, c: &ClassConfig) -> Result<Option<[Colour; 64]>, NfError> {
    let lists = [
        (&c.green_dscp, Colour::Green, "green_dscp"),
        (&c.yellow_dscp, Colour::Yellow, "yellow_dscp"),
        (&c.red_dscp, Colour::Red, "red_dscp"),
    ];
    let any_list = lists.iter().any(|(l, _, _)| !l.is_empty());
    if !c.aware {
        if any_list {
            return Err(param(format!("class[{i}].aware"), "DSCP colour lists need `aware = true`"));
        }
        return Ok(None);
    }
    if !any_list {
        return Ok(Some(af_precolour()));
    }
    // Explicit lists: unlisted code points are green (as colour-blind metering treats all).
    let mut map = [Colour::Green; 64];
    let mut seen = [false; 64];
    for (list, colour, key) in lists {
        for &d in list {
            let (Some(m), Some(s)) = (map.get_mut(usize::from(d)), seen.get_mut(usize::from(d))) else {
                return Err(param(format!("class[{i}].{key}"), "DSCP is 0..=63"));
            };
            if *s {
                return Err(param(
                    format!("class[{i}].{key}"),
                    "this DSCP is already in another colour list",
                ));
            }
            *s = true;
            *m = colour;
        }
    }
    Ok(Some(map))
}

fn class(i: usize, c: &ClassConfig, rt: &mut InitCtx<'_>) -> Result<Class, NfError> {
    for (a, what) in [(c.green, "green"), (c.yellow, "yellow"), (c.red, "red")] {
        if let Action::Remark { dscp } = a {
            if dscp > 63 {
                return Err(param(format!("class[{i}].{what}.dscp"), "DSCP is 0..=63"));
            }
        }
    }
    let profile = match (c.pir, c.pbs) {
        (Some(pir), Some(pbs)) => {
            if pir < c.cir {
                return Err(param(format!("class[{i}].pir"), "pir must be >= cir (RFC 2698)"));
            }
            if c.ebs != 0 {
                return Err(param(format!("class[{i}].ebs"), "ebs is for srTCM; a trTCM class has pir/pbs"));
            }
            Profile::Tr { pir, pbs, cir: c.cir, cbs: c.cbs }
        }
        (None, None) => Profile::Sr { cir: c.cir, cbs: c.cbs, ebs: c.ebs },
        _ => return Err(param(format!("class[{i}]"), "set both `pir` and `pbs` for trTCM, or neither")),
    };
    let idle = Nanos::from_secs(c.idle_timeout);
    let buckets = if c.per == Per::Class {
        None
    } else {
        if c.flows == 0 {
            return Err(param(format!("class[{i}].flows"), "a per-flow class needs at least 1 bucket"));
        }
        if c.idle_timeout == 0 {
            return Err(param(format!("class[{i}].idle_timeout"), "must be at least 1 second"));
        }
        let full_policy = if c.on_full == OnFull::Evict { FullPolicy::EvictLru } else { FullPolicy::Refuse };
        let spec = TableSpec { capacity: c.flows, idle_timeout: idle, full_policy };
        Some(FlowTable::new(rt.arena, &format!("{}.{}.buckets", rt.name, c.name), spec)?)
    };
    Ok(Class {
        name: c.name.clone(),
        unit: c.unit,
        profile,
        state: profile.full(Nanos(0)),
        actions: [c.green, c.yellow, c.red],
        per: c.per,
        buckets,
        idle,
        on_full: c.on_full,
        precolour: precolour(i, c)?,
    })
}

impl NetworkFunction for Policer {
    const KIND: &'static str = "policer";
    type Config = PolicerConfig;

    fn init(config: &PolicerConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let names: Vec<&str> = config.classes.iter().map(|c| c.name.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            if names.get(..i).is_some_and(|before| before.contains(n)) {
                return Err(param(format!("class[{i}].name"), "two classes have this name"));
            }
        }
        let classes =
            config.classes.iter().enumerate().map(|(i, c)| class(i, c, rt)).collect::<Result<Vec<_>, _>>()?;
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::new(i, r, &names, rt))
            .collect::<Result<Vec<_>, _>>()?;
        let need_dscp =
            rules.iter().any(|r| r.dscp.is_some()) || classes.iter().any(|c| c.precolour.is_some());
        Ok(Policer { rules, classes, need_dscp, counters: Counters::default() })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        // Touch every active packet's bucket slot in each per-flow table before metering any
        // of them, so their cache misses overlap (see `TableView::prefetch`). A packet of
        // another class costs one wasted load per table.
        let mut touched = 0u32;
        for class in &self.classes {
            if let Some(t) = &class.buckets {
                for &i in burst.active {
                    if let Some(m) = burst.metas.get(usize::from(i)) {
                        touched ^= t.prefetch(bucket_hash(class.per, m));
                    }
                }
            }
        }
        std::hint::black_box(touched);
        burst.for_each(|frame, meta| self.process_packet(ctx, frame, meta));
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        let dscp = if self.need_dscp { dscp_of(frame, meta) } else { None };
        let hit = self.rules.iter().find(|r| r.matches(meta, dscp));
        let Some(class) = hit.and_then(|r| self.classes.get_mut(r.class)) else {
            self.counters.unclassified += 1;
            return Verdict::Continue;
        };
        let c = &mut self.counters;
        let size = match class.unit {
            Unit::Bytes => u64::from(meta.ip_len()),
            Unit::Packets => 1,
        };
        let pre = match (&class.precolour, dscp) {
            (Some(map), Some(d)) => map.get(usize::from(d)).copied().unwrap_or(Colour::Green),
            _ => Colour::Green,
        };
        let colour = match class.mark(ctx.now, meta, size, pre, c) {
            Some(colour) => colour,
            None => return Verdict::Drop(DropReason::TableFull),
        };
        let idx = colour.index();
        if let Some(n) = c.coloured.get_mut(idx) {
            *n += 1;
        }
        match class.actions.get(idx).copied().unwrap_or(Action::Pass) {
            Action::Pass => Verdict::Continue,
            Action::Drop => {
                c.dropped += 1;
                Verdict::Drop(DropReason::Policed)
            }
            Action::Remark { dscp } => {
                if !meta.is_ip() {
                    return Verdict::Continue;
                }
                match rewrite::set_dscp(frame, meta, dscp) {
                    Ok(()) => {
                        c.remarked += 1;
                        Verdict::Continue
                    }
                    Err(reason) => Verdict::Drop(reason),
                }
            }
        }
    }

    /// The flow's buckets in every `per = "flow"` class (`migrate.rs`).
    fn export_flow(&mut self, flow: &crate::flow::FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        self.export(flow, ctx, out)
    }

    fn import_flow(
        &mut self,
        flow: &crate::flow::FlowKey,
        ctx: &Ctx,
        bytes: &[u8],
    ) -> Result<(), crate::nf::ImportError> {
        self.import(flow, ctx, bytes)
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        for t in self.classes.iter_mut().filter_map(|c| c.buckets.as_mut()) {
            t.expire(ctx.now, SWEEP_PER_BURST, |_| {});
        }
    }

    fn report(&self, out: &mut Report) {
        let c = &self.counters;
        out.counter("green", c.coloured[0]);
        out.counter("yellow", c.coloured[1]);
        out.counter("red", c.coloured[2]);
        out.counter("remarked", c.remarked);
        out.counter("dropped", c.dropped);
        out.counter("unclassified", c.unclassified);
        out.counter("buckets_new", c.buckets_new);
        out.counter("table_full", c.table_full);
        for class in &self.classes {
            if let Some(t) = &class.buckets {
                out.table(&format!("{}.buckets", class.name), StateDecl::PerFlow, t.stats());
            }
        }
    }
}

impl Class {
    /// Colours a packet with its bucket; `None` if it has none and the class drops such packets.
    #[inline]
    fn mark(&mut self, now: Nanos, meta: &Meta, size: u64, pre: Colour, c: &mut Counters) -> Option<Colour> {
        let Some(table) = self.buckets.as_mut() else {
            return Some(self.profile.mark(&mut self.state, now, size, pre));
        };
        let (key, hash) = bucket_key(self.per, meta);
        if let Some(e) = table.find_touch(hash, &key, now, self.idle) {
            return Some(self.profile.mark(&mut e.value, now, size, pre));
        }
        match table.insert(hash, key, self.profile.full(now), now) {
            Ok(idx) => {
                c.buckets_new += 1;
                // The slot was just written: it is there until the next insert or remove.
                let st = table.get_mut(idx)?;
                Some(self.profile.mark(st, now, size, pre))
            }
            Err(_) => {
                c.table_full += 1;
                match self.on_full {
                    OnFull::Drop => None,
                    OnFull::Class | OnFull::Evict => Some(self.profile.mark(&mut self.state, now, size, pre)),
                }
            }
        }
    }
}

/// The DSCP of an IP packet (None for ARP or a header that does not fit).
#[inline]
fn dscp_of(frame: &[u8], meta: &Meta) -> Option<u8> {
    let ip = frame.get(usize::from(meta.l3)..usize::from(meta.l3_end))?;
    match meta.l3_kind {
        L3Kind::Ipv4 => Ipv4Packet::new_checked(ip).ok().map(|p| p.dscp()),
        L3Kind::Ipv6 => Ipv6Packet::new_checked(ip).ok().map(|p| p.dscp()),
        L3Kind::Arp => None,
    }
}
