//! Endpoint-independent mappings (RFC 4787 REQ-1, RFC 5382 REQ-1) and their lifetimes.
//!
//! One mapping per (inside address, inside port, protocol), whatever the destination, kept in
//! two per-core tables: `out` keyed by the inside endpoint, holding the public endpoint, the
//! TCP phase, the expiry and the remote endpoints the mapping sent to; and `back` keyed by the
//! public endpoint, pointing at the inside endpoint, for inbound lookups.
//!
//! Expiry has a side effect — the public port goes back to the pool and the `back` entry goes
//! away — so the tables never expire entries on their own (a table may silently reuse an
//! expired slot on insert, which would leak the port). Entries are inserted with an infinite
//! table timeout and a `deadline` in the value; [`Mappings::sweep`] reclaims a few slots per
//! burst and lookups reclaim an expired entry they trip over. Full tables refuse (never
//! evict), for the same reason.
//!
//! Filtering (RFC 4787 REQ-8) remembers the last [`REMOTES`] distinct remote endpoints a
//! mapping sent to, in a ring: enough for the common client (one server, or a few STUN/peer
//! addresses); a mapping talking to more peers at once under dependent filtering drops
//! inbound packets from the oldest ones until it sends to them again.

use bytemuck::{Pod, Zeroable};

use super::config::{Filtering, Settings};
use crate::state::{Arena, FlowIdx, FlowTable, FullPolicy, StateError, TableSpec, TableStats};
use crate::time::Nanos;

/// Remote endpoints remembered per mapping for filtering.
pub const REMOTES: usize = 4;

/// An endpoint and protocol: the key of both tables. `addr` is the inside address in `out`,
/// the public address in `back`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct Endpoint {
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl Endpoint {
    pub fn new(addr: [u8; 4], port: u16, proto: u8) -> Endpoint {
        Endpoint { addr, port, proto, _pad: 0 }
    }

    /// Table hash: the 8 bytes as one word, multiply-xorshift (one multiply on the packet
    /// path instead of a byte loop).
    #[inline]
    pub fn hash(&self) -> u32 {
        let w = u64::from_le_bytes(bytemuck::cast(*self));
        let mut h = w.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (h >> 32) as u32
    }
}

/// A remote endpoint a mapping sent to (`used` = 0: empty slot).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct Remote {
    pub addr: [u8; 4],
    pub port: u16,
    pub used: u8,
    pub _pad: u8,
}

/// TCP phase of a mapping (the latest connection through it).
pub mod tcp {
    /// Opening, closing, reset, or picked up mid-stream: transitory timeout.
    pub const TRANSITORY: u8 = 0;
    /// An inbound packet was seen while transitory; the next outbound ACK establishes.
    pub const ANSWERED: u8 = 1;
    pub const ESTABLISHED: u8 = 2;
}

/// A mapping, as stored in `out`. 56 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct Mapping {
    pub public_addr: [u8; 4],
    pub public_port: u16,
    pub tcp: u8,
    /// Bit 0: FIN seen outbound; bit 1: FIN seen inbound.
    pub fins: u8,
    pub deadline: u64,
    pub remotes: [Remote; REMOTES],
    /// Next ring slot to overwrite.
    pub next_remote: u8,
    /// `flags::MOVED` / `flags::FOREIGN` bits (this module): moved away to another instance,
    /// or holding a port of another instance.
    pub flags: u8,
    pub _pad: [u8; 6],
}

/// Migration bits of [`Mapping::flags`] (see the module doc of `nat`, "Scale-out").
pub mod flags {
    /// Exported to another instance: no longer refreshed here, and its port is held for
    /// `moved_hold_s` once it expires.
    pub const MOVED: u8 = 1;
    /// Imported with a public port from another instance's share: the port never enters
    /// this instance's pool.
    pub const FOREIGN: u8 = 2;
}

impl Mapping {
    /// Records that the mapping sent to `addr:port` (ICMP: port 0); true if it is new.
    pub fn sent_to(&mut self, addr: [u8; 4], port: u16) -> bool {
        if self.remotes.iter().any(|r| r.used != 0 && r.addr == addr && r.port == port) {
            return false;
        }
        let i = usize::from(self.next_remote) % REMOTES;
        if let Some(r) = self.remotes.get_mut(i) {
            *r = Remote { addr, port, used: 1, _pad: 0 };
        }
        self.next_remote = ((i + 1) % REMOTES) as u8;
        true
    }

    /// RFC 4787 REQ-8: may `addr:port` send to this mapping?
    pub fn admits(&self, filtering: Filtering, addr: [u8; 4], port: u16) -> bool {
        let mut used = self.remotes.iter().filter(|r| r.used != 0);
        match filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => used.any(|r| r.addr == addr),
            Filtering::AddressAndPortDependent => used.any(|r| r.addr == addr && r.port == port),
        }
    }
}

crate::table_entry! {
    /// An `out` slot: inside endpoint → mapping (80 bytes).
    pub struct MapEntry { key: Endpoint, value: Mapping }
}

crate::table_entry! {
    /// A `back` slot: public endpoint → inside endpoint (32 bytes).
    pub struct BackEntry { key: Endpoint, value: Endpoint }
}

/// The two mapping tables of one core.
#[derive(Debug)]
pub struct Mappings {
    pub out: FlowTable<MapEntry>,
    pub back: FlowTable<BackEntry>,
    slots: usize,
    cursor: usize,
}

/// What a reclaimed mapping gives back: its public endpoint, and its [`flags`], which say
/// whether the port goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freed {
    pub public: Endpoint,
    pub flags: u8,
}

impl Mappings {
    pub fn new(arena: &mut Arena, name: &str, capacity: usize) -> Result<Mappings, StateError> {
        // Infinite table timeout: the NF owns expiry (see the module doc).
        let spec = TableSpec { capacity, idle_timeout: Nanos(u64::MAX), full_policy: FullPolicy::Refuse };
        let out = FlowTable::new(arena, &format!("{name}.mappings"), spec)?;
        let back = FlowTable::new(arena, &format!("{name}.reverse"), spec)?;
        let slots = out.slots();
        Ok(Mappings { out, back, slots, cursor: 0 })
    }

    /// The live mapping of inside endpoint `k`; an expired one is reclaimed (its public
    /// endpoint pushed to `freed`) and reported absent.
    pub fn find(&mut self, k: &Endpoint, now: Nanos, freed: &mut Vec<Freed>) -> Option<FlowIdx> {
        let idx = self.out.find(k.hash(), k, now)?;
        let deadline = self.out.get(idx).map_or(0, |m| m.deadline);
        if deadline > now.0 {
            return Some(idx);
        }
        self.reclaim(idx, freed);
        None
    }

    /// The inside endpoint behind public endpoint `p`, with its mapping index, if live.
    pub fn find_public(
        &mut self,
        p: &Endpoint,
        now: Nanos,
        freed: &mut Vec<Freed>,
    ) -> Option<(Endpoint, FlowIdx)> {
        let b = self.back.find(p.hash(), p, now)?;
        let inside = *self.back.get(b)?;
        match self.find(&inside, now, freed) {
            Some(idx) => Some((inside, idx)),
            None => {
                // A stale reverse entry whose mapping is gone: drop it too.
                if let Some(b) = self.back.find(p.hash(), p, now) {
                    self.back.remove(b);
                }
                None
            }
        }
    }

    /// Inserts a mapping for `k`; `Err` if either table is full (nothing is left inserted).
    pub fn insert(
        &mut self,
        k: Endpoint,
        m: Mapping,
        now: Nanos,
    ) -> Result<FlowIdx, crate::state::TableFull> {
        let p = Endpoint::new(m.public_addr, m.public_port, k.proto);
        self.back.insert(p.hash(), p, k, now)?;
        match self.out.insert(k.hash(), k, m, now) {
            Ok(idx) => Ok(idx),
            Err(e) => {
                if let Some(b) = self.back.find(p.hash(), &p, now) {
                    self.back.remove(b);
                }
                Err(e)
            }
        }
    }

    /// Removes the mapping at `idx` and its reverse entry, pushing its public endpoint.
    pub fn reclaim(&mut self, idx: FlowIdx, freed: &mut Vec<Freed>) {
        let Some(e) = self.out.entry(idx).copied() else { return };
        let p = Endpoint::new(e.value.public_addr, e.value.public_port, e.key.proto);
        if let Some(b) = self.back.find(p.hash(), &p, Nanos::ZERO) {
            self.back.remove(b);
        }
        self.out.remove(idx);
        freed.push(Freed { public: p, flags: e.value.flags });
    }

    /// Reclaims expired mappings among the next `budget` slots.
    pub fn sweep(&mut self, now: Nanos, budget: usize, freed: &mut Vec<Freed>) {
        for _ in 0..budget.min(self.slots) {
            let i = FlowIdx(self.cursor as u32);
            match self.out.entry(i) {
                // The slot may now hold a shifted entry: look at it again next round.
                Some(e) if e.value.deadline <= now.0 => self.reclaim(i, freed),
                _ => self.cursor = (self.cursor + 1) % self.slots.max(1),
            }
        }
    }

    /// Live mappings at `now`.
    pub fn live(&self, now: Nanos) -> usize {
        self.out.iter(now).filter(|e| e.value.deadline > now.0).count()
    }

    pub fn stats(&self) -> (TableStats, TableStats) {
        (self.out.stats(), self.back.stats())
    }
}

/// Advances the TCP phase of `m` by one packet and returns its new timeout.
///
/// RFC 5382 REQ-5: established connections keep at least 2 h 4 min, opening ones at least
/// 4 min. RFC 7857 §2.2: a connection is over once a RST is seen or a FIN in each direction;
/// the mapping then gets the transitory 4 min (which also covers TIME_WAIT) instead of being
/// removed at once. A single FIN (half close) keeps the established timeout, since the other
/// direction is still open. A new outbound SYN after the end reopens the phase machine.
pub fn track_tcp(m: &mut Mapping, outbound: bool, flags: crate::packet::TcpFlags, s: &Settings) -> Nanos {
    const BOTH: u8 = 0b11;
    if flags.rst() {
        m.tcp = tcp::TRANSITORY;
        m.fins = BOTH;
    } else if flags.syn() && !flags.ack() && outbound && m.fins == BOTH {
        m.tcp = tcp::TRANSITORY;
        m.fins = 0;
    } else if flags.fin() {
        m.fins |= if outbound { 0b01 } else { 0b10 };
        if m.fins == BOTH {
            m.tcp = tcp::TRANSITORY;
        }
    } else if m.fins == 0 {
        m.tcp = match (m.tcp, outbound) {
            (tcp::TRANSITORY, false) => tcp::ANSWERED,
            (tcp::ANSWERED, true) if flags.ack() && !flags.syn() => tcp::ESTABLISHED,
            (t, _) => t,
        };
    }
    s.tcp(m.tcp == tcp::ESTABLISHED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_packed() {
        assert_eq!(std::mem::size_of::<MapEntry>(), 80);
        assert_eq!(std::mem::size_of::<BackEntry>(), 32);
    }

    #[test]
    fn filtering_follows_the_remote_ring() {
        let mut m = Mapping::default();
        m.sent_to([1, 1, 1, 1], 53);
        let cases = [
            (Filtering::EndpointIndependent, [9, 9, 9, 9], 1, true),
            (Filtering::AddressDependent, [1, 1, 1, 1], 54, true),
            (Filtering::AddressDependent, [1, 1, 1, 2], 53, false),
            (Filtering::AddressAndPortDependent, [1, 1, 1, 1], 53, true),
            (Filtering::AddressAndPortDependent, [1, 1, 1, 1], 54, false),
        ];
        for (f, a, p, want) in cases {
            assert_eq!(m.admits(f, a, p), want, "{f:?} {a:?}:{p}");
        }
        // Four more remotes push the first one out of the ring.
        for i in 0..REMOTES as u8 {
            m.sent_to([2, 2, 2, i], 53);
        }
        assert!(!m.admits(Filtering::AddressDependent, [1, 1, 1, 1], 53));
    }
}
