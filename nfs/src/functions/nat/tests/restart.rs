//! Restart with a state directory: restored mappings keep their public ports, nobody else
//! gets them, and replies still steer to the core holding them.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::state::StateDir;

/// Builds the NAT on both cores with tables in `dir`, and runs `after_init` on both.
fn two_cores_in(config: &str, dir: &std::path::Path) -> Vec<Nat> {
    let cfg: NatConfig = toml::from_str(config).unwrap();
    let state = Arc::new(StateDir::open(dir, 2).unwrap());
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut cores: Vec<Nat> = (0..2u16)
        .map(|core| {
            let mut arena =
                Arena::new(CoreId(core), 64 << 20, Backing::Normal).with_state_dir(Arc::clone(&state));
            let mut rt = InitCtx {
                instance: crate::ids::Instance::default(),
                name: "nat",
                core: CoreId(core),
                cores: 2,
                ports: &ports,
                arena: &mut arena,
                shared: &mut shared,
            };
            Nat::init(&cfg, &mut rt).unwrap()
        })
        .collect();
    for nat in &mut cores {
        nat.after_init();
    }
    cores
}

fn steer(nat: &Nat, frame: &[u8]) -> Option<CoreId> {
    let meta = parse(frame, PortId(OUT), &ParsePolicy::default()).unwrap();
    nat.steer(&meta, frame)
}

#[test]
fn restored_mappings_keep_their_ports_and_no_port_is_handed_out_twice() {
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let guard = Dir(std::env::temp_dir().join(format!("nflet-nat-restart-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&guard.0);
    let dir = guard.0.clone();
    let config = format!("ports = \"3000-3015\"\nrefill_batch = 2\n{BASE}");
    // First run: core 0 uses its 8 ports and 1 refilled from core 1's share; core 1 maps 3.
    let mut kept: Vec<(usize, u16, u16)> = Vec::new(); // (core, inside port, public port)
    {
        let mut cores = two_cores_in(&config, &dir);
        for (core, n) in [(0usize, 8u16), (1, 3)] {
            for i in 0..n {
                let inside = 10_000 + 100 * core as u16 + i;
                let (v, out) =
                    run_on(&mut cores[core], s(1), core as u16, IN, &udp4(HOST_A, inside, R1, 53, b""));
                assert_eq!(v, Verdict::Continue);
                kept.push((core, inside, verified(&out).1));
            }
        }
        let f = udp4(HOST_A, 10_050, R1, 53, b"");
        assert_eq!(run_on(&mut cores[0], s(1), 0, IN, &f).0, drop(DropReason::NatPoolExhausted));
        cores[1].housekeeping(&Ctx { now: s(1), core: CoreId(1) });
        let (v, out) = run_on(&mut cores[0], s(1), 0, IN, &f);
        assert_eq!(v, Verdict::Continue);
        kept.push((0, 10_050, verified(&out).1));
    }
    // A fresh split would give core 1 the port core 0 refilled with: reconciliation must not.
    let refilled = kept.last().unwrap().2;
    assert!(refilled >= 3008, "core 0 holds a port of core 1's initial share ({refilled})");

    let mut cores = two_cores_in(&config, &dir);
    let restored: HashSet<u16> = kept.iter().map(|k| k.2).collect();
    assert_eq!(restored.len(), 12);
    for &(core, inside, public) in &kept {
        let reply = udp4(R1, 53, PUB, public, b"");
        assert_eq!(steer(&cores[1 - core], &reply), Some(CoreId(core as u16)), "port {public}");
        assert_eq!(run_on(&mut cores[core], s(2), core as u16, OUT, &reply).0, Verdict::Continue);
        let (v, out) = run_on(&mut cores[core], s(2), core as u16, IN, &udp4(HOST_A, inside, R1, 53, b""));
        assert_eq!((v, verified(&out).1), (Verdict::Continue, public), "the same public port");
        assert_eq!(cores[core].mappings(s(2)), kept.iter().filter(|k| k.0 == core).count());
    }
    // Every other port, and only those, can still be handed out: from either core.
    let mut fresh = HashSet::new();
    for round in 0..20u16 {
        for core in 0..2usize {
            let f = udp4(HOST_B, 20_000 + round * 2 + core as u16, R1, 53, b"");
            let (v, out) = run_on(&mut cores[core], s(3), core as u16, IN, &f);
            if v == Verdict::Continue {
                let p = verified(&out).1;
                assert!(!restored.contains(&p), "restored port {p} handed out again");
                assert!(fresh.insert(p), "port {p} handed out twice");
            }
            cores[1 - core].housekeeping(&Ctx { now: s(3), core: CoreId(1 - core as u16) });
        }
    }
    assert_eq!(fresh.len() + restored.len(), 16, "the whole pool is used, nothing twice");
}
