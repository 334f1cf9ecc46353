//! TCP segments (RFC 9293).
//!
//! [`TcpPacket::new_checked`] validates the fixed header and the data offset against the
//! buffer once; no accessor or setter can panic afterwards. Field setters keep the checksum
//! right with an RFC 1624 incremental update; [`TcpPacket::set_checksum`] is the only raw write.
//! Checksums covering the pseudo-header take its sum from [`checksum::pseudo_v4`] or
//! [`checksum::pseudo_v6`].

use super::checksum;
use super::meta::TcpFlags;
use super::{get_u16, get_u32, set_u16};
use crate::drop::DropReason;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_NS: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const OPTIONS: usize = 20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::OPTIONS;

/// A view of a TCP segment (header, options and payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a segment of at least 20 bytes (else `Truncated`) whose data offset is at least
    /// 5 words and within the buffer (else `BadTcpHeader`).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let hlen = usize::from(b[field::OFF_NS] >> 4) * 4;
        if hlen < HEADER_LEN || hlen > b.len() {
            return Err(DropReason::BadTcpHeader);
        }
        Ok(TcpPacket { buffer })
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

    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ)
    }

    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::OFF_NS] >> 4) * 4
    }

    /// The flags byte (CWR, ECE, URG, ACK, PSH, RST, SYN, FIN).
    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    #[inline]
    pub fn window(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn urgent(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options (empty when the data offset is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        let range = field::OPTIONS..self.header_len();
        self.buffer.as_ref().get(range).unwrap_or_default()
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or_default()
    }

    /// True when the segment plus the pseudo-header sum `pseudo` sums to all ones. The
    /// buffer must be exactly the segment (no link padding).
    pub fn verify_checksum(&self, pseudo: u16) -> bool {
        checksum::add(pseudo, checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Writes the 16-bit word at the even offset `at` and updates the checksum.
    #[inline]
    fn set_word(&mut self, at: usize, new: u16) {
        let b = self.buffer.as_mut();
        let old = get_u16(b, at);
        let hc = get_u16(b, field::CHECKSUM);
        set_u16(b, at, new);
        set_u16(b, field::CHECKSUM, checksum::update16(hc, old, new));
    }

    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.set_word(field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.set_word(field::DST_PORT, port);
    }

    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        self.set_word(field::SEQ, (seq >> 16) as u16);
        self.set_word(field::SEQ + 2, seq as u16);
    }

    #[inline]
    pub fn set_ack_number(&mut self, ack: u32) {
        self.set_word(field::ACK, (ack >> 16) as u16);
        self.set_word(field::ACK + 2, ack as u16);
    }

    #[inline]
    pub fn set_flags(&mut self, flags: TcpFlags) {
        let off_ns = self.buffer.as_ref()[field::OFF_NS];
        self.set_word(field::OFF_NS, u16::from_be_bytes([off_ns, flags.0]));
    }

    #[inline]
    pub fn set_window(&mut self, window: u16) {
        self.set_word(field::WINDOW, window);
    }

    #[inline]
    pub fn set_urgent(&mut self, urgent: u16) {
        self.set_word(field::URGENT, urgent);
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

    const SRC: [u8; 4] = [192, 168, 1, 10];
    const DST: [u8; 4] = [93, 184, 216, 34];

    fn syn() -> Vec<u8> {
        golden::IPV4_TCP_SYN.get(34..).unwrap_or_default().to_vec()
    }

    #[test]
    fn golden_syn_fields() -> Result<(), DropReason> {
        let buf = syn();
        let t = TcpPacket::new_checked(&buf[..])?;
        assert_eq!((t.src_port(), t.dst_port()), (51234, 443));
        assert_eq!((t.seq_number(), t.ack_number()), (0x3b9a_ca07, 0));
        assert_eq!((t.header_len(), t.window(), t.urgent()), (40, 64240, 0));
        assert_eq!(t.flags(), TcpFlags(TcpFlags::SYN));
        assert_eq!(t.checksum(), golden::IPV4_TCP_SYN_TCP_CSUM);
        assert_eq!(t.options().get(..4), Some(&[0x02, 0x04, 0x05, 0xb4][..]));
        assert_eq!(t.options().len(), 20);
        assert!(t.payload().is_empty());
        assert!(t.verify_checksum(checksum::pseudo_v4(SRC, DST, IpProtocol::Tcp, 40)));
        Ok(())
    }

    #[test]
    fn malformed_headers() {
        let good = syn();
        let cases: &[golden::Mutation] = &[
            ("19 bytes", |b| b.truncate(19), DropReason::Truncated),
            ("offset 4", |b| b[12] = 0x40, DropReason::BadTcpHeader),
            ("offset 0", |b| b[12] = 0x00, DropReason::BadTcpHeader),
            ("options cut", |b| b.truncate(39), DropReason::BadTcpHeader),
            ("offset 15", |b| b[12] = 0xf0, DropReason::BadTcpHeader),
        ];
        for (name, mutate, want) in cases {
            let mut b = good.clone();
            mutate(&mut b);
            assert_eq!(TcpPacket::new_checked(&b[..]).err(), Some(*want), "{name}");
        }
    }

    #[test]
    fn setters_keep_checksum_valid() -> Result<(), DropReason> {
        let mut buf = syn();
        let pseudo = checksum::pseudo_v4(SRC, DST, IpProtocol::Tcp, 40);
        let mut t = TcpPacket::new_checked(&mut buf[..])?;
        t.set_src_port(1);
        t.set_dst_port(65535);
        t.set_seq_number(0xffff_0000);
        t.set_ack_number(0x0102_0304);
        t.set_flags(TcpFlags(TcpFlags::SYN | TcpFlags::ACK));
        t.set_window(0);
        t.set_urgent(7);
        assert!(t.verify_checksum(pseudo));
        assert_eq!((t.src_port(), t.dst_port(), t.window(), t.urgent()), (1, 65535, 0, 7));
        assert_eq!((t.seq_number(), t.ack_number()), (0xffff_0000, 0x0102_0304));
        assert!(t.flags().syn() && t.flags().ack() && t.header_len() == 40);
        let kept = t.checksum();
        t.fill_checksum(pseudo);
        assert_eq!(kept, t.checksum());
        Ok(())
    }
}
