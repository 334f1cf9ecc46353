//! Chains: sequencing, labels, distribute/aggregate, outputs and per-NF counters; and a
//! robustness test that feeds random and truncated frames through a full chain.

use crate::chain::{Chain, NfSlot, NfStats, Pipeline, Selector, Step};
use crate::drop::DropReason;
use crate::functions::{AnyConfig, AnyNf};
use crate::ids::{CoreId, Label, PortId};
use crate::nf::{Ctx, InitCtx, SharedRegistry, Verdict};
use crate::packet::{parse, Meta, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::testutil::{arp, icmp_echo4, tcp4, udp4};
use crate::time::Nanos;

fn nf(kind: &str, params: &str, arena: &mut Arena, shared: &mut SharedRegistry, name: &str) -> NfSlot {
    let v: toml::Value = toml::from_str::<toml::Table>(params).map(toml::Value::Table).unwrap();
    let cfg = AnyConfig::parse(kind, v).unwrap();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut rt = InitCtx {
        instance: crate::ids::Instance::default(),
        name,
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena,
        shared,
    };
    NfSlot { name: name.into(), nf: AnyNf::init(&cfg, &mut rt).unwrap(), stats: NfStats::default() }
}

const FW: &str = r#"
default = "deny"
[[rule]]
action = "allow"
proto = "udp"
[[rule]]
action = "allow"
proto = "icmp"
"#;

fn pipeline(steps: Vec<Step>, output: Option<PortId>) -> Pipeline {
    let mut arena = Arena::new(CoreId(0), 256 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let nfs = vec![
        nf("firewall", FW, &mut arena, &mut shared, "fw"),
        nf("counter", "", &mut arena, &mut shared, "c_tcp"),
        nf("counter", "", &mut arena, &mut shared, "c_udp"),
        nf("counter", "", &mut arena, &mut shared, "c_other"),
        nf("monitor", "flows = 1024", &mut arena, &mut shared, "mon"),
    ];
    Pipeline::new(nfs, vec![Chain { name: "t".into(), steps, output }])
}

fn run(p: &mut Pipeline, frames: Vec<Vec<u8>>) -> Vec<Verdict> {
    let mut metas: Vec<Meta> = Vec::new();
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for f in frames {
        if let Ok(m) = parse(&f, PortId(0), &ParsePolicy::default()) {
            metas.push(m);
            kept.push(f);
        }
    }
    let mut verdicts = vec![Verdict::Continue; kept.len()];
    let active: Vec<u16> = (0..kept.len() as u16).collect();
    let ctx = Ctx { now: Nanos(1), core: CoreId(0) };
    p.run(0, &ctx, &mut kept, &mut metas, &mut verdicts, &active);
    verdicts
}

fn packets(p: &Pipeline, nf: usize) -> u64 {
    p.nfs[nf].stats.packets
}

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];

#[test]
fn sequence_forwards_survivors_and_counts_drops_per_nf() {
    let mut p = pipeline(vec![Step::Nf(0), Step::Nf(4)], Some(PortId(1)));
    let v = run(&mut p, vec![udp4(A, 1, B, 2, b"x"), tcp4(A, 3, B, 4, 0x02), icmp_echo4(A, B, 9, 1)]);
    assert_eq!(
        v,
        vec![Verdict::Out(PortId(1)), Verdict::Drop(DropReason::FirewallDeny), Verdict::Out(PortId(1))]
    );
    assert_eq!(packets(&p, 0), 3);
    assert_eq!(p.nfs[0].stats.drops.get(DropReason::FirewallDeny), 1);
    assert_eq!(packets(&p, 4), 2, "the monitor sees only what the firewall passed");
    let cs = p.chain_stats[0];
    assert_eq!((cs.packets, cs.forwarded, cs.dropped), (3, 2, 1));
}

#[test]
fn no_output_drops_at_the_end() {
    let mut p = pipeline(vec![Step::Nf(4)], None);
    assert_eq!(run(&mut p, vec![udp4(A, 1, B, 2, b"")]), vec![Verdict::Drop(DropReason::NoOutput)]);
}

#[test]
fn distribute_by_protocol_then_aggregate() {
    let steps = vec![
        Step::Distribute {
            selector: Selector::Protocol,
            branches: vec![(Label(6), vec![Step::Nf(1)]), (Label(17), vec![Step::Nf(2), Step::Nf(0)])],
            default: Some(vec![Step::Nf(3)]),
        },
        Step::Nf(4),
    ];
    let mut p = pipeline(steps, Some(PortId(1)));
    let frames = vec![
        tcp4(A, 3, B, 4, 0x02),
        udp4(A, 1, B, 2, b"x"),
        icmp_echo4(A, B, 9, 1),
        udp4(A, 5, B, 6, b"y"),
        arp(),
    ];
    let v = run(&mut p, frames);
    assert!(v.iter().all(|v| *v == Verdict::Out(PortId(1))), "{v:?}");
    assert_eq!((packets(&p, 1), packets(&p, 2), packets(&p, 3)), (1, 2, 2));
    assert_eq!(packets(&p, 0), 2, "firewall only on the UDP branch");
    assert_eq!(packets(&p, 4), 5, "all branches aggregate into the monitor");
}

#[test]
fn distribute_without_default_drops_unknown_labels() {
    let steps = vec![Step::Distribute {
        selector: Selector::Protocol,
        branches: vec![(Label(17), vec![])],
        default: None,
    }];
    let mut p = pipeline(steps, Some(PortId(1)));
    let v = run(&mut p, vec![udp4(A, 1, B, 2, b""), tcp4(A, 1, B, 2, 0x02)]);
    assert_eq!(v, vec![Verdict::Out(PortId(1)), Verdict::Drop(DropReason::UnknownLabel)]);
}

#[test]
fn random_and_truncated_frames_never_panic() {
    let mut p = pipeline(vec![Step::Nf(0), Step::Nf(4)], Some(PortId(1)));
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let goldens = [udp4(A, 1, B, 2, b"hello"), tcp4(A, 3, B, 4, 0x12), icmp_echo4(A, B, 1, 1), arp()];
    let mut frames = Vec::new();
    for g in &goldens {
        for cut in 0..=g.len() {
            frames.push(g[..cut].to_vec());
        }
        for _ in 0..500 {
            let mut f = g.clone();
            let i = (next() as usize) % f.len();
            f[i] ^= (next() as u8) | 1;
            frames.push(f);
        }
    }
    for _ in 0..5000 {
        let len = (next() % 200) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if len > 14 && next() % 2 == 0 {
            f[12] = 0x08;
            f[13] = 0x00;
            f[14] = 0x45;
        }
        frames.push(f);
    }
    for chunk in frames.chunks(32) {
        let v = run(&mut p, chunk.to_vec());
        assert!(v.iter().all(|v| matches!(v, Verdict::Out(_) | Verdict::Drop(_))));
    }
}

#[test]
fn chains_holding_a_steering_nf_ask_it_which_core_a_frame_belongs_to() {
    // A NAT (steers) behind a distribute branch, and a counter (does not), on two cores.
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let nat_params = "inside = \"inside\"\npublic = \"203.0.113.1\"\nmappings = 1024";
    let mut pipes: Vec<Pipeline> = (0..2u16)
        .map(|core| {
            let mut arena = Arena::new(CoreId(core), 64 << 20, Backing::Normal);
            let mut slot = |kind: &str, params: &str, name: &str| {
                let v = toml::Value::Table(toml::from_str::<toml::Table>(params).unwrap());
                let cfg = AnyConfig::parse(kind, v).unwrap();
                let mut rt = InitCtx {
                    instance: crate::ids::Instance::default(),
                    name,
                    core: CoreId(core),
                    cores: 2,
                    ports: &ports,
                    arena: &mut arena,
                    shared: &mut shared,
                };
                NfSlot {
                    name: name.into(),
                    nf: AnyNf::init(&cfg, &mut rt).unwrap(),
                    stats: NfStats::default(),
                }
            };
            let nfs = vec![slot("nat", nat_params, "nat"), slot("counter", "", "c")];
            let udp_to_nat = Step::Distribute {
                selector: Selector::Protocol,
                branches: vec![(Label(17), vec![Step::Nf(0)])],
                default: Some(vec![]),
            };
            let chains = vec![
                Chain { name: "nat".into(), steps: vec![Step::Nf(1), udp_to_nat], output: None },
                Chain { name: "plain".into(), steps: vec![Step::Nf(1)], output: None },
            ];
            Pipeline::new(nfs, chains)
        })
        .collect();
    assert_eq!((pipes[0].steers(0), pipes[0].steers(1), pipes[0].steers(7)), (true, false, false));
    // Core 1 maps an inside endpoint.
    let mut frames = vec![udp4([192, 168, 1, 10], 5000, [198, 51, 100, 1], 53, b"q")];
    let mut metas = vec![parse(&frames[0], PortId(0), &ParsePolicy::default()).unwrap()];
    let mut verdicts = vec![Verdict::Continue];
    let ctx = Ctx { now: Nanos(1), core: CoreId(1) };
    pipes[1].run(0, &ctx, &mut frames, &mut metas, &mut verdicts, &[0]);
    let public = parse(&frames[0], PortId(0), &ParsePolicy::default()).unwrap().sport;
    // Any core's pipeline sends the reply to core 1; a chain without the NAT has no opinion.
    let reply = udp4([198, 51, 100, 1], 53, [203, 0, 113, 1], public, b"a");
    let meta = parse(&reply, PortId(1), &ParsePolicy::default()).unwrap();
    for p in &pipes {
        assert_eq!((p.steer(0, &meta, &reply), p.steer(1, &meta, &reply)), (Some(CoreId(1)), None));
    }
}
