use etherparse::{Ipv4Header, SlicedPacket};

use super::Policer;
use crate::drop::DropReason;
use crate::ids::{CoreId, PortId};
use crate::nf::Ctx;
use crate::nf::{NetworkFunction, Report, Verdict};
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

fn counters(p: &Policer) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    p.report(&mut r);
    r.counters
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
    assert_eq!(
        counters(&p),
        [("green", 300), ("yellow", 200), ("red", 1), ("remarked", 200), ("dropped", 1), ("unclassified", 1)]
    );
}

#[test]
fn remark_rewrites_dscp_with_valid_checksum() {
    let mut p: Policer = build(CFG);
    let f = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 5060, b"x");
    for _ in 0..300 {
        run(&mut p, Nanos(0), 0, &f);
    }
    let mut g = f.clone();
    let mut meta = parse(&g, PortId(0), &ParsePolicy::default()).unwrap();
    let v = p.process_packet(&Ctx { now: Nanos(0), core: CoreId(0) }, &mut g, &mut meta);
    assert_eq!(v, Verdict::Continue);
    let s = SlicedPacket::from_ethernet(&g).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = s.net else { panic!("not ipv4") };
    let h: Ipv4Header = ip.header().to_header();
    assert_eq!(h.dscp.value(), 10);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn long_run_bytes_rate_within_2_percent() {
    // 10 s offered at 2x CIR; red dropped; delivered IP bytes within 2 % of CIR x 10 s.
    let cfg = r#"
[[class]]
name = "bulk"
cir = 100000
cbs = 5000
green = { kind = "pass" }
yellow = { kind = "drop" }
red = { kind = "drop" }

[[rule]]
class = "bulk"
"#;
    let mut p: Policer = build(cfg);
    let f = udp4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, &[0u8; 972]); // 1000-byte IP
    let mut passed = 0u64;
    for i in 0..2000u64 {
        if run(&mut p, Nanos(i * 5_000_000), 0, &f) == Verdict::Continue {
            passed += 1000;
        }
    }
    let expected = 100_000f64 * 10.0;
    let err = (passed as f64 - expected).abs() / expected;
    assert!(err < 0.02, "passed {passed}");
}

#[test]
fn bad_config_is_refused_with_key() {
    let cfg: super::PolicerConfig =
        toml::from_str("[[class]]\nname='a'\ncir=1\ncbs=1\npir=0\npbs=1\ngreen={kind='pass'}\nyellow={kind='pass'}\nred={kind='pass'}").unwrap();
    let mut arena = crate::state::Arena::new(CoreId(0), 1 << 20, crate::state::Backing::Normal);
    let mut shared = crate::nf::SharedRegistry::default();
    let ports = ["inside".to_string()];
    let mut rt = crate::nf::InitCtx {
        name: "t",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    assert!(Policer::init(&cfg, &mut rt).is_err());
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
