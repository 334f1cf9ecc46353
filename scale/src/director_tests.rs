//! Director tests on a virtual clock: each drives packets and ticks at chosen times and checks
//! the steering, the decisions and the exact counter deltas.

use nflet_nfs::flow::{v4, FlowKey, FAMILY_V4};

use super::*;
use crate::scaling::ScaleDecision;

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const CAP: f64 = 1.0e9;

fn key(port: u16) -> FlowKey {
    FlowKey::new(FAMILY_V4, 6, v4([10, 0, 0, 1]), port, v4([198, 18, 0, 1]), 80).0
}

fn cfg(workers: u16) -> DirectorConfig {
    DirectorConfig {
        // The tests set a worker's load through its reservation.
        reserve_active_demand: true,
        initial_workers: workers,
        worker_capacity: Rate(CAP),
        initial_demand: Rate(0.1 * CAP),
        ..DirectorConfig::default()
    }
}

fn director(c: DirectorConfig) -> Director {
    Director::new(c).unwrap()
}

fn start(s: Steer) -> Option<FlowletAssignment> {
    match s {
        Steer::Flow { start, .. } => start,
        _ => None,
    }
}

fn clock(s: Steer) -> u64 {
    match s {
        Steer::Flow { clock, .. } => clock.0,
        _ => 0,
    }
}

fn set_reserved(d: &mut Director, w: u16, util: f64) {
    d.pool.get_mut(WorkerId(w)).unwrap().reserved = Rate(util * CAP);
}

fn tick(d: &mut Director, at: u64) -> Vec<Decision> {
    let mut out = Vec::new();
    d.tick(Nanos(at), &mut out);
    out
}

#[test]
fn both_directions_share_one_flowlet_and_clock() {
    let mut d = director(cfg(2));
    let (a, b) = (v4([10, 0, 0, 1]), v4([198, 18, 0, 1]));
    let (k1, _) = FlowKey::new(FAMILY_V4, 6, a, 40_000, b, 80);
    let (k2, _) = FlowKey::new(FAMILY_V4, 6, b, 80, a, 40_000);
    let s1 = d.steer(Nanos(0), k1, Bytes(100));
    let s2 = d.steer(Nanos(100 * US), k2, Bytes(1400));
    let s3 = d.steer(Nanos(200 * US), k1, Bytes(100));
    assert_eq!(start(s1).map(|a| (a.reason, a.state)), Some((FlowletStart::NewFlow, StateSource::Fresh)));
    assert_eq!((start(s2), start(s3)), (None, None));
    assert_eq!(
        (s1.worker(), s2.worker(), s3.worker()),
        (Some(WorkerId(0)), Some(WorkerId(0)), Some(WorkerId(0)))
    );
    assert_eq!((clock(s1), clock(s2), clock(s3)), (1, 2, 3));
    assert_eq!(d.flow(&k2).unwrap().flowlet.bytes, Bytes(1600));
    assert_eq!(
        d.counters(),
        DirectorCounters { packets: 3, flowlets: 1, new_flows: 1, ..DirectorCounters::default() }
    );
}

#[test]
fn flowlet_boundaries_through_the_director() {
    // (packets as (µs, bytes), expected reason per packet)
    type Case = (&'static str, &'static [(u64, u64)], &'static [Option<FlowletStart>]);
    let cases: [Case; 4] = [
        ("gap of exactly T", &[(0, 100), (500, 100)], &[Some(FlowletStart::NewFlow), None]),
        ("gap over T", &[(0, 100), (501, 100)], &[Some(FlowletStart::NewFlow), Some(FlowletStart::Idle)]),
        (
            "size: 10 × 1500 fits, the 11th starts a flowlet",
            &[
                (0, 1500),
                (1, 1500),
                (2, 1500),
                (3, 1500),
                (4, 1500),
                (5, 1500),
                (6, 1500),
                (7, 1500),
                (8, 1500),
                (9, 1500),
                (10, 1500),
            ],
            &[
                Some(FlowletStart::NewFlow),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                Some(FlowletStart::Size),
            ],
        ),
        (
            "idle then size",
            &[(0, 9000), (1000, 9000), (1001, 9000)],
            &[Some(FlowletStart::NewFlow), Some(FlowletStart::Idle), Some(FlowletStart::Size)],
        ),
    ];
    for (what, pkts, want) in cases {
        let mut d = director(cfg(1));
        let got: Vec<_> = pkts
            .iter()
            .map(|&(t, b)| start(d.steer(Nanos(t * US), key(1), Bytes(b))).map(|a| a.reason))
            .collect();
        assert_eq!(got, want, "{what}");
        // One worker: every later flowlet finds its state local.
        let later = want.iter().skip(1).filter(|r| r.is_some()).count() as u64;
        assert_eq!(d.counters().state_local, later, "{what}");
        assert_eq!(d.counters().flowlets, later + 1, "{what}");
    }
}

#[test]
fn full_table_steers_untracked_and_counts() {
    let mut d = director(DirectorConfig { flow_capacity: 2, ..cfg(3) });
    for p in 0..2 {
        assert!(matches!(d.steer(Nanos(0), key(p), Bytes(64)), Steer::Flow { .. }));
    }
    let s = d.steer(Nanos(0), key(9), Bytes(64));
    assert!(matches!(s, Steer::Untracked { .. }), "{s:?}");
    // The same flow always hashes to the same worker.
    assert_eq!(d.steer(Nanos(1), key(9), Bytes(64)), s);
    assert_eq!((d.counters().untracked, d.table_counters().refused, d.flows()), (2, 2, 2));
    // Known flows keep working while the table is full.
    assert!(matches!(d.steer(Nanos(2), key(0), Bytes(64)), Steer::Flow { .. }));
}

#[test]
fn idle_flows_are_swept_and_their_slots_reused() {
    let mut d = director(DirectorConfig { flow_capacity: 1, flow_idle_timeout: Nanos(10 * MS), ..cfg(1) });
    d.steer(Nanos(0), key(1), Bytes(64));
    tick(&mut d, MS); // ends the flowlet
    assert!(matches!(d.steer(Nanos(2 * MS), key(2), Bytes(64)), Steer::Untracked { .. }));
    tick(&mut d, 5 * MS); // first sweep: idle 5 ms < 10 ms
    assert_eq!(d.flows(), 1);
    tick(&mut d, 10 * MS); // second sweep: idle 10 ms
    assert_eq!((d.flows(), d.table_counters().expired), (0, 1));
    assert!(matches!(d.steer(Nanos(11 * MS), key(2), Bytes(64)), Steer::Flow { .. }));
}

#[test]
fn demand_first_flowlet_global_average_then_ewma() {
    let mut d = director(cfg(1));
    let first = start(d.steer(Nanos(0), key(1), Bytes(1000))).unwrap();
    assert_eq!(first.demand, Rate(0.1 * CAP), "no flowlet measured yet: initial demand");
    // 1000 B + 1000 B 10 µs apart, ended idle at 10 + 500 µs: 2000 B over 510 µs.
    d.steer(Nanos(10 * US), key(1), Bytes(1000));
    tick(&mut d, 600 * US);
    let m1 = 2000.0 / 510e-6;
    assert!((d.global_average().0 - m1).abs() < 1e-6);
    let second = start(d.steer(Nanos(MS), key(1), Bytes(1000))).unwrap();
    assert!((second.demand.0 - (0.5 * m1 + 0.5 * 0.1 * CAP)).abs() < 1e-3);
    // A new flow starts from the global average.
    let other = start(d.steer(Nanos(MS), key(2), Bytes(1000))).unwrap();
    assert!((other.demand.0 - m1).abs() < 1e-6);
    // A flowlet split by size is measured up to the split: 15 × 1000 B, 1 µs apart, cut by the
    // 16th packet at 15 µs after its start → 1 GB/s, which the EWMA takes at half weight.
    let t0 = 10 * MS;
    for i in 0..15 {
        d.steer(Nanos(t0 + i * US), key(3), Bytes(1000));
    }
    let prev = d.flow(&key(3)).unwrap().demand;
    let split = start(d.steer(Nanos(t0 + 15 * US), key(3), Bytes(1000))).unwrap();
    assert_eq!(split.reason, FlowletStart::Size);
    assert!((split.demand.0 - (0.5 * 1.0e9 + 0.5 * prev.0)).abs() < 1e-3, "{split:?}");
}

#[test]
fn state_holder_wins_within_alpha_and_while_it_has_room() {
    // The flow's previous flowlet ran on worker 1 (worker 0 was full then). At the next
    // flowlet worker 0 is at `util0`, worker 1 (holder) nearly idle: S0 = util0, S1 = 0 + α.
    let cases = [
        (0.20, WorkerId(1), StateSource::Local),
        (0.24, WorkerId(1), StateSource::Local),
        (0.30, WorkerId(0), StateSource::Pull { from: WorkerId(1) }),
        (0.50, WorkerId(0), StateSource::Pull { from: WorkerId(1) }),
        (0.95, WorkerId(1), StateSource::Local), // worker 0 has no room
    ];
    for (util0, want, state) in cases {
        let mut d = director(DirectorConfig { replicas: 0, ..cfg(2) });
        set_reserved(&mut d, 0, 0.95);
        assert_eq!(d.steer(Nanos(0), key(1), Bytes(100)).worker(), Some(WorkerId(1)));
        tick(&mut d, MS);
        set_reserved(&mut d, 0, util0);
        let a = start(d.steer(Nanos(2 * MS), key(1), Bytes(100))).unwrap();
        assert_eq!((d.flow(&key(1)).unwrap().owner, a.state), (want, state), "util0 {util0}");
    }
}

#[test]
fn replication_at_half_timeout_and_the_next_flowlet_prefers_replicas() {
    // Four workers and K = 3: the targets are exactly the three non-owners, so the test does
    // not depend on the draw. Worker 0 owns the flow; at the next flowlet it is full.
    struct Case {
        what: &'static str,
        lingering: Option<u64>,
        owner_util: f64,
        want: WorkerId,
        state: StateSource,
    }
    let cases = [
        Case {
            what: "owner has room: stays",
            lingering: None,
            owner_util: 0.0,
            want: WorkerId(0),
            state: StateSource::Local,
        },
        Case {
            what: "owner full: a replica",
            lingering: None,
            owner_util: 0.95,
            want: WorkerId(1),
            state: StateSource::Replica { from: WorkerId(0) },
        },
        Case {
            what: "lingering packet made replicas stale: pull",
            lingering: Some(300),
            owner_util: 1.5,
            want: WorkerId(1),
            state: StateSource::Pull { from: WorkerId(0) },
        },
    ];
    for c in cases {
        let mut d = director(cfg(4));
        d.steer(Nanos(0), key(1), Bytes(100));
        assert_eq!(tick(&mut d, 249 * US), vec![], "{}: idle < T/2", c.what);
        let out = tick(&mut d, 250 * US);
        let to = [WorkerId(1), WorkerId(2), WorkerId(3)];
        match out.as_slice() {
            [Decision::Replicate(r)] => {
                assert_eq!((r.flow, r.from, r.clock), (key(1), WorkerId(0), LogicalClock(1)), "{}", c.what);
                let mut got = r.to.as_slice().to_vec();
                got.sort();
                assert_eq!(got, to, "{}", c.what);
            }
            other => panic!("{}: {other:?}", c.what),
        }
        if let Some(t) = c.lingering {
            // Still the same flowlet (gap 300 µs ≤ T), handled by the owner.
            assert_eq!(start(d.steer(Nanos(t * US), key(1), Bytes(100))), None, "{}", c.what);
            assert_eq!(d.flow(&key(1)).unwrap().replicas, None, "{}", c.what);
        }
        if c.lingering.is_none() {
            tick(&mut d, 2 * MS);
        } else {
            // No tick before the next flowlet (one past T/2 after the lingering packet would
            // push the state again, fresh); another flow keeps worker 0 busy instead, and
            // ending flow 1's flowlet releases only its own share of the reservation.
            assert_eq!(d.steer(Nanos(2900 * US), key(2), Bytes(100)).worker(), Some(WorkerId(0)));
        }
        set_reserved(&mut d, 0, c.owner_util);
        let s = d.steer(Nanos(3 * MS), key(1), Bytes(100));
        let a = start(s).unwrap();
        assert_eq!(
            (s.worker(), a.reason, a.state),
            (Some(c.want), FlowletStart::Idle, c.state),
            "{}",
            c.what
        );
        assert_eq!(clock(s), if c.lingering.is_some() { 3 } else { 2 }, "{}", c.what);
    }
}

#[test]
fn replication_is_deterministic_with_the_seed() {
    let run = |seed| {
        let mut d = director(DirectorConfig { seed, ..cfg(16) });
        let mut got = Vec::new();
        for p in 0..50 {
            d.steer(Nanos(u64::from(p) * US), key(p), Bytes(100));
        }
        for t in (0..2_000).step_by(50) {
            got.extend(tick(&mut d, t * US));
        }
        got
    };
    let a = run(3);
    assert_eq!(a.iter().filter(|d| matches!(d, Decision::Replicate(_))).count(), 50);
    assert_eq!(a, run(3));
    assert_ne!(a, run(4));
}

#[test]
fn launch_when_saturated_then_ready_joins_the_packing() {
    let mut d = director(DirectorConfig { max_workers: 3, ..cfg(1) });
    set_reserved(&mut d, 0, 0.95);
    assert_eq!(tick(&mut d, MS), vec![Decision::Scale(ScaleDecision::Launch(WorkerId(1)))]);
    assert_eq!(tick(&mut d, 2 * MS), vec![], "one pending launch at a time");
    // Until it is ready, nothing is packed onto the new worker: overflow onto worker 0.
    let a = start(d.steer(Nanos(2 * MS), key(1), Bytes(100))).unwrap();
    assert!(a.overflow);
    assert_eq!(d.flow(&key(1)).unwrap().owner, WorkerId(0));
    d.worker_ready(WorkerId(1)).unwrap();
    assert_eq!(d.worker_ready(WorkerId(1)), Err(NotPending(WorkerId(1))));
    let s = d.steer(Nanos(3 * MS), key(2), Bytes(100));
    assert_eq!((s.worker(), start(s).map(|a| a.overflow)), (Some(WorkerId(1)), Some(false)));
    assert_eq!((d.counters().launches, d.counters().overflows), (1, 1));
}

#[test]
fn retire_waits_for_active_flowlets_and_the_next_flowlet_pulls_from_the_retired() {
    let mut d = director(DirectorConfig { retire_after: Nanos(5 * MS), replicas: 0, ..cfg(2) });
    set_reserved(&mut d, 0, 0.95);
    assert_eq!(d.steer(Nanos(0), key(1), Bytes(64)).worker(), Some(WorkerId(1)));
    set_reserved(&mut d, 0, 0.0);
    // Worker 0 stays busy with a long flowlet of its own.
    d.pool.get_mut(WorkerId(0)).unwrap().active_flowlets = 1;
    // A packet every 400 µs for 20 ms: the flowlet never ends, worker 1 is never retired.
    let mut t = 0;
    while t < 20 * MS {
        t += 400 * US;
        assert_eq!(start(d.steer(Nanos(t), key(1), Bytes(64))), None);
        let out = tick(&mut d, t);
        assert!(
            out.iter().all(|d| !matches!(d, Decision::Scale(ScaleDecision::Retire { .. }))),
            "at {t}: {out:?}"
        );
    }
    // The flowlet ends T after its last packet; worker 1 retires retire_after later.
    let last = t;
    let mut retired = None;
    let mut now = last;
    while retired.is_none() && now < last + 20 * MS {
        now += 500 * US;
        for dec in tick(&mut d, now) {
            if let Decision::Scale(ScaleDecision::Retire { worker, successor }) = dec {
                retired = Some((now, worker, successor));
            }
        }
    }
    let (at, worker, successor) = retired.unwrap();
    assert_eq!((worker, successor), (WorkerId(1), WorkerId(0)));
    assert!(at >= last + 500 * US + 5 * MS && at <= last + 500 * US + 6 * MS, "retired at {}", at - last);
    // The retired worker still holds the flow's state until the flow's next flowlet pulls it.
    assert_eq!(d.flow(&key(1)).unwrap().owner, WorkerId(1));
    assert_eq!((d.owned_by(WorkerId(1)), d.owned_by(WorkerId(0))), (1, 0));
    d.pool.get_mut(WorkerId(0)).unwrap().active_flowlets = 0;
    let a = start(d.steer(Nanos(now + MS), key(1), Bytes(64))).unwrap();
    assert_eq!(a.state, StateSource::Pull { from: WorkerId(1) });
    assert_eq!(d.flow(&key(1)).unwrap().owner, WorkerId(0));
    assert_eq!(d.owned_by(WorkerId(1)), 0, "the retired worker may now stop");
    assert_eq!(d.workers().len(), 1);
    assert_eq!(d.counters().retirements, 1);
}

#[test]
fn baselines_per_flow_and_periodic_reallocation() {
    // Worker 1 owns the flow (worker 0 was full at its first packet); then worker 0 empties
    // and fills again with another flowlet, so SNF would repack. Packets at these times (ms):
    // (49.9 → 50.1 is within one flowlet: only the reallocation cuts it.)
    let times = [0.0, 1.0, 2.0, 30.0, 49.9, 50.1, 51.0];
    struct Case {
        what: &'static str,
        policy: Policy,
        owners: [u16; 7],
        reasons: [Option<FlowletStart>; 7],
    }
    use FlowletStart::{Idle, NewFlow, Realloc};
    let cases = [
        Case {
            what: "per flow: never moves",
            policy: Policy::PerFlow,
            owners: [1, 1, 1, 1, 1, 1, 1],
            reasons: [Some(NewFlow), Some(Idle), Some(Idle), Some(Idle), Some(Idle), None, Some(Idle)],
        },
        Case {
            what: "realloc every 50 ms: moves at the first packet after 50 ms",
            policy: Policy::PerFlowRealloc { period: Nanos(50 * MS) },
            owners: [1, 1, 1, 1, 1, 0, 0],
            reasons: [
                Some(NewFlow),
                Some(Idle),
                Some(Idle),
                Some(Idle),
                Some(Idle),
                Some(Realloc),
                Some(Idle),
            ],
        },
        Case {
            what: "flowlets: moves at the first idle boundary",
            policy: Policy::Flowlet,
            owners: [1, 0, 0, 0, 0, 0, 0],
            reasons: [Some(NewFlow), Some(Idle), Some(Idle), Some(Idle), Some(Idle), None, Some(Idle)],
        },
    ];
    for c in cases {
        let mut d = director(DirectorConfig { policy: c.policy, replicas: 0, ..cfg(2) });
        set_reserved(&mut d, 0, 0.95);
        for (i, &ms) in times.iter().enumerate() {
            let now = (ms * MS as f64) as u64;
            tick(&mut d, now);
            // After the first packet worker 0 is half full: the packer prefers it (fuller by
            // more than α) whenever it repacks.
            if i == 1 {
                set_reserved(&mut d, 0, 0.5);
            }
            let s = d.steer(Nanos(now), key(1), Bytes(64));
            assert_eq!(s.worker(), Some(WorkerId(c.owners[i])), "{}: packet {i}", c.what);
            assert_eq!(start(s).map(|a| a.reason), c.reasons[i], "{}: packet {i}", c.what);
        }
        if c.policy != Policy::Flowlet {
            assert_eq!(d.counters().replications, 0, "{}", c.what);
        }
    }
}

#[test]
fn same_trace_same_decisions() {
    let run = || {
        let mut d = director(cfg(8));
        let mut rng = Rng::new(11);
        let mut log = Vec::new();
        let mut now = 0;
        for _ in 0..20_000 {
            now += rng.below(20 * US);
            let k = key(rng.below(300) as u16);
            log.push(format!("{:?}", d.steer(Nanos(now), k, Bytes(64 + rng.below(1400)))));
            if rng.below(50) == 0 {
                log.extend(tick(&mut d, now).iter().map(|x| format!("{x:?}")));
            }
        }
        log
    };
    assert_eq!(run(), run());
}

#[test]
fn an_idle_flowlet_is_measured_the_same_whoever_notices_its_end() {
    // The flowlet's end is found by a tick just after T, a tick much later, or the flow's next
    // packet: its measured rate (up to T after its last packet), hence the next estimate, is
    // the same.
    let second_demand = |tick_at: Option<u64>| {
        let mut d = director(cfg(1));
        d.steer(Nanos(0), key(1), Bytes(1000));
        d.steer(Nanos(100 * US), key(1), Bytes(1000));
        if let Some(t) = tick_at {
            tick(&mut d, t);
        }
        start(d.steer(Nanos(10 * MS), key(1), Bytes(1000))).map(|a| (a.reason, a.demand))
    };
    let by_packet = second_demand(None);
    assert_eq!(by_packet.map(|(r, _)| r), Some(FlowletStart::Idle));
    assert_eq!(second_demand(Some(601 * US)), by_packet);
    assert_eq!(second_demand(Some(9 * MS)), by_packet);
}

#[test]
fn load_in_packets_per_second() {
    let mut d = director(DirectorConfig { metric: crate::config::Metric::Packets, ..cfg(1) });
    for i in 0..50 {
        d.steer(Nanos(i * US), key(1), Bytes(1500));
    }
    tick(&mut d, 60 * US);
    // 50 packets in the 100 ms window: 500 packets/s.
    assert_eq!(d.workers()[0].drained.last_rate(), Rate(500.0));
}

#[test]
fn failed_worker_orphans_its_flows_and_state_comes_from_its_logger() {
    let mut d = director(cfg(2));
    // Flow 1 on worker 0 (running flowlet), flow 2 on worker 1 once worker 0 is full.
    assert_eq!(d.steer(Nanos(0), key(1), Bytes(100)).worker(), Some(WorkerId(0)));
    set_reserved(&mut d, 0, 0.95);
    assert_eq!(d.steer(Nanos(10 * US), key(2), Bytes(100)).worker(), Some(WorkerId(1)));
    set_reserved(&mut d, 0, 0.0);
    assert_eq!(d.worker_failed(WorkerId(0)), Ok(1));
    assert_eq!(d.worker_failed(WorkerId(0)), Err(NotActive(WorkerId(0))));
    assert_eq!(d.workers().iter().map(|w| w.id).collect::<Vec<_>>(), [WorkerId(1)]);
    // Within flow 1's flowlet: still cut, placed on worker 1, state from the logger.
    let s = d.steer(Nanos(20 * US), key(1), Bytes(100));
    assert_eq!(s.worker(), Some(WorkerId(1)));
    assert_eq!(
        start(s).map(|a| (a.reason, a.state)),
        Some((FlowletStart::Failover, StateSource::Recover { failed: WorkerId(0) }))
    );
    // The next packets continue the new flowlet; flow 2 never noticed.
    assert_eq!(start(d.steer(Nanos(30 * US), key(1), Bytes(100))), None);
    assert_eq!(start(d.steer(Nanos(40 * US), key(2), Bytes(100))), None);
    let c = d.counters();
    assert_eq!((c.failures, c.failover_starts, c.state_recover, c.flowlets, c.packets), (1, 1, 1, 3, 5));
    // No replication is ever asked from the failed worker.
    let mut all = Vec::new();
    for t in 1..10 {
        all.extend(tick(&mut d, t * 500 * US));
    }
    assert!(all.iter().all(|x| match x {
        Decision::Replicate(r) => r.from != WorkerId(0) && !r.to.contains(WorkerId(0)),
        Decision::Scale(_) => true,
    }));
}

#[test]
fn a_late_tick_still_replicates_before_ending_the_flowlet() {
    let mut d = director(cfg(3));
    d.steer(Nanos(0), key(1), Bytes(100));
    // The first tick comes 800 µs after the packet: past T/2 and past T.
    let out = tick(&mut d, 800 * US);
    let reps: Vec<_> = out.iter().filter(|x| matches!(x, Decision::Replicate(_))).collect();
    assert_eq!(reps.len(), 1, "{out:?}");
    let v = d.flow(&key(1)).unwrap();
    assert!(!v.flowlet_active);
    assert!(v.replicas.is_some_and(|r| !r.is_empty()));
    assert_eq!(d.counters().replications, 1);
    // Nothing more for this flow.
    assert!(tick(&mut d, 1600 * US).is_empty());
}

#[test]
fn packing_replica_choice_targets_where_the_packer_would_go() {
    let c = DirectorConfig { replica_choice: crate::config::ReplicaChoice::Packing, replicas: 2, ..cfg(5) };
    let mut d = director(c);
    d.steer(Nanos(0), key(1), Bytes(100));
    // Demand 0.1: workers 1 (0.95) and 4 (0.91) have no room; 3 (0.7) is the fullest with
    // room, then 2 (0.2).
    for (w, u) in [(1, 0.95), (2, 0.2), (3, 0.7), (4, 0.91)] {
        set_reserved(&mut d, w, u);
    }
    let out = tick(&mut d, 250 * US);
    match out.as_slice() {
        [Decision::Replicate(r)] => assert_eq!(r.to.as_slice(), [WorkerId(3), WorkerId(2)]),
        other => panic!("{other:?}"),
    }
    // The next flowlet, with the owner full, lands on a target: state in place.
    set_reserved(&mut d, 0, 0.95);
    let a = start(d.steer(Nanos(2 * MS), key(1), Bytes(100))).unwrap();
    assert_eq!(a.state, StateSource::Replica { from: WorkerId(0) });
}

#[test]
fn a_restarted_director_takes_over_saved_flows() {
    // The first director: flow 1 on worker 0, flow 2 on worker 1 (worker 0 full then).
    let mut old = director(cfg(2));
    assert_eq!(old.steer(Nanos(0), key(1), Bytes(100)).worker(), Some(WorkerId(0)));
    set_reserved(&mut old, 0, 0.95);
    assert_eq!(old.steer(Nanos(10 * US), key(2), Bytes(100)).worker(), Some(WorkerId(1)));
    for t in [20, 30] {
        old.steer(Nanos(t * US), key(1), Bytes(100));
    }
    let saved = old.saved_flows();
    assert_eq!(saved.len(), 2);
    let f1 = saved.iter().find(|s| s.flow == key(1)).unwrap();
    assert_eq!((f1.owner, f1.clock), (WorkerId(0), LogicalClock(3)));

    // A new director with one active worker restores them at its own time 5 ms.
    let mut new = director(cfg(1));
    assert_eq!(new.restore(Nanos(5 * MS), &saved, 1000), 2);
    assert_eq!(new.restore(Nanos(5 * MS), &saved, 1000), 0, "already tracked");
    assert_eq!(new.counters().new_flows, 0);
    // Flow 1's next packet starts a flowlet on its owner, the state is local, the clock
    // continues past the margin.
    let s = new.steer(Nanos(5 * MS + US), key(1), Bytes(100));
    assert_eq!((s.worker(), clock(s)), (Some(WorkerId(0)), 3 + 1000 + 1));
    assert_eq!(start(s).unwrap().state, StateSource::Local);
    // Flow 2's owner is not active here: its flowlet is packed on worker 0, which pulls the
    // state from worker 1 (still running, adopted by the caller).
    let s = new.steer(Nanos(5 * MS + 2 * US), key(2), Bytes(100));
    assert_eq!(s.worker(), Some(WorkerId(0)));
    assert_eq!(start(s).unwrap().state, StateSource::Pull { from: WorkerId(1) });
    assert_eq!(new.counters().new_flows, 0, "no flow started afresh");

    // Flow 2 now lives on worker 0 but started on worker 1 (its NAT mapping is from worker
    // 1's port share): a third director restored from the second's flows knows that too.
    let mut third = director(cfg(1));
    assert_eq!(third.restore(Nanos(6 * MS), &new.saved_flows(), 1000), 2);
    assert_eq!(third.flow(&key(2)).map(|r| r.owner), Some(WorkerId(0)));
    assert_eq!((third.started_on(WorkerId(0)), third.started_on(WorkerId(1))), (1, 1));
}

#[test]
fn a_launch_can_be_served_by_a_warm_worker_with_another_id() {
    let mut d = director(DirectorConfig { max_workers: 4, ..cfg(1) });
    set_reserved(&mut d, 0, 0.95);
    let out = tick(&mut d, MS);
    assert_eq!(out, vec![Decision::Scale(ScaleDecision::Launch(WorkerId(1)))]);
    assert!(d.redirect_launch(WorkerId(1), WorkerId(0)).is_err(), "an active worker cannot serve");
    assert!(d.redirect_launch(WorkerId(2), WorkerId(3)).is_err(), "not the pending launch");
    d.redirect_launch(WorkerId(1), WorkerId(3)).unwrap();
    assert_eq!(d.pending_launch(), Some(WorkerId(3)));
    d.worker_ready(WorkerId(3)).unwrap();
    assert_eq!(d.workers().iter().map(|w| w.id.0).collect::<Vec<_>>(), vec![0, 3]);
}

#[test]
fn an_idle_flowlet_releases_its_reservation_at_half_the_timeout() {
    for release in [false, true] {
        let mut d = director(DirectorConfig { release_idle_reservation: release, replicas: 0, ..cfg(1) });
        let k = key(7000);
        d.steer(Nanos(0), k, Bytes(100));
        let reserved = |d: &Director| d.pool.get(WorkerId(0)).unwrap().reserved.0;
        assert_eq!(reserved(&d), 0.1 * CAP);
        tick(&mut d, 260 * US);
        assert!(d.flow(&k).unwrap().flowlet_active, "the flowlet goes on until T");
        assert_eq!(reserved(&d), if release { 0.0 } else { 0.1 * CAP }, "release {release}");
        // A packet within T continues the flowlet; its end releases nothing twice.
        d.steer(Nanos(300 * US), k, Bytes(100));
        tick(&mut d, 2 * MS);
        assert!(!d.flow(&k).unwrap().flowlet_active);
        let w = d.pool.get(WorkerId(0)).unwrap();
        assert_eq!((w.reserved.0, w.active_flowlets), (0.0, 0), "release {release}");
    }
}

#[test]
fn a_size_cut_stays_on_its_worker_unless_that_worker_is_overloaded() {
    for (owner_util, want) in [(0.95, WorkerId(0)), (1.2, WorkerId(1))] {
        let mut d = director(DirectorConfig { size_cut_stays: true, ..cfg(2) });
        // Another flow keeps worker 0 busy (a worker with no flowlet has no reservation).
        d.steer(Nanos(0), key(7002), Bytes(100));
        let k = key(7001);
        for i in 0..10 {
            assert_eq!(d.steer(Nanos(i * US), k, Bytes(1500)).worker(), Some(WorkerId(0)));
        }
        // The flow's own flowlet is part of the owner's load; the cut ends it first.
        set_reserved(&mut d, 0, owner_util + 0.1);
        let s = d.steer(Nanos(10 * US), k, Bytes(1500));
        let a = start(s).expect("the 11th packet is a size cut");
        assert_eq!(a.reason, FlowletStart::Size);
        assert_eq!(s.worker(), Some(want), "owner at {owner_util}");
        let expected =
            if want == WorkerId(0) { StateSource::Local } else { StateSource::Pull { from: WorkerId(0) } };
        assert_eq!(a.state, expected);
    }
}

#[test]
fn flows_pulling_from_a_failed_worker_are_listed_with_their_puller() {
    let mut d = director(cfg(2));
    let k = key(7003);
    // Another flow keeps worker 0 busy so its reservation stays.
    d.steer(Nanos(0), key(7004), Bytes(100));
    assert_eq!(d.steer(Nanos(0), k, Bytes(100)).worker(), Some(WorkerId(0)));
    set_reserved(&mut d, 0, 1.5);
    let s = d.steer(Nanos(2 * MS), k, Bytes(100));
    assert_eq!(s.worker(), Some(WorkerId(1)));
    assert_eq!(start(s).map(|a| a.state), Some(StateSource::Pull { from: WorkerId(0) }));
    assert_eq!(d.pulling_from(WorkerId(0)), vec![(k, WorkerId(1))]);
    assert!(d.pulling_from(WorkerId(1)).is_empty());
}

#[test]
fn a_draining_worker_takes_no_new_flowlet_and_retires_when_its_last_one_ends() {
    let c =
        DirectorConfig { drain_utilisation: 0.8, retire_after: Nanos::from_secs(1), replicas: 0, ..cfg(3) };
    let mut d = director(c);
    // Workers 0 and 1 full: flow 1's flowlet goes to worker 2.
    set_reserved(&mut d, 0, 0.95);
    set_reserved(&mut d, 1, 0.95);
    assert_eq!(d.steer(Nanos(0), key(1), Bytes(64)).worker(), Some(WorkerId(2)));
    // The load falls: 0.5 + 0.5 + flow 1's 0.1 fits on two workers at 80 %. Worker 2 drains
    // (no decision to carry out yet: its flowlet runs).
    set_reserved(&mut d, 0, 0.5);
    set_reserved(&mut d, 1, 0.5);
    assert_eq!(tick(&mut d, 100 * US), vec![]);
    assert!(d.workers().iter().any(|w| w.id == WorkerId(2) && w.draining));
    // New flowlets go elsewhere, although worker 2 is the one with room to spare.
    for port in 2..6 {
        let s = d.steer(Nanos(200 * US), key(port), Bytes(64));
        assert_ne!(s.worker(), Some(WorkerId(2)), "flow {port}");
    }
    // Flow 1 keeps sending every 400 µs: its flowlet runs on, worker 2 stays.
    let mut t = 0;
    while t < 5 * MS {
        t += 400 * US;
        assert_eq!(start(d.steer(Nanos(t), key(1), Bytes(64))), None);
        assert_eq!(tick(&mut d, t), vec![], "at {t}");
    }
    // It stops: T (500 µs) later its flowlet ends and worker 2 retires at once, long before
    // retire_after (1 s).
    let (mut now, mut retired) = (t, None);
    while retired.is_none() && now < t + 5 * MS {
        now += 500 * US;
        for dec in tick(&mut d, now) {
            if let Decision::Scale(ScaleDecision::Retire { worker, .. }) = dec {
                retired = Some((now, worker));
            }
        }
    }
    let (at, worker) = retired.unwrap();
    assert_eq!(worker, WorkerId(2));
    assert!(at <= t + 1500 * US, "retired {} µs after the last packet", (at - t) / US);
    let c = d.counters();
    assert_eq!((d.workers().len(), c.drains, c.retirements, c.launches), (2, 1, 1, 0));
}

#[test]
fn a_draining_worker_serves_again_before_anything_overflows_or_launches() {
    let c = DirectorConfig { drain_utilisation: 0.8, max_workers: 3, replicas: 0, ..cfg(2) };
    // A flowlet that finds no room on the serving workers takes the draining one back.
    // (Worker 1 first gets a flowlet of flow 9, so that draining does not retire it at once.)
    let draining = |c: &DirectorConfig| {
        let mut d = director(c.clone());
        set_reserved(&mut d, 0, 0.95);
        assert_eq!(d.steer(Nanos(0), key(9), Bytes(64)).worker(), Some(WorkerId(1)));
        set_reserved(&mut d, 0, 0.0);
        assert_eq!(tick(&mut d, 100 * US), vec![]);
        assert!(d.workers().iter().any(|w| w.id == WorkerId(1) && w.draining));
        d
    };
    let mut d = draining(&c);
    set_reserved(&mut d, 0, 0.95);
    let a = start(d.steer(Nanos(200 * US), key(1), Bytes(64))).unwrap();
    assert_eq!((d.flow(&key(1)).unwrap().owner, a.overflow), (WorkerId(1), false));
    assert!(d.workers().iter().all(|w| !w.draining));
    // Serving workers all saturated while one drains: it serves again instead of a launch.
    let mut d = draining(&c);
    set_reserved(&mut d, 0, 0.95);
    assert_eq!(tick(&mut d, 200 * US), vec![], "no launch");
    assert!(d.workers().iter().all(|w| !w.draining));
    assert_eq!(d.counters().launches, 0);
    // With both saturated (flow 9's reservation counts on worker 1), a launch.
    set_reserved(&mut d, 1, 0.95);
    assert_eq!(tick(&mut d, 300 * US), vec![Decision::Scale(ScaleDecision::Launch(WorkerId(2)))]);
}

#[test]
fn flows_remember_the_worker_they_started_on_wherever_they_move() {
    let mut d = director(DirectorConfig { replicas: 0, ..cfg(2) });
    // Flow 1 starts on worker 0, flow 2 on worker 1 (worker 0 full).
    assert_eq!(d.steer(Nanos(0), key(1), Bytes(64)).worker(), Some(WorkerId(0)));
    set_reserved(&mut d, 0, 0.95);
    assert_eq!(d.steer(Nanos(0), key(2), Bytes(64)).worker(), Some(WorkerId(1)));
    assert_eq!((d.started_on(WorkerId(0)), d.started_on(WorkerId(1))), (1, 1));
    // Worker 0 fails: flow 1 recovers on worker 1 but still started on worker 0, whose NAT
    // share its mapping came from — a new process under id 0 must wait for it to go.
    set_reserved(&mut d, 0, 0.0);
    d.worker_failed(WorkerId(0)).unwrap();
    let a = start(d.steer(Nanos(MS), key(1), Bytes(64))).unwrap();
    assert_eq!(
        (a.state, d.flow(&key(1)).unwrap().owner),
        (StateSource::Recover { failed: WorkerId(0) }, WorkerId(1))
    );
    assert_eq!((d.started_on(WorkerId(0)), d.started_on(WorkerId(1)), d.owned_by(WorkerId(0))), (1, 1, 0));
    // Once the director forgets the flow, the id is free again.
    let idle = d.config().flow_idle_timeout.0;
    tick(&mut d, MS + idle + MS);
    tick(&mut d, MS + 2 * idle + 2 * MS);
    assert_eq!((d.started_on(WorkerId(0)), d.started_on(WorkerId(1))), (0, 0));
}
