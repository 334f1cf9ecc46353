//! Hairpinning and static port-forwards.

use super::*;

#[test]
fn hairpinning_translates_both_ways_and_returns_inside() {
    let mut nat: Nat = build(&format!("filtering = \"endpoint_independent\"\n{BASE}"));
    // B has a mapping (say, for a peer-to-peer session); A reaches it through the public side.
    run(&mut nat, s(1), IN, &udp4(HOST_B, 9000, R1, 3478, b""));
    let (v, f) = run(&mut nat, s(2), IN, &udp4(HOST_A, 5000, PUB, 9000, b"hi"));
    assert_eq!(v, Verdict::Out(PortId(IN)));
    // RFC 4787 REQ-9: B sees A's public endpoint as the source.
    assert_eq!(verified(&f), (PUB, 5000, HOST_B, 9000));
    // B answers A's public endpoint: hairpinned to A.
    let (v, f) = run(&mut nat, s(3), IN, &udp4(HOST_B, 9000, PUB, 5000, b"ho"));
    assert_eq!(v, Verdict::Out(PortId(IN)));
    assert_eq!(verified(&f), (PUB, 9000, HOST_A, 5000));
    let c = nat.counters();
    assert_eq!((c.hairpinned, c.new_mappings, c.outbound, c.inbound), (2, 2, 3, 2));
    // No mapping behind the public port: dropped, not reflected.
    let (v, _) = run(&mut nat, s(4), IN, &udp4(HOST_A, 5000, PUB, 9999, b""));
    assert_eq!(v, drop(DropReason::NatNoMapping));
}

#[test]
fn hairpin_route_passes_translated_packets_on_along_the_chain() {
    // Behind a `gateway` step the hairpinned packet must continue, so the gateway can route it
    // on its translated destination and give it the inside host's MAC.
    let mut nat: Nat = build(&format!("filtering = \"endpoint_independent\"\nhairpin = \"route\"\n{BASE}"));
    run(&mut nat, s(1), IN, &udp4(HOST_B, 9000, R1, 3478, b""));
    let (v, f) = run(&mut nat, s(2), IN, &udp4(HOST_A, 5000, PUB, 9000, b"hi"));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(verified(&f), (PUB, 5000, HOST_B, 9000));
    let c = nat.counters();
    assert_eq!((c.hairpinned, c.new_mappings, c.outbound, c.inbound), (1, 2, 2, 1));
}

const FORWARDS: &str = r#"
inside = "inside"
public = ["203.0.113.1", "203.0.113.2"]
ports = "8000-8100"
filtering = "address_and_port_dependent"
[[forward]]
proto = "tcp"
public_port = "8080-8090"
to = "192.168.1.10:80"
[[forward]]
proto = "udp"
public_port = 8000
to = "192.168.1.11:53"
address = "203.0.113.2"
"#;

#[test]
fn static_forwards_work_from_outside_and_inside() {
    let mut nat: Nat = build(FORWARDS);
    let pub2 = [203, 0, 113, 2];
    // HOST_B's paired public address (RFC 4787 REQ-2), as its own outbound traffic shows it.
    let b_pub = verified(&run(&mut nat, s(1), IN, &udp4(HOST_B, 5556, R1, 9, b"")).1).0;
    let cases: &[(&str, u16, Vec<u8>, Verdict, Tuple)] = &[
        (
            "tcp forward, range start",
            OUT,
            tcp4(R1, 4000, PUB, 8080, SYN),
            Verdict::Continue,
            (R1, 4000, HOST_A, 80),
        ),
        (
            "tcp forward, range end",
            OUT,
            tcp4(R1, 4000, PUB, 8090, SYN),
            Verdict::Continue,
            (R1, 4000, HOST_A, 90),
        ),
        ("target's reply", IN, tcp4(HOST_A, 80, R1, 4000, SYNACK), Verdict::Continue, (PUB, 8080, R1, 4000)),
        (
            "udp forward on the second address",
            OUT,
            udp4(R2, 7, pub2, 8000, b""),
            Verdict::Continue,
            (R2, 7, HOST_B, 53),
        ),
        // RFC 5382 REQ-8: an inside host reaches the forward through the public address.
        (
            "hairpin to the forward",
            IN,
            tcp4(HOST_B, 5555, PUB, 8081, SYN),
            Verdict::Out(PortId(IN)),
            (b_pub, 0, HOST_A, 81),
        ),
    ];
    for (name, ingress, f, want, tuple) in cases {
        let (v, out) = run(&mut nat, s(1), *ingress, f);
        assert_eq!(v, *want, "{name}");
        let got = verified(&out);
        if tuple.1 == 0 {
            assert_eq!((got.0, got.2, got.3), (tuple.0, tuple.2, tuple.3), "{name}");
            assert!((8000..=8100).contains(&got.1) && !(8080..=8090).contains(&got.1), "{name}: pool port");
        } else {
            assert_eq!(got, *tuple, "{name}");
        }
    }
    // A forward's udp port is not forwarded for tcp, nor on the other address.
    assert_eq!(run(&mut nat, s(1), OUT, &tcp4(R2, 7, pub2, 8000, SYN)).0, drop(DropReason::NatNoMapping));
    assert_eq!(run(&mut nat, s(1), OUT, &udp4(R2, 7, PUB, 8000, b"")).0, drop(DropReason::NatNoMapping));
    // The pool never hands out forwarded ports: 2 addresses x 101 ports, 11 tcp ports forwarded.
    assert_eq!(nat.free_ports(6), 2 * 101 - 11 - 1);
    // UDP: the forwarded port and the mapping that showed HOST_B's public address.
    assert_eq!(nat.free_ports(17), 2 * 101 - 1 - 1);
    assert_eq!(nat.counters().forwarded, 4);
}

#[test]
fn icmp_errors_about_hairpinned_datagrams_are_hairpinned() {
    // Reflected straight back by default; passed on for a gateway to route with `route`.
    for (mode, want) in [("reflect", Verdict::Out(PortId(IN))), ("route", Verdict::Continue)] {
        let mut nat: Nat =
            build(&format!("filtering = \"endpoint_independent\"\nhairpin = \"{mode}\"\n{BASE}"));
        run(&mut nat, s(1), IN, &udp4(HOST_B, 9000, R1, 3478, b""));
        let (_, delivered) = run(&mut nat, s(2), IN, &udp4(HOST_A, 5000, PUB, 9000, b"hi"));
        // B's port 9000 is closed now: it reports the datagram it got, to A's public endpoint.
        let err = icmp_error(HOST_B, PUB, &delivered[14..]);
        let (v, f) = run(&mut nat, s(3), IN, &err);
        assert_eq!(v, want, "{mode}");
        let (src, _, dst, _) = verified(&f);
        assert_eq!((src, dst), (PUB, HOST_A), "{mode}");
        // A sees its own datagram as it sent it: from its inside endpoint to B's public one.
        assert_eq!(quoted(&f), (HOST_A, 5000, PUB, 9000), "{mode}");
        let c = nat.counters();
        assert_eq!((c.icmp_errors, c.hairpinned), (1, 2), "{mode}");
    }
}
