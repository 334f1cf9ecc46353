//! The anti-replay window of an inbound SA (RFC 4303 §3.4.3) and extended sequence number
//! inference (RFC 4303 Appendix A2).
//!
//! The window is a bitmap of `W` bits (64 to 4096, a multiple of 64) indexed by sequence
//! number modulo `W`, with `top`, the highest sequence number accepted so far. Checking
//! ([`Window::check`]) and moving ([`Window::accept`]) are separate steps because the window
//! may move only after the packet's ICV verified: a forged packet must never shift it.

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Already received.
    Replayed,
    /// Below the window (or sequence number 0, never sent).
    TooOld,
}

/// A receive window.
#[derive(Debug, Clone)]
pub struct Window {
    bits: Box<[u64]>,
    /// Window size in packets.
    w: u64,
    /// Highest accepted sequence number (64-bit with ESN); 0 before the first packet.
    top: u64,
    esn: bool,
}

impl Window {
    /// A window of `w` packets (a multiple of 64, at least 64; validated by the config).
    pub fn new(w: u32, esn: bool) -> Window {
        let words = (w as usize / 64).max(1);
        Window { bits: vec![0u64; words].into_boxed_slice(), w: words as u64 * 64, top: 0, esn }
    }

    /// Highest accepted sequence number.
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The full sequence number of a packet carrying low-order bits `seql`: itself without
    /// ESN; with ESN, the high-order bits inferred from the window (RFC 4303 Appendix A2.2).
    /// `None` when the inference points below sequence number 0.
    pub fn infer(&self, seql: u32) -> Option<u64> {
        if !self.esn {
            return Some(u64::from(seql));
        }
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let w = self.w.min(u64::from(u32::MAX)) as u32;
        let bl = tl.wrapping_sub(w - 1);
        let seqh = if tl >= w - 1 {
            // Case A: the window lies within one sequence number subspace.
            if seql >= bl {
                Some(th)
            } else {
                th.checked_add(1)
            }
        } else if seql >= bl {
            // Case B: the window spans two subspaces; `seql` is in the lower one's top.
            th.checked_sub(1)
        } else {
            Some(th)
        };
        seqh.map(|h| u64::from(h) << 32 | u64::from(seql))
    }

    fn bit(&self, seq: u64) -> (usize, u64) {
        let pos = seq % self.w;
        ((pos / 64) as usize, 1u64 << (pos % 64))
    }

    /// Whether `seq` (full) would be accepted, without changing the window.
    pub fn check(&self, seq: u64) -> Result<(), Refused> {
        if seq == 0 {
            return Err(Refused::TooOld);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.w {
            return Err(Refused::TooOld);
        }
        let (word, mask) = self.bit(seq);
        match self.bits.get(word) {
            Some(b) if b & mask == 0 => Ok(()),
            _ => Err(Refused::Replayed),
        }
    }

    /// Records `seq` (which passed [`Window::check`] and authenticated), moving the window
    /// when it is ahead of `top`.
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let ahead = seq - self.top;
            if ahead >= self.w {
                self.bits.fill(0);
            } else {
                // Clear the slots of the sequence numbers the window slides over.
                let mut s = self.top + 1;
                while s <= seq {
                    let (word, mask) = self.bit(s);
                    let step = if s.is_multiple_of(64) && seq - s >= 63 {
                        if let Some(b) = self.bits.get_mut(word) {
                            *b = 0;
                        }
                        64
                    } else {
                        if let Some(b) = self.bits.get_mut(word) {
                            *b &= !mask;
                        }
                        1
                    };
                    // At the very top of the 64-bit space there is nothing left to clear.
                    let Some(next) = s.checked_add(step) else { break };
                    s = next;
                }
            }
            self.top = seq;
        }
        let (word, mask) = self.bit(seq);
        if let Some(b) = self.bits.get_mut(word) {
            *b |= mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(w: &mut Window, seq: u64) {
        assert_eq!(w.check(seq), Ok(()), "seq {seq}");
        w.accept(seq);
    }

    #[test]
    fn window_edges() {
        // (window, accepted first, probe, expected)
        type Case = (u32, &'static [u64], u64, Result<(), Refused>);
        let cases: &[Case] = &[
            (64, &[], 0, Err(Refused::TooOld)),
            (64, &[], 1, Ok(())),
            (64, &[100], 100, Err(Refused::Replayed)),
            (64, &[100], 99, Ok(())),
            (64, &[100], 37, Ok(())), // lowest in-window: 100 - 63
            (64, &[100], 36, Err(Refused::TooOld)),
            (64, &[100], 101, Ok(())),
            (64, &[100], 1_000_000, Ok(())), // far ahead
            (64, &[100, 1_000], 990, Ok(())),
            (64, &[100, 1_000], 100, Err(Refused::TooOld)),
            (64, &[100, 163], 100, Err(Refused::Replayed)), // still in window after moving 63
            (64, &[100, 164], 100, Err(Refused::TooOld)),
            (1024, &[2_000], 977, Ok(())), // 2000 - 1023
            (1024, &[2_000], 976, Err(Refused::TooOld)),
            (1024, &[2_000, 1_500], 1_500, Err(Refused::Replayed)),
            (4096, &[10_000, 6_000], 6_000, Err(Refused::Replayed)),
            (4096, &[10_000, 6_000], 6_001, Ok(())),
            (4096, &[10_000], 5_904, Err(Refused::TooOld)),
        ];
        for (i, (size, seen, probe, want)) in cases.iter().enumerate() {
            let mut w = Window::new(*size, false);
            for s in *seen {
                ok(&mut w, *s);
            }
            assert_eq!(w.check(*probe), *want, "case {i}");
        }
    }

    #[test]
    fn sliding_clears_old_slots() {
        // Slot reuse: after sliding by less than the window, the slots of the new numbers
        // must read as unseen, including whole-word clears.
        for size in [64u32, 128, 4096] {
            let mut w = Window::new(size, false);
            for s in 1..=u64::from(size) {
                ok(&mut w, s);
            }
            let top = u64::from(size) + u64::from(size) / 2 + 5;
            ok(&mut w, top);
            for s in u64::from(size) + 1..top {
                assert_eq!(w.check(s), Ok(()), "size {size} seq {s}");
            }
            assert_eq!(w.check(top - u64::from(size) + 1), Err(Refused::Replayed));
        }
    }

    #[test]
    fn esn_inference() {
        let hi = 1u64 << 32;
        // (top, seql, inferred)
        let cases: &[(u64, u32, Option<u64>)] = &[
            (100, 50, Some(50)),
            (100, 200, Some(200)),
            // Case A at the top of a subspace: a small seql is the next subspace.
            (hi - 10, 5, Some(hi + 5)),
            (hi - 10, u32::MAX - 20, Some(hi - 21)),
            // Case B just after rollover: a large seql is the previous subspace.
            (hi + 3, u32::MAX - 2, Some(hi - 3)),
            (hi + 3, 10, Some(hi + 10)),
            // Case B in subspace 0: the previous subspace does not exist.
            (3, u32::MAX - 2, None),
        ];
        for (top, seql, want) in cases {
            let mut w = Window::new(64, true);
            if *top > 0 {
                w.accept(*top);
            }
            assert_eq!(w.infer(*seql), *want, "top {top:#x} seql {seql:#x}");
        }
        // Without ESN the number is what the wire says.
        assert_eq!(Window::new(64, false).infer(7), Some(7));
    }

    #[test]
    fn the_top_of_the_64_bit_space_is_reachable() {
        let mut w = Window::new(128, true);
        ok(&mut w, u64::MAX - 200);
        ok(&mut w, u64::MAX - 100);
        ok(&mut w, u64::MAX);
        assert_eq!(w.check(u64::MAX), Err(Refused::Replayed));
        assert_eq!(w.check(u64::MAX - 100), Err(Refused::Replayed));
        assert_eq!(w.check(u64::MAX - 1), Ok(()));
        assert_eq!(w.check(u64::MAX - 200), Err(Refused::TooOld));
    }

    #[test]
    fn esn_rollover_keeps_replay_state() {
        let hi = 1u64 << 32;
        let mut w = Window::new(64, true);
        ok(&mut w, hi - 2);
        let s = w.infer(1).unwrap();
        assert_eq!(s, hi + 1);
        ok(&mut w, s);
        // hi - 2 is still in the window and already seen.
        assert_eq!(w.check(w.infer(u32::MAX - 1).unwrap()), Err(Refused::Replayed));
        assert_eq!(w.check(w.infer(u32::MAX).unwrap()), Ok(()));
    }
}
