//! Mitigation: the destinations under attack, the policing of traffic towards them, and
//! their release once the attack is over.
//!
//! Each victim gets its own token bucket — the policer's RFC 2697 meter in packet units,
//! committed rate `rate_limit_pps`, committed burst `rate_limit_burst`, no excess burst — so
//! traffic to it is cut to that rate (green passes, the rest is dropped), or it is dropped
//! outright in `drop` mode. A victim is released after its offered rate (every packet towards
//! it, not a sample) stayed below `release_pps` for `release_intervals` intervals in a row.

use serde::Deserialize;

use crate::functions::policer::meter::{Colour, SrTcm};
use crate::time::Nanos;

/// What happens to traffic towards a victim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Police to `rate_limit_pps` with a token bucket; the excess is dropped.
    #[default]
    RateLimit,
    /// Drop everything towards the victim.
    Drop,
}

/// A destination under mitigation.
#[derive(Debug, Clone, Copy)]
pub struct Victim {
    pub family: u8,
    pub addr: [u8; 16],
    /// When it was detected.
    pub since: Nanos,
    /// Packets towards it dropped and passed since detection.
    pub dropped: u64,
    pub passed: u64,
    meter: Option<SrTcm>,
    /// Packets towards it in the current interval.
    seen: u64,
    /// Consecutive quiet intervals.
    quiet: u32,
    /// Detected at the end of the interval being closed: not judged for release yet.
    fresh: bool,
}

/// The release rule.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub below_pps: u64,
    pub intervals: u32,
}

#[derive(Debug)]
pub struct Mitigation {
    victims: Vec<Victim>,
    max: usize,
    mode: Mode,
    rate_pps: u64,
    burst: u64,
}

impl Mitigation {
    pub fn new(max: usize, mode: Mode, rate_pps: u64, burst: u64) -> Mitigation {
        Mitigation { victims: Vec::with_capacity(max), max, mode, rate_pps, burst }
    }

    pub fn victims(&self) -> &[Victim] {
        &self.victims
    }

    pub fn is_empty(&self) -> bool {
        self.victims.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.victims.len() >= self.max
    }

    pub fn contains(&self, family: u8, addr: &[u8; 16]) -> bool {
        self.victims.iter().any(|v| v.family == family && v.addr == *addr)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Starts mitigating `addr` (the caller checked it is new and there is room).
    pub fn add(&mut self, family: u8, addr: [u8; 16], now: Nanos) {
        let meter = match self.mode {
            Mode::RateLimit => Some(SrTcm::new(self.rate_pps, self.burst, 0, now)),
            Mode::Drop => None,
        };
        self.victims.push(Victim {
            family,
            addr,
            since: now,
            dropped: 0,
            passed: 0,
            meter,
            seen: 0,
            quiet: 0,
            fresh: true,
        });
    }

    /// For a packet to `addr`: `None` if it is no victim, else whether the packet may pass.
    #[inline]
    pub fn admit(&mut self, family: u8, addr: &[u8; 16], now: Nanos) -> Option<bool> {
        let v = self.victims.iter_mut().find(|v| v.family == family && v.addr == *addr)?;
        v.seen += 1;
        let pass = match &mut v.meter {
            Some(m) => m.mark(now, 1) == Colour::Green,
            None => false,
        };
        if pass {
            v.passed += 1;
        } else {
            v.dropped += 1;
        }
        Some(pass)
    }

    /// Ends an interval of length `interval`, followed by `empty_after` intervals without
    /// traffic (the clock jumped): victims whose offered rate stayed low long enough are
    /// released and handed to `on_release`.
    pub fn end_interval(
        &mut self,
        interval: Nanos,
        empty_after: u32,
        rule: Release,
        mut on_release: impl FnMut(&Victim),
    ) {
        let len_ns = u128::from(interval.0.max(1));
        self.victims.retain_mut(|v| {
            if std::mem::take(&mut v.fresh) {
                return true;
            }
            let pps = u128::from(v.seen) * 1_000_000_000 / len_ns;
            v.seen = 0;
            if pps < u128::from(rule.below_pps) {
                v.quiet = v.quiet.saturating_add(1);
            } else {
                v.quiet = 0;
            }
            v.quiet = v.quiet.saturating_add(empty_after);
            let release = v.quiet >= rule.intervals;
            if release {
                on_release(v);
            }
            !release
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{v4, FAMILY_V4};

    const RULE: Release = Release { below_pps: 100, intervals: 2 };
    const SEC: Nanos = Nanos(1_000_000_000);

    #[test]
    fn modes_police_or_drop_and_release_after_quiet_intervals() {
        let a = v4([10, 0, 0, 7]);
        let b = v4([10, 0, 0, 8]);
        // (mode, packets at t=0 that pass out of 50)
        for (mode, passing) in [(Mode::RateLimit, 10u64), (Mode::Drop, 0)] {
            let mut m = Mitigation::new(2, mode, 1000, 10);
            m.add(FAMILY_V4, a, Nanos(0));
            m.end_interval(SEC, 9, RULE, |_| panic!("released when just detected"));
            assert_eq!(m.admit(FAMILY_V4, &b, Nanos(0)), None);
            let passed = (0..50).filter(|_| m.admit(FAMILY_V4, &a, Nanos(0)) == Some(true)).count() as u64;
            assert_eq!(passed, passing);
            assert_eq!((m.victims()[0].passed, m.victims()[0].dropped), (passing, 50 - passing));
            // 50 pps over 1 s is quiet: first quiet interval, then released on the second.
            let mut released = Vec::new();
            m.end_interval(SEC, 0, RULE, |v| released.push(v.addr));
            assert!(released.is_empty() && m.contains(FAMILY_V4, &a));
            m.end_interval(SEC, 0, RULE, |v| released.push(v.addr));
            assert_eq!(released, [a]);
            assert!(m.is_empty());
        }
    }

    #[test]
    fn loud_intervals_reset_the_quiet_count() {
        let a = v4([10, 0, 0, 7]);
        let mut m = Mitigation::new(1, Mode::Drop, 0, 0);
        m.add(FAMILY_V4, a, Nanos(0));
        m.end_interval(SEC, 0, RULE, |_| {});
        assert!(m.is_full());
        m.end_interval(SEC, 0, RULE, |_| {});
        for _ in 0..100 {
            m.admit(FAMILY_V4, &a, Nanos(1));
        }
        m.end_interval(SEC, 0, RULE, |_| {});
        m.end_interval(SEC, 0, RULE, |_| {});
        assert!(m.contains(FAMILY_V4, &a));
        // A long silence counts as many quiet intervals at once.
        m.end_interval(SEC, 4, RULE, |_| {});
        assert!(m.is_empty());
    }
}
