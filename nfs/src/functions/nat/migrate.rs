//! Moving a flow's mapping(s) between instances (module doc of `nat`, "Scale-out").
//!
//! The record (version 1, after the `state::wire` header) is a count (1 or 2: a hairpinned
//! flow has an inside endpoint at each end) and per mapping: the inside endpoint (address,
//! port, protocol), the public endpoint, the TCP phase and FIN bits, the time left, and the
//! filtering ring, then the check value. Flags are not sent: the importer derives "foreign" from its own share.
//!
//! Import checks everything before changing anything: the inside endpoint is an end of the
//! flow key, the public address and port belong to the configured pool (not to a static
//! forward), no other inside endpoint holds that public endpoint here, and a port of this
//! instance's share is free to take (held for this mapping, in this core's share or in the
//! reserve).

use super::mapping::{flags, Endpoint, Mapping, Remote, REMOTES};
use super::pool::Slot;
use super::{pool_index, Nat};
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::nf::{Ctx, ImportError};
use crate::packet::IpProtocol;
use crate::state::wire::{tag, Reader, Writer};
use crate::state::FlowIdx;
use crate::time::Nanos;

const VERSION: u8 = 1;

/// A mapping as it travels: inside endpoint, mapping (deadline on this clock).
type Moving = (Endpoint, Mapping);

/// The inside endpoints a flow key may hold a mapping for (one per end, deduplicated).
fn ends(flow: &FlowKey) -> Vec<Endpoint> {
    if flow.family != FAMILY_V4 {
        return Vec::new();
    }
    let a4 = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
    let lo = Endpoint::new(a4(&flow.lo_addr), flow.lo_port, flow.proto);
    let hi = Endpoint::new(a4(&flow.hi_addr), flow.hi_port, flow.proto);
    if lo == hi {
        vec![lo]
    } else {
        vec![lo, hi]
    }
}

fn write_mapping(w: &mut Writer<'_>, k: &Endpoint, m: &Mapping, now: Nanos) {
    w.bytes(&k.addr).u16(k.port).u8(k.proto);
    w.bytes(&m.public_addr).u16(m.public_port).u8(m.tcp).u8(m.fins);
    w.remaining(Nanos(m.deadline), now);
    for r in &m.remotes {
        w.bytes(&r.addr).u16(r.port).u8(r.used);
    }
    w.u8(m.next_remote);
}

fn read_mapping(r: &mut Reader<'_>, now: Nanos) -> Result<Moving, ImportError> {
    let k = Endpoint::new(r.array("inside address")?, r.u16("inside port")?, r.u8("protocol")?);
    let mut m = Mapping {
        public_addr: r.array("public address")?,
        public_port: r.u16("public port")?,
        tcp: r.u8("tcp phase")?,
        fins: r.u8("fin bits")?,
        ..Mapping::default()
    };
    let left = Nanos(r.u64("time left")?);
    m.deadline = now.saturating_add(left).0;
    for slot in m.remotes.iter_mut() {
        *slot = Remote {
            addr: r.array("remote address")?,
            port: r.u16("remote port")?,
            used: r.u8("remote used")?,
            _pad: 0,
        };
        if slot.used > 1 {
            return Err(ImportError::Malformed("remote used"));
        }
    }
    m.next_remote = r.u8("next remote")?;
    if usize::from(m.next_remote) >= REMOTES {
        return Err(ImportError::Malformed("next remote"));
    }
    if m.tcp > super::mapping::tcp::ESTABLISHED {
        return Err(ImportError::Malformed("tcp phase"));
    }
    if m.fins > 0b11 {
        return Err(ImportError::Malformed("fin bits"));
    }
    Ok((k, m))
}

impl Nat {
    /// The other side of end `addr:port` of a `proto` flow: the public endpoint of an inside
    /// endpoint with a live mapping or of a forward's target, the inside endpoint of a live
    /// mapping's public endpoint or of a forward's public port; `None` for any other end.
    fn translated_end(&self, proto: u8, addr: [u8; 4], port: u16, now: Nanos) -> Option<([u8; 4], u16)> {
        let e = Endpoint::new(addr, port, proto);
        let ip = IpProtocol::from(proto);
        if let Some(m) = self.maps.out.find(e.hash(), &e, now).and_then(|i| self.maps.out.get(i)) {
            if m.deadline > now.0 {
                return Some((m.public_addr, m.public_port));
            }
        }
        if let Some(p) = self.forward_source(ip, addr, port) {
            return Some((p.addr, p.port));
        }
        if let Some(inside) = self.maps.back.find(e.hash(), &e, now).and_then(|b| self.maps.back.get(b)) {
            let live = self.maps.out.find(inside.hash(), inside, now).and_then(|i| self.maps.out.get(i));
            if live.is_some_and(|m| m.deadline > now.0) {
                return Some((inside.addr, inside.port));
            }
        }
        self.forward_target(ip, addr, port).map(|t| (t.addr, t.port))
    }

    /// See [`NetworkFunction::flow_after`](crate::nf::NetworkFunction::flow_after): the
    /// flow as this NAT rewrites it (an ICMP echo flow has the identifier in both ports).
    pub(super) fn key_after(&self, flow: &FlowKey, now: Nanos) -> FlowKey {
        if flow.family != FAMILY_V4 || pool_index(flow.proto).is_none() {
            return *flow;
        }
        let a4 = |a: &[u8; 16]| [a[0], a[1], a[2], a[3]];
        let (lo, hi) = ((a4(&flow.lo_addr), flow.lo_port), (a4(&flow.hi_addr), flow.hi_port));
        let (tlo, thi) = (
            self.translated_end(flow.proto, lo.0, lo.1, now),
            self.translated_end(flow.proto, hi.0, hi.1, now),
        );
        let Some(moved) = tlo.or(thi) else { return *flow };
        let (mut l, mut h) = (tlo.unwrap_or(lo), thi.unwrap_or(hi));
        if IpProtocol::from(flow.proto) == IpProtocol::Icmp {
            (l.1, h.1) = (moved.1, moved.1);
        }
        FlowKey::new(FAMILY_V4, flow.proto, v4(l.0), l.1, v4(h.0), h.1).0
    }

    /// The live mappings (inside endpoint, slot) of the ends of `flow`.
    fn flow_mappings(&self, flow: &FlowKey, now: Nanos) -> Vec<(Endpoint, FlowIdx)> {
        ends(flow)
            .into_iter()
            .filter(|_| pool_index(flow.proto).is_some())
            .filter_map(|k| {
                let idx = self.maps.out.find(k.hash(), &k, now)?;
                let live = self.maps.out.get(idx).is_some_and(|m| m.deadline > now.0);
                live.then_some((k, idx))
            })
            .collect()
    }

    /// See [`NetworkFunction::export_flow`](crate::nf::NetworkFunction::export_flow): writes
    /// the flow's mappings and, when `moving`, marks them moved (a copy leaves them live).
    pub(super) fn export(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>, moving: bool) -> bool {
        let found = self.flow_mappings(flow, ctx.now);
        let n = u8::try_from(found.len()).unwrap_or(0);
        if n == 0 {
            return false;
        }
        let mut w = Writer::new(out);
        w.header(tag::NAT, VERSION).u8(n);
        for (k, idx) in found {
            if let Some(m) = self.maps.out.get_mut(idx) {
                write_mapping(&mut w, &k, m, ctx.now);
                if moving {
                    m.flags |= flags::MOVED;
                }
            }
        }
        w.seal();
        true
    }

    /// See [`NetworkFunction::import_flow`](crate::nf::NetworkFunction::import_flow).
    pub(super) fn import(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let now = ctx.now;
        let mut r = Reader::sealed(bytes)?;
        r.header(tag::NAT, VERSION)?;
        let n = r.u8("mapping count")?;
        if !(1..=2).contains(&n) {
            return Err(ImportError::Malformed("mapping count"));
        }
        let mut moving = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            moving.push(read_mapping(&mut r, now)?);
        }
        r.finish()?;
        // Expiry first (as a packet's lookup would do): a mapping that expired here unswept
        // gives its port back, or to its hold, before the checks look at it.
        for (k, m) in &moving {
            self.maps.find(k, now, &mut self.freed);
            let p = Endpoint::new(m.public_addr, m.public_port, k.proto);
            self.maps.find_public(&p, now, &mut self.freed);
        }
        self.return_freed(now);
        let ends = ends(flow);
        for (i, (k, m)) in moving.iter().enumerate() {
            if !ends.contains(k) || moving.iter().take(i).any(|(o, _)| o == k) {
                return Err(ImportError::Malformed("inside endpoint (not an end of the flow)"));
            }
            self.check_public(k, m, now)?;
        }
        let new_keys = moving.iter().filter(|(k, _)| self.maps.out.find(k.hash(), k, now).is_none()).count();
        if self.maps.out.len() + new_keys > self.maps.out.capacity()
            || self.maps.back.len() + new_keys > self.maps.back.capacity()
        {
            return Err(ImportError::Full);
        }
        for (k, m) in moving {
            self.install(k, m, now)?;
        }
        self.return_freed(now);
        Ok(())
    }

    /// Whether mapping `m` of inside endpoint `k` can take its public endpoint here.
    fn check_public(&self, k: &Endpoint, m: &Mapping, now: Nanos) -> Result<(), ImportError> {
        let pi = pool_index(k.proto).ok_or(ImportError::Malformed("protocol"))?;
        let a = self
            .s
            .public_index(m.public_addr)
            .ok_or(ImportError::Config("public address not in the pool"))?;
        if !self.s.ports.contains(m.public_port)
            || self.forward_target(IpProtocol::from(k.proto), m.public_addr, m.public_port).is_some()
        {
            return Err(ImportError::Config("public port not in the pool's `ports`"));
        }
        let p = Endpoint::new(m.public_addr, m.public_port, k.proto);
        if let Some(b) = self.maps.back.find(p.hash(), &p, now) {
            if self.maps.back.get(b) != Some(k) {
                return Err(ImportError::Config("public port held by another inside endpoint"));
            }
        }
        if !self.s.owns_port(m.public_port) {
            return Ok(());
        }
        // A port of our own share: this mapping's (still here, or held), or free to take.
        let slot = Slot::new(a, m.public_port);
        let mine = self
            .maps
            .out
            .find(k.hash(), k, now)
            .and_then(|i| self.maps.out.get(i))
            .is_some_and(|e| e.public_addr == m.public_addr && e.public_port == m.public_port);
        let held = self.held.iter().any(|(h, _)| *h == p);
        let free = self
            .pools
            .get(pi)
            .is_some_and(|pool| pool.local_ref().contains(slot) || pool.with_reserve(|r| r.contains(slot)));
        if mine || held || free {
            Ok(())
        } else {
            Err(ImportError::Config("public port in use here (or in another core's share)"))
        }
    }

    /// Installs a checked mapping, replacing the one `k` holds here.
    fn install(&mut self, k: Endpoint, mut m: Mapping, now: Nanos) -> Result<(), ImportError> {
        let p = Endpoint::new(m.public_addr, m.public_port, k.proto);
        let (pi, a) = match (pool_index(k.proto), self.s.public_index(m.public_addr)) {
            (Some(pi), Some(a)) => (pi, a),
            _ => return Err(ImportError::Config("public address not in the pool")),
        };
        let slot = Slot::new(a, m.public_port);
        m.flags = if self.s.owns_port(m.public_port) { 0 } else { flags::FOREIGN };
        if let Some(idx) = self.maps.out.find(k.hash(), &k, now) {
            let same = self
                .maps
                .out
                .get(idx)
                .is_some_and(|e| e.public_addr == m.public_addr && e.public_port == m.public_port);
            if same {
                if let Some(e) = self.maps.out.get_mut(idx) {
                    *e = m;
                }
                self.claim(pi, slot, p);
                return Ok(());
            }
            // Replaced: its port goes back as any expired mapping's would.
            self.maps.reclaim(idx, &mut self.freed);
        }
        if let Some(b) = self.maps.back.find(p.hash(), &p, now) {
            self.maps.back.remove(b);
        }
        self.maps.insert(k, m, now).map_err(|_| ImportError::Full)?;
        self.claim(pi, slot, p);
        Ok(())
    }

    /// Takes public `slot` out of the pool (or a hold) for an installed mapping, and records
    /// this core as the port's owner so replies steer here.
    fn claim(&mut self, pi: usize, slot: Slot, p: Endpoint) {
        self.held.retain(|(h, _)| *h != p);
        if let Some(pool) = self.pools.get_mut(pi) {
            if self.s.owns_port(slot.port()) {
                pool.local().take(slot);
                pool.with_reserve(|r| r.take(slot));
            }
        }
        self.owners.claim_slot(pi, slot, self.core);
    }
}
