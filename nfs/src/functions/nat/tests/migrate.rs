//! Scale-out: a flow's mapping moves from instance A to instance B (instances 0 and 1 of 2,
//! same configuration, clocks apart) and its packets translate on B exactly as on a single
//! instance that saw the whole sequence; ports stay each instance's own.

use super::*;
use crate::flow::FlowKey;
use crate::testutil::{build_instance, ctx, flow_of, move_flow};

/// B's clock reads this much more than A's.
const SKEW: Nanos = Nanos::from_secs(1_000_000);

/// (seconds, ingress, frame)
type Timed = Vec<(u64, u16, Vec<u8>)>;

fn named(nat: &Nat) -> std::collections::BTreeMap<&'static str, u64> {
    let mut r = Report::default();
    nat.report(&mut r);
    r.counters.into_iter().collect()
}

struct Case {
    name: &'static str,
    /// The public port (the inside port, preserved).
    public: u16,
    before: Timed,
    after: Timed,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "udp",
            public: 5000,
            before: vec![(0, IN, udp4(HOST_A, 5000, R1, 53, b"q")), (1, OUT, udp4(R1, 53, PUB, 5000, b"r"))],
            after: vec![
                (100, IN, udp4(HOST_A, 5000, R1, 53, b"q2")),
                (120, OUT, udp4(R2, 53, PUB, 5000, b"filtered")),
                (250, OUT, udp4(R1, 53, PUB, 5000, b"r2")),
                (399, OUT, udp4(R1, 53, PUB, 5000, b"r3")),
                (401, OUT, udp4(R1, 53, PUB, 5000, b"late")),
            ],
        },
        Case {
            name: "tcp",
            public: 6000,
            before: vec![
                (0, IN, tcp4(HOST_A, 6000, R1, 80, SYN)),
                (1, OUT, tcp4(R1, 80, PUB, 6000, SYNACK)),
                (2, IN, tcp4(HOST_A, 6000, R1, 80, ACK)),
            ],
            after: vec![
                // Established: well past the transitory timeout.
                (1000, OUT, tcp4(R1, 80, PUB, 6000, ACK)),
                (1001, IN, tcp4(HOST_A, 6000, R1, 80, FINACK)),
                (1002, OUT, tcp4(R1, 80, PUB, 6000, FINACK)),
                (1003, IN, tcp4(HOST_A, 6000, R1, 80, ACK)),
                (1003 + 241, OUT, tcp4(R1, 80, PUB, 6000, ACK)),
            ],
        },
        Case {
            name: "icmp echo",
            public: 7000,
            before: vec![(0, IN, icmp_echo4(HOST_A, R1, 7000, 1))],
            after: vec![
                (30, OUT, echo_reply(R1, PUB, 7000)),
                (50, IN, icmp_echo4(HOST_A, R1, 7000, 2)),
                (100, OUT, echo_reply(R1, PUB, 7000)),
            ],
        },
    ]
}

#[test]
fn a_moved_flow_translates_on_the_importer_as_on_one_instance() {
    for case in cases() {
        let (mut a, mut b) = (build_instance::<Nat>(BASE, 0, 2), build_instance::<Nat>(BASE, 1, 2));
        let mut reference = build_instance::<Nat>(BASE, 0, 2);
        let flow: FlowKey = flow_of(&case.before[0].2, IN);
        for (t, ingress, f) in &case.before {
            assert_eq!(
                run(&mut a, s(*t), *ingress, f),
                run(&mut reference, s(*t), *ingress, f),
                "{}",
                case.name
            );
        }
        let at = case.before.last().map_or(0, |x| x.0);
        let before = named(&reference);
        move_flow(&mut a, s(at), &mut b, s(at).saturating_add(SKEW), &flow);
        for (t, ingress, f) in &case.after {
            let on_b = run(&mut b, s(*t).saturating_add(SKEW), *ingress, f);
            let want = run(&mut reference, s(*t), *ingress, f);
            assert_eq!(on_b, want, "{} at {t}", case.name);
            if *ingress == IN && !matches!(on_b.0, Verdict::Drop(_)) {
                let (src, sport, _, _) = verified(&on_b.1);
                assert_eq!((src, sport), (PUB, case.public), "{}: same public port", case.name);
            }
        }
        // Counter deltas: B counted exactly what the reference counted after the move.
        let delta: std::collections::BTreeMap<_, _> = named(&reference)
            .into_iter()
            .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0)))
            .collect();
        assert_eq!(named(&b), delta, "{}", case.name);
    }
}

const SMALL: &str = r#"
inside = "inside"
public = "203.0.113.1"
ports = "1024-1027"
mappings = 64
"#;

const HOST_C: [u8; 4] = [192, 168, 1, 12];
const HOST_D: [u8; 4] = [192, 168, 1, 13];

/// Housekeeping at `now` until the sweep has seen every slot.
fn sweep(nat: &mut Nat, now: Nanos) {
    for _ in 0..4 {
        nat.housekeeping(&ctx(now));
    }
}

fn public_port(v: &(Verdict, Vec<u8>)) -> u16 {
    assert_eq!(v.0, Verdict::Continue);
    verified(&v.1).1
}

#[test]
fn the_exporter_holds_a_moved_port_and_the_importer_never_pools_a_foreign_one() {
    let (mut a, mut b) = (build_instance::<Nat>(SMALL, 0, 2), build_instance::<Nat>(SMALL, 1, 2));
    assert_eq!((a.free_ports(17), b.free_ports(17)), (2, 2), "the pool split by instance");
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    assert!((1024..=1025).contains(&pa), "A's share");
    move_flow(&mut a, s(10), &mut b, s(10).saturating_add(SKEW), &flow_of(&out, IN));
    // B translates the reply to the inside host, and its own pool is untouched.
    let (v, f) = run(&mut b, s(20).saturating_add(SKEW), OUT, &udp4(R1, 53, PUB, pa, b"r"));
    assert_eq!((v, verified(&f)), (Verdict::Continue, (R1, 53, HOST_A, 5000)));
    assert_eq!(b.free_ports(17), 2);
    // A packet still reaching A translates, but no longer refreshes the mapping.
    assert_eq!(public_port(&run(&mut a, s(100), IN, &out)), pa);
    sweep(&mut a, s(301));
    assert_eq!((a.mappings(s(301)), a.free_ports(17)), (0, 1), "expired, port held");
    let pb = public_port(&run(&mut a, s(302), IN, &udp4(HOST_B, 5000, R1, 53, b"q")));
    assert_ne!(pa, pb);
    let c = udp4(HOST_C, 5000, R1, 53, b"q");
    assert_eq!(run(&mut a, s(303), IN, &c).0, drop(DropReason::NatPoolExhausted), "held port not handed out");
    // HOST_B's mapping expires before the hold ends: its port is the one handed out.
    sweep(&mut a, s(301 + 7439));
    assert_eq!(public_port(&run(&mut a, s(301 + 7439), IN, &c)), pb, "still held");
    sweep(&mut a, s(301 + 7440));
    let d = udp4(HOST_D, 5000, R1, 53, b"q");
    assert_eq!(public_port(&run(&mut a, s(301 + 7441), IN, &d)), pa, "released after the hold");
    // On B the foreign mapping lives while refreshed, then expires without its port
    // entering B's pool: B hands out only its own two ports.
    let t = |x: u64| s(x).saturating_add(SKEW);
    assert_eq!(public_port(&run(&mut b, t(200), IN, &out)), pa);
    sweep(&mut b, t(450));
    assert_eq!(b.mappings(t(450)), 1, "refreshed on B");
    sweep(&mut b, t(501));
    assert_eq!((b.mappings(t(501)), b.free_ports(17)), (0, 2));
    let mut got = Vec::new();
    for h in [HOST_B, HOST_C] {
        got.push(public_port(&run(&mut b, t(502), IN, &udp4(h, 5000, R1, 53, b"q"))));
    }
    got.sort_unstable();
    assert_eq!(got, [1026, 1027]);
    assert_eq!(
        run(&mut b, t(503), IN, &udp4(HOST_D, 5000, R1, 53, b"q")).0,
        drop(DropReason::NatPoolExhausted)
    );
}

#[test]
fn a_mapping_imported_back_is_live_again() {
    let (mut a, mut b) = (build_instance::<Nat>(SMALL, 0, 2), build_instance::<Nat>(SMALL, 1, 2));
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let flow = flow_of(&out, IN);
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    move_flow(&mut a, s(10), &mut b, s(10).saturating_add(SKEW), &flow);
    move_flow(&mut b, s(20).saturating_add(SKEW), &mut a, s(20), &flow);
    // Refreshed again on A (the moved mapping would have expired at 300).
    assert_eq!(public_port(&run(&mut a, s(250), IN, &out)), pa);
    let (v, f) = run(&mut a, s(500), OUT, &udp4(R1, 53, PUB, pa, b"r"));
    assert_eq!((v, verified(&f)), (Verdict::Continue, (R1, 53, HOST_A, 5000)));
    // And its port goes straight back to the pool when it expires: no hold.
    sweep(&mut a, s(551));
    assert_eq!((a.mappings(s(551)), a.free_ports(17)), (0, 2));
}

#[test]
fn an_expired_moved_mapping_imported_back_takes_its_port_out_of_the_hold() {
    let (mut a, mut b) = (build_instance::<Nat>(SMALL, 0, 2), build_instance::<Nat>(SMALL, 1, 2));
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let flow = flow_of(&out, IN);
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    move_flow(&mut a, s(0), &mut b, s(0), &flow);
    assert_eq!(public_port(&run(&mut b, s(290), IN, &out)), pa);
    sweep(&mut a, s(301));
    assert_eq!(a.free_ports(17), 1, "held");
    move_flow(&mut b, s(400), &mut a, s(400), &flow);
    assert_eq!(a.mappings(s(400)), 1);
    let (v, f) = run(&mut a, s(401), OUT, &udp4(R1, 53, PUB, pa, b"r"));
    assert_eq!((v, verified(&f)), (Verdict::Continue, (R1, 53, HOST_A, 5000)));
    sweep(&mut a, s(400 + 7441));
    assert_eq!(a.free_ports(17), 2, "the hold is over and the mapping expired: both ports free");
}

#[test]
fn a_port_forward_connection_continues_on_the_importer() {
    let cfg = format!("{BASE}\n[[forward]]\nproto = \"tcp\"\npublic_port = 8080\nto = \"192.168.1.20:80\"\n");
    let (mut a, mut b) = (build_instance::<Nat>(&cfg, 0, 2), build_instance::<Nat>(&cfg, 1, 2));
    let syn = tcp4(R1, 4000, PUB, 8080, SYN);
    let flow = flow_of(&syn, OUT);
    let (v, f) = run(&mut a, s(0), OUT, &syn);
    assert_eq!((v, verified(&f)), (Verdict::Continue, (R1, 4000, [192, 168, 1, 20], 80)));
    // Forwards keep no per-flow state: nothing to move, and B translates the same.
    assert!(!a.export_flow(&flow, &ctx(s(1)), &mut Vec::new()));
    for (ingress, frame) in
        [(IN, tcp4([192, 168, 1, 20], 80, R1, 4000, SYNACK)), (OUT, tcp4(R1, 4000, PUB, 8080, ACK))]
    {
        assert_eq!(run(&mut b, s(2), ingress, &frame), run(&mut a, s(2), ingress, &frame));
    }
}

#[test]
fn damaged_or_foreign_records_are_refused_with_nothing_changed() {
    let mut a = build_instance::<Nat>(SMALL, 0, 2);
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let flow = flow_of(&out, IN);
    run(&mut a, s(0), IN, &out);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(s(1)), &mut blob));
    let mut b = build_instance::<Nat>(SMALL, 1, 2);
    let unchanged = |b: &Nat| (b.mappings(s(2)), b.free_ports(17), named(b));
    let fresh = unchanged(&b);
    for n in 0..blob.len() {
        assert!(b.import_flow(&flow, &ctx(s(2)), &blob[..n]).is_err(), "truncated to {n}");
        assert_eq!(unchanged(&b), fresh);
    }
    for i in 0..blob.len() {
        for bit in [0x01, 0x80, 0xff] {
            let mut bad = blob.clone();
            bad[i] ^= bit;
            assert!(b.import_flow(&flow, &ctx(s(2)), &bad).is_err(), "byte {i} ^ {bit:#x}");
            assert_eq!(unchanged(&b), fresh);
        }
    }
    // The record for another flow, or into a NAT with another pool, is refused too.
    let other = flow_of(&udp4(HOST_B, 5000, R1, 53, b"q"), IN);
    assert!(matches!(b.import_flow(&other, &ctx(s(2)), &blob), Err(ImportError::Malformed(_))));
    let mut elsewhere = build_instance::<Nat>(&SMALL.replace("203.0.113.1", "203.0.113.9"), 1, 2);
    assert!(matches!(elsewhere.import_flow(&flow, &ctx(s(2)), &blob), Err(ImportError::Config(_))));
    assert_eq!(unchanged(&b), fresh);
    b.import_flow(&flow, &ctx(s(2)), &blob).unwrap();
    assert_eq!(b.mappings(s(2)), 1);
}

#[test]
fn an_import_replaces_the_importers_own_mapping_of_the_endpoint() {
    let (mut a, mut b) = (build_instance::<Nat>(SMALL, 0, 2), build_instance::<Nat>(SMALL, 1, 2));
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    // B mapped the same inside endpoint itself (another flow of it), from its own share.
    let pb = public_port(&run(&mut b, s(0), IN, &udp4(HOST_A, 5000, R2, 53, b"q")));
    assert!((1026..=1027).contains(&pb));
    assert_eq!(b.free_ports(17), 1);
    move_flow(&mut a, s(1), &mut b, s(1), &flow_of(&out, IN));
    // One mapping, A's port; B's own port back in its pool.
    assert_eq!((b.mappings(s(1)), b.free_ports(17)), (1, 2));
    assert_eq!(public_port(&run(&mut b, s(2), IN, &out)), pa);
    assert_eq!(run(&mut b, s(2), OUT, &udp4(R2, 53, PUB, pb, b"r")).0, drop(DropReason::NatNoMapping));
}

#[test]
fn an_abandoned_move_is_undone_by_importing_the_record_back() {
    let mut a = build_instance::<Nat>(SMALL, 0, 2);
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let flow = flow_of(&out, IN);
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(s(10)), &mut blob));
    a.import_flow(&flow, &ctx(s(10)), &blob).unwrap();
    // Moved again, left to expire unswept, then imported back: its port came out of the hold.
    let mut again = Vec::new();
    assert!(a.export_flow(&flow, &ctx(s(11)), &mut again));
    let mut b = build_instance::<Nat>(SMALL, 1, 2);
    b.import_flow(&flow, &ctx(s(11)), &again).unwrap();
    assert_eq!(public_port(&run(&mut b, s(200), IN, &out)), pa);
    let mut back = Vec::new();
    assert!(b.export_flow(&flow, &ctx(s(310)), &mut back));
    a.import_flow(&flow, &ctx(s(310)), &back).unwrap();
    assert_eq!(a.free_ports(17), 1);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(s(320)), &mut blob));
    a.import_flow(&flow, &ctx(s(320)), &blob).unwrap();
    // Live again: refreshed at 450, still there at 700.
    assert_eq!(public_port(&run(&mut a, s(450), IN, &out)), pa);
    sweep(&mut a, s(700));
    assert_eq!(a.mappings(s(700)), 1);
}

#[test]
fn replies_to_an_imported_mapping_steer_to_the_core_that_imported_it() {
    let mut a = build_instance::<Nat>(SMALL, 0, 2);
    let mut b = two_cores_of(SMALL, crate::ids::Instance::new(1, 2).unwrap());
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow_of(&out, IN), &ctx(s(1)), &mut blob));
    let core1 = Ctx { now: s(1), core: CoreId(1) };
    b[1].import_flow(&flow_of(&out, IN), &core1, &blob).unwrap();
    let reply = udp4(R1, 53, PUB, pa, b"r");
    let meta = parse(&reply, PortId(OUT), &ParsePolicy::default()).unwrap();
    for core in &b {
        assert_eq!(core.steer(&meta, &reply), Some(CoreId(1)), "every core steers the reply to core 1");
    }
    let (v, f) = run_on(&mut b[1], s(2), 1, OUT, &reply);
    assert_eq!((v, verified(&f)), (Verdict::Continue, (R1, 53, HOST_A, 5000)));
}

#[test]
fn the_flow_after_the_nat_is_the_translated_tuple() {
    let cfg =
        format!("{SMALL}\n[[forward]]\nproto = \"tcp\"\npublic_port = 8080\nto = \"192.168.1.20:80\"\n");
    let mut nat = build_instance::<Nat>(&cfg, 0, 2);
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let pa = public_port(&run(&mut nat, s(0), IN, &out));
    let echo = icmp_echo4(HOST_A, R1, 7, 1);
    let (v, f) = run(&mut nat, s(0), IN, &echo);
    assert_eq!(v, Verdict::Continue);
    let id = verified(&f).1;
    let key = |f: &[u8], ingress| flow_of(f, ingress);
    let cases = [
        ("outbound", key(&out, IN), key(&udp4(PUB, pa, R1, 53, b""), OUT)),
        ("reply", key(&udp4(R1, 53, PUB, pa, b""), OUT), key(&out, IN)),
        ("echo", key(&echo, IN), key(&icmp_echo4(PUB, R1, id, 1), OUT)),
        (
            "forward",
            key(&tcp4(R1, 4000, PUB, 8080, SYN), OUT),
            key(&tcp4(R1, 4000, [192, 168, 1, 20], 80, SYN), OUT),
        ),
        (
            "forward reply",
            key(&tcp4([192, 168, 1, 20], 80, R1, 4000, ACK), IN),
            key(&tcp4(PUB, 8080, R1, 4000, ACK), IN),
        ),
        ("unknown", key(&udp4(HOST_B, 1, R1, 2, b""), IN), key(&udp4(HOST_B, 1, R1, 2, b""), IN)),
    ];
    for (name, before, after) in cases {
        assert_eq!(nat.flow_after(&before, s(1)), after, "{name}");
    }
    // Expired: nothing to translate by.
    assert_eq!(nat.flow_after(&key(&out, IN), s(301)), key(&out, IN));
}

#[test]
fn a_copy_leaves_the_mapping_live_on_the_exporter() {
    let (mut a, mut b) = (build_instance::<Nat>(SMALL, 0, 2), build_instance::<Nat>(SMALL, 1, 2));
    let out = udp4(HOST_A, 5000, R1, 53, b"q");
    let flow = flow_of(&out, IN);
    let pa = public_port(&run(&mut a, s(0), IN, &out));
    // A replica (or an output logger's record): the same bytes an export writes…
    let (mut copy, mut moved) = (Vec::new(), Vec::new());
    assert!(a.copy_flow(&flow, &ctx(s(10)), &mut copy));
    let mut probe = build_instance::<Nat>(SMALL, 0, 2);
    run(&mut probe, s(0), IN, &out);
    assert!(probe.export_flow(&flow, &ctx(s(10)), &mut moved));
    assert_eq!(copy, moved);
    // …and B can take the flow over with it.
    b.import_flow(&flow, &ctx(s(10).saturating_add(SKEW)), &copy).unwrap();
    let (v, f) = run(&mut b, s(20).saturating_add(SKEW), OUT, &udp4(R1, 53, PUB, pa, b"r"));
    assert_eq!((v, verified(&f)), (Verdict::Continue, (R1, 53, HOST_A, 5000)));
    // But on A the mapping is still refreshed (a moved one would expire at 300) and its port
    // returns straight to the pool when it expires: no hold.
    assert_eq!(public_port(&run(&mut a, s(250), IN, &out)), pa);
    sweep(&mut a, s(500));
    assert_eq!(a.mappings(s(500)), 1, "refreshed at 250");
    sweep(&mut a, s(551));
    assert_eq!((a.mappings(s(551)), a.free_ports(17)), (0, 2));
}
