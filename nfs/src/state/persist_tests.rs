//! State directories: tables survive their process, mismatched layouts start cold, one
//! process per directory, and the clock continues.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::ids::CoreId;
use crate::time::Nanos;

crate::table_entry! {
    struct Kept { key: FlowKey, value: u64 }
}

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nflet-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn key(n: u32) -> FlowKey {
    FlowKey::new(FAMILY_V4, 6, v4(n.to_be_bytes()), (n % 60000) as u16, v4([10, 0, 0, 1]), 80).0
}

fn spec(capacity: usize) -> TableSpec {
    TableSpec { capacity, idle_timeout: Nanos::from_secs(100), full_policy: FullPolicy::Refuse }
}

/// The table `t` of `capacity` on core 1 of a two-core appliance, from `dir`.
fn open(dir: &TempDir, capacity: usize) -> (Arena, FlowTable<Kept>) {
    let state = Arc::new(StateDir::open(&dir.0, 2).unwrap());
    let mut arena = Arena::new(CoreId(1), 64 << 20, Backing::Normal).with_state_dir(state);
    let t = FlowTable::new(&mut arena, "fw.connections", spec(capacity)).unwrap();
    (arena, t)
}

#[test]
fn a_table_is_reattached_with_its_entries() {
    let dir = TempDir::new("reattach");
    let now = Nanos::from_secs(5);
    {
        let (arena, mut t) = open(&dir, 1000);
        assert_eq!((arena.persisted(), t.restored()), ((0, 1), false));
        for n in 0..700 {
            let k = key(n);
            t.insert(k.hash(), k, u64::from(n) * 3, now).unwrap();
        }
        // Removals shift entries: the restored layout must be the shifted one.
        for n in (0..700).step_by(7) {
            let k = key(n);
            let i = t.find(k.hash(), &k, now).unwrap();
            t.remove(i);
        }
    }
    assert!(dir.0.join("core1/fw.connections").is_file());
    assert!(dir.0.join("core1/fw.connections.meta").is_file());
    let (arena, t) = open(&dir, 1000);
    assert_eq!((arena.persisted(), t.restored(), t.len()), ((1, 0), true, 600));
    for n in 0..700 {
        let k = key(n);
        let got = t.find(k.hash(), &k, now).and_then(|i| t.get(i)).copied();
        assert_eq!(got, (n % 7 != 0).then_some(u64::from(n) * 3), "entry {n}");
    }
}

#[test]
fn another_layout_starts_cold() {
    let dir = TempDir::new("cold");
    {
        let (_a, mut t) = open(&dir, 1000);
        let k = key(1);
        t.insert(k.hash(), k, 9, Nanos(1)).unwrap();
    }
    // Capacity 1100 has the same slot count (2048) but is another layout.
    let (arena, t) = open(&dir, 1100);
    assert_eq!((arena.persisted(), t.restored(), t.len()), ((0, 1), false, 0));
    assert!(t.iter(Nanos::ZERO).next().is_none(), "zeroed");
    let meta = std::fs::read_to_string(dir.0.join("core1/fw.connections.meta")).unwrap();
    assert!(meta.contains("capacity = 1100") && meta.contains("Kept"), "{meta}");
    drop((arena, t));
    // Another core count too.
    let state = Arc::new(StateDir::open(&dir.0, 4).unwrap());
    let mut arena = Arena::new(CoreId(1), 64 << 20, Backing::Normal).with_state_dir(state);
    let t: FlowTable<Kept> = FlowTable::new(&mut arena, "fw.connections", spec(1100)).unwrap();
    assert_eq!((arena.persisted(), t.restored()), ((0, 1), false));
    // And another slot type under the same name.
    drop((arena, t));
    crate::table_entry! {
        struct Other { key: FlowKey, value: [u64; 2] }
    }
    let state = Arc::new(StateDir::open(&dir.0, 4).unwrap());
    let mut arena = Arena::new(CoreId(1), 64 << 20, Backing::Normal).with_state_dir(state);
    let t: FlowTable<Other> = FlowTable::new(&mut arena, "fw.connections", spec(1100)).unwrap();
    assert_eq!((arena.persisted(), t.restored()), ((0, 1), false));
}

#[test]
fn a_directory_serves_one_instance_and_one_table_per_name() {
    let dir = TempDir::new("lock");
    let first = StateDir::open(&dir.0, 1).unwrap();
    let e = StateDir::open(&dir.0, 1).unwrap_err().to_string();
    assert!(e.contains("locked by another nflet") && e.contains(&dir.0.display().to_string()), "{e}");
    let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal).with_state_dir(Arc::new(first));
    let _t: FlowTable<Kept> = FlowTable::new(&mut arena, "t", spec(10)).unwrap();
    let e = FlowTable::<Kept>::new(&mut arena, "t", spec(10)).unwrap_err().to_string();
    assert!(e.contains("second table"), "{e}");
    drop(_t);
    drop(arena);
    assert!(StateDir::open(&dir.0, 1).is_ok(), "the lock goes with its holder");
}

#[test]
fn tables_no_longer_configured_are_removed() {
    let dir = TempDir::new("prune");
    drop(open(&dir, 100));
    // The next instance has another table, and on both cores.
    let state = Arc::new(StateDir::open(&dir.0, 2).unwrap());
    for core in 0..2u16 {
        let mut arena =
            Arena::new(CoreId(core), 64 << 20, Backing::Normal).with_state_dir(Arc::clone(&state));
        let _keep: FlowTable<Kept> = FlowTable::new(&mut arena, "fw.keep", spec(10)).unwrap();
    }
    assert_eq!(state.prune(), ["core1/fw.connections"]);
    assert!(!dir.0.join("core1/fw.connections.meta").exists());
    assert!(dir.0.join("core1/fw.keep").is_file() && dir.0.join("core0/fw.keep.meta").is_file());
}

#[test]
fn the_clock_continues_across_a_restart() {
    let dir = TempDir::new("clock");
    let state = StateDir::open(&dir.0, 1).unwrap();
    assert_eq!(state.continued_clock(), None);
    state.save_clock(Nanos::from_secs(3600)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    let t = state.continued_clock().unwrap();
    assert!(t >= Nanos::from_millis(3_600_030) && t < Nanos::from_secs(3610), "{t:?}");
    let clock = crate::time::MonotonicClock::starting_at(t);
    use crate::time::Clock;
    assert!(clock.now() >= t);
}

/// The same round trip on hugetlbfs, where files take no write(2): run with
/// `NFLET_HUGETLBFS=/mnt/huge cargo test -p nflet-nfs hugetlbfs -- --ignored` on a mounted
/// hugetlbfs with a few free 2 MiB pages.
#[test]
#[ignore = "needs a mounted hugetlbfs named by NFLET_HUGETLBFS"]
fn a_table_is_reattached_on_hugetlbfs() {
    let root = PathBuf::from(std::env::var("NFLET_HUGETLBFS").expect("NFLET_HUGETLBFS"));
    let dir = TempDir(root.join(format!("nflet-state-{}", std::process::id())));
    let now = Nanos::from_secs(1);
    {
        let (arena, mut t) = open(&dir, 1000);
        assert_eq!(arena.page_mix(), (1, 0), "a hugepage-backed region");
        let k = key(42);
        t.insert(k.hash(), k, 4242, now).unwrap();
        let state = StateDir::open(&dir.0.join("clock-test"), 1).unwrap();
        assert!(state.is_huge());
        state.save_clock(Nanos::from_secs(7)).unwrap();
        assert!(state.continued_clock().unwrap() >= Nanos::from_secs(7));
    }
    let (arena, t) = open(&dir, 1000);
    assert_eq!(arena.persisted(), (1, 0));
    let k = key(42);
    assert_eq!(t.find(k.hash(), &k, now).and_then(|i| t.get(i)).copied(), Some(4242));
}
