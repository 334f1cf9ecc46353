use super::*;
use crate::flow::{Dir, FlowKey, FAMILY_V4, FAMILY_V6};
use crate::packet::checksum;
use crate::packet::golden;
use crate::packet::meta::TcpFlags;

const PORT: PortId = PortId(3);
const V6_1: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_2: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn run(frame: &[u8]) -> Result<Meta, DropReason> {
    parse(frame, PORT, &ParsePolicy::default())
}

/// The Meta a frame should parse to, built field by field.
#[allow(clippy::too_many_arguments)]
fn expect(
    kind: L3Kind,
    offsets: [u16; 4],
    proto: IpProtocol,
    (src, sport): ([u8; 16], u16),
    (dst, dport): ([u8; 16], u16),
    ttl: u8,
    tcp_flags: u8,
    fragment: Fragment,
) -> Meta {
    let family = if kind == L3Kind::Ipv4 { FAMILY_V4 } else { FAMILY_V6 };
    let (key, dir) = FlowKey::new(family, proto.into(), src, sport, dst, dport);
    let [l3, l4, payload, l3_end] = offsets;
    Meta {
        ingress: PORT,
        vlans: [0; 2],
        vlan_count: 0,
        l3_kind: kind,
        l3,
        l4,
        payload,
        l3_end,
        proto,
        src,
        dst,
        sport,
        dport,
        tcp_flags: TcpFlags(tcp_flags),
        ttl,
        fragment,
        key,
        dir,
        hash: key.hash(),
    }
}

#[test]
fn golden_ipv4_tcp_syn() -> Result<(), DropReason> {
    let m = run(golden::IPV4_TCP_SYN)?;
    let want = expect(
        L3Kind::Ipv4,
        [14, 34, 74, 74],
        IpProtocol::Tcp,
        (v4([192, 168, 1, 10]), 51234),
        (v4([93, 184, 216, 34]), 443),
        64,
        TcpFlags::SYN,
        Fragment::None,
    );
    assert_eq!(m, want);
    assert_eq!(m.dir, Dir::HiToLo, "93.184.216.34 sorts first");
    assert_eq!((m.key.family, m.key.proto, m.key.lo_port, m.key.hi_port), (4, 6, 443, 51234));
    assert!(m.tcp_flags.syn() && !m.tcp_flags.ack());
    Ok(())
}

#[test]
fn golden_ipv4_udp_dns() -> Result<(), DropReason> {
    let m = run(golden::IPV4_UDP_DNS)?;
    let want = expect(
        L3Kind::Ipv4,
        [14, 34, 42, 71],
        IpProtocol::Udp,
        (v4([10, 0, 0, 2]), 53000),
        (v4([8, 8, 8, 8]), 53),
        64,
        0,
        Fragment::None,
    );
    assert_eq!(m, want);
    assert_eq!((m.ip_len(), m.payload_len()), (57, 29));
    Ok(())
}

#[test]
fn golden_icmp_echo_and_reply_share_a_key() -> Result<(), DropReason> {
    let m = run(golden::IPV4_ICMP_ECHO)?;
    let want = expect(
        L3Kind::Ipv4,
        [14, 34, 42, 98],
        IpProtocol::Icmp,
        (v4([10, 0, 0, 2]), 0x1234),
        (v4([1, 1, 1, 1]), 0x1234),
        64,
        0,
        Fragment::None,
    );
    assert_eq!(m, want);
    // The reply: addresses swapped, type 0.
    let mut reply = golden::IPV4_ICMP_ECHO.to_vec();
    reply.copy_within(26..30, 60);
    reply.copy_within(30..34, 26);
    reply.copy_within(60..64, 30);
    reply[34] = 0;
    let r = run(&reply)?;
    assert_eq!((r.key, r.hash, r.dir), (m.key, m.hash, m.dir.reverse()));
    Ok(())
}

#[test]
fn golden_icmp_error_has_no_ports() -> Result<(), DropReason> {
    let m = run(golden::IPV4_ICMP_PORT_UNREACH)?;
    let want = expect(
        L3Kind::Ipv4,
        [14, 34, 42, 99],
        IpProtocol::Icmp,
        (v4([8, 8, 8, 8]), 0),
        (v4([10, 0, 0, 2]), 0),
        57,
        0,
        Fragment::None,
    );
    assert_eq!(m, want);
    Ok(())
}

#[test]
fn golden_ipv6_hbh_fragment_udp() -> Result<(), DropReason> {
    let m = run(golden::IPV6_HBH_FRAG_UDP)?;
    let want = expect(
        L3Kind::Ipv6,
        [14, 70, 78, 110],
        IpProtocol::Udp,
        (V6_1, 5000),
        (V6_2, 6000),
        64,
        0,
        Fragment::First,
    );
    assert_eq!(m, want);
    Ok(())
}

#[test]
fn golden_icmpv6_echo() -> Result<(), DropReason> {
    let m = run(golden::IPV6_ICMPV6_ECHO)?;
    let want = expect(
        L3Kind::Ipv6,
        [14, 54, 62, 70],
        IpProtocol::Icmpv6,
        (V6_1, 0x0a0b),
        (V6_2, 0x0a0b),
        255,
        0,
        Fragment::None,
    );
    assert_eq!(m, want);
    Ok(())
}

#[test]
fn golden_qinq() -> Result<(), DropReason> {
    let m = run(golden::QINQ_IPV4_UDP)?;
    let mut want = expect(
        L3Kind::Ipv4,
        [22, 42, 50, 54],
        IpProtocol::Udp,
        (v4([192, 0, 2, 1]), 1234),
        (v4([198, 51, 100, 7]), 4321),
        63,
        0,
        Fragment::None,
    );
    want.vlans = [100, 200];
    want.vlan_count = 2;
    assert_eq!(m, want);
    assert_eq!(golden::QINQ_IPV4_UDP.len(), 60, "padding is after l3_end");
    Ok(())
}

#[test]
fn golden_arp() -> Result<(), DropReason> {
    let m = run(golden::ARP_REQUEST)?;
    let want = Meta {
        ingress: PORT,
        l3_kind: L3Kind::Arp,
        l3: 14,
        l4: 42,
        payload: 42,
        l3_end: 42,
        hash: FlowKey::default().hash(),
        ..Meta::default()
    };
    assert_eq!(m, want);
    assert!(!m.is_ip());
    Ok(())
}

/// etherparse reads the same addresses and ports, and the golden checksums verify.
#[test]
fn golden_frames_agree_with_etherparse() -> Result<(), DropReason> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    for (i, frame) in golden::ALL.iter().enumerate() {
        let m = run(frame)?;
        let Ok(p) = SlicedPacket::from_ethernet(frame) else {
            panic!("etherparse rejects golden frame {i}");
        };
        match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert_eq!((v4(h.source()), v4(h.destination())), (m.src, m.dst), "{i}");
                let hc = h.to_header().calc_header_checksum();
                assert_eq!(hc, h.header_checksum(), "{i}");
                match &p.transport {
                    Some(TransportSlice::Tcp(t)) => {
                        let c = t.calc_checksum_ipv4(h.source(), h.destination());
                        assert_eq!(c.ok(), Some(t.checksum()), "{i}");
                    }
                    Some(TransportSlice::Udp(u)) => {
                        let c =
                            u.to_header().calc_checksum_ipv4_raw(h.source(), h.destination(), u.payload());
                        assert_eq!(c.ok(), Some(u.checksum()), "{i}");
                    }
                    _ => {}
                }
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                assert_eq!((h.source(), h.destination()), (m.src, m.dst), "{i}");
            }
            Some(NetSlice::Arp(_)) => assert_eq!(m.l3_kind, L3Kind::Arp),
            None => panic!("no network layer in golden frame {i}"),
        }
        let ports = match &p.transport {
            Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
            Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
            _ => (m.sport, m.dport),
        };
        assert_eq!(ports, (m.sport, m.dport), "{i}");
    }
    Ok(())
}

/// Recomputes the IPv4 header checksum at `l3` after a test mutated the header.
fn fix_ipv4(frame: &mut [u8], l3: usize) {
    let hlen = usize::from(frame[l3] & 0x0f) * 4;
    frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&frame[l3..l3 + hlen.max(20)]);
    frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

fn set16(frame: &mut [u8], at: usize, v: u16) {
    frame[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

type Case = (&'static str, &'static [u8], fn(&mut Vec<u8>), DropReason);

#[test]
fn malformed_frames_map_to_exact_reasons() {
    use golden::*;
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("runt", IPV4_UDP_DNS, |f| f.truncate(13), DropReason::Truncated),
        ("lldp", IPV4_UDP_DNS, |f| set16(f, 12, 0x88cc), DropReason::UnknownEthertype),
        ("vlan cut", IPV4_UDP_DNS, |f| { set16(f, 12, 0x8100); f.truncate(17) }, DropReason::Truncated),
        ("third tag", QINQ_IPV4_UDP, |f| set16(f, 20, 0x8100), DropReason::TooManyVlanTags),
        ("ipv4 cut", IPV4_UDP_DNS, |f| f.truncate(33), DropReason::Truncated),
        ("ipv4 version 6", IPV4_UDP_DNS, |f| f[14] = 0x65, DropReason::BadIpVersion),
        ("ihl 4", IPV4_UDP_DNS, |f| f[14] = 0x44, DropReason::BadIhl),
        ("ihl past frame", IPV4_UDP_DNS, |f| f[14] = 0x4f, DropReason::BadIhl),
        ("total < ihl", IPV4_UDP_DNS, |f| set16(f, 16, 19), DropReason::BadTotalLength),
        ("total > frame", IPV4_UDP_DNS, |f| set16(f, 16, 58), DropReason::BadTotalLength),
        ("ip checksum", IPV4_UDP_DNS, |f| f[25] ^= 1, DropReason::BadIpChecksum),
        ("ttl 0", IPV4_UDP_DNS, |f| { f[22] = 0; fix_ipv4(f, 14) }, DropReason::TtlExpired),
        ("tcp offset 4", IPV4_TCP_SYN, |f| f[46] = 0x40, DropReason::BadTcpHeader),
        ("tcp offset 15", IPV4_TCP_SYN, |f| f[46] = 0xf0, DropReason::BadTcpHeader),
        ("tcp cut", IPV4_TCP_SYN, |f| { set16(f, 16, 39); fix_ipv4(f, 14) }, DropReason::Truncated),
        ("tcp options cut", IPV4_TCP_SYN, |f| { set16(f, 16, 59); fix_ipv4(f, 14) }, DropReason::BadTcpHeader),
        ("tcp fo=1", IPV4_TCP_SYN, |f| { set16(f, 20, 1); fix_ipv4(f, 14) }, DropReason::Fragment),
        ("udp len short", IPV4_UDP_DNS, |f| set16(f, 38, 36), DropReason::BadUdpLength),
        ("udp len long", IPV4_UDP_DNS, |f| set16(f, 38, 38), DropReason::BadUdpLength),
        ("udp len 7", IPV4_UDP_DNS, |f| set16(f, 38, 7), DropReason::BadUdpLength),
        ("udp cut", IPV4_UDP_DNS, |f| { set16(f, 16, 27); fix_ipv4(f, 14) }, DropReason::Truncated),
        ("icmp cut", IPV4_ICMP_ECHO, |f| { set16(f, 16, 27); fix_ipv4(f, 14) }, DropReason::Truncated),
        ("ipv6 cut", IPV6_ICMPV6_ECHO, |f| f.truncate(53), DropReason::Truncated),
        ("ipv6 version 4", IPV6_ICMPV6_ECHO, |f| f[14] = 0x40, DropReason::BadIpVersion),
        ("ipv6 payload long", IPV6_ICMPV6_ECHO, |f| set16(f, 18, 17), DropReason::BadTotalLength),
        ("hop limit 0", IPV6_ICMPV6_ECHO, |f| f[21] = 0, DropReason::TtlExpired),
        ("icmpv6 cut", IPV6_ICMPV6_ECHO, |f| { set16(f, 18, 7); f.truncate(61) }, DropReason::Truncated),
        ("hbh twice", IPV6_HBH_FRAG_UDP, |f| f[54] = 0, DropReason::BadExtensionHeaders),
        ("hbh length", IPV6_HBH_FRAG_UDP, |f| f[55] = 7, DropReason::BadExtensionHeaders),
        ("first fragment udp len", IPV6_HBH_FRAG_UDP, |f| set16(f, 74, 39), DropReason::BadUdpLength),
        ("arp cut", ARP_REQUEST, |f| f.truncate(41), DropReason::Truncated),
        ("arp header cut", ARP_REQUEST, |f| f.truncate(19), DropReason::Truncated),
        ("oversize", IPV4_UDP_DNS, |f| f.resize(65536, 0), DropReason::Oversize),
    ];
    for (name, base, mutate, want) in cases {
        let mut f = base.to_vec();
        mutate(&mut f);
        assert_eq!(run(&f).err(), Some(*want), "{name}");
    }
}

#[test]
fn unverified_checksum_passes() -> Result<(), DropReason> {
    let mut f = golden::IPV4_UDP_DNS.to_vec();
    f[25] ^= 1;
    let policy = ParsePolicy { verify_ipv4_checksum: false, ..ParsePolicy::default() };
    let m = parse(&f, PORT, &policy)?;
    assert_eq!((m.sport, m.dport), (53000, 53));
    Ok(())
}

#[test]
fn fragment_policies() -> Result<(), DropReason> {
    // The DNS query as a first fragment (MF) and as a later one (offset 1480).
    let mut first = golden::IPV4_UDP_DNS.to_vec();
    set16(&mut first, 20, 0x2000);
    fix_ipv4(&mut first, 14);
    let mut later = golden::IPV4_UDP_DNS.to_vec();
    set16(&mut later, 20, 185);
    fix_ipv4(&mut later, 14);
    // IPv6: the golden first fragment, and a later one at offset 40.
    let v6_first = golden::IPV6_HBH_FRAG_UDP.to_vec();
    let mut v6_later = v6_first.clone();
    set16(&mut v6_later, 64, 40);

    let policy = |fragments| ParsePolicy { fragments, verify_ipv4_checksum: true };
    let allow = policy(FragmentPolicy::Allow);
    let non_first = policy(FragmentPolicy::DropNonFirst);
    let all = policy(FragmentPolicy::DropAll);
    let frag = Err(DropReason::Fragment);

    let m = parse(&first, PORT, &allow)?;
    assert_eq!((m.fragment, m.sport, m.dport), (Fragment::First, 53000, 53));
    let m = parse(&later, PORT, &allow)?;
    assert_eq!((m.fragment, m.sport, m.dport, m.proto), (Fragment::Later, 0, 0, IpProtocol::Udp));
    assert_eq!((m.l4, m.payload, m.l3_end), (34, 34, 71));
    let m = parse(&v6_later, PORT, &allow)?;
    assert_eq!((m.fragment, m.sport, m.dport, m.proto), (Fragment::Later, 0, 0, IpProtocol::Udp));
    assert_eq!((m.l4, m.payload, m.l3_end), (70, 70, 110));

    assert_eq!(parse(&first, PORT, &non_first).map(|m| m.fragment), Ok(Fragment::First));
    assert_eq!(parse(&v6_first, PORT, &non_first).map(|m| m.fragment), Ok(Fragment::First));
    assert_eq!(parse(&later, PORT, &non_first), frag);
    assert_eq!(parse(&v6_later, PORT, &non_first), frag);
    for f in [&first, &later, &v6_first, &v6_later] {
        assert_eq!(parse(f, PORT, &all), frag);
    }
    for f in golden::ALL {
        let fragmented = *f == golden::IPV6_HBH_FRAG_UDP;
        assert_eq!(parse(f, PORT, &all).is_err(), fragmented);
    }
    Ok(())
}

#[test]
fn tcp_directions_share_key() -> Result<(), DropReason> {
    let m = run(golden::IPV4_TCP_SYN)?;
    let mut back = golden::IPV4_TCP_SYN.to_vec();
    back.copy_within(26..30, 70);
    back.copy_within(30..34, 26);
    back.copy_within(70..74, 30);
    back.copy_within(34..36, 70);
    back.copy_within(36..38, 34);
    back.copy_within(70..72, 36);
    let r = run(&back)?;
    assert_eq!((r.key, r.hash, r.dir), (m.key, m.hash, m.dir.reverse()));
    assert_eq!((r.sport, r.dport), (443, 51234));
    Ok(())
}

mod property;
