//! The logical-clock rule that keeps a worker from updating stale state (SNF §5.3).
//!
//! The director numbers each flow's packets (1, 2, 3, …) and every packet carries its number.
//! A worker tags the state it holds for a flow with the clock of the last packet applied to it
//! (0 for fresh state). Proactive replication can copy the state while a few lingering packets
//! of the old flowlet still reach the old owner; the copy is then behind. So before a packet
//! updates state, the worker compares clocks: the packet must be exactly the next one. A packet
//! further ahead means updates are missing here, so the worker holds the packet, pulls the
//! current state from the previous owner (named by the director) and then applies it. A packet
//! at or behind the state's clock has already been reflected (a duplicate, or a straggler that
//! lost the race) and must not be applied again.
//!
//! State pushed between workers follows the same order: a copy is installed only if it is newer
//! than what the receiver holds.

use crate::units::LogicalClock;

/// What a worker does with a packet, given the clock of the state it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClock {
    /// The packet is the next one: apply it.
    Apply,
    /// Updates are missing: pull the state from the previous owner first, then apply.
    PullFirst,
    /// The state already reflects this packet (or a later one): do not update.
    Refuse,
}

/// The §5.3 check of a packet with clock `incoming` against state tagged `held`.
#[inline]
pub fn check_packet(held: LogicalClock, incoming: LogicalClock) -> PacketClock {
    if held.0.checked_add(1) == Some(incoming.0) {
        PacketClock::Apply
    } else if incoming > held {
        PacketClock::PullFirst
    } else {
        PacketClock::Refuse
    }
}

/// What a worker does with a copy of a flow's state pushed or pulled from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateUpdate {
    /// The copy is newer than what is held (or nothing is held): install it.
    Install,
    /// The copy is not newer: keep what is held.
    RefuseStale,
}

/// Whether a state copy tagged `incoming` replaces state tagged `held` (`None`: none held).
#[inline]
pub fn check_state(held: Option<LogicalClock>, incoming: LogicalClock) -> StateUpdate {
    match held {
        Some(h) if incoming <= h => StateUpdate::RefuseStale,
        _ => StateUpdate::Install,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_clock_rule() {
        let cases = [
            (0, 1, PacketClock::Apply), // first packet on fresh state
            (41, 42, PacketClock::Apply),
            (40, 42, PacketClock::PullFirst), // replica missed packet 41
            (0, 7, PacketClock::PullFirst),   // no state yet for a later flowlet
            (42, 42, PacketClock::Refuse),    // duplicate
            (42, 30, PacketClock::Refuse),    // straggler behind the state
            (u64::MAX, u64::MAX, PacketClock::Refuse),
        ];
        for (held, incoming, want) in cases {
            assert_eq!(
                check_packet(LogicalClock(held), LogicalClock(incoming)),
                want,
                "held {held} in {incoming}"
            );
        }
    }

    #[test]
    fn state_copy_rule() {
        let cases = [
            (None, 0, StateUpdate::Install),
            (None, 9, StateUpdate::Install),
            (Some(5), 9, StateUpdate::Install),
            (Some(9), 9, StateUpdate::RefuseStale),
            (Some(9), 5, StateUpdate::RefuseStale),
        ];
        for (held, incoming, want) in cases {
            assert_eq!(
                check_state(held.map(LogicalClock), LogicalClock(incoming)),
                want,
                "held {held:?} in {incoming}"
            );
        }
    }
}
