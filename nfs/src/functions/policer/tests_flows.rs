//! Per-flow and per-host buckets: isolation, idle expiry, full tables, long-run rate.

use super::tests::{counters, expect, run_out};
use super::Policer;
use crate::drop::DropReason;
use crate::ids::CoreId;
use crate::nf::{Ctx, NetworkFunction, Report, Verdict};
use crate::state::TableStats;
use crate::testutil::{build, udp4};
use crate::time::Nanos;

/// One packet per key and second: bucket of 1 packet, no excess; green passes, red drops.
fn cfg(per: &str, extra: &str) -> String {
    format!(
        r#"
[[class]]
name = "c"
unit = "packets"
cir = 1
cbs = 1
per = "{per}"
{extra}
green = {{ kind = "pass" }}
yellow = {{ kind = "drop" }}
red = {{ kind = "drop" }}

[[rule]]
class = "c"
"#
    )
}

fn table(p: &Policer) -> TableStats {
    let mut r = Report::default();
    p.report(&mut r);
    r.tables.first().map(|t| t.2).unwrap()
}

const PASS: Verdict = Verdict::Continue;
const POLICED: Verdict = Verdict::Drop(DropReason::Policed);

#[test]
fn buckets_per_flow_src_dst_are_separate_per_key() {
    let a = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 9], 80, b"");
    let a_other_port = udp4([10, 0, 0, 1], 1001, [10, 0, 0, 9], 80, b"");
    let a_reply = udp4([10, 0, 0, 9], 80, [10, 0, 0, 1], 1000, b"");
    let b_same_dst = udp4([10, 0, 0, 2], 1000, [10, 0, 0, 9], 80, b"");
    // (per, packets in order at t=0, expected verdicts, buckets created).
    type Case<'a> = (&'a str, [&'a [u8]; 5], [Verdict; 5], u64);
    let cases: [Case; 4] = [
        // Per flow and direction: a, its second packet, another flow, the reply, another src.
        ("flow", [&a, &a, &a_other_port, &a_reply, &b_same_dst], [PASS, POLICED, PASS, PASS, PASS], 4),
        // Per source: a and a_other_port share 10.0.0.1's bucket.
        ("src", [&a, &a, &a_other_port, &a_reply, &b_same_dst], [PASS, POLICED, POLICED, PASS, PASS], 3),
        // Per destination: everything to 10.0.0.9 shares a bucket; the reply goes elsewhere.
        ("dst", [&a, &a, &a_other_port, &a_reply, &b_same_dst], [PASS, POLICED, POLICED, PASS, POLICED], 2),
        // Per class: one bucket, no table.
        (
            "class",
            [&a, &a, &a_other_port, &a_reply, &b_same_dst],
            [PASS, POLICED, POLICED, POLICED, POLICED],
            0,
        ),
    ];
    for (per, frames, want, new) in cases {
        let mut p: Policer = build(&cfg(per, ""));
        let got: Vec<Verdict> = frames.iter().map(|f| run_out(&mut p, Nanos(0), 0, f).0).collect();
        assert_eq!(got, want, "per = {per}");
        let green = want.iter().filter(|v| **v == PASS).count() as u64;
        assert_eq!(counters(&p), expect([green, 0, 5 - green, 0, 5 - green, 0, new, 0]), "per = {per}");
    }
}

#[test]
fn idle_buckets_expire_on_the_clock_and_come_back_full() {
    let mut p: Policer =
        build(&cfg("flow", "idle_timeout = 10\nflows = 4").replace("cir = 1\n", "cir = 0\n"));
    let f = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 9], 80, b"");
    let at = |s: u64| Nanos::from_secs(s);
    // cir 0: the bucket never refills, so only a new bucket passes a packet.
    assert_eq!(run_out(&mut p, at(0), 0, &f).0, PASS);
    assert_eq!(run_out(&mut p, at(8), 0, &f).0, POLICED); // touched: expires at 18 s
    p.housekeeping(&Ctx { now: at(17), core: CoreId(0) });
    assert_eq!((table(&p).len, table(&p).expired), (1, 0));
    assert_eq!(run_out(&mut p, at(17), 0, &f).0, POLICED); // touched: expires at 27 s
    p.housekeeping(&Ctx { now: at(27), core: CoreId(0) });
    assert_eq!((table(&p).len, table(&p).expired), (0, 1));
    assert_eq!(run_out(&mut p, at(27), 0, &f).0, PASS, "a new bucket starts full");
    assert_eq!(counters(&p), expect([2, 0, 2, 0, 2, 0, 2, 0]));
    // An expired but not yet swept bucket is replaced in place on the next packet.
    assert_eq!(run_out(&mut p, at(100), 0, &f).0, PASS);
    assert_eq!((table(&p).len, table(&p).expired, table(&p).inserts), (1, 2, 3));
}

#[test]
fn full_table_polices_by_class_bucket_drops_or_evicts() {
    let flows: Vec<Vec<u8>> = (0..3).map(|i| udp4([10, 0, 0, 1], 1000 + i, [10, 0, 0, 9], 80, b"")).collect();
    // (on_full, verdicts of flows 0, 1, 2, 2 again, 3rd flow's table outcome:
    //  counters [buckets_new, table_full], table evicted).
    let cases: [(&str, [Verdict; 4], [u64; 2], u64); 3] = [
        // The third flow uses the class bucket (full: passes once, then red).
        ("class", [PASS, PASS, PASS, POLICED], [2, 2], 0),
        (
            "drop",
            [PASS, PASS, Verdict::Drop(DropReason::TableFull), Verdict::Drop(DropReason::TableFull)],
            [2, 2],
            0,
        ),
        // The third flow evicts the least recently used (flow 0) and keeps its own bucket.
        ("evict", [PASS, PASS, PASS, POLICED], [3, 0], 1),
    ];
    for (on_full, want, [new, full], evicted) in cases {
        let mut p: Policer = build(&cfg("flow", &format!("flows = 2\non_full = \"{on_full}\"")));
        let got: Vec<Verdict> = [0usize, 1, 2, 2]
            .iter()
            .enumerate()
            .map(|(t, i)| run_out(&mut p, Nanos(t as u64), 0, &flows[*i]).0)
            .collect();
        assert_eq!(got, want, "on_full = {on_full}");
        let passed = want.iter().filter(|v| **v == PASS).count() as u64;
        let red = want.iter().filter(|v| **v == POLICED).count() as u64;
        assert_eq!(counters(&p), expect([passed, 0, red, 0, red, 0, new, full]), "on_full = {on_full}");
        let t = table(&p);
        assert_eq!((t.len, t.capacity, t.evicted, t.refused), (2, 2, evicted, full), "on_full = {on_full}");
    }
}

#[test]
fn per_flow_long_run_rate_within_2_percent() {
    // 20 flows, each offered 200 kB/s (1000-byte IP packets every 5 ms) for 10 s against a
    // per-flow CIR of 100 kB/s, CBS 5000: every flow gets its own 100 kB/s.
    let cfg = r#"
[[class]]
name = "bulk"
per = "flow"
flows = 64
cir = 100000
cbs = 5000
green = { kind = "pass" }
yellow = { kind = "drop" }
red = { kind = "drop" }

[[rule]]
class = "bulk"
"#;
    let mut p: Policer = build(cfg);
    let flows: Vec<Vec<u8>> =
        (0..20u16).map(|i| udp4([10, 0, 0, 1], 2000 + i, [10, 0, 0, 2], 80, &[0u8; 972])).collect();
    let mut passed = [0u64; 20];
    for i in 0..2000u64 {
        for (f, n) in flows.iter().zip(passed.iter_mut()) {
            if run_out(&mut p, Nanos(i * 5_000_000), 0, f).0 == PASS {
                *n += 1000;
            }
        }
    }
    let expected = 100_000f64 * 10.0;
    for (i, n) in passed.iter().enumerate() {
        let err = (*n as f64 - expected).abs() / expected;
        assert!(err < 0.02, "flow {i} passed {n}");
    }
    // Hand count per flow: 5000 + 100 B/ms x 9995 ms = 1 004 500 bytes of credit by the last
    // packet, 1000 per green: 1004 green, 996 red.
    assert!(passed.iter().all(|n| *n == 1_004_000));
    assert_eq!(counters(&p), expect([20 * 1004, 0, 20 * 996, 0, 20 * 996, 0, 20, 0]));
}

#[test]
fn bucket_hash_is_the_hash_of_bucket_key() {
    use super::flows::{bucket_hash, bucket_key, Per};
    use crate::packet::{parse, ParsePolicy};
    let frames = [
        udp4([10, 0, 0, 1], 1000, [10, 0, 0, 9], 80, b""),
        udp4([10, 0, 0, 9], 80, [10, 0, 0, 1], 1000, b""),
    ];
    for f in &frames {
        let meta = parse(f, crate::ids::PortId(0), &ParsePolicy::default()).unwrap();
        for per in [Per::Class, Per::Flow, Per::Src, Per::Dst] {
            assert_eq!(bucket_hash(per, &meta), bucket_key(per, &meta).1, "{per:?}");
        }
    }
}

#[test]
fn burst_path_matches_packet_path() {
    use crate::nf::Burst;
    use crate::packet::{parse, ParsePolicy};
    let frames: Vec<Vec<u8>> =
        (0..8u16).map(|i| udp4([10, 0, 0, 1], 1000 + i % 3, [10, 0, 0, 9], 80, b"")).collect();
    let mut one: Policer = build(&cfg("flow", ""));
    let mut burst: Policer = build(&cfg("flow", ""));
    let ctx = Ctx { now: Nanos(5), core: CoreId(0) };
    let want: Vec<Verdict> = frames.iter().map(|f| run_out(&mut one, ctx.now, 0, f).0).collect();
    let mut fs = frames.clone();
    let mut metas: Vec<_> =
        frames.iter().map(|f| parse(f, crate::ids::PortId(0), &ParsePolicy::default()).unwrap()).collect();
    let mut verdicts = vec![Verdict::Continue; frames.len()];
    // Packet 7 is not active (an earlier NF dropped it) and must not be metered.
    let active: Vec<u16> = (0..7).collect();
    let mut b = Burst { frames: &mut fs, metas: &mut metas, verdicts: &mut verdicts, active: &active };
    burst.process(&ctx, &mut b);
    assert_eq!(verdicts[..7], want[..7]);
    // Flows 1000, 1001, 1002 pass once each; the other four active packets are red.
    assert_eq!(counters(&burst), expect([3, 0, 4, 0, 4, 0, 3, 0]));
}
