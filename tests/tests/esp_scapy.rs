//! ESP interop with an independent implementation: scapy's `SecurityAssociation` (AES-GCM,
//! tunnel mode) plays the peer gateway. Packets nflet's `ipsec` NF encrypts are decrypted by
//! scapy, and packets scapy encrypts are decrypted by nflet, for 128- and 256-bit keys, with
//! and without ESN, inner IPv4 and IPv6; the NF's counters are checked exactly.
//!
//! The NF runs in-process through its public API (the same `init` and burst `process` the
//! dataplane calls); the peer is `tests/scripts/esp_scapy.py`, run with the system Python
//! (Debian's `python3-scapy`, which `tests/run.sh` installs), exchanging hex packets as JSON.

use std::io::Write;
use std::process::{Command, Stdio};

use etherparse::PacketBuilder;
use nflet_nfs::drop::DropReason;
use nflet_nfs::functions::ipsec::Ipsec;
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Burst, Ctx, NetworkFunction, Verdict};
use nflet_nfs::packet::{parse, ParsePolicy};
use nflet_nfs::time::Nanos;
use serde_json::{json, Value};

#[path = "support/vpn.rs"]
mod vpn;
use vpn::build;

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
/// nflet's tunnel endpoint and scapy's.
const NFLET: &str = "192.0.2.1";
const PEER: &str = "198.51.100.2";
const SPI_OUT: u32 = 0x1001;
const SPI_IN: u32 = 0x2002;

/// The interpreter with Debian's scapy: `NFLET_PYTHON`, else `/usr/bin/python3`, else `python3`.
fn python() -> String {
    if let Ok(p) = std::env::var("NFLET_PYTHON") {
        return p;
    }
    if std::path::Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    "python3".into()
}

fn scapy(request: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/esp_scapy.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "esp_scapy.py failed (is python3-scapy installed? tests/run.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from esp_scapy.py")
}

fn config(key_out: &str, key_in: &str, esn: bool) -> String {
    format!(
        r#"
[[sa]]
name = "peer"
local = "{NFLET}"
remote = "{PEER}"
esn = {esn}
replay_window = 128
outbound = {{ spi = {SPI_OUT}, key = "0x{key_out}" }}
inbound = {{ spi = {SPI_IN}, key = "0x{key_in}" }}

[[policy]]
src = "10.1.0.0/16"
dst = "10.2.0.0/16"
sa = "peer"

[[policy]]
src = "fd01::/16"
dst = "fd02::/16"
sa = "peer"
"#
    )
}

/// One frame through the NF's burst path.
fn run(nf: &mut Ipsec, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    let mut frames = vec![frame];
    let mut metas = vec![parse(&frames[0], PortId(0), &ParsePolicy::default()).unwrap()];
    let mut verdicts = vec![Verdict::Continue];
    let mut burst = Burst { frames: &mut frames, metas: &mut metas, verdicts: &mut verdicts, active: &[0] };
    nf.process(&Ctx { now: Nanos(0), core: CoreId(0) }, &mut burst);
    (verdicts[0], frames.pop().unwrap())
}

fn eth(ip: &[u8]) -> Vec<u8> {
    let et: [u8; 2] = if ip[0] >> 4 == 6 { [0x86, 0xdd] } else { [0x08, 0x00] };
    [&MAC_A[..], &MAC_B[..], &et, ip].concat()
}

/// IP packet `p` after one router: TTL (hop limit) one lower, IPv4 header checksum redone.
fn one_hop(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        let ihl = usize::from(p[0] & 0x0f) * 4;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = !nflet_tests::sum16(&p[..ihl], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        p[7] -= 1;
    }
    p
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(!s.starts_with("error"), "scapy: {s}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Inner packets: UDP over IPv4 of sizes that cover every padding length up to 1400 bytes,
/// ICMP echo, and UDP over IPv6; from nflet's site to the peer's, or back (`reply`).
fn inner_packets(reply: bool) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let (x, y) = if reply { (2u8, 1u8) } else { (1, 2) };
    for len in [0usize, 1, 2, 3, 100, 1372] {
        let b = PacketBuilder::ipv4([10, x, 0, 5], [10, y, 0, 9], 64).udp(4000, 53);
        let mut p = Vec::new();
        b.write(&mut p, &vec![0x5a; len]).unwrap();
        v.push(p);
    }
    let b = PacketBuilder::ipv4([10, x, 3, 3], [10, y, 7, 7], 9).icmpv4_echo_request(7, 1);
    let mut p = Vec::new();
    b.write(&mut p, b"ping").unwrap();
    v.push(p);
    for len in [0usize, 1, 2, 3, 1000] {
        let s: std::net::Ipv6Addr = format!("fd0{x}::5").parse().unwrap();
        let d: std::net::Ipv6Addr = format!("fd0{y}::9").parse().unwrap();
        let b = PacketBuilder::ipv6(s.octets(), d.octets(), 64).udp(4000, 53);
        let mut p = Vec::new();
        b.write(&mut p, &vec![0xa5; len]).unwrap();
        v.push(p);
    }
    v
}

#[test]
fn nflet_and_scapy_interoperate() {
    let k128_out = "000102030405060708090a0b0c0d0e0fc0ffee01";
    let k128_in = "101112131415161718191a1b1c1d1e1fc0ffee02";
    let k256_out = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc0ffee03";
    let k256_in = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fc0ffee04";
    let inner = inner_packets(false);
    let replies = inner_packets(true);
    let n = inner.len() as u64;
    for (key_out, key_in, esn) in [
        (k128_out, k128_in, false),
        (k256_out, k256_in, false),
        (k128_out, k128_in, true),
        (k256_out, k256_in, true),
    ] {
        let what = format!("AES-{} esn={esn}", (key_out.len() / 2 - 4) * 8);
        let mut nf = build(&config(key_out, key_in, esn));
        // nflet encrypts.
        let mut esp = Vec::new();
        for p in &inner {
            let (v, f) = run(&mut nf, eth(p));
            assert_eq!(v, Verdict::Continue, "{what}");
            assert_eq!(&f[12..14], &[0x08, 0x00]);
            esp.push(hex(&f[14..]));
        }
        let reply = scapy(&json!({
            "aes_key_rx": key_out, "spi_rx": SPI_OUT, "aes_key_tx": key_in, "spi_tx": SPI_IN,
            "local": PEER, "remote": NFLET, "esn": esn,
            "decrypt": esp, "encrypt": replies.iter().map(|p| hex(p)).collect::<Vec<_>>(),
        }));
        // scapy decrypts every nflet packet back to the inner packet.
        let decrypted = reply["decrypted"].as_array().unwrap();
        assert_eq!(decrypted.len(), inner.len());
        // (nflet forwarded it into the tunnel as a router: one hop, TTL one lower.)
        for (i, (d, p)) in decrypted.iter().zip(&inner).enumerate() {
            assert_eq!(unhex(d.as_str().unwrap()), one_hop(p), "{what}: scapy decrypting nflet packet {i}");
        }
        // nflet decrypts every scapy packet to the inner packet, Ethernet header kept.
        let encrypted: Vec<Vec<u8>> =
            reply["encrypted"].as_array().unwrap().iter().map(|e| unhex(e.as_str().unwrap())).collect();
        assert_eq!(encrypted.len(), replies.len());
        for (i, (e, p)) in encrypted.iter().zip(&replies).enumerate() {
            let (v, f) = run(&mut nf, eth(e));
            assert_eq!(v, Verdict::Continue, "{what}: nflet decrypting scapy packet {i}");
            assert_eq!(f, eth(p), "{what}: packet {i}");
        }
        // A replayed and a tampered scapy packet are refused, each under its reason.
        let mut tampered = eth(&encrypted[1]);
        let last = tampered.len() - 1;
        tampered[last] ^= 0x40;
        assert_eq!(run(&mut nf, eth(&encrypted[0])).0, Verdict::Drop(DropReason::IpsecReplayed), "{what}");
        assert_eq!(run(&mut nf, tampered).0, Verdict::Drop(DropReason::IpsecReplayed), "{what}: seen before");
        let mut fresh = eth(&encrypted[2]);
        // Sequence number 1000, not yet seen: only the ICV can refuse it.
        fresh[14 + 20 + 4..14 + 20 + 8].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(run(&mut nf, fresh).0, Verdict::Drop(DropReason::IpsecBadIcv), "{what}");
        let c = nf.counters();
        assert_eq!((c.encrypted, c.decrypted, c.bypassed), (n, n, 0), "{what}");
        let d = nf.drops();
        assert_eq!(
            (d.get(DropReason::IpsecReplayed), d.get(DropReason::IpsecBadIcv), d.total()),
            (2, 1, 3),
            "{what}"
        );
    }
}
