//! IDS behaviour through the NF, table-driven, with exact counter deltas.

use super::*;
use crate::testutil::{build, run, try_build, udp4, MAC_A, MAC_B};

const IN: u16 = 0;

/// Expected per-sid counters.
type Counts = &'static [(&'static str, u64)];
type Packets = Vec<Vec<u8>>;
const CLIENT: [u8; 4] = [10, 0, 0, 2];
const SERVER: [u8; 4] = [192, 0, 2, 10];
const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;

/// A TCP segment with flags and payload.
fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b =
        etherparse::PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535);
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x10 != 0 {
        b = b.ack(1);
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// An NF config with inline rules (TOML literal strings) and extra keys.
fn config(extra: &str, rules: &[&str]) -> String {
    let list: Vec<String> = rules.iter().map(|r| format!("'''{r}'''")).collect();
    format!("rules = [{}]\n{extra}\n", list.join(",\n"))
}

fn counters(ids: &Ids) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    ids.report(&mut r);
    r.counters
}

fn counter(ids: &Ids, name: &str) -> u64 {
    counters(ids).iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v)
}

/// Non-zero per-sid counters, sorted.
fn per_sid(ids: &Ids) -> Vec<(&'static str, u64)> {
    let mut v: Vec<_> = counters(ids).into_iter().filter(|(n, _)| n.starts_with("sid_")).collect();
    v.sort_unstable();
    v
}

fn u(payload: &[u8]) -> Vec<u8> {
    udp4(CLIENT, 5000, SERVER, 80, payload)
}

#[test]
fn contents_match_per_packet_with_exact_counts() {
    let rules = [
        r#"alert udp any any -> any 80 (msg:"text"; content:"GET /admin"; sid:1;)"#,
        r#"alert udp any any -> any 80 (msg:"hex"; content:"|de ad|be|ef|"; sid:2;)"#,
        r#"alert udp any any -> any 80 (msg:"nocase"; content:"user-agent: evil"; nocase; sid:3;)"#,
        r#"alert udp any any -> any 80 (msg:"depth"; content:"POST"; depth:4; sid:4;)"#,
        r#"alert udp any any -> any 80 (msg:"relative"; content:"Host|3a| "; content:"bad.example"; distance:0; within:11; sid:5;)"#,
        r#"alert udp any any -> any 80 (msg:"offset"; content:"XY"; offset:3; sid:6;)"#,
        r#"alert udp any any -> any 80 (msg:"quote"; content:"say \"no\""; sid:7;)"#,
    ];
    let mut ids: Ids = build(&config("", &rules));
    let cases: &[(&[u8], &[u32])] = &[
        (b"GET /admin HTTP/1.0", &[1]),
        (b"get /admin", &[]),
        (b"\xde\xadbe\xef", &[2]),
        (b"\xde\xadbe\xee", &[]),
        (b"User-Agent: EVIL bot", &[3]),
        (b"POST /", &[4]),
        (b" POST /", &[]),
        (b"Host: bad.example", &[5]),
        (b"Host: good.example bad.example", &[]),
        (b"bad.example Host: x", &[]),
        (b"abcXY", &[6]),
        (b"abXY", &[]),
        (b"they say \"no\"", &[7]),
        (b"GET /admin POST", &[1]),
        (b"POST /admin \xde\xadbe\xef", &[2, 4]),
    ];
    for (i, (payload, want)) in cases.iter().enumerate() {
        let before = per_sid(&ids);
        // A fresh flow per packet: no state carries over between cases.
        let f = udp4(CLIENT, 6000 + i as u16, SERVER, 80, payload);
        assert_eq!(run(&mut ids, Nanos(1), IN, &f), Verdict::Continue, "case {i}");
        let after = per_sid(&ids);
        let mut fired: Vec<u32> = Vec::new();
        for (n, v) in &after {
            let old = before.iter().find(|(m, _)| m == n).map_or(0, |(_, v)| *v);
            if *v > old {
                assert_eq!(*v, old + 1, "case {i}: {n}");
                fired.push(n.trim_start_matches("sid_").trim_end_matches("_alerts").parse().unwrap());
            }
        }
        assert_eq!(fired, *want, "case {i}: {:?}", String::from_utf8_lossy(payload));
    }
    assert_eq!(counter(&ids, "inspected"), cases.len() as u64);
    assert_eq!(counter(&ids, "alerts"), 10);
    assert_eq!(counter(&ids, "dropped"), 0);
}

#[test]
fn addresses_ports_and_direction() {
    let rules = [
        r#"alert udp $HOME_NET any -> $EXTERNAL_NET 53 (msg:"one way"; content:"q"; sid:1;)"#,
        r#"alert udp $HOME_NET any <> $EXTERNAL_NET 53 (msg:"both ways"; content:"q"; sid:2;)"#,
        r#"alert udp any [1000:2000,!1500] -> any any (msg:"ports"; content:"q"; sid:3;)"#,
    ];
    let cfg = config("[vars]\nHOME_NET = \"10.0.0.0/8\"\nEXTERNAL_NET = \"!$HOME_NET\"", &rules);
    let mut ids: Ids = build(&cfg);
    let cases: &[(Vec<u8>, Counts)] = &[
        (udp4(CLIENT, 4000, SERVER, 53, b"q"), &[("sid_1_alerts", 1), ("sid_2_alerts", 1)]),
        (udp4(SERVER, 53, CLIENT, 4000, b"q"), &[("sid_1_alerts", 1), ("sid_2_alerts", 2)]),
        (udp4(SERVER, 4000, CLIENT, 53, b"q"), &[("sid_1_alerts", 1), ("sid_2_alerts", 2)]),
        (
            udp4(CLIENT, 1000, CLIENT, 9, b"q"),
            &[("sid_1_alerts", 1), ("sid_2_alerts", 2), ("sid_3_alerts", 1)],
        ),
        (
            udp4(CLIENT, 1500, CLIENT, 9, b"q"),
            &[("sid_1_alerts", 1), ("sid_2_alerts", 2), ("sid_3_alerts", 1)],
        ),
        (
            udp4(CLIENT, 2001, CLIENT, 9, b"q"),
            &[("sid_1_alerts", 1), ("sid_2_alerts", 2), ("sid_3_alerts", 1)],
        ),
    ];
    for (i, (frame, want)) in cases.iter().enumerate() {
        run(&mut ids, Nanos(1), IN, frame);
        assert_eq!(per_sid(&ids), *want, "case {i}");
    }
}

#[test]
fn flow_established_and_to_server() {
    let rules = [
        r#"alert tcp any any -> any any (msg:"est to server"; flow:established,to_server; content:"cmd"; sid:1;)"#,
        r#"alert tcp any any -> any any (msg:"to client"; flow:to_client; content:"cmd"; sid:2;)"#,
        r#"alert tcp any any -> any any (msg:"any"; content:"cmd"; sid:3;)"#,
    ];
    let mut ids: Ids = build(&config("", &rules));
    let (c, s) = (CLIENT, SERVER);
    let steps: &[(Vec<u8>, Counts)] = &[
        // Data on the SYN: not established yet.
        (tcp(c, 40000, s, 21, SYN, b"cmd"), &[("sid_3_alerts", 1)]),
        (tcp(s, 21, c, 40000, SYNACK, b"cmd"), &[("sid_2_alerts", 1), ("sid_3_alerts", 2)]),
        (tcp(c, 40000, s, 21, ACK, b"cmd"), &[("sid_1_alerts", 1), ("sid_2_alerts", 1), ("sid_3_alerts", 3)]),
        (tcp(s, 21, c, 40000, ACK, b"cmd"), &[("sid_1_alerts", 1), ("sid_2_alerts", 2), ("sid_3_alerts", 4)]),
        // Picked up mid-stream: never established; the first sender is the client.
        (tcp(c, 40001, s, 21, ACK, b"cmd"), &[("sid_1_alerts", 1), ("sid_2_alerts", 2), ("sid_3_alerts", 5)]),
        (tcp(s, 21, c, 40001, ACK, b"cmd"), &[("sid_1_alerts", 1), ("sid_2_alerts", 3), ("sid_3_alerts", 6)]),
        (tcp(c, 40001, s, 21, ACK, b"cmd"), &[("sid_1_alerts", 1), ("sid_2_alerts", 3), ("sid_3_alerts", 7)]),
    ];
    for (i, (frame, want)) in steps.iter().enumerate() {
        run(&mut ids, Nanos(1), IN, frame);
        assert_eq!(per_sid(&ids), *want, "step {i}");
    }
}

#[test]
fn pattern_split_across_packets_of_one_flow_direction() {
    let rules = [
        r#"alert udp any any -> any any (msg:"split"; content:"EVILPAYLOAD"; sid:1;)"#,
        r#"alert udp any any -> any any (msg:"split+tail"; content:"MARKER-LONG"; content:"end"; distance:0; within:4; sid:2;)"#,
        r#"alert udp any any -> any any (msg:"positioned"; content:"DEPTHPATTERN"; depth:20; sid:3;)"#,
    ];
    let a = |sport: u16, p: &[u8]| udp4(CLIENT, sport, SERVER, 9000, p);
    let back = |sport: u16, p: &[u8]| udp4(SERVER, 9000, CLIENT, sport, p);
    // (packets in order, alerts of sid 1, 2, 3 after them)
    let cases: Vec<(&str, Packets, [u64; 3])> = vec![
        ("one packet", vec![a(1, b"xxEVILPAYLOADxx")], [1, 0, 0]),
        ("split in one flow", vec![a(1, b"xxEVIL"), a(1, b"PAYLOADxx")], [1, 0, 0]),
        ("split in three", vec![a(1, b"EV"), a(1, b"ILPAY"), a(1, b"LOAD")], [1, 0, 0]),
        ("split, case of the tail differs", vec![a(1, b"EVIL"), a(1, b"payload")], [0, 0, 0]),
        ("halves in two flows", vec![a(1, b"xxEVIL"), a(2, b"PAYLOADxx")], [0, 0, 0]),
        ("halves in two directions", vec![a(1, b"xxEVIL"), back(1, b"PAYLOADxx")], [0, 0, 0]),
        (
            "interleaved flows keep their own state",
            vec![a(1, b"EVIL"), a(2, b"EVILPA"), a(1, b"PAYLOAD")],
            [1, 0, 0],
        ),
        ("relative content after a split", vec![a(1, b"MARKER-"), a(1, b"LONG end")], [0, 1, 0]),
        ("relative content too far", vec![a(1, b"MARKER-"), a(1, b"LONG   end")], [0, 0, 0]),
        ("positioned fast pattern needs one packet", vec![a(1, b"DEPTH"), a(1, b"PATTERN")], [0, 0, 0]),
        ("positioned in one packet", vec![a(1, b"DEPTHPATTERN")], [0, 0, 1]),
    ];
    for (name, packets, want) in cases {
        let mut ids: Ids = build(&config("", &rules));
        for p in &packets {
            run(&mut ids, Nanos(1), IN, p);
        }
        let got =
            [counter(&ids, "sid_1_alerts"), counter(&ids, "sid_2_alerts"), counter(&ids, "sid_3_alerts")];
        assert_eq!(got, want, "{name}");
        assert_eq!(counter(&ids, "inspected"), packets.len() as u64, "{name}");
    }
}

#[test]
fn ips_drops_and_ids_only_alerts() {
    let rules = [
        r#"drop udp any any -> any any (msg:"bad"; content:"attack"; sid:10;)"#,
        r#"alert udp any any -> any any (msg:"note"; content:"att"; sid:11;)"#,
    ];
    for (mode, want, dropped) in
        [("ids", Verdict::Continue, 0), ("ips", Verdict::Drop(crate::drop::DropReason::IdsRule), 1)]
    {
        let mut ids: Ids = build(&config(&format!("mode = \"{mode}\""), &rules));
        assert_eq!(run(&mut ids, Nanos(1), IN, &u(b"an attack")), want, "{mode}");
        assert_eq!(run(&mut ids, Nanos(1), IN, &u(b"an att")), Verdict::Continue, "{mode}");
        let mut sids = vec![("sid_10_alerts", 1), ("sid_11_alerts", 2)];
        if dropped > 0 {
            sids.insert(1, ("sid_10_drops", 1));
        }
        assert_eq!(per_sid(&ids), sids, "{mode}");
        assert_eq!((counter(&ids, "alerts"), counter(&ids, "dropped")), (3, dropped), "{mode}");
    }
}

#[test]
fn pass_wins_for_the_packet() {
    let rules = [
        r#"drop udp any any -> any any (msg:"bad"; content:"attack"; sid:1;)"#,
        r#"pass udp 10.0.0.2 any -> any any (msg:"trusted"; content:"attack"; sid:2;)"#,
    ];
    let mut ids: Ids = build(&config("mode = \"ips\"", &rules));
    assert_eq!(run(&mut ids, Nanos(1), IN, &u(b"attack")), Verdict::Continue);
    let other = udp4([10, 0, 0, 3], 5000, SERVER, 80, b"attack");
    assert_eq!(run(&mut ids, Nanos(1), IN, &other), Verdict::Drop(crate::drop::DropReason::IdsRule));
    assert_eq!(per_sid(&ids), [("sid_1_alerts", 1), ("sid_1_drops", 1), ("sid_2_passes", 1)]);
    assert_eq!((counter(&ids, "passed"), counter(&ids, "alerts")), (1, 1));
}

#[test]
fn rules_without_content_check_every_packet() {
    let rules = [r#"alert tcp any any -> any 23 (msg:"telnet"; flow:to_server; sid:5;)"#];
    let mut ids: Ids = build(&config("", &rules));
    run(&mut ids, Nanos(1), IN, &tcp(CLIENT, 4000, SERVER, 23, SYN, b""));
    run(&mut ids, Nanos(1), IN, &tcp(SERVER, 23, CLIENT, 4000, SYNACK, b""));
    run(&mut ids, Nanos(1), IN, &tcp(CLIENT, 4001, SERVER, 22, SYN, b""));
    assert_eq!(per_sid(&ids), [("sid_5_alerts", 1)]);
    assert_eq!(counter(&ids, "candidates"), 3);
}

/// `n` generated content rules, none of which occurs in ordinary text.
fn many_rules(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "alert tcp any any -> any any (msg:\"gen {i}\"; content:\"zq{i:05}xj\"; sid:{};)\n",
                100_000 + i
            )
        })
        .collect()
}

#[test]
fn ten_thousand_rules_load_and_match() {
    // (automaton, rules, what it is): `auto` sends a big enough pattern set to the NFA.
    let cases =
        [("auto", 10_000, "dfa"), ("nfa", 10_000, "contiguous_nfa"), ("auto", 40_000, "contiguous_nfa")];
    for (kind, n, want_name) in cases {
        let mut cfg: IdsConfig =
            toml::from_str(&format!("automaton = \"{kind}\"\nrules_file = \"gen.rules\"")).unwrap();
        cfg.rules_file_text = Some(many_rules(n));
        let set = cfg.build().unwrap();
        assert_eq!((set.rules.len(), set.pattern_rules.len()), (n, n), "{kind}");
        assert_eq!(set.automaton_name(), want_name, "{kind} {n}");
    }
    for kind in ["auto", "nfa"] {
        let mut cfg: IdsConfig =
            toml::from_str(&format!("automaton = \"{kind}\"\nrules_file = \"gen.rules\"")).unwrap();
        cfg.rules_file_text = Some(many_rules(10_000));
        let mut arena =
            crate::state::Arena::new(crate::ids::CoreId(0), 64 << 20, crate::state::Backing::Normal);
        let mut shared = crate::nf::SharedRegistry::default();
        let ports = ["inside".to_string()];
        let mut rt = InitCtx {
            instance: crate::ids::Instance::default(),
            name: "t",
            core: crate::ids::CoreId(0),
            cores: 1,
            ports: &ports,
            arena: &mut arena,
            shared: &mut shared,
        };
        let mut ids = Ids::init(&cfg, &mut rt).unwrap();
        let text = b"GET /index.html HTTP/1.1 zq09999xj zq00000xj zq05000 xj zq0500";
        run(&mut ids, Nanos(1), IN, &tcp(CLIENT, 1, SERVER, 80, ACK, text));
        run(&mut ids, Nanos(1), IN, &tcp(CLIENT, 2, SERVER, 80, ACK, b"... zq0123"));
        run(&mut ids, Nanos(1), IN, &tcp(CLIENT, 2, SERVER, 80, ACK, b"4xj ..."));
        run(&mut ids, Nanos(1), IN, &tcp(CLIENT, 3, SERVER, 80, ACK, b"0500xj"));
        let want = [("sid_100000_alerts", 1), ("sid_101234_alerts", 1), ("sid_109999_alerts", 1)];
        assert_eq!(per_sid(&ids), want, "{kind}");
        assert_eq!(counter(&ids, "alerts"), 3, "{kind}");
    }
}

#[test]
fn skipped_options_are_counted() {
    let rules =
        [r#"alert udp any any -> any any (msg:"x"; content:"abc"; pcre:"/abc/"; isdataat:1; sid:1;)"#];
    let e = try_build::<Ids>(&config("", &rules)).unwrap_err().to_string();
    assert_eq!(
        e,
        "`rules`: rules[0]:1:55: unknown option `pcre` (set unknown_options = \"skip\" to ignore it)"
    );
    let mut ids: Ids = build(&config("unknown_options = \"skip\"", &rules));
    assert_eq!(counter(&ids, "skipped_options"), 2);
    run(&mut ids, Nanos(1), IN, &u(b"abc"));
    assert_eq!(per_sid(&ids), [("sid_1_alerts", 1)]);
}

#[test]
fn configuration_errors_name_the_place() {
    let cases: &[(String, &str)] = &[
        (
            config("", &["alert udp any any -> any any (sid:1;)", "alert udp any any -> any any (sid:1;)"]),
            "`rules`: rules[1]:1: sid 1 is already used at rules[0]:1; give every rule its own sid",
        ),
        (
            config("", &["alert udp $HOME any -> any any (sid:1;)"]),
            "`rules`: rules[0]:1:11: undefined variable `$HOME`",
        ),
        ("rules_file = \"x.rules\"".to_string(), "`rules_file`: `x.rules` was not read"),
    ];
    for (cfg, want) in cases {
        let e = try_build::<Ids>(cfg).unwrap_err().to_string();
        assert!(e.starts_with(want), "got {e}\nwant {want}");
    }
}

#[test]
fn full_flow_table_refuses_new_flows() {
    let rules = [r#"alert udp any any -> any any (msg:"x"; content:"abc"; sid:1;)"#];
    let mut ids: Ids = build(&config("flows = 2", &rules));
    for p in 0..2u16 {
        assert_eq!(run(&mut ids, Nanos(1), IN, &udp4(CLIENT, p, SERVER, 80, b"abc")), Verdict::Continue);
    }
    let v = run(&mut ids, Nanos(1), IN, &udp4(CLIENT, 9, SERVER, 80, b"abc"));
    assert_eq!(v, Verdict::Drop(crate::drop::DropReason::TableFull));
    assert_eq!((counter(&ids, "table_full"), counter(&ids, "sid_1_alerts")), (1, 2));
    let mut evict: Ids = build(&config("flows = 2\nfull_policy = \"evict_lru\"", &rules));
    for p in 0..3u16 {
        assert_eq!(run(&mut evict, Nanos(1), IN, &udp4(CLIENT, p, SERVER, 80, b"abc")), Verdict::Continue);
    }
    assert_eq!((counter(&evict, "table_full"), counter(&evict, "sid_1_alerts")), (0, 3));
}

#[test]
fn non_ip_frames_pass_uninspected() {
    let mut ids: Ids = build(&config("", &[r#"alert ip any any -> any any (msg:"all"; sid:1;)"#]));
    assert_eq!(run(&mut ids, Nanos(1), IN, &crate::testutil::arp()), Verdict::Continue);
    assert_eq!((counter(&ids, "non_ip"), counter(&ids, "inspected"), counter(&ids, "alerts")), (1, 0, 0));
}

/// Bursts (four flow directions scanned at once) decide exactly as packets one at a time:
/// same verdicts, same counters, including patterns split across packets of one direction
/// that sit in the same burst.
#[test]
fn bursts_equal_single_packets() {
    let rules = [
        r#"drop udp any any -> any any (msg:"split"; content:"EVILPAYLOAD"; sid:1;)"#,
        r#"alert udp any any -> any any (msg:"two"; content:"Host|3a| "; content:"bad"; distance:0; within:4; sid:2;)"#,
        r#"alert udp any any -> any any (msg:"short"; content:"zz"; sid:3;)"#,
    ];
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let pieces: &[&[u8]] = &[
        b"xxEVIL",
        b"PAYLOAD",
        b"Host: bad",
        b"zz",
        b"EVILPAYLOADzz",
        b"",
        b"EV",
        b"ILPAYLOAD and more text",
    ];
    for i in 0..40u16 {
        let flow = i % 5;
        let piece = pieces[usize::from(i) % pieces.len()];
        let f = if i % 3 == 0 {
            udp4(SERVER, 80, CLIENT, 7000 + flow, piece)
        } else {
            udp4(CLIENT, 7000 + flow, SERVER, 80, piece)
        };
        packets.push(f);
    }
    let cfg = config("mode = \"ips\"", &rules);
    let mut single: Ids = build(&cfg);
    let want: Vec<Verdict> = packets.iter().map(|p| run(&mut single, Nanos(1), IN, p)).collect();
    for burst_len in [1usize, 3, 4, 7, 32] {
        let mut ids: Ids = build(&cfg);
        let mut got = Vec::new();
        for chunk in packets.chunks(burst_len) {
            let mut frames: Vec<Vec<u8>> = chunk.to_vec();
            let mut metas: Vec<Meta> = frames
                .iter()
                .map(|f| {
                    crate::packet::parse(f, crate::ids::PortId(IN), &crate::packet::ParsePolicy::default())
                        .unwrap()
                })
                .collect();
            let mut verdicts = vec![Verdict::Continue; frames.len()];
            let active: Vec<u16> = (0..frames.len() as u16).collect();
            let mut b = crate::nf::Burst {
                frames: &mut frames,
                metas: &mut metas,
                verdicts: &mut verdicts,
                active: &active,
            };
            ids.process(&Ctx { now: Nanos(1), core: crate::ids::CoreId(0) }, &mut b);
            got.extend(verdicts);
        }
        assert_eq!(got, want, "burst of {burst_len}");
        assert_eq!(counters(&ids), counters(&single), "burst of {burst_len}");
    }
    assert!(counter(&single, "sid_1_drops") >= 4 && counter(&single, "sid_2_alerts") >= 4);
}
