//! Per-flow IDS state: the automaton state of each direction and what `flow:` needs.
//!
//! `established`: for TCP, a SYN, then a SYN-ACK from the other side, then an ACK (without SYN)
//! from the initiator — the packet completing the handshake is already established. A TCP flow
//! picked up mid-stream (first packet seen without SYN) never becomes established. For other
//! protocols, a flow is established once packets were seen in both directions (as Suricata
//! does for UDP).
//!
//! `to_server`: the packet travels from the flow's initiator — the sender of the first packet
//! seen, or the receiver if that packet was a SYN-ACK.

use bytemuck::{Pod, Zeroable};

use crate::flow::{Dir, FlowKey};
use crate::packet::{IpProtocol, TcpFlags};

const SYN_SEEN: u8 = 1;
const SYNACK_SEEN: u8 = 2;
const ESTABLISHED: u8 = 4;
const SEEN_LO: u8 = 8;
const SEEN_HI: u8 = 16;

/// Per-flow value: 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct IdsFlow {
    /// Automaton state (`StateID` as u32) of the lo→hi and hi→lo byte streams.
    pub ac: [u32; 2],
    /// Bits: SYN, SYN-ACK seen; established; directions seen.
    pub state: u8,
    /// Side of the initiator: 0 lo, 1 hi.
    pub initiator: u8,
    pub _pad: [u8; 6],
}

crate::table_entry! {
    /// An IDS flow table slot.
    pub struct IdsFlowEntry { key: FlowKey, value: IdsFlow }
}

pub fn side(dir: Dir) -> usize {
    match dir {
        Dir::LoToHi => 0,
        Dir::HiToLo => 1,
    }
}

impl IdsFlow {
    /// A flow whose first seen packet travels in `dir`; both streams at automaton state `start`.
    pub fn new(dir: Dir, proto: IpProtocol, flags: TcpFlags, start: u32) -> IdsFlow {
        let s = side(dir) as u8;
        let synack = proto == IpProtocol::Tcp && flags.syn() && flags.ack();
        let mut f =
            IdsFlow { ac: [start; 2], initiator: if synack { 1 - s } else { s }, ..IdsFlow::default() };
        if proto == IpProtocol::Tcp && flags.syn() {
            f.state |= if synack { SYN_SEEN | SYNACK_SEEN } else { SYN_SEEN };
        }
        f.state |= if s == 0 { SEEN_LO } else { SEEN_HI };
        f
    }

    /// Advances the tracking by a packet of an existing flow.
    pub fn track(&mut self, dir: Dir, proto: IpProtocol, flags: TcpFlags) {
        let s = side(dir) as u8;
        let from_initiator = s == self.initiator;
        self.state |= if s == 0 { SEEN_LO } else { SEEN_HI };
        if proto == IpProtocol::Tcp {
            let st = self.state;
            if st & SYN_SEEN != 0 && st & SYNACK_SEEN == 0 && !from_initiator && flags.syn() && flags.ack() {
                self.state |= SYNACK_SEEN;
            } else if st & SYNACK_SEEN != 0 && from_initiator && flags.ack() && !flags.syn() {
                self.state |= ESTABLISHED;
            }
        } else if self.state & (SEEN_LO | SEEN_HI) == SEEN_LO | SEEN_HI {
            self.state |= ESTABLISHED;
        }
    }

    pub fn established(&self) -> bool {
        self.state & ESTABLISHED != 0
    }

    pub fn to_server(&self, dir: Dir) -> bool {
        side(dir) as u8 == self.initiator
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
    const SYNACK: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);

    #[test]
    fn entry_size() {
        assert_eq!(std::mem::size_of::<IdsFlowEntry>(), 72);
    }

    #[test]
    fn established_table() {
        let (c, s) = (Dir::LoToHi, Dir::HiToLo);
        let tcp = IpProtocol::Tcp;
        let udp = IpProtocol::Udp;
        // (protocol, packets after the first, established after each)
        type Case<'a> = (&'a str, IpProtocol, (Dir, TcpFlags), &'a [(Dir, TcpFlags, bool)]);
        let cases: &[Case<'_>] = &[
            ("handshake", tcp, (c, SYN), &[(s, SYNACK, false), (c, ACK, true), (s, ACK, true)]),
            ("ack from server does not complete", tcp, (c, SYN), &[(s, SYNACK, false), (s, ACK, false)]),
            ("mid-stream pickup", tcp, (c, ACK), &[(s, ACK, false), (c, ACK, false)]),
            ("synack first", tcp, (s, SYNACK), &[(c, ACK, true)]),
            ("udp both ways", udp, (c, TcpFlags(0)), &[(c, TcpFlags(0), false), (s, TcpFlags(0), true)]),
        ];
        for (name, proto, (d0, f0), steps) in cases {
            let mut f = IdsFlow::new(*d0, *proto, *f0, 7);
            assert!(!f.established(), "{name}: first packet");
            for (i, (d, fl, want)) in steps.iter().enumerate() {
                f.track(*d, *proto, *fl);
                assert_eq!(f.established(), *want, "{name}: step {i}");
            }
        }
        let f = IdsFlow::new(s, tcp, SYNACK, 7);
        assert!(f.to_server(c) && !f.to_server(s));
        assert_eq!(f.ac, [7, 7]);
    }
}
