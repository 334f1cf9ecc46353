//! `firewall`: a stateful firewall.
//!
//! Ordered rules (protocol, source/destination prefixes, port ranges, ingress port; allow or
//! deny; first match wins; a default policy) decide whether a packet may *open* a connection.
//! Allowed connections are tracked per flow, so later packets in both directions — replies
//! included — pass without consulting the rules, and TCP connections get timeouts that follow
//! their phase. Packets that neither belong to a tracked connection nor may open one are
//! dropped and counted.
//!
//! Scale-out: a flow's connection entry migrates (`export_flow`/`import_flow`), found by the
//! flow as the firewall sees it (the pipeline rewrites the director's key through any NAT or
//! `lb` before it in the chain).

mod conntrack;
mod related;
mod rules;

#[cfg(test)]
mod tests;

use crate::frame::Frame;
use std::sync::Arc;

use serde::Deserialize;

pub use conntrack::{Conn, ConnEntry, TcpState, Timeouts};
pub use rules::{Action, Rule, RuleConfig, RuleSet};

use crate::drop::DropReason;
use crate::flow::FlowKey;
use crate::nf::{Burst, Ctx, ImportError, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::{Fragment, IpProtocol, Meta};
use crate::state::migrate::{self, Place};
use crate::state::wire::tag;
use crate::state::{FlowTable, FullPolicy, StateDecl, TableSpec, TableView};
use crate::time::Nanos;
use conntrack::TcpStep;

/// Kind tag and format version of a migrated connection.
const RECORD: (u8, u8) = (tag::FIREWALL, 1);

/// Where a flow's connection lives: keyed by the flow itself.
fn place(flow: &FlowKey) -> Place<FlowKey> {
    Place { table: 0, hash: flow.hash(), key: *flow }
}

/// Expired connections reclaimed per housekeeping call (bounded work per burst).
const SWEEP_PER_BURST: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Action for connections no rule matches.
    #[serde(default)]
    pub default: Action,
    /// Rules in order; the first match decides.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    /// Maximum tracked connections per core.
    #[serde(default = "default_capacity")]
    pub connections: usize,
    /// What a full connection table does with a new connection.
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// Accept TCP connections first seen mid-stream (no SYN). Off: such packets are dropped
    /// as `invalid_tcp_state`, as Linux does with `ct state invalid drop`.
    #[serde(default)]
    pub loose_tcp: bool,
    /// Pass non-IP frames (ARP) untouched.
    #[serde(default = "yes")]
    pub allow_non_ip: bool,
    /// Pass non-first IP fragments (they carry no ports; the first fragment was checked).
    #[serde(default = "yes")]
    pub allow_later_fragments: bool,
    #[serde(default)]
    pub timeouts: Timeouts,
}

fn default_capacity() -> usize {
    1 << 20
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Clone, Copy)]
struct FwCounters {
    allowed_new: u64,
    denied_new: u64,
    tracked_hits: u64,
    invalid: u64,
    table_full: u64,
    non_ip: u64,
    reopened: u64,
    /// ICMP errors about a tracked connection.
    related: u64,
}

/// The firewall on one core.
#[derive(Debug)]
pub struct Firewall {
    policy: Policy,
    conns: FlowTable<ConnEntry>,
    stats: FwStats,
}

/// What decides: the rules and the switches, read-only on the packet path.
#[derive(Debug)]
struct Policy {
    rules: Arc<RuleSet>,
    timeouts: Timeouts,
    loose_tcp: bool,
    allow_non_ip: bool,
    allow_later_fragments: bool,
}

#[derive(Debug)]
struct FwStats {
    counters: FwCounters,
    /// Index 0: the default policy; index i+1: rule i.
    rule_hits: Vec<u64>,
}

impl NetworkFunction for Firewall {
    const KIND: &'static str = "firewall";
    type Config = FirewallConfig;

    fn init(config: &FirewallConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        if config.rules.len() > 255 {
            return Err(NfError::Param {
                key: "rule".into(),
                detail: format!("{} rules given; at most 255 are supported", config.rules.len()),
            });
        }
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, r) in config.rules.iter().enumerate() {
            let ingress = match &r.ingress {
                Some(name) => Some(rt.port(&format!("rule[{i}].ingress"), name)?),
                None => None,
            };
            rules.push(Rule {
                action: r.action,
                proto: r.proto.0,
                src: r.src.clone().into_vec(),
                dst: r.dst.clone().into_vec(),
                sport: r.sport.unwrap_or(crate::addr::PortRange::ANY),
                dport: r.dport.unwrap_or(crate::addr::PortRange::ANY),
                ingress,
            });
        }
        let set = RuleSet { rules, default: config.default };
        let rules = rt.global_read("rules", || Ok(set))?;
        let spec = TableSpec {
            capacity: config.connections,
            idle_timeout: Nanos::from_secs(config.timeouts.tcp_transitory),
            full_policy: config.full_policy,
        };
        let conns = FlowTable::new(rt.arena, &format!("{}.connections", rt.name), spec)?;
        let n = rules.rules.len();
        let policy = Policy {
            rules,
            timeouts: config.timeouts,
            loose_tcp: config.loose_tcp,
            allow_non_ip: config.allow_non_ip,
            allow_later_fragments: config.allow_later_fragments,
        };
        Ok(Firewall {
            policy,
            conns,
            stats: FwStats { counters: FwCounters::default(), rule_hits: vec![0; n + 1] },
        })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        let Firewall { policy, conns, stats } = self;
        let mut conns = conns.view();
        let mut touched = 0u32;
        for &i in burst.active {
            if let Some(m) = burst.metas.get(usize::from(i)) {
                touched ^= conns.prefetch(m.hash);
            }
        }
        std::hint::black_box(touched);
        burst.for_each(|frame, meta| policy.check(&mut conns, stats, ctx.now, frame, meta));
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        self.policy.check(&mut self.conns.view(), &mut self.stats, ctx.now, frame, meta)
    }

    /// The flow's connection entry (state, initiator, FINs, rule; time left).
    fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        migrate::export(&[&self.conns], &[place(flow)], RECORD, ctx.now, |_, _| {}, out)
    }

    fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let rules = self.policy.rules.rules.len();
        migrate::import(&mut [&mut self.conns], &[place(flow)], RECORD, ctx.now, bytes, |c, _, _| {
            if c.state > TcpState::Closed as u8 || c.initiator > 1 || c.fins > 0b11 {
                return Err(ImportError::Malformed("connection state"));
            }
            if usize::from(c.rule) > rules {
                return Err(ImportError::Config("rule index beyond this instance's rules"));
            }
            Ok(())
        })
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.conns.expire(ctx.now, SWEEP_PER_BURST, |_| {});
    }

    fn report(&self, out: &mut Report) {
        let c = &self.stats.counters;
        out.counter("allowed_new", c.allowed_new);
        out.counter("denied_new", c.denied_new);
        out.counter("tracked_hits", c.tracked_hits);
        out.counter("invalid_tcp", c.invalid);
        out.counter("table_full", c.table_full);
        out.counter("non_ip", c.non_ip);
        out.counter("reopened", c.reopened);
        out.counter("related_icmp", c.related);
        out.table("connections", StateDecl::PerFlow, self.conns.stats());
    }
}

impl Policy {
    /// The verdict for one packet, tracking its connection.
    #[inline]
    fn check(
        &self,
        conns: &mut TableView<'_, ConnEntry>,
        stats: &mut FwStats,
        now: Nanos,
        frame: &[u8],
        meta: &Meta,
    ) -> Verdict {
        if !meta.is_ip() {
            stats.counters.non_ip += 1;
            return if self.allow_non_ip {
                Verdict::Continue
            } else {
                Verdict::Drop(DropReason::FirewallDeny)
            };
        }
        if meta.fragment == Fragment::Later {
            return if self.allow_later_fragments {
                Verdict::Continue
            } else {
                Verdict::Drop(DropReason::Fragment)
            };
        }
        let Some(idx) = conns.find(meta.hash, &meta.key, now) else {
            if let Some(quoted) = related::quoted_flow(frame, meta) {
                if conns.find(quoted.hash(), &quoted, now).is_some() {
                    stats.counters.related += 1;
                    return Verdict::Continue;
                }
            }
            return self.open(conns, stats, now, meta);
        };
        let timeout = match conns.get_mut(idx) {
            Some(c) if meta.proto == IpProtocol::Tcp => {
                match conntrack::track_tcp(c, meta.dir, meta.tcp_flags) {
                    TcpStep::Accept(s) => self.timeouts.tcp(s),
                    TcpStep::Reopen => {
                        stats.counters.reopened += 1;
                        conns.remove(idx);
                        return self.open(conns, stats, now, meta);
                    }
                }
            }
            Some(_) => self.other_timeout(meta.proto),
            None => return self.open(conns, stats, now, meta),
        };
        conns.touch(idx, now, timeout);
        stats.counters.tracked_hits += 1;
        Verdict::Continue
    }

    /// A packet of no tracked connection: the rules decide whether it may open one.
    fn open(
        &self,
        conns: &mut TableView<'_, ConnEntry>,
        stats: &mut FwStats,
        now: Nanos,
        meta: &Meta,
    ) -> Verdict {
        let (action, rule) = self.rules.decide(meta);
        let hit = rule.map_or(0, |i| i + 1);
        if let Some(h) = stats.rule_hits.get_mut(hit) {
            *h += 1;
        }
        if action == Action::Deny {
            stats.counters.denied_new += 1;
            return Verdict::Drop(DropReason::FirewallDeny);
        }
        let rule_tag = u8::try_from(hit).unwrap_or(u8::MAX);
        let (conn, timeout) = if meta.proto == IpProtocol::Tcp {
            if !self.loose_tcp && !conntrack::opens_tcp(meta.tcp_flags) {
                stats.counters.invalid += 1;
                return Verdict::Drop(DropReason::InvalidTcpState);
            }
            let mut c = conntrack::new_tcp(meta.dir, rule_tag);
            if !conntrack::opens_tcp(meta.tcp_flags) {
                // Loose pick-up of a connection already under way.
                c.state = TcpState::Established as u8;
            }
            (c, self.timeouts.tcp(TcpState::from_u8(c.state)))
        } else {
            (conntrack::new_other(meta.dir, rule_tag), self.other_timeout(meta.proto))
        };
        match conns.insert(meta.hash, meta.key, conn, now) {
            Ok(idx) => {
                conns.touch(idx, now, timeout);
                stats.counters.allowed_new += 1;
                Verdict::Continue
            }
            Err(_) => {
                stats.counters.table_full += 1;
                Verdict::Drop(DropReason::TableFull)
            }
        }
    }

    fn other_timeout(&self, proto: IpProtocol) -> Nanos {
        Nanos::from_secs(match proto {
            IpProtocol::Udp => self.timeouts.udp,
            IpProtocol::Icmp | IpProtocol::Icmpv6 => self.timeouts.icmp,
            _ => self.timeouts.other,
        })
    }
}

impl Firewall {
    /// Hits per rule; index 0 is the default policy, index i+1 is rule i.
    pub fn rule_hits(&self) -> &[u64] {
        &self.stats.rule_hits
    }

    /// Tracked connections (live ones at `now`).
    pub fn connections(&self, now: Nanos) -> usize {
        self.conns.iter(now).count()
    }
}
