//! IPv6 headers and the extension-header chain (RFC 8200).
//!
//! [`Ipv6Packet::new_checked`] validates the fixed header and the payload length against the
//! buffer once; no accessor or setter can panic afterwards. [`Ipv6Packet::walk_extensions`]
//! follows hop-by-hop, routing, fragment and destination-options headers, at most
//! [`MAX_EXT_HEADERS`] of them, to the upper-layer header. IPv6 has no header checksum, so
//! setters are plain writes.

use super::meta::IpProtocol;
use super::{get_array, get_u16, get_u32, set_u16, set_u32};
use crate::drop::DropReason;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
    pub const PAYLOAD: usize = 40;
    // Extension headers, relative to the extension header.
    pub const EXT_NEXT: usize = 0;
    pub const EXT_LEN: usize = 1;
    pub const FRAG_OFF_M: usize = 2;
    pub const FRAG_IDENT: usize = 4;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Extension headers walked before giving up with `BadExtensionHeaders`.
pub const MAX_EXT_HEADERS: usize = 8;
/// Every extension header is a multiple of 8 bytes, and the fragment header is exactly 8.
const EXT_UNIT: usize = 8;

/// The fragment header of a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Fragment {
    /// Offset of this fragment's data in the reassembled payload, in bytes.
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
    pub ident: u32,
}

/// Where the extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtChain {
    /// The upper-layer protocol; for a non-first fragment, the fragment header's next header.
    pub proto: IpProtocol,
    /// Offset of the upper-layer header (or of the fragment data) from the IPv6 header.
    pub l4: usize,
    /// The fragment header, if there is one.
    pub fragment: Option<Ipv6Fragment>,
    /// Number of extension headers walked.
    pub count: u8,
}

/// A view of an IPv6 packet (header and payload, possibly followed by link padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after checking: at least 40 bytes (`Truncated`), version 6
    /// (`BadIpVersion`), payload length within the buffer (`BadTotalLength`). Jumbograms
    /// (payload length 0 with a jumbo option, RFC 2675) are not supported: they parse as
    /// an empty payload.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        if b[field::VER_TC_FLOW] >> 4 != 6 {
            return Err(DropReason::BadIpVersion);
        }
        if HEADER_LEN + usize::from(get_u16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(DropReason::BadTotalLength);
        }
        Ok(Ipv6Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class: DSCP in the upper 6 bits, ECN in the lower 2.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 0x03
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length in bytes: extension headers and upper-layer data.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Header plus payload length in bytes.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// The next-header field of the fixed header.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        get_array(self.buffer.as_ref(), field::DST)
    }

    /// The payload up to the payload length (extension headers included, padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..self.total_len()).unwrap_or_default()
    }

    /// Walks the extension headers to the upper-layer header.
    ///
    /// Errors: an extension header whose fixed 8 bytes are not in the payload is `Truncated`;
    /// one whose length runs past the payload, a hop-by-hop header anywhere but first
    /// (RFC 8200 §4.3: it "MUST immediately follow the IPv6 header"), a second fragment
    /// header, or more than [`MAX_EXT_HEADERS`] headers are `BadExtensionHeaders`.
    ///
    /// A non-first fragment ends the walk at its fragment header: what follows is fragment
    /// data. An atomic fragment (offset 0, M clear; RFC 6946) is reported but walked through.
    pub fn walk_extensions(&self) -> Result<ExtChain, DropReason> {
        let payload = self.payload();
        let mut next = self.next_header();
        let mut off = 0usize;
        let mut fragment = None;
        let mut count = 0u8;
        loop {
            let is_frag = match next {
                IpProtocol::Ipv6Frag => true,
                IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => false,
                proto => {
                    let l4 = HEADER_LEN + off;
                    return Ok(ExtChain { proto, l4, fragment, count });
                }
            };
            if usize::from(count) == MAX_EXT_HEADERS
                || (next == IpProtocol::HopByHop && count != 0)
                || (is_frag && fragment.is_some())
            {
                return Err(DropReason::BadExtensionHeaders);
            }
            let Some(ext) = payload.get(off..off + EXT_UNIT) else {
                return Err(DropReason::Truncated);
            };
            count += 1;
            next = IpProtocol::from(ext[field::EXT_NEXT]);
            if is_frag {
                let off_m = get_u16(ext, field::FRAG_OFF_M);
                let frag = Ipv6Fragment {
                    offset: off_m & 0xfff8,
                    more: off_m & 1 != 0,
                    ident: get_u32(ext, field::FRAG_IDENT),
                };
                fragment = Some(frag);
                off += EXT_UNIT;
                if frag.offset != 0 {
                    let l4 = HEADER_LEN + off;
                    return Ok(ExtChain { proto: next, l4, fragment, count });
                }
            } else {
                // "Length of the ... header in 8-octet units, not including the first 8
                // octets" (RFC 8200 §4.3, §4.4, §4.6).
                let len = (usize::from(ext[field::EXT_LEN]) + 1) * EXT_UNIT;
                if off + len > payload.len() {
                    return Err(DropReason::BadExtensionHeaders);
                }
                off += len;
            }
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    #[inline]
    pub fn set_traffic_class(&mut self, tc: u8) {
        let b = self.buffer.as_mut();
        let word = get_u16(b, field::VER_TC_FLOW);
        set_u16(b, field::VER_TC_FLOW, (word & 0xf00f) | (u16::from(tc) << 4));
    }

    /// Sets the DSCP, keeping ECN.
    #[inline]
    pub fn set_dscp(&mut self, dscp: u8) {
        self.set_traffic_class((dscp << 2) | self.ecn());
    }

    /// Sets the ECN bits, keeping DSCP.
    #[inline]
    pub fn set_ecn(&mut self, ecn: u8) {
        self.set_traffic_class((self.traffic_class() & !3) | (ecn & 3));
    }

    /// Sets the flow label; bits above the low 20 are ignored.
    #[inline]
    pub fn set_flow_label(&mut self, label: u32) {
        let b = self.buffer.as_mut();
        let word = get_u32(b, field::VER_TC_FLOW);
        set_u32(b, field::VER_TC_FLOW, (word & 0xfff0_0000) | (label & 0x000f_ffff));
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(&addr);
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::DST..field::DST + 16].copy_from_slice(&addr);
    }
}

#[cfg(test)]
mod tests;
