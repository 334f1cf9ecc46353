//! Probe write/read, stamping with valid checksums, and finding probes behind VLAN tags and
//! after address rewriting.

use super::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

const P: Probe =
    Probe { session: 0xdead_beef, port: 3, stream: 0x0102_0304, seq: 0x1122_3344_5566_7788, tx_ns: 42 };

/// Golden bytes of `P`.
const GOLDEN: [u8; PROBE_LEN] = [
    b'n', b'F', b'L', b'p', 1, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 0x11, 0x22, 0x33, 0x44, 0x55,
    0x66, 0x77, 0x88, 0, 0, 0, 0, 0, 0, 0, 42,
];

#[test]
fn probe_round_trips_through_its_golden_bytes() {
    let mut b = [0xffu8; PROBE_LEN];
    assert!(P.write(&mut b));
    assert_eq!(b, GOLDEN);
    assert_eq!(Probe::read(&GOLDEN), Some(P));
    assert!(!P.write(&mut [0u8; PROBE_LEN - 1]));
    assert_eq!(Probe::read(&GOLDEN[..PROBE_LEN - 1]), None);
    let mut wrong_version = GOLDEN;
    wrong_version[4] = 2;
    assert_eq!(Probe::read(&wrong_version), None);
}

/// Frames with a payload of `len` zero bytes: (name, frame).
fn frames(len: usize) -> Vec<(&'static str, Vec<u8>)> {
    let payload = vec![0u8; len];
    let v4 = [10, 0, 0, 1];
    let v4b = [192, 0, 2, 9];
    let v6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let v6b = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let mut out = Vec::new();
    let mut push = |name, b: etherparse::PacketBuilderStep<etherparse::UdpHeader>| {
        let mut v = Vec::new();
        b.write(&mut v, &payload).unwrap();
        out.push((name, v));
    };
    push("udp4", PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(v4, v4b, 64).udp(1000, 53));
    push("udp6", PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(v6, v6b, 64).udp(1000, 53));
    push(
        "udp4 qinq",
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .double_vlan(7.try_into().unwrap(), 9.try_into().unwrap())
            .ipv4(v4, v4b, 64)
            .udp(1, 2),
    );
    let mut tcp = |name, b: etherparse::PacketBuilderStep<etherparse::TcpHeader>| {
        let mut v = Vec::new();
        b.write(&mut v, &payload).unwrap();
        out.push((name, v));
    };
    tcp("tcp4", PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(v4, v4b, 64).tcp(1000, 80, 1, 65535));
    tcp(
        "tcp6 vlan",
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .single_vlan(5.try_into().unwrap())
            .ipv6(v6, v6b, 64)
            .tcp(1000, 80, 1, 100),
    );
    out
}

fn checksum_ok(frame: &[u8]) -> bool {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    match (&s.net, &s.transport) {
        (Some(etherparse::NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(u))) => {
            u.checksum() == u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap()
        }
        (Some(etherparse::NetSlice::Ipv6(ip)), Some(TransportSlice::Udp(u))) => {
            u.checksum() == u.to_header().calc_checksum_ipv6(&ip.header().to_header(), u.payload()).unwrap()
        }
        (Some(etherparse::NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) => {
            t.checksum() == t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap()
        }
        (Some(etherparse::NetSlice::Ipv6(ip)), Some(TransportSlice::Tcp(t))) => {
            t.checksum() == t.to_header().calc_checksum_ipv6(&ip.header().to_header(), t.payload()).unwrap()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn stamping_keeps_checksums_valid_and_the_probe_is_found() {
    for (name, mut f) in frames(PROBE_LEN + 10) {
        assert!(checksum_ok(&f), "{name}: builder output");
        assert_eq!(find(&f), None, "{name}: no probe yet");
        stamp(&mut f, &P).unwrap();
        assert!(checksum_ok(&f), "{name}: checksum after stamping");
        assert_eq!(find(&f), Some(P), "{name}");
    }
}

#[test]
fn short_payloads_and_other_frames_are_left_alone() {
    for (name, f) in frames(PROBE_LEN - 1) {
        let mut g = f.clone();
        assert_eq!(stamp(&mut g, &P), Err(StampError::PayloadTooShort), "{name}");
        assert_eq!(g, f, "{name}: unchanged");
    }
    let mut arp = vec![0xffu8; 42];
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(stamp(&mut arp, &P), Err(StampError::NotTcpUdp));
}

#[test]
fn probe_is_found_after_a_nat_rewrites_addresses_and_ports() {
    let (_, mut f) = frames(64).remove(0);
    stamp(&mut f, &P).unwrap();
    // Rewrite source address and port as a NAT would (checksums aside: find does not need them).
    f[26..30].copy_from_slice(&[198, 51, 100, 1]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    assert_eq!(find(&f), Some(P));
}

#[test]
fn probe_behind_unknown_headers_is_found_by_scanning() {
    // A probe after an unknown EtherType's 20-byte header, as in a tunnel.
    let mut f = vec![0u8; 14 + 20 + PROBE_LEN + 6];
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    assert!(P.write(&mut f[34..]));
    assert_eq!(find(&f), Some(P));
}

#[test]
fn truncated_or_garbage_frames_never_panic() {
    let (_, mut f) = frames(PROBE_LEN + 4).remove(3);
    stamp(&mut f, &P).unwrap();
    for cut in 0..f.len() {
        let mut g = f[..cut].to_vec();
        let _ = find(&g);
        let _ = stamp(&mut g, &P);
        let _ = locate_l4(&g);
    }
    let mut rng = nflet_nfs::rng::Rng::new(3);
    for _ in 0..2000 {
        let n = rng.below(200) as usize;
        let mut g: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        if n > 14 {
            g[12] = 0x08;
            g[13] = 0;
        }
        let _ = find(&g);
        let _ = stamp(&mut g, &P);
    }
}
