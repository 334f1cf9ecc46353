//! Fragment translation and fragment-table bounds.

use super::*;

#[test]
fn later_fragments_follow_their_first_fragment() {
    let mut nat: Nat = build(BASE);
    // The first fragment's UDP length covers more than the fragment holds.
    let mut first = udp4(HOST_A, 4500, R1, 4500, &[7u8; 16]);
    first[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&40u16.to_be_bytes());
    let first = fragment(first, 0x4242, true, 0);
    let later = fragment(udp4(HOST_A, 1, R1, 1, &[8u8; 16]), 0x4242, false, 3);
    let stray = fragment(udp4(HOST_A, 1, R1, 1, &[8u8; 16]), 0x4343, false, 3);
    type Addrs = ([u8; 4], [u8; 4]);
    let cases: &[(&str, u16, &Vec<u8>, Verdict, Addrs)] = &[
        ("later before first", IN, &later, drop(DropReason::Fragment), (HOST_A, R1)),
        ("first", IN, &first, Verdict::Continue, (PUB, R1)),
        ("later", IN, &later, Verdict::Continue, (PUB, R1)),
        ("unknown datagram", IN, &stray, drop(DropReason::Fragment), (HOST_A, R1)),
    ];
    for (name, ingress, f, want, a) in cases {
        let (v, out) = run(&mut nat, s(1), *ingress, f);
        assert_eq!(v, *want, "{name}");
        if !matches!(v, Verdict::Drop(_)) {
            assert_eq!(addrs(&out), *a, "{name}");
        }
    }
    // Inbound fragments of the reply follow too; tracking entries expire after 2 s.
    let back_first = fragment(udp4(R1, 4500, PUB, 4500, &[1u8; 8]), 0x99, true, 0);
    let back_later = fragment(udp4(R1, 1, PUB, 1, &[2u8; 8]), 0x99, false, 2);
    assert_eq!(run(&mut nat, s(2), OUT, &back_first).0, Verdict::Continue);
    let (v, out) = run(&mut nat, s(3), OUT, &back_later);
    assert_eq!((v, addrs(&out)), (Verdict::Continue, (R1, HOST_A)));
    assert_eq!(run(&mut nat, s(6), OUT, &back_later).0, drop(DropReason::Fragment));
    let c = nat.counters();
    assert_eq!((c.fragments, c.unknown_fragments), (2, 3));
}

#[test]
fn fragment_floods_only_evict_fragment_state() {
    let mut nat: Nat = build(&format!("fragments = 16\n{BASE}"));
    run(&mut nat, s(1), IN, &udp4(HOST_A, 4500, R1, 53, b""));
    for id in 0..1000u16 {
        let f = fragment(udp4(HOST_A, 4500, R1, 53, &[0u8; 8]), id, true, 0);
        assert_eq!(run(&mut nat, s(1), IN, &f).0, Verdict::Continue);
    }
    let mut r = Report::default();
    nat.report(&mut r);
    let frags = r.tables.iter().find(|t| t.0 == "fragments").unwrap().2;
    assert!(frags.len <= 16 && frags.evicted > 0, "{frags:?}");
    assert_eq!(run(&mut nat, s(1), OUT, &udp4(R1, 53, PUB, 4500, b"")).0, Verdict::Continue);
}
