//! `ipsec` tests: round trips between two gateways, a scapy-made golden packet, anti-replay
//! through the NF, sequence-number exhaustion and soft limit, and SA ownership across cores.
//! Malformed input, configuration errors and the randomised test are in `tests_malformed.rs`.

use etherparse::PacketBuilder;

use super::*;
use crate::drop::DropReason;
use crate::ids::PortId;
use crate::nf::SharedRegistry;
use crate::packet::checksum;
use crate::state::{Arena, Backing};
use crate::testutil::{udp4, MAC_A, MAC_B};
use crate::time::Nanos;

pub(super) const K128_A: &str = "0x000102030405060708090a0b0c0d0e0fc0ffee01";
pub(super) const K128_B: &str = "0x101112131415161718191a1b1c1d1e1fc0ffee02";
pub(super) const K256_A: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc0ffee03";
pub(super) const K256_B: &str = "0x202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fc0ffee04";

/// Gateway A (192.0.2.1, sites 10.1/16 and fd01::/16) facing gateway B (198.51.100.2, sites
/// 10.2/16 and fd02::/16); `extra` goes into both SA tables.
pub(super) fn gw_config(a_side: bool, ka: &str, kb: &str, extra: &str) -> String {
    let (local, remote, out_spi, out_key, in_spi, in_key, me, peer) = if a_side {
        ("192.0.2.1", "198.51.100.2", "0x1001", ka, "0x2002", kb, "1", "2")
    } else {
        ("198.51.100.2", "192.0.2.1", "0x2002", kb, "0x1001", ka, "2", "1")
    };
    format!(
        r#"
[[sa]]
name = "ab"
local = "{local}"
remote = "{remote}"
outbound = {{ spi = {out_spi}, key = "{out_key}" }}
inbound = {{ spi = {in_spi}, key = "{in_key}" }}
{extra}

[[policy]]
src = "10.{me}.0.0/16"
dst = "10.{peer}.0.0/16"
sa = "ab"

[[policy]]
src = "fd0{me}::/16"
dst = "fd0{peer}::/16"
sa = "ab"

[[policy]]
action = "discard"
dst = "10.99.0.0/16"
"#
    )
}

/// Builds the NF on every core of a `cores`-core appliance.
pub(super) fn build_cores(config: &str, cores: usize) -> Vec<Ipsec> {
    let cfg: IpsecConfig = toml::from_str(config).unwrap();
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    (0..cores)
        .map(|c| {
            let core = CoreId(c as u16);
            let mut arena = Arena::new(core, 1 << 20, Backing::Normal);
            let mut rt = InitCtx {
                instance: crate::ids::Instance::default(),
                name: "vpn",
                core,
                cores,
                ports: &ports,
                arena: &mut arena,
                shared: &mut shared,
            };
            Ipsec::init(&cfg, &mut rt).unwrap()
        })
        .collect()
}

pub(super) fn build(config: &str) -> Ipsec {
    build_cores(config, 1).pop().unwrap()
}

/// Runs one frame through `nf` on `core` (burst path); returns the verdict and the frame.
pub(super) fn run_on(nf: &mut Ipsec, core: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut frames = vec![frame.to_vec()];
    let mut metas = vec![parse(frame, PortId(0), &ParsePolicy::default()).unwrap()];
    let mut verdicts = vec![Verdict::Continue];
    let mut burst = Burst { frames: &mut frames, metas: &mut metas, verdicts: &mut verdicts, active: &[0] };
    nf.process(&Ctx { now: Nanos(0), core: CoreId(core) }, &mut burst);
    let f = frames.pop().unwrap();
    // The metadata handed on describes the rewritten frame.
    if verdicts[0] == Verdict::Continue {
        assert_eq!(metas[0], parse(&f, PortId(0), &ParsePolicy::default()).unwrap());
    }
    (verdicts[0], f)
}

pub(super) fn run(nf: &mut Ipsec, frame: &[u8]) -> (Verdict, Vec<u8>) {
    run_on(nf, 0, frame)
}

pub(super) fn udp6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let s: std::net::Ipv6Addr = src.parse().unwrap();
    let d: std::net::Ipv6Addr = dst.parse().unwrap();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(s.octets(), d.octets(), 64).udp(4000, 53);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// ESP fields of an encapsulated frame: (SPI, sequence number, IV).
pub(super) fn esp_fields(f: &[u8]) -> (u32, u32, u64) {
    let e = &f[34..];
    (
        u32::from_be_bytes(e[0..4].try_into().unwrap()),
        u32::from_be_bytes(e[4..8].try_into().unwrap()),
        u64::from_be_bytes(e[8..16].try_into().unwrap()),
    )
}

#[test]
fn round_trips_both_key_sizes_and_families() {
    for (ka, kb) in [(K128_A, K128_B), (K256_A, K256_B)] {
        let mut a = build(&gw_config(true, ka, kb, ""));
        let mut b = build(&gw_config(false, ka, kb, ""));
        let mut n = 0u32;
        // Payload lengths 0..=5 cover all four padding lengths for both families.
        for len in 0..=5usize {
            let payload = vec![0xa5u8; len];
            for (inner, inner_len) in [
                (udp4([10, 1, 0, 5], 1234, [10, 2, 0, 9], 5678, &payload), 28 + len),
                (udp6("fd01::5", "fd02::9", &payload), 48 + len),
            ] {
                n += 1;
                let (v, enc) = run(&mut a, &inner);
                assert_eq!(v, Verdict::Continue, "{ka} len {len}");
                // Outer header: IPv4, protocol 50, A → B, valid checksum, exact length.
                let pad = (4 - (inner_len + 2) % 4) % 4;
                let outer_len = 20 + 8 + 8 + inner_len + pad + 2 + 16;
                assert_eq!(enc.len(), 14 + outer_len);
                assert_eq!(&enc[12..14], &[0x08, 0x00]);
                assert_eq!(enc[14], 0x45);
                assert_eq!(u16::from_be_bytes([enc[16], enc[17]]) as usize, outer_len);
                assert_eq!(enc[22], 64, "outer TTL");
                assert_eq!(enc[23], 50);
                assert_eq!(&enc[26..30], &[192, 0, 2, 1]);
                assert_eq!(&enc[30..34], &[198, 51, 100, 2]);
                assert_eq!(checksum::checksum(&enc[14..34]), 0);
                assert_eq!((outer_len - 36) % 4, 0, "payload aligned to 4 bytes");
                // SPI, sequence numbers 1, 2, ... and the sequence number as IV.
                assert_eq!(esp_fields(&enc), (0x1001, n, u64::from(n)));
                // The inner packet is not in the clear.
                assert_ne!(&enc[50..50 + inner_len], &inner[14..]);
                let (v, dec) = run(&mut b, &enc);
                assert_eq!(v, Verdict::Continue, "{ka} len {len}");
                assert_eq!(dec[..14], inner[..14], "Ethernet header kept");
                // The inner packet arrives as sent, one router hop older.
                assert_eq!(dec, ttl_minus_one(&inner));
            }
        }
        assert_eq!((a.counters().encrypted, b.counters().decrypted), (u64::from(n), u64::from(n)));
        assert_eq!((a.drops().total(), b.drops().total()), (0, 0));
    }
}

/// A packet made by scapy 2.5 (`SecurityAssociation(ESP, spi=0x1001, crypt_algo='AES-GCM',
/// crypt_key=key+salt, tunnel_header=IP(src="192.0.2.1", dst="198.51.100.2"))`,
/// `encrypt(inner, seq_num=1, iv=seq)`): decrypted here, and reproduced byte for byte, since
/// the IV is the sequence number and the outer header's choices agree with scapy's.
#[test]
fn scapy_golden_packet() {
    let h = |s: &str| -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    };
    let esp_ip = h("4500005c0001000040328e38c0000201c633640200001001000000010000000000000001ba24c3bd285a5c97e46a044033c41dad3392b8a9996a29a202d3e40e4633df2bd1365df308d24378e6e034b5db4af3a55843844b61c52c90");
    let inner_ip = h("4500002600010000401166b60a0100050a02000904d2162e0012f8e568656c6c6f2c20657370");
    let eth = |ip: &[u8]| [&MAC_A[..], &MAC_B[..], &[0x08, 0x00], ip].concat();
    let mut b = build(&gw_config(false, K128_A, K128_B, ""));
    assert_eq!(run(&mut b, &eth(&esp_ip)), (Verdict::Continue, eth(&inner_ip)));
    // scapy leaves the inner TTL alone: so does a bump in the wire.
    let mut a = build(&format!("decrement_ttl = false\n{}", gw_config(true, K128_A, K128_B, "")));
    assert_eq!(run(&mut a, &eth(&inner_ip)), (Verdict::Continue, eth(&esp_ip)));
}

/// The inner packet's TTL goes down by one on its way into the tunnel, as through any router
/// (RFC 4301 §5.1.2.1), and a packet with TTL 1 is not forwarded.
#[test]
fn encapsulation_decrements_the_inner_ttl() {
    let mut a = build(&gw_config(true, K128_A, K128_B, ""));
    let mut b = build(&gw_config(false, K128_A, K128_B, ""));
    for (inner, ttl_at) in
        [(udp4([10, 1, 0, 5], 1234, [10, 2, 0, 9], 5678, b"x"), 22), (udp6("fd01::5", "fd02::9", b"x"), 21)]
    {
        let (v, enc) = run(&mut a, &inner);
        assert_eq!(v, Verdict::Continue);
        let (_, dec) = run(&mut b, &enc);
        assert_eq!(dec[ttl_at], inner[ttl_at] - 1);
        assert_eq!(dec, ttl_minus_one(&inner), "checksum updated, nothing else changed");
        let mut last_hop = inner.clone();
        last_hop[ttl_at] = 1;
        if ttl_at == 22 {
            last_hop[24..26].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&last_hop[14..34]);
            last_hop[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let (v, out) = run(&mut a, &last_hop);
        assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
        assert_eq!(out, last_hop, "a refused packet is left as it was");
    }
    assert_eq!(a.counters().encrypted, 2);
}

/// `frame` with its IP TTL (hop limit) one lower and the IPv4 checksum fixed.
fn ttl_minus_one(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let mut meta =
        crate::packet::parse(&f, crate::ids::PortId(0), &crate::packet::ParsePolicy::default()).unwrap();
    crate::packet::rewrite::decrement_ttl(&mut f, &mut meta).unwrap();
    f
}

#[test]
fn replay_and_forgery_through_the_nf() {
    let mut a = build(&gw_config(true, K128_A, K128_B, ""));
    let mut b = build(&gw_config(false, K128_A, K128_B, ""));
    let inner = udp4([10, 1, 0, 5], 1234, [10, 2, 0, 9], 5678, b"x");
    let pkts: Vec<Vec<u8>> = (0..200).map(|_| run(&mut a, &inner).1).collect();
    // A forged packet far ahead (seq 200, ICV broken) must not move the window: seq 5 is
    // then still inside it.
    let mut forged = pkts[199].clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    // (packet index, expected verdict)
    let steps: &[(usize, Verdict)] = &[
        (199, Verdict::Drop(DropReason::IpsecBadIcv)), // the forged one (index unused)
        (4, Verdict::Continue),
        (4, Verdict::Drop(DropReason::IpsecReplayed)),
        (100, Verdict::Continue),
        (36, Verdict::Drop(DropReason::IpsecTooOld)), // seq 37 < 101 - 63
        (37, Verdict::Continue),                      // seq 38: lowest in the window
        (99, Verdict::Continue),
        (99, Verdict::Drop(DropReason::IpsecReplayed)),
        (199, Verdict::Continue),
        (100, Verdict::Drop(DropReason::IpsecTooOld)),
    ];
    for (step, (i, want)) in steps.iter().enumerate() {
        let pkt = if step == 0 { &forged } else { &pkts[*i] };
        assert_eq!(run(&mut b, pkt).0, *want, "step {step}");
    }
    assert_eq!(b.counters().decrypted, 5);
    assert_eq!(b.drops().get(DropReason::IpsecBadIcv), 1);
    assert_eq!(b.drops().get(DropReason::IpsecReplayed), 2);
    assert_eq!(b.drops().get(DropReason::IpsecTooOld), 2);
    assert_eq!(b.drops().total(), 5);
}

#[test]
fn larger_window_and_esn_rollover() {
    let extra = "replay_window = 1024\nesn = true";
    let mut a = build(&gw_config(true, K256_A, K256_B, extra));
    let mut b = build(&gw_config(false, K256_A, K256_B, extra));
    let start = (1u64 << 32) - 5;
    a.out[0].sent = start - 1;
    b.inb[0].window.accept(start - 1);
    let inner = udp4([10, 1, 0, 5], 1234, [10, 2, 0, 9], 5678, b"esn");
    let pkts: Vec<Vec<u8>> = (0..1100).map(|_| run(&mut a, &inner).1).collect();
    // Wire sequence numbers wrap; the IV carries all 64 bits.
    assert_eq!(esp_fields(&pkts[4]), (0x1001, u32::MAX, (1 << 32) - 1));
    assert_eq!(esp_fields(&pkts[5]), (0x1001, 0, 1 << 32));
    // Out of order across the rollover and within 1024 packets: all accepted once.
    for i in [5usize, 0, 4, 3, 2] {
        assert_eq!(run(&mut b, &pkts[i]).0, Verdict::Continue, "packet {i}");
    }
    assert_eq!(run(&mut b, &pkts[4]).0, Verdict::Drop(DropReason::IpsecReplayed));
    assert_eq!(run(&mut b, &pkts[5]).0, Verdict::Drop(DropReason::IpsecReplayed));
    for i in [1050usize, 30] {
        assert_eq!(run(&mut b, &pkts[i]).0, Verdict::Continue, "packet {i}");
    }
    assert_eq!(run(&mut b, &pkts[27]).0, Verdict::Continue, "1050 - 1023 is in the window");
    // Just below the window, RFC 4303 A2.2 infers the next subspace (its low bits are below
    // the window's bottom), so the ICV fails rather than the window refusing it.
    assert_eq!(run(&mut b, &pkts[26]).0, Verdict::Drop(DropReason::IpsecBadIcv));
    assert_eq!(b.inb[0].window.top(), start + 1050);
    // Without ESN on the receiver the AAD differs (no high-order bits): the ICV fails.
    let mut plain = build(&gw_config(false, K256_A, K256_B, "replay_window = 1024"));
    assert_eq!(run(&mut plain, &pkts[0]).0, Verdict::Drop(DropReason::IpsecBadIcv));
}

#[test]
fn sequence_numbers_stop_at_the_limit_and_soft_limit_raises_rekey() {
    let mut a = build(&gw_config(true, K128_A, K128_B, "soft_limit_packets = 3"));
    let inner = udp4([10, 1, 0, 5], 1234, [10, 2, 0, 9], 5678, b"x");
    for n in 1..=4u64 {
        assert_eq!(run(&mut a, &inner).0, Verdict::Continue);
        assert_eq!((a.rekey_needed(0), a.counters().rekey_needed), (n >= 3, u64::from(n >= 3)));
    }
    a.out[0].sent = u64::from(u32::MAX) - 1;
    let (v, last) = run(&mut a, &inner);
    assert_eq!((v, esp_fields(&last).1), (Verdict::Continue, u32::MAX));
    for _ in 0..3 {
        assert_eq!(run(&mut a, &inner), (Verdict::Drop(DropReason::IpsecSeqOverflow), inner.clone()));
    }
    assert_eq!(a.drops().get(DropReason::IpsecSeqOverflow), 3);
    assert_eq!(a.counters().encrypted, 5);
    // With ESN the limit is 2^64 − 1.
    let mut e = build(&gw_config(true, K128_A, K128_B, "esn = true"));
    e.out[0].sent = u64::MAX - 1;
    assert_eq!(run(&mut e, &inner).0, Verdict::Continue);
    assert_eq!(run(&mut e, &inner).0, Verdict::Drop(DropReason::IpsecSeqOverflow));
}

#[test]
fn each_sa_is_owned_by_one_core_in_both_directions() {
    // Four SA pairs with different inbound SPIs, on a 2-core appliance.
    let mut cfg_a = String::new();
    let mut cfg_b = String::new();
    for i in 0..4u32 {
        for (cfg, local, remote, out_spi, in_spi, src, dst) in [
            (&mut cfg_a, "192.0.2.1", "198.51.100.2", 0x1000 + i, 0x2000 + i * 3, 1, 2),
            (&mut cfg_b, "198.51.100.2", "192.0.2.1", 0x2000 + i * 3, 0x1000 + i, 2, 1),
        ] {
            cfg.push_str(&format!(
                "[[sa]]\nname = \"s{i}\"\nlocal = \"{local}\"\nremote = \"{remote}\"\noutbound = {{ spi = {out_spi}, key = \"{K128_A}\" }}\ninbound = {{ spi = {in_spi}, key = \"{K128_A}\" }}\n\n[[policy]]\nsrc = \"10.{src}.{i}.0/24\"\ndst = \"10.{dst}.{i}.0/24\"\nsa = \"s{i}\"\n\n"
            ));
        }
    }
    let mut a = build_cores(&cfg_a, 2);
    let mut b = build_cores(&cfg_b, 2);
    let mut seen = std::collections::HashSet::new();
    for i in 0..4u8 {
        let out = udp4([10, 1, i, 5], 1000, [10, 2, i, 9], 2000, b"o");
        let meta = parse(&out, PortId(0), &ParsePolicy::default()).unwrap();
        let owner = a[0].steer(&meta, &out).unwrap();
        assert_eq!(a[1].steer(&meta, &out), Some(owner), "every core agrees");
        assert_eq!(owner, CoreId((0x2000 + u16::from(i) * 3) % 2));
        let other = 1 - owner.0;
        // The wrong core refuses rather than emit a sequence number the owner also sends.
        assert_eq!(
            run_on(&mut a[usize::from(other)], other, &out).0,
            Verdict::Drop(DropReason::IpsecWrongCore)
        );
        for _ in 0..3 {
            let (v, enc) = run_on(&mut a[usize::from(owner.0)], owner.0, &out);
            assert_eq!(v, Verdict::Continue);
            assert!(seen.insert(esp_fields(&enc)), "nonce reused: {:?}", esp_fields(&enc));
            // Inbound at the peer: steered by SPI; the peer's SA pair is owned by the core
            // of its inbound SPI (this SA's outbound SPI).
            let meta = parse(&enc, PortId(1), &ParsePolicy::default()).unwrap();
            let peer_owner = b[0].steer(&meta, &enc).unwrap();
            assert_eq!(peer_owner, CoreId((0x1000 + u16::from(i)) % 2));
            let reply = udp4([10, 2, i, 9], 2000, [10, 1, i, 5], 1000, b"r");
            let rmeta = parse(&reply, PortId(0), &ParsePolicy::default()).unwrap();
            assert_eq!(b[1].steer(&rmeta, &reply), Some(peer_owner), "same core both ways");
            let (v, _) = run_on(&mut b[usize::from(peer_owner.0)], peer_owner.0, &enc);
            assert_eq!(v, Verdict::Continue);
        }
    }
    assert_eq!(seen.len(), 12);
    // Traffic no policy protects is not steered.
    let other = udp4([10, 7, 0, 1], 1, [10, 8, 0, 1], 2, b"");
    assert_eq!(a[0].steer(&parse(&other, PortId(0), &ParsePolicy::default()).unwrap(), &other), None);
}

/// RFC 6040 §4.2 at the decapsulator: the outer header is not covered by the ICV, so a router
/// on the path may mark it CE; the mark must reach the inner packet (Linux's xfrm passes it
/// on; it used to be lost with the outer header). Over a Not-ECT inner packet it is a drop.
#[test]
fn outer_ecn_marks_reach_the_inner_packet() {
    const NOT_ECT: u8 = 0;
    const ECT1: u8 = 1;
    const ECT0: u8 = 2;
    const CE: u8 = 3;
    let cases = [
        (ECT0, CE, Ok(CE)),
        (ECT1, CE, Ok(CE)),
        (CE, CE, Ok(CE)),
        (CE, ECT0, Ok(CE)),
        (ECT0, ECT1, Ok(ECT1)),
        (ECT0, ECT0, Ok(ECT0)),
        (ECT1, NOT_ECT, Ok(ECT1)),
        (NOT_ECT, NOT_ECT, Ok(NOT_ECT)),
        (NOT_ECT, ECT0, Ok(NOT_ECT)),
        (NOT_ECT, CE, Err(DropReason::IpsecCeNotEct)),
    ];
    let v4 = |ecn: u8| {
        let mut f = udp4([10, 1, 0, 5], 1234, [10, 2, 0, 9], 5678, b"ecn");
        f[15] = (10 << 2) | ecn; // DSCP AF11, kept as it is
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let v6 = |ecn: u8| {
        let mut f = udp6("fd01::5", "fd02::9", b"ecn");
        f[14] = 0x60 | (10 >> 2); // traffic class = DSCP AF11 << 2 | ECN
        f[15] = ((10 & 3) << 6) | (ecn << 4) | (f[15] & 0x0f);
        f
    };
    let inner_ecn = |f: &[u8]| if f[14] >> 4 == 4 { f[15] & 3 } else { (f[15] >> 4) & 3 };
    let set_inner_ecn = |f: &mut Vec<u8>, ecn: u8| {
        if f[14] >> 4 == 4 {
            *f = {
                let mut g = f.clone();
                g[15] = (g[15] & !3) | ecn;
                g[24..26].copy_from_slice(&[0, 0]);
                let c = checksum::checksum(&g[14..34]);
                g[24..26].copy_from_slice(&c.to_be_bytes());
                g
            };
        } else {
            f[15] = (f[15] & 0xcf) | (ecn << 4);
        }
    };
    for make in [&v4 as &dyn Fn(u8) -> Vec<u8>, &v6] {
        let mut a = build(&gw_config(true, K128_A, K128_B, ""));
        let mut b = build(&gw_config(false, K128_A, K128_B, ""));
        for (inner, outer, want) in cases {
            let plain = make(inner);
            let (v, mut enc) = run(&mut a, &plain);
            assert_eq!(v, Verdict::Continue);
            assert_eq!(enc[15] & 3, inner, "the encapsulator copies ECN to the outer header");
            // A router on the path sets the outer ECN field (and the header checksum).
            enc[15] = (enc[15] & !3) | outer;
            enc[24..26].copy_from_slice(&[0, 0]);
            let c = checksum::checksum(&enc[14..34]);
            enc[24..26].copy_from_slice(&c.to_be_bytes());
            let (v, dec) = run(&mut b, &enc);
            match want {
                Ok(ecn) => {
                    assert_eq!(v, Verdict::Continue, "inner {inner} outer {outer}");
                    assert_eq!(inner_ecn(&dec), ecn, "inner {inner} outer {outer}");
                    let mut expected = ttl_minus_one(&plain);
                    set_inner_ecn(&mut expected, ecn);
                    assert_eq!(
                        dec, expected,
                        "only the ECN field and the TTL (and the IPv4 checksum) change"
                    );
                }
                Err(r) => assert_eq!(v, Verdict::Drop(r), "inner {inner} outer {outer}"),
            }
        }
        assert_eq!(b.drops().get(DropReason::IpsecCeNotEct), 1);
    }
}
