//! The `ids` NF on a real capture: dpkt's `http.pcap` (Debian package `python3-dpkt`) goes
//! through `nflet process` with the rules of `tests/ids/http.rules` in IPS mode. The expected
//! alerts per sid, drops and forwarded frames come from `tests/ids/expect.py`, which reads the
//! capture with dpkt and applies each rule as a plain Python substring condition (per packet, or
//! on the byte stream of a direction for the cross-segment rules): nflet's counters must equal
//! them exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use nflet_tests::{binary, drops, field};

const CAPTURE: &str = "/usr/share/doc/python3-dpkt/examples/data/http.pcap";
/// Debian's interpreter, where `python3-dpkt` installs (a `python3` first on PATH may be another).
const PYTHON: &str = "/usr/bin/python3";

fn ids_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ids")
}

/// `expect.py`'s output: `sid N` lines and `packets`/`dropped` totals.
fn expected() -> (BTreeMap<u32, u64>, u64, u64) {
    let out = Command::new(PYTHON).arg(ids_dir().join("expect.py")).arg(CAPTURE).output().unwrap();
    assert!(out.status.success(), "expect.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let (mut sids, mut packets, mut dropped) = (BTreeMap::new(), 0, 0);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["sid", sid, n] => {
                sids.insert(sid.parse().unwrap(), n.parse().unwrap());
            }
            ["packets", n] => packets = n.parse().unwrap(),
            ["dropped", n] => dropped = n.parse().unwrap(),
            _ => panic!("unexpected expect.py line `{line}`"),
        }
    }
    (sids, packets, dropped)
}

/// Frames in a classic little- or big-endian pcap file.
fn count_frames(path: &Path) -> u64 {
    let d = std::fs::read(path).unwrap();
    let le = matches!(&d[..4], [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]);
    let u32_at = |o: usize| {
        let b = [d[o], d[o + 1], d[o + 2], d[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let (mut o, mut n) = (24, 0);
    while o + 16 <= d.len() {
        o += 16 + u32_at(o + 8) as usize;
        n += 1;
    }
    n
}

#[test]
fn ids_alerts_on_http_capture_match_an_independent_count() {
    if !Path::new(CAPTURE).exists() || !Path::new(PYTHON).exists() {
        panic!("{CAPTURE} is missing: install the Debian package python3-dpkt (tests/run.sh does)");
    }
    let dir = std::env::temp_dir().join(format!("nflet-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cfg, output) = (dir.join("ids.toml"), dir.join("out.pcap"));
    let config = format!(
        r#"
[[port]]
name = "inside"
kind = "sink"

[[port]]
name = "outside"
kind = "sink"

[[nf]]
name = "ids"
kind = "ids"
mode = "ips"
rules_file = "{}"
  [nf.vars]
  HOME_NET = "145.254.0.0/16"
  EXTERNAL_NET = "!$HOME_NET"
  HTTP_PORTS = "[80,8080]"

[[chain]]
name = "all"
ingress = ["inside"]
steps = ["ids"]
output = "outside"
"#,
        ids_dir().join("http.rules").display()
    );
    std::fs::write(&cfg, config).unwrap();
    let out = Command::new(binary("nflet"))
        .args(["process", "-c"])
        .arg(&cfg)
        .args(["--in", CAPTURE, "--out"])
        .arg(&output)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "nflet process failed: {log}");

    let (want, packets, dropped) = expected();
    assert!(want.values().filter(|n| **n > 0).count() >= 8, "the rules should mostly fire: {want:?}");
    assert!(want.values().any(|n| *n == 0), "one rule should never fire: {want:?}");
    let line = "ids (ids)";
    let got: BTreeMap<u32, u64> = want
        .keys()
        .map(|sid| (*sid, field(&summary, line, &format!("sid_{sid}_alerts")).unwrap_or(0)))
        .collect();
    assert_eq!(got, want, "{summary}");
    assert_eq!(field(&summary, line, "sid_1010_passes"), Some(1), "{summary}");
    assert_eq!(field(&summary, line, "sid_1011_drops"), Some(dropped), "{summary}");
    assert_eq!(field(&summary, line, "alerts"), Some(want.values().sum()), "{summary}");
    assert_eq!(field(&summary, line, "inspected"), Some(packets), "{summary}");
    assert_eq!(field(&summary, line, "skipped_options"), Some(0), "{summary}");
    assert_eq!(drops(&summary, "ids_rule"), dropped, "{summary}");
    assert_eq!(count_frames(&output), packets - dropped, "{summary}");
    // One log line per alert.
    let alert_lines = log.lines().filter(|l| l.contains(" ids ") && l.contains(" [1:")).count() as u64;
    assert_eq!(alert_lines, want.values().sum::<u64>(), "{log}");
    assert!(
        log.contains("[1:1002:1] \"Host ethereal\" tcp 145.254.160.237:3372 -> 65.208.228.223:80 alert"),
        "{log}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
