//! UDP datagrams (RFC 768).
//!
//! [`UdpPacket::new_checked`] validates the header and the length field against the buffer
//! once; no accessor or setter can panic afterwards. Port setters keep the checksum right with
//! an RFC 1624 incremental update and honour the zero-checksum rule: a zero checksum means the
//! sender computed none, so it stays zero, and a computed zero is sent as 0xffff.

use super::checksum;
use super::{get_u16, set_u16};
use crate::drop::DropReason;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    /// Use it for the first fragment of a datagram, whose length field covers fragments that
    /// are not in the buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer of at least 8 bytes (else `Truncated`) whose length field covers the
    /// header and fits in the buffer (else `BadUdpLength`). The buffer may be longer than the
    /// length field says; [`UdpPacket::payload`] stops at the length field.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let len = usize::from(get_u16(b, field::LENGTH));
        if len < HEADER_LEN || len > b.len() {
            return Err(DropReason::BadUdpLength);
        }
        Ok(UdpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload, in bytes.
    #[inline]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// True when the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// The checksum field; zero means "none" (allowed over IPv4 only).
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload as far as both the length field and the buffer reach.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.len()).min(b.len());
        b.get(field::PAYLOAD..end).unwrap_or_default()
    }

    /// True when the checksum is zero (none was computed) or the datagram up to its length
    /// field plus the pseudo-header sum `pseudo` sums to all ones.
    pub fn verify_checksum(&self, pseudo: u16) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let b = self.buffer.as_ref();
        let datagram = b.get(..usize::from(self.len())).unwrap_or(b);
        checksum::add(pseudo, checksum::sum(datagram)) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    fn set_word(&mut self, at: usize, new: u16) {
        let b = self.buffer.as_mut();
        let old = get_u16(b, at);
        let hc = get_u16(b, field::CHECKSUM);
        set_u16(b, at, new);
        set_u16(b, field::CHECKSUM, checksum::udp_adjusted(hc, checksum::update16(hc, old, new)));
    }

    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.set_word(field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.set_word(field::DST_PORT, port);
    }

    /// Writes the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the checksum over the datagram (up to its length field) and the
    /// pseudo-header sum `pseudo`; a computed zero is stored as 0xffff.
    pub fn fill_checksum(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let datagram = b.get(..usize::from(self.len())).unwrap_or(b);
        let c = checksum::nonzero(!checksum::add(pseudo, checksum::sum(datagram)));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden;
    use crate::packet::meta::IpProtocol;

    const SRC: [u8; 4] = [10, 0, 0, 2];
    const DST: [u8; 4] = [8, 8, 8, 8];

    fn dns() -> Vec<u8> {
        golden::IPV4_UDP_DNS.get(34..).unwrap_or_default().to_vec()
    }

    #[test]
    fn golden_dns_fields() -> Result<(), DropReason> {
        let buf = dns();
        let u = UdpPacket::new_checked(&buf[..])?;
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (53000, 53, 37));
        assert_eq!(u.checksum(), golden::IPV4_UDP_DNS_UDP_CSUM);
        assert_eq!(u.payload().len(), 29);
        assert_eq!(u.payload().get(..2), Some(&[0xab, 0xcd][..]));
        assert!(!u.is_empty());
        assert!(u.verify_checksum(checksum::pseudo_v4(SRC, DST, IpProtocol::Udp, 37)));
        Ok(())
    }

    #[test]
    fn malformed_headers() {
        let good = dns();
        #[rustfmt::skip]
        let cases: &[golden::Mutation] = &[
            ("7 bytes", |b| b.truncate(7), DropReason::Truncated),
            ("length 7", |b| b[4..6].copy_from_slice(&[0, 7]), DropReason::BadUdpLength),
            ("length past end", |b| b[4..6].copy_from_slice(&[0, 38]), DropReason::BadUdpLength),
        ];
        for (name, mutate, want) in cases {
            let mut b = good.clone();
            mutate(&mut b);
            assert_eq!(UdpPacket::new_checked(&b[..]).err(), Some(*want), "{name}");
        }
    }

    #[test]
    fn port_setters_keep_checksum_and_zero_rule() -> Result<(), DropReason> {
        let pseudo = checksum::pseudo_v4(SRC, DST, IpProtocol::Udp, 37);
        let mut buf = dns();
        let mut u = UdpPacket::new_checked(&mut buf[..])?;
        u.set_src_port(40000);
        u.set_dst_port(5353);
        assert!(u.verify_checksum(pseudo));
        assert_eq!((u.src_port(), u.dst_port()), (40000, 5353));
        let kept = u.checksum();
        u.fill_checksum(pseudo);
        assert_eq!(kept, u.checksum());
        // No checksum: ports change, the checksum stays "none".
        u.set_checksum(0);
        u.set_src_port(1);
        assert_eq!(u.checksum(), 0);
        Ok(())
    }

    #[test]
    fn computed_zero_is_sent_as_ones() -> Result<(), DropReason> {
        let pseudo = checksum::pseudo_v4(SRC, DST, IpProtocol::Udp, 37);
        let mut buf = dns();
        let mut u = UdpPacket::new_checked(&mut buf[..])?;
        // Choose a source port that makes the true checksum 0x0000: the complement of
        // everything else must then be the port itself.
        u.set_src_port(0);
        u.fill_checksum(pseudo);
        let port = u.checksum();
        u.set_src_port(port);
        assert_eq!(u.checksum(), 0xffff, "incremental zero goes out as ones");
        assert!(u.verify_checksum(pseudo));
        u.fill_checksum(pseudo);
        assert_eq!(u.checksum(), 0xffff, "full zero goes out as ones");
        Ok(())
    }
}
