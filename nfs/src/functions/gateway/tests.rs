//! Gateway behaviour on a virtual clock: ARP answered byte by byte, neighbours learned,
//! shared between cores and bounded, IPv4 routed with TTL and MACs rewritten, unknown next
//! hops resolved, and every drop counted under its reason.

use etherparse::{Ipv4Header, PacketBuilder};

use super::*;
use crate::ids::{CoreId, PortId};
use crate::nf::SharedRegistry;
use crate::packet::{parse, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::testutil::build;

const IN: u16 = 0;
const OUT: u16 = 1;
const GW_IN: [u8; 4] = [192, 168, 1, 1];
const GW_OUT: [u8; 4] = [198, 51, 100, 1];
const MAC_IN: [u8; 6] = [2, 0, 0, 0, 1, 1];
const MAC_OUT: [u8; 6] = [2, 0, 0, 0, 2, 1];
const ROUTER: [u8; 4] = [198, 51, 100, 254];
const MAC_ROUTER: [u8; 6] = [2, 0, 0, 0, 2, 0xfe];
const HOST_A: [u8; 4] = [192, 168, 1, 10];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const HOST_B: [u8; 4] = [192, 168, 1, 11];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0x0b];
const SERVER: [u8; 4] = [198, 51, 100, 20];
const MAC_S: [u8; 6] = [2, 0, 0, 0, 0, 0x20];
const REMOTE: [u8; 4] = [8, 8, 8, 8];

const CONFIG: &str = r#"
neighbour_capacity = 4
neighbour_timeout = 60
arp_retry_ms = 1000
[[interface]]
port = "inside"
address = "192.168.1.1/24"
mac = "02:00:00:00:01:01"
[[interface]]
port = "outside"
address = "198.51.100.1/24"
mac = "02:00:00:00:02:01"
default_route = "198.51.100.254"
[[neighbour]]
address = "198.51.100.254"
mac = "02:00:00:00:02:fe"
"#;

/// (what, ingress, ARP frame, verdict, neighbour to look up, its MAC afterwards)
type ArpCase = (&'static str, u16, Vec<u8>, Verdict, [u8; 4], Option<[u8; 6]>);
/// (what, ingress, frame, verdict, source MAC out, destination MAC out)
type RouteCase = (&'static str, u16, Vec<u8>, Verdict, [u8; 6], [u8; 6]);

fn s(secs: u64) -> Nanos {
    Nanos::from_secs(secs)
}

fn gw() -> Gateway {
    build(CONFIG)
}

/// An ARP frame: op 1 or 2, sender and target, padded to 60 bytes like a real NIC frame.
fn arp(eth_dst: [u8; 6], op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = eth_dst.to_vec();
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

fn request(sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    arp([0xff; 6], 1, sha, spa, [0; 6], tpa)
}

fn udp(eth_src: [u8; 6], eth_dst: [u8; 6], src: [u8; 4], dst: [u8; 4], ttl: u8) -> Vec<u8> {
    udp_to(eth_src, eth_dst, src, dst, 53, ttl)
}

fn udp_to(eth_src: [u8; 6], eth_dst: [u8; 6], src: [u8; 4], dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(eth_src, eth_dst).ipv4(src, dst, ttl).udp(4000, dport);
    let mut out = Vec::with_capacity(b.size(4));
    b.write(&mut out, b"data").unwrap();
    out
}

fn run(gw: &mut Gateway, now: Nanos, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run_on(gw, now, 0, ingress, frame)
}

fn run_on(gw: &mut Gateway, now: Nanos, core: u16, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut f = frame.to_vec();
    let mut meta = parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap();
    let v = gw.process_packet(&Ctx { now, core: CoreId(core) }, &mut f, &mut meta);
    (v, f)
}

fn out(p: u16) -> Verdict {
    Verdict::Out(PortId(p))
}

fn drop(r: DropReason) -> Verdict {
    Verdict::Drop(r)
}

#[test]
fn an_arp_request_for_our_address_becomes_the_reply() {
    let mut gw = gw();
    let req = request(MAC_A, HOST_A, GW_IN);
    let (v, f) = run(&mut gw, s(1), IN, &req);
    assert_eq!(v, out(IN), "the reply leaves by the port the request came in on");
    assert_eq!(f.len(), req.len(), "rewritten in place");
    let fields: &[(&str, std::ops::Range<usize>, &[u8])] = &[
        ("eth dst = requester", 0..6, &MAC_A),
        ("eth src = interface MAC", 6..12, &MAC_IN),
        ("ethertype ARP", 12..14, &[0x08, 0x06]),
        ("hardware type Ethernet", 14..16, &[0, 1]),
        ("protocol type IPv4", 16..18, &[0x08, 0x00]),
        ("hardware length", 18..19, &[6]),
        ("protocol length", 19..20, &[4]),
        ("operation reply", 20..22, &[0, 2]),
        ("sender MAC = interface MAC", 22..28, &MAC_IN),
        ("sender IP = interface address", 28..32, &GW_IN),
        ("target MAC = requester", 32..38, &MAC_A),
        ("target IP = requester", 38..42, &HOST_A),
        ("padding untouched", 42..60, &[0; 18]),
    ];
    for (what, range, want) in fields {
        assert_eq!(f.get(range.clone()), Some(*want), "{what}");
    }
    assert_eq!(gw.neighbour(HOST_A, s(1)), Some(MAC_A), "the requester was learned");
    let c = gw.counters();
    assert_eq!((c.arp_replies, c.learned, c.arp_consumed), (1, 1, 0));
}

#[test]
fn arp_is_learned_only_from_plausible_senders() {
    let cases: &[ArpCase] = &[
        (
            "request for another host: not answered, unknown sender not learned",
            IN,
            request(MAC_B, HOST_B, HOST_A),
            drop(DropReason::ArpConsumed),
            HOST_B,
            None,
        ),
        (
            "request for us: answered, learned",
            IN,
            request(MAC_B, HOST_B, GW_IN),
            out(IN),
            HOST_B,
            Some(MAC_B),
        ),
        (
            "request from off the subnet: answered, not learned",
            IN,
            request(MAC_S, SERVER, GW_IN),
            out(IN),
            SERVER,
            None,
        ),
        (
            "request for the other interface's address: not ours on this port",
            IN,
            request(MAC_A, HOST_A, GW_OUT),
            drop(DropReason::ArpConsumed),
            HOST_A,
            None,
        ),
        (
            "probe from 0.0.0.0: answered, nothing learned",
            IN,
            request(MAC_A, [0; 4], GW_IN),
            out(IN),
            HOST_A,
            None,
        ),
        (
            "reply to us: learned",
            OUT,
            arp(MAC_OUT, 2, MAC_S, SERVER, MAC_OUT, GW_OUT),
            drop(DropReason::ArpConsumed),
            SERVER,
            Some(MAC_S),
        ),
        (
            "gratuitous ARP of a known host updates it (RFC 826 merge)",
            IN,
            request(MAC_A, HOST_B, HOST_B),
            drop(DropReason::ArpConsumed),
            HOST_B,
            Some(MAC_A),
        ),
        (
            "a static neighbour is never overwritten",
            OUT,
            request(MAC_S, ROUTER, GW_OUT),
            out(OUT),
            ROUTER,
            Some(MAC_ROUTER),
        ),
    ];
    let mut gw = gw();
    for (what, ingress, frame, verdict, who, mac) in cases {
        let (v, _) = run(&mut gw, s(1), *ingress, frame);
        assert_eq!(v, *verdict, "{what}");
        assert_eq!(gw.neighbour(*who, s(1)), *mac, "{what}");
    }
    let c = gw.counters();
    assert_eq!((c.arp_replies, c.arp_consumed, c.learned, c.refreshed), (4, 4, 2, 1));
}

#[test]
fn malformed_arp_is_a_counted_drop() {
    let good = request(MAC_A, HOST_A, GW_IN);
    let mut bad = Vec::new();
    for (at, value) in [(14usize, 6u8), (16, 0x86), (21, 9), (18, 8)] {
        let mut f = good.clone();
        f[at] = value;
        bad.push(f);
    }
    let mut gw = gw();
    for (i, f) in bad.iter().enumerate() {
        assert_eq!(run(&mut gw, s(1), IN, f).0, drop(DropReason::BadArp), "case {i}");
    }
    let c = gw.counters();
    assert_eq!((c.bad_arp, c.learned, c.arp_replies), (4, 0, 0));
}

#[test]
fn ipv4_is_routed_with_ttl_and_macs_rewritten() {
    let mut gw = gw();
    run(&mut gw, s(1), IN, &request(MAC_A, HOST_A, GW_IN));
    let cases: &[RouteCase] = &[
        (
            "outside to a learned inside host",
            OUT,
            udp(MAC_ROUTER, MAC_OUT, REMOTE, HOST_A, 64),
            out(IN),
            MAC_IN,
            MAC_A,
        ),
        (
            "inside to the internet: default route via the static router",
            IN,
            udp(MAC_A, MAC_IN, HOST_A, REMOTE, 2),
            out(OUT),
            MAC_OUT,
            MAC_ROUTER,
        ),
    ];
    for (what, ingress, frame, verdict, src, dst) in cases {
        let (v, f) = run(&mut gw, s(2), *ingress, frame);
        assert_eq!(v, *verdict, "{what}");
        assert_eq!(f.get(6..12), Some(&src[..]), "{what}: source MAC");
        assert_eq!(f.get(0..6), Some(&dst[..]), "{what}: destination MAC");
        let (ip, _) = Ipv4Header::from_slice(&f[14..]).unwrap();
        let (orig, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
        assert_eq!(ip.time_to_live, orig.time_to_live - 1, "{what}: TTL");
        assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "{what}: IP checksum");
        assert_eq!(&f[34..], &frame[34..], "{what}: payload untouched");
    }
    assert_eq!(gw.counters().forwarded, 2);
}

#[test]
fn drops_are_counted_under_their_reason() {
    let mut gw = gw();
    let v6 = {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_IN).ipv6([1; 16], [2; 16], 64).udp(1, 2);
        let mut o = Vec::new();
        b.write(&mut o, b"").unwrap();
        o
    };
    let cases: &[(&str, u16, Vec<u8>, DropReason)] = &[
        ("TTL 1 cannot be forwarded", IN, udp(MAC_A, MAC_IN, HOST_A, REMOTE, 1), DropReason::TtlExpired),
        ("not addressed to our MAC", IN, udp(MAC_A, MAC_B, HOST_A, HOST_B, 64), DropReason::NotOurMac),
        ("broadcast frame", IN, udp(MAC_A, [0xff; 6], HOST_A, REMOTE, 64), DropReason::NotOurMac),
        ("to our address", IN, udp(MAC_A, MAC_IN, HOST_A, GW_IN, 64), DropReason::ToGateway),
        ("to our other address", IN, udp(MAC_A, MAC_IN, HOST_A, GW_OUT, 64), DropReason::ToGateway),
        (
            "directed broadcast",
            OUT,
            udp(MAC_S, MAC_OUT, SERVER, [192, 168, 1, 255], 64),
            DropReason::ToGateway,
        ),
        ("multicast", IN, udp(MAC_A, MAC_IN, HOST_A, [224, 0, 0, 251], 64), DropReason::ToGateway),
        ("IPv6", IN, v6, DropReason::Ipv6NotRouted),
    ];
    for (what, ingress, frame, reason) in cases {
        assert_eq!(run(&mut gw, s(1), *ingress, frame).0, drop(*reason), "{what}");
    }
    let c = gw.counters();
    assert_eq!((c.ttl_expired, c.not_our_mac, c.to_gateway, c.not_ipv4, c.forwarded), (1, 2, 4, 1, 0));

    // Without a default route, an off-subnet destination has no route.
    let mut gw: Gateway = build(&CONFIG.replace("default_route = \"198.51.100.254\"", ""));
    let (v, _) = run(&mut gw, s(1), IN, &udp(MAC_A, MAC_IN, HOST_A, REMOTE, 64));
    assert_eq!(v, drop(DropReason::NoRoute));
    assert_eq!(gw.counters().no_route, 1);
}

#[test]
fn an_unknown_next_hop_turns_the_packet_into_an_arp_request() {
    let mut gw = gw();
    let pkt = udp(MAC_A, MAC_IN, HOST_A, SERVER, 64);
    let (v, f) = run(&mut gw, s(1), IN, &pkt);
    assert_eq!(v, out(OUT), "the request leaves by the egress port");
    assert_eq!(f.len(), pkt.len());
    let fields: &[(&str, std::ops::Range<usize>, &[u8])] = &[
        ("eth dst broadcast", 0..6, &[0xff; 6]),
        ("eth src = egress MAC", 6..12, &MAC_OUT),
        ("ethertype ARP", 12..14, &[0x08, 0x06]),
        ("Ethernet/IPv4, 6/4", 14..20, &[0, 1, 8, 0, 6, 4]),
        ("operation request", 20..22, &[0, 1]),
        ("sender MAC", 22..28, &MAC_OUT),
        ("sender IP = egress address", 28..32, &GW_OUT),
        ("target MAC unknown", 32..38, &[0; 6]),
        ("target IP = next hop", 38..42, &SERVER),
    ];
    for (what, range, want) in fields {
        assert_eq!(f.get(range.clone()), Some(*want), "{what}");
    }
    assert!(f[42..].iter().all(|b| *b == 0), "nothing of the packet is left as padding");

    // More packets before the retry interval: dropped, no request storm.
    assert_eq!(run(&mut gw, Nanos::from_millis(1500), IN, &pkt).0, drop(DropReason::NeighbourUnknown));
    // After it, another request.
    assert_eq!(run(&mut gw, Nanos::from_millis(2100), IN, &pkt).0, out(OUT));
    // The server answers; the next packet goes through to it.
    let reply = arp(MAC_OUT, 2, MAC_S, SERVER, MAC_OUT, GW_OUT);
    assert_eq!(run(&mut gw, s(3), OUT, &reply).0, drop(DropReason::ArpConsumed));
    let (v, f) = run(&mut gw, s(3), IN, &pkt);
    assert_eq!(v, out(OUT));
    assert_eq!(f.get(0..6), Some(&MAC_S[..]));
    let c = gw.counters();
    assert_eq!((c.arp_requests, c.neighbour_unknown, c.learned, c.forwarded), (2, 1, 1, 1));

    // A frame too short to become an ARP request is dropped (a 20-byte IP header, nothing else).
    let mut gw: Gateway = build(CONFIG);
    let mut short = udp(MAC_A, MAC_IN, HOST_A, SERVER, 64);
    short.truncate(34);
    short[16..18].copy_from_slice(&20u16.to_be_bytes());
    short[9 + 14] = 253;
    short[24..26].copy_from_slice(&[0, 0]);
    let ck = Ipv4Header::from_slice(&short[14..]).unwrap().0.calc_header_checksum();
    short[24..26].copy_from_slice(&ck.to_be_bytes());
    assert_eq!(run(&mut gw, s(1), IN, &short).0, drop(DropReason::NeighbourUnknown));
}

#[test]
fn the_neighbour_table_is_bounded_and_ages() {
    let mut gw = gw();
    let host = |i: u8| ([192, 168, 1, 100 + i], [2, 0, 0, 0, 0, 100 + i]);
    for i in 0..5 {
        let (ip, mac) = host(i);
        // Always answered, whether or not there is room to remember the sender.
        assert_eq!(run(&mut gw, s(1), IN, &request(mac, ip, GW_IN)).0, out(IN));
    }
    let c = gw.counters();
    assert_eq!((c.learned, c.table_full), (4, 1));
    assert_eq!(gw.neighbour(host(4).0, s(1)), None);
    // Entries unused for the timeout stop resolving and make room.
    assert_eq!(gw.neighbour(host(0).0, s(61)), None);
    let (ip, mac) = host(4);
    run(&mut gw, s(61), IN, &request(mac, ip, GW_IN));
    assert_eq!(gw.neighbour(ip, s(61)), Some(mac));
    assert_eq!(gw.counters().learned, 5);
}

fn two_cores() -> Vec<Gateway> {
    let cfg: GatewayConfig = toml::from_str(CONFIG).unwrap();
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    (0..2u16)
        .map(|core| {
            let mut arena = Arena::new(CoreId(core), 1 << 20, Backing::Normal);
            let mut rt = InitCtx {
                instance: crate::ids::Instance::default(),
                name: "gw",
                core: CoreId(core),
                cores: 2,
                ports: &ports,
                arena: &mut arena,
                shared: &mut shared,
            };
            Gateway::init(&cfg, &mut rt).unwrap()
        })
        .collect()
}

#[test]
fn a_neighbour_learned_on_one_core_is_used_at_once_on_the_other() {
    let mut cores = two_cores();
    run_on(&mut cores[0], s(1), 0, IN, &request(MAC_A, HOST_A, GW_IN));
    // Core 1 never saw HOST_A's ARP and had no timed merge: its miss merges the shared table.
    let pkt = udp(MAC_ROUTER, MAC_OUT, REMOTE, HOST_A, 64);
    let (v, f) = run_on(&mut cores[1], s(1), 1, OUT, &pkt);
    assert_eq!((v, f.get(0..6)), (out(IN), Some(&MAC_A[..])));
    let c = cores[1].counters();
    assert_eq!((c.synced, c.forwarded, c.arp_requests), (1, 1, 0));
    assert_eq!(cores[0].counters().synced, 0, "core 0 learned it itself");
}

#[test]
fn misses_merge_at_most_every_catch_up_interval_and_timed_merges_go_on() {
    let mut cores = two_cores();
    let ms = Nanos::from_millis;
    let pkt = udp(MAC_ROUTER, MAC_OUT, REMOTE, HOST_A, 64);
    // Unknown everywhere: merged (nothing), then asked for.
    let (v, f) = run_on(&mut cores[1], ms(1000), 1, OUT, &pkt);
    assert_eq!((v, f.get(12..14)), (out(IN), Some(&[0x08, 0x06][..])));
    // Learned on core 0 (from a request to the gateway, not the answer to core 1's request).
    run_on(&mut cores[0], ms(1001), 0, IN, &request(MAC_A, HOST_A, GW_IN));
    // Within CATCH_UP of the last forced merge, core 1 does not look again.
    let early = Nanos(ms(1000).0 + CATCH_UP.0 - 1);
    assert_eq!(run_on(&mut cores[1], early, 1, OUT, &pkt).0, drop(DropReason::NeighbourUnknown));
    let (v, f) = run_on(&mut cores[1], Nanos(ms(1000).0 + CATCH_UP.0), 1, OUT, &pkt);
    assert_eq!((v, f.get(0..6)), (out(IN), Some(&MAC_A[..])));
    // A neighbour learned later still arrives with the timed merge, with no miss.
    run_on(&mut cores[0], ms(2000), 0, IN, &request(MAC_B, HOST_B, GW_IN));
    cores[1].housekeeping(&Ctx { now: ms(3000), core: CoreId(1) });
    assert_eq!(cores[1].neighbour(HOST_B, ms(3000)), Some(MAC_B));
    let c = cores[1].counters();
    assert_eq!((c.synced, c.forwarded, c.arp_requests, c.neighbour_unknown), (2, 1, 1, 1));
}

#[test]
fn bad_configurations_say_what_is_wrong() {
    let iface = |port: &str, addr: &str, mac: &str, extra: &str| {
        format!("[[interface]]\nport = \"{port}\"\naddress = \"{addr}\"\nmac = \"{mac}\"\n{extra}\n")
    };
    let ok_in = iface("inside", "192.168.1.1/24", "02:00:00:00:01:01", "");
    let cases: &[(String, &str)] = &[
        (iface("lan", "192.168.1.1/24", "02:00:00:00:01:01", ""), "no port named `lan`"),
        (iface("inside", "192.168.1.1/24", "01:00:5e:00:00:01", ""), "not a unicast MAC"),
        (iface("inside", "192.168.1.1/24", "02:00:00:00:01", ""), "expected a MAC address"),
        (iface("inside", "192.168.1.1", "02:00:00:00:01:01", ""), "expected an interface address"),
        (iface("inside", "192.168.1.0/24", "02:00:00:00:01:01", ""), "network or broadcast"),
        (format!("{ok_in}{}", iface("outside", "192.168.1.2/16", "02:00:00:00:02:01", "")), "overlaps"),
        (
            format!(
                "{}{}",
                iface("inside", "192.168.1.1/24", "02:00:00:00:01:01", "default_route = \"192.168.1.254\""),
                iface("outside", "10.0.0.1/24", "02:00:00:00:02:01", "default_route = \"10.0.0.254\"")
            ),
            "only one interface",
        ),
        (
            iface("inside", "192.168.1.1/24", "02:00:00:00:01:01", "default_route = \"10.0.0.1\""),
            "not another host",
        ),
        (
            format!("{ok_in}[[neighbour]]\naddress = \"10.9.9.9\"\nmac = \"02:00:00:00:00:09\"\n"),
            "on no interface's subnet",
        ),
        (format!("neighbour_capacity = 0\n{ok_in}"), "at least 1"),
    ];
    for (toml_text, want) in cases {
        let err = match toml::from_str::<GatewayConfig>(toml_text) {
            Err(e) => e.to_string(),
            Ok(cfg) => {
                let mut arena = Arena::new(CoreId(0), 1 << 20, Backing::Normal);
                let mut shared = SharedRegistry::default();
                let ports = ["inside".to_string(), "outside".to_string()];
                let mut rt = InitCtx {
                    instance: crate::ids::Instance::default(),
                    name: "gw",
                    core: CoreId(0),
                    cores: 1,
                    ports: &ports,
                    arena: &mut arena,
                    shared: &mut shared,
                };
                Gateway::init(&cfg, &mut rt).unwrap_err().to_string()
            }
        };
        assert!(err.contains(want), "{toml_text}: got `{err}`, want `{want}`");
    }
}

#[test]
fn behind_the_nat_a_hairpinned_packet_is_routed_to_the_inside_host() {
    use crate::functions::nat::Nat;
    let mut nat: Nat = build(
        "inside = \"inside\"\npublic = \"198.51.100.1\"\nhairpin = \"route\"\n\
         [[forward]]\nproto = \"udp\"\npublic_port = 7000\nto = \"192.168.1.11:7000\"\n",
    );
    let mut gw = gw();
    for (mac, ip) in [(MAC_A, HOST_A), (MAC_B, HOST_B)] {
        run(&mut gw, s(1), IN, &request(mac, ip, GW_IN));
    }
    // A sends to B's port-forward on the public address, through `steps = ["nat", "gw"]`.
    let mut f = udp_to(MAC_A, MAC_IN, HOST_A, GW_OUT, 7000, 64);
    let mut meta = parse(&f, PortId(IN), &ParsePolicy::default()).unwrap();
    let ctx = Ctx { now: s(2), core: CoreId(0) };
    assert_eq!(nat.process_packet(&ctx, &mut f, &mut meta), Verdict::Continue);
    assert_eq!(gw.process_packet(&ctx, &mut f, &mut meta), out(IN));
    assert_eq!((f.get(0..6), f.get(6..12)), (Some(&MAC_B[..]), Some(&MAC_IN[..])), "to B, from the gateway");
    let (ip, _) = Ipv4Header::from_slice(&f[14..]).unwrap();
    assert_eq!(
        (ip.source, ip.destination, ip.time_to_live),
        (GW_OUT, HOST_B, 63),
        "B sees A's public address"
    );
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
}
