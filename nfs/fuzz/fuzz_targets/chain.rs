//! Fuzzes a whole chain: parser → firewall → monitor, burst by burst, with state carried over
//! between inputs (as on a live core) and time moving forward.
//!
//! Input: a sequence of frames, each prefixed by one length byte; the first byte advances the
//! virtual clock (in seconds), so idle timeouts and housekeeping run too. Oracles: nothing
//! panics; every packet ends with a final verdict (out or drop).

#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use nflet_nfs::chain::{Chain, NfSlot, NfStats, Pipeline, Step};
use nflet_nfs::functions::{AnyConfig, AnyNf};
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Ctx, InitCtx, SharedRegistry, Verdict};
use nflet_nfs::packet::{parse, ParsePolicy};
use nflet_nfs::state::{Arena, Backing};
use nflet_nfs::time::Nanos;

const FIREWALL: &str = r#"
default = "deny"
connections = 4096
full_policy = "evict_lru"
[[rule]]
action = "allow"
src = "10.0.0.0/8"
[[rule]]
action = "allow"
proto = "udp"
dport = "53"
"#;

fn nf(kind: &str, params: &str, name: &str, arena: &mut Arena, shared: &mut SharedRegistry) -> NfSlot {
    let table: toml::Table = toml::from_str(params).unwrap_or_default();
    let cfg = AnyConfig::parse(kind, toml::Value::Table(table)).expect("fuzz NF config");
    let ports = ["in".to_string(), "out".to_string()];
    let mut rt = InitCtx {
        instance: nflet_nfs::ids::Instance::default(),
        name,
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena,
        shared,
    };
    NfSlot {
        name: name.into(),
        nf: AnyNf::init(&cfg, &mut rt).expect("fuzz NF init"),
        stats: NfStats::default(),
    }
}

struct State {
    pipeline: Pipeline,
    now: Nanos,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
        let mut shared = SharedRegistry::default();
        let nfs = vec![
            nf("firewall", FIREWALL, "fw", &mut arena, &mut shared),
            nf("monitor", "flows = 4096\nhost_delta = 256", "mon", &mut arena, &mut shared),
        ];
        let chain = Chain { name: "fuzz".into(), steps: vec![Step::Nf(0), Step::Nf(1)], output: Some(PortId(1)) };
        State { pipeline: Pipeline::new(nfs, vec![chain]), now: Nanos::ZERO }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&tick, mut rest)) = data.split_first() else { return };
    let mut frames = Vec::new();
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        frames.push(tail[..n].to_vec());
        rest = &tail[n..];
        if frames.len() == 32 {
            break;
        }
    }
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.now = s.now.saturating_add(Nanos::from_secs(u64::from(tick)));
        let ctx = Ctx { now: s.now, core: CoreId(0) };
        let mut metas = Vec::new();
        let mut kept = Vec::new();
        for f in frames {
            if let Ok(m) = parse(&f, PortId(0), &ParsePolicy::default()) {
                metas.push(m);
                kept.push(f);
            }
        }
        let mut verdicts = vec![Verdict::Continue; kept.len()];
        let active: Vec<u16> = (0..kept.len() as u16).collect();
        s.pipeline.run(0, &ctx, &mut kept, &mut metas, &mut verdicts, &active);
        s.pipeline.housekeeping(&ctx);
        assert!(verdicts.iter().all(|v| matches!(v, Verdict::Out(_) | Verdict::Drop(_))));
    });
});
