//! Connection tracking for the firewall: per-flow state and TCP state-aware timeouts.
//!
//! A simplified version of the Linux conntrack TCP tracker (no window tracking): it follows
//! the handshake and teardown flags so each phase gets its own timeout — short while a
//! connection is opening or closing, long once established (RFC 5382 REQ-5 asks a middlebox
//! to keep established TCP state for at least 2 h 4 min).

use bytemuck::{Pod, Zeroable};
use serde::Deserialize;

use crate::flow::{Dir, FlowKey};
use crate::packet::TcpFlags;
use crate::time::Nanos;

/// Tracked TCP phases (stored as a byte in [`Conn::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// Not TCP.
    None = 0,
    SynSent = 1,
    SynReceived = 2,
    Established = 3,
    /// One side sent FIN.
    FinWait = 4,
    /// Both sides sent FIN.
    TimeWait = 5,
    /// RST seen.
    Closed = 6,
}

impl TcpState {
    pub fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::SynSent,
            2 => TcpState::SynReceived,
            3 => TcpState::Established,
            4 => TcpState::FinWait,
            5 => TcpState::TimeWait,
            6 => TcpState::Closed,
            _ => TcpState::None,
        }
    }
}

/// Per-connection state, plain old data so it can live in the arena and move between cores
/// and instances. Eight bytes: with the slot header and the flow key, a connection fills one
/// 64-byte cache line (per-flow packet counts are the monitor's job).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable, Default)]
pub struct Conn {
    pub state: u8,
    /// 0: the key's lo endpoint opened the connection; 1: the hi endpoint did.
    pub initiator: u8,
    /// Bit 0: FIN seen from lo; bit 1: FIN seen from hi.
    pub fins: u8,
    /// Index of the rule that allowed it, plus one (0 = default policy).
    pub rule: u8,
    pub _pad: [u8; 4],
}

crate::table_entry! {
    /// A conntrack table slot.
    pub struct ConnEntry { key: FlowKey, value: Conn }
}

/// Timeouts in seconds, Linux-conntrack-like defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Established TCP (RFC 5382 REQ-5: at least 7440 s).
    pub tcp_established: u64,
    /// TCP while opening or closing.
    pub tcp_transitory: u64,
    /// TCP after both FINs.
    pub tcp_time_wait: u64,
    /// TCP after RST.
    pub tcp_closed: u64,
    /// UDP (RFC 4787 REQ-5: at least 120 s).
    pub udp: u64,
    pub icmp: u64,
    pub other: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: 7440,
            tcp_transitory: 240,
            tcp_time_wait: 120,
            tcp_closed: 10,
            udp: 120,
            icmp: 60,
            other: 600,
        }
    }
}

impl Timeouts {
    pub fn tcp(&self, s: TcpState) -> Nanos {
        Nanos::from_secs(match s {
            TcpState::Established => self.tcp_established,
            TcpState::TimeWait => self.tcp_time_wait,
            TcpState::Closed => self.tcp_closed,
            TcpState::None | TcpState::SynSent | TcpState::SynReceived | TcpState::FinWait => {
                self.tcp_transitory
            }
        })
    }
}

fn side(dir: Dir) -> u8 {
    match dir {
        Dir::LoToHi => 0,
        Dir::HiToLo => 1,
    }
}

/// Whether a TCP packet may open a new connection: a SYN without ACK.
pub fn opens_tcp(flags: TcpFlags) -> bool {
    flags.syn() && !flags.ack() && !flags.rst()
}

/// A new TCP connection opened by a packet travelling in `dir`.
pub fn new_tcp(dir: Dir, rule: u8) -> Conn {
    Conn { state: TcpState::SynSent as u8, initiator: side(dir), rule, ..Conn::default() }
}

/// A new non-TCP connection.
pub fn new_other(dir: Dir, rule: u8) -> Conn {
    Conn { initiator: side(dir), rule, ..Conn::default() }
}

/// Outcome of a TCP packet on a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpStep {
    /// Accept; the connection is now in this state.
    Accept(TcpState),
    /// A SYN reopening a closed connection: the caller re-checks the rules.
    Reopen,
}

/// Advances a tracked connection by one TCP packet.
pub fn track_tcp(c: &mut Conn, dir: Dir, flags: TcpFlags) -> TcpStep {
    let from_initiator = side(dir) == c.initiator;
    let state = TcpState::from_u8(c.state);
    let next = if flags.rst() {
        TcpState::Closed
    } else {
        match state {
            TcpState::Closed | TcpState::TimeWait if opens_tcp(flags) => return TcpStep::Reopen,
            TcpState::SynSent if !from_initiator && flags.syn() && flags.ack() => TcpState::SynReceived,
            TcpState::SynReceived if from_initiator && flags.ack() && !flags.syn() => TcpState::Established,
            s => s,
        }
    };
    let next = if flags.fin() && !flags.rst() {
        c.fins |= 1 << side(dir);
        if c.fins == 0b11 {
            TcpState::TimeWait
        } else {
            TcpState::FinWait
        }
    } else {
        next
    };
    c.state = next as u8;
    TcpStep::Accept(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
    const SYNACK: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK);
    const ACK: TcpFlags = TcpFlags(TcpFlags::ACK);
    const FINACK: TcpFlags = TcpFlags(TcpFlags::FIN | TcpFlags::ACK);
    const RST: TcpFlags = TcpFlags(TcpFlags::RST);

    #[test]
    fn a_connection_fills_one_cache_line() {
        assert_eq!(std::mem::size_of::<ConnEntry>(), 64);
    }

    #[test]
    fn handshake_data_and_teardown() {
        let (i, r) = (Dir::LoToHi, Dir::HiToLo);
        let mut c = new_tcp(i, 1);
        let steps: &[(Dir, TcpFlags, TcpState)] = &[
            (r, SYNACK, TcpState::SynReceived),
            (i, ACK, TcpState::Established),
            (r, ACK, TcpState::Established),
            (i, FINACK, TcpState::FinWait),
            (r, ACK, TcpState::FinWait),
            (r, FINACK, TcpState::TimeWait),
            (i, ACK, TcpState::TimeWait),
        ];
        for (n, (d, f, want)) in steps.iter().enumerate() {
            assert_eq!(track_tcp(&mut c, *d, *f), TcpStep::Accept(*want), "step {n}");
        }
        assert_eq!(track_tcp(&mut c, i, SYN), TcpStep::Reopen);
    }

    #[test]
    fn responder_cannot_complete_its_own_handshake() {
        let mut c = new_tcp(Dir::HiToLo, 0);
        // A SYN-ACK from the initiator side does not advance the state.
        assert_eq!(track_tcp(&mut c, Dir::HiToLo, SYNACK), TcpStep::Accept(TcpState::SynSent));
        assert_eq!(track_tcp(&mut c, Dir::LoToHi, SYNACK), TcpStep::Accept(TcpState::SynReceived));
    }

    #[test]
    fn rst_closes_and_timeouts_follow_state() {
        let mut c = new_tcp(Dir::LoToHi, 0);
        assert_eq!(track_tcp(&mut c, Dir::HiToLo, RST), TcpStep::Accept(TcpState::Closed));
        let t = Timeouts::default();
        assert_eq!(t.tcp(TcpState::Closed), Nanos::from_secs(10));
        assert_eq!(t.tcp(TcpState::Established), Nanos::from_secs(7440));
        assert_eq!(t.tcp(TcpState::SynSent), Nanos::from_secs(240));
        assert!(opens_tcp(SYN) && !opens_tcp(SYNACK) && !opens_tcp(ACK));
    }
}
