//! Neighbours: IPv4 address to MAC, learned from ARP, bounded, aged, and shared between cores
//! eventually.
//!
//! Each core owns a [`NeighTable`] and reads only it on the packet path. A neighbour learned
//! on one core (ARP frames all reach one core: their flow key is empty, so they hash alike)
//! is also recorded in the core's [`Learned`] delta and, being new, folded into the shared
//! table ([`Eventual`](crate::state::Eventual)) at once; at burst boundaries every `sync_ms`
//! each core merges the shared table into its own. A core that meets a next hop it does not
//! know merges right away (at most every `CATCH_UP`) before it asks for it, so a neighbour
//! learned on one core is usable on the others for their very next packet; only a
//! neighbour nobody knows triggers an ARP request (rate-limited, see [`Pending`]).
//!
//! A merge copies the shared table (bounded by `neighbour_capacity`) and walks it once, off
//! the packet path, every `sync_ms`: cheap for the hundreds to thousands of neighbours a
//! routed segment has.
//!
//! Entries expire `neighbour_timeout` after they were last seen (a lookup ignores expired
//! entries, so the next packet re-resolves the neighbour). A full table makes room by
//! replacing an expired entry; if there is none, the new neighbour is refused and counted.

use std::collections::HashMap;

use crate::state::Delta;
use crate::time::Nanos;

/// A learned neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neigh {
    pub mac: [u8; 6],
    /// When the neighbour last announced itself.
    pub seen: Nanos,
}

/// What learning did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    New,
    Refreshed,
    /// An older sighting than the one held: ignored.
    Stale,
    Full,
}

/// A bounded neighbour table with its capacity and idle timeout.
#[derive(Debug, Clone, Default)]
pub struct NeighTable {
    map: HashMap<[u8; 4], Neigh>,
    cap: usize,
    timeout: Nanos,
}

impl NeighTable {
    pub fn new(cap: usize, timeout: Nanos) -> NeighTable {
        NeighTable { map: HashMap::with_capacity(cap), cap, timeout }
    }

    fn expired(&self, n: &Neigh, now: Nanos) -> bool {
        now.saturating_sub(n.seen) >= self.timeout
    }

    /// The MAC of `ip` if it was seen within the timeout.
    #[inline]
    pub fn lookup(&self, ip: [u8; 4], now: Nanos) -> Option<[u8; 6]> {
        self.map.get(&ip).filter(|n| !self.expired(n, now)).map(|n| n.mac)
    }

    /// Records that `ip` is at `mac` as of `seen`.
    pub fn learn(&mut self, ip: [u8; 4], mac: [u8; 6], seen: Nanos) -> Learn {
        if let Some(n) = self.map.get_mut(&ip) {
            if seen < n.seen {
                return Learn::Stale;
            }
            *n = Neigh { mac, seen };
            return Learn::Refreshed;
        }
        if self.map.len() >= self.cap {
            let timeout = self.timeout;
            let victim =
                self.map.iter().find(|(_, n)| seen.saturating_sub(n.seen) >= timeout).map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    self.map.remove(&k);
                }
                None => return Learn::Full,
            }
        }
        self.map.insert(ip, Neigh { mac, seen });
        Learn::New
    }

    /// Every neighbour, live or not.
    pub fn iter(&self) -> impl Iterator<Item = ([u8; 4], Neigh)> + '_ {
        self.map.iter().map(|(k, n)| (*k, *n))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }
}

/// One core's neighbours learned since its last merge: the [`Delta`] of the shared table.
#[derive(Debug, Default)]
pub struct Learned {
    items: Vec<([u8; 4], Neigh)>,
    cap: usize,
    timeout: Nanos,
}

impl Learned {
    pub fn new(cap: usize, timeout: Nanos) -> Learned {
        Learned { items: Vec::with_capacity(cap), cap, timeout }
    }

    /// Queues `ip` for the shared table; beyond `cap` per interval, later ones wait for the
    /// next sighting (returns false).
    pub fn push(&mut self, ip: [u8; 4], n: Neigh) -> bool {
        if self.items.len() >= self.cap {
            return false;
        }
        self.items.push((ip, n));
        true
    }
}

impl Delta for Learned {
    type Global = NeighTable;

    fn drain_into(&mut self, global: &mut NeighTable) {
        if global.cap == 0 {
            *global = NeighTable::new(self.cap, self.timeout);
        }
        for (ip, n) in self.items.drain(..) {
            global.learn(ip, n.mac, n.seen);
        }
    }
}

/// Next hops with an ARP request in flight, so a burst towards an unresolved neighbour sends
/// one request per `retry`, not one per packet.
#[derive(Debug)]
pub struct Pending {
    asked: HashMap<[u8; 4], Nanos>,
    cap: usize,
    retry: Nanos,
}

impl Pending {
    pub fn new(cap: usize, retry: Nanos) -> Pending {
        Pending { asked: HashMap::with_capacity(cap), cap, retry }
    }

    /// True (and noted) if a request for `hop` may go out now.
    pub fn may_ask(&mut self, hop: [u8; 4], now: Nanos) -> bool {
        let retry = self.retry;
        if let Some(t) = self.asked.get_mut(&hop) {
            if now.saturating_sub(*t) < retry {
                return false;
            }
            *t = now;
            return true;
        }
        if self.asked.len() >= self.cap {
            self.asked.retain(|_, t| now.saturating_sub(*t) < retry);
            if self.asked.len() >= self.cap {
                return false;
            }
        }
        self.asked.insert(hop, now);
        true
    }

    /// `hop` answered.
    pub fn resolved(&mut self, hop: [u8; 4]) {
        self.asked.remove(&hop);
    }
}
