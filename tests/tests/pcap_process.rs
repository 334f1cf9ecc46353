//! `nflet process`: a capture built here goes through the firewall offline; the output
//! capture is checked packet by packet and the summary's counters exactly.

use std::process::Command;

use etherparse::PacketBuilder;
use nflet_tests::{binary, drops, field, read_pcap, write_pcap};

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn tcp_syn(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64).tcp(sport, dport, 1, 1000).syn();
    let mut v = Vec::new();
    b.write(&mut v, &[]).unwrap();
    v
}

const CONFIG: &str = r#"
[[port]]
name = "inside"
kind = "sink"

[[port]]
name = "outside"
kind = "sink"

[[nf]]
name = "fw"
kind = "firewall"
default = "deny"
  [[nf.rule]]
  action = "deny"
  src = "10.0.0.66"
  [[nf.rule]]
  action = "allow"
  proto = "udp"
  src = "10.0.0.0/8"
  dport = 53

[[nf]]
name = "count"
kind = "counter"

[[chain]]
name = "out"
ingress = ["inside"]
steps = ["fw", "count"]
output = "outside"
"#;

#[test]
fn process_runs_a_capture_through_the_firewall() {
    let dir = std::env::temp_dir().join(format!("nflet-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cfg, input, output) = (dir.join("fw.toml"), dir.join("in.pcap"), dir.join("out.pcap"));
    std::fs::write(&cfg, CONFIG).unwrap();

    let c = [10, 0, 0, 5];
    let bad = [10, 0, 0, 66];
    let s = [192, 0, 2, 53];
    // (frame, expected to pass)
    let mut frames: Vec<(Vec<u8>, bool)> = vec![
        (udp(c, 4000, s, 53, b"query-1"), true),
        (udp(c, 4001, s, 54, b"wrong port"), false),
        (udp(bad, 4002, s, 53, b"denied host"), false),
        (tcp_syn(c, 4003, s, 53), false),
        (udp(c, 4000, s, 53, b"query-1 again"), true),
        (vec![0u8; 10], false), // truncated
    ];
    let mut truncated_ip = udp(c, 4004, s, 53, b"cut");
    truncated_ip.truncate(30);
    frames.push((truncated_ip, false));
    for i in 0..50u16 {
        frames.push((udp(c, 5000 + i, s, 53, &i.to_be_bytes()), true));
    }
    let all: Vec<Vec<u8>> = frames.iter().map(|(f, _)| f.clone()).collect();
    write_pcap(&input, &all);

    let out = Command::new(binary("nflet"))
        .args(["process", "-c"])
        .arg(&cfg)
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&output)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "nflet process failed: {}", String::from_utf8_lossy(&out.stderr));

    let want: Vec<Vec<u8>> = frames.iter().filter(|(_, pass)| *pass).map(|(f, _)| f.clone()).collect();
    let got = read_pcap(&output);
    assert_eq!(got.len(), want.len(), "{summary}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "frame {i} differs");
    }
    // Exact counters: 3 denied connections, 2 malformed frames, 52 forwarded.
    assert_eq!(drops(&summary, "firewall_deny"), 3, "{summary}");
    assert_eq!(
        drops(&summary, "bad_total_length") + drops(&summary, "truncated") + drops(&summary, "bad_ihl"),
        2,
        "{summary}"
    );
    assert_eq!(field(&summary, "fw (firewall)", "allowed_new"), Some(51), "{summary}");
    assert_eq!(field(&summary, "fw (firewall)", "denied_new"), Some(3), "{summary}");
    assert_eq!(field(&summary, "fw (firewall)", "tracked_hits"), Some(1), "{summary}");
    assert_eq!(field(&summary, "count (counter)", "packets"), Some(52), "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn process_reports_a_missing_capture() {
    let out = Command::new(binary("nflet"))
        .args(["process", "--in", "/nonexistent/in.pcap", "--out", "/tmp/never.pcap"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/in.pcap"), "{err}");
}
