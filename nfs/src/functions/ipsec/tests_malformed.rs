//! `ipsec` tests: every malformed or refused packet is dropped with its own reason and
//! exact counters; configuration errors; random and truncated input never panics.

use super::esp::{Cipher, ICV_LEN};
use super::tests::{build, gw_config, run, run_on, udp6, K128_A, K128_B};
use super::*;
use crate::drop::DropReason;
use crate::ids::PortId;
use crate::packet::checksum;
use crate::rng::Rng;
use crate::testutil::{try_build, udp4, MAC_A, MAC_B};

/// An ESP frame from 192.0.2.1 to 198.51.100.2 on SPI `spi` with sequence number `seq`,
/// whose plaintext (inner packet, padding, pad length, next header) is given as is, encrypted
/// with the key+salt of `key_hex`.
fn esp_frame(key_hex: &str, spi: u32, seq: u32, plaintext: &[u8]) -> Vec<u8> {
    let kb: Vec<u8> =
        (2..key_hex.len()).step_by(2).map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap()).collect();
    let (key, salt) = kb.split_at(kb.len() - 4);
    let c = Cipher::new(config::KeyLen::Aes128, key).unwrap();
    let iv = u64::from(seq).to_be_bytes();
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(&iv);
    let mut aad = spi.to_be_bytes().to_vec();
    aad.extend_from_slice(&seq.to_be_bytes());
    let mut ct = plaintext.to_vec();
    let tag = c.seal(&nonce, &aad, &mut ct).unwrap();
    let total = 20 + 16 + ct.len() + ICV_LEN;
    let mut f = [&MAC_A[..], &MAC_B[..], &[0x08, 0x00]].concat();
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        50,
        0,
        0,
        192,
        0,
        2,
        1,
        198,
        51,
        100,
        2,
    ]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&spi.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&iv);
    f.extend_from_slice(&ct);
    f.extend_from_slice(&tag);
    f
}

/// Rewrites the IPv4 total length (and checksum) of `f` to match its length.
fn fix_len(f: &mut [u8]) {
    let l = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&l.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

fn inner_ip(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    udp4(src, 1, dst, 2, b"data")[14..].to_vec()
}

fn with_trailer(inner: &[u8], pad: &[u8], nh: u8) -> Vec<u8> {
    [inner, pad, &[pad.len() as u8, nh]].concat()
}

#[test]
fn malformed_and_refused_packets_each_have_their_reason() {
    let good = inner_ip([10, 1, 0, 5], [10, 2, 0, 9]);
    let ok_frame = esp_frame(K128_A, 0x1001, 1, &with_trailer(&good, &[1, 2], 4));
    let mut truncated = ok_frame[..14 + 20 + 8 + 8 + 2 + 15].to_vec();
    fix_len(&mut truncated);
    let mut bad_icv = ok_frame.clone();
    let n = bad_icv.len();
    bad_icv[n - ICV_LEN - 3] ^= 0x80;
    // The largest frame the parser takes: its ESP form would exceed 65535 bytes.
    let big = udp4([10, 1, 0, 5], 1, [10, 2, 0, 9], 2, &vec![0u8; 65_535 - 14 - 28]);
    let cases: Vec<(&str, Vec<u8>, Verdict)> = vec![
        ("good", ok_frame.clone(), Verdict::Continue),
        (
            "unknown spi",
            esp_frame(K128_A, 0x7777, 1, &with_trailer(&good, &[1, 2], 4)),
            Verdict::Drop(DropReason::IpsecUnknownSpi),
        ),
        ("truncated", truncated, Verdict::Drop(DropReason::IpsecTruncated)),
        ("bad icv", bad_icv, Verdict::Drop(DropReason::IpsecBadIcv)),
        (
            "wrong key",
            esp_frame(K128_B, 0x1001, 1, &with_trailer(&good, &[1, 2], 4)),
            Verdict::Drop(DropReason::IpsecBadIcv),
        ),
        (
            "pad bytes not 1,2",
            esp_frame(K128_A, 0x1001, 1, &with_trailer(&good, &[1, 3], 4)),
            Verdict::Drop(DropReason::IpsecBadPadding),
        ),
        (
            "pad longer than payload",
            esp_frame(K128_A, 0x1001, 1, &[0, 0, 200, 4]),
            Verdict::Drop(DropReason::IpsecBadPadding),
        ),
        (
            "next header udp",
            esp_frame(K128_A, 0x1001, 1, &with_trailer(&good, &[1, 2], 17)),
            Verdict::Drop(DropReason::IpsecBadInner),
        ),
        (
            "dummy packet",
            esp_frame(K128_A, 0x1001, 1, &with_trailer(&[], &[1, 2], 59)),
            Verdict::Drop(DropReason::IpsecBadInner),
        ),
        (
            "inner not ip",
            esp_frame(K128_A, 0x1001, 1, &with_trailer(&[0x45, 0, 0], &[1], 4)),
            Verdict::Drop(DropReason::IpsecBadInner),
        ),
        (
            "inner outside the selectors",
            esp_frame(K128_A, 0x1001, 1, &with_trailer(&inner_ip([10, 1, 0, 5], [10, 3, 0, 9]), &[1, 2], 4)),
            Verdict::Drop(DropReason::IpsecSelectorMismatch),
        ),
        (
            "inner ipv4 in an ipv6 tunnel selector",
            esp_frame(K128_A, 0x1001, 1, &with_trailer(&udp6("fd01::1", "fd03::1", b"")[14..], &[1, 2], 41)),
            Verdict::Drop(DropReason::IpsecSelectorMismatch),
        ),
        (
            "seq 0",
            esp_frame(K128_A, 0x1001, 0, &with_trailer(&good, &[1, 2], 4)),
            Verdict::Drop(DropReason::IpsecTooOld),
        ),
        ("no room", big, Verdict::Drop(DropReason::IpsecNoRoom)),
        (
            "discard policy",
            udp4([10, 1, 0, 5], 1, [10, 99, 0, 1], 2, b""),
            Verdict::Drop(DropReason::IpsecDiscard),
        ),
        ("bypass", udp4([10, 5, 0, 5], 1, [10, 6, 0, 1], 2, b""), Verdict::Continue),
        (
            "unprotected",
            udp4([10, 2, 0, 9], 2, [10, 1, 0, 5], 1, b""),
            Verdict::Drop(DropReason::IpsecUnprotected),
        ),
    ];
    for (name, frame, want) in cases {
        // A is the receiver of SPI 0x1001 here: gateway B's view.
        let mut b = build(&gw_config(false, K128_A, K128_B, ""));
        let mut a = build(&gw_config(true, K128_A, K128_B, ""));
        let to_a = matches!(name, "no room" | "discard policy" | "bypass" | "unprotected");
        let nf = if to_a { &mut a } else { &mut b };
        let (v, _) = run(nf, &frame);
        assert_eq!(v, want, "{name}");
        let drops = nf.drops();
        match want {
            Verdict::Drop(r) => assert_eq!((drops.get(r), drops.total()), (1, 1), "{name}"),
            _ => assert_eq!(drops.total(), 0, "{name}"),
        }
        let c = nf.counters();
        let moved = c.decrypted + c.encrypted + c.bypassed;
        assert_eq!(moved, u64::from(want == Verdict::Continue), "{name}");
    }
}

#[test]
fn replayed_and_too_old_after_good_packets() {
    let good = with_trailer(&inner_ip([10, 1, 0, 5], [10, 2, 0, 9]), &[1, 2], 4);
    let mut b = build(&gw_config(false, K128_A, K128_B, ""));
    for (seq, want) in [
        (100, Verdict::Continue),
        (100, Verdict::Drop(DropReason::IpsecReplayed)),
        (36, Verdict::Drop(DropReason::IpsecTooOld)),
        (37, Verdict::Continue),
    ] {
        assert_eq!(run(&mut b, &esp_frame(K128_A, 0x1001, seq, &good)).0, want, "seq {seq}");
    }
    assert_eq!(b.drops().get(DropReason::IpsecReplayed), 1);
    assert_eq!(b.drops().get(DropReason::IpsecTooOld), 1);
    assert_eq!(b.counters().decrypted, 2);
}

#[test]
fn configuration_errors_name_the_key() {
    let ok = gw_config(true, K128_A, K128_B, "");
    let cases: &[(&str, &str, &str)] = &[
        ("0x000102030405060708090a0b0c0d0e0fc0ffee01\"", "0x0001020304\"", "sa[0].outbound.key"),
        ("spi = 0x1001", "spi = 7", "sa[0].outbound.spi"),
        (
            "sa = \"ab\"\n\n[[policy]]\nsrc = \"fd01",
            "sa = \"nope\"\n\n[[policy]]\nsrc = \"fd01",
            "policy[0].sa",
        ),
        ("dst = \"10.2.0.0/16\"", "dst = \"fd02::/16\"", "policy[0]"),
        ("[[policy]]\naction = \"discard\"", "[[policy]]\naction = \"protect\"", "policy[2].sa"),
    ];
    for (from, to, key) in cases {
        let bad = ok.replacen(from, to, 1);
        assert_ne!(bad, ok, "{from}");
        let e = try_build::<Ipsec>(&bad).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    for (extra, key) in [
        ("replay_window = 100", "replay_window"),
        ("replay_window = 8192", "replay_window"),
        ("ttl = 0", "ttl"),
    ] {
        let e = try_build::<Ipsec>(&gw_config(true, K128_A, K128_B, extra)).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
    assert!(try_build::<Ipsec>(&gw_config(true, K128_A, K128_B, "replay_window = 4096\nesn = true")).is_ok());
}

/// Random bytes, random corruption and every truncation of valid ESP and cleartext frames:
/// the NF never panics, and no damaged ESP packet is accepted.
#[test]
fn random_and_truncated_input_never_panics() {
    let mut a = build(&gw_config(true, K128_A, K128_B, ""));
    let mut b = build(&gw_config(false, K128_A, K128_B, ""));
    let mut rng = Rng::new(42);
    let seeds: Vec<Vec<u8>> = vec![
        udp4([10, 1, 0, 5], 1, [10, 2, 0, 9], 2, b"payload"),
        udp6("fd01::1", "fd02::2", b"six"),
        udp4([10, 1, 0, 5], 1, [10, 99, 0, 9], 2, b""),
    ];
    let mut esp: Vec<Vec<u8>> = seeds.iter().take(2).map(|s| run(&mut a, s).1).collect();
    esp.push(esp_frame(
        K128_A,
        0x1001,
        9,
        &with_trailer(&inner_ip([10, 1, 0, 5], [10, 2, 0, 9]), &[1, 2], 4),
    ));
    let mut tried = 0;
    for base in seeds.iter().chain(esp.iter()) {
        for cut in 0..=base.len() {
            let mut f = base[..cut].to_vec();
            if f.len() >= 34 && f[12..14] == [0x08, 0x00] {
                fix_len(&mut f);
            }
            if let Ok(meta) = parse(&f, PortId(1), &ParsePolicy::default()) {
                let _ = run_on(&mut a, 0, &f);
                // ESP to B's endpoint cut short is never accepted by B.
                let (v, _) = run_on(&mut b, 0, &f);
                if meta.proto == crate::packet::IpProtocol::Esp && cut < base.len() {
                    assert!(matches!(v, Verdict::Drop(_)), "truncated ESP accepted at {cut}");
                }
                tried += 1;
            }
        }
    }
    for _ in 0..20_000 {
        let base = &esp[rng.below(esp.len() as u64) as usize];
        let mut f = base.clone();
        for _ in 0..=rng.below(4) {
            let at = 34 + rng.below((f.len() - 34) as u64) as usize;
            f[at] ^= 1 + rng.below(255) as u8;
        }
        if let Ok(_meta) = parse(&f, PortId(1), &ParsePolicy::default()) {
            let (v, _) = run(&mut b, &f);
            assert!(matches!(v, Verdict::Drop(_)), "corrupted ESP accepted");
            tried += 1;
        }
        let mut junk: Vec<u8> = (0..rng.below(200)).map(|_| rng.below(256) as u8).collect();
        if junk.len() > 34 && rng.below(2) == 0 {
            junk[12..14].copy_from_slice(&[0x08, 0x00]);
            junk[14] = 0x45;
            junk[23] = 50;
            junk[30..34].copy_from_slice(&[198, 51, 100, 2]);
            fix_len(&mut junk);
        }
        if parse(&junk, PortId(1), &ParsePolicy::default()).is_ok() {
            let _ = run(&mut b, &junk);
            let _ = run(&mut a, &junk);
        }
    }
    assert!(tried > 10_000, "{tried}");
}

#[test]
fn reverse_cleartext_needs_an_explicit_bypass_and_unmatched_applies_to_the_rest() {
    let extra =
        "\n[[policy]]\naction = \"bypass\"\nsrc = \"10.2.0.0/16\"\ndst = \"10.1.0.0/16\"\nproto = \"icmp\"";
    let cfg = format!("unmatched = \"discard\"\n{}", gw_config(true, K128_A, K128_B, extra));
    let mut a = build(&cfg);
    let cases = [
        (
            "reverse icmp, bypassed",
            crate::testutil::icmp_echo4([10, 2, 0, 9], [10, 1, 0, 5], 1, 1),
            Verdict::Continue,
        ),
        (
            "reverse udp",
            udp4([10, 2, 0, 9], 2, [10, 1, 0, 5], 1, b""),
            Verdict::Drop(DropReason::IpsecUnprotected),
        ),
        ("unmatched", udp4([10, 5, 0, 5], 1, [10, 6, 0, 1], 2, b""), Verdict::Drop(DropReason::IpsecDiscard)),
        ("protected", udp4([10, 1, 0, 5], 1, [10, 2, 0, 9], 2, b""), Verdict::Continue),
    ];
    for (name, frame, want) in cases {
        assert_eq!(run(&mut a, &frame).0, want, "{name}");
    }
    let c = a.counters();
    assert_eq!((c.bypassed, c.encrypted), (1, 1));
    let d = a.drops();
    assert_eq!((d.get(DropReason::IpsecUnprotected), d.get(DropReason::IpsecDiscard), d.total()), (1, 1, 2));
}

/// The single-packet entry point sees a fixed-length slice: it applies the policies but
/// cannot encapsulate or decapsulate (the dataplane always calls the burst path).
#[test]
fn fixed_length_frames_cannot_be_encapsulated() {
    let mut a = build(&gw_config(true, K128_A, K128_B, ""));
    let cases = [
        (udp4([10, 1, 0, 5], 1, [10, 2, 0, 9], 2, b""), Verdict::Drop(DropReason::IpsecNoRoom)),
        (udp4([10, 5, 0, 5], 1, [10, 6, 0, 9], 2, b""), Verdict::Continue),
        (udp4([10, 1, 0, 5], 1, [10, 99, 0, 9], 2, b""), Verdict::Drop(DropReason::IpsecDiscard)),
    ];
    for (frame, want) in cases {
        assert_eq!(crate::testutil::run(&mut a, crate::time::Nanos(0), 0, &frame), want);
    }
}
