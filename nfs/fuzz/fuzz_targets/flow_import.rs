//! Fuzzes the import of migrated flow state: every migrating NF's record parser and the
//! pipeline's blob parser, with state carried over between inputs (as on a live worker).
//!
//! Input: byte 0 picks the NF (by pipeline index, or the whole pipeline when out of range),
//! byte 1 one of a few flows, the rest is the record. For a single NF the target appends the
//! check value itself, so the fuzzer reaches the fields rather than stopping at the check.
//! After each import the flow's packets run through the chain in both directions and
//! housekeeping runs. Oracles: nothing panics; every packet ends with a final verdict.

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use nflet_nfs::chain::{Chain, NfSlot, NfStats, Pipeline, Step};
use nflet_nfs::flow::FlowKey;
use nflet_nfs::functions::{AnyConfig, AnyNf};
use nflet_nfs::ids::{CoreId, Instance, PortId};
use nflet_nfs::nf::{Ctx, InitCtx, SharedRegistry, Verdict};
use nflet_nfs::packet::{parse, ParsePolicy};
use nflet_nfs::state::wire::Writer;
use nflet_nfs::state::{Arena, Backing};
use nflet_nfs::time::Nanos;

const NFS: &[(&str, &str)] = &[
    ("firewall", "connections = 256\ndefault = \"deny\"\n[[rule]]\naction = \"allow\"\ningress = \"in\""),
    (
        "policer",
        "[[class]]\nname = \"c\"\nunit = \"packets\"\ncir = 10\ncbs = 5\nper = \"flow\"\nflows = 256\n\
         green = { kind = \"pass\" }\nyellow = { kind = \"drop\" }\nred = { kind = \"drop\" }\n\
         [[rule]]\nclass = \"c\"",
    ),
    ("ids", "flows = 256\nmode = \"ips\"\nrules = ['''drop udp any any -> any any (msg:\"x\"; content:\"EVILPAYLOAD\"; sid:1;)''']"),
    ("monitor", "flows = 256\nhost_delta = 64"),
    ("udp_whitelist", "outside = \"out\"\nflows = 256"),
    ("lb", "flows = 256\n[[vip]]\naddr = \"192.0.2.10:53\"\nproto = \"udp\"\n[[vip.backend]]\naddr = \"10.1.0.1:53\"\n[[vip.backend]]\naddr = \"10.1.0.2:53\""),
    ("nat", "inside = \"in\"\npublic = \"203.0.113.1\"\nports = \"1024-2047\"\nmappings = 256"),
];

fn nf(kind: &str, params: &str, arena: &mut Arena, shared: &mut SharedRegistry) -> NfSlot {
    let table: toml::Table = toml::from_str(params).unwrap_or_default();
    let cfg = AnyConfig::parse(kind, toml::Value::Table(table)).expect("fuzz NF config");
    let ports = ["in".to_string(), "out".to_string()];
    let mut rt = InitCtx {
        instance: Instance { id: 1, count: 2 },
        name: kind,
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena,
        shared,
    };
    NfSlot {
        name: kind.into(),
        nf: AnyNf::init(&cfg, &mut rt).expect("fuzz NF init"),
        stats: NfStats::default(),
    }
}

/// Ethernet + IPv4 (checksummed) + UDP `src:sport → dst:dport` carrying `payload`.
fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The flows inputs pick from: (outbound frame, its reply as it arrives from outside).
fn flows() -> Vec<(Vec<u8>, Vec<u8>)> {
    let (host, remote, public, vip) = ([10, 0, 0, 5], [198, 51, 100, 7], [203, 0, 113, 1], [192, 0, 2, 10]);
    vec![
        (udp_frame(host, 4000, remote, 53, b"EVIL"), udp_frame(remote, 53, public, 4000, b"PAYLOAD")),
        (udp_frame(host, 1500, remote, 53, b"q"), udp_frame(remote, 53, public, 1500, b"a")),
        (udp_frame(host, 4001, vip, 53, b"q"), udp_frame([10, 1, 0, 1], 53, host, 4001, b"a")),
    ]
}

struct State {
    pipeline: Pipeline,
    flows: Vec<(Vec<u8>, Vec<u8>)>,
    now: Nanos,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
        let mut shared = SharedRegistry::default();
        let nfs: Vec<NfSlot> = NFS.iter().map(|(k, p)| nf(k, p, &mut arena, &mut shared)).collect();
        let steps = (0..nfs.len()).map(Step::Nf).collect();
        let chain = Chain { name: "fuzz".into(), steps, output: Some(PortId(1)) };
        State { pipeline: Pipeline::new(nfs, vec![chain]), flows: flows(), now: Nanos::ZERO }
    });
}

fn run(p: &mut Pipeline, ctx: &Ctx, frame: &[u8], ingress: u16) {
    let Ok(meta) = parse(frame, PortId(ingress), &ParsePolicy::default()) else { return };
    let (mut frames, mut metas, mut verdicts) = (vec![frame.to_vec()], vec![meta], vec![Verdict::Continue]);
    p.run(0, ctx, &mut frames, &mut metas, &mut verdicts, &[0]);
    assert!(verdicts.iter().all(|v| matches!(v, Verdict::Out(_) | Verdict::Drop(_))));
}

fn one(data: &[u8]) {
    let [which, flow, record @ ..] = data else { return };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.now = s.now.saturating_add(Nanos::from_secs(1));
        let ctx = Ctx { now: s.now, core: CoreId(0) };
        let Some((out, reply)) = s.flows.get(usize::from(*flow) % s.flows.len()).cloned() else { return };
        let Ok(meta) = parse(&out, PortId(0), &ParsePolicy::default()) else { return };
        let key: FlowKey = meta.key;
        match s.pipeline.nfs.get_mut(usize::from(*which)) {
            Some(slot) => {
                let mut sealed = Vec::new();
                let mut w = Writer::new(&mut sealed);
                w.bytes(record);
                w.seal();
                let _ = slot.nf.import_flow(&key, &ctx, &sealed);
            }
            None => {
                let _ = s.pipeline.import_flow(0, &key, &ctx, record);
            }
        }
        run(&mut s.pipeline, &ctx, &out, 0);
        run(&mut s.pipeline, &ctx, &reply, 1);
        s.pipeline.housekeeping(&ctx);
        let mut blob = Vec::new();
        s.pipeline.export_flow(0, &key, &ctx, &mut blob);
    });
}

fuzz_target!(|data: &[u8]| one(data));
