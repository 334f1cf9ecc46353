//! In-place header rewrites that keep every checksum right and [`Meta`] consistent.
//!
//! Each rewrite patches the checksums it affects with RFC 1624 incremental updates instead of
//! summing the packet again: an IPv4 address change fixes the IP header checksum and the
//! TCP/UDP (or ICMPv6, for IPv6) checksum, whose pseudo-header covers the addresses. A UDP
//! checksum of zero means "none" and stays zero (RFC 768). Non-first fragments have no L4
//! header, so rewrites never touch their payload.
//!
//! `meta` must come from [`parse`](super::parse) of the same frame. If it does not fit the
//! frame, the rewrite returns `Err(DropReason::Truncated)` instead of panicking, possibly after
//! writing part of the change; the caller drops the frame. Every rewrite updates the cached
//! fields of `meta` it changes and recomputes the flow key and hash ([`Meta::refresh_key`]).

use super::checksum;
use super::icmp::IcmpPacket;
use super::icmpv6::Icmpv6Packet;
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::meta::{Fragment, IpProtocol, L3Kind, Meta};
use super::tcp::TcpPacket;
use super::udp::{self, UdpPacket};
use crate::drop::DropReason;
use crate::flow::v4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Sets the IPv4 source address. `Err(BadIpVersion)` if `meta` is not IPv4.
pub fn set_ipv4_src(frame: &mut [u8], meta: &mut Meta, addr: [u8; 4]) -> Result<(), DropReason> {
    set_v4_addr(frame, meta, Side::Src, addr)
}

/// Sets the IPv4 destination address. `Err(BadIpVersion)` if `meta` is not IPv4.
pub fn set_ipv4_dst(frame: &mut [u8], meta: &mut Meta, addr: [u8; 4]) -> Result<(), DropReason> {
    set_v4_addr(frame, meta, Side::Dst, addr)
}

/// Sets the IPv6 source address. `Err(BadIpVersion)` if `meta` is not IPv6.
pub fn set_ipv6_src(frame: &mut [u8], meta: &mut Meta, addr: [u8; 16]) -> Result<(), DropReason> {
    set_v6_addr(frame, meta, Side::Src, addr)
}

/// Sets the IPv6 destination address. `Err(BadIpVersion)` if `meta` is not IPv6.
pub fn set_ipv6_dst(frame: &mut [u8], meta: &mut Meta, addr: [u8; 16]) -> Result<(), DropReason> {
    set_v6_addr(frame, meta, Side::Dst, addr)
}

/// Sets the TCP or UDP source port. Does nothing for other protocols and later fragments.
pub fn set_src_port(frame: &mut [u8], meta: &mut Meta, port: u16) -> Result<(), DropReason> {
    set_port(frame, meta, Side::Src, port)
}

/// Sets the TCP or UDP destination port. Does nothing for other protocols and later
/// fragments.
pub fn set_dst_port(frame: &mut [u8], meta: &mut Meta, port: u16) -> Result<(), DropReason> {
    set_port(frame, meta, Side::Dst, port)
}

/// Sets the identifier of an ICMP or ICMPv6 echo request/reply (both key ports follow it).
/// Does nothing for other messages and later fragments.
pub fn set_icmp_echo_id(frame: &mut [u8], meta: &mut Meta, id: u16) -> Result<(), DropReason> {
    if meta.fragment == Fragment::Later {
        return Ok(());
    }
    let seg = l4_mut(frame, meta)?;
    match (meta.proto, meta.l3_kind) {
        (IpProtocol::Icmp, L3Kind::Ipv4) => {
            let mut icmp = IcmpPacket::new_checked(seg)?;
            if !icmp.msg_type().is_echo() {
                return Ok(());
            }
            icmp.set_echo_ident(id);
        }
        (IpProtocol::Icmpv6, L3Kind::Ipv6) => {
            let mut icmp = Icmpv6Packet::new_checked(seg)?;
            if !icmp.msg_type().is_echo() {
                return Ok(());
            }
            icmp.set_echo_ident(id);
        }
        _ => return Ok(()),
    }
    meta.sport = id;
    meta.dport = id;
    meta.refresh_key();
    Ok(())
}

/// Decrements the IPv4 TTL or IPv6 hop limit. A packet that would leave with 0 is refused
/// with `Err(TtlExpired)` and left unchanged (RFC 1812 §5.3.1: a router "MUST NOT" forward
/// a packet whose TTL it reduced to zero). Does nothing for ARP.
pub fn decrement_ttl(frame: &mut [u8], meta: &mut Meta) -> Result<(), DropReason> {
    let ip = ip_mut(frame, meta)?;
    let ttl = match meta.l3_kind {
        L3Kind::Ipv4 => {
            let mut ip = Ipv4Packet::new_checked(ip)?;
            let ttl = next_ttl(ip.ttl())?;
            ip.set_ttl(ttl);
            ttl
        }
        L3Kind::Ipv6 => {
            let mut ip = Ipv6Packet::new_checked(ip)?;
            let ttl = next_ttl(ip.hop_limit())?;
            ip.set_hop_limit(ttl);
            ttl
        }
        L3Kind::Arp => return Ok(()),
    };
    meta.ttl = ttl;
    Ok(())
}

#[inline]
fn next_ttl(ttl: u8) -> Result<u8, DropReason> {
    ttl.checked_sub(1).filter(|t| *t != 0).ok_or(DropReason::TtlExpired)
}

/// Sets the DSCP (6 bits; higher bits are ignored), keeping ECN. Does nothing for ARP.
pub fn set_dscp(frame: &mut [u8], meta: &Meta, dscp: u8) -> Result<(), DropReason> {
    let ip = ip_mut(frame, meta)?;
    match meta.l3_kind {
        L3Kind::Ipv4 => Ipv4Packet::new_checked(ip)?.set_dscp(dscp & 0x3f),
        L3Kind::Ipv6 => Ipv6Packet::new_checked(ip)?.set_dscp(dscp & 0x3f),
        L3Kind::Arp => {}
    }
    Ok(())
}

fn set_v4_addr(frame: &mut [u8], meta: &mut Meta, side: Side, addr: [u8; 4]) -> Result<(), DropReason> {
    if meta.l3_kind != L3Kind::Ipv4 {
        return Err(DropReason::BadIpVersion);
    }
    let mut ip = Ipv4Packet::new_checked(ip_mut(frame, meta)?)?;
    let old = match side {
        Side::Src => ip.src_addr(),
        Side::Dst => ip.dst_addr(),
    };
    match side {
        Side::Src => ip.set_src_addr(addr),
        Side::Dst => ip.set_dst_addr(addr),
    }
    pseudo_header_changed(frame, meta, |hc| checksum::update32(hc, old, addr))?;
    *addr_slot(meta, side) = v4(addr);
    meta.refresh_key();
    Ok(())
}

fn set_v6_addr(frame: &mut [u8], meta: &mut Meta, side: Side, addr: [u8; 16]) -> Result<(), DropReason> {
    if meta.l3_kind != L3Kind::Ipv6 {
        return Err(DropReason::BadIpVersion);
    }
    let mut ip = Ipv6Packet::new_checked(ip_mut(frame, meta)?)?;
    let old = match side {
        Side::Src => ip.src_addr(),
        Side::Dst => ip.dst_addr(),
    };
    match side {
        Side::Src => ip.set_src_addr(addr),
        Side::Dst => ip.set_dst_addr(addr),
    }
    pseudo_header_changed(frame, meta, |hc| checksum::update128(hc, &old, &addr))?;
    *addr_slot(meta, side) = addr;
    meta.refresh_key();
    Ok(())
}

fn addr_slot(meta: &mut Meta, side: Side) -> &mut [u8; 16] {
    match side {
        Side::Src => &mut meta.src,
        Side::Dst => &mut meta.dst,
    }
}

/// Applies `update` to the checksums that cover the IP pseudo-header: TCP, UDP (unless it
/// is zero, "no checksum") and, over IPv6, ICMPv6. ICMPv4 has no pseudo-header.
fn pseudo_header_changed(
    frame: &mut [u8],
    meta: &Meta,
    update: impl Fn(u16) -> u16,
) -> Result<(), DropReason> {
    if meta.fragment == Fragment::Later {
        return Ok(());
    }
    let seg = l4_mut(frame, meta)?;
    match (meta.proto, meta.l3_kind) {
        (IpProtocol::Tcp, _) => {
            let mut tcp = TcpPacket::new_checked(seg)?;
            tcp.set_checksum(update(tcp.checksum()));
        }
        (IpProtocol::Udp, _) => {
            let mut udp = udp_view(seg)?;
            let hc = udp.checksum();
            udp.set_checksum(checksum::udp_adjusted(hc, update(hc)));
        }
        (IpProtocol::Icmpv6, L3Kind::Ipv6) => {
            let mut icmp = Icmpv6Packet::new_checked(seg)?;
            icmp.set_checksum(update(icmp.checksum()));
        }
        _ => {}
    }
    Ok(())
}

fn set_port(frame: &mut [u8], meta: &mut Meta, side: Side, port: u16) -> Result<(), DropReason> {
    if meta.fragment == Fragment::Later {
        return Ok(());
    }
    let seg = l4_mut(frame, meta)?;
    match meta.proto {
        IpProtocol::Tcp => {
            let mut tcp = TcpPacket::new_checked(seg)?;
            match side {
                Side::Src => tcp.set_src_port(port),
                Side::Dst => tcp.set_dst_port(port),
            }
        }
        IpProtocol::Udp => {
            let mut udp = udp_view(seg)?;
            match side {
                Side::Src => udp.set_src_port(port),
                Side::Dst => udp.set_dst_port(port),
            }
        }
        _ => return Ok(()),
    }
    match side {
        Side::Src => meta.sport = port,
        Side::Dst => meta.dport = port,
    }
    meta.refresh_key();
    Ok(())
}

/// A UDP view for rewriting. The length field is not checked against the buffer: in a first
/// fragment it covers data that is not here.
fn udp_view(seg: &mut [u8]) -> Result<UdpPacket<&mut [u8]>, DropReason> {
    if seg.len() < udp::HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    Ok(UdpPacket::new_unchecked(seg))
}

fn ip_mut<'a>(frame: &'a mut [u8], meta: &Meta) -> Result<&'a mut [u8], DropReason> {
    let range = usize::from(meta.l3)..usize::from(meta.l3_end);
    frame.get_mut(range).ok_or(DropReason::Truncated)
}

fn l4_mut<'a>(frame: &'a mut [u8], meta: &Meta) -> Result<&'a mut [u8], DropReason> {
    let range = usize::from(meta.l4)..usize::from(meta.l3_end);
    frame.get_mut(range).ok_or(DropReason::Truncated)
}

#[cfg(test)]
mod tests;
