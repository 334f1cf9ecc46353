//! Table-driven tests of [`FlowTable`](super::FlowTable): probing, deletion, expiry, policies.

use super::*;
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::ids::CoreId;
use crate::time::Nanos;

crate::table_entry! {
    struct Counter { key: FlowKey, value: u64 }
}

fn key(n: u32) -> FlowKey {
    let (k, _) = FlowKey::new(FAMILY_V4, 17, v4(n.to_be_bytes()), (n % 60000) as u16, v4([10, 0, 0, 1]), 53);
    k
}

fn table(capacity: usize, policy: FullPolicy) -> FlowTable<Counter> {
    let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
    let spec = TableSpec { capacity, idle_timeout: Nanos::from_secs(10), full_policy: policy };
    FlowTable::new(&mut arena, "test", spec).unwrap()
}

#[test]
fn insert_find_update_remove() {
    let mut t = table(1000, FullPolicy::Refuse);
    let now = Nanos(1);
    for n in 0..1000 {
        let k = key(n);
        assert!(t.find(k.hash(), &k, now).is_none());
        t.insert(k.hash(), k, u64::from(n), now).unwrap();
    }
    assert_eq!(t.len(), 1000);
    for n in 0..1000 {
        let k = key(n);
        let i = t.find(k.hash(), &k, now).unwrap();
        assert_eq!(*t.get(i).unwrap(), u64::from(n));
        *t.get_mut(i).unwrap() += 1;
    }
    // Remove every other entry; the rest must stay reachable (backward shift keeps runs intact).
    for n in (0..1000).step_by(2) {
        let k = key(n);
        let i = t.find(k.hash(), &k, now).unwrap();
        t.remove(i);
    }
    assert_eq!(t.len(), 500);
    for n in 0..1000 {
        let k = key(n);
        let found = t.find(k.hash(), &k, now).map(|i| *t.get(i).unwrap());
        if n % 2 == 0 {
            assert_eq!(found, None, "{n}");
        } else {
            assert_eq!(found, Some(u64::from(n) + 1), "{n}");
        }
    }
    let s = t.stats();
    assert_eq!((s.inserts, s.removes, s.len), (1000, 500, 500));
}

#[test]
fn colliding_hashes_survive_removal_in_any_order() {
    let mut t = table(64, FullPolicy::Refuse);
    let now = Nanos(0);
    // Same hash for all keys forces one long probe run.
    let keys: Vec<FlowKey> = (0..40).map(key).collect();
    for (n, k) in keys.iter().enumerate() {
        t.insert(7, *k, n as u64, now).unwrap();
    }
    for order in [3usize, 0, 39, 20, 21, 1] {
        let i = t.find(7, &keys[order], now).unwrap();
        t.remove(i);
        for (n, k) in keys.iter().enumerate() {
            let removed =
                [3usize, 0, 39, 20, 21, 1].iter().take_while(|o| **o != order).any(|o| *o == n) || n == order;
            assert_eq!(t.find(7, k, now).is_some(), !removed, "key {n} after removing {order}");
        }
    }
}

#[test]
fn full_table_policies() {
    struct Case {
        policy: FullPolicy,
        accepts: bool,
        evicted: u64,
        refused: u64,
    }
    let cases = [
        Case { policy: FullPolicy::Refuse, accepts: false, evicted: 0, refused: 1 },
        Case { policy: FullPolicy::EvictLru, accepts: true, evicted: 1, refused: 0 },
    ];
    for c in cases {
        let mut t = table(4, c.policy);
        for n in 0..4 {
            let k = key(n);
            t.insert(k.hash(), k, 0, Nanos(u64::from(n) + 1)).unwrap();
        }
        let k = key(99);
        let r = t.insert(k.hash(), k, 0, Nanos(10));
        assert_eq!(r.is_ok(), c.accepts, "{:?}", c.policy);
        let s = t.stats();
        assert_eq!((s.evicted, s.refused, s.len), (c.evicted, c.refused, 4), "{:?}", c.policy);
    }
}

#[test]
fn eviction_picks_least_recently_used() {
    let mut t = table(4, FullPolicy::EvictLru);
    for n in 0..4 {
        let k = key(n);
        t.insert(k.hash(), k, 0, Nanos(100)).unwrap();
    }
    // Touch all but key 2.
    for n in [0, 1, 3] {
        let k = key(n);
        let i = t.find(k.hash(), &k, Nanos(200)).unwrap();
        t.touch(i, Nanos(200), Nanos::from_secs(10));
    }
    let k = key(50);
    t.insert(k.hash(), k, 0, Nanos(300)).unwrap();
    let k2 = key(2);
    assert!(t.find(k2.hash(), &k2, Nanos(300)).is_none());
    for n in [0, 1, 3, 50] {
        let k = key(n);
        assert!(t.find(k.hash(), &k, Nanos(300)).is_some(), "{n}");
    }
}

#[test]
fn idle_entries_expire_on_the_virtual_clock() {
    let mut t = table(100, FullPolicy::Refuse);
    for n in 0..100 {
        let k = key(n);
        t.insert(k.hash(), k, 0, Nanos::ZERO).unwrap();
    }
    // Keep the first ten alive.
    let t5 = Nanos::from_secs(5);
    for n in 0..10 {
        let k = key(n);
        let i = t.find(k.hash(), &k, t5).unwrap();
        t.touch(i, t5, Nanos::from_secs(10));
    }
    let t11 = Nanos::from_secs(11);
    // Expired entries are invisible before any sweep...
    let k = key(50);
    assert!(t.find(k.hash(), &k, t11).is_none());
    assert_eq!(t.iter(t11).count(), 10);
    // ...and the sweep reclaims exactly them, reporting each once.
    let mut seen = 0;
    let mut total = 0;
    for _ in 0..100 {
        total += t.expire(t11, 8, |_| seen += 1);
    }
    assert_eq!((total, seen, t.len()), (90, 90, 10));
    assert_eq!(t.stats().expired, 90);
}

#[test]
fn expired_slot_is_reused_by_insert() {
    let mut t = table(2, FullPolicy::Refuse);
    let (a, b, c) = (key(1), key(2), key(3));
    t.insert(a.hash(), a, 1, Nanos::ZERO).unwrap();
    t.insert(b.hash(), b, 2, Nanos::ZERO).unwrap();
    // Full, but both are expired at t = 20 s: the insert succeeds if c's probe path meets one.
    let late = Nanos::from_secs(20);
    t.expire(late, 1024, |_| {});
    assert!(t.insert(c.hash(), c, 3, late).is_ok());
}

#[test]
fn zero_capacity_is_an_error() {
    let mut arena = Arena::new(CoreId(0), 1 << 20, Backing::Normal);
    let spec = TableSpec { capacity: 0, idle_timeout: Nanos(1), full_policy: FullPolicy::Refuse };
    assert!(FlowTable::<Counter>::new(&mut arena, "z", spec).is_err());
}
