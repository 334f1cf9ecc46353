//! Firewall behaviour, table-driven, with exact counter checks.

use super::*;
use crate::drop::DropReason;
use crate::testutil::{arp, build, icmp_echo4, run, tcp4, udp4};
use crate::time::Nanos;

const IN: u16 = 0;
const OUT: u16 = 1;
const CLIENT: [u8; 4] = [10, 0, 0, 2];
const SERVER: [u8; 4] = [192, 0, 2, 10];
const SYN: u8 = 0x02;
const SYNACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FINACK: u8 = 0x11;

const POLICY: &str = r#"
default = "deny"
[[rule]]
action = "deny"
proto = "tcp"
dport = 23
[[rule]]
action = "allow"
ingress = "inside"
src = "10.0.0.0/8"
[[rule]]
action = "allow"
proto = "tcp"
dst = "10.0.0.0/8"
dport = "8000-8099"
"#;

fn counters(fw: &Firewall) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    fw.report(&mut r);
    r.counters
}

fn counter(fw: &Firewall, name: &str) -> u64 {
    counters(fw).iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v)
}

#[test]
fn rules_decide_new_connections() {
    let deny = Verdict::Drop(DropReason::FirewallDeny);
    let cases: &[(&str, u16, Vec<u8>, Verdict)] = &[
        ("inside udp allowed", IN, udp4(CLIENT, 5000, SERVER, 53, b"q"), Verdict::Continue),
        ("telnet denied first", IN, tcp4(CLIENT, 5001, SERVER, 23, SYN), deny),
        ("inside tcp allowed", IN, tcp4(CLIENT, 5002, SERVER, 80, SYN), Verdict::Continue),
        ("outside unsolicited", OUT, udp4(SERVER, 53, CLIENT, 5999, b"x"), deny),
        ("outside to open range", OUT, tcp4(SERVER, 4000, CLIENT, 8080, SYN), Verdict::Continue),
        ("outside above range", OUT, tcp4(SERVER, 4000, CLIENT, 8100, SYN), deny),
        ("spoofed inside source on outside", OUT, udp4(CLIENT, 1, SERVER, 2, b""), deny),
        ("ping from inside", IN, icmp_echo4(CLIENT, SERVER, 7, 1), Verdict::Continue),
    ];
    let mut fw: Firewall = build(POLICY);
    for (name, port, frame, want) in cases {
        assert_eq!(run(&mut fw, Nanos(1), *port, frame), *want, "{name}");
    }
    assert_eq!(counter(&fw, "allowed_new"), 4);
    assert_eq!(counter(&fw, "denied_new"), 4);
    assert_eq!(fw.rule_hits(), &[3, 1, 3, 1]);
}

#[test]
fn replies_of_allowed_connections_pass_and_strangers_do_not() {
    let mut fw: Firewall = build(POLICY);
    let t = Nanos(1);
    assert_eq!(run(&mut fw, t, IN, &tcp4(CLIENT, 40000, SERVER, 443, SYN)), Verdict::Continue);
    assert_eq!(run(&mut fw, t, OUT, &tcp4(SERVER, 443, CLIENT, 40000, SYNACK)), Verdict::Continue);
    assert_eq!(run(&mut fw, t, IN, &tcp4(CLIENT, 40000, SERVER, 443, ACK)), Verdict::Continue);
    assert_eq!(
        run(&mut fw, t, OUT, &udp4(SERVER, 443, CLIENT, 40000, b"")),
        Verdict::Drop(DropReason::FirewallDeny)
    );
    // A reply to a UDP query passes; a different source port does not.
    assert_eq!(run(&mut fw, t, IN, &udp4(CLIENT, 5353, SERVER, 53, b"q")), Verdict::Continue);
    assert_eq!(run(&mut fw, t, OUT, &udp4(SERVER, 53, CLIENT, 5353, b"a")), Verdict::Continue);
    assert_eq!(
        run(&mut fw, t, OUT, &udp4(SERVER, 54, CLIENT, 5353, b"a")),
        Verdict::Drop(DropReason::FirewallDeny)
    );
    assert_eq!(counter(&fw, "allowed_new"), 2);
    assert_eq!(counter(&fw, "tracked_hits"), 3);
    assert_eq!(counter(&fw, "denied_new"), 2);
    assert_eq!(fw.connections(t), 2);
}

#[test]
fn tcp_must_open_with_syn_unless_loose() {
    let mut strict: Firewall = build(POLICY);
    let mid = tcp4(CLIENT, 40001, SERVER, 80, ACK);
    assert_eq!(run(&mut strict, Nanos(1), IN, &mid), Verdict::Drop(DropReason::InvalidTcpState));
    assert_eq!(counter(&strict, "invalid_tcp"), 1);
    let mut loose: Firewall = build(&format!("loose_tcp = true\n{POLICY}"));
    assert_eq!(run(&mut loose, Nanos(1), IN, &mid), Verdict::Continue);
}

#[test]
fn timeouts_follow_tcp_state_on_the_virtual_clock() {
    let mut fw: Firewall = build(POLICY);
    let s = Nanos::from_secs;
    run(&mut fw, s(0), IN, &tcp4(CLIENT, 40002, SERVER, 80, SYN));
    // Half-open: gone after the transitory timeout (240 s).
    let reply = tcp4(SERVER, 80, CLIENT, 40002, SYNACK);
    assert_eq!(run(&mut fw, s(241), OUT, &reply), Verdict::Drop(DropReason::FirewallDeny));

    // Established: still there after two hours, gone after 7440 s of silence.
    run(&mut fw, s(1000), IN, &tcp4(CLIENT, 40003, SERVER, 80, SYN));
    run(&mut fw, s(1000), OUT, &tcp4(SERVER, 80, CLIENT, 40003, SYNACK));
    run(&mut fw, s(1000), IN, &tcp4(CLIENT, 40003, SERVER, 80, ACK));
    let data_back = tcp4(SERVER, 80, CLIENT, 40003, ACK);
    assert_eq!(run(&mut fw, s(1000 + 7200), OUT, &data_back), Verdict::Continue);
    assert_eq!(run(&mut fw, s(1000 + 7200 + 7441), OUT, &data_back), Verdict::Drop(DropReason::FirewallDeny));

    // Closed by FIN from both sides: time-wait (120 s).
    run(&mut fw, s(20000), IN, &tcp4(CLIENT, 40004, SERVER, 80, SYN));
    run(&mut fw, s(20000), OUT, &tcp4(SERVER, 80, CLIENT, 40004, SYNACK));
    run(&mut fw, s(20000), IN, &tcp4(CLIENT, 40004, SERVER, 80, FINACK));
    run(&mut fw, s(20000), OUT, &tcp4(SERVER, 80, CLIENT, 40004, FINACK));
    let late_ack = tcp4(SERVER, 80, CLIENT, 40004, ACK);
    assert_eq!(run(&mut fw, s(20100), OUT, &late_ack), Verdict::Continue);
    assert_eq!(run(&mut fw, s(20100 + 121), OUT, &late_ack), Verdict::Drop(DropReason::FirewallDeny));
}

#[test]
fn udp_timeout_is_refreshed_by_traffic() {
    let mut fw: Firewall = build(POLICY);
    let s = Nanos::from_secs;
    let out = udp4(CLIENT, 6000, SERVER, 53, b"q");
    let back = udp4(SERVER, 53, CLIENT, 6000, b"a");
    run(&mut fw, s(0), IN, &out);
    for t in [100, 200, 300] {
        assert_eq!(run(&mut fw, s(t), OUT, &back), Verdict::Continue, "t={t}");
    }
    assert_eq!(run(&mut fw, s(300 + 121), OUT, &back), Verdict::Drop(DropReason::FirewallDeny));
}

#[test]
fn housekeeping_reclaims_expired_connections() {
    // 1000 connections → 2048 slots; 64 housekeeping calls sweep 4096 slots, all of them.
    let mut fw: Firewall = build(&format!("connections = 1000\n{POLICY}"));
    for p in 0..500u16 {
        run(&mut fw, Nanos(0), IN, &udp4(CLIENT, 10000 + p, SERVER, 53, b"q"));
    }
    let ctx = Ctx { now: Nanos::from_secs(121), core: crate::ids::CoreId(0) };
    for _ in 0..64 {
        fw.housekeeping(&ctx);
    }
    let mut r = Report::default();
    fw.report(&mut r);
    let (_, _, stats) = &r.tables[0];
    assert_eq!((stats.len, stats.expired), (0, 500));
}

#[test]
fn full_table_refuses_new_connections_and_counts() {
    let mut fw: Firewall = build(&format!("connections = 4\n{POLICY}"));
    for p in 0..4u16 {
        assert_eq!(run(&mut fw, Nanos(1), IN, &udp4(CLIENT, 100 + p, SERVER, 53, b"")), Verdict::Continue);
    }
    assert_eq!(
        run(&mut fw, Nanos(1), IN, &udp4(CLIENT, 200, SERVER, 53, b"")),
        Verdict::Drop(DropReason::TableFull)
    );
    assert_eq!(counter(&fw, "table_full"), 1);
    // Existing connections are unaffected.
    assert_eq!(run(&mut fw, Nanos(2), OUT, &udp4(SERVER, 53, CLIENT, 100, b"")), Verdict::Continue);
}

#[test]
fn non_ip_frames_follow_the_switch() {
    let mut pass: Firewall = build(POLICY);
    assert_eq!(run(&mut pass, Nanos(1), OUT, &arp()), Verdict::Continue);
    let mut block: Firewall = build(&format!("allow_non_ip = false\n{POLICY}"));
    assert_eq!(run(&mut block, Nanos(1), OUT, &arp()), Verdict::Drop(DropReason::FirewallDeny));
}

/// An ICMP error from `from` to `to` quoting `quoted` (IP header onwards).
fn icmp_error(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};
    let b = PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4(from, to, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port));
    let mut out = Vec::new();
    b.write(&mut out, quoted).unwrap();
    out
}

#[test]
fn icmp_errors_about_tracked_connections_pass() {
    let mut fw: Firewall = build(POLICY);
    let t = Nanos(1);
    let query = udp4(CLIENT, 7000, SERVER, 53, b"q");
    assert_eq!(run(&mut fw, t, IN, &query), Verdict::Continue);
    // The server's stack answers "port unreachable", quoting the query: related, passes.
    assert_eq!(run(&mut fw, t, OUT, &icmp_error(SERVER, CLIENT, &query[14..])), Verdict::Continue);
    // The same error about a connection nobody opened is refused by the rules.
    let stranger = udp4(CLIENT, 7001, SERVER, 53, b"q");
    let refused = Verdict::Drop(DropReason::FirewallDeny);
    assert_eq!(run(&mut fw, t, OUT, &icmp_error(SERVER, CLIENT, &stranger[14..])), refused);
    // A quote too short to hold the ports names no flow: the rules decide again.
    assert_eq!(run(&mut fw, t, OUT, &icmp_error(SERVER, CLIENT, &query[14..14 + 22])), refused);
    assert_eq!(counter(&fw, "related_icmp"), 1);
    assert_eq!(counter(&fw, "denied_new"), 2);
}

#[test]
fn connections_survive_a_restart_with_a_state_directory() {
    let dir = std::env::temp_dir().join(format!("nflet-fw-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let t = Nanos::from_secs(10);
    {
        let mut fw: Firewall = crate::testutil::build_in(POLICY, &dir);
        assert_eq!(run(&mut fw, t, IN, &tcp4(CLIENT, 40000, SERVER, 443, SYN)), Verdict::Continue);
        assert_eq!(run(&mut fw, t, OUT, &tcp4(SERVER, 443, CLIENT, 40000, SYNACK)), Verdict::Continue);
        assert_eq!(run(&mut fw, t, IN, &tcp4(CLIENT, 40000, SERVER, 443, ACK)), Verdict::Continue);
    }
    // The next instance (its clock continued) lets the server's data through; a fresh one
    // would not know the connection.
    let later = Nanos::from_secs(11);
    let mut fw: Firewall = crate::testutil::build_in(POLICY, &dir);
    assert_eq!(run(&mut fw, later, OUT, &tcp4(SERVER, 443, CLIENT, 40000, ACK)), Verdict::Continue);
    assert_eq!(counter(&fw, "allowed_new"), 0);
    let mut fresh: Firewall = build(POLICY);
    assert_eq!(
        run(&mut fresh, later, OUT, &tcp4(SERVER, 443, CLIENT, 40000, ACK)),
        Verdict::Drop(DropReason::FirewallDeny)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
