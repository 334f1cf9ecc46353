//! `nat`: NAT44 source NAT (masquerade) with static port-forwards, behaving as RFC 4787
//! (UDP), RFC 5382 (TCP), RFC 5508 (ICMP) and RFC 7857 ask of a NAT.
//!
//! Packets arriving on an `inside` port are *outbound*: their source endpoint gets an
//! endpoint-independent mapping to a public (address, port) from the pool (`mapping.rs`,
//! `pool.rs`) and is rewritten to it. Packets from any other port are *inbound*: they must be
//! addressed to a pool address and either hit a static forward or a live mapping whose
//! filtering admits the sender; anything else is dropped (`nat_no_mapping`, `nat_filtered`),
//! so no unsolicited packet reaches the inside. ICMP echo is translated by identifier, ICMP
//! errors by the datagram they quote (`icmp.rs`); fragments follow their first fragment
//! (`frag.rs`). An outbound packet to a pool address is hairpinned (RFC 4787 REQ-9, RFC 5382
//! REQ-8): translated both ways and sent back out of the port it came in on
//! (`Verdict::Out`), or with `hairpin = "route"` passed on along the chain for a `gateway`
//! step to route; every other translated packet continues along the chain.
//!
//! # Multiple cores
//!
//! Mappings are per core, and so is the pool: each core allocates public ports from its own
//! share (`pool.rs`, release-consistent). The reply of a flow is addressed to the *public*
//! endpoint, so neither the appliance's symmetric flow hash nor a NIC's RSS brings it back to
//! the core holding the mapping. The NAT therefore steers by ownership (`steer.rs`): a map
//! shared by all cores records which core's share holds every public port, updated when the
//! pool is split at start and when a dry core refills from the reserve (never per
//! allocation), and the NF's ingress hook ([`NetworkFunction::steer`]) names that core for
//! every packet addressed to a pool address, before the chain runs. The dataplane moves it
//! there, so the reply runs the whole chain on the core that ran the outbound packet which
//! created the mapping (a firewall's connection state is there too). Packets to other
//! addresses — ordinary outbound traffic — cost one address comparison. Static forwards need
//! no per-core state and are translated on whatever core receives them (with
//! `steer_outbound`, on the core of their public-side flow, from both directions).
//!
//! Limits that remain with several cores:
//! - An inside endpoint whose flows the appliance spreads over several cores (by their
//!   5-tuples) gets one mapping per core, so endpoint independence (RFC 4787 REQ-1) holds per
//!   core only: a peer seeing two of its flows may see two public ports. Likewise an ICMP
//!   error sent by an inside host is found by the inside endpoint it quotes, and is dropped
//!   as `nat_no_mapping` on another core than the mapping's. `steer_outbound = true` lifts
//!   both by steering inside traffic by its inside endpoint (`steer.rs`), at the price of
//!   moving most of it between cores where the ports spread flows themselves.
//! - A later fragment carries no port to steer by: it is translated only where the first
//!   fragment was (`frag.rs`) and dropped as `fragment` on the other cores.
//!
//! With one core, everything here holds without restriction.
//!
//! # Restart
//!
//! With a state directory the mapping tables are re-attached by a restarted appliance
//! (`state/arena.rs`), but the pools and the owner map are built afresh and would hand the
//! restored mappings' public ports out again. So every core's instance lists the ports its
//! restored mappings hold (`init`), and once every core's instance exists
//! ([`NetworkFunction::after_init`]) each takes all listed ports out of its share and the
//! reserve, and claims its own in the owner map: no port is both in a pool and in a mapping,
//! and replies steer to the core holding the mapping. A restored mapping keeps its public
//! endpoint only while that address is still in `public` and the port in `ports` (a changed
//! pool leaves it to expire unanswered, and its port is not given back).
//!
//! # Scale-out
//!
//! Instances of a scaled-out deployment run the same configuration, and a director moves flows
//! between them (`export_flow`/`import_flow`, `migrate.rs`). Public ports are split first by
//! instance — instance `id` of `count` hands out the `id`-th of `count` equal, contiguous slices
//! of `ports` ([`Settings::share`]) — then by core, so two instances never allocate the same
//! port. A flow's state is the mapping of each of its ends that is an inside endpoint (with its
//! reverse entry, TCP phase, filtering ring and time left; the director's key for a NAT'd flow
//! is its inside tuple); static forwards keep no per-flow state and move with nothing to send.
//! After an import, the flow's packets in both directions translate on the importer exactly as
//! on the exporter, with the same public port. The rule for that port:
//!
//! - On the exporter the mapping is marked *moved*: it still translates packets that reach it
//!   but is no longer refreshed, and when it expires its port is not returned to the pool but
//!   held for a further `moved_hold_s` (default 7440 s, the RFC 5382 established timeout), so no
//!   new flow here takes a port that is live elsewhere. Importing the flow back ends the mark (or
//!   the hold): the mapping is live here again.
//! - On the importer, a mapping whose port is in another instance's share is *foreign*: it
//!   lives, refreshes and steers like any other, but its port never enters this instance's pool
//!   when it expires.
//! - Mappings are endpoint-independent, so moving one flow moves the mapping every flow of that
//!   inside endpoint uses; flows of the endpoint left on the exporter keep using it until it
//!   expires there, then get a new port. A flow kept alive elsewhere for longer than the mapping
//!   timeout plus `moved_hold_s` must not come back: its port may have been handed out again.
//! - Holds are kept in memory only (a restart returns held ports to the pool). With several
//!   cores, a mapping coming home must be imported on the core that exported it (where its port
//!   is held); a port sitting in another core's share is refused.
//!
//! # Choices and limits
//!
//! - Paired address pooling (RFC 4787 REQ-2): an inside address always maps to the same pool
//!   address (chosen by hash) while that address has free ports on the core.
//! - Ports come from `ports` only (default 1024-65535), so inside ports below 1024 are not
//!   kept in that range (RFC 4787 REQ-3 recommends it; it would expose privileged ports).
//! - Filtering remembers the last four remote endpoints per mapping (`mapping.rs`).
//! - A later fragment that overtakes its first fragment is dropped (`fragment`), not held.
//! - Only TCP, UDP and ICMP echo/errors are translated; other IPv4 protocols are dropped
//!   (`nat_unsupported` outbound, `nat_no_mapping` inbound). ARP and IPv6 pass untouched.

mod config;
mod frag;
mod icmp;
mod mapping;
mod migrate;
mod pool;
mod steer;
mod translate;

#[cfg(test)]
mod tests;

use crate::frame::Frame;
use std::sync::Arc;

pub use config::{Filtering, ForwardConfig, Hairpin, NatConfig, Settings, Timeouts};
pub use mapping::{Endpoint, Mapping};
pub use pool::{PortPool, Slot};
pub use steer::PortOwners;

use crate::flow::FlowKey;
use crate::ids::CoreId;
use crate::nf::{Burst, Ctx, ImportError, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::{IpProtocol, L3Kind, Meta};
use crate::rng::Rng;
use crate::state::{Release, StateDecl, TableStats};
use crate::time::Nanos;
use frag::Fragments;
use mapping::{Freed, Mappings};

/// Mapping slots swept per housekeeping call.
const SWEEP_PER_BURST: usize = 64;

/// Per-core counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub outbound: u64,
    pub inbound: u64,
    pub hairpinned: u64,
    pub forwarded: u64,
    pub new_mappings: u64,
    pub preserved_ports: u64,
    /// New mappings whose random public port was picked ahead of their burst.
    pub picked_ahead: u64,
    pub expired_mappings: u64,
    pub exhausted: u64,
    pub no_mapping: u64,
    pub filtered: u64,
    pub icmp_errors: u64,
    pub bad_icmp_errors: u64,
    pub fragments: u64,
    pub unknown_fragments: u64,
    pub unsupported: u64,
    pub table_full: u64,
    pub passed_non_ipv4: u64,
}

/// The NAT on one core.
#[derive(Debug)]
pub struct Nat {
    s: Arc<Settings>,
    // Boxed: the registry's `AnyNf` enum is as large as its largest NF.
    maps: Box<Mappings>,
    frags: Box<Fragments>,
    /// TCP, UDP and ICMP-identifier pools ([`pool_index`]).
    pools: Box<[Release<PortPool>; 3]>,
    /// Which core holds each public port, shared by all cores (`steer.rs`).
    owners: Arc<PortOwners>,
    rng: Rng,
    core: CoreId,
    cores: usize,
    freed: Vec<Freed>,
    /// Public ports held by restored mappings on every core, until [`Nat::after_init`] has
    /// taken them out of this core's pools.
    restored: Option<Arc<Restored>>,
    /// Per-burst (outbound?, endpoint, its hash) of the packets to prefetch; reused, not
    /// reallocated.
    scratch: Vec<(bool, Endpoint, u32)>,
    /// Public ports picked ahead for this burst's new inside endpoints ([`Nat::process`]),
    /// taken from the pool; any left at the end of the burst go back.
    picked: Vec<(Endpoint, Slot)>,
    /// Mappings the previous burst created: whether to pick ahead in this one.
    new_last_burst: u64,
    /// Public endpoints of expired moved mappings, reserved until the time given (module
    /// doc, "Scale-out").
    held: std::collections::VecDeque<(Endpoint, Nanos)>,
    c: Counters,
}

/// New mappings in a burst from which the next burst picks public ports ahead
/// ([`Nat::process`]).
const PICK_AHEAD_FROM: u64 = 2;

/// (pool index, public slot, core holding the mapping) of every restored mapping.
type Restored = spin::Mutex<Vec<(usize, Slot, CoreId)>>;

/// Which pool serves `proto`.
fn pool_index(proto: u8) -> Option<usize> {
    match IpProtocol::from(proto) {
        IpProtocol::Tcp => Some(0),
        IpProtocol::Udp => Some(1),
        IpProtocol::Icmp => Some(2),
        _ => None,
    }
}

impl NetworkFunction for Nat {
    const KIND: &'static str = "nat";
    type Config = NatConfig;

    fn init(config: &NatConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let settings = Settings::from_config(config, rt)?;
        let s = rt.global_read("settings", || Ok(settings))?;
        let batch = config.refill_batch;
        let mut pool_for = |name: &str, proto: IpProtocol| {
            let s = Arc::clone(&s);
            rt.per_core(name, move |cores| {
                let whole = PortPool::full(s.public.len(), s.ports.lo, s.ports.hi, |a, port| {
                    // Other instances' shares are theirs; static forwards own their ports.
                    !s.owns_port(port)
                        || s.forwards.iter().any(|f| {
                            f.proto == proto
                                && Some(a) == s.public_index(f.public_addr)
                                && f.public.contains(port)
                        })
                });
                Ok(Release::group(whole, cores, batch))
            })
        };
        let mut pools = [
            pool_for("pool.tcp", IpProtocol::Tcp)?,
            pool_for("pool.udp", IpProtocol::Udp)?,
            pool_for("pool.icmp", IpProtocol::Icmp)?,
        ];
        let cores = rt.cores;
        let owners = rt.global_read("owners", || PortOwners::new(&s, cores))?;
        for (i, p) in pools.iter_mut().enumerate() {
            owners.claim(i, p.local(), rt.core);
        }
        let maps = Mappings::new(rt.arena, rt.name, config.mappings)?;
        // Every core's instance takes every core's restored ports out of its share.
        let restored = rt.global_read("restored", || Ok(Restored::default()))?;
        if maps.out.restored() {
            let mut held = restored.lock();
            for e in maps.out.iter(Nanos::ZERO) {
                let m = &e.value;
                let (Some(pool), Some(a)) = (pool_index(e.key.proto), s.public_index(m.public_addr)) else {
                    continue;
                };
                if (s.ports.lo..=s.ports.hi).contains(&m.public_port) {
                    held.push((pool, Slot::new(a, m.public_port), rt.core));
                }
            }
        }
        let frags =
            Fragments::new(rt.arena, rt.name, config.fragments, Nanos::from_secs(s.timeouts.fragment))?;
        // Seed: the configuration and the core, so cores and appliances differ.
        let seed = s.public.iter().fold(u64::from(s.ports.lo) << 16 | u64::from(s.ports.hi), |h, a| {
            (h ^ u64::from(u32::from_be_bytes(*a))).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        }) ^ (u64::from(rt.core.0) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
            ^ u64::from(rt.instance.id).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(Nat {
            s,
            maps: Box::new(maps),
            frags: Box::new(frags),
            pools: Box::new(pools),
            owners,
            rng: Rng::new(seed),
            core: rt.core,
            cores: rt.cores.max(1),
            freed: Vec::with_capacity(SWEEP_PER_BURST),
            restored: Some(restored),
            scratch: Vec::with_capacity(256),
            picked: Vec::with_capacity(64),
            new_last_burst: 0,
            held: std::collections::VecDeque::new(),
            c: Counters::default(),
        })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        let mut touched = self.touch_mappings(burst.active, burst.metas);
        if self.new_last_burst >= PICK_AHEAD_FROM {
            touched ^= self.pick_ahead_and_touch(ctx.now);
        }
        std::hint::black_box(touched);
        let mappings_before = self.c.new_mappings;
        burst.for_each(|frame, meta| self.process_packet(ctx, frame, meta));
        self.new_last_burst = self.c.new_mappings.saturating_sub(mappings_before);
        // Ports picked for packets that did not need them (a second packet of the same new
        // flow, a packet dropped first) go back.
        while let Some((k, slot)) = self.picked.pop() {
            self.give_back(k.proto, slot);
        }
    }

    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        let v = self.translate(ctx.now, frame, meta);
        self.return_freed(ctx.now);
        match v {
            Ok(v) => v,
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// Packets to a public endpoint go to the core that owns it (module doc, `steer.rs`).
    const STEERS: bool = true;

    #[inline]
    fn steer(&self, meta: &Meta, frame: &[u8]) -> Option<CoreId> {
        self.owner_core(meta, frame)
    }

    /// Takes the public ports of every core's restored mappings out of this core's pool
    /// shares and the reserve (see the module doc, "Restart").
    fn after_init(&mut self) {
        let Some(list) = self.restored.take() else { return };
        let held = list.lock().clone();
        let mut mine = 0usize;
        for (pool, slot, core) in held {
            if let Some(p) = self.pools.get_mut(pool) {
                p.local().take(slot);
                p.with_reserve(|r| r.take(slot));
            }
            if core == self.core {
                self.owners.claim_slot(pool, slot, core);
                mine += 1;
            }
        }
        if mine > 0 {
            log::info!("{}: NAT kept {mine} restored mapping(s) and their public ports", self.core);
        }
    }

    /// The flow's mapping(s); the exported ones are marked moved (module doc, "Scale-out").
    fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        self.export(flow, ctx, out, true)
    }

    fn copy_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        self.export(flow, ctx, out, false)
    }

    fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        self.import(flow, ctx, bytes)
    }

    /// Inside endpoints with a mapping (or a forward's target) become public, public ones
    /// inside.
    fn flow_after(&self, flow: &FlowKey, now: Nanos) -> FlowKey {
        self.key_after(flow, now)
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.maps.sweep(ctx.now, SWEEP_PER_BURST, &mut self.freed);
        self.return_freed(ctx.now);
        self.release_held(ctx.now);
        for p in self.pools.iter_mut() {
            p.balance();
        }
    }

    fn report(&self, out: &mut Report) {
        let c = &self.c;
        for (name, v) in [
            ("outbound", c.outbound),
            ("inbound", c.inbound),
            ("hairpinned", c.hairpinned),
            ("forwarded", c.forwarded),
            ("new_mappings", c.new_mappings),
            ("preserved_ports", c.preserved_ports),
            ("ports_picked_ahead", c.picked_ahead),
            ("expired_mappings", c.expired_mappings),
            ("pool_exhausted", c.exhausted),
            ("no_mapping", c.no_mapping),
            ("filtered", c.filtered),
            ("icmp_errors", c.icmp_errors),
            ("bad_icmp_errors", c.bad_icmp_errors),
            ("fragments", c.fragments),
            ("unknown_fragments", c.unknown_fragments),
            ("unsupported", c.unsupported),
            ("table_full", c.table_full),
            ("passed_non_ipv4", c.passed_non_ipv4),
        ] {
            out.counter(name, v);
        }
        let (m, b) = self.maps.stats();
        out.table("mappings", StateDecl::PerFlow, m);
        out.table("reverse", StateDecl::PerFlow, b);
        out.table("fragments", StateDecl::PerFlow, self.frags.table.stats());
        // Ports of mappings moved to another instance, reserved here until their hold ends.
        let held = TableStats { len: self.held.len() as u64, ..TableStats::default() };
        out.table("moved_holds", StateDecl::PerFlow, held);
        for (name, p) in ["pool.tcp", "pool.udp", "pool.icmp"].iter().zip(self.pools.iter()) {
            let free = p.available() as u64;
            let pool = TableStats {
                len: free,
                capacity: free + p.reserve_available() as u64,
                ..TableStats::default()
            };
            out.table(name, StateDecl::GlobalWriteRelease, pool);
        }
    }
}

impl Nat {
    /// Touches the mapping slot of every active packet (outbound: by inside endpoint;
    /// inbound: by public endpoint) before any is looked up, so the cache misses overlap.
    /// Hashes first, then a tight loop of loads: a long loop body would let only a few misses
    /// be in flight at once. Leaves (outbound?, endpoint, hash) of each packet in `scratch`.
    #[inline]
    fn touch_mappings(&mut self, active: &[u16], metas: &[Meta]) -> u32 {
        self.scratch.clear();
        for &i in active {
            let Some(m) = metas.get(usize::from(i)) else { continue };
            if m.l3_kind != L3Kind::Ipv4 {
                continue;
            }
            let proto = u8::from(m.proto);
            let (out, k) = if self.s.is_inside(m.ingress) {
                (true, Endpoint::new(translate::a4(&m.src), m.sport, proto))
            } else {
                (false, Endpoint::new(translate::a4(&m.dst), m.dport, proto))
            };
            self.scratch.push((out, k, k.hash()));
        }
        let mut touched = 0u32;
        for &(out, _, h) in &self.scratch {
            touched ^= if out { self.maps.out.prefetch(h) } else { self.maps.back.prefetch(h) };
        }
        touched
    }

    /// A new mapping also inserts into `back` at its public endpoint, a second miss. For the
    /// inside endpoints in `scratch` without a mapping, chooses that endpoint now (the
    /// preserved port if free, else a random one, taken from the pool into `picked` until
    /// the burst ends) and touches its slot, so a burst of new flows overlaps those misses
    /// too. Finding the new endpoints costs every packet one more probe (of a slot
    /// [`Nat::touch_mappings`] brought in, ~3 ns), which pays from about two new flows per
    /// burst: [`Nat::process`] calls this while the previous burst made that many.
    fn pick_ahead_and_touch(&mut self, now: Nanos) -> u32 {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut new = 0;
        // Choices first, then a tight loop of loads.
        for n in 0..scratch.len() {
            let Some(&(out, k, h)) = scratch.get(n) else { break };
            if out && self.maps.out.find(h, &k, now).is_none() {
                if let (Some(p), Some(slot)) = (self.pick_ahead(k), scratch.get_mut(new)) {
                    // Entries before `n` are done with: reuse them for the public hashes.
                    slot.2 = p.hash();
                    new += 1;
                }
            }
        }
        let mut touched = 0u32;
        for &(_, _, h) in scratch.iter().take(new) {
            touched ^= self.maps.back.prefetch(h);
        }
        self.scratch = scratch;
        touched
    }

    /// Counters of this core.
    pub fn counters(&self) -> Counters {
        self.c
    }

    /// Live mappings at `now`.
    pub fn mappings(&self, now: Nanos) -> usize {
        self.maps.live(now)
    }

    /// Free ports in this core's share of the pool of `proto` (6, 17 or 1).
    pub fn free_ports(&self, proto: u8) -> usize {
        pool_index(proto).and_then(|i| self.pools.get(i)).map_or(0, |p| p.available())
    }

    /// Gives the public ports of reclaimed mappings back to their pools: a moved mapping's
    /// port is held first, a foreign one never comes back (module doc, "Scale-out").
    fn return_freed(&mut self, now: Nanos) {
        if self.freed.is_empty() {
            return;
        }
        self.c.expired_mappings += self.freed.len() as u64;
        let hold_until = now.saturating_add(self.s.moved_hold);
        // Taken and put back, so its capacity is reused: no allocation per packet.
        let mut freed = std::mem::take(&mut self.freed);
        for f in freed.drain(..) {
            let p = f.public;
            // A port of another instance's share (an imported mapping's), or outside
            // `ports` (a mapping restored from before a change of them), is not ours to give.
            if f.flags & mapping::flags::FOREIGN != 0 || !self.s.owns_port(p.port) {
                continue;
            }
            if f.flags & mapping::flags::MOVED != 0 {
                self.held.push_back((p, hold_until));
                continue;
            }
            self.put_port(p);
        }
        self.freed = freed;
    }

    /// Puts public endpoint `p` back into this core's share of its pool.
    fn put_port(&mut self, p: Endpoint) {
        let (Some(i), Some(a)) = (pool_index(p.proto), self.s.public_index(p.addr)) else { return };
        if let Some(pool) = self.pools.get_mut(i) {
            pool.local().put(Slot::new(a, p.port));
        }
    }

    /// Ends the holds that are over, returning their ports to the pool. Holds are queued in
    /// the order they began, all for the same time, so the ones due are at the front.
    fn release_held(&mut self, now: Nanos) {
        while let Some(&(p, until)) = self.held.front() {
            if until > now {
                break;
            }
            self.held.pop_front();
            self.put_port(p);
        }
    }
}
