//! Frame builders and an NF harness for unit tests (test builds only).

use etherparse::PacketBuilder;

use crate::ids::{CoreId, PortId};
use crate::nf::{Ctx, InitCtx, NetworkFunction, SharedRegistry, Verdict};
use crate::packet::{parse, Meta, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::time::Nanos;

pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

pub fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

/// A TCP segment with the given flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
pub fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).tcp(sport, dport, 1000, 65535);
    if flags & 0x01 != 0 {
        b = b.fin();
    }
    if flags & 0x02 != 0 {
        b = b.syn();
    }
    if flags & 0x04 != 0 {
        b = b.rst();
    }
    if flags & 0x10 != 0 {
        b = b.ack(1);
    }
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).unwrap();
    out
}

pub fn icmp_echo4(src: [u8; 4], dst: [u8; 4], id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).icmpv4_echo_request(id, seq);
    let mut out = Vec::with_capacity(b.size(8));
    b.write(&mut out, &[0u8; 8]).unwrap();
    out
}

pub fn arp() -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f.resize(60, 0);
    f
}

/// Builds NF `N` on core 0 of a one-core appliance with ports `inside` (0) and `outside` (1).
pub fn build<N: NetworkFunction>(config_toml: &str) -> N {
    try_build::<N>(config_toml).unwrap()
}

/// [`build`] as instance `id` of `count` of a scaled-out deployment (same configuration on
/// every instance), for migration tests.
pub fn build_instance<N: NetworkFunction>(config_toml: &str, id: u16, count: u16) -> N {
    let cfg: N::Config = toml::from_str(config_toml).unwrap();
    let mut arena = Arena::new(CoreId(0), 256 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut rt = InitCtx {
        instance: crate::ids::Instance::new(id, count).unwrap(),
        name: "under_test",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    N::init(&cfg, &mut rt).unwrap()
}

/// The context of a burst at `now` on core 0.
pub fn ctx(now: Nanos) -> Ctx {
    Ctx { now, core: CoreId(0) }
}

/// The direction-normalised flow key of `frame` as parsed on `ingress`.
pub fn flow_of(frame: &[u8], ingress: u16) -> crate::flow::FlowKey {
    parse(frame, PortId(ingress), &ParsePolicy::default()).unwrap().key
}

/// [`run`], also returning the frame as it leaves the NF.
pub fn run_out<N: NetworkFunction>(nf: &mut N, now: Nanos, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut f = frame.to_vec();
    let mut meta: Meta = parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap();
    let v = nf.process_packet(&ctx(now), &mut f, &mut meta);
    (v, f)
}

/// Moves the state of `flow` from `from` (its clock reading `at`) to `to` (reading `to_at`:
/// instances' clocks differ); returns the record.
pub fn move_flow<N: NetworkFunction>(
    from: &mut N,
    at: Nanos,
    to: &mut N,
    to_at: Nanos,
    flow: &crate::flow::FlowKey,
) -> Vec<u8> {
    let mut blob = Vec::new();
    assert!(from.export_flow(flow, &ctx(at), &mut blob), "exporter holds state for the flow");
    to.import_flow(flow, &ctx(to_at), &blob).unwrap();
    blob
}

/// [`build`], returning `init`'s error (for configuration tests; the TOML itself must parse).
pub fn try_build<N: NetworkFunction>(config_toml: &str) -> Result<N, crate::nf::NfError> {
    let cfg: N::Config = toml::from_str(config_toml).unwrap();
    let mut arena = Arena::new(CoreId(0), 256 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut rt = InitCtx {
        instance: crate::ids::Instance::default(),
        name: "under_test",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    N::init(&cfg, &mut rt)
}

/// [`build`] with the NF's tables in state directory `dir` (re-attached when a previous
/// build left them there), and `after_init` run as the dataplane does.
pub fn build_in<N: NetworkFunction>(config_toml: &str, dir: &std::path::Path) -> N {
    let cfg: N::Config = toml::from_str(config_toml).unwrap();
    let state = std::sync::Arc::new(crate::state::StateDir::open(dir, 1).unwrap());
    let mut arena = Arena::new(CoreId(0), 256 << 20, Backing::Normal).with_state_dir(state);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut rt = InitCtx {
        instance: crate::ids::Instance::default(),
        name: "under_test",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    let mut nf = N::init(&cfg, &mut rt).unwrap();
    nf.after_init();
    nf
}

/// Parses `frame` as arriving on `ingress` and runs it through `nf` at time `now`.
pub fn run<N: NetworkFunction>(nf: &mut N, now: Nanos, ingress: u16, frame: &[u8]) -> Verdict {
    let mut f = frame.to_vec();
    let mut meta: Meta = parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap();
    nf.process_packet(&Ctx { now, core: CoreId(0) }, &mut f, &mut meta)
}

/// (seconds, ingress, frame) steps of a migration scenario.
pub type Timed = Vec<(u64, u16, Vec<u8>)>;

/// A flow moved mid-way: `before` runs on instance A, the flow's state moves to instance B
/// (its clock [`SKEW`] ahead), `after` runs on B.
#[derive(Debug)]
pub struct MoveCase<'a> {
    pub name: &'a str,
    pub config: &'a str,
    pub before: Timed,
    pub after: Timed,
}

/// How far instance B's clock is ahead of A's in [`check_move`].
pub const SKEW: Nanos = Nanos::from_secs(1_000_000);

fn counters_of<N: NetworkFunction>(nf: &N) -> std::collections::BTreeMap<&'static str, u64> {
    let mut r = crate::nf::Report::default();
    nf.report(&mut r);
    r.counters.into_iter().collect()
}

/// Runs `case` on instances A → B and on a single reference instance, and checks that after
/// the move B's verdicts, output frames and counter deltas are the reference's; that without
/// the move they would differ (`state_matters`); and that every truncation and single-byte
/// change of the record is refused without changing the importer. `setup` runs on B and the
/// reference before `after` (an operator's change between the phases). Returns B and the
/// reference for further checks.
pub fn check_move<N: NetworkFunction>(
    case: &MoveCase<'_>,
    state_matters: bool,
    setup: impl Fn(&mut N),
) -> (N, N) {
    let name = case.name;
    let (mut a, mut b) = (build_instance::<N>(case.config, 0, 2), build_instance::<N>(case.config, 1, 2));
    let mut reference = build_instance::<N>(case.config, 0, 2);
    let flow = flow_of(&case.before[0].2, case.before[0].1);
    let s = Nanos::from_secs;
    for (t, ingress, f) in &case.before {
        assert_eq!(
            run_out(&mut a, s(*t), *ingress, f),
            run_out(&mut reference, s(*t), *ingress, f),
            "{name}"
        );
    }
    let at = s(case.before.last().map_or(0, |x| x.0));
    let before = counters_of(&reference);
    let blob = move_flow(&mut a, at, &mut b, at.saturating_add(SKEW), &flow);
    setup(&mut b);
    setup(&mut reference);
    let mut unmoved = build_instance::<N>(case.config, 1, 2);
    setup(&mut unmoved);
    let mut differs = false;
    for (t, ingress, f) in &case.after {
        let want = run_out(&mut reference, s(*t), *ingress, f);
        assert_eq!(run_out(&mut b, s(*t).saturating_add(SKEW), *ingress, f), want, "{name} at {t} s");
        differs |= run_out(&mut unmoved, s(*t).saturating_add(SKEW), *ingress, f) != want;
    }
    assert_eq!(differs, state_matters, "{name}: does the moved state change the outcome?");
    let delta: std::collections::BTreeMap<_, _> = counters_of(&reference)
        .into_iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
        .collect();
    assert_eq!(counters_of(&b), delta, "{name}: counter deltas");
    // Damaged records: refused, and the importer holds nothing for the flow afterwards.
    let mut c = build_instance::<N>(case.config, 1, 2);
    let now = ctx(at);
    for n in 0..blob.len() {
        assert!(c.import_flow(&flow, &now, &blob[..n]).is_err(), "{name}: truncated to {n}");
    }
    for i in 0..blob.len() {
        for bits in [0x01u8, 0x80, 0xff] {
            let mut bad = blob.clone();
            bad[i] ^= bits;
            assert!(c.import_flow(&flow, &now, &bad).is_err(), "{name}: byte {i} ^ {bits:#x}");
        }
    }
    assert!(!c.export_flow(&flow, &now, &mut Vec::new()), "{name}: nothing installed");
    (b, reference)
}
