//! NAT behaviour, table-driven on a virtual clock, with exact counter checks and every
//! rewritten frame's checksums verified by etherparse.

use etherparse::{
    icmpv4::DestUnreachableHeader, Icmpv4Type, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders,
    TransportHeader, UdpHeader,
};

use super::*;
use crate::drop::DropReason;
use crate::ids::{CoreId, PortId};
use crate::nf::SharedRegistry;
use crate::packet::{parse, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::testutil::{arp, build, icmp_echo4, tcp4, udp4, MAC_A, MAC_B};

mod cores;
mod fragments;
mod hairpin;
mod icmp;
mod mapping;
mod migrate;
mod restart;

const IN: u16 = 0;
const OUT: u16 = 1;
const HOST_A: [u8; 4] = [192, 168, 1, 10];
const HOST_B: [u8; 4] = [192, 168, 1, 11];
const PUB: [u8; 4] = [203, 0, 113, 1];
const R1: [u8; 4] = [198, 51, 100, 1];
const R2: [u8; 4] = [198, 51, 100, 2];
const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
const FINACK: u8 = 0x11;

/// (source, source port, destination, destination port) of a frame.
type Tuple = ([u8; 4], u16, [u8; 4], u16);
/// (ingress, frame) steps of a scenario.
type Steps<'a> = &'a [(u16, Vec<u8>)];

const BASE: &str = r#"
inside = "inside"
public = "203.0.113.1"
mappings = 1024
"#;

fn s(secs: u64) -> Nanos {
    Nanos::from_secs(secs)
}

/// Runs `frame` through `nat` and returns the verdict and the frame as it leaves.
fn run(nat: &mut Nat, now: Nanos, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run_on(nat, now, 0, ingress, frame)
}

fn run_on(nat: &mut Nat, now: Nanos, core: u16, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut f = frame.to_vec();
    let mut meta = parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap();
    let v = nat.process_packet(&Ctx { now, core: CoreId(core) }, &mut f, &mut meta);
    if !matches!(v, Verdict::Drop(_)) {
        // Meta must describe the rewritten frame.
        let again = parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap();
        assert_eq!((again.key, again.hash), (meta.key, meta.hash), "meta refreshed");
    }
    (v, f)
}

/// (src, sport, dst, dport) of a frame, after checking every checksum with etherparse.
fn verified(frame: &[u8]) -> Tuple {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let Some(NetHeaders::Ipv4(ip, _)) = &h.net else { panic!("not ipv4") };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "ip checksum");
    let payload = h.payload.slice();
    let (sp, dp) = match &h.transport {
        Some(TransportHeader::Udp(u)) => {
            assert_eq!(u.checksum, u.calc_checksum_ipv4(ip, payload).unwrap(), "udp checksum");
            (u.source_port, u.destination_port)
        }
        Some(TransportHeader::Tcp(t)) => {
            assert_eq!(t.checksum, t.calc_checksum_ipv4(ip, payload).unwrap(), "tcp checksum");
            (t.source_port, t.destination_port)
        }
        Some(TransportHeader::Icmpv4(i)) => {
            let mut c = i.clone();
            c.update_checksum(payload);
            assert_eq!(c.checksum, i.checksum, "icmp checksum");
            match i.icmp_type {
                Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => (e.id, e.id),
                _ => (0, 0),
            }
        }
        other => panic!("unexpected transport {other:?}"),
    };
    (ip.source, sp, ip.destination, dp)
}

fn counters(nat: &Nat) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    nat.report(&mut r);
    r.counters.into_iter().filter(|(_, v)| *v != 0).collect()
}

fn drop(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

/// An IPv4 GRE packet (protocol 47): no ports.
fn gre(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut f = udp4(src, 1, dst, 2, b"xxxx");
    f[14 + 9] = 47;
    fix_ip_checksum(&mut f);
    f
}

fn fix_ip_checksum(f: &mut [u8]) {
    let mut ip = crate::packet::ipv4::Ipv4Packet::new_checked(&mut f[14..]).unwrap();
    ip.fill_checksum();
}

fn echo_reply(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).icmpv4_echo_reply(id, 1);
    let mut out = Vec::new();
    b.write(&mut out, &[0u8; 8]).unwrap();
    out
}

/// An ICMP error from `src` to `dst` quoting `quote` (an IP datagram, possibly cut short).
fn icmp_error(src: [u8; 4], dst: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port));
    let mut out = Vec::new();
    b.write(&mut out, quote).unwrap();
    out
}

/// The quoted datagram of an ICMP error frame, with its IP and (if whole) UDP checksums checked.
fn quoted(frame: &[u8]) -> Tuple {
    verified(frame);
    let q = &frame[14 + 20 + 8..];
    let (ip, rest) = Ipv4Header::from_slice(q).unwrap();
    assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "quoted ip checksum");
    let (udp, payload) = UdpHeader::from_slice(rest).unwrap();
    if payload.len() + 8 == usize::from(udp.length) {
        assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap(), "quoted udp checksum");
    }
    (ip.source, udp.source_port, ip.destination, udp.destination_port)
}

/// Makes `f` (a UDP frame) a fragment: `mf` more-fragments flag, `offset` in 8-byte units.
fn fragment(mut f: Vec<u8>, ident: u16, mf: bool, offset: u16) -> Vec<u8> {
    let fl = (u16::from(mf) << 13) | offset;
    f[14 + 4..14 + 6].copy_from_slice(&ident.to_be_bytes());
    f[14 + 6..14 + 8].copy_from_slice(&fl.to_be_bytes());
    fix_ip_checksum(&mut f);
    f
}

fn addrs(f: &[u8]) -> ([u8; 4], [u8; 4]) {
    let ip = crate::packet::ipv4::Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum());
    (ip.src_addr(), ip.dst_addr())
}

/// Builds the NAT on both cores of a two-core appliance (shared pools).
fn two_cores(config: &str) -> Vec<Nat> {
    two_cores_of(config, crate::ids::Instance::default())
}

/// [`two_cores`] as `instance` of a scaled-out deployment.
fn two_cores_of(config: &str, instance: crate::ids::Instance) -> Vec<Nat> {
    let cfg: NatConfig = toml::from_str(config).unwrap();
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    (0..2u16)
        .map(|core| {
            let mut arena = Arena::new(CoreId(core), 64 << 20, Backing::Normal);
            let mut rt = InitCtx {
                instance,
                name: "nat",
                core: CoreId(core),
                cores: 2,
                ports: &ports,
                arena: &mut arena,
                shared: &mut shared,
            };
            Nat::init(&cfg, &mut rt).unwrap()
        })
        .collect()
}
