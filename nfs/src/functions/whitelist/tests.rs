//! Whitelister behaviour, table-driven, with exact counter checks.

use etherparse::PacketBuilder;

use super::*;
use crate::drop::DropReason;
use crate::ids::CoreId;
use crate::packet::{parse, ParsePolicy};
use crate::testutil::{arp, build, icmp_echo4, run, tcp4, udp4, MAC_A, MAC_B};
use crate::time::Nanos;

const IN: u16 = 0;
const OUT: u16 = 1;
const VICTIM: [u8; 4] = [10, 0, 0, 5];
const RESOLVER: [u8; 4] = [192, 0, 2, 53];
const CFG: &str = r#"outside = "outside""#;
const PASS: Verdict = Verdict::Continue;
const UNSOLICITED: Verdict = Verdict::Drop(DropReason::Unsolicited);

fn counters(nf: &Whitelist) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    nf.report(&mut r);
    r.counters
}

/// Counter deltas between two reports: only the names that changed, in report order.
fn delta(before: &[(&'static str, u64)], nf: &Whitelist) -> Vec<(&'static str, u64)> {
    counters(nf)
        .into_iter()
        .zip(before.iter())
        .filter(|((_, a), (_, b))| a != b)
        .map(|((n, a), (_, b))| (n, a - b))
        .collect()
}

fn s(t: u64) -> Nanos {
    Nanos::from_secs(t)
}

/// `frame` turned into a later fragment (offset 1480 bytes, no more fragments), checksum fixed.
fn later_fragment(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[14 + 6] = 0x00;
    f[14 + 7] = 185;
    f[14 + 10] = 0;
    f[14 + 11] = 0;
    let sum: u32 = f[14..34].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let c = !(((folded & 0xffff) + (folded >> 16)) as u16);
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    f
}

fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(src, dst, 64).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(4));
    b.write(&mut out, b"resp").unwrap();
    out
}

#[test]
fn reflection_attack_is_dropped_while_solicited_responses_pass() {
    let mut nf: Whitelist = build(CFG);
    let before = counters(&nf);
    // The victim's own DNS query and its answer.
    assert_eq!(run(&mut nf, s(0), IN, &udp4(VICTIM, 40000, RESOLVER, 53, b"q")), PASS);
    assert_eq!(run(&mut nf, s(0), OUT, &udp4(RESOLVER, 53, VICTIM, 40000, b"answer")), PASS);
    // The attack: 3 x 300 responses from 100 reflectors each, nobody asked.
    for (sport, n) in [(53u16, 300u32), (123, 300), (11211, 300)] {
        for i in 0..n {
            let reflector = [203, 0, 113, (i % 100) as u8];
            let dport = 1024 + (i % 5000) as u16;
            let f = udp4(reflector, sport, VICTIM, dport, &[0u8; 400]);
            assert_eq!(run(&mut nf, s(1), OUT, &f), UNSOLICITED, "sport {sport} #{i}");
        }
    }
    // The resolver's answers keep passing during the attack.
    for _ in 0..10 {
        assert_eq!(run(&mut nf, s(2), OUT, &udp4(RESOLVER, 53, VICTIM, 40000, b"answer")), PASS);
    }
    assert_eq!(
        delta(&before, &nf),
        [
            ("outbound", 1),
            ("flows_opened", 1),
            ("solicited", 11),
            ("unsolicited_dns", 300),
            ("unsolicited_ntp", 300),
            ("unsolicited_memcached", 300),
        ]
    );
    assert_eq!(nf.flows(s(2)), 1);
}

#[test]
fn only_the_exact_reverse_flow_is_admitted() {
    let mut nf: Whitelist = build(CFG);
    run(&mut nf, s(0), IN, &udp4(VICTIM, 40000, RESOLVER, 53, b"q"));
    let other = [192, 0, 2, 54];
    let cases: &[(&str, Vec<u8>, Verdict)] = &[
        ("the answer", udp4(RESOLVER, 53, VICTIM, 40000, b"a"), PASS),
        ("another inside port", udp4(RESOLVER, 53, VICTIM, 40001, b"a"), UNSOLICITED),
        ("another remote port", udp4(RESOLVER, 5353, VICTIM, 40000, b"a"), UNSOLICITED),
        ("another remote host", udp4(other, 53, VICTIM, 40000, b"a"), UNSOLICITED),
        ("another inside host", udp4(RESOLVER, 53, [10, 0, 0, 6], 40000, b"a"), UNSOLICITED),
        // The request's own 5-tuple arriving from outside (spoofed inside source).
        ("spoofed request", udp4(VICTIM, 40000, RESOLVER, 53, b"q"), UNSOLICITED),
    ];
    for (what, f, want) in cases {
        assert_eq!(run(&mut nf, s(1), OUT, f), *want, "{what}");
    }
    let c = counters(&nf);
    let get = |n: &str| c.iter().find(|(k, _)| *k == n).map(|(_, v)| *v).unwrap();
    assert_eq!((get("solicited"), get("unsolicited_dns"), get("unsolicited_other")), (1, 3, 2));
}

#[test]
fn requests_expire_on_the_clock_and_responses_refresh_only_if_asked() {
    let req = udp4(VICTIM, 40000, RESOLVER, 123, b"q");
    let resp = udp4(RESOLVER, 123, VICTIM, 40000, b"a");
    // (inbound_refreshes, [(time s, verdict of a response at that time)])
    let cases: &[(bool, &[(u64, Verdict)])] = &[
        (false, &[(60, PASS), (119, PASS), (120, UNSOLICITED), (200, UNSOLICITED)]),
        (true, &[(100, PASS), (219, PASS), (338, PASS), (459, UNSOLICITED)]),
    ];
    for (refresh, steps) in cases {
        let mut nf: Whitelist = build(&format!("{CFG}\ninbound_refreshes = {refresh}"));
        assert_eq!(run(&mut nf, s(0), IN, &req), PASS);
        for (t, want) in *steps {
            assert_eq!(run(&mut nf, s(*t), OUT, &resp), *want, "refresh={refresh} t={t}");
        }
        // A new request reopens the flow.
        assert_eq!(run(&mut nf, s(500), IN, &req), PASS);
        assert_eq!(run(&mut nf, s(501), OUT, &resp), PASS);
    }
}

#[test]
fn housekeeping_reclaims_expired_requests() {
    let mut nf: Whitelist = build(&format!("{CFG}\nidle_timeout_s = 10\nflows = 100"));
    for p in 0..50 {
        run(&mut nf, s(0), IN, &udp4(VICTIM, 40000 + p, RESOLVER, 53, b"q"));
    }
    assert_eq!(nf.flows(s(9)), 50);
    let ctx = Ctx { now: s(10), core: CoreId(0) };
    for _ in 0..10 {
        nf.housekeeping(&ctx);
    }
    let mut r = Report::default();
    nf.report(&mut r);
    let (_, _, stats) = &r.tables[0];
    assert_eq!((stats.len, stats.inserts, stats.expired), (0, 50, 50));
}

#[test]
fn allow_lists_admit_unsolicited_traffic() {
    let cfg = r#"
outside = "outside"
allow_dports = ["5000-5010", 51820]
allow_src = "198.51.100.0/24"
allow_dst = ["10.9.0.0/16"]
"#;
    let mut nf: Whitelist = build(cfg);
    let cases: &[(&str, Vec<u8>, Verdict)] = &[
        ("dport in range", udp4(RESOLVER, 53, VICTIM, 5005, b"x"), PASS),
        ("dport single", udp4(RESOLVER, 53, VICTIM, 51820, b"x"), PASS),
        ("dport outside range", udp4(RESOLVER, 53, VICTIM, 5011, b"x"), UNSOLICITED),
        ("trusted source", udp4([198, 51, 100, 7], 123, VICTIM, 999, b"x"), PASS),
        ("untrusted source", udp4([198, 51, 101, 7], 123, VICTIM, 999, b"x"), UNSOLICITED),
        ("open destination", udp4(RESOLVER, 11211, [10, 9, 3, 3], 999, b"x"), PASS),
    ];
    for (what, f, want) in cases {
        assert_eq!(run(&mut nf, s(0), OUT, f), *want, "{what}");
    }
    let c = counters(&nf);
    let get = |n: &str| c.iter().find(|(k, _)| *k == n).map(|(_, v)| *v).unwrap();
    assert_eq!((get("allow_listed"), get("unsolicited_dns"), get("unsolicited_ntp")), (4, 1, 1));
}

#[test]
fn later_fragments_follow_the_fragment_policy() {
    let inbound = later_fragment(&udp4(RESOLVER, 53, VICTIM, 40000, &[0u8; 64]));
    let outbound = later_fragment(&udp4(VICTIM, 40000, RESOLVER, 53, &[0u8; 64]));
    for (allow, want) in [(false, Verdict::Drop(DropReason::Fragment)), (true, PASS)] {
        let mut nf: Whitelist = build(&format!("{CFG}\nallow_later_fragments = {allow}"));
        let before = counters(&nf);
        assert_eq!(run(&mut nf, s(0), OUT, &inbound), want, "allow={allow}");
        assert_eq!(run(&mut nf, s(0), IN, &outbound), PASS);
        let name = if allow { "fragments_passed" } else { "fragments_dropped" };
        assert_eq!(delta(&before, &nf), [("outbound", 1), (name, 1)]);
    }
}

#[test]
fn other_traffic_passes_and_nothing_panics() {
    let mut nf: Whitelist = build(CFG);
    let before = counters(&nf);
    let frames = [tcp4(RESOLVER, 53, VICTIM, 40000, 0x02), icmp_echo4(RESOLVER, VICTIM, 1, 1), arp()];
    for f in &frames {
        assert_eq!(run(&mut nf, s(0), OUT, f), PASS);
        assert_eq!(run(&mut nf, s(0), IN, f), PASS);
    }
    // Metadata that does not describe the (empty) frame: the NF reads only metadata.
    let ctx = Ctx { now: s(0), core: CoreId(0) };
    for meta in [
        Meta::default(),
        Meta { proto: IpProtocol::Udp, ingress: PortId(OUT), ..Meta::default() },
        Meta { proto: IpProtocol::Udp, l3_kind: L3Kind::Arp, ..Meta::default() },
    ] {
        let mut m = meta;
        let _ = nf.process_packet(&ctx, &mut [], &mut m);
    }
    // Short frames never reach an NF: the ingress parser drops them with a reason.
    let full = udp4(RESOLVER, 53, VICTIM, 40000, b"a");
    for len in [0, 13, 20, 33, 41] {
        let got = parse(&full[..len], PortId(OUT), &ParsePolicy::default());
        assert!(got.is_err(), "len {len}");
    }
    assert_eq!(delta(&before, &nf), [("unsolicited_other", 1), ("not_udp", 8)]);
}

#[test]
fn inside_mode_treats_every_other_port_as_outside() {
    let mut nf: Whitelist = build(r#"inside = "inside""#);
    assert_eq!(run(&mut nf, s(0), OUT, &udp4(RESOLVER, 53, VICTIM, 40000, b"a")), UNSOLICITED);
    assert_eq!(run(&mut nf, s(0), IN, &udp4(VICTIM, 40000, RESOLVER, 53, b"q")), PASS);
    assert_eq!(run(&mut nf, s(0), OUT, &udp4(RESOLVER, 53, VICTIM, 40000, b"a")), PASS);
}

#[test]
fn ipv6_responses_need_a_request_too() {
    let mut nf: Whitelist = build(CFG);
    let inside: [u8; 16] = "2001:db8:1::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let server: [u8; 16] = "2001:db8:ffff::53".parse::<std::net::Ipv6Addr>().unwrap().octets();
    assert_eq!(run(&mut nf, s(0), OUT, &udp6(server, 53, inside, 40000)), UNSOLICITED);
    assert_eq!(run(&mut nf, s(0), IN, &udp6(inside, 40000, server, 53)), PASS);
    assert_eq!(run(&mut nf, s(0), OUT, &udp6(server, 53, inside, 40000)), PASS);
}

#[test]
fn a_full_table_refuses_or_evicts_as_configured() {
    let refuse = format!("{CFG}\nflows = 2\nfull_policy = \"refuse\"");
    let mut nf: Whitelist = build(&refuse);
    for p in 0..2 {
        assert_eq!(run(&mut nf, s(0), IN, &udp4(VICTIM, 40000 + p, RESOLVER, 53, b"q")), PASS);
    }
    let third = udp4(VICTIM, 40002, RESOLVER, 53, b"q");
    assert_eq!(run(&mut nf, s(0), IN, &third), Verdict::Drop(DropReason::TableFull));
    let c = counters(&nf);
    assert!(c.contains(&("table_full", 1)) && c.contains(&("flows_opened", 2)));
    // Default policy: evict the least recently used request.
    let mut nf: Whitelist = build(&format!("{CFG}\nflows = 2"));
    for p in 0..3u16 {
        assert_eq!(run(&mut nf, s(u64::from(p)), IN, &udp4(VICTIM, 40000 + p, RESOLVER, 53, b"q")), PASS);
    }
    assert_eq!(run(&mut nf, s(3), OUT, &udp4(RESOLVER, 53, VICTIM, 40002, b"a")), PASS);
    assert_eq!(run(&mut nf, s(3), OUT, &udp4(RESOLVER, 53, VICTIM, 40000, b"a")), UNSOLICITED);
}

#[test]
fn bad_configs_are_refused_with_their_key() {
    let cases: &[(&str, &str)] = &[
        ("", "outside"),
        ("outside = \"outside\"\ninside = \"inside\"", "outside"),
        ("outside = \"wan\"", "outside"),
        ("outside = \"outside\"\nidle_timeout_s = 0", "idle_timeout_s"),
        ("outside = \"outside\"\nflows = 0", "requests"),
    ];
    for (cfg, key) in cases {
        let e = crate::testutil::try_build::<Whitelist>(cfg).unwrap_err().to_string();
        assert!(e.contains(key), "{cfg:?}: {e}");
    }
    for bad in ["outside = \"outside\"\ntimeout = 3", "outside = \"outside\"\nallow_src = \"10.0.0/8\""] {
        assert!(toml::from_str::<WhitelistConfig>(bad).is_err(), "{bad}");
    }
}

/// Micro-measure (not a benchmark assertion), 4096 flows, half requests and half responses:
/// `cargo test -p nflet-nfs --release whitelist_ns -- --ignored --nocapture`.
#[test]
#[ignore]
fn whitelist_ns_per_packet() {
    let mut nf: Whitelist = build(CFG);
    let mut frames = Vec::new();
    for p in 0..4096u16 {
        let req = udp4(VICTIM, 10000 + p, RESOLVER, 53, b"q");
        let resp = udp4(RESOLVER, 53, VICTIM, 10000 + p, b"a");
        for (f, port) in [(req, IN), (resp, OUT)] {
            let meta = parse(&f, PortId(port), &ParsePolicy::default()).unwrap();
            frames.push((f, meta));
        }
    }
    let n = 5_000_000u64;
    let start = std::time::Instant::now();
    for i in 0..n {
        let (f, meta) = &mut frames[(i % 8192) as usize];
        let ctx = Ctx { now: Nanos(i * 100), core: CoreId(0) };
        std::hint::black_box(nf.process_packet(&ctx, f, meta));
    }
    println!("udp_whitelist: {:.1} ns/packet", start.elapsed().as_nanos() as f64 / n as f64);
}

#[test]
fn burst_path_gives_the_same_verdicts() {
    let mut nf: Whitelist = build(CFG);
    let frames = [
        (udp4(RESOLVER, 53, VICTIM, 40000, b"a"), OUT),
        (udp4(VICTIM, 40000, RESOLVER, 53, b"q"), IN),
        (udp4(RESOLVER, 53, VICTIM, 40000, b"a"), OUT),
        (arp(), OUT),
    ];
    let mut metas: Vec<Meta> =
        frames.iter().map(|(f, p)| parse(f, PortId(*p), &ParsePolicy::default()).unwrap()).collect();
    let mut bufs: Vec<Vec<u8>> = frames.iter().map(|(f, _)| f.clone()).collect();
    let mut verdicts = [Verdict::Continue; 4];
    let mut burst =
        Burst { frames: &mut bufs, metas: &mut metas, verdicts: &mut verdicts, active: &[0, 1, 2, 3] };
    nf.process(&Ctx { now: s(0), core: CoreId(0) }, &mut burst);
    // The first response precedes its request in the burst: packets are handled in order.
    assert_eq!(verdicts, [UNSOLICITED, PASS, PASS, PASS]);
}
