use super::*;
use crate::flow::FlowKey;
use crate::ids::PortId;
use crate::packet::golden::{self, Rng};
use crate::packet::{parse, ParsePolicy};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

fn meta_of(frame: &[u8]) -> Result<Meta, DropReason> {
    parse(frame, PortId(1), &ParsePolicy::default())
}

/// IPv6 frames built by etherparse, to rewrite TCP and UDP over IPv6.
fn tcp6() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0xfe; 16], 64)
        .tcp(40000, 80, 1, 65535)
        .ack(7);
    let mut out = Vec::new();
    let _ = b.write(&mut out, b"GET / HTTP/1.1\r\n\r\n");
    out
}

fn udp6() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6([0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], [0x11; 16], 9)
        .udp(123, 123);
    let mut out = Vec::new();
    let _ = b.write(&mut out, &[0x23; 48]);
    out
}

/// Re-parses `frame`, checks it matches `meta`, and verifies every checksum of an unfragmented
/// packet twice: with etherparse (IPv4 header, TCP, UDP) and with a full recomputation.
fn verify(frame: &[u8], meta: &Meta) {
    let Ok(again) = meta_of(frame) else {
        panic!("rewritten frame no longer parses");
    };
    assert_eq!(&again, meta, "meta is stale after the rewrite");
    let (l3, l4, end) = (usize::from(meta.l3), usize::from(meta.l4), usize::from(meta.l3_end));
    let seg = &frame[l4..end];
    let len = seg.len();
    let pseudo = match meta.l3_kind {
        L3Kind::Arp => return,
        L3Kind::Ipv4 => {
            let ip = Ipv4Packet::new_unchecked(&frame[l3..end]);
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            checksum::pseudo_v4(s, d, meta.proto, len as u16)
        }
        L3Kind::Ipv6 => checksum::pseudo_v6(&meta.src, &meta.dst, meta.proto, len as u32),
    };
    if meta.fragment != Fragment::None {
        return;
    }
    match (meta.proto, meta.l3_kind) {
        (IpProtocol::Tcp, _) => assert!(TcpPacket::new_unchecked(seg).verify_checksum(pseudo)),
        (IpProtocol::Udp, _) => assert!(UdpPacket::new_unchecked(seg).verify_checksum(pseudo)),
        (IpProtocol::Icmp, _) => assert!(IcmpPacket::new_unchecked(seg).verify_checksum()),
        (IpProtocol::Icmpv6, _) => {
            assert!(Icmpv6Packet::new_unchecked(seg).verify_checksum(pseudo))
        }
        _ => {}
    }
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        panic!("etherparse rejects the rewritten frame");
    };
    match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ip)), t) => {
            let h = ip.header();
            assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
            let (s, d) = (h.source(), h.destination());
            match t {
                Some(TransportSlice::Tcp(t)) => {
                    assert_eq!(t.calc_checksum_ipv4(s, d).ok(), Some(t.checksum()))
                }
                Some(TransportSlice::Udp(u)) if u.checksum() != 0 => {
                    let c = u.to_header().calc_checksum_ipv4_raw(s, d, u.payload());
                    assert_eq!(c.ok(), Some(u.checksum()));
                }
                _ => {}
            }
        }
        (Some(NetSlice::Ipv6(ip)), t) => {
            let h = ip.header();
            let (s, d) = (h.source(), h.destination());
            match t {
                Some(TransportSlice::Tcp(t)) => {
                    assert_eq!(t.calc_checksum_ipv6(s, d).ok(), Some(t.checksum()))
                }
                Some(TransportSlice::Udp(u)) => {
                    let c = u.to_header().calc_checksum_ipv6_raw(s, d, u.payload());
                    assert_eq!(c.ok(), Some(u.checksum()));
                }
                _ => {}
            }
        }
        _ => {}
    }
}

#[test]
fn ipv4_address_rewrites_fix_ip_and_l4_checksums() -> Result<(), DropReason> {
    for frame in [golden::IPV4_TCP_SYN, golden::IPV4_UDP_DNS, golden::IPV4_ICMP_ECHO] {
        let mut f = frame.to_vec();
        let mut m = meta_of(&f)?;
        let old_key = m.key;
        set_ipv4_src(&mut f, &mut m, [100, 64, 0, 1])?;
        set_ipv4_dst(&mut f, &mut m, [203, 0, 113, 255])?;
        assert_eq!(&m.src[..4], &[100, 64, 0, 1]);
        assert_eq!(&m.dst[..4], &[203, 0, 113, 255]);
        assert_ne!(m.key, old_key);
        verify(&f, &m);
    }
    Ok(())
}

#[test]
fn ipv6_address_rewrites_fix_l4_checksums() -> Result<(), DropReason> {
    for frame in [tcp6(), udp6(), golden::IPV6_ICMPV6_ECHO.to_vec()] {
        let mut f = frame;
        let mut m = meta_of(&f)?;
        verify(&f, &m);
        set_ipv6_src(&mut f, &mut m, [0xfd; 16])?;
        set_ipv6_dst(&mut f, &mut m, [0; 16])?;
        assert_eq!((m.src, m.dst), ([0xfd; 16], [0; 16]));
        verify(&f, &m);
    }
    Ok(())
}

#[test]
fn wrong_family_is_refused() -> Result<(), DropReason> {
    let mut f = udp6();
    let mut m = meta_of(&f)?;
    assert_eq!(set_ipv4_src(&mut f, &mut m, [1; 4]), Err(DropReason::BadIpVersion));
    let mut f = golden::IPV4_UDP_DNS.to_vec();
    let mut m = meta_of(&f)?;
    assert_eq!(set_ipv6_dst(&mut f, &mut m, [1; 16]), Err(DropReason::BadIpVersion));
    assert_eq!(f, golden::IPV4_UDP_DNS);
    Ok(())
}

#[test]
fn udp_zero_checksum_stays_zero() -> Result<(), DropReason> {
    let mut f = golden::IPV4_UDP_DNS.to_vec();
    f[40..42].copy_from_slice(&[0, 0]);
    let mut m = meta_of(&f)?;
    set_ipv4_src(&mut f, &mut m, [192, 0, 2, 77])?;
    set_src_port(&mut f, &mut m, 1)?;
    set_dst_port(&mut f, &mut m, 2)?;
    assert_eq!(&f[40..42], &[0, 0]);
    verify(&f, &m);
    Ok(())
}

#[test]
fn port_rewrites() -> Result<(), DropReason> {
    for frame in [golden::IPV4_TCP_SYN.to_vec(), golden::QINQ_IPV4_UDP.to_vec(), tcp6(), udp6()] {
        let mut f = frame;
        let mut m = meta_of(&f)?;
        set_src_port(&mut f, &mut m, 61000)?;
        set_dst_port(&mut f, &mut m, 8443)?;
        assert_eq!((m.sport, m.dport), (61000, 8443));
        verify(&f, &m);
    }
    // No ports on ICMP: nothing changes.
    let mut f = golden::IPV4_ICMP_ECHO.to_vec();
    let mut m = meta_of(&f)?;
    let before = m;
    set_src_port(&mut f, &mut m, 1)?;
    assert_eq!((f.as_slice(), m), (golden::IPV4_ICMP_ECHO, before));
    Ok(())
}

#[test]
fn icmp_echo_id_rewrites() -> Result<(), DropReason> {
    for frame in [golden::IPV4_ICMP_ECHO, golden::IPV6_ICMPV6_ECHO] {
        let mut f = frame.to_vec();
        let mut m = meta_of(&f)?;
        set_icmp_echo_id(&mut f, &mut m, 0xbeef)?;
        assert_eq!((m.sport, m.dport), (0xbeef, 0xbeef));
        verify(&f, &m);
    }
    // Not an echo: untouched.
    let mut f = golden::IPV4_ICMP_PORT_UNREACH.to_vec();
    let mut m = meta_of(&f)?;
    set_icmp_echo_id(&mut f, &mut m, 9)?;
    assert_eq!(f, golden::IPV4_ICMP_PORT_UNREACH);
    Ok(())
}

#[test]
fn ttl_decrement() -> Result<(), DropReason> {
    let mut f = golden::IPV4_TCP_SYN.to_vec();
    let mut m = meta_of(&f)?;
    decrement_ttl(&mut f, &mut m)?;
    assert_eq!((m.ttl, f[22]), (63, 63));
    verify(&f, &m);
    // TTL 1 would leave as 0: refused, frame unchanged.
    let mut one = golden::IPV4_TCP_SYN.to_vec();
    let mut m = meta_of(&one)?;
    let ip = &mut one[14..];
    Ipv4Packet::new_checked(&mut *ip)?.set_ttl(1);
    m.ttl = 1;
    let before = one.clone();
    assert_eq!(decrement_ttl(&mut one, &mut m), Err(DropReason::TtlExpired));
    assert_eq!((one, m.ttl), (before, 1));
    // IPv6 hop limit.
    let mut f = golden::IPV6_ICMPV6_ECHO.to_vec();
    let mut m = meta_of(&f)?;
    decrement_ttl(&mut f, &mut m)?;
    assert_eq!((m.ttl, f[21]), (254, 254));
    verify(&f, &m);
    Ok(())
}

#[test]
fn dscp_rewrite_keeps_ecn() -> Result<(), DropReason> {
    let mut f = golden::IPV4_ICMP_PORT_UNREACH.to_vec(); // tos 0xc0
    f[15] |= 0x01; // ECT(1)
    Ipv4Packet::new_checked(&mut f[14..])?.fill_checksum();
    let m = meta_of(&f)?;
    set_dscp(&mut f, &m, 46)?;
    assert_eq!(f[15], (46 << 2) | 1);
    verify(&f, &m);
    let mut f = tcp6();
    let m = meta_of(&f)?;
    set_dscp(&mut f, &m, 0xff)?;
    assert_eq!(Ipv6Packet::new_checked(&f[14..])?.dscp(), 0x3f);
    verify(&f, &m);
    Ok(())
}

#[test]
fn arp_has_nothing_to_rewrite() -> Result<(), DropReason> {
    let mut f = golden::ARP_REQUEST.to_vec();
    let mut m = meta_of(&f)?;
    decrement_ttl(&mut f, &mut m)?;
    set_dscp(&mut f, &m, 10)?;
    set_src_port(&mut f, &mut m, 10)?;
    set_icmp_echo_id(&mut f, &mut m, 10)?;
    assert_eq!(set_ipv4_src(&mut f, &mut m, [1; 4]), Err(DropReason::BadIpVersion));
    assert_eq!(f, golden::ARP_REQUEST);
    assert_eq!(m.key, FlowKey::default());
    Ok(())
}

#[test]
fn later_fragments_keep_their_payload() -> Result<(), DropReason> {
    let mut f = golden::IPV4_UDP_DNS.to_vec();
    f[20..22].copy_from_slice(&185u16.to_be_bytes());
    Ipv4Packet::new_checked(&mut f[14..])?.fill_checksum();
    let mut m = meta_of(&f)?;
    assert_eq!(m.fragment, Fragment::Later);
    let data = f[34..].to_vec();
    set_ipv4_src(&mut f, &mut m, [1, 2, 3, 4])?;
    set_src_port(&mut f, &mut m, 7)?;
    set_dst_port(&mut f, &mut m, 7)?;
    set_icmp_echo_id(&mut f, &mut m, 7)?;
    assert_eq!(f[34..], data[..], "fragment data untouched");
    assert_eq!((m.sport, m.dport), (0, 0));
    verify(&f, &m);
    Ok(())
}

#[test]
fn first_fragment_udp_checksum_follows_the_address() -> Result<(), DropReason> {
    // The golden fragment's UDP checksum covers 200 data bytes (0x41 + i) mod 256; rebuild
    // the whole datagram to check the incrementally updated checksum.
    let mut f = golden::IPV6_HBH_FRAG_UDP.to_vec();
    let mut m = meta_of(&f)?;
    set_ipv6_src(&mut f, &mut m, [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd])?;
    set_dst_port(&mut f, &mut m, 53)?;
    verify(&f, &m);
    let mut datagram = f[70..78].to_vec();
    datagram.extend((0..200u32).map(|i| (0x41 + i) as u8));
    let pseudo = checksum::pseudo_v6(&m.src, &m.dst, IpProtocol::Udp, 208);
    assert!(UdpPacket::new_checked(&datagram[..])?.verify_checksum(pseudo));
    Ok(())
}

#[test]
fn meta_that_does_not_fit_is_refused() -> Result<(), DropReason> {
    let mut f = golden::IPV4_TCP_SYN.to_vec();
    let mut m = meta_of(&f)?;
    f.truncate(60);
    assert_eq!(set_ipv4_src(&mut f, &mut m, [1; 4]), Err(DropReason::Truncated));
    assert_eq!(set_src_port(&mut f, &mut m, 1), Err(DropReason::Truncated));
    assert_eq!(decrement_ttl(&mut f, &mut m), Err(DropReason::Truncated));
    let mut m = meta_of(golden::IPV4_TCP_SYN)?;
    m.l4 = 60; // no room for a TCP header
    let mut f = golden::IPV4_TCP_SYN.to_vec();
    assert_eq!(set_dst_port(&mut f, &mut m, 1), Err(DropReason::Truncated));
    Ok(())
}

/// Random rewrite sequences on every frame: checksums and meta stay right throughout.
#[test]
fn random_rewrite_sequences() -> Result<(), DropReason> {
    let mut rng = Rng(0x5eed);
    let mut frames: Vec<Vec<u8>> = golden::ALL.iter().map(|f| f.to_vec()).collect();
    frames.push(tcp6());
    frames.push(udp6());
    for round in 0..3000 {
        let mut f = frames[round % frames.len()].clone();
        let mut m = meta_of(&f)?;
        for _ in 0..6 {
            let x = rng.next();
            let r = match x % 7 {
                0 => set_ipv4_src(&mut f, &mut m, ((x >> 8) as u32).to_be_bytes()),
                1 => set_ipv4_dst(&mut f, &mut m, [(x >> 8) as u8, 0, (x >> 16) as u8, 1]),
                2 => set_src_port(&mut f, &mut m, (x >> 8) as u16),
                3 => set_dst_port(&mut f, &mut m, (x >> 24) as u16),
                4 => set_icmp_echo_id(&mut f, &mut m, (x >> 8) as u16),
                5 => set_dscp(&mut f, &m, (x >> 8) as u8),
                _ => {
                    let mut a = [0u8; 16];
                    rng.fill(&mut a);
                    set_ipv6_src(&mut f, &mut m, a)
                }
            };
            match r {
                Ok(()) => verify(&f, &m),
                Err(e) => assert_eq!(e, DropReason::BadIpVersion, "only family mismatches fail"),
            }
        }
        if decrement_ttl(&mut f, &mut m).is_ok() {
            verify(&f, &m);
        }
    }
    Ok(())
}

/// The fuzz target's oracle on mutated golden frames: whatever parses can be rewritten in
/// every way without panicking, and the result parses to exactly the updated meta.
#[test]
fn rewritten_frames_parse_to_the_updated_meta() {
    let mut rng = Rng(0xf022);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut f = golden::ALL[rng.below(golden::ALL.len())].to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(f.len());
            f[at] = rng.next() as u8;
        }
        let policy = ParsePolicy { verify_ipv4_checksum: false, ..ParsePolicy::default() };
        let Ok(mut m) = parse(&f, PortId(1), &policy) else {
            continue;
        };
        accepted += 1;
        let x = rng.next();
        let _ = set_ipv4_src(&mut f, &mut m, (x as u32).to_be_bytes());
        let _ = set_ipv4_dst(&mut f, &mut m, ((x >> 32) as u32).to_be_bytes());
        let _ = set_ipv6_src(&mut f, &mut m, [x as u8; 16]);
        let _ = set_ipv6_dst(&mut f, &mut m, [(x >> 8) as u8; 16]);
        let _ = set_src_port(&mut f, &mut m, (x >> 16) as u16);
        let _ = set_dst_port(&mut f, &mut m, (x >> 24) as u16);
        let _ = set_icmp_echo_id(&mut f, &mut m, (x >> 40) as u16);
        let _ = decrement_ttl(&mut f, &mut m);
        let _ = set_dscp(&mut f, &m, (x >> 48) as u8);
        assert_eq!(parse(&f, PortId(1), &policy), Ok(m));
    }
    assert!(accepted > 5000, "only {accepted} mutated frames parsed");
}
