//! Eventually consistent global state: per-core deltas merged on a timer.
//!
//! Host statistics are the model (Serpens §III-C): each core updates its own delta on the
//! packet path with no synchronisation; every `interval` (at a burst boundary) the core folds
//! its delta into the shared global value under a spin lock and takes a fresh snapshot of it.
//! Readers (metrics, the control plane) read the global value; a core reads its last snapshot.

use std::sync::Arc;

use crate::time::Nanos;

/// A per-core delta and how it folds into the global value (the update/merge hook).
pub trait Delta: Send + 'static {
    type Global: Clone + Default + Send + 'static;
    /// Adds this delta to `global` and resets the delta to empty.
    fn drain_into(&mut self, global: &mut Self::Global);
}

/// One core's handle on an eventually consistent value.
#[derive(Debug)]
pub struct Eventual<D: Delta> {
    delta: D,
    global: Arc<spin::Mutex<D::Global>>,
    snapshot: D::Global,
    interval: Nanos,
    last_sync: Nanos,
    syncs: u64,
}

impl<D: Delta> Eventual<D> {
    /// A handle that merges `delta` into an existing global value.
    pub fn new(delta: D, global: Arc<spin::Mutex<D::Global>>, interval: Nanos) -> Eventual<D> {
        Eventual { delta, global, snapshot: D::Global::default(), interval, last_sync: Nanos::ZERO, syncs: 0 }
    }

    /// Handles for `deltas.len()` cores sharing one global value.
    pub fn group(deltas: Vec<D>, interval: Nanos) -> (Vec<Eventual<D>>, Arc<spin::Mutex<D::Global>>) {
        let global = Arc::new(spin::Mutex::new(D::Global::default()));
        let handles =
            deltas.into_iter().map(|delta| Eventual::new(delta, Arc::clone(&global), interval)).collect();
        (handles, global)
    }

    /// This core's delta, for updates on the packet path.
    #[inline]
    pub fn delta(&mut self) -> &mut D {
        &mut self.delta
    }

    /// This core's delta, read-only.
    #[inline]
    pub fn delta_ref(&self) -> &D {
        &self.delta
    }

    /// The global value as of this core's last merge.
    pub fn snapshot(&self) -> &D::Global {
        &self.snapshot
    }

    /// Burst-boundary duty: merges when the interval has passed. Returns true if it merged.
    #[inline]
    pub fn tick(&mut self, now: Nanos) -> bool {
        if now.saturating_sub(self.last_sync) < self.interval {
            return false;
        }
        self.sync(now);
        true
    }

    /// Merges now, whatever the timer says (shutdown, tests).
    pub fn sync(&mut self, now: Nanos) {
        let mut g = self.global.lock();
        self.delta.drain_into(&mut g);
        self.snapshot.clone_from(&g);
        drop(g);
        self.last_sync = now;
        self.syncs += 1;
    }

    pub fn syncs(&self) -> u64 {
        self.syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Count(u64);

    impl Delta for Count {
        type Global = u64;
        fn drain_into(&mut self, g: &mut u64) {
            *g += self.0;
            self.0 = 0;
        }
    }

    #[test]
    fn deltas_merge_on_the_timer_only() {
        let (mut cores, global) = Eventual::group(vec![Count(0), Count(0)], Nanos::from_millis(100));
        cores[0].delta().0 += 5;
        cores[1].delta().0 += 7;
        assert!(!cores[0].tick(Nanos::from_millis(50)));
        assert_eq!(*global.lock(), 0, "nothing merged before the interval");
        assert!(cores[0].tick(Nanos::from_millis(100)));
        assert_eq!(*global.lock(), 5);
        assert!(cores[1].tick(Nanos::from_millis(120)));
        assert_eq!(*global.lock(), 12);
        assert_eq!(*cores[1].snapshot(), 12);
        assert_eq!(*cores[0].snapshot(), 5, "core 0 sees core 1's delta only after its next merge");
        cores[0].sync(Nanos::from_millis(130));
        assert_eq!(*cores[0].snapshot(), 12);
    }
}
