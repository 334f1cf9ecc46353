//! IPv4 headers (RFC 791).
//!
//! [`Ipv4Packet::new_checked`] validates the version, the header length and the total length
//! against the buffer once; no accessor or setter can panic afterwards. Setters of header
//! fields keep the header checksum right with an RFC 1624 incremental update, so a view that
//! verified stays verified; [`Ipv4Packet::set_checksum`] is the only raw write.

use super::checksum;
use super::meta::IpProtocol;
use super::{get_array, get_u16, set_u16};
use crate::drop::DropReason;

mod field {
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const OPTIONS: usize = 20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 datagram (header and payload, possibly followed by link padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after checking, in this order: at least 20 bytes (`Truncated`), version
    /// 4 (`BadIpVersion`), IHL of at least 5 words and within the buffer (`BadIhl`), total
    /// length covering the header and within the buffer (`BadTotalLength`). The header
    /// checksum is not checked here: see [`Ipv4Packet::verify_checksum`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let ver_ihl = b[field::VER_IHL];
        if ver_ihl >> 4 != 4 {
            return Err(DropReason::BadIpVersion);
        }
        let hlen = usize::from(ver_ihl & 0x0f) * 4;
        if hlen < HEADER_LEN || hlen > b.len() {
            return Err(DropReason::BadIhl);
        }
        let total = usize::from(get_u16(b, field::LENGTH));
        if total < hlen || total > b.len() {
            return Err(DropReason::BadTotalLength);
        }
        Ok(Ipv4Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point (RFC 2474), the upper 6 bits of the old TOS byte.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification (RFC 3168), the low 2 bits of the old TOS byte.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length of the datagram in bytes, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::DST)
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        self.buffer.as_ref().get(..self.header_len()).unwrap_or_default()
    }

    /// Options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        self.header().get(field::OPTIONS..).unwrap_or_default()
    }

    /// The payload up to the total length (link padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.as_ref().get(range).unwrap_or_default()
    }

    /// True when the header checksum verifies (the header sums to all ones, RFC 1071).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        // The common option-less header gets a fixed-length, fully unrolled sum.
        let fixed = self.buffer.as_ref().first_chunk::<HEADER_LEN>();
        let sum = match fixed {
            Some(h) if self.header_len() == HEADER_LEN => checksum::sum(h),
            _ => checksum::sum(self.header()),
        };
        sum == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Writes the 16-bit word at the even offset `at` and updates the header checksum.
    #[inline]
    fn set_word(&mut self, at: usize, new: u16) {
        let b = self.buffer.as_mut();
        let old = get_u16(b, at);
        let hc = get_u16(b, field::CHECKSUM);
        set_u16(b, at, new);
        set_u16(b, field::CHECKSUM, checksum::update16(hc, old, new));
    }

    /// Sets the DSCP, keeping ECN.
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = self.buffer.as_ref();
        let word = u16::from_be_bytes([b[field::VER_IHL], (dscp << 2) | (b[field::DSCP_ECN] & 3)]);
        self.set_word(field::VER_IHL, word);
    }

    /// Sets the ECN bits, keeping DSCP.
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = self.buffer.as_ref();
        let tos = (b[field::DSCP_ECN] & !3) | (ecn & 3);
        self.set_word(field::VER_IHL, u16::from_be_bytes([b[field::VER_IHL], tos]));
    }

    #[inline]
    pub fn set_ident(&mut self, ident: u16) {
        self.set_word(field::IDENT, ident);
    }

    #[inline]
    pub fn set_ttl(&mut self, ttl: u8) {
        let proto = self.buffer.as_ref()[field::PROTOCOL];
        self.set_word(field::TTL, u16::from_be_bytes([ttl, proto]));
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 4]) {
        self.set_addr(field::SRC, addr);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 4]) {
        self.set_addr(field::DST, addr);
    }

    #[inline]
    fn set_addr(&mut self, at: usize, addr: [u8; 4]) {
        let b = self.buffer.as_mut();
        let old = get_array(b, at);
        let hc = get_u16(b, field::CHECKSUM);
        b[at..at + 4].copy_from_slice(&addr);
        set_u16(b, field::CHECKSUM, checksum::update32(hc, old, addr));
    }

    /// Writes the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden;

    fn ip(frame: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
        Ipv4Packet::new_checked(frame.get(14..).unwrap_or_default())
    }

    #[test]
    fn golden_tcp_syn_header() -> Result<(), DropReason> {
        let p = ip(golden::IPV4_TCP_SYN)?;
        assert_eq!((p.version(), p.header_len(), p.dscp(), p.ecn()), (4, 20, 0, 0));
        assert_eq!((p.total_len(), p.ident(), p.ttl()), (60, 0x1c46, 64));
        assert!(p.dont_frag() && !p.more_frags() && p.frag_offset() == 0);
        assert_eq!(p.protocol(), IpProtocol::Tcp);
        assert_eq!(p.checksum(), golden::IPV4_TCP_SYN_IP_CSUM);
        assert_eq!(p.src_addr(), [192, 168, 1, 10]);
        assert_eq!(p.dst_addr(), [93, 184, 216, 34]);
        assert!(p.verify_checksum());
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 40);
        Ok(())
    }

    #[test]
    fn malformed_headers() {
        let good = golden::IPV4_TCP_SYN.get(14..).unwrap_or_default().to_vec();
        #[rustfmt::skip]
        let cases: &[golden::Mutation] = &[
            ("short", |b| b.truncate(19), DropReason::Truncated),
            ("empty", |b| b.clear(), DropReason::Truncated),
            ("version 6", |b| b[0] = 0x65, DropReason::BadIpVersion),
            ("ihl 4", |b| b[0] = 0x44, DropReason::BadIhl),
            ("ihl past end", |b| { b[0] = 0x4f; b.truncate(59) }, DropReason::BadIhl),
            ("total < header", |b| b[2..4].copy_from_slice(&[0, 19]), DropReason::BadTotalLength),
            ("total > buffer", |b| b[2..4].copy_from_slice(&[0, 61]), DropReason::BadTotalLength),
        ];
        for (name, mutate, want) in cases {
            let mut b = good.clone();
            mutate(&mut b);
            assert_eq!(Ipv4Packet::new_checked(&b[..]).err(), Some(*want), "{name}");
        }
    }

    #[test]
    fn setters_keep_checksum_valid() -> Result<(), DropReason> {
        let mut buf = golden::IPV4_TCP_SYN.get(14..).unwrap_or_default().to_vec();
        let mut p = Ipv4Packet::new_checked(&mut buf[..])?;
        p.set_ttl(1);
        p.set_dscp(46);
        p.set_ecn(2);
        p.set_ident(0xffff);
        p.set_src_addr([10, 0, 0, 1]);
        p.set_dst_addr([255, 255, 255, 255]);
        assert!(p.verify_checksum());
        assert_eq!((p.ttl(), p.dscp(), p.ecn(), p.ident()), (1, 46, 2, 0xffff));
        assert_eq!(p.protocol(), IpProtocol::Tcp);
        assert_eq!((p.src_addr(), p.dst_addr()), ([10, 0, 0, 1], [255; 4]));
        let kept = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), kept);
        p.set_checksum(kept ^ 1);
        assert!(!p.verify_checksum());
        Ok(())
    }

    #[test]
    fn fragment_fields() -> Result<(), DropReason> {
        let mut buf = golden::IPV4_TCP_SYN.get(14..).unwrap_or_default().to_vec();
        buf[6..8].copy_from_slice(&(FLAG_MF | 185).to_be_bytes());
        let p = Ipv4Packet::new_checked(&buf[..])?;
        assert!(p.more_frags() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        Ok(())
    }
}
