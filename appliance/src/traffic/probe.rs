//! The probe: 32 bytes at the start of a generated frame's TCP/UDP payload that let the
//! analyzer match what it receives to what was sent.
//!
//! ```text
//!  0      4   5   6       8              12             16                      24                      32
//!  | magic | v | 0 | port  |    session    |    stream    |       sequence        |   TX time (ns)        |
//! ```
//!
//! All fields are big-endian. `session` identifies the process that sent the probe: the TX time
//! is read from that process's monotonic clock, so a latency is only meaningful when the
//! analyzer runs in the same session (see [`super`]). `port` is the generator port, `stream`
//! the flow within it, and `sequence` counts the stream's frames from 0.
//!
//! What this module promises: [`find`] never panics on any input (all reads are checked), and
//! [`stamp`] leaves a frame it cannot stamp unchanged and says why. The probe is covered by the
//! L4 checksum, which [`stamp`] recomputes, so NATs and firewalls in between see valid frames.

use nflet_nfs::packet::checksum;
use nflet_nfs::packet::IpProtocol;

/// The probe's length in bytes.
pub const PROBE_LEN: usize = 32;
/// `nFLp`: marks a probe.
pub const MAGIC: [u8; 4] = *b"nFLp";
/// The layout version this module writes and reads.
pub const VERSION: u8 = 1;
/// How far into a frame [`find`] searches for a probe when the headers are not ones it can
/// walk (tunnels, unknown EtherTypes).
const SCAN_LIMIT: usize = 256;

/// Field offsets within the probe.
mod field {
    use std::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const PORT: Range<usize> = 6..8;
    pub const SESSION: Range<usize> = 8..12;
    pub const STREAM: Range<usize> = 12..16;
    pub const SEQ: Range<usize> = 16..24;
    pub const TX_NS: Range<usize> = 24..32;
}

/// What a probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// The sending process's session id.
    pub session: u32,
    /// The generator port (its index in the sender's configuration).
    pub port: u16,
    /// The stream (flow) within that generator.
    pub stream: u32,
    /// The stream's frame number, from 0.
    pub seq: u64,
    /// When the frame was generated, in nanoseconds on the sender's session clock.
    pub tx_ns: u64,
}

impl Probe {
    /// Writes the probe into the first [`PROBE_LEN`] bytes of `out`; false if `out` is shorter.
    pub fn write(&self, out: &mut [u8]) -> bool {
        let Some(p) = out.get_mut(..PROBE_LEN) else { return false };
        p.fill(0);
        p[field::MAGIC].copy_from_slice(&MAGIC);
        p[field::VERSION] = VERSION;
        p[field::PORT].copy_from_slice(&self.port.to_be_bytes());
        p[field::SESSION].copy_from_slice(&self.session.to_be_bytes());
        p[field::STREAM].copy_from_slice(&self.stream.to_be_bytes());
        p[field::SEQ].copy_from_slice(&self.seq.to_be_bytes());
        p[field::TX_NS].copy_from_slice(&self.tx_ns.to_be_bytes());
        true
    }

    /// Reads a probe from the start of `bytes`, if one is there.
    pub fn read(bytes: &[u8]) -> Option<Probe> {
        let p: &[u8; PROBE_LEN] = bytes.get(..PROBE_LEN)?.try_into().ok()?;
        if p[field::MAGIC] != MAGIC || p[field::VERSION] != VERSION {
            return None;
        }
        let u16_at =
            |r: std::ops::Range<usize>| p.get(r).and_then(|s| s.try_into().ok()).map(u16::from_be_bytes);
        let u32_at =
            |r: std::ops::Range<usize>| p.get(r).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes);
        let u64_at =
            |r: std::ops::Range<usize>| p.get(r).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        Some(Probe {
            port: u16_at(field::PORT)?,
            session: u32_at(field::SESSION)?,
            stream: u32_at(field::STREAM)?,
            seq: u64_at(field::SEQ)?,
            tx_ns: u64_at(field::TX_NS)?,
        })
    }
}

/// Where a frame's TCP/UDP segment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    /// Offset of the TCP/UDP header.
    pub offset: usize,
    /// Length of the segment (header and payload) according to the IP header.
    pub len: usize,
    /// Offset of the payload.
    pub payload: usize,
    pub proto: IpProtocol,
    /// Pseudo-header sum for the checksum.
    pseudo: u16,
}

const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

/// Finds the TCP/UDP segment of an Ethernet frame: up to two VLAN tags, IPv4 (not a fragment)
/// or IPv6 without extension headers. `None` for anything else or anything truncated.
pub fn locate_l4(frame: &[u8]) -> Option<L4> {
    let mut l3 = 12;
    let mut ethertype = be16(frame, l3)?;
    for _ in 0..2 {
        if ethertype == ETH_VLAN || ethertype == ETH_QINQ {
            l3 += 4;
            ethertype = be16(frame, l3)?;
        }
    }
    l3 += 2;
    let (offset, len, proto, pseudo) = match ethertype {
        ETH_IPV4 => {
            let ver_ihl = *frame.get(l3)?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            let total = usize::from(be16(frame, l3 + 2)?);
            let frag = be16(frame, l3 + 6)?;
            if ver_ihl >> 4 != 4 || ihl < 20 || total < ihl || frag & 0x3fff != 0 {
                return None;
            }
            let proto = IpProtocol::from(*frame.get(l3 + 9)?);
            let src: [u8; 4] = frame.get(l3 + 12..l3 + 16)?.try_into().ok()?;
            let dst: [u8; 4] = frame.get(l3 + 16..l3 + 20)?.try_into().ok()?;
            let len = total - ihl;
            (l3 + ihl, len, proto, checksum::pseudo_v4(src, dst, proto, u16::try_from(len).ok()?))
        }
        ETH_IPV6 => {
            if frame.get(l3)? >> 4 != 6 {
                return None;
            }
            let len = usize::from(be16(frame, l3 + 4)?);
            let proto = IpProtocol::from(*frame.get(l3 + 6)?);
            let src: [u8; 16] = frame.get(l3 + 8..l3 + 24)?.try_into().ok()?;
            let dst: [u8; 16] = frame.get(l3 + 24..l3 + 40)?.try_into().ok()?;
            (l3 + 40, len, proto, checksum::pseudo_v6(&src, &dst, proto, u32::try_from(len).ok()?))
        }
        _ => return None,
    };
    let header = match proto {
        IpProtocol::Udp => 8,
        IpProtocol::Tcp => usize::from(*frame.get(offset + 12)? >> 4) * 4,
        _ => return None,
    };
    if header < 8 || len < header || offset.checked_add(len)? > frame.len() {
        return None;
    }
    Some(L4 { offset, len, payload: offset + header, proto, pseudo })
}

/// Finds the probe of a received frame: at the start of the TCP/UDP payload when the headers
/// can be walked (whatever a NAT did to addresses and ports, with or without VLAN tags), else
/// by searching the first bytes of the frame for the magic (tunnels).
pub fn find(frame: &[u8]) -> Option<Probe> {
    if let Some(l4) = locate_l4(frame) {
        if let Some(p) = frame.get(l4.payload..).and_then(Probe::read) {
            return Some(p);
        }
    }
    let window = frame.get(..frame.len().min(SCAN_LIMIT + PROBE_LEN))?;
    window
        .windows(PROBE_LEN)
        .position(|w| w.starts_with(&MAGIC))
        .and_then(|at| frame.get(at..))
        .and_then(Probe::read)
}

/// Why [`stamp`] left a frame as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampError {
    /// Not Ethernet + IPv4/IPv6 + TCP/UDP, or truncated.
    NotTcpUdp,
    /// The payload is shorter than [`PROBE_LEN`].
    PayloadTooShort,
}

/// Writes `probe` at the start of the TCP/UDP payload of `frame` and recomputes the L4
/// checksum (for replayed captures; the generator writes its frames whole).
pub fn stamp(frame: &mut [u8], probe: &Probe) -> Result<(), StampError> {
    let l4 = locate_l4(frame).ok_or(StampError::NotTcpUdp)?;
    let end = l4.offset + l4.len;
    if end.saturating_sub(l4.payload) < PROBE_LEN {
        return Err(StampError::PayloadTooShort);
    }
    let payload = frame.get_mut(l4.payload..end).ok_or(StampError::NotTcpUdp)?;
    if !probe.write(payload) {
        return Err(StampError::PayloadTooShort);
    }
    let field = if l4.proto == IpProtocol::Udp { 6 } else { 16 };
    let seg = frame.get_mut(l4.offset..end).ok_or(StampError::NotTcpUdp)?;
    // A UDP checksum of zero means "none" over IPv4: keep it that way.
    let had_none = l4.proto == IpProtocol::Udp && seg.get(field..field + 2) == Some(&[0, 0][..]);
    if let Some(c) = seg.get_mut(field..field + 2) {
        c.fill(0);
    }
    let sum = checksum::add(l4.pseudo, checksum::sum(seg));
    let value = if had_none { 0 } else { checksum::nonzero(!sum) };
    if let Some(c) = seg.get_mut(field..field + 2) {
        c.copy_from_slice(&value.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
