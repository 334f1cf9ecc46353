//! ESP frames sent by the Linux kernel's xfrm stack (`tests/vectors/esp/`, made by the QEMU
//! peer harness: Debian 6.1, `rfc4106(gcm(aes))`, tunnel mode) are decrypted by nflet's
//! `ipsec` NF configured from the same SA parameters, for 128- and 256-bit keys: the inner
//! ICMP echo packets come out whole, a replayed frame is refused, and the counters are exact.

use nflet_nfs::drop::DropReason;
use nflet_nfs::functions::ipsec::Ipsec;
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Burst, Ctx, NetworkFunction, Verdict};
use nflet_nfs::packet::{parse, IpProtocol, ParsePolicy};
use nflet_nfs::time::Nanos;
use nflet_tests::read_pcap;
use serde_json::Value;

#[path = "support/vpn.rs"]
mod vpn;
use vpn::build;

fn vectors() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/esp")
}

fn run(nf: &mut Ipsec, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut frames = vec![frame.to_vec()];
    let mut metas = vec![parse(frame, PortId(1), &ParsePolicy::default()).unwrap()];
    let mut verdicts = vec![Verdict::Continue];
    let mut burst = Burst { frames: &mut frames, metas: &mut metas, verdicts: &mut verdicts, active: &[0] };
    nf.process(&Ctx { now: Nanos(0), core: CoreId(0) }, &mut burst);
    (verdicts[0], frames.pop().unwrap())
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("`{k}` missing"))
}

/// The gateway at the receiving end of `rx` (whose outbound SA is `tx`), configured as the
/// two `ip xfrm state` lines of that gateway would be.
fn gateway(rx: &Value, tx: &Value) -> Ipsec {
    build(&format!(
        r#"
[[sa]]
name = "peer"
local = "{}"
remote = "{}"
outbound = {{ spi = {}, key = "0x{}{}" }}
inbound = {{ spi = {}, key = "0x{}{}" }}

[[policy]]
src = "{}"
dst = "{}"
sa = "peer"
"#,
        s(rx, "outer_dst"),
        s(rx, "outer_src"),
        tx["spi"],
        s(tx, "key"),
        s(tx, "salt"),
        rx["spi"],
        s(rx, "key"),
        s(rx, "salt"),
        s(tx, "inner_src"),
        s(tx, "inner_dst"),
    ))
}

#[test]
fn nflet_decrypts_what_linux_xfrm_sent() {
    for name in ["linux-gcm128", "linux-gcm256"] {
        let meta: Value =
            serde_json::from_slice(&std::fs::read(vectors().join(format!("{name}.json"))).unwrap()).unwrap();
        let frames = read_pcap(&vectors().join(s(&meta, "pcap")));
        let sas = meta["sas"].as_array().unwrap();
        let sa = |dir: &str| sas.iter().find(|x| s(x, "direction") == dir).unwrap();
        let (ab, ba) = (sa("a->b"), sa("b->a"));
        let mut a = gateway(ba, ab);
        let mut b = gateway(ab, ba);
        let listed = meta["frames"].as_array().unwrap();
        assert_eq!(listed.len(), frames.len(), "{name}");
        for (info, frame) in listed.iter().zip(&frames) {
            let to_b = s(info, "direction") == "a->b";
            let nf = if to_b { &mut b } else { &mut a };
            let (v, out) = run(nf, frame);
            assert_eq!(v, Verdict::Continue, "{name} frame {}", info["index"]);
            assert_eq!(out[..12], frame[..12], "Ethernet addresses kept");
            let m = parse(&out, PortId(0), &ParsePolicy::default()).unwrap();
            assert_eq!(usize::from(m.ip_len()), info["inner_len"].as_u64().unwrap() as usize);
            assert_eq!(out.len(), 14 + usize::from(m.ip_len()), "no trailer left");
            let addr = |k: &str| s(info, k).parse::<std::net::Ipv4Addr>().unwrap().octets();
            assert_eq!((&m.src[..4], &m.dst[..4]), (&addr("inner_src")[..], &addr("inner_dst")[..]));
            assert_eq!(m.proto, IpProtocol::Icmp);
            let icmp_type = out[usize::from(m.l4)];
            let want = if s(info, "inner").contains("request") { 8 } else { 0 };
            assert_eq!(icmp_type, want, "{name}: {}", s(info, "inner"));
        }
        // Each frame once: a replay is refused.
        assert_eq!(run(&mut b, &frames[0]).0, Verdict::Drop(DropReason::IpsecReplayed), "{name}");
        for (gw, nf) in [("a", &a), ("b", &b)] {
            let c = nf.counters();
            assert_eq!((c.decrypted, c.encrypted, c.bypassed), (2, 0, 0), "{name} gateway {gw}");
        }
        assert_eq!(
            (a.drops().total(), b.drops().total(), b.drops().get(DropReason::IpsecReplayed)),
            (0, 1, 1)
        );
    }
}
