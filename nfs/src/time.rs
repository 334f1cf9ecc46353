//! Time as seen by the dataplane.
//!
//! Every timer (idle expiry, TCP state timeouts, eventual-consistency merges, policers) reads
//! time that is passed in, never the system clock directly, so tests drive a [`VirtualClock`]
//! and see exactly the same behaviour as a live run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Nanoseconds on the runtime's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    pub const fn from_secs(s: u64) -> Nanos {
        Nanos(s.saturating_mul(1_000_000_000))
    }

    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }

    pub const fn from_micros(us: u64) -> Nanos {
        Nanos(us.saturating_mul(1_000))
    }

    pub const fn saturating_add(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(d.0))
    }

    pub const fn saturating_sub(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(d.0))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

/// A source of time for the dataplane.
pub trait Clock: Send + Sync {
    fn now(&self) -> Nanos;
}

/// The real monotonic clock, counted from its creation (plus a starting value).
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
    base: Nanos,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock::starting_at(Nanos::ZERO)
    }

    /// A clock that reads `base` now: a restarted appliance continues the time of the one
    /// before it (see [`StateDir::continued_clock`](crate::state::StateDir::continued_clock)),
    /// so the timestamps in re-attached tables keep their meaning.
    pub fn starting_at(base: Nanos) -> Self {
        MonotonicClock { origin: Instant::now(), base }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        self.base.saturating_add(Nanos(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)))
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct VirtualClock {
    now: Arc<AtomicU64>,
}

impl VirtualClock {
    pub fn new(start: Nanos) -> Self {
        VirtualClock { now: Arc::new(AtomicU64::new(start.0)) }
    }

    pub fn advance(&self, d: Nanos) {
        self.now.fetch_add(d.0, Ordering::Relaxed);
    }

    pub fn set(&self, t: Nanos) {
        self.now.store(t.0, Ordering::Relaxed);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Nanos {
        Nanos(self.now.load(Ordering::Relaxed))
    }
}
