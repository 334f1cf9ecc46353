//! Scale-out migration of every migrating NF but the NAT (`nat/tests/migrate.rs`), table by
//! table: a flow starts on instance A, its state moves to instance B, and B then behaves as a
//! single instance that saw the whole flow would (`testutil::check_move`), where a B without
//! the state would not.

use crate::drop::DropReason;
use crate::functions::whitelist::Whitelist;
use crate::functions::{firewall::Firewall, ids::Ids, lb::Lb, monitor::Monitor, policer::Policer};
use crate::nf::{ImportError, NetworkFunction, Verdict};
use crate::testutil::{build_instance, check_move, ctx, flow_of, move_flow, tcp4, udp4, MoveCase, SKEW};
use crate::time::Nanos;

const IN: u16 = 0;
const OUT: u16 = 1;
const HOST: [u8; 4] = [10, 0, 0, 5];
const REMOTE: [u8; 4] = [198, 51, 100, 7];
const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FINACK: u8 = 0x11;

const FIREWALL: &str = r#"
default = "deny"
[[rule]]
action = "allow"
proto = "tcp"
ingress = "inside"
"#;

#[test]
fn firewall_connection_moves_with_its_tcp_phase() {
    let t = |flags| tcp4(HOST, 40000, REMOTE, 80, flags);
    let r = |flags| tcp4(REMOTE, 80, HOST, 40000, flags);
    let case = MoveCase {
        name: "firewall",
        config: FIREWALL,
        before: vec![(0, IN, t(SYN)), (1, OUT, r(SYNACK)), (2, IN, t(ACK))],
        // Established: the reply passes long after the transitory timeout, then teardown.
        after: vec![(1000, OUT, r(ACK)), (1001, IN, t(FINACK)), (1002, OUT, r(FINACK)), (1003, IN, t(ACK))],
    };
    check_move::<Firewall>(&case, true, |_| {});
}

#[test]
fn firewall_refuses_a_connection_of_a_rule_it_does_not_have() {
    let syn = tcp4(HOST, 40000, REMOTE, 80, SYN);
    let flow = flow_of(&syn, IN);
    let mut a: Firewall = build_instance(FIREWALL, 0, 2);
    crate::testutil::run_out(&mut a, Nanos::ZERO, IN, &syn);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(Nanos::ZERO), &mut blob));
    let mut fewer: Firewall = build_instance("default = \"allow\"", 1, 2);
    assert!(matches!(fewer.import_flow(&flow, &ctx(Nanos::ZERO), &blob), Err(ImportError::Config(_))));
    // A record of another kind is refused by its tag.
    let mut w: Whitelist = build_instance(r#"outside = "outside""#, 1, 2);
    assert_eq!(
        w.import_flow(&flow, &ctx(Nanos::ZERO), &blob),
        Err(ImportError::WrongKind {
            got: crate::state::wire::tag::FIREWALL,
            want: crate::state::wire::tag::WHITELIST
        })
    );
}

/// One packet per flow direction and second, bucket of one: green passes, red drops.
const POLICER: &str = r#"
[[class]]
name = "c"
unit = "packets"
cir = 1
cbs = 1
per = "flow"
green = { kind = "pass" }
yellow = { kind = "drop" }
red = { kind = "drop" }

[[rule]]
class = "c"
"#;

#[test]
fn policer_bucket_level_survives_the_move() {
    let out = || udp4(HOST, 4000, REMOTE, 53, b"q");
    let reply = || udp4(REMOTE, 53, HOST, 4000, b"a");
    let case = MoveCase {
        name: "policer",
        config: POLICER,
        // Drained on A (the second packet is out of profile) and the reply direction used.
        before: vec![(0, IN, out()), (0, IN, out()), (0, OUT, reply())],
        // Still out of profile on B in both directions; refilled a second later.
        after: vec![(0, IN, out()), (0, OUT, reply()), (1, IN, out()), (1, IN, out())],
    };
    let (mut b, _) = check_move::<Policer>(&case, true, |_| {});
    let v = crate::testutil::run_out(&mut b, Nanos::from_secs(1).saturating_add(SKEW), IN, &out()).0;
    assert_eq!(v, Verdict::Drop(DropReason::Policed));
}

#[test]
fn ids_detects_a_signature_split_across_the_move() {
    let cfg = r#"
mode = "ips"
rules = ['''drop udp any any -> any any (msg:"split"; content:"EVILPAYLOAD"; sid:1;)''']
"#;
    let case = MoveCase {
        name: "ids",
        config: cfg,
        before: vec![
            (0, IN, udp4(HOST, 4000, REMOTE, 53, b"xxEVIL")),
            (0, OUT, udp4(REMOTE, 53, HOST, 4000, b"EVIL")),
        ],
        after: vec![
            (1, IN, udp4(HOST, 4000, REMOTE, 53, b"PAYLOADxx")),
            (2, OUT, udp4(REMOTE, 53, HOST, 4000, b"PAYLOAD")),
        ],
    };
    check_move::<Ids>(&case, true, |_| {});
}

#[test]
fn lb_connection_keeps_its_backend_when_the_importer_drains_it() {
    let cfg = "flows = 1024\nidle_timeout = 10\n[[vip]]\naddr = \"192.0.2.10:80\"\nproto = \"tcp\"\n\
               [[vip.backend]]\naddr = \"10.1.0.1:8080\"\n[[vip.backend]]\naddr = \"10.1.0.2:8080\"\n\
               [[vip.backend]]\naddr = \"10.1.0.3:8080\"\n";
    let c = |flags| tcp4([10, 100, 0, 1], 20000, [192, 0, 2, 10], 80, flags);
    let case = MoveCase {
        name: "lb",
        config: cfg,
        before: vec![(0, IN, c(SYN))],
        after: vec![(1, IN, c(ACK)), (2, IN, c(ACK))],
    };
    // Every backend draining on B: only a pinned connection still has one.
    check_move::<Lb>(&case, true, |lb| {
        for i in 1..=3 {
            lb.set_draining(format!("10.1.0.{i}:8080").parse().unwrap(), true).unwrap();
        }
    });
}

#[test]
fn udp_whitelist_keeps_the_opened_reverse_direction() {
    let case = MoveCase {
        name: "udp_whitelist",
        config: r#"outside = "outside""#,
        before: vec![(0, IN, udp4(HOST, 40000, REMOTE, 53, b"q"))],
        after: vec![
            (1, OUT, udp4(REMOTE, 53, HOST, 40000, b"a")),
            (2, OUT, udp4(REMOTE, 53, HOST, 40000, b"b")),
        ],
    };
    check_move::<Whitelist>(&case, true, |_| {});
}

#[test]
fn monitor_flow_counters_continue_on_the_importer() {
    let out = udp4(HOST, 4000, REMOTE, 53, b"q");
    let case = MoveCase {
        name: "monitor",
        config: "flows = 1024",
        before: vec![(0, IN, out.clone()), (1, OUT, udp4(REMOTE, 53, HOST, 4000, b"answer"))],
        after: vec![(5, IN, out.clone())],
    };
    // Counting changes no verdict: the state shows in the flow's counters.
    let (b, reference) = check_move::<Monitor>(&case, false, |_| {});
    let key = flow_of(&out, IN);
    let (on_b, want) = (b.flow(&key, SKEW).unwrap(), reference.flow(&key, Nanos::ZERO).unwrap());
    assert_eq!((on_b.packets, on_b.bytes), (want.packets, want.bytes));
    assert_eq!(on_b.packets, [2, 1]);
    assert_eq!(on_b.first_seen, want.first_seen + SKEW.0, "first seen, on B's clock");
}

#[test]
fn a_full_table_refuses_an_import_without_change() {
    let cfg = r#"outside = "outside"
flows = 1
full_policy = "refuse""#;
    let (mut a, mut b): (Whitelist, Whitelist) = (build_instance(cfg, 0, 2), build_instance(cfg, 1, 2));
    let first = udp4(HOST, 40000, REMOTE, 53, b"q");
    let other = udp4(HOST, 40001, REMOTE, 53, b"q");
    crate::testutil::run_out(&mut a, Nanos::ZERO, IN, &first);
    crate::testutil::run_out(&mut b, Nanos::ZERO, IN, &other);
    let flow = flow_of(&first, IN);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(Nanos::ZERO), &mut blob));
    assert_eq!(b.import_flow(&flow, &ctx(Nanos::ZERO), &blob), Err(ImportError::Full));
    assert_eq!(b.flows(Nanos::ZERO), 1);
    // Re-importing over an entry the table already holds needs no room.
    move_flow(&mut a, Nanos::ZERO, &mut a_clone(cfg, &first), Nanos::ZERO, &flow);
}

/// An instance holding `frame`'s flow already.
fn a_clone(cfg: &str, frame: &[u8]) -> Whitelist {
    let mut w: Whitelist = build_instance(cfg, 1, 2);
    crate::testutil::run_out(&mut w, Nanos::ZERO, IN, frame);
    w
}

/// Valid records of `N` with random bytes changed and the check value made right again: the
/// fields themselves are then what the importer sees. Whatever it accepts, packets and
/// housekeeping afterwards must not panic.
fn mutated_records_never_panic<N: NetworkFunction>(config: &str, frames: &[(u16, Vec<u8>)]) {
    let mut a: N = build_instance(config, 0, 2);
    let mut b: N = build_instance(config, 1, 2);
    for (ingress, f) in frames {
        crate::testutil::run_out(&mut a, Nanos::ZERO, *ingress, f);
    }
    let flow = flow_of(&frames[0].1, frames[0].0);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(Nanos::ZERO), &mut blob));
    let body = &blob[..blob.len() - 4];
    let mut rng = crate::rng::Rng::new(7);
    let mut accepted = 0;
    for round in 0..2000u64 {
        let mut bad = body.to_vec();
        for _ in 0..1 + rng.next_u64() % 3 {
            let i = (rng.next_u64() as usize) % bad.len();
            bad[i] = rng.next_u64() as u8;
        }
        let mut sealed = Vec::new();
        let mut w = crate::state::wire::Writer::new(&mut sealed);
        w.bytes(&bad);
        w.seal();
        let now = Nanos::from_secs(round);
        if b.import_flow(&flow, &ctx(now), &sealed).is_ok() {
            accepted += 1;
        }
        for (ingress, f) in frames {
            crate::testutil::run_out(&mut b, now, *ingress, f);
            crate::testutil::run_out(&mut b, now, 1 - *ingress, f);
        }
        b.housekeeping(&ctx(now));
    }
    assert!(accepted > 0, "some changed records are still well-formed");
}

#[test]
fn re_sealed_mutations_of_every_record_kind_never_panic() {
    let udp = || udp4(HOST, 4000, REMOTE, 53, b"xxEVIL");
    let nat = "inside = \"inside\"\npublic = \"203.0.113.1\"\nmappings = 64";
    mutated_records_never_panic::<crate::functions::nat::Nat>(
        nat,
        &[(IN, udp()), (OUT, udp4(REMOTE, 53, [203, 0, 113, 1], 4000, b"r"))],
    );
    mutated_records_never_panic::<Firewall>(FIREWALL, &[(IN, tcp4(HOST, 40000, REMOTE, 80, SYN))]);
    mutated_records_never_panic::<Policer>(
        POLICER,
        &[(IN, udp()), (OUT, udp4(REMOTE, 53, HOST, 4000, b"a"))],
    );
    let ids = "rules = ['''alert udp any any -> any any (msg:\"split\"; content:\"EVILPAYLOAD\"; sid:1;)''']";
    mutated_records_never_panic::<Ids>(ids, &[(IN, udp())]);
    let lb = "flows = 64\n[[vip]]\naddr = \"192.0.2.10:53\"\nproto = \"udp\"\n[[vip.backend]]\naddr = \"10.1.0.1:53\"\n";
    mutated_records_never_panic::<Lb>(lb, &[(IN, udp4(HOST, 4000, [192, 0, 2, 10], 53, b"q"))]);
    mutated_records_never_panic::<Whitelist>(r#"outside = "outside""#, &[(IN, udp())]);
    mutated_records_never_panic::<Monitor>("flows = 64", &[(IN, udp())]);
}

#[test]
fn counters_that_could_overflow_are_refused() {
    let out = udp4(HOST, 4000, REMOTE, 53, b"q");
    let flow = flow_of(&out, IN);
    let mut a: Monitor = build_instance("flows = 64", 0, 2);
    crate::testutil::run_out(&mut a, Nanos::ZERO, IN, &out);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(Nanos::ZERO), &mut blob));
    // header 2, count 1, place 1, time left 8: the first counter follows.
    let mut body = blob[..blob.len() - 4].to_vec();
    body[12..20].copy_from_slice(&u64::MAX.to_ne_bytes());
    let mut sealed = Vec::new();
    let mut w = crate::state::wire::Writer::new(&mut sealed);
    w.bytes(&body);
    w.seal();
    let mut b: Monitor = build_instance("flows = 64", 1, 2);
    assert_eq!(b.import_flow(&flow, &ctx(Nanos::ZERO), &sealed), Err(ImportError::Malformed("flow counter")));
}

#[test]
fn ids_refuses_an_automaton_state_its_rules_never_reach() {
    let cfg = r#"rules = ['''alert udp any any -> any any (msg:"x"; content:"EVILPAYLOAD"; sid:1;)''']"#;
    let out = udp4(HOST, 4000, REMOTE, 53, b"xxEVIL");
    let flow = flow_of(&out, IN);
    let mut a: Ids = build_instance(cfg, 0, 2);
    crate::testutil::run_out(&mut a, Nanos::ZERO, IN, &out);
    let mut blob = Vec::new();
    assert!(a.export_flow(&flow, &ctx(Nanos::ZERO), &mut blob));
    // header 2, count 1, place 1, time left 8: the lo→hi automaton state follows.
    let mut body = blob[..blob.len() - 4].to_vec();
    body[12..16].copy_from_slice(&0x00ff_fff0u32.to_ne_bytes());
    let mut sealed = Vec::new();
    let mut w = crate::state::wire::Writer::new(&mut sealed);
    w.bytes(&body);
    w.seal();
    let mut b: Ids = build_instance(cfg, 1, 2);
    assert!(matches!(b.import_flow(&flow, &ctx(Nanos::ZERO), &sealed), Err(ImportError::Config(_))));
    b.import_flow(&flow, &ctx(Nanos::ZERO), &blob).unwrap();
}

#[test]
fn the_flow_after_the_lb_is_addressed_to_its_backend() {
    let cfg = "flows = 64\n[[vip]]\naddr = \"192.0.2.10:80\"\nproto = \"tcp\"\n\
               [[vip.backend]]\naddr = \"10.1.0.1:8080\"\n[[vip.backend]]\naddr = \"10.1.0.2:8080\"\n";
    let mut lb: Lb = build_instance(cfg, 0, 2);
    let syn = tcp4([10, 100, 0, 1], 20000, [192, 0, 2, 10], 80, SYN);
    let flow = flow_of(&syn, IN);
    assert_eq!(lb.flow_after(&flow, Nanos::ZERO), flow, "not pinned yet");
    let (_, out) = crate::testutil::run_out(&mut lb, Nanos::ZERO, IN, &syn);
    assert_eq!(lb.flow_after(&flow, Nanos::ZERO), flow_of(&out, IN));
    assert_ne!(flow_of(&out, IN), flow);
}
