//! The ingress parser: one pass over a frame, producing [`Meta`].
//!
//! [`parse`] runs on every received packet, so it allocates nothing, copies nothing but the
//! addresses, and reads each header once through the checked views. Every malformed frame
//! maps to exactly one [`DropReason`]; no input can make it panic (see the property tests and
//! the `parse` fuzz target).
//!
//! What it accepts: Ethernet II with up to two VLAN tags (802.1ad or 802.1Q TPIDs, in either
//! position), then ARP, IPv4 or IPv6; above IP, TCP, UDP, ICMP and ICMPv6 headers are read
//! and anything else passes with zero ports.

use super::ethernet::{self, EtherType, EthernetFrame, VlanTag};
use super::icmp::{self, IcmpPacket};
use super::icmpv6::{self, Icmpv6Packet};
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::meta::{Fragment, IpProtocol, L3Kind, Meta, TcpFlags};
use super::tcp::TcpPacket;
use super::udp::{self, UdpPacket};
use crate::drop::DropReason;
use crate::flow::{v4, FlowKey, FAMILY_V4, FAMILY_V6};
use crate::ids::PortId;

/// What to do with IP fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FragmentPolicy {
    /// Forward fragments; later fragments have zero ports in their key.
    #[default]
    Allow,
    /// Drop fragments that do not carry the L4 header (flow state cannot be found for them).
    DropNonFirst,
    /// Drop every fragment.
    DropAll,
}

/// Parser settings, fixed per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsePolicy {
    pub fragments: FragmentPolicy,
    /// Verify the IPv4 header checksum (off when the NIC already did).
    pub verify_ipv4_checksum: bool,
}

impl Default for ParsePolicy {
    fn default() -> Self {
        ParsePolicy { fragments: FragmentPolicy::Allow, verify_ipv4_checksum: true }
    }
}

/// Parses `frame` (Ethernet, no FCS) received on `ingress`.
///
/// Checks, each with its drop reason: frame over 65535 bytes (`Oversize`, offsets are 16-bit);
/// a third VLAN tag (`TooManyVlanTags`); other ethertypes (`UnknownEthertype`); IPv4 version,
/// IHL, total length, header checksum if `policy` says so, TTL 0 (`BadIpVersion`, `BadIhl`,
/// `BadTotalLength`, `BadIpChecksum`, `TtlExpired`); IPv6 version, payload length, hop limit
/// 0 and the extension chain (`BadExtensionHeaders`); fragments refused by `policy`
/// (`Fragment`); TCP data offset (`BadTcpHeader`); UDP length (`BadUdpLength`); and any
/// header cut short (`Truncated`).
#[inline]
pub fn parse(frame: &[u8], ingress: PortId, policy: &ParsePolicy) -> Result<Meta, DropReason> {
    if frame.len() > usize::from(u16::MAX) {
        return Err(DropReason::Oversize);
    }
    let eth = EthernetFrame::new_checked(frame)?;
    let mut link = Link { ingress, vlans: [0; 2], vlan_count: 0 };
    let mut ethertype = eth.ethertype();
    let mut l3 = ethernet::HEADER_LEN;
    if ethertype.is_vlan() {
        let (vid, next) = vlan_tag(frame, l3)?;
        link.vlans[0] = vid;
        link.vlan_count = 1;
        ethertype = next;
        l3 += ethernet::VLAN_TAG_LEN;
        if ethertype.is_vlan() {
            let (vid, next) = vlan_tag(frame, l3)?;
            link.vlans[1] = vid;
            link.vlan_count = 2;
            ethertype = next;
            l3 += ethernet::VLAN_TAG_LEN;
            if ethertype.is_vlan() {
                return Err(DropReason::TooManyVlanTags);
            }
        }
    }
    let net = match ethertype {
        EtherType::Ipv4 => ipv4(frame, l3, policy)?,
        EtherType::Ipv6 => ipv6(frame, l3)?,
        EtherType::Arp => return arp(frame, l3, &link),
        _ => return Err(DropReason::UnknownEthertype),
    };
    transport(frame, &link, &net, policy)
}

/// What the link layer learned.
struct Link {
    ingress: PortId,
    vlans: [u16; 2],
    vlan_count: u8,
}

/// What the network layer hands to the transport layer. Offsets are from the frame start
/// and `l3 <= l4 <= end <= frame.len() <= u16::MAX` holds.
struct Net {
    kind: L3Kind,
    l3: usize,
    l4: usize,
    end: usize,
    proto: IpProtocol,
    fragment: Fragment,
    src: [u8; 16],
    dst: [u8; 16],
    ttl: u8,
}

#[inline]
fn vlan_tag(frame: &[u8], at: usize) -> Result<(u16, EtherType), DropReason> {
    let tag = VlanTag::new_checked(frame.get(at..).unwrap_or_default())?;
    Ok((tag.vid(), tag.ethertype()))
}

#[inline]
fn ipv4(frame: &[u8], l3: usize, policy: &ParsePolicy) -> Result<Net, DropReason> {
    let ip = Ipv4Packet::new_checked(frame.get(l3..).unwrap_or_default())?;
    if policy.verify_ipv4_checksum && !ip.verify_checksum() {
        return Err(DropReason::BadIpChecksum);
    }
    if ip.ttl() == 0 {
        return Err(DropReason::TtlExpired);
    }
    let proto = ip.protocol();
    let fragment = match (ip.frag_offset(), ip.more_frags()) {
        (0, false) => Fragment::None,
        (0, true) => Fragment::First,
        // RFC 1858 §4: "IF FO=1 and PROTOCOL=TCP then drop packet" (overlapping fragments
        // that rewrite the TCP flags of the first one).
        (8, _) if proto == IpProtocol::Tcp => return Err(DropReason::Fragment),
        _ => Fragment::Later,
    };
    Ok(Net {
        kind: L3Kind::Ipv4,
        l3,
        l4: l3 + ip.header_len(),
        end: l3 + usize::from(ip.total_len()),
        proto,
        fragment,
        src: v4(ip.src_addr()),
        dst: v4(ip.dst_addr()),
        ttl: ip.ttl(),
    })
}

#[inline]
fn ipv6(frame: &[u8], l3: usize) -> Result<Net, DropReason> {
    let ip = Ipv6Packet::new_checked(frame.get(l3..).unwrap_or_default())?;
    if ip.hop_limit() == 0 {
        return Err(DropReason::TtlExpired);
    }
    let chain = ip.walk_extensions()?;
    let fragment = match chain.fragment {
        None => Fragment::None,
        Some(f) if f.offset != 0 => Fragment::Later,
        Some(f) if f.more => Fragment::First,
        // An atomic fragment is a whole datagram (RFC 6946 §4).
        Some(_) => Fragment::None,
    };
    Ok(Net {
        kind: L3Kind::Ipv6,
        l3,
        l4: l3 + chain.l4,
        end: l3 + ip.total_len(),
        proto: chain.proto,
        fragment,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        ttl: ip.hop_limit(),
    })
}

/// Reads the transport header of `frame[net.l4..net.end]` and assembles the `Meta`.
#[inline]
fn transport(frame: &[u8], link: &Link, net: &Net, policy: &ParsePolicy) -> Result<Meta, DropReason> {
    match (net.fragment, policy.fragments) {
        (Fragment::None, _) | (_, FragmentPolicy::Allow) => {}
        (Fragment::First, FragmentPolicy::DropNonFirst) => {}
        _ => return Err(DropReason::Fragment),
    }
    let seg = frame.get(net.l4..net.end).ok_or(DropReason::Truncated)?;
    let (mut sport, mut dport, mut tcp_flags, mut header) = (0, 0, TcpFlags::default(), 0);
    match (net.proto, net.kind) {
        _ if net.fragment == Fragment::Later => {}
        (IpProtocol::Tcp, _) => {
            let tcp = TcpPacket::new_checked(seg)?;
            (sport, dport, tcp_flags) = (tcp.src_port(), tcp.dst_port(), tcp.flags());
            header = tcp.header_len();
        }
        (IpProtocol::Udp, _) => {
            if seg.len() < udp::HEADER_LEN {
                return Err(DropReason::Truncated);
            }
            let udp = UdpPacket::new_unchecked(seg);
            // RFC 768: length is "the length in octets of this user datagram including this
            // header and the data". nflet wants it to match the IP payload exactly: stacks
            // disagree on a mismatch (Linux trims, others drop), so it is an evasion vector.
            // A first fragment holds only part of the datagram.
            let len = usize::from(udp.len());
            let ok = match net.fragment {
                Fragment::None => len == seg.len(),
                _ => len >= seg.len(),
            };
            if !ok {
                return Err(DropReason::BadUdpLength);
            }
            (sport, dport) = (udp.src_port(), udp.dst_port());
            header = udp::HEADER_LEN;
        }
        (IpProtocol::Icmp, L3Kind::Ipv4) => {
            let icmp = IcmpPacket::new_checked(seg)?;
            if icmp.msg_type().is_echo() {
                // Request and reply share the identifier, so both directions share a key.
                (sport, dport) = (icmp.echo_ident(), icmp.echo_ident());
            }
            header = icmp::HEADER_LEN;
        }
        (IpProtocol::Icmpv6, L3Kind::Ipv6) => {
            let icmp = Icmpv6Packet::new_checked(seg)?;
            if icmp.msg_type().is_echo() {
                (sport, dport) = (icmp.echo_ident(), icmp.echo_ident());
            }
            header = icmpv6::HEADER_LEN;
        }
        _ => {}
    }
    let family = if net.kind == L3Kind::Ipv4 { FAMILY_V4 } else { FAMILY_V6 };
    let (key, dir) = FlowKey::new(family, net.proto.into(), net.src, sport, net.dst, dport);
    // All offsets are at most `frame.len()`, which `parse` bounded by u16::MAX.
    Ok(Meta {
        ingress: link.ingress,
        vlans: link.vlans,
        vlan_count: link.vlan_count,
        l3_kind: net.kind,
        l3: net.l3 as u16,
        l4: net.l4 as u16,
        payload: (net.l4 + header) as u16,
        l3_end: net.end as u16,
        proto: net.proto,
        src: net.src,
        dst: net.dst,
        sport,
        dport,
        tcp_flags,
        ttl: net.ttl,
        fragment: net.fragment,
        key,
        dir,
        hash: key.hash(),
    })
}

/// ARP (RFC 826): checks the announced address lengths fit, and gives the zero flow key.
#[inline]
fn arp(frame: &[u8], l3: usize, link: &Link) -> Result<Meta, DropReason> {
    // hrd(2) pro(2) hln(1) pln(1) op(2), then sha(hln) spa(pln) tha(hln) tpa(pln).
    let body = frame.get(l3..).unwrap_or_default();
    let (Some(&hln), Some(&pln)) = (body.get(4), body.get(5)) else {
        return Err(DropReason::Truncated);
    };
    let len = 8 + 2 * (usize::from(hln) + usize::from(pln));
    if body.len() < len {
        return Err(DropReason::Truncated);
    }
    let end = (l3 + len) as u16;
    let mut meta = Meta {
        ingress: link.ingress,
        vlans: link.vlans,
        vlan_count: link.vlan_count,
        l3_kind: L3Kind::Arp,
        l3: l3 as u16,
        l4: end,
        payload: end,
        l3_end: end,
        ..Meta::default()
    };
    meta.refresh_key();
    Ok(meta)
}

#[cfg(test)]
mod tests;
