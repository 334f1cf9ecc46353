//! ICMP echo and ICMP error translation (RFC 5508).

use super::*;

#[test]
fn icmp_echo_is_translated_by_identifier() {
    let mut nat: Nat = build(BASE);
    let (v, f) = run(&mut nat, s(1), IN, &icmp_echo4(HOST_A, R1, 7, 1));
    assert_eq!(v, Verdict::Continue);
    let (src, id, dst, _) = verified(&f);
    assert_eq!((src, dst), (PUB, R1));
    assert!(id >= 1024, "identifier 7 is outside the pool range, so it is replaced");
    let reply = echo_reply(R1, PUB, id);
    let (v, f) = run(&mut nat, s(2), OUT, &reply);
    assert_eq!(v, Verdict::Continue);
    assert_eq!(verified(&f), (R1, 7, HOST_A, 7));
    // RFC 5508 REQ-1: ICMP query mappings live at least 60 s, refreshed outbound only.
    assert_eq!(run(&mut nat, s(60), OUT, &reply).0, Verdict::Continue);
    assert_eq!(run(&mut nat, s(61), OUT, &reply).0, drop(DropReason::NatNoMapping));
}

#[test]
fn icmp_errors_are_translated_both_ways() {
    let mut nat: Nat = build(BASE);
    let (_, sent) = run(&mut nat, s(1), IN, &udp4(HOST_A, 5353, R1, 53, b"q"));
    // A router on the way reports the translated datagram: whole quote, and cut to 8 bytes.
    for cut in [sent.len() - 14, 28] {
        let err = icmp_error([10, 9, 9, 9], PUB, &sent[14..14 + cut]);
        let (v, f) = run(&mut nat, s(2), OUT, &err);
        assert_eq!(v, Verdict::Continue, "cut {cut}");
        assert_eq!(verified(&f).2, HOST_A, "outer destination");
        assert_eq!(quoted(&f), (HOST_A, 5353, R1, 53), "cut {cut}");
    }
    // The inside host reports an inbound datagram it received: the quote goes public.
    let (_, delivered) = run(&mut nat, s(3), OUT, &udp4(R1, 53, PUB, 5353, b"a"));
    let err = icmp_error(HOST_A, R1, &delivered[14..]);
    let (v, f) = run(&mut nat, s(4), IN, &err);
    assert_eq!(v, Verdict::Continue);
    assert_eq!(verified(&f).0, PUB, "outer source");
    assert_eq!(quoted(&f), (R1, 53, PUB, 5353));
    // Errors never create or refresh a mapping: it expires 300 s after the last outbound.
    assert_eq!(nat.counters().new_mappings, 1);
    assert_eq!(
        run(&mut nat, s(302), OUT, &icmp_error(R1, PUB, &sent[14..])).0,
        drop(DropReason::NatNoMapping)
    );
    assert_eq!(nat.counters().icmp_errors, 3);
}

#[test]
fn malformed_icmp_errors_are_dropped_with_a_reason() {
    let mut nat: Nat = build(BASE);
    let (_, sent) = run(&mut nat, s(1), IN, &udp4(HOST_A, 5353, R1, 53, b"q"));
    let bad = drop(DropReason::NatBadIcmpError);
    let mut corrupt = icmp_error(R1, PUB, &sent[14..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let mut bad_version = sent[14..].to_vec();
    bad_version[0] = 0x65;
    let cases: &[(&str, Vec<u8>, Verdict)] = &[
        ("quote shorter than ip + 8", icmp_error(R1, PUB, &sent[14..14 + 27]), bad),
        ("empty quote", icmp_error(R1, PUB, &[]), bad),
        ("bad icmp checksum", corrupt, bad),
        ("quoted version 6", icmp_error(R1, PUB, &bad_version), bad),
        ("error sent straight to an inside address", icmp_error(R1, HOST_A, &sent[14..]), {
            drop(DropReason::NatNoMapping)
        }),
        ("quote of an unknown mapping", icmp_error(R1, PUB, &udp4(PUB, 999, R1, 53, b"")[14..]), {
            drop(DropReason::NatNoMapping)
        }),
    ];
    for (name, f, want) in cases {
        assert_eq!(run(&mut nat, s(2), OUT, f).0, *want, "{name}");
    }
    let c = nat.counters();
    assert_eq!((c.bad_icmp_errors, c.no_mapping, c.icmp_errors), (4, 2, 0));
}
