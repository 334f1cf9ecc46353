//! Colour-blind token-bucket meters: RFC 2697 srTCM and RFC 2698 trTCM.
//!
//! Time comes in as [`Nanos`] (the caller's `ctx.now`), so meters are deterministic under a
//! virtual clock. Tokens are whole units (bytes or packets, chosen by the caller); fractional
//! credit is carried as a remainder in token·nanoseconds so no rate is lost to rounding over
//! long runs.

use crate::time::Nanos;

const NS_PER_S: u128 = 1_000_000_000;

/// The colour a meter gives a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Green,
    Yellow,
    Red,
}

/// Token credit accrued since the last update at `rate` tokens/s, with sub-token carry.
#[derive(Debug, Clone, Copy, Default)]
struct Refill {
    last: u64,
    carry: u128,
}

impl Refill {
    fn take(&mut self, now: Nanos, rate: u64) -> u64 {
        let elapsed = now.0.saturating_sub(self.last);
        self.last = self.last.max(now.0);
        let total = self.carry + u128::from(elapsed) * u128::from(rate);
        self.carry = total % NS_PER_S;
        u64::try_from(total / NS_PER_S).unwrap_or(u64::MAX)
    }
}

/// RFC 2697 single-rate three-colour marker (colour-blind).
#[derive(Debug, Clone, Copy)]
pub struct SrTcm {
    cir: u64,
    cbs: u64,
    ebs: u64,
    tc: u64,
    te: u64,
    refill: Refill,
}

impl SrTcm {
    /// Both buckets start full (RFC 2697 §3).
    pub fn new(cir: u64, cbs: u64, ebs: u64, now: Nanos) -> Self {
        SrTcm { cir, cbs, ebs, tc: cbs, te: ebs, refill: Refill { last: now.0, carry: 0 } }
    }

    pub fn mark(&mut self, now: Nanos, size: u64) -> Colour {
        // RFC 2697 §3: tokens go to C until full, then overflow into E.
        let credit = self.refill.take(now, self.cir);
        let to_c = credit.min(self.cbs - self.tc);
        self.tc += to_c;
        self.te = (self.te.saturating_add(credit - to_c)).min(self.ebs);
        if self.tc >= size {
            self.tc -= size;
            Colour::Green
        } else if self.te >= size {
            self.te -= size;
            Colour::Yellow
        } else {
            Colour::Red
        }
    }
}

/// RFC 2698 two-rate three-colour marker (colour-blind).
#[derive(Debug, Clone, Copy)]
pub struct TrTcm {
    pir: u64,
    pbs: u64,
    cir: u64,
    cbs: u64,
    tp: u64,
    tc: u64,
    refill_p: Refill,
    refill_c: Refill,
}

impl TrTcm {
    /// Both buckets start full (RFC 2698 §3).
    pub fn new(pir: u64, pbs: u64, cir: u64, cbs: u64, now: Nanos) -> Self {
        let r = Refill { last: now.0, carry: 0 };
        TrTcm { pir, pbs, cir, cbs, tp: pbs, tc: cbs, refill_p: r, refill_c: r }
    }

    pub fn mark(&mut self, now: Nanos, size: u64) -> Colour {
        self.tp = self.tp.saturating_add(self.refill_p.take(now, self.pir)).min(self.pbs);
        self.tc = self.tc.saturating_add(self.refill_c.take(now, self.cir)).min(self.cbs);
        // RFC 2698 §3: red if over P, yellow if over C, else green (both buckets pay).
        if self.tp < size {
            Colour::Red
        } else if self.tc < size {
            self.tp -= size;
            Colour::Yellow
        } else {
            self.tp -= size;
            self.tc -= size;
            Colour::Green
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Colour::{Green as G, Red as R, Yellow as Y};

    #[test]
    fn srtcm_burst_then_refill_colour_sequence() {
        // CIR 1000 B/s, CBS 300, EBS 200; 100-byte packets at t=0: 3 green, 2 yellow, red.
        let mut m = SrTcm::new(1000, 300, 200, Nanos(0));
        let got: Vec<_> = (0..6).map(|_| m.mark(Nanos(0), 100)).collect();
        assert_eq!(got, [G, G, G, Y, Y, R]);
        // 100 ms later 100 tokens went to C (it was empty): one green, then red.
        assert_eq!(m.mark(Nanos(100_000_000), 100), G);
        assert_eq!(m.mark(Nanos(100_000_000), 100), R);
        // After 1 s, C refills to 300 and the 700 extra overflow into E (capped at 200).
        let t = Nanos(1_100_000_000);
        let got: Vec<_> = (0..6).map(|_| m.mark(t, 100)).collect();
        assert_eq!(got, [G, G, G, Y, Y, R]);
    }

    #[test]
    fn trtcm_colour_sequence() {
        // PIR 2000, PBS 400, CIR 1000, CBS 200; 100-byte packets.
        let mut m = TrTcm::new(2000, 400, 1000, 200, Nanos(0));
        let got: Vec<_> = (0..5).map(|_| m.mark(Nanos(0), 100)).collect();
        assert_eq!(got, [G, G, Y, Y, R]);
        // 50 ms: P gains 100, C gains 50 (< 100): yellow, then red.
        assert_eq!(m.mark(Nanos(50_000_000), 100), Y);
        assert_eq!(m.mark(Nanos(50_000_000), 100), R);
    }

    #[test]
    fn srtcm_long_run_rate_within_2_percent() {
        // 10 s offered at 2x CIR (1000-byte packets every 4 ms = 250 kB/s, CIR 125 kB/s).
        let (cir, cbs) = (125_000u64, 10_000u64);
        let mut m = SrTcm::new(cir, cbs, 0, Nanos(0));
        let mut green = 0u64;
        for i in 0..2500u64 {
            if m.mark(Nanos(i * 4_000_000), 1000) == G {
                green += 1000;
            }
        }
        let expected = cir * 10 + cbs;
        let err = (green as f64 - expected as f64).abs() / expected as f64;
        assert!(err < 0.02, "green {green} expected {expected}");
    }
}
