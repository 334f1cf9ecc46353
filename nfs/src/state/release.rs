//! Release-consistent global state: a resource split into per-core shares.
//!
//! Serpens' NAT port pool is the model: every core allocates from its own share with no
//! synchronisation; a core whose share runs dry first takes a batch from a common reserve and,
//! if the reserve is empty too, raises a request that the other cores answer at their next
//! burst boundary by releasing half of their share into the reserve. Only those rare moments
//! take a (spin) lock, never an ordinary packet.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// A resource that can be split into shares and merged back (the split/merge hooks).
pub trait Splittable: Send + Sized + 'static {
    /// Units left in this share.
    fn available(&self) -> usize;
    /// Removes up to `n` units from this share and returns them as a new share.
    fn split_off(&mut self, n: usize) -> Self;
    /// Adds another share's units to this one.
    fn merge(&mut self, other: Self);
}

#[derive(Debug)]
struct Shared<R> {
    reserve: spin::Mutex<R>,
    /// Number of cores currently asking for more.
    hungry: AtomicU32,
}

/// One core's share of a release-consistent resource.
#[derive(Debug)]
pub struct Release<R> {
    local: R,
    shared: Arc<Shared<R>>,
    batch: usize,
    asking: bool,
    rebalances: u64,
}

impl<R: Splittable> Release<R> {
    /// Splits `whole` evenly into `cores` shares (the remainder stays in the reserve) and
    /// returns the per-core handles. `batch` is how much a dry core takes from the reserve.
    pub fn group(mut whole: R, cores: usize, batch: usize) -> Vec<Release<R>> {
        let cores = cores.max(1);
        let each = whole.available() / cores;
        let shares: Vec<R> = (0..cores).map(|_| whole.split_off(each)).collect();
        let shared = Arc::new(Shared { reserve: spin::Mutex::new(whole), hungry: AtomicU32::new(0) });
        shares
            .into_iter()
            .map(|local| Release {
                local,
                shared: Arc::clone(&shared),
                batch: batch.max(1),
                asking: false,
                rebalances: 0,
            })
            .collect()
    }

    /// This core's share, read-only.
    pub fn local_ref(&self) -> &R {
        &self.local
    }

    /// This core's share, for allocation on the packet path.
    #[inline]
    pub fn local(&mut self) -> &mut R {
        &mut self.local
    }

    pub fn available(&self) -> usize {
        self.local.available()
    }

    /// Called when the local share is empty: takes a batch from the reserve. Returns false if
    /// the reserve is empty too; the other cores are then asked to release part of their
    /// shares, and the caller may count the packet as a drop (exhaustion) or retry next burst.
    pub fn refill(&mut self) -> bool {
        self.refill_with(|_| {})
    }

    /// [`Release::refill`], calling `taken` with the batch before it joins this core's share
    /// (to record which units this core now holds, e.g. in an
    /// [`OwnerMap`](crate::state::OwnerMap)).
    pub fn refill_with(&mut self, taken: impl FnOnce(&R)) -> bool {
        {
            let mut reserve = self.shared.reserve.lock();
            if reserve.available() > 0 {
                let got = reserve.split_off(self.batch);
                drop(reserve);
                taken(&got);
                self.local.merge(got);
                self.rebalances += 1;
                if self.asking {
                    self.asking = false;
                    self.shared.hungry.fetch_sub(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        if !self.asking {
            self.asking = true;
            self.shared.hungry.fetch_add(1, Ordering::Relaxed);
        }
        false
    }

    /// Burst-boundary duty: when another core is asking, release half of this share into the
    /// reserve. One relaxed atomic load when nobody is asking.
    #[inline]
    pub fn balance(&mut self) {
        if self.shared.hungry.load(Ordering::Relaxed) == 0 || self.asking {
            return;
        }
        let give = self.local.available() / 2;
        if give > 0 {
            let released = self.local.split_off(give);
            self.shared.reserve.lock().merge(released);
        }
    }

    /// Units in the common reserve (for metrics).
    pub fn reserve_available(&self) -> usize {
        self.shared.reserve.lock().available()
    }

    /// Runs `f` on the common reserve, under its lock (start-up reconciliation, not the
    /// packet path).
    pub fn with_reserve<T>(&self, f: impl FnOnce(&mut R) -> T) -> T {
        f(&mut self.shared.reserve.lock())
    }

    /// How many times this core refilled from the reserve.
    pub fn rebalances(&self) -> u64 {
        self.rebalances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of interchangeable units, like free ports.
    #[derive(Debug, Default)]
    struct Units(usize);

    impl Splittable for Units {
        fn available(&self) -> usize {
            self.0
        }
        fn split_off(&mut self, n: usize) -> Self {
            let n = n.min(self.0);
            self.0 -= n;
            Units(n)
        }
        fn merge(&mut self, other: Self) {
            self.0 += other.0;
        }
    }

    #[test]
    fn split_is_even_and_conserves_units() {
        let shares = Release::group(Units(1003), 4, 10);
        let total: usize = shares.iter().map(|s| s.available()).sum();
        assert_eq!(shares.iter().map(|s| s.available()).collect::<Vec<_>>(), [250; 4]);
        assert_eq!(total + shares[0].reserve_available(), 1003);
    }

    #[test]
    fn dry_core_is_refilled_by_others_across_threads() {
        let mut shares = Release::group(Units(100), 2, 16);
        let mut b = shares.pop().unwrap();
        let mut a = shares.pop().unwrap();
        // Core a consumes its share and more; core b only balances.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_b = Arc::clone(&stop);
        let helper = std::thread::spawn(move || {
            while !stop_b.load(Ordering::Relaxed) {
                b.balance();
                std::thread::yield_now();
            }
            b
        });
        let mut taken = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while taken < 90 && std::time::Instant::now() < deadline {
            if a.available() == 0 && !a.refill() {
                std::thread::yield_now();
                continue;
            }
            a.local().split_off(1);
            taken += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let b = helper.join().unwrap();
        assert_eq!(taken, 90, "core a should have obtained units released by core b");
        assert!(a.rebalances() > 0);
        // Conservation: nothing lost or duplicated.
        assert_eq!(a.available() + b.available() + a.reserve_available() + taken, 100);
    }

    #[test]
    fn exhaustion_is_reported_when_everything_is_used() {
        let mut shares = Release::group(Units(4), 1, 4);
        let a = &mut shares[0];
        a.local().split_off(4);
        assert!(!a.refill());
        a.balance(); // asking cores never give away
        assert_eq!(a.reserve_available(), 0);
    }
}
