//! A sliding anti-replay window over 64-bit sequence numbers (the RFC 4303 §3.4.3 scheme,
//! 64 entries wide): a number is accepted once, and only if it is not older than the window.

/// The window of one sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (valid once `seen`).
    top: u64,
    /// Bit i set: `top - i` was accepted.
    bits: u64,
    seen: bool,
}

/// Why a sequence number is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Replayed,
    TooOld,
}

const WIDTH: u64 = 64;

impl ReplayWindow {
    /// Whether `seq` would be accepted, without recording it (the MAC is checked in between).
    pub fn check(&self, seq: u64) -> Result<(), Refused> {
        if !self.seen || seq > self.top {
            return Ok(());
        }
        let age = self.top - seq;
        if age >= WIDTH {
            Err(Refused::TooOld)
        } else if self.bits & (1 << age) != 0 {
            Err(Refused::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as accepted; call only after [`ReplayWindow::check`] passed.
    pub fn accept(&mut self, seq: u64) {
        if !self.seen {
            *self = ReplayWindow { top: seq, bits: 1, seen: true };
        } else if seq > self.top {
            let shift = seq - self.top;
            self.bits = if shift >= WIDTH { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.top = seq;
        } else {
            let age = self.top - seq;
            if age < WIDTH {
                self.bits |= 1 << age;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(w: &mut ReplayWindow, seq: u64) -> Result<(), Refused> {
        w.check(seq)?;
        w.accept(seq);
        Ok(())
    }

    #[test]
    fn once_each_within_the_window() {
        let mut w = ReplayWindow::default();
        assert_eq!(offer(&mut w, 1000), Ok(()));
        assert_eq!(offer(&mut w, 1000), Err(Refused::Replayed));
        assert_eq!(offer(&mut w, 990), Ok(()), "late but inside the window");
        assert_eq!(offer(&mut w, 990), Err(Refused::Replayed));
        assert_eq!(offer(&mut w, 1000 - 64), Err(Refused::TooOld));
        assert_eq!(offer(&mut w, 1000 - 63), Ok(()));
        assert_eq!(offer(&mut w, 1200), Ok(()), "a jump clears the window");
        assert_eq!(offer(&mut w, 1000), Err(Refused::TooOld));
        assert_eq!(offer(&mut w, 1199), Ok(()));
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(5), Ok(()));
        assert_eq!(w.check(5), Ok(()));
        w.accept(5);
        assert_eq!(w.check(5), Err(Refused::Replayed));
    }
}
