//! The public (address, port) pool of one protocol, as release-consistent global state.
//!
//! A [`PortPool`] is a bitmap over `addresses × 65536` ports: a set bit is a free public
//! port. The whole pool is split into per-core shares by [`Release::group`](crate::state::Release);
//! a core allocates from its own share without synchronisation, takes a batch from the common
//! reserve when its share runs dry, and gives half of its share back when another core asks
//! (`balance`, at burst boundaries). A port is in exactly one share, the reserve, or a live
//! mapping (within a burst also: picked ahead for one of its new flows, `Nat::process`), so
//! no port is ever handed out twice while a mapping holds it.
//!
//! Shares are cut evenly across addresses ([`Splittable::split_off`]) so that every core can
//! honour paired address pooling (RFC 4787 REQ-2: the same inside address always gets the same
//! public address).

use crate::rng::Rng;
use crate::state::Splittable;

const PORTS: usize = 1 << 16;
const WORDS_PER_ADDR: usize = PORTS / 64;

/// A public (address index, port) pair as one number: `addr << 16 | port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(pub u32);

impl Slot {
    pub fn new(addr: usize, port: u16) -> Slot {
        Slot(((addr as u32) << 16) | u32::from(port))
    }
    pub fn addr(self) -> usize {
        (self.0 >> 16) as usize
    }
    pub fn port(self) -> u16 {
        self.0 as u16
    }
}

/// Free public ports of one protocol.
#[derive(Debug, Clone)]
pub struct PortPool {
    bits: Vec<u64>,
    /// Free ports per address.
    free: Vec<usize>,
    /// Per address, the lowest and highest word that ever held a free port here (empty when
    /// `lo > hi`): random picks start inside it, so a share holding a narrow band of ports
    /// is sampled evenly rather than always from the band's first word.
    span: Vec<(usize, usize)>,
}

impl PortPool {
    /// A pool with no free port, for `addrs` addresses.
    pub fn empty(addrs: usize) -> PortPool {
        PortPool {
            bits: vec![0; addrs * WORDS_PER_ADDR],
            free: vec![0; addrs],
            span: vec![(usize::MAX, 0); addrs],
        }
    }

    /// Every port in `lo..=hi` of every address is free, except those `reserved` says.
    pub fn full(addrs: usize, lo: u16, hi: u16, reserved: impl Fn(usize, u16) -> bool) -> PortPool {
        let mut p = PortPool::empty(addrs);
        for a in 0..addrs {
            for port in lo..=hi {
                if !reserved(a, port) {
                    p.put(Slot::new(a, port));
                }
            }
        }
        p
    }

    pub fn addrs(&self) -> usize {
        self.free.len()
    }

    /// Every free slot, lowest first.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let s = Slot((w * 64) as u32 + word.trailing_zeros());
                word &= word - 1;
                Some(s)
            })
        })
    }

    /// Free ports of address `a`.
    pub fn free_in(&self, a: usize) -> usize {
        self.free.get(a).copied().unwrap_or(0)
    }

    fn word_bit(s: Slot) -> (usize, u64) {
        (s.0 as usize / 64, 1u64 << (s.0 % 64))
    }

    pub fn contains(&self, s: Slot) -> bool {
        let (w, b) = Self::word_bit(s);
        self.bits.get(w).is_some_and(|x| x & b != 0)
    }

    /// Takes `s` out of the pool if it is free here.
    pub fn take(&mut self, s: Slot) -> bool {
        let (w, b) = Self::word_bit(s);
        match self.bits.get_mut(w) {
            Some(x) if *x & b != 0 => {
                *x &= !b;
                if let Some(f) = self.free.get_mut(s.addr()) {
                    *f -= 1;
                }
                true
            }
            _ => false,
        }
    }

    /// Returns `s` to the pool.
    pub fn put(&mut self, s: Slot) {
        let (w, b) = Self::word_bit(s);
        if let Some(x) = self.bits.get_mut(w) {
            if *x & b == 0 {
                *x |= b;
                if let Some(f) = self.free.get_mut(s.addr()) {
                    *f += 1;
                }
                if let Some((lo, hi)) = self.span.get_mut(s.addr()) {
                    let rel = w % WORDS_PER_ADDR;
                    (*lo, *hi) = ((*lo).min(rel), (*hi).max(rel));
                }
            }
        }
    }

    /// Picks and takes a free port of address `a`, starting at a pseudo-random place and
    /// trying up to `tries` free ports until `accept` agrees. `None` if `a` has no free port
    /// or none of the tried ones was accepted.
    pub fn pick(
        &mut self,
        a: usize,
        rng: &mut Rng,
        tries: usize,
        accept: impl Fn(Slot) -> bool,
    ) -> Option<Slot> {
        if self.free_in(a) == 0 {
            return None;
        }
        let &(lo, hi) = self.span.get(a).filter(|(lo, hi)| lo <= hi)?;
        let (base, n) = (a * WORDS_PER_ADDR + lo, hi - lo + 1);
        for _ in 0..tries {
            let r = rng.next_u64();
            let start = (r as usize) % n;
            let rot = (r >> 32) as u32 % 64;
            for step in 0..n {
                let w = base + (start + step) % n;
                let word = self.bits.get(w).copied().unwrap_or(0);
                if word == 0 {
                    continue;
                }
                // The first free bit at or after a random position in the word.
                let bit = (rot + word.rotate_right(rot).trailing_zeros()) % 64;
                let s = Slot((w * 64) as u32 + bit);
                if accept(s) {
                    self.take(s);
                    return Some(s);
                }
                break;
            }
        }
        None
    }

    /// Takes up to `n` free ports of address `a`, lowest first.
    fn drain_addr(&mut self, a: usize, mut n: usize, into: &mut PortPool) {
        let base = a * WORDS_PER_ADDR;
        for w in base..base + WORDS_PER_ADDR {
            if n == 0 {
                return;
            }
            let Some(word) = self.bits.get(w).copied() else { return };
            let mut word = word;
            while word != 0 && n > 0 {
                let s = Slot((w * 64) as u32 + word.trailing_zeros());
                word &= word - 1;
                self.take(s);
                into.put(s);
                n -= 1;
            }
        }
    }
}

impl Splittable for PortPool {
    fn available(&self) -> usize {
        self.free.iter().sum()
    }

    /// Takes `n` ports spread evenly over the addresses (so every share can pair addresses).
    fn split_off(&mut self, n: usize) -> Self {
        let addrs = self.addrs().max(1);
        let mut out = PortPool::empty(self.addrs());
        let mut left = n.min(self.available());
        // Even split first, then whatever is left from any address.
        for a in 0..self.addrs() {
            let want = n / addrs + usize::from(a < n % addrs);
            let before = out.available();
            self.drain_addr(a, want.min(left), &mut out);
            left -= out.available() - before;
        }
        for a in 0..self.addrs() {
            let before = out.available();
            self.drain_addr(a, left, &mut out);
            left -= out.available() - before;
        }
        out
    }

    fn merge(&mut self, other: Self) {
        for (w, word) in other.bits.iter().enumerate() {
            let mut word = *word;
            while word != 0 {
                self.put(Slot((w * 64) as u32 + word.trailing_zeros()));
                word &= word - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Release;

    #[test]
    fn take_put_and_counts() {
        let mut p = PortPool::full(2, 1024, 1030, |a, port| a == 1 && port == 1025);
        assert_eq!((p.free_in(0), p.free_in(1), p.available()), (7, 6, 13));
        assert!(p.take(Slot::new(0, 1024)));
        assert!(!p.take(Slot::new(0, 1024)), "no port twice");
        assert!(!p.contains(Slot::new(1, 1025)));
        p.put(Slot::new(0, 1024));
        p.put(Slot::new(0, 1024));
        assert_eq!(p.available(), 13);
        let slots: Vec<u32> = p.slots().map(|s| s.0).collect();
        assert_eq!(slots.len(), 13);
        assert_eq!(slots[..2], [1024, 1025]);
        assert_eq!(slots[7..9], [(1 << 16) | 1024, (1 << 16) | 1026]);
    }

    #[test]
    fn shares_are_even_across_addresses_and_conserve_ports() {
        let whole = PortPool::full(2, 1024, 2047, |_, _| false);
        let shares = Release::group(whole, 2, 16);
        for s in &shares {
            // 2048 ports / 2 cores, half of each address.
            assert_eq!(s.available(), 1024);
        }
        assert_eq!(shares.first().map(|s| s.reserve_available()), Some(0));
    }

    #[test]
    fn pick_is_spread_and_respects_accept() {
        let mut p = PortPool::full(1, 1024, u16::MAX, |_, _| false);
        let mut rng = Rng::new(42);
        let mut got = Vec::new();
        for _ in 0..100 {
            let s = p.pick(0, &mut rng, 64, |s| s.port() % 2 == 0).unwrap();
            assert_eq!(s.port() % 2, 0);
            got.push(s.port());
        }
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 100, "never the same port twice");
        assert!(got.first() < Some(&20000) && got.last() > Some(&45000), "spread over the range");
        assert_eq!(p.available(), 64512 - 100);
    }
}
