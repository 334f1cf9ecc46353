use super::*;
use crate::packet::golden;

const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// An IPv6 packet with `first` as next header and `body` as payload.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(body.len() as u16).to_be_bytes());
    p.extend_from_slice(&[first, 64]);
    p.extend_from_slice(&SRC);
    p.extend_from_slice(&DST);
    p.extend_from_slice(body);
    p
}

/// An 8-byte options/routing header.
fn ext(next: u8) -> [u8; 8] {
    [next, 0, 1, 4, 0, 0, 0, 0]
}

fn frag(next: u8, offset: u16, more: bool) -> [u8; 8] {
    let [a, b] = (offset | u16::from(more)).to_be_bytes();
    [next, 0, a, b, 0, 0, 0, 9]
}

#[test]
fn golden_hbh_fragment_udp() -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(golden::IPV6_HBH_FRAG_UDP.get(14..).unwrap_or_default())?;
    assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0, 0x12345));
    assert_eq!((p.payload_len(), p.total_len(), p.hop_limit()), (56, 96, 64));
    assert_eq!(p.next_header(), IpProtocol::HopByHop);
    assert_eq!((p.src_addr(), p.dst_addr()), (SRC, DST));
    assert_eq!(p.payload().len(), 56);
    let chain = p.walk_extensions()?;
    let fragment = Some(Ipv6Fragment { offset: 0, more: true, ident: 0xdead_beef });
    assert_eq!(chain, ExtChain { proto: IpProtocol::Udp, l4: 56, fragment, count: 2 });
    Ok(())
}

#[test]
fn no_extensions() -> Result<(), DropReason> {
    let p = Ipv6Packet::new_checked(golden::IPV6_ICMPV6_ECHO.get(14..).unwrap_or_default())?;
    let chain = p.walk_extensions()?;
    assert_eq!(chain, ExtChain { proto: IpProtocol::Icmpv6, l4: 40, fragment: None, count: 0 });
    Ok(())
}

#[test]
fn later_fragment_stops_at_fragment_header() -> Result<(), DropReason> {
    let mut body = frag(6, 1448, false).to_vec();
    body.extend_from_slice(&[0xaa; 16]);
    let buf = packet(44, &body);
    let chain = Ipv6Packet::new_checked(&buf[..])?.walk_extensions()?;
    let fragment = Some(Ipv6Fragment { offset: 1448, more: false, ident: 9 });
    assert_eq!(chain, ExtChain { proto: IpProtocol::Tcp, l4: 48, fragment, count: 1 });
    Ok(())
}

#[test]
fn atomic_fragment_is_walked_through() -> Result<(), DropReason> {
    let mut body = frag(60, 0, false).to_vec();
    body.extend_from_slice(&ext(17));
    body.extend_from_slice(&[0; 8]);
    let buf = packet(44, &body);
    let chain = Ipv6Packet::new_checked(&buf[..])?.walk_extensions()?;
    let fragment = Some(Ipv6Fragment { offset: 0, more: false, ident: 9 });
    assert_eq!(chain, ExtChain { proto: IpProtocol::Udp, l4: 56, fragment, count: 2 });
    Ok(())
}

#[test]
fn eight_headers_pass_nine_fail() -> Result<(), DropReason> {
    for (n, want) in [(8usize, None), (9, Some(DropReason::BadExtensionHeaders))] {
        let mut body = Vec::new();
        for i in 0..n {
            body.extend_from_slice(&ext(if i + 1 == n { 59 } else { 60 }));
        }
        let buf = packet(60, &body);
        let got = Ipv6Packet::new_checked(&buf[..])?.walk_extensions();
        assert_eq!(got.err(), want, "{n} headers");
        if n == 8 {
            let chain = Ipv6Packet::new_checked(&buf[..])?.walk_extensions()?;
            assert_eq!((chain.proto, chain.l4, chain.count), (IpProtocol::Ipv6NoNext, 104, 8));
        }
    }
    Ok(())
}

#[test]
fn malformed_chains() {
    let long_len = [17, 1, 0, 0, 0, 0, 0, 0]; // claims 16 bytes, has 8
    #[rustfmt::skip]
    let cases: &[(&str, u8, Vec<u8>, DropReason)] = &[
        ("hbh second", 60, [ext(0), ext(17)].concat(), DropReason::BadExtensionHeaders),
        ("two fragment headers", 44, [frag(44, 0, true), frag(17, 0, true)].concat(),
            DropReason::BadExtensionHeaders),
        ("length past payload", 0, long_len.to_vec(), DropReason::BadExtensionHeaders),
        ("ext cut short", 43, vec![17, 0, 0, 0], DropReason::Truncated),
        ("fragment cut short", 44, vec![17, 0, 0, 1, 0, 0], DropReason::Truncated),
        ("empty payload", 0, vec![], DropReason::Truncated),
    ];
    for (name, first, body, want) in cases {
        let buf = packet(*first, body);
        let got = Ipv6Packet::new_checked(&buf[..]).and_then(|p| p.walk_extensions());
        assert_eq!(got.err(), Some(*want), "{name}");
    }
}

#[test]
fn malformed_fixed_headers() {
    let good = packet(59, &[0; 8]);
    #[rustfmt::skip]
    let cases: &[golden::Mutation] = &[
        ("39 bytes", |b| b.truncate(39), DropReason::Truncated),
        ("version 4", |b| b[0] = 0x40, DropReason::BadIpVersion),
        ("payload past end", |b| b[5] = 9, DropReason::BadTotalLength),
        ("payload cut", |b| b.truncate(47), DropReason::BadTotalLength),
    ];
    for (name, mutate, want) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        assert_eq!(Ipv6Packet::new_checked(&b[..]).err(), Some(*want), "{name}");
    }
    let mut padded = good.clone();
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(Ipv6Packet::new_checked(&padded[..]).map(|p| p.payload().len()), Ok(8));
}

#[test]
fn setters_round_trip() -> Result<(), DropReason> {
    let mut buf = packet(59, &[]);
    let mut p = Ipv6Packet::new_checked(&mut buf[..])?;
    p.set_flow_label(0xfff_ffff);
    p.set_traffic_class(0xab);
    assert_eq!((p.traffic_class(), p.flow_label(), p.version()), (0xab, 0xf_ffff, 6));
    p.set_dscp(46);
    assert_eq!((p.dscp(), p.ecn()), (46, 3));
    p.set_ecn(1);
    assert_eq!((p.dscp(), p.ecn(), p.flow_label()), (46, 1, 0xf_ffff));
    p.set_hop_limit(1);
    p.set_src_addr(DST);
    p.set_dst_addr(SRC);
    assert_eq!((p.hop_limit(), p.src_addr(), p.dst_addr()), (1, DST, SRC));
    Ok(())
}
