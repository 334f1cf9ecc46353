//! Pipeline migration: a flow through a NAT and a firewall shared by an outbound and an
//! inbound chain moves between two instances as one blob; blobs of the wrong chain, kind or
//! shape are refused before anything changes.

use crate::chain::{Chain, NfSlot, NfStats, Pipeline, Selector, Step};
use crate::flow::FlowKey;
use crate::functions::{AnyConfig, AnyNf};
use crate::ids::{CoreId, Instance, Label, PortId};
use crate::nf::{Ctx, ImportError, InitCtx, SharedRegistry, Verdict};
use crate::packet::{parse, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::testutil::udp4;
use crate::time::Nanos;

const HOST: [u8; 4] = [192, 168, 1, 10];
const REMOTE: [u8; 4] = [198, 51, 100, 1];
const PUB: [u8; 4] = [203, 0, 113, 1];
const NAT: &str = "inside = \"inside\"\npublic = \"203.0.113.1\"\nmappings = 64";
const FW: &str = "connections = 64\ndefault = \"deny\"\n[[rule]]\naction = \"allow\"\ningress = \"inside\"";

/// NFs: 0 nat, 1 firewall, 2 counter, 3 monitor, 4 a firewall on the public side. Chains:
/// 0 out = fw, nat, counter; 1 in = nat, fw; 2 = distribute(protocol: udp → monitor, else
/// counter); 3 out2 = nat, fw2; 4 in2 = fw2, nat.
fn pipeline(instance: u16) -> Pipeline {
    let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut slot = |kind: &str, params: &str, name: &str| {
        let v = toml::Value::Table(toml::from_str::<toml::Table>(params).unwrap());
        let cfg = AnyConfig::parse(kind, v).unwrap();
        let mut rt = InitCtx {
            instance: Instance::new(instance, 2).unwrap(),
            name,
            core: CoreId(0),
            cores: 1,
            ports: &ports,
            arena: &mut arena,
            shared: &mut shared,
        };
        NfSlot { name: name.into(), nf: AnyNf::init(&cfg, &mut rt).unwrap(), stats: NfStats::default() }
    };
    let nfs = vec![
        slot("nat", NAT, "nat"),
        slot("firewall", FW, "fw"),
        slot("counter", "", "count"),
        slot("monitor", "flows = 64", "mon"),
        slot("firewall", FW, "fw2"),
    ];
    let split = Step::Distribute {
        selector: Selector::Protocol,
        branches: vec![(Label(17), vec![Step::Nf(3)])],
        default: Some(vec![Step::Nf(2)]),
    };
    let chains = vec![
        Chain {
            name: "out".into(),
            steps: vec![Step::Nf(1), Step::Nf(0), Step::Nf(2)],
            output: Some(PortId(1)),
        },
        Chain { name: "in".into(), steps: vec![Step::Nf(0), Step::Nf(1)], output: Some(PortId(0)) },
        Chain { name: "split".into(), steps: vec![split], output: Some(PortId(1)) },
        Chain { name: "out2".into(), steps: vec![Step::Nf(0), Step::Nf(4)], output: Some(PortId(1)) },
        Chain { name: "in2".into(), steps: vec![Step::Nf(4), Step::Nf(0)], output: Some(PortId(0)) },
    ];
    Pipeline::new(nfs, chains)
}

fn ctx(s: u64) -> Ctx {
    Ctx { now: Nanos::from_secs(s), core: CoreId(0) }
}

/// Runs one frame through chain `chain`; the verdict and the frame as it leaves.
fn run(p: &mut Pipeline, chain: usize, s: u64, ingress: u16, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    let mut metas = vec![parse(&frame, PortId(ingress), &ParsePolicy::default()).unwrap()];
    let mut frames = vec![frame];
    let mut verdicts = vec![Verdict::Continue];
    p.run(chain, &ctx(s), &mut frames, &mut metas, &mut verdicts, &[0]);
    (verdicts[0], frames.remove(0))
}

/// A's flow (inside tuple) after one outbound datagram, and its exported blob.
fn moved_blob() -> (Pipeline, FlowKey, Vec<u8>) {
    let mut a = pipeline(0);
    let out = udp4(HOST, 5000, REMOTE, 53, b"q");
    let flow = parse(&out, PortId(0), &ParsePolicy::default()).unwrap().key;
    assert_eq!(run(&mut a, 0, 0, 0, out).0, Verdict::Out(PortId(1)));
    let mut blob = Vec::new();
    assert_eq!(
        a.export_flow(0, &flow, &ctx(1), &mut blob),
        2,
        "firewall and NAT records; the counter has none"
    );
    (a, flow, blob)
}

/// Offsets in `blob` where a record ends.
fn boundaries(blob: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = vec![0];
    while at + 6 <= blob.len() {
        at += 6 + u32::from_be_bytes(blob[at + 2..at + 6].try_into().unwrap()) as usize;
        out.push(at);
    }
    out
}

#[test]
fn a_flow_moves_through_the_pipeline_and_its_reply_passes_both_nfs_on_the_importer() {
    let (_a, flow, blob) = moved_blob();
    let reply = || udp4(REMOTE, 53, PUB, 5000, b"r");
    // Without the move, B has neither mapping nor connection.
    let (v, _) = run(&mut pipeline(1), 1, 2, 1, reply());
    assert!(matches!(v, Verdict::Drop(_)));
    let mut b = pipeline(1);
    assert_eq!(b.import_flow(0, &flow, &ctx(100), &blob), Ok(2));
    let (v, f) = run(&mut b, 1, 101, 1, reply());
    assert_eq!(v, Verdict::Out(PortId(0)));
    let m = parse(&f, PortId(1), &ParsePolicy::default()).unwrap();
    assert_eq!((&m.dst[..4], m.dport), (&HOST[..], 5000), "translated to the inside host");
    assert_eq!(b.nfs[1].stats.drops.total(), 0, "the firewall tracked it");
    // The flow moves on again: both NFs still hold it.
    assert_eq!(b.export_flow(0, &flow, &ctx(102), &mut Vec::new()), 2);
}

#[test]
fn chains_report_whether_their_flow_state_can_move() {
    let p = pipeline(0);
    assert_eq!(p.chain_nfs(0), Some(vec![1, 0, 2]));
    assert_eq!(p.chain_nfs(2), Some(vec![3, 2]));
    assert_eq!(p.chain_nfs(5), None);
    for c in 0..5 {
        assert!(p.migrates(c), "chain {c}");
        assert_eq!(p.unmigratable(c), Some(vec![]));
    }
    assert!(!p.migrates(5));
    assert_eq!(p.unmigratable(5), None);
}

#[test]
fn blobs_of_another_chain_kind_or_shape_are_refused_before_anything_changes() {
    let (_a, flow, blob) = moved_blob();
    let mut b = pipeline(1);
    let empty = |b: &mut Pipeline| b.export_flow(0, &flow, &ctx(2), &mut Vec::new()) == 0;
    assert_eq!(b.import_flow(9, &flow, &ctx(1), &blob), Err(ImportError::NoChain(9)));
    assert_eq!(b.export_flow(9, &flow, &ctx(1), &mut Vec::new()), 0);
    // The split chain holds neither the firewall nor the NAT.
    assert_eq!(b.import_flow(2, &flow, &ctx(1), &blob), Err(ImportError::NotInChain(1)));
    // A record addressed to the counter, which keeps no flow state.
    let mut to_counter = blob.clone();
    to_counter[..2].copy_from_slice(&2u16.to_be_bytes());
    assert_eq!(b.import_flow(0, &flow, &ctx(1), &to_counter), Err(ImportError::NotMigrating("counter")));
    // The firewall's record handed to the NAT: refused by its kind tag.
    let mut swapped = blob.clone();
    swapped[..2].copy_from_slice(&0u16.to_be_bytes());
    let second = boundaries(&blob)[1];
    swapped[second..second + 2].copy_from_slice(&1u16.to_be_bytes());
    assert!(matches!(b.import_flow(0, &flow, &ctx(1), &swapped), Err(ImportError::WrongKind { .. })));
    // The same record twice.
    let mut twice = blob[..second].to_vec();
    twice.extend_from_slice(&blob[..second]);
    assert!(matches!(b.import_flow(0, &flow, &ctx(1), &twice), Err(ImportError::Malformed(_))));
    assert!(empty(&mut b));
    // Every truncation: refused, unless it ends on a record boundary (then a shorter blob).
    let ends = boundaries(&blob);
    for n in 0..blob.len() {
        let mut fresh = pipeline(1);
        let got = fresh.import_flow(0, &flow, &ctx(1), &blob[..n]);
        match ends.iter().position(|&e| e == n) {
            Some(records) => assert_eq!(got, Ok(records), "{n}"),
            None => {
                assert!(got.is_err(), "truncated to {n}");
                assert!(empty(&mut fresh), "nothing installed at {n}");
            }
        }
    }
}

#[test]
fn an_nf_after_the_nat_moves_its_state_under_the_translated_flow() {
    let mut a = pipeline(0);
    let out = udp4(HOST, 5000, REMOTE, 53, b"q");
    let flow = parse(&out, PortId(0), &ParsePolicy::default()).unwrap().key;
    assert_eq!(run(&mut a, 3, 0, 0, out).0, Verdict::Out(PortId(1)));
    let mut blob = Vec::new();
    assert_eq!(a.export_flow(3, &flow, &ctx(1), &mut blob), 2, "the NAT, then fw2 under the public tuple");
    let reply = || udp4(REMOTE, 53, PUB, 5000, b"r");
    // fw2 sees the reply before the NAT: it passes only on the moved connection.
    assert!(matches!(run(&mut pipeline(1), 4, 2, 1, reply()).0, Verdict::Drop(_)));
    let mut b = pipeline(1);
    assert_eq!(b.import_flow(3, &flow, &ctx(100), &blob), Ok(2));
    let (v, f) = run(&mut b, 4, 101, 1, reply());
    assert_eq!(v, Verdict::Out(PortId(0)));
    let m = parse(&f, PortId(1), &ParsePolicy::default()).unwrap();
    assert_eq!((&m.dst[..4], m.dport), (&HOST[..], 5000));
}
