//! `lb`: a layer-4 load balancer with Maglev consistent hashing and per-connection stickiness.
//!
//! Each VIP (`addr:port` over TCP or UDP) fronts a set of weighted backends. The first packet
//! of a connection to a VIP picks a backend from the VIP's Maglev lookup table (`maglev.rs`,
//! Eisenbud et al., NSDI'16) by the flow hash; the choice is remembered per flow in a
//! [`FlowTable`] (with the flow's packet and byte counts, as SNF's load balancer keeps), so a
//! connection stays on its backend for as long as it is active, even when the backend set
//! changes. Entries are forgotten after `idle_timeout` seconds without a packet, on the
//! clock the dataplane passes in.
//!
//! **Mode `dnat`** (the default): packets to a VIP get their destination rewritten to the
//! backend's `addr:port`; replies from the backend (source = backend `addr:port`,
//! destination = the client) get their source rewritten back to the VIP, so the client only
//! ever sees the VIP. Checksums are updated incrementally (`packet::rewrite`) and the
//! packet's [`Meta`] key follows the rewrite, so later NFs in the chain see the translated
//! flow. Everything else passes unchanged (`Verdict::Continue`).
//!
//! **Mode `encap`** (IPVS's tunnel mode, Katran's and Maglev's forwarding): a packet to a VIP
//! is left as it is and put in an outer IPv4 header (IP-in-IP, RFC 2003) from `encap_source`
//! to the backend's address, TOS/ECN and DF copied from the inner header, TTL `encap_ttl`.
//! The backend decapsulates it (Linux: an `ipip` device), holds the VIP as a local address,
//! and answers the client directly (direct server return), so replies never come back
//! through the balancer and nothing is translated on the way out. An outer packet larger
//! than `encap_mtu` is dropped (`lb_encap_too_big`): give the backend network 20 bytes more
//! MTU than the client side, or clamp the clients' TCP MSS. The [`Meta`] after this NF
//! describes the outer packet.
//!
//! **Backend changes** happen between bursts, never on the packet path:
//! [`Lb::set_draining`] (also `drain = true` in the configuration) keeps a backend's existing
//! flows on it but takes it out of the Maglev table, so no new flow picks it;
//! [`Lb::remove_backend`] takes it out for good — its flows are moved to a new backend on
//! their next packet (counted as `rescheduled`). Either rebuilds the affected VIPs' tables,
//! and Maglev's minimal disruption keeps nearly every other new-flow choice where it was.
//!
//! **Scale-out**: a flow's backend choice moves with it (`export_flow`/`import_flow`), so a
//! connection keeps its backend on the instance it moves to.
//!
//! Drops, all counted: a full flow table (`table_full`, or the least recently used flow is
//! evicted with `full_policy = "evict_lru"`); a VIP whose backends are all draining or
//! removed (`lb_no_backend`); IP fragments addressed to a VIP address (`fragment`: later
//! fragments carry no ports to balance on — reassemble before the appliance).
//!
//! # Multiple cores
//!
//! The balancer steers both directions of a connection to one core ([`NetworkFunction::steer`]):
//! a packet to a VIP goes to the core of the hash of its (client, VIP) flow key, and a reply
//! from a backend to the core of the hash of the forward key it answers — (client, the VIP
//! the backend serves) — whatever core the port's RSS or kernel fanout picked. A connection's
//! packets therefore always meet their flow state; every core builds the same Maglev tables,
//! so the first-packet choice agrees between cores anyway. A backend endpoint serving several
//! VIPs steers its replies by the first of them (replies to the others may miss their state;
//! `stateless_replies` cannot help there either). Later fragments of a reply pass
//! untranslated (`untranslated_fragments`). In `encap` mode replies do not come back.
//!
//! IPv6 and non-TCP/UDP traffic passes untouched.

mod config;
mod maglev;
mod translate;

use translate::Step;

#[cfg(test)]
mod tests;

use crate::frame::Frame;
use std::net::SocketAddrV4;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

pub use config::{Backend, BackendConfig, BackendId, LbConfig, Mode, Settings, Vip, VipConfig, VipId};
pub use maglev::{Maglev, Member};

use crate::drop::DropReason;
use crate::flow::{FlowKey, FAMILY_V4};
use crate::ids::CoreId;
use crate::nf::{Burst, Ctx, ImportError, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::Meta;
use crate::packet::{Fragment, IpProtocol, L3Kind};
use crate::state::migrate::{self, Place};
use crate::state::wire::tag;
use crate::state::{FlowTable, StateDecl, TableSpec};
use crate::time::Nanos;

/// Expired flows reclaimed per housekeeping call (bounded work per burst).
const SWEEP_PER_BURST: usize = 64;

/// What the table remembers about a flow: its backend and its traffic (both directions).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct LbFlow {
    /// [`BackendId`] of the backend the flow is pinned to.
    pub backend: u16,
    /// [`VipId`] the flow was addressed to.
    pub vip: u16,
    pub _pad: u32,
    pub packets: u64,
    pub bytes: u64,
}

crate::table_entry! {
    /// A flow-table slot: the client→VIP flow key → its backend (80 bytes).
    pub struct FlowEntry { key: FlowKey, value: LbFlow }
}

/// A backend's status on this core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendState {
    /// Takes new flows (in the Maglev table).
    #[default]
    Active,
    /// Keeps its flows, takes no new ones.
    Draining,
    /// Gone: its flows move elsewhere on their next packet.
    Removed,
}

/// Per-core counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Packets to a VIP sent on to a backend.
    pub forwarded: u64,
    /// Flows that picked a backend.
    pub new_flows: u64,
    /// Replies translated through their flow's state.
    pub replies: u64,
    /// Replies translated without state (`stateless_replies`).
    pub replies_stateless: u64,
    /// Packets from a backend endpoint with no flow to translate them by (passed unchanged).
    pub replies_unmatched: u64,
    /// Flows moved off a removed backend.
    pub rescheduled: u64,
    pub no_backend: u64,
    pub table_full: u64,
    /// Fragments addressed to a VIP (dropped).
    pub fragments: u64,
    /// Later fragments from a backend (passed untranslated).
    pub untranslated_fragments: u64,
    /// Packets for no VIP and from no backend (in `encap` mode: for no VIP).
    pub passed: u64,
    /// Packets put in an outer header toward their backend (`encap` mode).
    pub encapsulated: u64,
}

/// Per-backend counters on this core (both directions of its flows).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackendCounters {
    pub new_flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// Something [`Lb::set_draining`] or [`Lb::remove_backend`] could not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbError {
    /// No VIP has a backend at this address.
    UnknownBackend(SocketAddrV4),
    /// Every backend at this address was already removed.
    Removed(SocketAddrV4),
}

impl std::fmt::Display for LbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LbError::UnknownBackend(a) => write!(f, "no VIP has a backend at {a}"),
            LbError::Removed(a) => write!(f, "the backend at {a} was removed; it cannot be changed"),
        }
    }
}

impl std::error::Error for LbError {}

/// The load balancer on one core.
#[derive(Debug)]
pub struct Lb {
    s: Arc<Settings>,
    flows: FlowTable<FlowEntry>,
    bal: Balancer,
    /// Cores of the dataplane (steering picks one of them).
    cores: usize,
}

/// The per-core balancing state the packet path reads and counts into; the flow table is
/// borrowed beside it for a burst.
#[derive(Debug)]
struct Balancer {
    timeout: Nanos,
    /// By [`BackendId`].
    states: Vec<BackendState>,
    /// By [`VipId`]; replaced whole (never mutated) when the backend set changes.
    tables: Vec<Arc<Maglev>>,
    per_backend: Vec<BackendCounters>,
    c: Counters,
    /// Identification of the last outer header (`encap` mode).
    ip_id: u16,
}

/// Builds the Maglev table of `vip` for backend states `states`.
fn build_table(s: &Settings, vip: &Vip, states: &[BackendState]) -> Maglev {
    let range = usize::from(vip.first)..usize::from(vip.first) + usize::from(vip.count);
    let members: Vec<Member<'_>> = s
        .backends
        .get(range.clone())
        .unwrap_or_default()
        .iter()
        .zip(states.get(range).unwrap_or_default())
        .map(|(b, st)| Member {
            name: &b.name,
            weight: if *st == BackendState::Active { b.weight } else { 0 },
        })
        .collect();
    Maglev::build(s.table_size, &members)
}

impl NetworkFunction for Lb {
    const KIND: &'static str = "lb";
    type Config = LbConfig;

    fn init(config: &LbConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let settings = Settings::from_config(config)?;
        let s = rt.global_read("settings", || Ok(settings))?;
        let states: Vec<BackendState> = s
            .backends
            .iter()
            .map(|b| if b.drain { BackendState::Draining } else { BackendState::Active })
            .collect();
        // Built once, shared by every core until one of them changes its backend set.
        let tables = rt.global_read("maglev", || {
            Ok(s.vips.iter().map(|v| Arc::new(build_table(&s, v, &states))).collect::<Vec<_>>())
        })?;
        let spec = TableSpec {
            capacity: s.flows,
            idle_timeout: Nanos::from_secs(s.idle_timeout),
            full_policy: s.full_policy,
        };
        let flows = FlowTable::new(rt.arena, &format!("{}.flows", rt.name), spec)?;
        let bal = Balancer {
            timeout: spec.idle_timeout,
            per_backend: vec![BackendCounters::default(); states.len()],
            states,
            tables: tables.iter().cloned().collect(),
            c: Counters::default(),
            ip_id: 0,
        };
        Ok(Lb { s, flows, bal, cores: rt.cores })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        let Lb { s, flows, bal, .. } = self;
        let mut flows = flows.view();
        let mut touched = 0u32;
        for &i in burst.active {
            if let Some(m) = burst.metas.get(usize::from(i)) {
                touched ^= flows.prefetch(m.hash);
            }
        }
        std::hint::black_box(touched);
        for &i in burst.active {
            let i = usize::from(i);
            if let (Some(frame), Some(meta), Some(v)) =
                (burst.frames.get_mut(i), burst.metas.get_mut(i), burst.verdicts.get_mut(i))
            {
                *v = match bal.packet(s, &mut flows, ctx.now, frame.as_mut(), meta) {
                    Step::Done(v) => v,
                    Step::Encap(to) => match &s.encap {
                        Some(e) => bal.encapsulate(e, frame, meta, to),
                        None => Verdict::Drop(DropReason::LbNoRoom),
                    },
                };
            }
        }
    }

    /// One packet in a plain byte slice, which cannot grow: `encap` mode's packets to a VIP
    /// are dropped (`lb_no_room`); the dataplane always uses [`Lb::process`].
    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        match self.bal.packet(&self.s, &mut self.flows.view(), ctx.now, frame, meta) {
            Step::Done(v) => v,
            Step::Encap(_) => Verdict::Drop(DropReason::LbNoRoom),
        }
    }

    /// Both directions of a connection to the core of its (client, VIP) key (module doc).
    #[inline]
    fn steer(&self, meta: &Meta, _frame: &[u8]) -> Option<CoreId> {
        if self.cores <= 1 || meta.l3_kind != L3Kind::Ipv4 || meta.fragment == Fragment::Later {
            return None;
        }
        let proto = u8::from(meta.proto);
        if !matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp) {
            return None;
        }
        let s = &self.s;
        let dst = [meta.dst[0], meta.dst[1], meta.dst[2], meta.dst[3]];
        let hash = if s.vip_at(proto, dst, meta.dport).is_some() {
            meta.hash
        } else if s.encap.is_some() {
            return None;
        } else {
            let src = [meta.src[0], meta.src[1], meta.src[2], meta.src[3]];
            let b = *s.backends_at(proto, src, meta.sport)?.first()?;
            let vip = s.backend(b).and_then(|be| s.vip(be.vip))?;
            FlowKey::new(FAMILY_V4, proto, meta.dst, meta.dport, crate::flow::v4(vip.addr), vip.port).0.hash()
        };
        u16::try_from(crate::flow::core_for(hash, self.cores)).ok().map(CoreId)
    }

    const STEERS: bool = true;

    /// The flow's backend choice and counts (keyed by the client→VIP flow), with its time
    /// left.
    fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        migrate::export(&[&self.flows], &[place], (tag::LB, 1), ctx.now, |_, _| {}, out)
    }

    fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        let s = Arc::clone(&self.s);
        migrate::import(&mut [&mut self.flows], &[place], (tag::LB, 1), ctx.now, bytes, |f, _, _| {
            if f.packets > migrate::MAX_COUNT || f.bytes > migrate::MAX_COUNT {
                return Err(ImportError::Malformed("flow counter"));
            }
            let vip = s.vips.get(usize::from(f.vip)).ok_or(ImportError::Config("VIP index"))?;
            let first = usize::from(vip.first);
            if !(first..first + usize::from(vip.count)).contains(&usize::from(f.backend)) {
                return Err(ImportError::Config("backend index not of the flow's VIP"));
            }
            Ok(())
        })
    }

    /// A pinned flow's VIP end becomes its backend.
    fn flow_after(&self, flow: &FlowKey, now: Nanos) -> FlowKey {
        let Some(f) = self.flows.find(flow.hash(), flow, now).and_then(|i| self.flows.get(i)) else {
            return *flow;
        };
        let (Some(vip), Some(b)) =
            (self.s.vips.get(usize::from(f.vip)), self.s.backends.get(usize::from(f.backend)))
        else {
            return *flow;
        };
        let v = (crate::flow::v4(vip.addr), vip.port);
        let ends = [(flow.lo_addr, flow.lo_port), (flow.hi_addr, flow.hi_port)];
        let [a, c] = ends.map(|e| if e == v { (crate::flow::v4(b.addr), b.port) } else { e });
        FlowKey::new(flow.family, flow.proto, a.0, a.1, c.0, c.1).0
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.flows.expire(ctx.now, SWEEP_PER_BURST, |_| {});
    }

    fn report(&self, out: &mut Report) {
        let c = &self.bal.c;
        for (name, v) in [
            ("forwarded", c.forwarded),
            ("new_flows", c.new_flows),
            ("replies", c.replies),
            ("replies_stateless", c.replies_stateless),
            ("replies_unmatched", c.replies_unmatched),
            ("rescheduled", c.rescheduled),
            ("no_backend", c.no_backend),
            ("table_full", c.table_full),
            ("fragments", c.fragments),
            ("untranslated_fragments", c.untranslated_fragments),
            ("passed", c.passed),
            ("encapsulated", c.encapsulated),
        ] {
            out.counter(name, v);
        }
        for (b, k) in self.s.backends.iter().zip(&self.bal.per_backend) {
            let [n, p, by] = b.counter_names;
            out.counter(n, k.new_flows);
            out.counter(p, k.packets);
            out.counter(by, k.bytes);
        }
        out.table("flows", StateDecl::PerFlow, self.flows.stats());
    }
}

impl Lb {
    /// Counters of this core.
    pub fn counters(&self) -> Counters {
        self.bal.c
    }

    /// Counters of backend `id` on this core.
    pub fn backend_counters(&self, id: BackendId) -> BackendCounters {
        self.bal.per_backend.get(usize::from(id.0)).copied().unwrap_or_default()
    }

    /// The validated configuration.
    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// Status of backend `id` on this core.
    pub fn backend_state(&self, id: BackendId) -> Option<BackendState> {
        self.bal.states.get(usize::from(id.0)).copied()
    }

    /// The Maglev table `vip` picks new flows' backends from.
    pub fn table(&self, vip: VipId) -> Option<&Maglev> {
        self.bal.tables.get(usize::from(vip.0)).map(|t| &**t)
    }

    /// Live flows at `now`.
    pub fn flows(&self, now: Nanos) -> usize {
        self.flows.iter(now).count()
    }

    /// The backend the live flow `key` is pinned to.
    pub fn flow_backend(&self, key: &FlowKey, now: Nanos) -> Option<BackendId> {
        let idx = self.flows.find(key.hash(), key, now)?;
        self.flows.get(idx).map(|f| BackendId(f.backend))
    }

    /// Starts (`true`) or ends (`false`) draining every backend at `addr` (in every VIP it
    /// serves): its flows stay, new flows go to the other backends. Call between bursts, on
    /// every core's instance. Returns how many VIP backends changed.
    pub fn set_draining(&mut self, addr: SocketAddrV4, draining: bool) -> Result<usize, LbError> {
        let to = if draining { BackendState::Draining } else { BackendState::Active };
        self.change(addr, to)
    }

    /// Removes every backend at `addr` (in every VIP it serves) for good: no new flows, and
    /// its existing flows move to another backend on their next packet. Call between bursts,
    /// on every core's instance. Returns how many VIP backends were removed.
    pub fn remove_backend(&mut self, addr: SocketAddrV4) -> Result<usize, LbError> {
        self.change(addr, BackendState::Removed)
    }

    fn change(&mut self, addr: SocketAddrV4, to: BackendState) -> Result<usize, LbError> {
        let (ip, port) = (addr.ip().octets(), addr.port());
        let ids: Vec<usize> = (0..self.s.backends.len())
            .filter(|i| self.s.backends.get(*i).is_some_and(|b| b.addr == ip && b.port == port))
            .collect();
        if ids.is_empty() {
            return Err(LbError::UnknownBackend(addr));
        }
        let live: Vec<usize> = ids
            .into_iter()
            .filter(|i| self.bal.states.get(*i).is_some_and(|s| *s != BackendState::Removed))
            .collect();
        if live.is_empty() {
            return Err(LbError::Removed(addr));
        }
        let mut vips = Vec::new();
        for &i in &live {
            if let Some(st) = self.bal.states.get_mut(i) {
                *st = to;
            }
            if let Some(b) = self.s.backends.get(i) {
                if !vips.contains(&b.vip) {
                    vips.push(b.vip);
                }
            }
        }
        // Off the packet path: a fresh immutable table per affected VIP.
        for v in vips {
            if let (Some(vip), Some(slot)) = (self.s.vip(v), self.bal.tables.get_mut(usize::from(v.0))) {
                *slot = Arc::new(build_table(&self.s, vip, &self.bal.states));
            }
        }
        Ok(live.len())
    }
}
