//! Flow keys: the direction-normalised 5-tuple every per-flow table is indexed by.
//!
//! Both directions of a connection map to the same [`FlowKey`]: the endpoint that sorts lower
//! (address, then port) is stored first, and [`Dir`] tells which side sent a given packet. The
//! key is plain old data so it can live in state arenas and travel between instances.

use bytemuck::{Pod, Zeroable};

/// Which way a packet travels relative to its flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dir {
    /// The sender is the key's `lo` endpoint.
    #[default]
    LoToHi,
    /// The sender is the key's `hi` endpoint.
    HiToLo,
}

impl Dir {
    pub fn reverse(self) -> Dir {
        match self {
            Dir::LoToHi => Dir::HiToLo,
            Dir::HiToLo => Dir::LoToHi,
        }
    }
}

/// Address family of a flow key.
pub const FAMILY_NONE: u8 = 0;
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// A direction-normalised 5-tuple. IPv4 addresses occupy the first 4 bytes of each address.
/// Aligned to 8 bytes so it can be hashed as five `u64` words.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable, Default)]
pub struct FlowKey {
    pub lo_addr: [u8; 16],
    pub hi_addr: [u8; 16],
    pub lo_port: u16,
    pub hi_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    /// Builds the normalised key of a packet from its sender and receiver endpoints and
    /// returns the direction the packet travels in.
    #[inline]
    pub fn new(
        family: u8,
        proto: u8,
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
    ) -> (FlowKey, Dir) {
        // Compare as integers: the same order as the byte arrays, without a byte loop.
        let (s, d) = (u128::from_be_bytes(src), u128::from_be_bytes(dst));
        let (lo, hi, dir) = if (s, sport) <= (d, dport) {
            ((src, sport), (dst, dport), Dir::LoToHi)
        } else {
            ((dst, dport), (src, sport), Dir::HiToLo)
        };
        let key = FlowKey {
            lo_addr: lo.0,
            hi_addr: hi.0,
            lo_port: lo.1,
            hi_port: hi.1,
            proto,
            family,
            _pad: [0; 2],
        };
        (key, dir)
    }

    /// The sender's (address, port) for a packet travelling in `dir`.
    pub fn src(&self, dir: Dir) -> ([u8; 16], u16) {
        match dir {
            Dir::LoToHi => (self.lo_addr, self.lo_port),
            Dir::HiToLo => (self.hi_addr, self.hi_port),
        }
    }

    /// The receiver's (address, port) for a packet travelling in `dir`.
    pub fn dst(&self, dir: Dir) -> ([u8; 16], u16) {
        self.src(dir.reverse())
    }

    /// A hash that is the same for both directions (the key is already normalised).
    ///
    /// Multiply-xorshift over the key's words: cheap, and good enough for open addressing
    /// and core selection; tables do not rely on it being keyed.
    #[inline]
    pub fn hash(&self) -> u32 {
        let w: &[u64; 5] = bytemuck::cast_ref(self);
        let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
        for x in w {
            h = (h ^ x).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 29;
        }
        h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
        (h >> 32) as u32 ^ (h as u32)
    }
}

/// The core, among `cores`, that owns flows with symmetric hash `hash`: a multiply-shift
/// (no modulo) used by the dataplane's software steering, by generators that imitate
/// symmetric RSS, and by NFs that steer by a hash of their own (NAT `steer_outbound`).
#[inline]
pub fn core_for(hash: u32, cores: usize) -> usize {
    ((u64::from(hash) * cores as u64) >> 32) as usize
}

/// An IPv4 address as the first four bytes of a 16-byte key address.
pub fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_key_and_hash() {
        let a = v4([10, 0, 0, 1]);
        let b = v4([192, 168, 1, 9]);
        let (k1, d1) = FlowKey::new(FAMILY_V4, 6, a, 40000, b, 80);
        let (k2, d2) = FlowKey::new(FAMILY_V4, 6, b, 80, a, 40000);
        assert_eq!(k1, k2);
        assert_eq!(k1.hash(), k2.hash());
        assert_eq!(d1, Dir::LoToHi);
        assert_eq!(d2, Dir::HiToLo);
        assert_eq!(k1.src(d1), (a, 40000));
        assert_eq!(k1.dst(d1), (b, 80));
        assert_eq!(k2.src(d2), (b, 80));
    }

    #[test]
    fn same_addresses_order_by_port() {
        let a = v4([10, 0, 0, 1]);
        let (k, d) = FlowKey::new(FAMILY_V4, 17, a, 9, a, 7);
        assert_eq!((k.lo_port, k.hi_port, d), (7, 9, Dir::HiToLo));
    }

    #[test]
    fn core_for_splits_the_hash_space_evenly() {
        assert_eq!(core_for(0, 2), 0);
        assert_eq!(core_for(0x7fff_ffff, 2), 0);
        assert_eq!(core_for(0x8000_0000, 2), 1);
        assert_eq!(core_for(u32::MAX, 2), 1);
        assert_eq!(core_for(u32::MAX, 1), 0);
        assert_eq!(core_for(u32::MAX / 3 * 2 + 2, 3), 2);
    }

    #[test]
    fn hash_spreads_ports() {
        let a = v4([10, 0, 0, 1]);
        let b = v4([10, 0, 0, 2]);
        let mut buckets = [0u32; 16];
        for p in 0..16_000u16 {
            let (k, _) = FlowKey::new(FAMILY_V4, 17, a, 1024 + p, b, 53);
            buckets[(k.hash() & 15) as usize] += 1;
        }
        for n in buckets {
            assert!((800..1200).contains(&n), "uneven bucket {n}");
        }
    }
}
