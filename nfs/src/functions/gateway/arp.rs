//! ARP for IPv4 over Ethernet (RFC 826): a zero-copy view, and the two in-place rewrites the
//! gateway needs (a request turned into its reply, any frame turned into a request).
//!
//! [`ArpPacket::new_checked`] accepts only the Ethernet/IPv4 form (hardware type 1, protocol
//! 0x0800, lengths 6 and 4) and checks the buffer holds its 28 bytes, so no accessor can
//! panic afterwards.

use crate::drop::DropReason;
use crate::packet::ethernet::{EtherType, EthernetFrame, HEADER_LEN};

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const END: usize = 28;
}

/// Length of an Ethernet/IPv4 ARP body.
pub const LEN: usize = field::END;

/// ARP operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for Op {
    fn from(v: u16) -> Op {
        match v {
            1 => Op::Request,
            2 => Op::Reply,
            o => Op::Unknown(o),
        }
    }
}

impl From<Op> for u16 {
    fn from(o: Op) -> u16 {
        match o {
            Op::Request => 1,
            Op::Reply => 2,
            Op::Unknown(v) => v,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP body.
#[derive(Debug)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Checks the body is Ethernet/IPv4 ARP of a known operation and at least 28 bytes long.
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        let Some(head) = b.get(..LEN) else { return Err(DropReason::BadArp) };
        let word = |at: usize| u16::from_be_bytes([head[at], head[at + 1]]);
        if word(field::HTYPE) != 1
            || word(field::PTYPE) != 0x0800
            || head[field::HLEN] != 6
            || head[field::PLEN] != 4
            || matches!(Op::from(word(field::OPER)), Op::Unknown(_))
        {
            return Err(DropReason::BadArp);
        }
        Ok(ArpPacket { buffer })
    }

    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buffer.as_ref()[at..at + N]);
        out
    }

    pub fn op(&self) -> Op {
        Op::from(u16::from_be_bytes(self.bytes(field::OPER)))
    }
    pub fn sender_mac(&self) -> [u8; 6] {
        self.bytes(field::SHA)
    }
    pub fn sender_ip(&self) -> [u8; 4] {
        self.bytes(field::SPA)
    }
    pub fn target_mac(&self) -> [u8; 6] {
        self.bytes(field::THA)
    }
    pub fn target_ip(&self) -> [u8; 4] {
        self.bytes(field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    fn put(&mut self, at: usize, v: &[u8]) {
        self.buffer.as_mut()[at..at + v.len()].copy_from_slice(v);
    }

    /// Turns a request into the reply from `mac`/`ip` (RFC 826 "swap hardware and protocol
    /// fields, putting the local hardware and protocol addresses in the sender fields").
    pub fn make_reply(&mut self, mac: [u8; 6], ip: [u8; 4]) {
        let (sha, spa) = (self.sender_mac(), self.sender_ip());
        self.put(field::OPER, &u16::from(Op::Reply).to_be_bytes());
        self.put(field::THA, &sha);
        self.put(field::TPA, &spa);
        self.put(field::SHA, &mac);
        self.put(field::SPA, &ip);
    }
}

/// Rewrites `frame` in place into a broadcast ARP request from `mac`/`ip` for `target`:
/// untagged Ethernet header, 28-byte body, the rest of the frame zeroed (it becomes padding,
/// so no bytes of the packet it replaces leave). Fails, leaving the frame unchanged, if the
/// frame is shorter than 42 bytes.
pub fn write_request(frame: &mut [u8], mac: [u8; 6], ip: [u8; 4], target: [u8; 4]) -> Result<(), DropReason> {
    let end = HEADER_LEN + LEN;
    if frame.len() < end {
        return Err(DropReason::Truncated);
    }
    let (head, rest) = frame.split_at_mut(end);
    rest.fill(0);
    let mut eth = EthernetFrame::new_checked(&mut head[..])?;
    eth.set_dst([0xff; 6]);
    eth.set_src(mac);
    eth.set_ethertype(EtherType::Arp);
    let body = &mut head[HEADER_LEN..];
    body[..field::SHA].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    body[field::SHA..field::SPA].copy_from_slice(&mac);
    body[field::SPA..field::THA].copy_from_slice(&ip);
    body[field::THA..field::TPA].fill(0);
    body[field::TPA..field::END].copy_from_slice(&target);
    Ok(())
}
