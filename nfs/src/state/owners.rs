//! Which core owns each unit of a release-consistent resource, readable by every core.
//!
//! Serpens-style steering by state ownership: when a [`Release`](crate::state::Release)
//! resource is made of addressable units (the NAT's public ports), a packet that names a unit
//! (a reply to a public port) must be processed by the core holding the state that unit
//! belongs to. An [`OwnerMap`] records, per unit, the core whose share last took it in; the
//! dataplane reads it at ingress (before any chain runs) to steer the packet there.
//!
//! Promises:
//! - One byte per unit, written only when a unit enters a core's share (the initial split and
//!   refills from the common reserve: rare, batched moments) and never on the allocation path;
//!   read with one atomic load. A unit is in at most one share at a time, so each entry has one
//!   writer at a time.
//! - Writes use `Release` and reads `Acquire` (plain moves on x86 and cheap elsewhere): a core
//!   publishes a unit's owner before it can allocate the unit, so any packet naming an
//!   allocated unit sees its owner.
//! - A unit given back to the reserve keeps its last owner until another core takes it in: a
//!   packet naming it goes to that core and finds no state there, as it would anywhere.
//!   Units never in any share (reserved, out of range) have no owner.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::ids::CoreId;

/// The owner byte of a unit nobody has taken in.
const NONE: u8 = u8::MAX;

/// Per-unit owning core, shared by all cores of one NF instance (see the module doc).
#[derive(Debug)]
pub struct OwnerMap {
    owners: Box<[AtomicU8]>,
}

impl OwnerMap {
    /// The most cores a map can name (one byte per unit, one value reserved for "none").
    pub const MAX_CORES: usize = NONE as usize;

    /// A map of `units` units, none owned.
    pub fn new(units: usize) -> OwnerMap {
        OwnerMap { owners: (0..units).map(|_| AtomicU8::new(NONE)).collect() }
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Records that `core`'s share took in `unit` (ignored for an out-of-range unit or a core
    /// the map cannot name).
    #[inline]
    pub fn claim(&self, unit: usize, core: CoreId) {
        if let (Some(o), Ok(c)) = (self.owners.get(unit), u8::try_from(core.0)) {
            if c != NONE {
                o.store(c, Ordering::Release);
            }
        }
    }

    /// The core that owns `unit`, if any.
    #[inline]
    pub fn owner(&self, unit: usize) -> Option<CoreId> {
        let o = self.owners.get(unit)?.load(Ordering::Acquire);
        (o != NONE).then_some(CoreId(u16::from(o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_back_and_out_of_range_is_ignored() {
        let m = OwnerMap::new(8);
        assert_eq!((m.len(), m.owner(3)), (8, None));
        m.claim(3, CoreId(1));
        m.claim(4, CoreId(0));
        m.claim(8, CoreId(1));
        m.claim(5, CoreId(255));
        assert_eq!(
            (0..9).map(|u| m.owner(u)).collect::<Vec<_>>(),
            [None, None, None, Some(CoreId(1)), Some(CoreId(0)), None, None, None, None]
        );
        m.claim(3, CoreId(0));
        assert_eq!(m.owner(3), Some(CoreId(0)), "a later claim moves the unit");
    }
}
