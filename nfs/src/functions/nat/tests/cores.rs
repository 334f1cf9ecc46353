//! Two cores: core-consistent port choice, pool refills, and the documented reuse limit.

use super::*;

#[test]
fn two_cores_choose_ports_whose_replies_come_back_to_them() {
    let mut cores = two_cores(&format!("ports = \"1024-4095\"\n{BASE}"));
    let mut seen = std::collections::HashSet::new();
    for i in 0..400u16 {
        let frame = if i % 3 == 0 {
            icmp_echo4(HOST_A, R1, i, 1)
        } else {
            udp4([192, 168, 1, (i % 50) as u8], 1024 + i, R1, 53, b"")
        };
        let meta = parse(&frame, PortId(IN), &ParsePolicy::default()).unwrap();
        let core = core_for(meta.hash, 2);
        let (v, out) = run_on(&mut cores[core], s(1), core as u16, IN, &frame);
        assert_eq!(v, Verdict::Continue);
        // The reply as the appliance would steer it, before any NF runs.
        let (_, sport, _, _) = verified(&out);
        let reply = if i % 3 == 0 { echo_reply(R1, PUB, sport) } else { udp4(R1, 53, PUB, sport, b"") };
        let rmeta = parse(&reply, PortId(OUT), &ParsePolicy::default()).unwrap();
        assert_eq!(
            core_for(rmeta.hash, 2),
            core,
            "flow {i}: reply steered to the mapping's core {:?}",
            cores[core].counters()
        );
        assert_eq!(run_on(&mut cores[core], s(2), core as u16, OUT, &reply).0, Verdict::Continue);
        let proto = if i % 3 == 0 { 1 } else { 17 };
        assert!(seen.insert((proto, sport)), "public port {sport} handed out twice");
    }
    let off: u64 = cores.iter().map(|c| c.counters().off_core_ports + c.counters().off_core_flows).sum();
    assert_eq!(off, 0);
    // Shares are disjoint and together hold the whole pool.
    let free: usize = cores.iter().map(|c| c.free_ports(17)).sum();
    let used = seen.iter().filter(|(p, _)| *p == 17).count();
    assert_eq!(free + used, 4095 - 1024 + 1);
}

#[test]
fn a_dry_core_refills_from_the_other() {
    let mut cores = two_cores(&format!("ports = \"3000-3007\"\nrefill_batch = 2\n{BASE}"));
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
    assert_eq!(run_on(&mut cores[0], s(1), 0, IN, &f).0, Verdict::Continue);
    assert_eq!(cores[0].counters().exhausted, 1);
}

#[test]
fn two_cores_count_reused_mappings_whose_replies_go_elsewhere() {
    // The documented multi-core limit: an endpoint-independent mapping reused towards a new
    // remote endpoint keeps its public port, so that flow's replies may hash to the other core.
    let mut cores = two_cores(BASE);
    let (mut home, mut public, mut elsewhere) = (None, 0, 0u64);
    for i in 1..=60u8 {
        let f = udp4(HOST_A, 5000, [198, 51, 100, i], 53, b"");
        let core = core_for(parse(&f, PortId(IN), &ParsePolicy::default()).unwrap().hash, 2);
        if *home.get_or_insert(core) != core {
            continue;
        }
        let (v, out) = run_on(&mut cores[core], s(1), core as u16, IN, &f);
        assert_eq!(v, Verdict::Continue);
        public = verified(&out).1;
        let reply = udp4([198, 51, 100, i], 53, PUB, public, b"");
        let rcore = core_for(parse(&reply, PortId(OUT), &ParsePolicy::default()).unwrap().hash, 2);
        let want = if rcore == core { Verdict::Continue } else { drop(DropReason::NatNoMapping) };
        elsewhere += u64::from(rcore != core);
        assert_eq!(run_on(&mut cores[rcore], s(1), rcore as u16, OUT, &reply).0, want, "remote {i}");
    }
    let home = home.unwrap();
    assert!(elsewhere > 0, "with 60 remotes some replies hash to the other core");
    assert_eq!(cores[home].counters().off_core_flows, elsewhere);
    assert_eq!(cores[home].counters().new_mappings, 1, "one mapping, port {public}");
}
