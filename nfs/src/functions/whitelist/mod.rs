//! `udp_whitelist`: admits inbound UDP only from remote endpoints an inside host contacted
//! first, against reflection and amplification attacks.
//!
//! In a reflection attack the attacker sends small requests to open DNS, NTP, memcached, …
//! servers with the victim's address as the source, and the servers' (much larger) responses
//! flood the victim. The victim never sent those requests, so a middlebox that remembers the
//! requests inside hosts really sent can drop the responses nobody asked for (the UDP
//! whitelister of SNF §8, after Bohatei's UDP-flood defence).
//!
//! Promises:
//! - An outbound UDP datagram (from `inside`, or from any port but `outside`) records or
//!   refreshes its flow — the exact 5-tuple — in a per-flow request table with an idle timeout
//!   on the runtime clock.
//! - An inbound UDP datagram passes only if the reverse of its 5-tuple was requested by the
//!   inside endpoint it is addressed to and has not timed out, or if its inside destination
//!   port, remote source prefix or inside destination prefix is on an allow list. Everything
//!   else is dropped as `unsolicited` and counted by the reflector class of its source port.
//! - Inbound later fragments carry no ports and cannot be matched: dropped as `fragment`
//!   unless `allow_later_fragments` (the bulk of an amplified response is often fragments).
//! - Non-UDP and non-IP traffic passes untouched (counted as `not_udp`).
//! - The NF reads only the parsed metadata, never the frame bytes, so no packet can make it
//!   panic.
//!
//! Scale-out: a flow's request entry moves with the flow (`export_flow`/`import_flow`), so
//! responses keep passing on the instance the flow moved to.
//!
//! State is per core. Both directions of a flow share a symmetric hash, so with symmetric RSS
//! (or nflet's software steering) a response lands on the core that recorded its request.

mod classes;
#[cfg(test)]
mod tests;

use crate::frame::Frame;
use bytemuck::{Pod, Zeroable};
use serde::Deserialize;

pub use classes::ReflectorClass;

use crate::addr::{OneOrMany, PortRange, Prefix};
use crate::drop::DropReason;
use crate::flow::{Dir, FlowKey, FAMILY_V4, FAMILY_V6};
use crate::ids::PortId;
use crate::nf::ImportError;
use crate::nf::{Burst, Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::{Fragment, IpProtocol, L3Kind, Meta};
use crate::state::migrate::{self, Place};
use crate::state::wire::tag;
use crate::state::{FlowTable, FullPolicy, StateDecl, TableSpec, TableView};
use crate::time::Nanos;

/// Expired requests reclaimed per housekeeping call (bounded work per burst).
const SWEEP_PER_BURST: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhitelistConfig {
    /// The port facing the untrusted network: traffic arriving here is inbound, all other
    /// traffic outbound. Give exactly one of `outside` and `inside`.
    #[serde(default)]
    pub outside: Option<String>,
    /// The port facing the protected hosts: traffic arriving here is outbound, all other
    /// traffic inbound.
    #[serde(default)]
    pub inside: Option<String>,
    /// Seconds a request keeps its flow open for responses (RFC 4787 REQ-5 asks UDP state
    /// to live at least 2 minutes).
    #[serde(default = "default_idle")]
    pub idle_timeout_s: u64,
    /// Whether admitted responses also refresh the flow's timeout. Off: only inside hosts
    /// keep a flow open.
    #[serde(default)]
    pub inbound_refreshes: bool,
    /// Maximum remembered flows per core.
    #[serde(default = "default_flows")]
    pub flows: usize,
    /// What a full request table does with a new request.
    #[serde(default = "default_full")]
    pub full_policy: FullPolicy,
    /// Inside destination ports always admitted (services the inside hosts offer).
    #[serde(default)]
    pub allow_dports: OneOrMany<PortRange>,
    /// Remote source prefixes always admitted (trusted peers).
    #[serde(default)]
    pub allow_src: OneOrMany<Prefix>,
    /// Inside destination prefixes always admitted (hosts outside the whitelister's care).
    #[serde(default)]
    pub allow_dst: OneOrMany<Prefix>,
    /// Admit inbound UDP fragments after the first (they carry no ports to match).
    #[serde(default)]
    pub allow_later_fragments: bool,
}

fn default_idle() -> u64 {
    120
}

fn default_flows() -> usize {
    1 << 18
}

fn default_full() -> FullPolicy {
    FullPolicy::EvictLru
}

/// What the table remembers about a requested flow. Eight bytes: with the slot header and
/// the key, one 64-byte cache line.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct Request {
    /// Outbound datagrams seen (saturating).
    pub requests: u32,
    /// Inbound datagrams admitted (saturating).
    pub responses: u16,
    /// 0: the key's lo endpoint is the inside requester; 1: the hi endpoint is.
    pub initiator: u8,
    pub _pad: u8,
}

crate::table_entry! {
    pub struct RequestEntry { key: FlowKey, value: Request }
}

/// Which traffic is inbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Inbound iff it arrived on this port.
    Outside(PortId),
    /// Inbound iff it did not arrive on this port.
    Inside(PortId),
}

impl Side {
    #[inline]
    fn inbound(self, ingress: PortId) -> bool {
        match self {
            Side::Outside(p) => ingress == p,
            Side::Inside(p) => ingress != p,
        }
    }
}

/// The rules, read-only on the packet path.
#[derive(Debug)]
struct Policy {
    side: Side,
    timeout: Nanos,
    inbound_refreshes: bool,
    allow_dports: Vec<PortRange>,
    allow_src: Vec<Prefix>,
    allow_dst: Vec<Prefix>,
    allow_later_fragments: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    outbound: u64,
    flows_opened: u64,
    solicited: u64,
    allow_listed: u64,
    unsolicited: [u64; 8],
    fragments_dropped: u64,
    fragments_passed: u64,
    table_full: u64,
    not_udp: u64,
}

/// The UDP whitelister on one core.
#[derive(Debug)]
pub struct Whitelist {
    policy: Policy,
    requests: FlowTable<RequestEntry>,
    counters: Counters,
}

fn param(key: &str, detail: &str) -> NfError {
    NfError::Param { key: key.to_string(), detail: detail.to_string() }
}

impl NetworkFunction for Whitelist {
    const KIND: &'static str = "udp_whitelist";
    type Config = WhitelistConfig;

    fn init(config: &WhitelistConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let side = match (&config.outside, &config.inside) {
            (Some(o), None) => Side::Outside(rt.port("outside", o)?),
            (None, Some(i)) => Side::Inside(rt.port("inside", i)?),
            _ => {
                return Err(param(
                    "outside",
                    "give exactly one of `outside` (the untrusted port) or `inside` (the protected port)",
                ))
            }
        };
        if config.idle_timeout_s == 0 {
            return Err(param("idle_timeout_s", "must be at least 1 second"));
        }
        let timeout = Nanos::from_secs(config.idle_timeout_s);
        let spec =
            TableSpec { capacity: config.flows, idle_timeout: timeout, full_policy: config.full_policy };
        let requests = FlowTable::new(rt.arena, &format!("{}.requests", rt.name), spec)?;
        let policy = Policy {
            side,
            timeout,
            inbound_refreshes: config.inbound_refreshes,
            allow_dports: config.allow_dports.clone().into_vec(),
            allow_src: config.allow_src.clone().into_vec(),
            allow_dst: config.allow_dst.clone().into_vec(),
            allow_later_fragments: config.allow_later_fragments,
        };
        Ok(Whitelist { policy, requests, counters: Counters::default() })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        let Whitelist { policy, requests, counters } = self;
        let mut table = requests.view();
        let mut touched = 0u32;
        for &i in burst.active {
            if let Some(m) = burst.metas.get(usize::from(i)) {
                touched ^= table.prefetch(m.hash);
            }
        }
        std::hint::black_box(touched);
        burst.for_each(|_, meta| policy.check(&mut table, counters, ctx.now, meta));
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, _frame: &mut [u8], meta: &mut Meta) -> Verdict {
        self.policy.check(&mut self.requests.view(), &mut self.counters, ctx.now, meta)
    }

    /// The flow's request entry (the opened reverse direction), with its time left.
    fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        migrate::export(&[&self.requests], &[place], (tag::WHITELIST, 1), ctx.now, |_, _| {}, out)
    }

    fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        migrate::import(
            &mut [&mut self.requests],
            &[place],
            (tag::WHITELIST, 1),
            ctx.now,
            bytes,
            |r, _, _| {
                if r.initiator > 1 {
                    return Err(ImportError::Malformed("initiator"));
                }
                Ok(())
            },
        )
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.requests.expire(ctx.now, SWEEP_PER_BURST, |_| {});
    }

    fn report(&self, out: &mut Report) {
        let c = &self.counters;
        out.counter("outbound", c.outbound);
        out.counter("flows_opened", c.flows_opened);
        out.counter("solicited", c.solicited);
        out.counter("allow_listed", c.allow_listed);
        for class in ReflectorClass::ALL {
            out.counter(class.counter_name(), c.unsolicited.get(class.index()).copied().unwrap_or(0));
        }
        out.counter("fragments_dropped", c.fragments_dropped);
        out.counter("fragments_passed", c.fragments_passed);
        out.counter("table_full", c.table_full);
        out.counter("not_udp", c.not_udp);
        out.table("requests", StateDecl::PerFlow, self.requests.stats());
    }
}

impl Policy {
    #[inline]
    fn check(
        &self,
        table: &mut TableView<'_, RequestEntry>,
        c: &mut Counters,
        now: Nanos,
        meta: &Meta,
    ) -> Verdict {
        if meta.proto != IpProtocol::Udp || !meta.is_ip() {
            c.not_udp += 1;
            return Verdict::Continue;
        }
        if self.side.inbound(meta.ingress) {
            self.inbound(table, c, now, meta)
        } else {
            self.outbound(table, c, now, meta)
        }
    }

    /// A request from an inside host: remember (or refresh) its flow.
    #[inline]
    fn outbound(
        &self,
        table: &mut TableView<'_, RequestEntry>,
        c: &mut Counters,
        now: Nanos,
        meta: &Meta,
    ) -> Verdict {
        c.outbound += 1;
        if meta.fragment == Fragment::Later {
            // No ports: nothing to record; the first fragment recorded the flow.
            return Verdict::Continue;
        }
        let initiator = dir_byte(meta.dir);
        if let Some(e) = table.find_touch(meta.hash, &meta.key, now, self.timeout) {
            e.value.requests = e.value.requests.saturating_add(1);
            // The flow now belongs to whichever side last asked (both may be inside hosts).
            e.value.initiator = initiator;
            return Verdict::Continue;
        }
        let req = Request { requests: 1, responses: 0, initiator, _pad: 0 };
        match table.insert(meta.hash, meta.key, req, now) {
            Ok(_) => {
                c.flows_opened += 1;
                Verdict::Continue
            }
            Err(_) => {
                c.table_full += 1;
                Verdict::Drop(DropReason::TableFull)
            }
        }
    }

    /// A datagram from outside: a response to a live request, allow-listed, or dropped.
    #[inline]
    fn inbound(
        &self,
        table: &mut TableView<'_, RequestEntry>,
        c: &mut Counters,
        now: Nanos,
        meta: &Meta,
    ) -> Verdict {
        if self.allow_listed(meta) {
            c.allow_listed += 1;
            return Verdict::Continue;
        }
        if meta.fragment == Fragment::Later {
            return if self.allow_later_fragments {
                c.fragments_passed += 1;
                Verdict::Continue
            } else {
                c.fragments_dropped += 1;
                Verdict::Drop(DropReason::Fragment)
            };
        }
        // The response travels opposite to the request: its sender is the requested endpoint.
        let want = dir_byte(meta.dir.reverse());
        if let Some(idx) = table.find(meta.hash, &meta.key, now) {
            if let Some(r) = table.get_mut(idx).filter(|r| r.initiator == want) {
                r.responses = r.responses.saturating_add(1);
                if self.inbound_refreshes {
                    table.touch(idx, now, self.timeout);
                }
                c.solicited += 1;
                return Verdict::Continue;
            }
        }
        if let Some(n) = c.unsolicited.get_mut(ReflectorClass::of(meta.sport).index()) {
            *n += 1;
        }
        Verdict::Drop(DropReason::Unsolicited)
    }

    #[inline]
    fn allow_listed(&self, meta: &Meta) -> bool {
        let family = match meta.l3_kind {
            L3Kind::Ipv4 => FAMILY_V4,
            L3Kind::Ipv6 => FAMILY_V6,
            L3Kind::Arp => return false,
        };
        // Later fragments have no ports: only the prefix lists can admit them.
        (meta.fragment != Fragment::Later && self.allow_dports.iter().any(|r| r.contains(meta.dport)))
            || self.allow_src.iter().any(|p| p.contains(family, &meta.src))
            || self.allow_dst.iter().any(|p| p.contains(family, &meta.dst))
    }
}

#[inline]
fn dir_byte(d: Dir) -> u8 {
    match d {
        Dir::LoToHi => 0,
        Dir::HiToLo => 1,
    }
}

impl Whitelist {
    /// Live requested flows at `now`.
    pub fn flows(&self, now: Nanos) -> usize {
        self.requests.iter(now).count()
    }
}
