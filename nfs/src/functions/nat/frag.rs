//! Translation of IPv4 fragments.
//!
//! Only the first fragment carries the ports a mapping is found by. When a first fragment is
//! translated, its translation (new source and destination addresses, and where the packet
//! went) is remembered under (source, destination, protocol, IP identification) as they arrived;
//! later fragments of the same datagram look it up and get the same address rewrite (they have
//! no L4 header to rewrite).
//!
//! A later fragment that arrives before its first fragment finds nothing and is dropped
//! (`fragment`): holding it until the first one comes would need buffering, which this NF does
//! not do. The table is small and bounded, entries live a few seconds and a full table evicts
//! the least recently used entry, so a fragment flood can only push out other fragment state,
//! never mappings or unfragmented traffic.

use bytemuck::{Pod, Zeroable};

use crate::state::{Arena, FlowTable, FullPolicy, StateError, TableSpec};
use crate::time::Nanos;

/// A datagram as it arrived.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct FragKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub ident: u16,
    pub proto: u8,
    pub _pad: u8,
}

impl FragKey {
    pub fn hash(&self) -> u32 {
        let w: [u32; 3] = bytemuck::cast(*self);
        let h = w.iter().fold(0x9E37_79B9u32, |h, x| (h ^ x).wrapping_mul(0x85EB_CA6B).rotate_left(13));
        h ^ (h >> 16)
    }
}

/// How the datagram was translated.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct FragXlat {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// 0: continue along the chain; otherwise the hairpin port plus one.
    pub out: u16,
    pub _pad: [u8; 2],
}

crate::table_entry! {
    /// A fragment-tracking slot (40 bytes).
    pub struct FragEntry { key: FragKey, value: FragXlat }
}

/// Fragment tracking of one core.
#[derive(Debug)]
pub struct Fragments {
    pub table: FlowTable<FragEntry>,
}

impl Fragments {
    pub fn new(arena: &mut Arena, name: &str, capacity: usize, timeout: Nanos) -> Result<Self, StateError> {
        let spec = TableSpec { capacity, idle_timeout: timeout, full_policy: FullPolicy::EvictLru };
        Ok(Fragments { table: FlowTable::new(arena, &format!("{name}.fragments"), spec)? })
    }

    /// Remembers the translation of a first fragment.
    pub fn remember(&mut self, k: FragKey, x: FragXlat, now: Nanos) {
        let h = k.hash();
        let timeout = self.table.idle_timeout();
        if let Some(e) = self.table.find_touch(h, &k, now, timeout) {
            e.value = x;
            return;
        }
        // EvictLru: only fails if the table is unusable; a lost entry means later fragments
        // are dropped, which is counted where they are.
        let _ = self.table.insert(h, k, x, now);
    }

    /// The translation of a later fragment's datagram.
    pub fn lookup(&mut self, k: &FragKey, now: Nanos) -> Option<FragXlat> {
        let timeout = self.table.idle_timeout();
        self.table.find_touch(k.hash(), k, now, timeout).map(|e| e.value)
    }
}
