//! ICMP for IPv4 (RFC 792).
//!
//! [`IcmpPacket::new_checked`] validates the 8-byte header (type, code, checksum and the
//! 4-byte rest of header every message has) once; no accessor or setter can panic afterwards.
//! Setters keep the checksum right with an RFC 1624 incremental update. The checksum covers
//! the ICMP message only (no pseudo-header), so the buffer must end where the IP datagram does.

use super::checksum;
use super::meta::enum_with_unknown;
use super::{get_array, get_u16, set_u16};
use crate::drop::DropReason;

enum_with_unknown! {
    /// ICMPv4 message types nflet looks at.
    pub enum IcmpType(u8) {
        EchoReply = 0,
        DstUnreachable = 3,
        Redirect = 5,
        EchoRequest = 8,
        TimeExceeded = 11,
        ParamProblem = 12,
    }
}

impl IcmpType {
    /// Echo request or reply: the messages with an identifier that pairs them.
    #[inline]
    pub fn is_echo(self) -> bool {
        matches!(self, IcmpType::EchoRequest | IcmpType::EchoReply)
    }

    /// Error messages, which quote the datagram that caused them (RFC 792, RFC 1812 §4.3.2.3).
    #[inline]
    pub fn is_error(self) -> bool {
        matches!(
            self,
            IcmpType::DstUnreachable | IcmpType::Redirect | IcmpType::TimeExceeded | IcmpType::ParamProblem
        )
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

/// Length of the ICMP header: type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = field::DATA;

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wraps a message of at least 8 bytes, else `Truncated`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(IcmpPacket { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> IcmpType {
        IcmpType::from(self.buffer.as_ref()[field::TYPE])
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Bytes 4..8, whose meaning depends on the type (echo id/seq, next-hop MTU, pointer).
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), field::REST)
    }

    /// Echo identifier (meaningful for echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (meaningful for echo request/reply).
    #[inline]
    pub fn echo_seq(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        self.buffer.as_ref().get(field::DATA..).unwrap_or_default()
    }

    /// For error messages, the quoted datagram: "the internet header plus the first 64 bits
    /// of the original datagram's data" (RFC 792), often more (RFC 1812 §4.3.2.3). It is
    /// usually cut short, so its IP total length may exceed what is here.
    #[inline]
    pub fn embedded(&self) -> Option<&[u8]> {
        self.msg_type().is_error().then(|| self.data())
    }

    /// True when the message sums to all ones.
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    #[inline]
    fn set_word(&mut self, at: usize, new: u16) {
        let b = self.buffer.as_mut();
        let old = get_u16(b, at);
        let hc = get_u16(b, field::CHECKSUM);
        set_u16(b, at, new);
        set_u16(b, field::CHECKSUM, checksum::update16(hc, old, new));
    }

    #[inline]
    pub fn set_msg_type(&mut self, t: IcmpType) {
        let code = self.code();
        self.set_word(field::TYPE, u16::from_be_bytes([t.into(), code]));
    }

    #[inline]
    pub fn set_code(&mut self, code: u8) {
        let t = self.buffer.as_ref()[field::TYPE];
        self.set_word(field::TYPE, u16::from_be_bytes([t, code]));
    }

    #[inline]
    pub fn set_echo_ident(&mut self, ident: u16) {
        self.set_word(field::ECHO_IDENT, ident);
    }

    #[inline]
    pub fn set_echo_seq(&mut self, seq: u16) {
        self.set_word(field::ECHO_SEQ, seq);
    }

    /// The quoted datagram of an error message, for rewriting it in place (NAT). Changes to
    /// it are not reflected in the ICMP checksum: call [`IcmpPacket::fill_checksum`] or apply
    /// incremental updates yourself.
    #[inline]
    pub fn embedded_mut(&mut self) -> Option<&mut [u8]> {
        if self.msg_type().is_error() {
            self.buffer.as_mut().get_mut(field::DATA..)
        } else {
            None
        }
    }

    /// Writes the checksum field as is.
    #[inline]
    pub fn set_checksum(&mut self, c: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, c);
    }

    /// Recomputes the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden;
    use crate::packet::ipv4::Ipv4Packet;

    fn icmp_of(frame: &[u8]) -> Vec<u8> {
        frame.get(34..).unwrap_or_default().to_vec()
    }

    #[test]
    fn golden_echo_request() -> Result<(), DropReason> {
        let buf = icmp_of(golden::IPV4_ICMP_ECHO);
        let p = IcmpPacket::new_checked(&buf[..])?;
        assert_eq!((p.msg_type(), p.code()), (IcmpType::EchoRequest, 0));
        assert_eq!(p.checksum(), golden::IPV4_ICMP_ECHO_CSUM);
        assert_eq!((p.echo_ident(), p.echo_seq()), (0x1234, 1));
        assert_eq!(p.rest_of_header(), [0x12, 0x34, 0x00, 0x01]);
        assert_eq!(p.data().len(), 56);
        assert!(p.embedded().is_none());
        assert!(p.verify_checksum());
        Ok(())
    }

    #[test]
    fn golden_port_unreachable_quotes_the_query() -> Result<(), DropReason> {
        let buf = icmp_of(golden::IPV4_ICMP_PORT_UNREACH);
        let p = IcmpPacket::new_checked(&buf[..])?;
        assert_eq!((p.msg_type(), p.code()), (IcmpType::DstUnreachable, 3));
        assert!(p.verify_checksum());
        let quoted = p.embedded().unwrap_or_default();
        assert_eq!(quoted, golden::IPV4_UDP_DNS.get(14..).unwrap_or_default());
        let inner = Ipv4Packet::new_checked(quoted)?;
        assert_eq!(inner.dst_addr(), [8, 8, 8, 8]);
        Ok(())
    }

    #[test]
    fn setters_keep_checksum_valid() -> Result<(), DropReason> {
        let mut buf = icmp_of(golden::IPV4_ICMP_ECHO);
        let mut p = IcmpPacket::new_checked(&mut buf[..])?;
        p.set_echo_ident(0xfffe);
        p.set_echo_seq(0);
        p.set_msg_type(IcmpType::EchoReply);
        p.set_code(0);
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.echo_ident(), p.echo_seq()), (IcmpType::EchoReply, 0xfffe, 0));
        assert!(p.embedded_mut().is_none());
        p.set_msg_type(IcmpType::TimeExceeded);
        if let Some(q) = p.embedded_mut() {
            q.fill(0);
        }
        p.fill_checksum();
        assert!(p.verify_checksum());
        Ok(())
    }

    #[test]
    fn short_messages_are_truncated() {
        assert_eq!(IcmpPacket::new_checked(&[8u8, 0, 0, 0, 0, 0, 0][..]), Err(DropReason::Truncated));
    }
}
