//! The steering header: VXLAN (RFC 7348) with nflet's metadata block.
//!
//! Every data packet between the director and a worker is one UDP datagram to port 4789:
//!
//! ```text
//!  0      1      2      3      4      5      6      7
//! +------+------+------+------+------+------+------+------+
//! |flags |   reserved (0)     |     VNI = chain id   | rsv  |   VXLAN, flags = I | N
//! +------+------+------+------+------+------+------+------+
//! | dir  | bits |    port     |   worker    | prev owner  |   nflet metadata (64 bytes)
//! +------+------+------+------+------+------+------+------+
//! |                 logical clock (u64, BE)               |
//! +------+------+------+------+------+------+------+------+
//! |            flow key (40 bytes, the director's)        |
//! +------+------+------+------+------+------+------+------+
//! |      clock of the flowlet's first packet (u64, BE)    |
//! +------+------+------+------+------+------+------+------+
//! |            inner Ethernet frame ...
//! ```
//!
//! The VXLAN I flag (0x08) is set, so the VNI field is valid: it carries the chain the frame
//! runs through. nflet also sets the otherwise reserved N flag (0x04) to say its metadata
//! block follows the VXLAN header; a plain VXLAN endpoint does not set it, and frames without
//! it are refused ([`HeaderError::NotNflet`]). The metadata carries what SNF §3 (and Serpens
//! §IV-B) put in the packet: the packet's logical clock, the previous owner of the flow's
//! state, and the flow's identity as the director tracks it (so a worker finds the flow's
//! state even when an NF rewrote the tuple, as the NAT does). `port` is the director's
//! ingress port on the way to a worker and the egress port on the way back.

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::{ChainId, PortId};

use crate::units::{LogicalClock, WorkerId};

/// The IANA VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// VXLAN header and nflet metadata.
pub const HEADER_LEN: usize = 72;

const FLAG_I: u8 = 0x08;
const FLAG_N: u8 = 0x04;
const NO_OWNER: u16 = u16::MAX;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    pub const DIR: usize = 8;
    pub const BITS: usize = 9;
    pub const PORT: Range<usize> = 10..12;
    pub const WORKER: Range<usize> = 12..14;
    pub const PREV: Range<usize> = 14..16;
    pub const CLOCK: Range<usize> = 16..24;
    pub const KEY: Range<usize> = 24..64;
    pub const FLOWLET: Range<usize> = 64..72;
}

const BIT_START: u8 = 0x01;
const BIT_MOVED: u8 = 0x02;
const BIT_UNTRACKED: u8 = 0x04;

/// Which way a data packet travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Director to worker: run the chain.
    ToWorker,
    /// Worker to director: transmit on `port`.
    ToDirector,
}

/// The metadata of one data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SteerHeader {
    pub direction: Direction,
    pub chain: ChainId,
    /// Director ingress port (to a worker) or egress port (to the director).
    pub port: PortId,
    /// The worker the packet goes to or comes from.
    pub worker: WorkerId,
    /// The worker holding the flow's state before this flowlet, when it moved.
    pub prev_owner: Option<WorkerId>,
    pub clock: LogicalClock,
    pub flow: FlowKey,
    /// The clock of the first packet of the packet's flowlet: every packet of a flowlet that
    /// moved says where from (`moved`, `prev_owner`), so the worker pulls the state once per
    /// flowlet whichever of its packets arrives first (the fabric may reorder them).
    pub flowlet: LogicalClock,
    /// The packet starts a flowlet.
    pub flowlet_start: bool,
    /// The flow's state is elsewhere (at `prev_owner`) unless a fresh replica is here.
    pub moved: bool,
    /// The director does not track the flow (its table was full): no state moves.
    pub untracked: bool,
}

/// Why bytes are not a steering header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    Short,
    /// VXLAN without nflet's metadata (the N flag) or without a valid VNI.
    NotNflet,
    BadDirection(u8),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("datagram shorter than the steering header"),
            HeaderError::NotNflet => f.write_str("VXLAN without nflet metadata"),
            HeaderError::BadDirection(d) => write!(f, "unknown direction {d}"),
        }
    }
}

impl std::error::Error for HeaderError {}

impl SteerHeader {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`; false if it is shorter.
    pub fn write(&self, out: &mut [u8]) -> bool {
        let Some(h) = out.get_mut(..HEADER_LEN) else { return false };
        h.fill(0);
        h[field::FLAGS] = FLAG_I | FLAG_N;
        let vni = u32::from(self.chain.0).to_be_bytes();
        h[field::VNI].copy_from_slice(&vni[1..]);
        h[field::DIR] = match self.direction {
            Direction::ToWorker => 1,
            Direction::ToDirector => 2,
        };
        h[field::BITS] = (if self.flowlet_start { BIT_START } else { 0 })
            | (if self.moved { BIT_MOVED } else { 0 })
            | (if self.untracked { BIT_UNTRACKED } else { 0 });
        h[field::PORT].copy_from_slice(&self.port.0.to_be_bytes());
        h[field::WORKER].copy_from_slice(&self.worker.0.to_be_bytes());
        h[field::PREV].copy_from_slice(&self.prev_owner.map_or(NO_OWNER, |w| w.0).to_be_bytes());
        h[field::CLOCK].copy_from_slice(&self.clock.0.to_be_bytes());
        h[field::KEY].copy_from_slice(bytemuck::bytes_of(&self.flow));
        h[field::FLOWLET].copy_from_slice(&self.flowlet.0.to_be_bytes());
        true
    }

    /// Parses the header at the start of `datagram`; the inner frame follows at [`HEADER_LEN`].
    pub fn parse(datagram: &[u8]) -> Result<SteerHeader, HeaderError> {
        let h = datagram.get(..HEADER_LEN).ok_or(HeaderError::Short)?;
        if h[field::FLAGS] & (FLAG_I | FLAG_N) != FLAG_I | FLAG_N {
            return Err(HeaderError::NotNflet);
        }
        let direction = match h[field::DIR] {
            1 => Direction::ToWorker,
            2 => Direction::ToDirector,
            d => return Err(HeaderError::BadDirection(d)),
        };
        let vni = u32::from_be_bytes([0, h[4], h[5], h[6]]);
        let chain = ChainId(u16::try_from(vni).map_err(|_| HeaderError::NotNflet)?);
        let u16_at = |r: std::ops::Range<usize>| {
            let b = &h[r];
            u16::from_be_bytes([b[0], b[1]])
        };
        let mut clock = [0u8; 8];
        clock.copy_from_slice(&h[field::CLOCK]);
        let mut flowlet = [0u8; 8];
        flowlet.copy_from_slice(&h[field::FLOWLET]);
        let flow: FlowKey = bytemuck::pod_read_unaligned(&h[field::KEY]);
        let prev = u16_at(field::PREV);
        let bits = h[field::BITS];
        Ok(SteerHeader {
            direction,
            chain,
            port: PortId(u16_at(field::PORT)),
            worker: WorkerId(u16_at(field::WORKER)),
            prev_owner: (prev != NO_OWNER).then_some(WorkerId(prev)),
            clock: LogicalClock(u64::from_be_bytes(clock)),
            flow,
            flowlet: LogicalClock(u64::from_be_bytes(flowlet)),
            flowlet_start: bits & BIT_START != 0,
            moved: bits & BIT_MOVED != 0,
            untracked: bits & BIT_UNTRACKED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::flow::FAMILY_V4;

    fn sample() -> SteerHeader {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, 2]);
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&[192, 0, 2, 9]);
        SteerHeader {
            direction: Direction::ToWorker,
            chain: ChainId(3),
            port: PortId(1),
            worker: WorkerId(2),
            prev_owner: Some(WorkerId(0)),
            clock: LogicalClock(0x0102_0304_0506_0708),
            flow: FlowKey::new(FAMILY_V4, 6, a, 40000, b, 80).0,
            flowlet: LogicalClock(0x0102_0304_0506_0700),
            flowlet_start: true,
            moved: true,
            untracked: false,
        }
    }

    #[test]
    fn golden_bytes() {
        let mut buf = [0u8; HEADER_LEN];
        assert!(sample().write(&mut buf));
        assert_eq!(&buf[..8], &[0x0c, 0, 0, 0, 0, 0, 3, 0]);
        assert_eq!(&buf[8..24], &[1, 0x03, 0, 1, 0, 2, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&buf[24..28], &[10, 0, 0, 2]);
        assert_eq!(&buf[64..72], &[1, 2, 3, 4, 5, 6, 7, 0]);
    }

    #[test]
    fn round_trip_and_no_owner() {
        let mut buf = [0u8; HEADER_LEN + 10];
        for prev in [Some(WorkerId(7)), None] {
            let h = SteerHeader { prev_owner: prev, direction: Direction::ToDirector, ..sample() };
            assert!(h.write(&mut buf));
            assert_eq!(SteerHeader::parse(&buf), Ok(h));
        }
    }

    #[test]
    fn refuses_short_plain_vxlan_and_bad_direction() {
        let mut buf = [0u8; HEADER_LEN];
        assert!(sample().write(&mut buf));
        for n in 0..HEADER_LEN {
            assert_eq!(SteerHeader::parse(&buf[..n]), Err(HeaderError::Short));
        }
        let mut plain = buf;
        plain[0] = FLAG_I;
        assert_eq!(SteerHeader::parse(&plain), Err(HeaderError::NotNflet));
        let mut dir = buf;
        dir[8] = 9;
        assert_eq!(SteerHeader::parse(&dir), Err(HeaderError::BadDirection(9)));
        assert!(!sample().write(&mut [0u8; HEADER_LEN - 1]));
    }
}
