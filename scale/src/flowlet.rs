//! Flowlet detection (SNF §4.1, Pseudocode 1 lines 14–25) and the bounded table of flows the
//! director tracks.
//!
//! Flows are keyed by the direction-normalised 5-tuple ([`FlowKey`]), so both directions of a
//! connection share one flowlet and one owner. A packet starts a new flowlet when the flow was
//! idle for more than the timeout T, or when it would take the current flowlet past the size
//! threshold B. The table has a fixed capacity: a new flow beyond it is refused and counted,
//! never allowed to grow the table; flows idle longer than the idle timeout are swept.

use hashbrown::HashMap;
use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::Bytes;
use nflet_nfs::time::Nanos;

use crate::config::Metric;

/// Why a packet starts a flowlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowletStart {
    /// The first packet of a flow the director did not know.
    NewFlow,
    /// The flow was idle for more than T.
    Idle,
    /// The current flowlet would exceed B bytes with this packet.
    Size,
    /// A periodic reallocation (baseline policy) cut the flow here.
    Realloc,
    /// The worker of the flow's flowlet failed: the flow is cut and placed anew.
    Failover,
}

/// What the director knows of a flowlet in progress (or the last one of a flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowletStats {
    pub start: Nanos,
    pub last: Nanos,
    pub bytes: Bytes,
    pub packets: u64,
}

impl FlowletStats {
    /// A flowlet whose first packet, `len` bytes long, arrives at `now`.
    pub fn first(now: Nanos, len: Bytes) -> FlowletStats {
        FlowletStats { start: now, last: now, bytes: len, packets: 1 }
    }

    /// Adds a packet to the flowlet.
    pub fn add(&mut self, now: Nanos, len: Bytes) {
        self.last = self.last.max(now);
        self.bytes = Bytes(self.bytes.0.saturating_add(len.0));
        self.packets = self.packets.saturating_add(1);
    }

    /// The flowlet's size in `metric`.
    pub fn amount(&self, metric: Metric) -> u64 {
        match metric {
            Metric::Bytes => self.bytes.0,
            Metric::Packets => self.packets,
        }
    }
}

/// Pseudocode 1, FLOWLETDETECTOR: does a packet of `len` bytes arriving at `now` start a new
/// flowlet after `current`? "More than T" and "P.size + F.size > B" are both strict.
#[inline]
pub fn detect(
    current: &FlowletStats,
    now: Nanos,
    len: Bytes,
    timeout: Nanos,
    max_bytes: Bytes,
) -> Option<FlowletStart> {
    if now.saturating_sub(current.last) > timeout {
        Some(FlowletStart::Idle)
    } else if current.bytes.0.saturating_add(len.0) > max_bytes.0 {
        Some(FlowletStart::Size)
    } else {
        None
    }
}

/// A flow the table refused, or the table's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableCounters {
    /// New flows refused because the table was full.
    pub refused: u64,
    /// Flows forgotten after being idle for the idle timeout.
    pub expired: u64,
}

/// The table was full; the flow is not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// A fixed-capacity map from flow key to the director's per-flow record.
#[derive(Debug)]
pub struct FlowTable<V> {
    map: HashMap<FlowKey, V>,
    capacity: usize,
    counters: TableCounters,
}

impl<V> FlowTable<V> {
    /// A table for at most `capacity` flows, allocated up front.
    pub fn new(capacity: usize) -> FlowTable<V> {
        FlowTable { map: HashMap::with_capacity(capacity), capacity, counters: TableCounters::default() }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    pub fn get(&self, key: &FlowKey) -> Option<&V> {
        self.map.get(key)
    }

    pub fn get_mut(&mut self, key: &FlowKey) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// The record of `key`, created by `make` when absent and there is room. The `bool` is
    /// true when the record was just created.
    pub fn get_or_insert(
        &mut self,
        key: FlowKey,
        make: impl FnOnce() -> V,
    ) -> Result<(&mut V, bool), TableFull> {
        let full = self.map.len() >= self.capacity;
        match self.map.entry(key) {
            hashbrown::hash_map::Entry::Occupied(e) => Ok((e.into_mut(), false)),
            hashbrown::hash_map::Entry::Vacant(e) => {
                if full {
                    self.counters.refused += 1;
                    Err(TableFull)
                } else {
                    Ok((e.insert(make()), true))
                }
            }
        }
    }

    /// Forgets every flow for which `expired` says so; O(flows), so callers run it rarely.
    pub fn sweep(&mut self, mut expired: impl FnMut(&V) -> bool) -> usize {
        let before = self.map.len();
        self.map.retain(|_, v| !expired(v));
        let gone = before - self.map.len();
        self.counters.expired += gone as u64;
        gone
    }

    /// Every tracked flow with its key (snapshots).
    pub fn iter(&self) -> impl Iterator<Item = (&FlowKey, &V)> {
        self.map.iter()
    }

    /// Every tracked flow, for rare whole-table updates (a worker retiring).
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values()
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.map.values_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::flow::{v4, FAMILY_V4};

    const T: Nanos = Nanos(500_000);
    const B: Bytes = Bytes(15_000);

    #[test]
    fn boundaries_by_timeout_and_size() {
        // (flowlet so far: last packet at, bytes), packet at, packet len, expected
        let cases = [
            ((1_000_000, 1_000), 1_000_000 + 500_000, 100, None), // gap == T: same flowlet
            ((1_000_000, 1_000), 1_000_000 + 500_001, 100, Some(FlowletStart::Idle)),
            ((1_000_000, 14_000), 1_000_100, 1_000, None), // exactly B
            ((1_000_000, 14_000), 1_000_100, 1_001, Some(FlowletStart::Size)),
            ((1_000_000, 14_000), 2_000_000, 1_001, Some(FlowletStart::Idle)), // idle wins
            ((1_000_000, 0), 1_000_000, 15_001, Some(FlowletStart::Size)),     // jumbo alone
            ((1_000_000, 100), 900_000, 100, None),                            // reordered timestamp: no gap
        ];
        for ((last, bytes), now, len, want) in cases {
            let f = FlowletStats { start: Nanos(0), last: Nanos(last), bytes: Bytes(bytes), packets: 1 };
            assert_eq!(
                detect(&f, Nanos(now), Bytes(len), T, B),
                want,
                "last {last} bytes {bytes} now {now} len {len}"
            );
        }
    }

    #[test]
    fn stats_accumulate_in_both_metrics() {
        let mut f = FlowletStats::first(Nanos(10), Bytes(100));
        f.add(Nanos(20), Bytes(1400));
        f.add(Nanos(15), Bytes(64));
        assert_eq!(f, FlowletStats { start: Nanos(10), last: Nanos(20), bytes: Bytes(1564), packets: 3 });
        assert_eq!((f.amount(Metric::Bytes), f.amount(Metric::Packets)), (1564, 3));
    }

    #[test]
    fn table_is_bounded_refuses_and_sweeps() {
        let key = |p: u16| FlowKey::new(FAMILY_V4, 17, v4([10, 0, 0, 1]), p, v4([10, 0, 0, 2]), 53).0;
        let mut t: FlowTable<u64> = FlowTable::new(2);
        assert_eq!(t.get_or_insert(key(1), || 1).map(|(v, new)| (*v, new)), Ok((1, true)));
        assert_eq!(t.get_or_insert(key(1), || 9).map(|(v, new)| (*v, new)), Ok((1, false)));
        assert_eq!(t.get_or_insert(key(2), || 2).map(|(v, new)| (*v, new)), Ok((2, true)));
        assert_eq!(t.get_or_insert(key(3), || 3).map(|(v, new)| (*v, new)), Err(TableFull));
        // A known flow is still found when the table is full.
        assert!(t.get_or_insert(key(2), || 0).is_ok());
        assert_eq!(t.counters(), TableCounters { refused: 1, expired: 0 });
        assert_eq!(t.sweep(|v| *v == 1), 1);
        assert_eq!(t.get_or_insert(key(3), || 3).map(|(v, new)| (*v, new)), Ok((3, true)));
        assert_eq!((t.len(), t.counters()), (2, TableCounters { refused: 1, expired: 1 }));
    }
}
