//! ICMP errors related to a tracked connection (what Linux conntrack calls RELATED).
//!
//! A destination-unreachable, time-exceeded or parameter-problem message quotes the header of
//! the datagram that caused it (RFC 792; RFC 1812 §4.3.2.3). When that quoted datagram belongs
//! to a connection the firewall tracks, the error is part of that connection — path MTU
//! discovery and "port unreachable" depend on it passing — whatever the rules say about ICMP.

use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::packet::icmp::IcmpPacket;
use crate::packet::{IpProtocol, L3Kind, Meta};

/// The flow key of the datagram an IPv4 ICMP error quotes, if the frame is one and the quote
/// is long enough to name the flow (IP header plus the first 4 bytes of the transport header).
pub fn quoted_flow(frame: &[u8], meta: &Meta) -> Option<FlowKey> {
    if meta.l3_kind != L3Kind::Ipv4 || meta.proto != IpProtocol::Icmp {
        return None;
    }
    let icmp = IcmpPacket::new_checked(frame.get(usize::from(meta.l4)..usize::from(meta.l3_end))?).ok()?;
    let ip = icmp.embedded()?;
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 {
        return None;
    }
    let proto = *ip.get(9)?;
    let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
    let l4 = ip.get(ihl..ihl + 4)?;
    let port = |i: usize| l4.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (sport, dport) = match IpProtocol::from(proto) {
        IpProtocol::Tcp | IpProtocol::Udp => (port(0)?, port(2)?),
        // A quoted echo: the identifier keys it, as the parser does for echo itself.
        IpProtocol::Icmp => {
            let id = ip.get(ihl + 4..ihl + 6).map(|b| u16::from_be_bytes([b[0], b[1]]))?;
            (id, id)
        }
        _ => (0, 0),
    };
    Some(FlowKey::new(FAMILY_V4, proto, v4(src), sport, v4(dst), dport).0)
}
