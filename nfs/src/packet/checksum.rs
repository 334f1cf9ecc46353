//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Partial sums are `u16` one's-complement sums, already folded and not yet complemented; a
//! checksum field holds the complement of the sum of everything it covers. Incremental
//! updates let a rewrite change a few bytes of a header without touching the rest of the
//! packet. Nothing here allocates or panics.

use super::meta::IpProtocol;

/// Folds a wide accumulator of 16- or 32-bit big-endian words into a 16-bit one's-complement
/// sum (RFC 1071 §2 (C): the sum may be taken over wider words and folded afterwards).
#[inline]
fn fold(acc: u64) -> u16 {
    // Four end-around-carry steps take any u64 to 16 bits without a loop:
    // < 2^33, then < 2^17 + 2^16, then <= 0x10002, then <= 0xffff.
    let acc = (acc >> 32) + (acc & 0xffff_ffff);
    let acc = (acc >> 16) + (acc & 0xffff);
    let acc = (acc >> 16) + (acc & 0xffff);
    let acc = (acc >> 16) + (acc & 0xffff);
    acc as u16
}

/// One's-complement addition of two partial sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// One's-complement sum of `data` as big-endian 16-bit words; an odd trailing byte is padded
/// with a zero byte on the right (RFC 1071 §4.1).
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        acc += u64::from(u32::from_be_bytes([q[0], q[1], q[2], q[3]]));
    }
    match *quads.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(a) << 8,
        _ => {}
    }
    fold(acc)
}

/// The checksum of `data` alone: the complement of its sum (what an IPv4 header or ICMPv4
/// message carries, computed with its checksum field zeroed).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Sum of the IPv4 pseudo-header of a TCP or UDP segment of `len` bytes (RFC 793 §3.1,
/// RFC 768).
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: IpProtocol, len: u16) -> u16 {
    let acc = u64::from(u32::from_be_bytes(src))
        + u64::from(u32::from_be_bytes(dst))
        + u64::from(u8::from(proto))
        + u64::from(len);
    fold(acc)
}

/// Sum of the IPv6 pseudo-header of an upper-layer packet of `len` bytes (RFC 8200 §8.1).
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], proto: IpProtocol, len: u32) -> u16 {
    add(add(sum(src), sum(dst)), fold(u64::from(len) + u64::from(u8::from(proto))))
}

/// RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`: the checksum after the 16-bit word `old` of
/// the covered data became `new`. `old` must sit at an even offset of the covered data.
///
/// Eqn. 3 (not eqn. 2, `HC - ~m - m'`) never produces the `-0` result of RFC 1624 §3, and
/// agrees with a full recomputation except that it may give 0x0000 where a recomputation over
/// all-zero data gives 0xffff; both verify.
#[inline]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    !add(add(!hc, !old), new)
}

/// [`update16`] for a 32-bit field such as an IPv4 address (two words at an even offset).
#[inline]
pub fn update32(hc: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    // ~m over two words is 0x1fffe - (m1 + m2) in one's-complement terms; summing the
    // complements word by word is simpler and just as cheap.
    let [o0, o1, o2, o3] = old;
    let [n0, n1, n2, n3] = new;
    let acc = u64::from(!hc)
        + u64::from(!u16::from_be_bytes([o0, o1]))
        + u64::from(!u16::from_be_bytes([o2, o3]))
        + u64::from(u16::from_be_bytes([n0, n1]))
        + u64::from(u16::from_be_bytes([n2, n3]));
    !fold(acc)
}

/// [`update16`] for a 128-bit field such as an IPv6 address.
#[inline]
pub fn update128(hc: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    // ~sum(old) is the one's-complement negation of all eight old words at once.
    !add(add(!hc, !sum(old)), sum(new))
}

/// RFC 768: "If the computed checksum is zero, it is transmitted as all ones ... An all zero
/// transmitted checksum value means that the transmitter generated no checksum". Given the
/// UDP checksum field `before` a rewrite and the incrementally updated `after`, returns what
/// to store: zero stays zero (no checksum), and a computed zero becomes 0xffff.
#[inline]
pub fn udp_adjusted(before: u16, after: u16) -> u16 {
    if before == 0 {
        0
    } else {
        nonzero(after)
    }
}

/// A freshly computed UDP checksum as transmitted: zero is sent as 0xffff (RFC 768).
#[inline]
pub fn nonzero(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden::Rng;

    /// 0x0000 and 0xffff are both one's-complement zero; a checksum of either verifies.
    fn equivalent(a: u16, b: u16) -> bool {
        a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
    }

    /// Reference: RFC 1071's straightforward 16-bit loop.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn fold_takes_any_accumulator_to_16_bits() {
        for acc in [0, 0xffff, 0x1_0000, 0x1_fffe, u64::from(u32::MAX), u64::MAX, 0x8000_0000_0001] {
            let mut slow = acc;
            while slow >> 16 != 0 {
                slow = (slow & 0xffff) + (slow >> 16);
            }
            assert_eq!(u64::from(fold(acc)), slow, "{acc:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        assert_eq!(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }

    #[test]
    fn ipv4_header_example() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01,
            0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        assert_eq!(sum(&h), 0xffff);
    }

    #[test]
    fn rfc1624_example_gives_positive_zero() {
        // RFC 1624 §4: eqn. 3 yields 0x0000 where eqn. 2 would give 0xffff.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn sum_matches_reference_for_all_lengths() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut buf = [0u8; 200];
        for _ in 0..2000 {
            rng.fill(&mut buf);
            let n = rng.below(buf.len() + 1);
            assert_eq!(sum(&buf[..n]), reference_sum(&buf[..n]), "len {n}");
        }
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let mut rng = Rng(7);
        for _ in 0..500 {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            rng.fill(&mut a);
            rng.fill(&mut b);
            let len = rng.next() as u16;
            let mut v4 = Vec::new();
            v4.extend_from_slice(&a[..4]);
            v4.extend_from_slice(&b[..4]);
            v4.extend_from_slice(&[0, 17]);
            v4.extend_from_slice(&len.to_be_bytes());
            let (a4, b4) = ([a[0], a[1], a[2], a[3]], [b[0], b[1], b[2], b[3]]);
            assert_eq!(pseudo_v4(a4, b4, IpProtocol::Udp, len), reference_sum(&v4));
            let mut v6 = Vec::new();
            v6.extend_from_slice(&a);
            v6.extend_from_slice(&b);
            v6.extend_from_slice(&u32::from(len).to_be_bytes());
            v6.extend_from_slice(&[0, 0, 0, 58]);
            let got = pseudo_v6(&a, &b, IpProtocol::Icmpv6, u32::from(len));
            assert!(equivalent(got, reference_sum(&v6)));
        }
    }

    /// Writes `new` at `at`, recomputes the checksum stored at `ck` in full, and checks the
    /// incremental value against it.
    fn check_against_full(buf: &mut [u8], ck: usize, at: usize, new: &[u8], inc: u16) {
        buf[at..at + new.len()].copy_from_slice(new);
        buf[ck..ck + 2].copy_from_slice(&[0, 0]);
        let full = checksum(buf);
        assert!(equivalent(inc, full), "incremental {inc:#06x} vs full {full:#06x}");
        buf[ck..ck + 2].copy_from_slice(&inc.to_be_bytes());
        assert!(equivalent(sum(buf), 0xffff));
    }

    /// A random even-length buffer with a valid checksum at `ck` and an even offset `at` for
    /// an `n`-byte field that does not overlap it.
    fn setup(rng: &mut Rng, buf: &mut [u8], n: usize) -> (usize, usize, u16) {
        rng.fill(buf);
        let words = buf.len() / 2;
        let ck = 2 * rng.below(words);
        let at = loop {
            let at = 2 * rng.below(words - n / 2 + 1);
            if at + n <= ck || at >= ck + 2 {
                break at;
            }
        };
        buf[ck..ck + 2].copy_from_slice(&[0, 0]);
        let hc = checksum(buf);
        buf[ck..ck + 2].copy_from_slice(&hc.to_be_bytes());
        (ck, at, hc)
    }

    #[test]
    fn incremental_matches_full_recomputation() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let mut buf = [0u8; 64];
        for round in 0..5000 {
            let len = 40 + 2 * rng.below(12);
            let buf = &mut buf[..len];
            // 16-bit word.
            let (ck, at, hc) = setup(&mut rng, buf, 2);
            let old = u16::from_be_bytes([buf[at], buf[at + 1]]);
            let new = if round % 7 == 0 { old } else { rng.next() as u16 };
            check_against_full(buf, ck, at, &new.to_be_bytes(), update16(hc, old, new));
            // 32-bit address.
            let (ck, at, hc) = setup(&mut rng, buf, 4);
            let old = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            let new = (rng.next() as u32).to_be_bytes();
            check_against_full(buf, ck, at, &new, update32(hc, old, new));
            // 128-bit address.
            let (ck, at, hc) = setup(&mut rng, buf, 16);
            let mut old = [0u8; 16];
            old.copy_from_slice(&buf[at..at + 16]);
            let mut new = [0u8; 16];
            rng.fill(&mut new);
            check_against_full(buf, ck, at, &new, update128(hc, &old, &new));
        }
    }

    #[test]
    fn incremental_handles_all_ones_and_zero_words() {
        for &(hc, old, new) in &[
            (0xffff, 0xffff, 0x0000),
            (0x0000, 0x0000, 0xffff),
            (0x1234, 0x0000, 0x0000),
            (0xffff, 0x1234, 0x1234),
        ] {
            let r = update16(hc, old, new);
            // Applying the inverse update returns an equivalent checksum.
            assert!(equivalent(update16(r, new, old), hc), "{hc:#x} {old:#x} {new:#x}");
        }
    }

    #[test]
    fn udp_zero_rule() {
        assert_eq!(udp_adjusted(0, 0x1234), 0, "no checksum stays none");
        assert_eq!(udp_adjusted(0x1234, 0), 0xffff, "computed zero goes out as ones");
        assert_eq!(udp_adjusted(0x1234, 0x4321), 0x4321);
        assert_eq!(nonzero(0), 0xffff);
        assert_eq!(nonzero(7), 7);
    }
}
