//! IPsec on two cores in one process: each SA is owned by one core, and the `ipsec` NF steers
//! every packet its policies send into an SA to that core, from whichever core received it.
//! Sequence numbers (the GCM IVs) therefore come from one counter per SA and never repeat.

use std::collections::HashSet;

use etherparse::PacketBuilder;

use super::two_cores::{self, Outputs, Script};
use super::*;

/// Frames each core receives for each SA.
const PER_SA: usize = 150;

/// Packet `i` of SA `sa` (0 or 1): from site 10.1.<sa>.0/24 to 10.2.<sa>.0/24.
fn cleartext(sa: u8, i: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([10, 1, sa, (i % 250) as u8], [10, 2, sa, 9], 64);
    let mut v = Vec::new();
    b.udp(20_000 + i as u16, 53).write(&mut v, b"query").unwrap();
    v
}

/// (SPI, sequence number) of an ESP frame.
fn esp(frame: &[u8]) -> (u32, u32) {
    assert_eq!(frame[23], 50, "ESP");
    (
        u32::from_be_bytes(frame[34..38].try_into().unwrap()),
        u32::from_be_bytes(frame[38..42].try_into().unwrap()),
    )
}

#[test]
fn each_sa_is_encrypted_on_its_owner_core_with_unique_sequence_numbers() {
    let text = r#"
[appliance]
cores = 2
[[port]]
name = "lan"
kind = "sink"
[[port]]
name = "wan"
kind = "sink"
[[nf]]
name = "vpn"
kind = "ipsec"
inside = "lan"
[[nf.sa]]
name = "even"
local = "192.0.2.1"
remote = "198.51.100.2"
outbound = { spi = 0x1000, key = "0x000102030405060708090a0b0c0d0e0fc0ffee01" }
inbound = { spi = 0x2000, key = "0x000102030405060708090a0b0c0d0e0fc0ffee02" }
[[nf.sa]]
name = "odd"
local = "192.0.2.1"
remote = "198.51.100.3"
outbound = { spi = 0x1001, key = "0x000102030405060708090a0b0c0d0e0fc0ffee03" }
inbound = { spi = 0x2001, key = "0x000102030405060708090a0b0c0d0e0fc0ffee04" }
[[nf.policy]]
src = "10.1.0.0/24"
dst = "10.2.0.0/24"
sa = "even"
[[nf.policy]]
src = "10.1.1.0/24"
dst = "10.2.1.0/24"
sa = "odd"
[[chain]]
name = "out"
ingress = ["lan"]
steps = ["vpn"]
output = "wan"
[[chain]]
name = "in"
ingress = ["wan"]
steps = ["vpn"]
output = "lan"
"#;
    let config = Config::parse("esp2.toml", text).unwrap();
    let (stats, out) = two_cores::run(&config, |_, _| {
        // Every core receives packets of both SAs, interleaved.
        let lan = Script::frames((0..PER_SA).flat_map(|i| [cleartext(0, i), cleartext(1, i)]));
        (lan, Script::frames([]))
    });
    let Outputs { lan_tx, wan_tx, publish } = out;

    let mut seen = HashSet::new();
    for (c, st) in stats.iter().enumerate() {
        assert_eq!(st.drops.total(), 0, "core {c}: {:?}", st.drops.nonzero().collect::<Vec<_>>());
        // Half of what each core received belongs to the other core's SA.
        assert_eq!(
            (st.steered_out, st.steered_by_nf, st.steered_in),
            (PER_SA as u64, PER_SA as u64, PER_SA as u64)
        );
        let snap = publish[c].lock().clone();
        let (_, _, _, report) = snap.nfs.iter().find(|n| n.0 == "vpn").unwrap();
        let nonzero: Vec<(&str, u64)> = report.counters.iter().copied().filter(|(_, v)| *v != 0).collect();
        assert_eq!(nonzero, [("encrypted", 2 * PER_SA as u64)], "core {c}");
        // Core c emits only SA c's packets (inbound SPI 0x2000 + c is owned by core c), with
        // sequence numbers 1..=2 * PER_SA, each once.
        let sent = wan_tx[c].lock().unwrap();
        assert_eq!(sent.len(), 2 * PER_SA, "core {c}");
        let mut seqs: Vec<u32> = sent
            .iter()
            .map(|f| {
                let (spi, seq) = esp(f);
                assert_eq!(spi, 0x1000 + c as u32, "core {c}");
                assert!(seen.insert((spi, seq)), "sequence number {seq} of SPI {spi:#x} sent twice");
                seq
            })
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=2 * PER_SA as u32).collect::<Vec<_>>(), "core {c}");
        assert!(lan_tx[c].lock().unwrap().is_empty());
    }
}
