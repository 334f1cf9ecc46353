//! Mappings, filtering, timeouts and the pool: RFC 4787 / RFC 5382 behaviour of TCP and UDP.

use super::*;

#[test]
fn outbound_udp_preserves_the_port_and_the_reply_comes_back() {
    let mut nat: Nat = build(BASE);
    let (v, f) = run(&mut nat, s(1), IN, &udp4(HOST_A, 5000, R1, 53, b"query"));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(verified(&f), (PUB, 5000, R1, 53));
    let (v, f) = run(&mut nat, s(2), OUT, &udp4(R1, 53, PUB, 5000, b"answer"));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(verified(&f), (R1, 53, HOST_A, 5000));
    assert_eq!(
        counters(&nat),
        [("outbound", 1), ("inbound", 1), ("new_mappings", 1), ("preserved_ports", 1)]
    );
    assert_eq!(nat.free_ports(17), 64512 - 1);
}

#[test]
fn mapping_is_endpoint_independent_and_never_shared() {
    let mut nat: Nat = build(BASE);
    let (_, a1) = run(&mut nat, s(1), IN, &udp4(HOST_A, 6000, R1, 53, b""));
    let (_, a2) = run(&mut nat, s(1), IN, &udp4(HOST_A, 6000, R2, 9999, b""));
    // Another inside host with the same port cannot have 6000: it gets a random port.
    let (_, b) = run(&mut nat, s(1), IN, &udp4(HOST_B, 6000, R1, 53, b""));
    let (pa1, pa2, pb) = (verified(&a1).1, verified(&a2).1, verified(&b).1);
    assert_eq!((pa1, pa2), (6000, 6000), "REQ-1: same mapping for every destination");
    assert_ne!(pb, 6000);
    assert!(pb >= 1024);
    assert_eq!(nat.mappings(s(1)), 2);
    let c = counters(&nat);
    assert_eq!(c, [("outbound", 3), ("new_mappings", 2), ("preserved_ports", 1)]);
}

#[test]
fn filtering_follows_rfc4787_req8() {
    use Filtering::*;
    let pass = Verdict::Continue;
    let filtered = drop(DropReason::NatFiltered);
    // (mode, sender of the inbound packet, expected verdict)
    let cases: &[(Filtering, [u8; 4], u16, Verdict)] = &[
        (EndpointIndependent, R1, 53, pass),
        (EndpointIndependent, R1, 54, pass),
        (EndpointIndependent, R2, 80, pass),
        (AddressDependent, R1, 53, pass),
        (AddressDependent, R1, 54, pass),
        (AddressDependent, R2, 53, filtered),
        (AddressAndPortDependent, R1, 53, pass),
        (AddressAndPortDependent, R1, 54, filtered),
        (AddressAndPortDependent, R2, 53, filtered),
    ];
    for (mode, from, port, want) in cases {
        let name = match mode {
            EndpointIndependent => "endpoint_independent",
            AddressDependent => "address_dependent",
            AddressAndPortDependent => "address_and_port_dependent",
        };
        let mut nat: Nat = build(&format!("filtering = \"{name}\"\n{BASE}"));
        run(&mut nat, s(1), IN, &udp4(HOST_A, 7000, R1, 53, b""));
        let (v, _) = run(&mut nat, s(2), OUT, &udp4(*from, *port, PUB, 7000, b""));
        assert_eq!(v, *want, "{name} from {from:?}:{port}");
        let filtered_count = u64::from(*want == filtered);
        assert_eq!(nat.counters().filtered, filtered_count);
        assert_eq!(nat.counters().inbound, 1 - filtered_count);
    }
}

#[test]
fn unsolicited_inbound_never_reaches_the_inside() {
    let mut nat: Nat = build(BASE);
    let no = drop(DropReason::NatNoMapping);
    let cases: &[(&str, Vec<u8>)] = &[
        ("udp to a free public port", udp4(R1, 53, PUB, 5000, b"")),
        ("tcp syn to the public address", tcp4(R1, 4000, PUB, 22, SYN)),
        ("straight to an inside address", udp4(R1, 53, HOST_A, 5000, b"")),
        ("echo request to the public address", icmp_echo4(R1, PUB, 1, 1)),
        ("unknown protocol", gre(R1, PUB)),
    ];
    for (name, f) in cases {
        assert_eq!(run(&mut nat, s(1), OUT, f).0, no, "{name}");
    }
    assert_eq!(counters(&nat), [("no_mapping", 5)]);
    // Outbound traffic the NAT cannot translate is not leaked with a private source.
    assert_eq!(run(&mut nat, s(1), IN, &gre(HOST_A, R1)).0, drop(DropReason::NatUnsupported));
    // Non-IPv4 frames are not the NAT's business.
    assert_eq!(run(&mut nat, s(1), OUT, &arp()).0, Verdict::Continue);
}

#[test]
fn udp_mapping_is_refreshed_by_outbound_traffic_only() {
    let mut nat: Nat = build(BASE);
    let out = udp4(HOST_A, 8000, R1, 53, b"");
    let back = udp4(R1, 53, PUB, 8000, b"");
    run(&mut nat, s(0), IN, &out);
    // RFC 4787 REQ-6: inbound packets at 100 and 250 s do not extend the 300 s timeout.
    assert_eq!(run(&mut nat, s(100), OUT, &back).0, Verdict::Continue);
    assert_eq!(run(&mut nat, s(250), OUT, &back).0, Verdict::Continue);
    assert_eq!(run(&mut nat, s(301), OUT, &back).0, drop(DropReason::NatNoMapping));
    // Expired: the next outbound packet makes a new mapping (with the same, free, port).
    run(&mut nat, s(400), IN, &out);
    run(&mut nat, s(650), IN, &out);
    assert_eq!(run(&mut nat, s(900), OUT, &back).0, Verdict::Continue);
    assert_eq!(run(&mut nat, s(951), OUT, &back).0, drop(DropReason::NatNoMapping));
    let c = nat.counters();
    assert_eq!((c.new_mappings, c.expired_mappings, c.inbound, c.no_mapping), (2, 2, 3, 2));
}

#[test]
fn tcp_timeouts_follow_the_connection() {
    let mut nat: Nat = build(BASE);
    let half_open = [(IN, tcp4(HOST_A, 40000, R1, 80, SYN))];
    let established = [
        (IN, tcp4(HOST_A, 40001, R1, 80, SYN)),
        (OUT, tcp4(R1, 80, PUB, 40001, SYNACK)),
        (IN, tcp4(HOST_A, 40001, R1, 80, ACK)),
    ];
    let reset = [
        (IN, tcp4(HOST_A, 40002, R1, 80, SYN)),
        (OUT, tcp4(R1, 80, PUB, 40002, SYNACK)),
        (IN, tcp4(HOST_A, 40002, R1, 80, ACK)),
        (IN, tcp4(HOST_A, 40002, R1, 80, RST)),
    ];
    let half_closed = [
        (IN, tcp4(HOST_A, 40003, R1, 80, SYN)),
        (OUT, tcp4(R1, 80, PUB, 40003, SYNACK)),
        (IN, tcp4(HOST_A, 40003, R1, 80, ACK)),
        (IN, tcp4(HOST_A, 40003, R1, 80, FINACK)),
    ];
    let closed = [
        (IN, tcp4(HOST_A, 40004, R1, 80, SYN)),
        (OUT, tcp4(R1, 80, PUB, 40004, SYNACK)),
        (IN, tcp4(HOST_A, 40004, R1, 80, ACK)),
        (IN, tcp4(HOST_A, 40004, R1, 80, FINACK)),
        (OUT, tcp4(R1, 80, PUB, 40004, FINACK)),
    ];
    // (steps, public port, idle time still alive, idle time gone)
    let cases: [(Steps<'_>, u16, u64, u64); 5] = [
        (&half_open, 40000, 239, 241),
        // RFC 5382 REQ-5: at least 2 h 4 min once established.
        (&established, 40001, 7439, 7441),
        // RFC 7857 §2.2: after a RST, the transitory (4 min) timeout.
        (&reset, 40002, 239, 241),
        // One FIN: the other direction is still open.
        (&half_closed, 40003, 7439, 7441),
        // FIN both ways: transitory.
        (&closed, 40004, 239, 241),
    ];
    for (steps, port, alive, gone) in cases {
        let t0 = 20_000 * u64::from(port - 39999);
        for (ingress, f) in steps {
            assert_eq!(run(&mut nat, s(t0), *ingress, f).0, Verdict::Continue, "port {port}");
        }
        let data = tcp4(R1, 80, PUB, port, ACK);
        assert_eq!(run(&mut nat, s(t0 + alive), OUT, &data).0, Verdict::Continue, "port {port} alive");
        // Inbound TCP refreshes the mapping too, so "gone" counts from the last packet.
        let later = s(t0 + alive + gone);
        assert_eq!(run(&mut nat, later, OUT, &data).0, drop(DropReason::NatNoMapping), "port {port} gone");
    }
}

#[test]
fn pool_exhaustion_is_counted_and_expiry_returns_ports() {
    let mut nat: Nat = build(&format!("ports = \"2000-2003\"\n{BASE}"));
    for p in 0..4u16 {
        assert_eq!(run(&mut nat, s(0), IN, &udp4(HOST_A, 100 + p, R1, 53, b"")).0, Verdict::Continue);
    }
    let fifth = udp4(HOST_A, 200, R1, 53, b"");
    assert_eq!(run(&mut nat, s(1), IN, &fifth).0, drop(DropReason::NatPoolExhausted));
    assert_eq!(nat.free_ports(17), 0);
    // After the UDP timeout the sweep returns every port.
    let ctx = Ctx { now: s(301), core: CoreId(0) };
    for _ in 0..64 {
        nat.housekeeping(&ctx);
    }
    assert_eq!(nat.free_ports(17), 4);
    let (v, f) = run(&mut nat, s(302), IN, &fifth);
    assert_eq!(v, Verdict::Continue);
    assert!((2000..=2003).contains(&verified(&f).1));
    let c = nat.counters();
    assert_eq!((c.new_mappings, c.exhausted, c.expired_mappings, c.outbound), (5, 1, 4, 5));
}

#[test]
fn bad_configurations_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("inside = \"wan0\"\npublic = \"203.0.113.1\"", "no port named `wan0`"),
        ("inside = \"inside\"\npublic = []", "1 to 256 pool addresses"),
        ("inside = \"inside\"\npublic = \"203.0.113.1\"\nports = \"0-100\"", "port 0"),
        ("inside = \"inside\"\npublic = \"203.0.113.1\"\ntimeouts = { udp = 30 }", "timeouts.udp"),
        (
            "inside = \"inside\"\npublic = \"203.0.113.1\"\n[[forward]]\nproto = \"sctp\"\npublic_port = 1\nto = \"10.0.0.1:1\"",
            "forward[0].proto",
        ),
        (
            "inside = \"inside\"\npublic = \"203.0.113.1\"\n[[forward]]\nproto = \"tcp\"\npublic_port = 1\nto = \"10.0.0.1\"",
            "forward[0].to",
        ),
    ];
    let ports = ["inside".to_string(), "outside".to_string()];
    for (cfg, want) in cases {
        let cfg: NatConfig = toml::from_str(cfg).unwrap();
        let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
        let mut shared = SharedRegistry::default();
        let mut rt = InitCtx {
            instance: crate::ids::Instance::default(),
            name: "nat",
            core: CoreId(0),
            cores: 1,
            ports: &ports,
            arena: &mut arena,
            shared: &mut shared,
        };
        let e = Nat::init(&cfg, &mut rt).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    assert!(toml::from_str::<NatConfig>("inside = \"a\"\npublic = \"1.2.3.4\"\nfiltring = \"x\"").is_err());
}

#[test]
fn a_full_mapping_table_refuses_and_keeps_the_port() {
    let mut nat: Nat = build(&BASE.replace("mappings = 1024", "mappings = 3"));
    for p in 0..3u16 {
        assert_eq!(run(&mut nat, s(1), IN, &udp4(HOST_A, 3000 + p, R1, 53, b"")).0, Verdict::Continue);
    }
    let free = nat.free_ports(17);
    assert_eq!(run(&mut nat, s(1), IN, &udp4(HOST_A, 4000, R1, 53, b"")).0, drop(DropReason::TableFull));
    assert_eq!(nat.free_ports(17), free, "the port went back to the pool");
    assert_eq!((nat.counters().table_full, nat.counters().new_mappings), (1, 3));
}

/// Runs `frames` (all from the inside) through `nat` as one burst; returns the verdicts and the
/// frames as they leave.
fn run_burst(nat: &mut Nat, now: Nanos, frames: &[Vec<u8>]) -> Vec<(Verdict, Vec<u8>)> {
    let mut fs: Vec<Vec<u8>> = frames.to_vec();
    let mut metas: Vec<_> =
        fs.iter().map(|f| parse(f, PortId(IN), &ParsePolicy::default()).unwrap()).collect();
    let mut verdicts = vec![Verdict::Continue; fs.len()];
    let active: Vec<u16> = (0..fs.len() as u16).collect();
    let mut burst = Burst { frames: &mut fs, metas: &mut metas, verdicts: &mut verdicts, active: &active };
    nat.process(&Ctx { now, core: CoreId(0) }, &mut burst);
    verdicts.into_iter().zip(fs).collect()
}

#[test]
fn a_burst_of_new_flows_maps_like_its_packets_one_at_a_time() {
    // Once a burst has made two or more mappings, the next one chooses its new flows' public
    // ports ahead (preserved if free then, else picked at random and held until the burst
    // ends): the outcome must be that of the packets one by one, with no port lost. Ten
    // public ports, two taken by the warm-up burst; (inside host, port) of each packet, and
    // how many of the burst's mappings got a port picked ahead.
    const HOST_C: [u8; 4] = [192, 168, 1, 12];
    type Case<'a> = (&'a str, &'a [([u8; 4], u16)], u64);
    let cases: &[Case] = &[
        // Preserved ports; a second flow wanting a port the first took (it was free when
        // the burst began, so nothing was picked ahead for it); repeats of a new flow in the
        // same burst.
        ("preserve", &[(HOST_A, 2000), (HOST_B, 2000), (HOST_A, 2001), (HOST_A, 2001), (HOST_B, 2000)], 0),
        // Ports outside the range: every one picked ahead; the repeat's extra pick goes back.
        ("random", &[(HOST_A, 100), (HOST_A, 101), (HOST_A, 100), (HOST_B, 100)], 3),
        // More new flows than ports: the last ones are exhausted, as one at a time. (Port
        // 2002 went to an earlier flow's random pick, so its flow gets a random one too.)
        (
            "exhaust",
            &[
                (HOST_A, 1),
                (HOST_A, 2),
                (HOST_A, 3),
                (HOST_A, 2002),
                (HOST_A, 4),
                (HOST_A, 5),
                (HOST_A, 6),
                (HOST_A, 7),
                (HOST_A, 8),
                (HOST_A, 9),
            ],
            8,
        ),
    ];
    // Preserved ports, so the random picks of the cases start from the same pool.
    let warm_up = [udp4(HOST_C, 2008, R1, 53, b""), udp4(HOST_C, 2009, R1, 53, b"")];
    for (name, flows, ahead) in cases {
        let frames: Vec<Vec<u8>> = flows.iter().map(|&(h, p)| udp4(h, p, R1, 53, b"")).collect();
        let config = format!("ports = \"2000-2009\"\n{BASE}");
        let (mut one, mut burst): (Nat, Nat) = (build(&config), build(&config));
        for f in &warm_up {
            run(&mut one, s(0), IN, f);
        }
        run_burst(&mut burst, s(0), &warm_up);
        let singles: Vec<(Verdict, Vec<u8>)> = frames.iter().map(|f| run(&mut one, s(0), IN, f)).collect();
        let together = run_burst(&mut burst, s(0), &frames);
        let verdicts = |r: &[(Verdict, Vec<u8>)]| r.iter().map(|(v, _)| *v).collect::<Vec<_>>();
        assert_eq!(verdicts(&together), verdicts(&singles), "{name}: verdicts");
        assert_eq!(burst.counters().picked_ahead, *ahead, "{name}: picked ahead");
        let mut others = counters(&burst);
        others.retain(|(c, _)| *c != "ports_picked_ahead");
        assert_eq!(others, counters(&one), "{name}: the other counters");
        assert_eq!(burst.free_ports(17), one.free_ports(17), "{name}: free ports");
        // Each inside endpoint kept one public port, and no two share one.
        let mut public = std::collections::HashMap::new();
        for (&(h, p), (v, f)) in flows.iter().zip(&together) {
            if *v == Verdict::Continue {
                let t = verified(f);
                assert_eq!(t.0, PUB, "{name}");
                assert_eq!(*public.entry((h, p)).or_insert(t.1), t.1, "{name}: {h:?}:{p} one port");
            }
        }
        let mut ports: Vec<u16> = public.values().copied().collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), public.len(), "{name}: distinct public ports");
        assert_eq!(burst.mappings(s(0)) + burst.free_ports(17), 10, "{name}: every port accounted for");
    }
}
