//! Fixed-capacity per-flow tables in the state arena.
//!
//! Open addressing with linear probing and backward-shift deletion (no tombstones), slots laid
//! out as one plain-old-data array in an arena [`Region`]. Each slot carries its hash, the time
//! it was last used and when it expires, so idle timers need no separate structure: lookups
//! treat expired entries as absent and an incremental sweep reclaims them a few slots per burst.
//!
//! When the table holds `capacity` entries, a new one is either refused or displaces the least
//! recently used entry near its home slot, as configured ([`FullPolicy`]); both are counted.
//!
//! A [`FlowIdx`] names a slot until the next insert or remove on the table: look up, use, move
//! on — never keep one across packets.

use bytemuck::{Pod, Zeroable};

use super::arena::{Arena, Region, StateError};
use crate::time::Nanos;

/// How far from its home slot an insert looks for the least recently used victim.
const EVICT_WINDOW: usize = 16;

/// Bookkeeping at the front of every slot: 16 bytes, so a 40-byte flow key and an 8-byte
/// value fill exactly one 64-byte cache line.
///
/// There is no separate last-used time: every use pushes `expires` forward, so the entry
/// expiring soonest is the least recently used one among entries with the same timeout, and
/// the nearest to being reclaimed anyway among the others — the victim eviction wants.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct SlotHeader {
    /// Hash of the key (meaningful only when `occupied`).
    pub hash: u32,
    pub occupied: u32,
    /// When the entry expires (nanoseconds on the runtime clock).
    pub expires: u64,
}

/// A slot type: header, key and value in one plain-old-data struct. Use [`table_entry!`]
/// (crate::table_entry) to declare one.
pub trait Entry: Pod {
    type Key: Pod + PartialEq;
    type Value: Pod;
    fn header(&self) -> &SlotHeader;
    fn header_mut(&mut self) -> &mut SlotHeader;
    fn key(&self) -> &Self::Key;
    fn value(&self) -> &Self::Value;
    fn value_mut(&mut self) -> &mut Self::Value;
    fn assemble(header: SlotHeader, key: Self::Key, value: Self::Value) -> Self;
}

/// Declares a table slot type `$name` holding `$key` → `$value`.
///
/// The struct is `#[repr(C)]` plain old data; the derive fails at compile time if key and
/// value leave padding between them — add explicit `_pad` fields to the value then.
#[macro_export]
macro_rules! table_entry {
    ($(#[$m:meta])* $vis:vis struct $name:ident { key: $key:ty, value: $value:ty }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            pub header: $crate::state::SlotHeader,
            pub key: $key,
            pub value: $value,
        }

        impl $crate::state::Entry for $name {
            type Key = $key;
            type Value = $value;
            #[inline]
            fn header(&self) -> &$crate::state::SlotHeader { &self.header }
            #[inline]
            fn header_mut(&mut self) -> &mut $crate::state::SlotHeader { &mut self.header }
            #[inline]
            fn key(&self) -> &$key { &self.key }
            #[inline]
            fn value(&self) -> &$value { &self.value }
            #[inline]
            fn value_mut(&mut self) -> &mut $value { &mut self.value }
            #[inline]
            fn assemble(header: $crate::state::SlotHeader, key: $key, value: $value) -> Self {
                $name { header, key, value }
            }
        }
    };
}

/// A slot index, valid until the next insert or remove on the same table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowIdx(pub u32);

/// What a full table does with a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Refuse the new entry (the packet is dropped as `table_full`).
    #[default]
    Refuse,
    /// Evict the least recently used entry near the new entry's home slot.
    EvictLru,
}

/// The table could not take a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// Counters of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableStats {
    pub len: u64,
    pub capacity: u64,
    pub inserts: u64,
    pub removes: u64,
    pub expired: u64,
    pub evicted: u64,
    pub refused: u64,
}

/// Parameters of a per-flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSpec {
    /// Maximum live entries.
    pub capacity: usize,
    /// Default idle timeout of a new or touched entry.
    pub idle_timeout: Nanos,
    pub full_policy: FullPolicy,
}

/// A fixed-capacity hash table of `E` slots.
#[derive(Debug)]
pub struct FlowTable<E: Entry> {
    name: String,
    slots: Region<E>,
    mask: usize,
    spec: TableSpec,
    len: usize,
    cursor: usize,
    stats: TableStats,
}

impl<E: Entry> FlowTable<E> {
    /// Creates a table in `arena` with room for `spec.capacity` entries at a load factor of at
    /// most 3/4.
    pub fn new(arena: &mut Arena, name: &str, spec: TableSpec) -> Result<Self, StateError> {
        if spec.capacity == 0 {
            return Err(StateError::Size {
                table: name.to_string(),
                detail: "capacity must be at least 1".to_string(),
            });
        }
        let slots_wanted = spec.capacity.saturating_mul(4).div_ceil(3).max(8);
        let nslots = slots_wanted.checked_next_power_of_two().ok_or_else(|| StateError::Size {
            table: name.to_string(),
            detail: format!("capacity {} is too large", spec.capacity),
        })?;
        let slots = arena.region_for::<E>(name, nslots, spec.capacity)?;
        // A re-attached region keeps its entries (expired ones too: the sweep reclaims them).
        let len = if slots.restored() {
            slots.as_slice().iter().filter(|s| s.header().occupied != 0).count()
        } else {
            0
        };
        Ok(FlowTable {
            name: name.to_string(),
            slots,
            mask: nslots - 1,
            spec,
            len,
            cursor: 0,
            stats: TableStats { capacity: spec.capacity as u64, ..TableStats::default() },
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Live and not-yet-swept expired entries.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.spec.capacity
    }

    pub fn stats(&self) -> TableStats {
        TableStats { len: self.len as u64, ..self.stats }
    }

    /// A typed view of the table for a burst: every operation of the packet path, with the
    /// arena bytes cast to slots once instead of once per call.
    #[inline]
    pub fn view(&mut self) -> TableView<'_, E> {
        TableView {
            slots: self.slots.as_mut_slice(),
            mask: self.mask,
            spec: self.spec,
            len: &mut self.len,
            cursor: &mut self.cursor,
            stats: &mut self.stats,
        }
    }

    /// See [`TableView::prefetch`].
    #[inline]
    pub fn prefetch(&self, hash: u32) -> u32 {
        prefetch_in(self.slots.as_slice(), self.mask, hash)
    }

    /// See [`TableView::find`].
    #[inline]
    pub fn find(&self, hash: u32, key: &E::Key, now: Nanos) -> Option<FlowIdx> {
        find_in(self.slots.as_slice(), self.mask, hash, key, now)
    }

    /// See [`TableView::find_touch`].
    #[inline]
    pub fn find_touch(&mut self, hash: u32, key: &E::Key, now: Nanos, timeout: Nanos) -> Option<&mut E> {
        self.view().find_touch_owned(hash, key, now, timeout)
    }

    /// See [`TableView::insert`].
    pub fn insert(
        &mut self,
        hash: u32,
        key: E::Key,
        value: E::Value,
        now: Nanos,
    ) -> Result<FlowIdx, TableFull> {
        self.view().insert(hash, key, value, now)
    }

    /// The entry at `idx`, if occupied.
    #[inline]
    pub fn entry(&self, idx: FlowIdx) -> Option<&E> {
        self.slots.as_slice().get(idx.0 as usize).filter(|s| s.header().occupied != 0)
    }

    #[inline]
    pub fn get(&self, idx: FlowIdx) -> Option<&E::Value> {
        self.entry(idx).map(|e| e.value())
    }

    #[inline]
    pub fn get_mut(&mut self, idx: FlowIdx) -> Option<&mut E::Value> {
        self.view().get_mut_owned(idx)
    }

    /// See [`TableView::touch`].
    #[inline]
    pub fn touch(&mut self, idx: FlowIdx, now: Nanos, timeout: Nanos) {
        self.view().touch(idx, now, timeout)
    }

    /// What the table does with a new entry when full.
    pub fn full_policy(&self) -> FullPolicy {
        self.spec.full_policy
    }

    /// The table's default idle timeout.
    pub fn idle_timeout(&self) -> Nanos {
        self.spec.idle_timeout
    }

    /// See [`TableView::remove`].
    pub fn remove(&mut self, idx: FlowIdx) {
        self.view().remove(idx)
    }

    /// See [`TableView::expire`].
    pub fn expire(&mut self, now: Nanos, budget: usize, on_expire: impl FnMut(&E)) -> usize {
        self.view().expire(now, budget, on_expire)
    }

    /// Live entries (not expired at `now`).
    pub fn iter(&self, now: Nanos) -> impl Iterator<Item = &E> + '_ {
        self.slots.as_slice().iter().filter(move |s| s.header().occupied != 0 && s.header().expires > now.0)
    }

    /// Every occupied entry (expired or not), writable.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut E> + '_ {
        self.slots.as_mut_slice().iter_mut().filter(|s| s.header().occupied != 0)
    }

    /// True when the table was re-attached with a previous instance's entries.
    pub fn restored(&self) -> bool {
        self.slots.restored()
    }

    /// Number of slots (a power of two, at least 4/3 of the capacity).
    pub fn slots(&self) -> usize {
        self.mask + 1
    }
}

/// A table borrowed for a burst (see [`FlowTable::view`]).
#[derive(Debug)]
pub struct TableView<'a, E: Entry> {
    slots: &'a mut [E],
    mask: usize,
    spec: TableSpec,
    len: &'a mut usize,
    cursor: &'a mut usize,
    stats: &'a mut TableStats,
}

#[inline]
fn prefetch_in<E: Entry>(slots: &[E], mask: usize, hash: u32) -> u32 {
    // First and last byte: a slot of up to 128 bytes spans at most two cache lines.
    let bytes = slots.get(hash as usize & mask).map_or(&[][..], bytemuck::bytes_of);
    let first = bytes.first().copied().unwrap_or(0);
    let last = bytes.last().copied().unwrap_or(0);
    u32::from(first) | u32::from(last) << 8
}

#[inline]
fn find_in<E: Entry>(slots: &[E], mask: usize, hash: u32, key: &E::Key, now: Nanos) -> Option<FlowIdx> {
    let mut i = hash as usize & mask;
    for _ in 0..=mask {
        let s = slots.get(i)?;
        let h = s.header();
        if h.occupied == 0 {
            return None;
        }
        if h.hash == hash && s.key() == key {
            return (h.expires > now.0).then_some(FlowIdx(i as u32));
        }
        i = (i + 1) & mask;
    }
    None
}

impl<'a, E: Entry> TableView<'a, E> {
    /// Touches the home slot of `hash` so a lookup a little later finds it in cache.
    ///
    /// NFs call this for every packet of a burst before looking any of them up: the loads
    /// are independent, so the CPU overlaps their cache misses instead of paying them one
    /// after another (software prefetching without `unsafe` intrinsics). Returns a value
    /// derived from the slot so the load is not optimised away; pass it to
    /// `std::hint::black_box`.
    #[inline]
    pub fn prefetch(&self, hash: u32) -> u32 {
        prefetch_in(self.slots, self.mask, hash)
    }

    /// Finds the live entry for `key`.
    #[inline]
    pub fn find(&self, hash: u32, key: &E::Key, now: Nanos) -> Option<FlowIdx> {
        find_in(self.slots, self.mask, hash, key, now)
    }

    /// Finds the live entry for `key` and returns it writable, marking it used at `now` with
    /// expiry `now + timeout`: the common lookup-and-update of the packet path in one probe.
    #[inline]
    pub fn find_touch(&mut self, hash: u32, key: &E::Key, now: Nanos, timeout: Nanos) -> Option<&mut E> {
        let (mask, slots) = (self.mask, &mut *self.slots);
        TableView { slots, mask, spec: self.spec, len: self.len, cursor: self.cursor, stats: self.stats }
            .find_touch_owned(hash, key, now, timeout)
    }

    #[inline]
    fn find_touch_owned(self, hash: u32, key: &E::Key, now: Nanos, timeout: Nanos) -> Option<&'a mut E> {
        let mask = self.mask;
        let slots = self.slots;
        let mut i = hash as usize & mask;
        for _ in 0..=mask {
            let h = slots.get(i)?.header();
            if h.occupied == 0 {
                return None;
            }
            if h.hash == hash && slots.get(i)?.key() == key {
                let e = slots.get_mut(i)?;
                if e.header().expires <= now.0 {
                    return None;
                }
                e.header_mut().expires = now.saturating_add(timeout).0;
                return Some(e);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Inserts `key` → `value` (the caller has checked it is not live). Reuses an expired slot
    /// on the way when there is one.
    pub fn insert(
        &mut self,
        hash: u32,
        key: E::Key,
        value: E::Value,
        now: Nanos,
    ) -> Result<FlowIdx, TableFull> {
        let header = SlotHeader { hash, occupied: 1, expires: now.saturating_add(self.spec.idle_timeout).0 };
        let entry = E::assemble(header, key, value);
        let home = hash as usize & self.mask;
        // Reuse an expired slot on the probe path: removing it first would shift entries.
        if let Some(i) = self.probe_expired(home, now) {
            if let Some(s) = self.slots.get_mut(i) {
                *s = entry;
                self.stats.inserts += 1;
                self.stats.expired += 1;
                return Ok(FlowIdx(i as u32));
            }
        }
        if *self.len >= self.spec.capacity {
            match self.spec.full_policy {
                FullPolicy::Refuse => {
                    self.stats.refused += 1;
                    return Err(TableFull);
                }
                FullPolicy::EvictLru => {
                    let victim = self.lru_near(home).ok_or(TableFull)?;
                    self.remove_at(victim);
                    self.stats.removes -= 1;
                    self.stats.evicted += 1;
                }
            }
        }
        let mut i = home;
        let slots = &mut *self.slots;
        for _ in 0..=self.mask {
            let s = slots.get_mut(i).ok_or(TableFull)?;
            if s.header().occupied == 0 {
                *s = entry;
                *self.len += 1;
                self.stats.inserts += 1;
                return Ok(FlowIdx(i as u32));
            }
            i = (i + 1) & self.mask;
        }
        Err(TableFull)
    }

    fn probe_expired(&self, home: usize, now: Nanos) -> Option<usize> {
        let slots = &*self.slots;
        let mut i = home;
        for _ in 0..EVICT_WINDOW {
            let h = slots.get(i)?.header();
            if h.occupied == 0 {
                return None;
            }
            if h.expires <= now.0 {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    fn lru_near(&self, home: usize) -> Option<usize> {
        let slots = &*self.slots;
        (0..EVICT_WINDOW.min(self.mask + 1))
            .map(|d| (home + d) & self.mask)
            .filter_map(|i| slots.get(i).map(|s| (i, s.header())))
            .filter(|(_, h)| h.occupied != 0)
            .min_by_key(|(_, h)| h.expires)
            .map(|(i, _)| i)
    }

    /// The entry at `idx`, if occupied.
    #[inline]
    pub fn entry(&self, idx: FlowIdx) -> Option<&E> {
        self.slots.get(idx.0 as usize).filter(|s| s.header().occupied != 0)
    }

    #[inline]
    pub fn get(&self, idx: FlowIdx) -> Option<&E::Value> {
        self.entry(idx).map(|e| e.value())
    }

    #[inline]
    pub fn get_mut(&mut self, idx: FlowIdx) -> Option<&mut E::Value> {
        self.slots.get_mut(idx.0 as usize).filter(|s| s.header().occupied != 0).map(|s| s.value_mut())
    }

    fn get_mut_owned(self, idx: FlowIdx) -> Option<&'a mut E::Value> {
        self.slots.get_mut(idx.0 as usize).filter(|s| s.header().occupied != 0).map(|s| s.value_mut())
    }

    /// Marks the entry used at `now` and pushes its expiry to `now + timeout`.
    #[inline]
    pub fn touch(&mut self, idx: FlowIdx, now: Nanos, timeout: Nanos) {
        if let Some(s) = self.slots.get_mut(idx.0 as usize) {
            s.header_mut().expires = now.saturating_add(timeout).0;
        }
    }

    /// Removes the entry at `idx`.
    pub fn remove(&mut self, idx: FlowIdx) {
        if self.entry(idx).is_some() {
            self.remove_at(idx.0 as usize);
        }
    }

    /// Backward-shift deletion: pull later members of the probe run into the hole so lookups
    /// never need tombstones.
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.mask;
        let slots = &mut *self.slots;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(next) = slots.get(j).copied() else { break };
            if next.header().occupied == 0 {
                break;
            }
            let home = next.header().hash as usize & mask;
            // `next` may move into the hole only if its home is not in (hole, j].
            let dist_hole = hole.wrapping_sub(home) & mask;
            let dist_j = j.wrapping_sub(home) & mask;
            if dist_hole <= dist_j {
                if let Some(h) = slots.get_mut(hole) {
                    *h = next;
                }
                hole = j;
            }
        }
        if let Some(h) = slots.get_mut(hole) {
            *h = E::zeroed();
        }
        *self.len = self.len.saturating_sub(1);
        self.stats.removes += 1;
    }

    /// Sweeps up to `budget` slots from where the last sweep stopped, removing expired entries
    /// and reporting each to `on_expire` first. Call once per burst with a small budget.
    pub fn expire(&mut self, now: Nanos, budget: usize, mut on_expire: impl FnMut(&E)) -> usize {
        let mut removed = 0;
        let mut left = budget.min(self.mask + 1);
        while left > 0 {
            let i = *self.cursor;
            let expired = self
                .slots
                .get(i)
                .filter(|s| s.header().occupied != 0 && s.header().expires <= now.0)
                .copied();
            match expired {
                Some(e) => {
                    on_expire(&e);
                    self.remove_at(i);
                    self.stats.removes -= 1;
                    self.stats.expired += 1;
                    removed += 1;
                    // The slot may now hold a shifted entry: look at it again.
                }
                None => *self.cursor = (i + 1) & self.mask,
            }
            left -= 1;
        }
        removed
    }
}
