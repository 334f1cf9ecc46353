use etherparse::{Ipv4Header, PacketBuilder, SlicedPacket};

use super::Policer;
use crate::drop::DropReason;
use crate::ids::{CoreId, PortId};
use crate::nf::Ctx;
use crate::nf::{NetworkFunction, NfError, Report, Verdict};
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::ipv6::Ipv6Packet;
use crate::packet::{parse, ParsePolicy};
use crate::testutil::{build, run, udp4};
use crate::time::Nanos;

const CFG: &str = r#"
[[class]]
name = "voice"
cir = 1000
cbs = 300
ebs = 200
unit = "packets"
green = { kind = "pass" }
yellow = { kind = "remark", dscp = 10 }
red = { kind = "drop" }

[[rule]]
class = "voice"
proto = 17
dport = 5060
"#;

pub(super) fn counters(p: &Policer) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    p.report(&mut r);
    r.counters
}

/// Counters in report order: green, yellow, red, remarked, dropped, unclassified, buckets_new,
/// table_full.
pub(super) fn expect(v: [u64; 8]) -> Vec<(&'static str, u64)> {
    let names =
        ["green", "yellow", "red", "remarked", "dropped", "unclassified", "buckets_new", "table_full"];
    names.into_iter().zip(v).collect()
}

/// Runs `frame` and returns the verdict and the frame as it left.
pub(super) fn run_out(p: &mut Policer, now: Nanos, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut g = frame.to_vec();
    let mut meta = parse(&g, PortId(ingress), &ParsePolicy::default()).unwrap();
    let v = p.process_packet(&Ctx { now, core: CoreId(0) }, &mut g, &mut meta);
    (v, g)
}

/// An IPv4 frame with its DSCP set (header checksum fixed).
pub(super) fn with_dscp4(mut f: Vec<u8>, dscp: u8) -> Vec<u8> {
    Ipv4Packet::new_checked(&mut f[14..]).unwrap().set_dscp(dscp);
    f
}

fn udp6(src: [u8; 16], dst: [u8; 16], dport: u16, dscp: u8, ecn: u8) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(src, dst, 64).udp(4000, dport);
    let mut f = Vec::new();
    b.write(&mut f, b"payload").unwrap();
    let mut ip = Ipv6Packet::new_checked(&mut f[14..]).unwrap();
    ip.set_dscp(dscp);
    ip.set_ecn(ecn);
    f
}

fn dscp4(f: &[u8]) -> u8 {
    Ipv4Packet::new_checked(&f[14..]).unwrap().dscp()
}

#[test]
fn srtcm_actions_and_exact_counters() {
    let mut p: Policer = build(CFG);
    let f = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 5060, b"x");
    let v: Vec<_> = (0..501).map(|_| run(&mut p, Nanos(0), 0, &f)).collect();
    assert!(v[..300].iter().all(|v| *v == Verdict::Continue));
    assert!(v[300..500].iter().all(|v| *v == Verdict::Continue));
    assert_eq!(v[500], Verdict::Drop(DropReason::Policed));
    // Unclassified traffic passes unmetered.
    assert_eq!(run(&mut p, Nanos(0), 0, &udp4([10, 0, 0, 1], 1, [10, 0, 0, 2], 53, b"x")), Verdict::Continue);
    assert_eq!(counters(&p), expect([300, 200, 1, 200, 1, 1, 0, 0]));
}

#[test]
fn trtcm_packet_colours_follow_rfc_2698() {
    // PIR 20 pkt/s, PBS 4, CIR 10 pkt/s, CBS 2. Green passes untouched, yellow is remarked
    // to AF12 (12), red dropped. Hand-derived from RFC 2698 §3 (buckets start full):
    //   t=0:      Tp 4 Tc 2 -> G(3,1) G(2,0) Y(1,0) Y(0,0) R
    //   t=100 ms: Tp +2 = 2, Tc +1 = 1 -> G(1,0) Y(0,0) R
    //   t=1 s:    Tp +18 capped 4, Tc +9 capped 2 -> G G Y Y R
    let cfg = r#"
[[class]]
name = "af1"
unit = "packets"
pir = 20
pbs = 4
cir = 10
cbs = 2
green = { kind = "pass" }
yellow = { kind = "remark", dscp = 12 }
red = { kind = "drop" }

[[rule]]
class = "af1"
proto = "udp"
"#;
    let mut p: Policer = build(cfg);
    let f = with_dscp4(udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, b"x"), 10);
    const G: (Verdict, u8) = (Verdict::Continue, 10);
    const Y: (Verdict, u8) = (Verdict::Continue, 12);
    const R: (Verdict, u8) = (Verdict::Drop(DropReason::Policed), 10);
    let steps: &[(u64, &[(Verdict, u8)])] =
        &[(0, &[G, G, Y, Y, R]), (100_000_000, &[G, Y, R]), (1_000_000_000, &[G, G, Y, Y, R])];
    for (t, want) in steps {
        for (k, w) in want.iter().enumerate() {
            let (v, out) = run_out(&mut p, Nanos(*t), 0, &f);
            assert_eq!((v, dscp4(&out)), *w, "t={t} packet {k}");
            let s = SlicedPacket::from_ethernet(&out).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!("not ipv4") };
            let h: Ipv4Header = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum());
        }
    }
    // 5 green, 5 yellow (all remarked), 3 red (all dropped).
    assert_eq!(counters(&p), expect([5, 5, 3, 5, 3, 0, 0, 0]));
}

#[test]
fn remark_rewrites_dscp_with_valid_checksum() {
    let mut p: Policer = build(CFG);
    let f = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 5060, b"x");
    for _ in 0..300 {
        run(&mut p, Nanos(0), 0, &f);
    }
    let (v, g) = run_out(&mut p, Nanos(0), 0, &f);
    assert_eq!(v, Verdict::Continue);
    let s = SlicedPacket::from_ethernet(&g).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!("not ipv4") };
    let h: Ipv4Header = ip.header().to_header();
    assert_eq!(h.dscp.value(), 10);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn ipv6_remark_sets_traffic_class_and_keeps_udp_checksum() {
    let cfg = r#"
[[class]]
name = "v6"
unit = "packets"
cir = 0
cbs = 0
green = { kind = "pass" }
yellow = { kind = "pass" }
red = { kind = "remark", dscp = 8 }

[[rule]]
class = "v6"
dst = "2001:db8::/32"
"#;
    let mut p: Policer = build(cfg);
    let (src, dst) = ([0xfd; 16], "2001:db8::7".parse::<std::net::Ipv6Addr>().unwrap().octets());
    let f = udp6(src, dst, 53, 46, 1);
    let (v, out) = run_out(&mut p, Nanos(0), 0, &f);
    assert_eq!(v, Verdict::Continue);
    let ip = Ipv6Packet::new_checked(&out[14..]).unwrap();
    assert_eq!((ip.dscp(), ip.ecn()), (8, 1), "DSCP remarked, ECN kept");
    // Only the traffic-class bits changed, and the UDP checksum (whose pseudo-header does not
    // cover the traffic class) still verifies.
    let diff: Vec<usize> = (0..f.len()).filter(|i| f[*i] != out[*i]).collect();
    assert_eq!(diff, [14, 15]);
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let (Some(etherparse::NetSlice::Ipv6(ip6)), Some(etherparse::TransportSlice::Udp(udp))) =
        (s.net, s.transport)
    else {
        panic!("not udp6")
    };
    let h = ip6.header();
    let want = udp.to_header().calc_checksum_ipv6_raw(h.source(), h.destination(), udp.payload());
    assert_eq!(want.ok(), Some(udp.checksum()));
    assert_ne!(udp.checksum(), 0);
    // A v6 packet outside the prefix is unclassified.
    let other = udp6(src, [0x20; 16], 53, 46, 1);
    assert_eq!(run_out(&mut p, Nanos(0), 0, &other), (Verdict::Continue, other.clone()));
    assert_eq!(counters(&p), expect([0, 0, 1, 1, 0, 1, 0, 0]));
}

#[test]
fn classifier_first_match_on_prefixes_ports_dscp_ingress() {
    // Each class drops everything it sees (cbs 0) so the drop counter per class is visible
    // through which rule matched: we check the matched class by its remark DSCP instead.
    let mut cfg = String::new();
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        cfg += &format!(
            "[[class]]\nname = \"{name}\"\ncir = 0\ncbs = 0\ngreen = {{ kind = \"pass\" }}\nyellow = {{ kind = \"pass\" }}\nred = {{ kind = \"remark\", dscp = {} }}\n",
            i + 1
        );
    }
    cfg += r#"
[[rule]]
class = "a"
src = ["10.1.0.0/16", "10.2.0.0/16"]
dport = "1000-1999"
[[rule]]
class = "b"
dst = "192.168.0.0/24"
sport = 53
[[rule]]
class = "c"
dscp = 46
[[rule]]
class = "d"
ingress = "outside"
proto = "tcp"
[[rule]]
class = "e"
proto = "udp"
src = "172.16.0.0/12"
"#;
    let mut p: Policer = build(&cfg);
    // (frame, ingress, expected remark DSCP = class index + 1, or 0 for unclassified).
    let cases: Vec<(Vec<u8>, u16, u8)> = vec![
        (udp4([10, 1, 2, 3], 9, [1, 1, 1, 1], 1500, b""), 0, 1),
        (udp4([10, 2, 2, 3], 9, [1, 1, 1, 1], 1999, b""), 0, 1),
        (udp4([10, 3, 2, 3], 9, [1, 1, 1, 1], 1500, b""), 0, 0), // src outside both prefixes
        (udp4([10, 1, 2, 3], 9, [1, 1, 1, 1], 2000, b""), 0, 0), // dport outside range
        (udp4([10, 1, 2, 3], 53, [192, 168, 0, 9], 2000, b""), 0, 2),
        (udp4([10, 1, 2, 3], 54, [192, 168, 0, 9], 2000, b""), 0, 0),
        (udp4([10, 1, 2, 3], 53, [192, 168, 1, 9], 2000, b""), 0, 0),
        (with_dscp4(udp4([9, 9, 9, 9], 1, [1, 1, 1, 1], 1, b""), 46), 0, 3),
        (with_dscp4(udp4([10, 1, 0, 1], 1, [1, 1, 1, 1], 1500, b""), 46), 0, 1), // first match
        (crate::testutil::tcp4([9, 9, 9, 9], 1, [1, 1, 1, 1], 1, 0x02), 1, 4),
        (crate::testutil::tcp4([9, 9, 9, 9], 1, [1, 1, 1, 1], 1, 0x02), 0, 0), // wrong ingress
        (udp4([172, 31, 255, 255], 1, [1, 1, 1, 1], 1, b""), 0, 5),
        (udp4([172, 32, 0, 0], 1, [1, 1, 1, 1], 1, b""), 0, 0),
    ];
    let mut classified = 0;
    for (i, (f, ingress, want)) in cases.iter().enumerate() {
        let (v, out) = run_out(&mut p, Nanos(0), *ingress, f);
        assert_eq!(v, Verdict::Continue, "case {i}");
        if *want == 0 {
            assert_eq!(&out, f, "case {i}: unclassified passes untouched");
        } else {
            assert_eq!(dscp4(&out), *want, "case {i}");
            classified += 1;
        }
    }
    let unclassified = cases.len() as u64 - classified;
    assert_eq!(counters(&p), expect([0, 0, classified, classified, 0, unclassified, 0, 0]));
}

#[test]
fn colour_aware_af_precolour_is_never_improved() {
    // srTCM with plenty of tokens: colour-blind every packet would be green. Colour-aware with
    // the default AF map: AF11 (10) green, AF12 (12) yellow, AF13 (14) red, BE (0) green.
    // Actions remark each colour to a marker so the colour is visible in the packet.
    let cfg = r#"
[[class]]
name = "af"
unit = "packets"
cir = 1000
cbs = 100
ebs = 100
aware = true
green = { kind = "remark", dscp = 1 }
yellow = { kind = "remark", dscp = 2 }
red = { kind = "remark", dscp = 3 }

[[rule]]
class = "af"

[[class]]
name = "lists"
unit = "packets"
cir = 0
cbs = 1
ebs = 1
aware = true
green_dscp = [0]
yellow_dscp = [46]
red_dscp = [8]
green = { kind = "remark", dscp = 1 }
yellow = { kind = "remark", dscp = 2 }
red = { kind = "remark", dscp = 3 }
"#;
    let mut p: Policer = build(cfg);
    let cases: &[(u8, u8)] = &[(10, 1), (12, 2), (14, 3), (0, 1), (34, 1), (36, 2), (38, 3), (46, 1)];
    for (dscp, want) in cases {
        let f = with_dscp4(udp4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, b""), *dscp);
        let (v, out) = run_out(&mut p, Nanos(0), 0, &f);
        assert_eq!((v, dscp4(&out)), (Verdict::Continue, *want), "dscp {dscp}");
    }
    assert_eq!(counters(&p), expect([4, 2, 2, 8, 0, 0, 0, 0]));

    // Explicit lists, CBS 1 / EBS 1 and no refill: green 0 takes C; yellow 46 takes E; a second
    // green finds C empty and E empty: red; red 8 is red whatever the tokens.
    let mut p: Policer = build(&cfg.replace("[[rule]]\nclass = \"af\"", "[[rule]]\nclass = \"lists\""));
    for (dscp, want) in [(0u8, 1u8), (46, 2), (0, 3), (8, 3)] {
        let f = with_dscp4(udp4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, b""), dscp);
        assert_eq!(dscp4(&run_out(&mut p, Nanos(0), 0, &f).1), want, "dscp {dscp}");
    }
}

fn init_err(cfg: &str) -> String {
    let cfg: super::PolicerConfig = match toml::from_str(cfg) {
        Ok(c) => c,
        Err(e) => return format!("parse: {e}"),
    };
    let mut arena = crate::state::Arena::new(CoreId(0), 1 << 20, crate::state::Backing::Normal);
    let mut shared = crate::nf::SharedRegistry::default();
    let ports = ["inside".to_string()];
    let mut rt = crate::nf::InitCtx {
        instance: crate::ids::Instance::default(),
        name: "t",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    match Policer::init(&cfg, &mut rt) {
        Ok(_) => "ok".to_string(),
        Err(NfError::Param { key, .. }) => key,
        Err(e) => format!("other: {e}"),
    }
}

#[test]
fn bad_config_is_refused_with_key() {
    let class =
        "[[class]]\nname='a'\ncir=10\ncbs=1\ngreen={kind='pass'}\nyellow={kind='pass'}\nred={kind='pass'}\n";
    let cases: &[(&str, &str)] = &[
        ("pir=0\npbs=1\n", "class[0].pir"),
        ("pir=20\n", "class[0]"),
        ("pir=20\npbs=1\nebs=5\n", "class[0].ebs"),
        ("per='flow'\nflows=0\n", "class[0].flows"),
        ("per='flow'\nidle_timeout=0\n", "class[0].idle_timeout"),
        ("red_dscp=[8]\n", "class[0].aware"),
        ("aware=true\nred_dscp=[64]\n", "class[0].red_dscp"),
        ("aware=true\nred_dscp=[8]\nyellow_dscp=[8]\n", "class[0].red_dscp"),
        ("per='flow'\nflows=16\non_full='evict'\n[[rule]]\nclass='a'\ningress='inside'\n", "ok"),
        ("[[rule]]\nclass='b'\n", "rule[0].class"),
        ("[[rule]]\nclass='a'\ndscp=64\n", "rule[0].dscp"),
        ("[[rule]]\nclass='a'\ningress='nowhere'\n", "rule[0].ingress"),
        ("[[class]]\nname='a'\ncir=1\ncbs=1\ngreen={kind='pass'}\nyellow={kind='pass'}\nred={kind='pass'}\n", "class[1].name"),
    ];
    for (extra, want) in cases {
        assert_eq!(init_err(&format!("{class}{extra}")), *want, "{extra}");
    }
    let bad_remark = class.replace("red={kind='pass'}", "red={kind='remark', dscp=64}");
    assert_eq!(init_err(&bad_remark), "class[0].red.dscp");
    for typo in ["per='flows'\n", "on_full='lru'\n", "colour_aware=true\n"] {
        assert!(init_err(&format!("{class}{typo}")).starts_with("parse:"), "{typo}");
    }
    let typo_in_action = class.replace("red={kind='pass'}", "red={kind='remark', dscp=1, ecn=1}");
    assert!(init_err(&typo_in_action).starts_with("parse:"));
}

/// Micro-measure (not a benchmark assertion): `cargo test -p nflet-nfs --release policer_ns -- --ignored --nocapture`.
#[test]
#[ignore]
fn policer_ns_per_packet() {
    let mut p: Policer = build(CFG);
    let f = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 5060, b"x");
    let mut g = f.clone();
    let mut meta = parse(&g, PortId(0), &ParsePolicy::default()).unwrap();
    let n = 5_000_000u64;
    let start = std::time::Instant::now();
    for i in 0..n {
        let ctx = Ctx { now: Nanos(i * 1000), core: CoreId(0) };
        std::hint::black_box(p.process_packet(&ctx, &mut g, &mut meta));
    }
    println!("policer: {:.1} ns/packet", start.elapsed().as_nanos() as f64 / n as f64);
}
