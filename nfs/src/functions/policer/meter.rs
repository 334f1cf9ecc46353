//! Token-bucket meters: RFC 2697 srTCM and RFC 2698 trTCM, colour-blind and colour-aware.
//!
//! A meter is split in two: the [`Profile`] (rates and bucket sizes, shared by every bucket of a
//! class and read-only on the packet path) and the [`MeterState`] (token counts and the time of
//! the last update: 32 bytes of plain old data, so a per-flow bucket can live in a state arena
//! and move between instances as bytes).
//!
//! Time comes in as [`Nanos`] (the caller's `ctx.now`), so meters are deterministic under a
//! virtual clock. Tokens are whole units (bytes or packets, chosen by the caller); fractional
//! credit is carried as a remainder in token·nanoseconds (always below 10⁹, so it fits a `u32`)
//! so no rate is lost to rounding over long runs.

use bytemuck::{Pod, Zeroable};

use crate::time::Nanos;

const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_S_64: u64 = 1_000_000_000;

/// The colour a meter gives a packet (or, colour-aware, the colour it arrived with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    Green,
    Yellow,
    Red,
}

impl Colour {
    /// 0, 1, 2 for green, yellow, red: the index of per-colour counters and actions.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            Colour::Green => 0,
            Colour::Yellow => 1,
            Colour::Red => 2,
        }
    }
}

/// Rates (units/s) and bucket sizes (units) of one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// RFC 2697: committed bucket C (size `cbs`) and excess bucket E (size `ebs`), both fed
    /// at `cir`; tokens go to C until it is full, then to E.
    Sr { cir: u64, cbs: u64, ebs: u64 },
    /// RFC 2698: peak bucket P (size `pbs`) fed at `pir`, committed bucket C (size `cbs`) fed
    /// at `cir`.
    Tr { pir: u64, pbs: u64, cir: u64, cbs: u64 },
}

/// The mutable part of one bucket pair.
///
/// srTCM: `tokens = [Tc, Te]`, one carry (`carry[0]`) since both fill at CIR.
/// trTCM: `tokens = [Tc, Tp]`, `carry = [C carry, P carry]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Pod, Zeroable)]
pub struct MeterState {
    pub tokens: [u64; 2],
    /// Time of the last update (nanoseconds on the runtime clock).
    pub last: u64,
    /// Sub-token credit in token·ns, each below 10⁹.
    pub carry: [u32; 2],
}

/// Whole tokens earned at `rate` over `elapsed` ns, keeping the remainder in `carry`.
#[inline]
fn earn(carry: &mut u32, elapsed: u64, rate: u64) -> u64 {
    // Fast path in 64 bits (division by a constant becomes a multiply); u128 division is a
    // library call. The product overflows only after ~18 s idle at 1 G units/s.
    if let Some(total) = elapsed.checked_mul(rate).and_then(|x| x.checked_add(u64::from(*carry))) {
        *carry = u32::try_from(total % NS_PER_S_64).unwrap_or(0);
        return total / NS_PER_S_64;
    }
    let total = u128::from(*carry) + u128::from(elapsed) * u128::from(rate);
    // The remainder is below 10⁹ < 2³², so the conversion never fails.
    *carry = u32::try_from(total % NS_PER_S).unwrap_or(0);
    u64::try_from(total / NS_PER_S).unwrap_or(u64::MAX)
}

impl Profile {
    /// State with both buckets full at `now` (RFC 2697 §3, RFC 2698 §3: "initially full").
    pub fn full(&self, now: Nanos) -> MeterState {
        let tokens = match *self {
            Profile::Sr { cbs, ebs, .. } => [cbs, ebs],
            Profile::Tr { pbs, cbs, .. } => [cbs, pbs],
        };
        MeterState { tokens, last: now.0, carry: [0; 2] }
    }

    /// Colours a packet of `size` units at `now`. `pre` is the colour it arrived with:
    /// [`Colour::Green`] gives colour-blind metering (RFC 2697 §3 / RFC 2698 §3 colour-blind
    /// mode is the colour-aware algorithm with every packet pre-coloured green).
    #[inline]
    pub fn mark(&self, st: &mut MeterState, now: Nanos, size: u64, pre: Colour) -> Colour {
        let elapsed = now.0.saturating_sub(st.last);
        st.last = st.last.max(now.0);
        let [c0, c1] = &mut st.carry;
        let [t0, t1] = &mut st.tokens;
        match *self {
            Profile::Sr { cir, cbs, ebs } => {
                // RFC 2697 §3: tokens go to C until full, then overflow into E.
                let credit = earn(c0, elapsed, cir);
                let to_c = credit.min(cbs.saturating_sub(*t0));
                *t0 = (*t0 + to_c).min(cbs);
                *t1 = t1.saturating_add(credit - to_c).min(ebs);
                // RFC 2697 §3 colour-aware: green only if pre-green and Tc >= B; yellow if
                // pre-green or pre-yellow and Te >= B; red otherwise.
                if pre == Colour::Green && *t0 >= size {
                    *t0 -= size;
                    Colour::Green
                } else if pre != Colour::Red && *t1 >= size {
                    *t1 -= size;
                    Colour::Yellow
                } else {
                    Colour::Red
                }
            }
            Profile::Tr { pir, pbs, cir, cbs } => {
                *t0 = t0.saturating_add(earn(c0, elapsed, cir)).min(cbs);
                *t1 = t1.saturating_add(earn(c1, elapsed, pir)).min(pbs);
                // RFC 2698 §3 colour-aware: red if pre-red or Tp < B; yellow (P pays) if
                // pre-yellow or Tc < B; else green (both pay).
                if pre == Colour::Red || *t1 < size {
                    Colour::Red
                } else if pre == Colour::Yellow || *t0 < size {
                    *t1 -= size;
                    Colour::Yellow
                } else {
                    *t1 -= size;
                    *t0 -= size;
                    Colour::Green
                }
            }
        }
    }
}

/// A colour-blind RFC 2697 meter with its own state (profile and state together), for callers
/// that want one bucket and no per-flow table.
#[derive(Debug, Clone, Copy)]
pub struct SrTcm {
    profile: Profile,
    state: MeterState,
}

impl SrTcm {
    /// Both buckets start full (RFC 2697 §3).
    pub fn new(cir: u64, cbs: u64, ebs: u64, now: Nanos) -> Self {
        let profile = Profile::Sr { cir, cbs, ebs };
        SrTcm { profile, state: profile.full(now) }
    }

    pub fn mark(&mut self, now: Nanos, size: u64) -> Colour {
        self.profile.mark(&mut self.state, now, size, Colour::Green)
    }
}

/// A colour-blind RFC 2698 meter with its own state.
#[derive(Debug, Clone, Copy)]
pub struct TrTcm {
    profile: Profile,
    state: MeterState,
}

impl TrTcm {
    /// Both buckets start full (RFC 2698 §3).
    pub fn new(pir: u64, pbs: u64, cir: u64, cbs: u64, now: Nanos) -> Self {
        let profile = Profile::Tr { pir, pbs, cir, cbs };
        TrTcm { profile, state: profile.full(now) }
    }

    pub fn mark(&mut self, now: Nanos, size: u64) -> Colour {
        self.profile.mark(&mut self.state, now, size, Colour::Green)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Colour::{Green as G, Red as R, Yellow as Y};

    fn marks(p: &Profile, st: &mut MeterState, t: u64, n: usize, size: u64, pre: Colour) -> Vec<Colour> {
        (0..n).map(|_| p.mark(st, Nanos(t), size, pre)).collect()
    }

    #[test]
    fn state_is_small_plain_data() {
        assert_eq!(std::mem::size_of::<MeterState>(), 32);
    }

    #[test]
    fn srtcm_burst_then_refill_colour_sequence() {
        // CIR 1000 B/s, CBS 300, EBS 200; 100-byte packets at t=0: 3 green, 2 yellow, red.
        let p = Profile::Sr { cir: 1000, cbs: 300, ebs: 200 };
        let mut m = p.full(Nanos(0));
        assert_eq!(marks(&p, &mut m, 0, 6, 100, G), [G, G, G, Y, Y, R]);
        // 100 ms later 100 tokens went to C (it was empty): one green, then red.
        assert_eq!(marks(&p, &mut m, 100_000_000, 2, 100, G), [G, R]);
        // After 1 s, C refills to 300 and the 700 extra overflow into E (capped at 200).
        assert_eq!(marks(&p, &mut m, 1_100_000_000, 6, 100, G), [G, G, G, Y, Y, R]);
    }

    #[test]
    fn trtcm_colour_sequence() {
        // PIR 2000, PBS 400, CIR 1000, CBS 200; 100-byte packets.
        let p = Profile::Tr { pir: 2000, pbs: 400, cir: 1000, cbs: 200 };
        let mut m = p.full(Nanos(0));
        assert_eq!(marks(&p, &mut m, 0, 5, 100, G), [G, G, Y, Y, R]);
        // 50 ms: P gains 100, C gains 50 (< 100): yellow, then red.
        assert_eq!(marks(&p, &mut m, 50_000_000, 2, 100, G), [Y, R]);
        // 50 ms more: P gains 100, C reaches 100: green takes from both, then P is empty.
        assert_eq!(marks(&p, &mut m, 100_000_000, 2, 100, G), [G, R]);
    }

    #[test]
    fn colour_aware_rules_per_rfc() {
        // (profile, pre-colour, state [t0, t1] before, expected colour, state after).
        // srTCM: t0 = Tc, t1 = Te. trTCM: t0 = Tc, t1 = Tp. Packet size 100, no refill.
        let sr = Profile::Sr { cir: 0, cbs: 1000, ebs: 1000 };
        let tr = Profile::Tr { pir: 0, pbs: 1000, cir: 0, cbs: 1000 };
        type Case = (Profile, Colour, [u64; 2], Colour, [u64; 2]);
        let cases: &[Case] = &[
            // RFC 2697 §3 colour-aware.
            (sr, G, [100, 100], G, [0, 100]),
            (sr, G, [99, 100], Y, [99, 0]),
            (sr, G, [99, 99], R, [99, 99]),
            (sr, Y, [500, 500], Y, [500, 400]), // pre-yellow never takes C tokens
            (sr, Y, [500, 99], R, [500, 99]),
            (sr, R, [500, 500], R, [500, 500]), // pre-red stays red, nothing paid
            // RFC 2698 §3 colour-aware.
            (tr, G, [100, 100], G, [0, 0]),
            (tr, G, [99, 100], Y, [99, 0]),
            (tr, G, [500, 99], R, [500, 99]),
            (tr, Y, [500, 500], Y, [500, 400]), // pre-yellow pays P only
            (tr, Y, [500, 99], R, [500, 99]),
            (tr, R, [500, 500], R, [500, 500]),
        ];
        for (i, (p, pre, before, want, after)) in cases.iter().enumerate() {
            let mut st = MeterState { tokens: *before, last: 0, carry: [0; 2] };
            assert_eq!(p.mark(&mut st, Nanos(0), 100, *pre), *want, "case {i}");
            assert_eq!(st.tokens, *after, "case {i}");
        }
    }

    #[test]
    fn time_going_backwards_earns_nothing() {
        let p = Profile::Sr { cir: 1000, cbs: 100, ebs: 0 };
        let mut m = p.full(Nanos(1_000_000_000));
        assert_eq!(marks(&p, &mut m, 1_000_000_000, 2, 100, G), [G, R]);
        assert_eq!(marks(&p, &mut m, 0, 1, 100, G), [R]);
        assert_eq!(m.last, 1_000_000_000);
    }

    #[test]
    fn srtcm_long_run_rate_within_2_percent() {
        // 10 s offered at 2x CIR (1000-byte packets every 4 ms = 250 kB/s, CIR 125 kB/s).
        let (cir, cbs) = (125_000u64, 10_000u64);
        let p = Profile::Sr { cir, cbs, ebs: 0 };
        let mut m = p.full(Nanos(0));
        let mut green = 0u64;
        for i in 0..2500u64 {
            if p.mark(&mut m, Nanos(i * 4_000_000), 1000, G) == G {
                green += 1000;
            }
        }
        let expected = cir * 10 + cbs;
        let err = (green as f64 - expected as f64).abs() / expected as f64;
        assert!(err < 0.02, "green {green} expected {expected}");
    }

    #[test]
    fn earn_is_exact_on_64_and_128_bit_paths() {
        // (carry before, elapsed ns, rate/s, tokens, carry after).
        let cases: &[(u32, u64, u64, u64, u32)] = &[
            (0, 0, 1000, 0, 0),
            (0, 1, 1, 0, 1),
            (999_999_999, 1, 1, 1, 0),
            (500_000_000, 1_500_000_000, 3, 5, 0),
            (0, 1_000_000_000_000, 100_000_000_000, 100_000_000_000_000, 0), // 10^23: u128
            (7, u64::MAX, u64::MAX, u64::MAX, 0),                            // saturates
        ];
        for (i, (c0, elapsed, rate, tokens, c1)) in cases.iter().enumerate() {
            let mut c = *c0;
            let got = earn(&mut c, *elapsed, *rate);
            assert_eq!(got, *tokens, "case {i}");
            if *tokens != u64::MAX {
                assert_eq!(c, *c1, "case {i}");
            }
        }
    }

    #[test]
    fn odd_rates_lose_nothing_to_rounding() {
        // 7 tokens/s checked every 1 ms for 1000 s: exactly 7000 tokens earned.
        let p = Profile::Sr { cir: 7, cbs: u64::MAX, ebs: 0 };
        let mut m = MeterState::default();
        for i in 1..=1_000_000u64 {
            p.mark(&mut m, Nanos(i * 1_000_000), 0, G);
        }
        assert_eq!(m.tokens[0], 7000);
    }
}
