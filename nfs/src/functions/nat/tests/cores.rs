//! Two cores: steering by port ownership (`steer.rs`), pool refills moving ownership, and
//! endpoint-independent mappings reused towards many remotes.

use super::*;

/// The core `nat` (any core's instance) steers `frame`, arriving on `ingress`, to.
fn steer(nat: &Nat, ingress: u16, frame: &[u8]) -> Option<CoreId> {
    let meta = parse(frame, PortId(ingress), &ParsePolicy::default()).unwrap();
    nat.steer(&meta, frame)
}

/// Both cores' instances agree on the owner of `frame`'s destination.
fn owner(cores: &[Nat], ingress: u16, frame: &[u8]) -> Option<CoreId> {
    let o = steer(&cores[0], ingress, frame);
    assert_eq!(steer(&cores[1], ingress, frame), o, "the ownership map is shared");
    o
}

#[test]
fn replies_steer_to_the_core_that_allocated_their_port() {
    let mut cores = two_cores(&format!("ports = \"1024-4095\"\n{BASE}"));
    let mut seen = std::collections::HashSet::new();
    for i in 0..400u16 {
        let core = usize::from(i % 2);
        let frame = if i % 3 == 0 {
            icmp_echo4(HOST_A, R1, i, 1)
        } else {
            udp4([192, 168, 1, (i % 50) as u8], 1024 + i, R1, 53, b"")
        };
        assert_eq!(owner(&cores, IN, &frame), None, "outbound to a remote address: no opinion");
        let (v, out) = run_on(&mut cores[core], s(1), core as u16, IN, &frame);
        assert_eq!(v, Verdict::Continue);
        let (_, sport, _, _) = verified(&out);
        let reply = if i % 3 == 0 { echo_reply(R1, PUB, sport) } else { udp4(R1, 53, PUB, sport, b"") };
        assert_eq!(owner(&cores, OUT, &reply), Some(CoreId(core as u16)), "flow {i}, port {sport}");
        assert_eq!(run_on(&mut cores[core], s(2), core as u16, OUT, &reply).0, Verdict::Continue);
        let proto = if i % 3 == 0 { 1 } else { 17 };
        assert!(seen.insert((proto, sport)), "public port {sport} handed out twice");
    }
    for (c, nat) in cores.iter().enumerate() {
        let k = nat.counters();
        assert_eq!((k.outbound, k.inbound, k.new_mappings, k.no_mapping), (200, 200, 200, 0), "core {c}");
    }
    // Shares are disjoint and together hold the whole pool.
    let free: usize = cores.iter().map(|c| c.free_ports(17)).sum();
    let used = seen.iter().filter(|(p, _)| *p == 17).count();
    assert_eq!(free + used, 4095 - 1024 + 1);
}

#[test]
fn packets_steer_only_when_addressed_to_an_owned_public_port() {
    let config = format!(
        "ports = \"3000-3999\"\n{BASE}\n[[forward]]\nproto = \"udp\"\npublic_port = 3500\nto = \"192.168.1.11:53\"\n"
    );
    let mut cores = two_cores(&config);
    let (_, out) = run_on(&mut cores[1], s(1), 1, IN, &udp4(HOST_A, 5000, R1, 53, b"q"));
    let public = verified(&out).1;
    let reply = udp4(R1, 53, PUB, public, b"a");
    // An ICMP error from a router about the translated datagram (quoting the public source).
    let error = icmp_error(R2, PUB, &out[14..]);
    let hairpin = udp4(HOST_B, 7000, PUB, public, b"h");
    let later = fragment(udp4(R1, 53, PUB, public, &[0; 16]), 9, false, 2);
    let cases: &[(&str, u16, Vec<u8>, Option<CoreId>)] = &[
        ("reply", OUT, reply.clone(), Some(CoreId(1))),
        ("icmp error quoting the public endpoint", OUT, error, Some(CoreId(1))),
        ("hairpin from the inside", IN, hairpin, Some(CoreId(1))),
        ("not a pool address", OUT, udp4(R1, 53, R2, public, b""), None),
        ("outbound", IN, udp4(HOST_A, 5000, R1, 53, b""), None),
        ("static forward", OUT, udp4(R1, 53, PUB, 3500, b""), None),
        ("port outside the pool range", OUT, udp4(R1, 53, PUB, 80, b""), None),
        ("later fragment: no port", OUT, later, None),
        ("arp", OUT, arp(), None),
    ];
    for (what, ingress, frame, want) in cases {
        assert_eq!(owner(&cores, *ingress, frame), *want, "{what}");
    }
    // On the owner, the steered reply is translated.
    assert_eq!(run_on(&mut cores[1], s(2), 1, OUT, &reply).0, Verdict::Continue);
    // One core: never an opinion.
    let one: Nat = build(BASE);
    assert_eq!(steer(&one, OUT, &udp4(R1, 53, PUB, 1024, b"")), None);
}

#[test]
fn a_dry_core_refills_from_the_other_and_owns_what_it_took() {
    let mut cores = two_cores(&format!("ports = \"3000-3007\"\nrefill_batch = 2\n{BASE}"));
    // Initial shares: 4 ports each, owned by their core.
    let owners: Vec<Option<CoreId>> =
        (3000..=3007).map(|p| owner(&cores, OUT, &udp4(R1, 53, PUB, p, b""))).collect();
    assert_eq!(owners.iter().filter(|o| **o == Some(CoreId(0))).count(), 4, "{owners:?}");
    assert_eq!(owners.iter().filter(|o| **o == Some(CoreId(1))).count(), 4, "{owners:?}");
    // Core 0 uses its 4 ports, then asks; core 1 releases half of its share at housekeeping.
    let mut used = 0;
    let mut p = 10_000u16;
    while used < 4 {
        let f = udp4(HOST_A, p, R1, 53, b"");
        p += 1;
        if run_on(&mut cores[0], s(1), 0, IN, &f).0 == Verdict::Continue {
            used += 1;
        }
    }
    assert_eq!(cores[0].free_ports(17), 0);
    let f = udp4(HOST_A, 20_000, R1, 53, b"");
    assert_eq!(run_on(&mut cores[0], s(1), 0, IN, &f).0, drop(DropReason::NatPoolExhausted));
    cores[1].housekeeping(&Ctx { now: s(1), core: CoreId(1) });
    assert_eq!(cores[1].free_ports(17), 2);
    // Core 0 refills with two of core 1's former ports: replies to them now steer to core 0.
    let (v, out) = run_on(&mut cores[0], s(1), 0, IN, &f);
    assert_eq!(v, Verdict::Continue);
    let public = verified(&out).1;
    assert_eq!(owners[usize::from(public - 3000)], Some(CoreId(1)), "taken from core 1's share");
    let reply = udp4(R1, 53, PUB, public, b"");
    assert_eq!(owner(&cores, OUT, &reply), Some(CoreId(0)));
    assert_eq!(run_on(&mut cores[0], s(2), 0, OUT, &reply).0, Verdict::Continue);
    let moved = (3000..=3007u16)
        .filter(|&p| owner(&cores, OUT, &udp4(R1, 53, PUB, p, b"")) != owners[usize::from(p - 3000)])
        .count();
    assert_eq!(moved, 2, "exactly the refill batch changed owner");
    assert_eq!(cores[0].counters().exhausted, 1);
}

#[test]
fn a_mapping_reused_towards_many_remotes_gets_every_reply_on_its_core() {
    // Endpoint-independent mapping: one public port for all 60 remotes, and every reply,
    // whatever its 5-tuple hash, steers to the mapping's core.
    let mut cores = two_cores(BASE);
    let mut public = None;
    for i in 1..=60u8 {
        let (v, out) = run_on(&mut cores[1], s(1), 1, IN, &udp4(HOST_A, 5000, [198, 51, 100, i], 53, b""));
        assert_eq!(v, Verdict::Continue);
        let p = verified(&out).1;
        assert_eq!(*public.get_or_insert(p), p, "one mapping");
        let reply = udp4([198, 51, 100, i], 53, PUB, p, b"");
        assert_eq!(owner(&cores, OUT, &reply), Some(CoreId(1)), "remote {i}");
        assert_eq!(run_on(&mut cores[1], s(1), 1, OUT, &reply).0, Verdict::Continue, "remote {i}");
    }
    let c = cores[1].counters();
    assert_eq!((c.new_mappings, c.outbound, c.inbound, c.no_mapping), (1, 60, 60, 0));
}

#[test]
fn steer_outbound_keeps_an_inside_endpoint_on_one_core_and_forwards_symmetric() {
    let config = format!(
        "steer_outbound = true\n{BASE}\n[[forward]]\nproto = \"udp\"\npublic_port = 3500\nto = \"192.168.1.11:53\"\n"
    );
    let mut cores = two_cores(&config);
    // Every flow of HOST_A:5000, whatever the remote, goes to one core: one mapping.
    let home = owner(&cores, IN, &udp4(HOST_A, 5000, R1, 53, b"")).unwrap();
    let h = usize::from(home.0);
    let mut public = None;
    for i in 1..=40u8 {
        let remote = [198, 51, 100, i];
        let f = udp4(HOST_A, 5000, remote, 53, b"");
        assert_eq!(owner(&cores, IN, &f), Some(home), "remote {i}");
        let (v, out) = run_on(&mut cores[h], s(1), home.0, IN, &f);
        assert_eq!(v, Verdict::Continue);
        let p = verified(&out).1;
        assert_eq!(*public.get_or_insert(p), p);
        assert_eq!(owner(&cores, OUT, &udp4(remote, 53, PUB, p, b"")), Some(home), "reply from {i}");
    }
    assert_eq!(cores[h].counters().new_mappings, 1, "RFC 4787 REQ-1 across cores");
    // An ICMP error HOST_A sends about a datagram the NAT delivered to it goes home too.
    let delivered = udp4(R1, 53, HOST_A, 5000, b"x");
    assert_eq!(owner(&cores, IN, &icmp_error(HOST_A, R1, &delivered[14..])), Some(home));
    // A forwarded connection: both directions on the core of its public-side flow, and
    // different remotes spread over the cores.
    let mut seen = std::collections::HashSet::new();
    for i in 1..=20u8 {
        let remote = [198, 51, 100, i];
        let inbound = owner(&cores, OUT, &udp4(remote, 4000, PUB, 3500, b""));
        let back = owner(&cores, IN, &udp4([192, 168, 1, 11], 53, remote, 4000, b""));
        assert_eq!(inbound, back, "remote {i}");
        seen.insert(inbound.unwrap());
    }
    assert_eq!(seen.len(), 2, "forwarded connections use both cores");
}
