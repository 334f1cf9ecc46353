//! `monitor`: per-flow counters and per-host statistics.
//!
//! Per-flow counters (packets and bytes in each direction, first and last seen) live in a
//! per-flow table on the core that owns the flow. Per-host counters are global-write state
//! with eventual consistency (Serpens §III-C): each core counts into a small local delta table
//! and merges it into the appliance-wide host map on a timer, so the packet path never locks.
//!
//! Scale-out: a flow's counters move with it (`export_flow`/`import_flow`; `first_seen`
//! travels as an age), found by the flow as the monitor sees it (the pipeline rewrites the
//! director's key through any NAT or `lb` before it). Host counters stay where they were
//! counted.

use crate::frame::Frame;
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use serde::Deserialize;

use crate::flow::{Dir, FlowKey};
use crate::nf::{Burst, Ctx, ImportError, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::Meta;
use crate::state::migrate::{self, Place};
use crate::state::wire::tag;
use crate::state::{Delta, Eventual, FlowTable, FullPolicy, StateDecl, TableSpec, TableView};
use crate::time::Nanos;

const SWEEP_PER_BURST: usize = 64;

/// Kind tag and format version of a migrated flow's counters.
const RECORD: (u8, u8) = (tag::MONITOR, 1);

/// Turns `first_seen` into an age at `now` (export), or an age back into a time (import).
fn age(c: &mut FlowCounters, now: Nanos) {
    c.first_seen = now.0.saturating_sub(c.first_seen);
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Maximum flows counted per core; a full table evicts the least recently used flow.
    pub flows: usize,
    /// Seconds after which an idle flow's counters are dropped.
    pub flow_idle_s: u64,
    /// Distinct active hosts a core counts individually; beyond that, traffic is counted in
    /// the `other` total (and `host_overflow`).
    pub host_delta: usize,
    /// Hosts kept in the appliance-wide map; more are folded into an `other` total.
    pub max_hosts: usize,
    /// Milliseconds between merges of per-core host counters.
    pub merge_interval_ms: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            flows: 1 << 20,
            flow_idle_s: 300,
            host_delta: 1 << 14,
            max_hosts: 1 << 20,
            merge_interval_ms: 100,
        }
    }
}

/// Counters of one flow; index 0 is the lo→hi direction of the key.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct FlowCounters {
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub first_seen: u64,
}

crate::table_entry! {
    pub struct FlowEntry { key: FlowKey, value: FlowCounters }
}

/// A host address as a table key.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable, Default)]
pub struct HostKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 7],
}

impl HostKey {
    #[inline]
    fn of(family: u8, addr: [u8; 16]) -> HostKey {
        HostKey { addr, family, _pad: [0; 7] }
    }

    /// Multiply-xorshift over the address words (the same mixing as flow keys).
    #[inline]
    fn hash(&self) -> u32 {
        let a = u128::from_be_bytes(self.addr);
        let mut h = (a as u64 ^ u64::from(self.family)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 29;
        h = (h ^ (a >> 64) as u64).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 32;
        h as u32
    }
}

/// Counters of one host.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct HostCounters {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

impl HostCounters {
    fn add(&mut self, o: &HostCounters) {
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
    }
}

crate::table_entry! {
    pub struct HostEntry { key: HostKey, value: HostCounters }
}

/// The appliance-wide host statistics.
#[derive(Debug, Clone, Default)]
pub struct HostStats {
    pub hosts: hashbrown::HashMap<HostKey, HostCounters>,
    /// Counters of hosts beyond `max_hosts`.
    pub other: HostCounters,
    pub max_hosts: usize,
}

/// A core's host-counter delta.
#[derive(Debug)]
pub struct HostDelta {
    table: FlowTable<HostEntry>,
    max_hosts: usize,
    /// Counts of hosts that found the delta table full (merged into the global `other`).
    overflow: HostCounters,
    /// How long a silent host keeps its delta entry.
    host_idle: Nanos,
    /// Updates that went to `overflow`.
    overflowed: u64,
}

impl Delta for HostDelta {
    type Global = HostStats;

    /// Adds every host's counts since the last merge to the global map and zeroes them. The
    /// entries stay, so active hosts are not re-inserted each interval; hosts silent for
    /// `host_idle` expire (their counters were zeroed by the merge before).
    fn drain_into(&mut self, g: &mut HostStats) {
        g.max_hosts = self.max_hosts;
        g.other.add(&self.overflow);
        self.overflow = HostCounters::default();
        for e in self.table.values_mut() {
            if e.value == HostCounters::default() {
                continue;
            }
            let known = g.hosts.len() < g.max_hosts || g.hosts.contains_key(&e.key);
            if known {
                g.hosts.entry(e.key).or_default().add(&e.value);
            } else {
                g.other.add(&e.value);
            }
            e.value = HostCounters::default();
        }
    }
}

/// The monitor's state borrowed for one burst: the per-packet work.
struct Views<'a> {
    flows: TableView<'a, FlowEntry>,
    flow_idle: Nanos,
    hosts: TableView<'a, HostEntry>,
    host_idle: Nanos,
    overflow: &'a mut HostCounters,
    overflowed: &'a mut u64,
    packets: &'a mut u64,
}

impl Views<'_> {
    #[inline]
    fn account(&mut self, now: Nanos, meta: &Meta, len: u64) {
        if !meta.is_ip() {
            return;
        }
        *self.packets += 1;
        let d = match meta.dir {
            Dir::LoToHi => 0,
            Dir::HiToLo => 1,
        };
        let counters = match self.flows.find_touch(meta.hash, &meta.key, now, self.flow_idle) {
            Some(e) => Some(&mut e.value),
            None => {
                let fresh = FlowCounters { first_seen: now.0, ..FlowCounters::default() };
                let idx = self.flows.insert(meta.hash, meta.key, fresh, now).ok();
                idx.and_then(|i| self.flows.get_mut(i))
            }
        };
        if let Some(c) = counters {
            if let (Some(p), Some(b)) = (c.packets.get_mut(d), c.bytes.get_mut(d)) {
                *p += 1;
                *b += len;
            }
        }
        let family = meta.key.family;
        self.count_host(now, HostKey::of(family, meta.src), len, true);
        self.count_host(now, HostKey::of(family, meta.dst), len, false);
    }

    #[inline]
    fn count_host(&mut self, now: Nanos, key: HostKey, len: u64, tx: bool) {
        let h = key.hash();
        let c = match self.hosts.find_touch(h, &key, now, self.host_idle) {
            Some(e) => &mut e.value,
            None => {
                let slot = match self.hosts.insert(h, key, HostCounters::default(), now) {
                    Ok(i) => self.hosts.get_mut(i),
                    Err(_) => None,
                };
                match slot {
                    Some(c) => c,
                    None => {
                        // More active hosts than the delta holds: count them, unattributed.
                        *self.overflowed += 1;
                        &mut *self.overflow
                    }
                }
            }
        };
        if tx {
            c.tx_packets += 1;
            c.tx_bytes += len;
        } else {
            c.rx_packets += 1;
            c.rx_bytes += len;
        }
    }
}

/// The monitor on one core.
#[derive(Debug)]
pub struct Monitor {
    flows: FlowTable<FlowEntry>,
    flow_idle: Nanos,
    hosts: Eventual<HostDelta>,
    host_view: Arc<spin::Mutex<HostStats>>,
    packets: u64,
    /// Per-burst (flow, source host, destination host) hashes to prefetch; reused.
    scratch: Vec<(u32, u32, u32)>,
}

impl NetworkFunction for Monitor {
    const KIND: &'static str = "monitor";
    type Config = MonitorConfig;

    fn init(c: &MonitorConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let flow_idle = Nanos::from_secs(c.flow_idle_s);
        let spec =
            TableSpec { capacity: c.flows, idle_timeout: flow_idle, full_policy: FullPolicy::EvictLru };
        let flows = FlowTable::new(rt.arena, &format!("{}.flows", rt.name), spec)?;
        let host_spec = TableSpec {
            capacity: c.host_delta,
            idle_timeout: Nanos::from_millis(c.merge_interval_ms.saturating_mul(3)),
            full_policy: FullPolicy::Refuse,
        };
        let delta = HostDelta {
            table: FlowTable::new(rt.arena, &format!("{}.host_delta", rt.name), host_spec)?,
            max_hosts: c.max_hosts,
            overflow: HostCounters::default(),
            host_idle: Nanos::from_millis(c.merge_interval_ms.saturating_mul(3)),
            overflowed: 0,
        };
        // The first core creates the shared host map; every core brings its own delta table.
        let interval = Nanos::from_millis(c.merge_interval_ms);
        let view = rt.global_read("hosts", || Ok(spin::Mutex::new(HostStats::default())))?;
        let hosts = Eventual::new(delta, Arc::clone(&view), interval);
        Ok(Monitor { flows, flow_idle, hosts, host_view: view, packets: 0, scratch: Vec::with_capacity(256) })
    }

    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        // Hashes first, then tight loops of loads, so many cache misses are in flight at once.
        self.scratch.clear();
        for &i in burst.active {
            if let Some(m) = burst.metas.get(usize::from(i)) {
                let family = m.key.family;
                self.scratch.push((
                    m.hash,
                    HostKey::of(family, m.src).hash(),
                    HostKey::of(family, m.dst).hash(),
                ));
            }
        }
        let scratch = std::mem::take(&mut self.scratch);
        let mut views = self.views();
        let mut touched = 0u32;
        for &(flow, _, _) in &scratch {
            touched ^= views.flows.prefetch(flow);
        }
        for &(_, src, dst) in &scratch {
            touched ^= views.hosts.prefetch(src) ^ views.hosts.prefetch(dst);
        }
        std::hint::black_box(touched);
        for &i in burst.active {
            let i = usize::from(i);
            if let (Some(frame), Some(meta)) = (burst.frames.get_mut(i), burst.metas.get(i)) {
                views.account(ctx.now, meta, frame.as_mut().len() as u64);
            }
        }
        self.scratch = scratch;
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        self.views().account(ctx.now, meta, frame.len() as u64);
        Verdict::Continue
    }

    fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        migrate::export(&[&self.flows], &[place], RECORD, ctx.now, age, out)
    }

    fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let place = Place { table: 0, hash: flow.hash(), key: *flow };
        migrate::import(&mut [&mut self.flows], &[place], RECORD, ctx.now, bytes, |c, _, now| {
            if c.packets.iter().chain(&c.bytes).any(|n| *n > migrate::MAX_COUNT) {
                return Err(ImportError::Malformed("flow counter"));
            }
            age(c, now);
            Ok(())
        })
    }

    const MIGRATES: bool = true;
    const FLOW_STATE: bool = true;

    fn housekeeping(&mut self, ctx: &Ctx) {
        self.flows.expire(ctx.now, SWEEP_PER_BURST, |_| {});
        let delta = self.hosts.delta();
        // An entry expires only after a merge zeroed it, unless merges stalled: keep its
        // counts anyway.
        let overflow = &mut delta.overflow;
        delta.table.expire(ctx.now, SWEEP_PER_BURST, |e| overflow.add(&e.value));
        self.hosts.tick(ctx.now);
    }

    fn report(&self, out: &mut Report) {
        out.counter("ip_packets", self.packets);
        out.counter("hosts", self.host_view.lock().hosts.len() as u64);
        out.counter("host_merges", self.hosts.syncs());
        out.counter("host_overflow", self.hosts.delta_ref().overflowed);
        out.table("flows", StateDecl::PerFlow, self.flows.stats());
    }
}

impl Monitor {
    /// The monitor's tables borrowed for a burst.
    fn views(&mut self) -> Views<'_> {
        let delta = self.hosts.delta();
        Views {
            flows: self.flows.view(),
            flow_idle: self.flow_idle,
            hosts: delta.table.view(),
            host_idle: delta.host_idle,
            overflow: &mut delta.overflow,
            overflowed: &mut delta.overflowed,
            packets: &mut self.packets,
        }
    }

    /// Counters of one flow, if tracked.
    pub fn flow(&self, key: &FlowKey, now: Nanos) -> Option<FlowCounters> {
        self.flows.find(key.hash(), key, now).and_then(|i| self.flows.get(i)).copied()
    }

    /// The appliance-wide host map (as of the last merges).
    pub fn hosts(&self) -> Arc<spin::Mutex<HostStats>> {
        Arc::clone(&self.host_view)
    }

    /// Merges this core's host delta now (shutdown, tests).
    pub fn flush_hosts(&mut self, now: Nanos) {
        self.hosts.sync(now);
    }
}
