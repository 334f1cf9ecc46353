//! ICMP for IPv6 (RFC 4443).
//!
//! [`Icmpv6Packet::new_checked`] validates the 8-byte header once; no accessor or setter can
//! panic afterwards. Setters keep the checksum right with an RFC 1624 incremental update. The
//! checksum covers the IPv6 pseudo-header (RFC 4443 §2.3), whose sum callers take from
//! [`checksum::pseudo_v6`].

use super::checksum;
use super::meta::enum_with_unknown;
use super::{get_array, get_u16, set_u16};
use crate::drop::DropReason;

enum_with_unknown! {
    /// ICMPv6 message types nflet looks at (RFC 4443, RFC 4861).
    pub enum Icmpv6Type(u8) {
        DstUnreachable = 1,
        PacketTooBig = 2,
        TimeExceeded = 3,
        ParamProblem = 4,
        EchoRequest = 128,
        EchoReply = 129,
        RouterSolicit = 133,
        RouterAdvert = 134,
        NeighborSolicit = 135,
        NeighborAdvert = 136,
        Redirect = 137,
    }
}

impl Icmpv6Type {
    /// Echo request or reply: the messages with an identifier that pairs them.
    #[inline]
    pub fn is_echo(self) -> bool {
        matches!(self, Icmpv6Type::EchoRequest | Icmpv6Type::EchoReply)
    }

    /// RFC 4443 §2.1: "Error messages are identified as such by a zero in the high-order bit
    /// of their message Type field values."
    #[inline]
    pub fn is_error(self) -> bool {
        u8::from(self) & 0x80 == 0
    }
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const DATA: usize = 8;
}

/// Length of the ICMPv6 header including the 4-byte message-specific word.
pub const HEADER_LEN: usize = field::DATA;

/// A view of an ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a message of at least 8 bytes, else `Truncated`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(Icmpv6Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> Icmpv6Type {
        Icmpv6Type::from(self.buffer.as_ref()[field::TYPE])
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8 (echo id/seq, MTU, pointer, NDP flags, depending on the type).
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::REST)
    }

    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(field::DATA..).unwrap_or_default()
    }

    /// For error messages, the invoking packet: "as much of invoking packet as possible
    /// without the ICMPv6 packet exceeding the minimum IPv6 MTU" (RFC 4443 §3).
    #[inline]
    pub fn embedded(&self) -> Option<&[u8]> {
        self.msg_type().is_error().then(|| self.data())
    }

    /// True when the message plus the pseudo-header sum `pseudo` sums to all ones.
    pub fn verify_checksum(&self, pseudo: u16) -> bool {
        checksum::add(pseudo, checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    #[inline]
    fn set_word(&mut self, at: usize, new: u16) {
        let b = self.buffer.as_mut();
        let old = get_u16(b, at);
        let hc = get_u16(b, field::CHECKSUM);
        set_u16(b, at, new);
        set_u16(b, field::CHECKSUM, checksum::update16(hc, old, new));
    }

    #[inline]
    pub fn set_msg_type(&mut self, t: Icmpv6Type) {
        let code = self.code();
        self.set_word(field::TYPE, u16::from_be_bytes([t.into(), code]));
    }

    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        self.set_word(field::ECHO_IDENT, ident);
    }

    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        self.set_word(field::ECHO_SEQ, seq);
    }

    /// Writes the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the checksum over the whole buffer and the pseudo-header sum `pseudo`.
    pub fn fill_checksum(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let c = !checksum::add(pseudo, checksum::sum(self.buffer.as_ref()));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden;
    use crate::packet::meta::IpProtocol;

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    #[test]
    fn golden_echo_request() -> Result<(), DropReason> {
        let mut buf = golden::IPV6_ICMPV6_ECHO.get(54..).unwrap_or_default().to_vec();
        let pseudo = checksum::pseudo_v6(&SRC, &DST, IpProtocol::Icmpv6, 16);
        let mut p = Icmpv6Packet::new_checked(&mut buf[..])?;
        assert_eq!((p.msg_type(), p.code()), (Icmpv6Type::EchoRequest, 0));
        assert_eq!(p.checksum(), golden::IPV6_ICMPV6_ECHO_CSUM);
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x0a0b, 3));
        assert_eq!(p.rest_of_header(), [0x0a, 0x0b, 0, 3]);
        assert_eq!(p.data(), b"nflet!!\n");
        assert!(p.embedded().is_none());
        assert!(p.verify_checksum(pseudo));
        p.set_echo_ident(7);
        p.set_echo_seq(0xffff);
        p.set_msg_type(Icmpv6Type::EchoReply);
        assert!(p.verify_checksum(pseudo));
        let kept = p.checksum();
        p.fill_checksum(pseudo);
        assert_eq!(kept, p.checksum());
        Ok(())
    }

    #[test]
    fn error_types_by_high_bit() {
        assert!(Icmpv6Type::PacketTooBig.is_error());
        assert!(Icmpv6Type::Unknown(127).is_error());
        assert!(!Icmpv6Type::NeighborSolicit.is_error());
        assert!(Icmpv6Type::EchoReply.is_echo() && !Icmpv6Type::EchoReply.is_error());
    }

    #[test]
    fn short_messages_are_truncated() {
        assert_eq!(Icmpv6Packet::new_checked(&[0u8; 7][..]), Err(DropReason::Truncated));
    }
}
