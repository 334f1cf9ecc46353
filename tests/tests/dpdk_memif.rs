//! Two nflet processes joined by DPDK shared-memory ports (`net_memif`): one generates
//! traffic and captures what comes back, the other runs a firewall → NAT chain between its
//! two memif ports. Checks the counts on both sides and every rewritten header.
#![cfg(feature = "dpdk")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nflet_tests::{binary, drops, field, is_root, pseudo_v4, sum16, Nflet};

const FLOWS: u32 = 500;
const PACKETS: u64 = 5000;
const PUBLIC: [u8; 4] = [203, 0, 113, 7];

fn dut_config(dir: &Path) -> String {
    format!(
        r#"
[dpdk]
mbufs = 4095
link_wait_ms = 0

[[port]]
name = "inside"
kind = "dpdk"
device = "net_memif_in,role=server,id=0,rsize=12,socket={d}/in.sock"

[[port]]
name = "outside"
kind = "dpdk"
device = "net_memif_out,role=server,id=0,rsize=12,socket={d}/out.sock"

[[nf]]
name = "fw"
kind = "firewall"
default = "deny"
  [[nf.rule]]
  action = "allow"
  ingress = "inside"
  src = "10.1.0.0/24"

[[nf]]
name = "nat"
kind = "nat"
inside = "inside"
public = ["203.0.113.7"]

[[chain]]
name = "outbound"
ingress = ["inside"]
steps = ["fw", "nat"]
output = "outside"

[[chain]]
name = "inbound"
ingress = ["outside"]
steps = ["fw", "nat"]
output = "inside"
"#,
        d = dir.display()
    )
}

fn peer_config(dir: &Path) -> String {
    format!(
        r#"
[dpdk]
mbufs = 4095

[[port]]
name = "gen"
kind = "generator"
flows = {FLOWS}
count = {PACKETS}
rate_pps = 5000
src = "10.1.0.0/24"
dst = "198.18.0.0/24"

[[port]]
name = "to_dut"
kind = "dpdk"
device = "net_memif_a,role=client,id=0,rsize=12,socket={d}/in.sock"

[[port]]
name = "from_dut"
kind = "dpdk"
device = "net_memif_b,role=client,id=0,rsize=12,socket={d}/out.sock"

[[port]]
name = "cap"
kind = "pcap"
write = "{d}/back.pcap"

[[chain]]
name = "send"
ingress = ["gen"]
steps = []
output = "to_dut"

[[chain]]
name = "collect"
ingress = ["from_dut"]
steps = []
output = "cap"
"#,
        d = dir.display()
    )
}

/// Frames of a classic pcap file (little-endian, as nflet writes them).
fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let d = std::fs::read(path).expect("capture");
    assert_eq!(d.get(..4), Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]), "pcap magic");
    let mut frames = Vec::new();
    let mut o = 24;
    while o + 16 <= d.len() {
        let cap = u32::from_le_bytes(d[o + 8..o + 12].try_into().expect("4 bytes")) as usize;
        frames.push(d[o + 16..o + 16 + cap].to_vec());
        o += 16 + cap;
    }
    frames
}

#[test]
fn fw_nat_chain_between_memif_ports() {
    assert!(is_root(), "DPDK tests need root (hugepages); run ./tests/run.sh as root");
    let dir = std::env::temp_dir().join(format!("nflet-memif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // The appliance under test owns the memif sockets (server role) and polls with its links
    // down until the peer connects, so nothing the peer sends can be missed.
    let mut dut = Nflet::start(&dut_config(&dir), "memif-dut");
    let stderr = dut.child.as_mut().and_then(|c| c.stderr.take()).expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("ports up")) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => log.push(l),
            Err(e) => panic!("appliance did not report its ports up ({e}):\n{}", log.join("\n")),
        }
    }

    let peer_cfg = dir.join("peer.toml");
    std::fs::write(&peer_cfg, peer_config(&dir)).expect("peer config");
    let peer = Command::new(binary("nflet"))
        .args(["run", "-q", "--duration", "4", "-c"])
        .arg(&peer_cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("peer nflet");
    let peer_summary = String::from_utf8_lossy(&peer.stdout).into_owned();
    assert!(peer.status.success(), "peer failed: {}", String::from_utf8_lossy(&peer.stderr));
    let (summary, _) = dut.stop();
    let log: Vec<String> = log.into_iter().chain(rx.try_iter()).collect();
    let context = format!("appliance:\n{summary}\n{}\npeer:\n{peer_summary}", log.join("\n"));

    // Counts: everything generated crossed the appliance and came back to the peer.
    // Port lines read `name rx N tx N lost N`.
    let line = |text: &str, name: &str| -> Vec<u64> {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().filter_map(|w| w.parse().ok()).collect())
            .unwrap_or_default()
    };
    assert_eq!(line(&peer_summary, "to_dut"), vec![0, PACKETS, 0], "{context}");
    assert_eq!(line(&peer_summary, "from_dut"), vec![PACKETS, 0, 0], "{context}");
    assert_eq!(line(&summary, "inside"), vec![PACKETS, 0, 0], "{context}");
    assert_eq!(line(&summary, "outside"), vec![0, PACKETS, 0], "{context}");
    assert_eq!(drops(&summary, "firewall_deny") + drops(&summary, "tx_full"), 0, "{context}");
    let mappings = field(&summary, "nat (nat)", "new_mappings").expect("nat counters");
    assert_eq!(field(&summary, "nat (nat)", "outbound"), Some(PACKETS), "{context}");
    assert!(mappings > 0 && mappings <= u64::from(FLOWS), "{context}");
    assert_eq!(field(&summary, "fw (firewall)", "allowed_new"), Some(u64::from(FLOWS)), "{context}");

    // Headers: every frame leaves from the public address, one public port per mapping,
    // with both checksums correct.
    let frames = pcap_frames(&dir.join("back.pcap"));
    assert_eq!(frames.len() as u64, PACKETS, "{context}");
    let mut public_ports = HashSet::new();
    for f in &frames {
        assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4");
        let ihl = usize::from(f[14] & 0x0f) * 4;
        let ip = &f[14..14 + ihl];
        assert_eq!(&ip[12..16], &PUBLIC, "source rewritten to the public address");
        assert_eq!(&ip[16..19], &[198, 18, 0], "destination kept");
        assert_eq!(sum16(ip, 0), 0xffff, "IPv4 header checksum");
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let l4 = &f[14 + ihl..14 + total];
        let proto = ip[9];
        assert!(proto == 6 || proto == 17, "TCP or UDP, got {proto}");
        assert_eq!(
            sum16(l4, pseudo_v4(ip, l4.len())),
            0xffff,
            "{} checksum",
            if proto == 6 { "TCP" } else { "UDP" }
        );
        public_ports.insert(u16::from_be_bytes([l4[0], l4[1]]));
    }
    assert_eq!(public_ports.len() as u64, mappings, "one public port per mapping\n{context}");
    let _ = std::fs::remove_dir_all(&dir);
}
