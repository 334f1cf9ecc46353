//! Identifier and unit newtypes of the scale-out logic.

use std::fmt;

/// A worker (an nflet instance the director steers flowlets to). IDs order the packing: the
/// director always considers workers in ascending ID order and reuses the lowest free ID when
/// it launches one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct WorkerId(pub u16);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker{}", self.0)
    }
}

/// A flow's logical clock (SNF §5.3): the director numbers the packets of each flow 1, 2, 3, …
/// and state is tagged with the clock of the last packet applied to it. Fresh state (no packet
/// applied yet) carries [`LogicalClock::ZERO`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct LogicalClock(pub u64);

impl LogicalClock {
    pub const ZERO: LogicalClock = LogicalClock(0);

    /// The clock of the packet after this one.
    pub const fn next(self) -> LogicalClock {
        LogicalClock(self.0.saturating_add(1))
    }
}

/// A rate in the director's load metric (bytes or packets, see
/// [`crate::config::Metric`]) per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rate(pub f64);

impl Rate {
    pub const ZERO: Rate = Rate(0.0);

    /// `self / capacity`, 0 for a zero capacity.
    pub fn fraction_of(self, capacity: Rate) -> f64 {
        if capacity.0 > 0.0 {
            self.0 / capacity.0
        } else {
            0.0
        }
    }
}
