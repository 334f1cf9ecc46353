//! The capture rate limit: a token bucket on the dataplane's clock (time is passed in, so
//! tests drive it with a virtual clock).
//!
//! Tokens are kept in billionths, so refilling is exact integer arithmetic for any rate:
//! `elapsed_ns * rate` billionths per refill. The bucket holds a tenth of a second of tokens
//! (at least one), starts full, and never goes negative.

use nflet_nfs::time::Nanos;

const SCALE: u128 = 1_000_000_000;

/// Frames per second, with bursts up to a tenth of a second's worth.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u128,
    /// Capacity in billionths of a token.
    cap: u128,
    tokens: u128,
    last: Nanos,
}

impl TokenBucket {
    /// A full bucket for `rate` frames per second, starting at `now`.
    pub fn new(rate: u64, now: Nanos) -> TokenBucket {
        let burst = (rate / 10).max(1);
        let cap = u128::from(burst) * SCALE;
        TokenBucket { rate: u128::from(rate), cap, tokens: cap, last: now }
    }

    /// Takes one token if there is one: true when the frame may be captured.
    #[inline]
    pub fn allow(&mut self, now: Nanos) -> bool {
        let elapsed = u128::from(now.saturating_sub(self.last).0);
        self.last = self.last.max(now);
        self.tokens = self.tokens.saturating_add(elapsed.saturating_mul(self.rate)).min(self.cap);
        if self.tokens >= SCALE {
            self.tokens -= SCALE;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::time::{Clock, VirtualClock};

    /// Offers `offered` frames evenly over `secs` seconds; returns how many pass.
    fn run(rate: u64, offered: u64, secs: u64) -> u64 {
        let clock = VirtualClock::new(Nanos::ZERO);
        let mut b = TokenBucket::new(rate, clock.now());
        let step = secs * 1_000_000_000 / offered;
        let mut passed = 0;
        for _ in 0..offered {
            clock.advance(Nanos(step));
            passed += u64::from(b.allow(clock.now()));
        }
        passed
    }

    #[test]
    fn passes_the_rate_plus_one_burst() {
        // (rate, offered frames, seconds, expected passing)
        let cases = [
            (1000, 500, 1, 500),           // under the rate: everything
            (1000, 10_000, 1, 1000 + 100), // 10x over: a second's worth plus the initial burst
            (100, 100_000, 10, 1000 + 10),
            (1, 1000, 5, 5 + 1),
            (4, 40, 10, 40), // exactly at the rate, with a one-frame bucket
        ];
        for (rate, offered, secs, want) in cases {
            let got = run(rate, offered, secs);
            assert!(got.abs_diff(want) <= 1, "rate {rate}, {offered} over {secs}s: {got}, want {want}");
        }
    }

    #[test]
    fn a_burst_is_a_tenth_of_a_second_and_time_going_backwards_is_ignored() {
        let clock = VirtualClock::new(Nanos::ZERO);
        clock.advance(Nanos::from_secs(5));
        let mut b = TokenBucket::new(1000, clock.now());
        let burst = (0..1000).filter(|_| b.allow(clock.now())).count();
        assert_eq!(burst, 100);
        // An hour idle refills only the capacity.
        clock.advance(Nanos::from_secs(3600));
        assert_eq!((0..1000).filter(|_| b.allow(clock.now())).count(), 100);
        // An earlier timestamp (another core's clock reading) neither refills nor panics.
        assert!(!b.allow(Nanos(1)));
        clock.advance(Nanos::from_millis(1));
        assert!(b.allow(clock.now()));
        assert!(!b.allow(clock.now()));
    }
}
