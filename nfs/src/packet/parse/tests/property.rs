//! Property tests and the micro-measurement: no input makes `parse` panic, and whatever it
//! accepts satisfies the `Meta` invariants.

use super::{fix_ipv4, run, PORT};
use crate::packet::golden::{self, Rng};
use crate::packet::{parse, FragmentPolicy, Meta, ParsePolicy};

/// Offsets are ordered and inside the frame, and the hash is the key's.
fn check_invariants(frame: &[u8], m: &Meta) {
    assert!(m.l3 <= m.l4 && m.l4 <= m.payload && m.payload <= m.l3_end);
    assert!(usize::from(m.l3_end) <= frame.len());
    assert_eq!(m.hash, m.key.hash());
    assert!(m.vlan_count <= 2);
}

#[test]
fn every_truncation_of_every_golden_frame() {
    for (i, frame) in golden::ALL.iter().enumerate() {
        let Ok(full) = run(frame) else {
            panic!("golden frame {i} does not parse");
        };
        for n in 0..=frame.len() {
            let cut = &frame[..n];
            match run(cut) {
                Ok(m) => {
                    assert!(n >= usize::from(full.l3_end), "frame {i} cut to {n} parsed");
                    assert_eq!(m, full, "frame {i} cut to {n}");
                    check_invariants(cut, &m);
                }
                Err(_) => assert!(n < usize::from(full.l3_end), "frame {i} cut to {n} failed"),
            }
        }
    }
}

/// Pseudo-random frames: pure noise, and golden frames with a few bytes changed or cut.
#[test]
fn random_frames_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let policies = [
        ParsePolicy::default(),
        ParsePolicy { fragments: FragmentPolicy::DropAll, verify_ipv4_checksum: false },
    ];
    let mut ok = 0;
    for round in 0..20_000 {
        let mut f = if round % 4 == 0 {
            let mut f = vec![0u8; rng.below(128)];
            f.iter_mut().for_each(|b| *b = rng.next() as u8);
            f
        } else {
            let base = golden::ALL[rng.below(golden::ALL.len())];
            let mut f = base.to_vec();
            for _ in 0..=rng.below(4) {
                let at = rng.below(f.len());
                f[at] = rng.next() as u8;
            }
            if rng.below(4) == 0 {
                f.truncate(rng.below(f.len() + 1));
            }
            f
        };
        if round % 8 == 1 {
            // Make the IPv4 checksum right so mutations reach the transport layer.
            if f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[14] == 0x45 {
                fix_ipv4(&mut f, 14);
            }
        }
        let policy = &policies[round % 2];
        if let Ok(m) = parse(&f, PORT, policy) {
            check_invariants(&f, &m);
            ok += 1;
        }
    }
    assert!(ok > 1000, "mutations should still parse often, got {ok}");
}

/// `cargo test --release -p nflet-nfs parse_cost -- --ignored --nocapture`
#[test]
#[ignore = "micro-measurement, run by hand with --release"]
fn parse_cost() {
    use std::hint::black_box;
    use std::time::Instant;
    const N: u32 = 10_000_000;
    let policy = ParsePolicy::default();
    for (name, frame) in [
        ("ipv4/udp", golden::IPV4_UDP_DNS),
        ("ipv4/tcp", golden::IPV4_TCP_SYN),
        ("qinq ipv4/udp", golden::QINQ_IPV4_UDP),
        ("ipv6/hbh/frag/udp", golden::IPV6_HBH_FRAG_UDP),
    ] {
        let start = Instant::now();
        let mut acc = 0u32;
        for _ in 0..N {
            if let Ok(m) = parse(black_box(frame), PORT, black_box(&policy)) {
                acc = acc.wrapping_add(m.hash);
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        println!("parse {name}: {ns:.2} ns/frame (acc {acc})");
    }
}
