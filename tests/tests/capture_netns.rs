//! Packet capture on a live appliance: nflet forwards between two Linux network namespaces
//! while the management endpoint captures UDP to one port on both receive points. The pcap
//! file must hold exactly those datagrams (requests and echoes, in order, byte for byte), not
//! the UDP to another port nor the ICMP errors it draws; the token is required; bad requests
//! are refused with what was wrong. Then `nflet capture` takes ICMP through the same endpoint.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nflet_tests::{binary, sh, Nflet, TwoHosts};

const TOKEN: &str = "capture-test-token-0123";
const PORT_X: u16 = 5300;
const PORT_Y: u16 = 5301;
const PINGS: usize = 12;

fn config(h: &TwoHosts, listen: u16, dir: &str) -> String {
    format!(
        r#"
{ports}
[[nf]]
name = "mon"
kind = "monitor"

[[chain]]
name = "a_to_b"
ingress = ["a"]
steps = ["mon"]
output = "b"

[[chain]]
name = "b_to_a"
ingress = ["b"]
steps = ["mon"]
output = "a"

[management]
listen = {listen}
token = "{TOKEN}"
capture_dir = "{dir}"
"#,
        ports = h.af_packet_ports(),
    )
}

/// `method target` with an optional token: status and body.
fn call(port: u16, method: &str, target: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: nflet\r\n{auth}\r\n").expect("request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let status = std::str::from_utf8(&raw[9..12]).expect("status").parse().expect("status code");
    (status, raw[end + 4..].to_vec())
}

fn json(port: u16, target: &str) -> serde_json::Value {
    let (status, body) = call(port, "GET", target, None);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

/// Polls `GET /capture` until `done` says so (or 10 s pass).
fn wait_capture(port: u16, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = json(port, "/capture");
        if done(&v) || start.elapsed() > Duration::from_secs(10) {
            return v;
        }
        sleep(Duration::from_millis(50));
    }
}

/// The records of a classic little-endian pcap file: (captured bytes, original length).
fn records(pcap: &[u8]) -> Vec<(Vec<u8>, u32)> {
    assert!(pcap.len() >= 24, "no pcap header: {} bytes", pcap.len());
    assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    assert_eq!(u32::from_le_bytes(pcap[20..24].try_into().unwrap()), 1, "link type Ethernet");
    let mut out = Vec::new();
    let mut at = 24;
    while at < pcap.len() {
        let word = |i: usize| u32::from_le_bytes(pcap[at + i..at + i + 4].try_into().unwrap());
        let (incl, orig) = (word(8) as usize, word(12));
        out.push((pcap[at + 16..at + 16 + incl].to_vec(), orig));
        at += 16 + incl;
    }
    out
}

/// UDP fields of an untagged IPv4 frame: (src, dst, sport, dport, payload).
fn udp(frame: &[u8]) -> ([u8; 4], [u8; 4], u16, u16, Vec<u8>) {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "IPv4");
    assert_eq!(frame[23], 17, "UDP");
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let be = |i: usize| u16::from_be_bytes([frame[i], frame[i + 1]]);
    let len = usize::from(be(l4 + 4));
    (
        frame[26..30].try_into().unwrap(),
        frame[30..34].try_into().unwrap(),
        be(l4),
        be(l4 + 2),
        frame[l4 + 8..l4 + len].to_vec(),
    )
}

#[test]
fn a_filtered_capture_holds_exactly_the_matching_frames() {
    let h = TwoHosts::new("cap");
    // No IPv6 on the wire: only the traffic the test makes (and ARP) crosses nflet.
    for (ns, dev) in
        [(Some(&h.ns_a), "a0"), (Some(&h.ns_b), "b0"), (None, h.port_a.as_str()), (None, h.port_b.as_str())]
    {
        let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
        match ns {
            Some(ns) => sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key]),
            None => sh(&["sysctl", "-qw", &key]),
        };
    }
    // Every datagram to Y draws its port unreachable (the kernel rate-limits them by default).
    sh(&["ip", "netns", "exec", &h.ns_b, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    let dir = std::env::temp_dir().join(format!("nflet-captures-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listen =
        std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let nflet = Nflet::start(&config(&h, listen, &dir.display().to_string()), "cap");
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "the endpoint did not come up");
        sleep(Duration::from_millis(50));
    }
    // Warm up: ARP resolved both ways before the capture starts.
    let mut echo = h.spawn_peer(&h.ns_b, &["udp-echo", &PORT_X.to_string(), "1"]);
    sleep(Duration::from_millis(200));
    let out = h.peer(&h.ns_a, &["udp-ping", h.addr_b, &PORT_X.to_string(), "1", "1000"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "replies=1");
    let _ = echo.wait();

    // The token is required to start, stop and download.
    let good = format!("/capture?point=rx:a,rx:b&proto=udp&port={PORT_X}&count=1000&seconds=30");
    for token in [None, Some("capture-test-token-0124")] {
        assert_eq!(call(listen, "POST", &good, token).0, 401, "{token:?}");
        assert_eq!(call(listen, "POST", "/capture/stop", token).0, 401, "{token:?}");
        assert_eq!(call(listen, "GET", "/capture/file", token).0, 401, "{token:?}");
    }
    assert_eq!(json(listen, "/capture")["state"], "none");
    // Bad requests say what was wrong.
    let bad = [
        ("/capture?proto=sctp", "`proto`: expected tcp, udp, icmp or any, got `sctp`"),
        ("/capture?port=70000", "`port`: expected a whole number from 0 to 65535"),
        ("/capture?host=10.77.0.999", "`host`: expected an IP prefix"),
        ("/capture?point=rx:c", "`point`: no port named `c`; ports are: a, b"),
        ("/capture?point=chain:nope", "`point`: no chain named `nope`; chains are: a_to_b, b_to_a"),
        ("/capture?count=0", "`count`: expected a whole number from 1"),
        ("/capture?colour=blue", "unknown parameter `colour`"),
    ];
    for (target, want) in bad {
        let (status, body) = call(listen, "POST", target, Some(TOKEN));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{target}: {body}");
        assert!(body.starts_with(want), "{target}: {body}");
    }
    assert_eq!(json(listen, "/capture")["state"], "none", "a refused request starts nothing");

    // Capture UDP to or from port X, received on either port.
    let (status, body) = call(listen, "POST", &good, Some(TOKEN));
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let started: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(started["state"], "running");
    let file = started["file"].as_str().expect("file name").to_string();
    assert_eq!(call(listen, "POST", &good, Some(TOKEN)).0, 409, "one capture at a time");
    assert_eq!(call(listen, "GET", "/capture/file", Some(TOKEN)).0, 409, "not while running");
    sleep(Duration::from_millis(100));

    // UDP to X (echoed back from X), UDP to Y (nobody listens: ICMP port unreachable comes
    // back), interleaved.
    let mut echo = h.spawn_peer(&h.ns_b, &["udp-echo", &PORT_X.to_string(), &PINGS.to_string()]);
    sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let out = h.peer(&h.ns_a, &["udp-refused", h.addr_b, &PORT_Y.to_string(), "1000"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused");
    }
    let out = h.peer(&h.ns_a, &["udp-ping", h.addr_b, &PORT_X.to_string(), &PINGS.to_string(), "1000"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("replies={PINGS}"));
    let _ = echo.wait();
    let out = h.peer(&h.ns_a, &["udp-ping", h.addr_b, &PORT_Y.to_string(), "5", "20"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "replies=0");

    let running = wait_capture(listen, |v| v["written"] == 2 * PINGS as u64);
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["written"], 2 * PINGS as u64, "{running}");
    assert_eq!(call(listen, "POST", "/capture/stop", Some(TOKEN)).0, 202);
    let done = wait_capture(listen, |v| v["state"] == "finished");
    assert_eq!(done["state"], "finished", "{done}");
    assert_eq!(done["ended"], "stopped", "{done}");
    assert_eq!(done["capture_skipped"], 0, "{done}");
    assert_eq!(done["file"], file.as_str());
    assert_eq!(call(listen, "POST", "/capture/stop", Some(TOKEN)).0, 409, "nothing left to stop");

    let (status, pcap) = call(listen, "GET", "/capture/file", Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(pcap, std::fs::read(dir.join(&file)).expect("the file in capture_dir"), "download = file");
    let recs = records(&pcap);
    assert_eq!(recs.len(), 2 * PINGS, "exactly the UDP port {PORT_X} frames");
    let (a, b) = ([10, 77, 0, 1], [10, 77, 0, 2]);
    for (i, pair) in recs.chunks(2).enumerate() {
        let want = format!("ping {i}").into_bytes();
        let (req, rep) = (udp(&pair[0].0), udp(&pair[1].0));
        assert_eq!((req.0, req.1, req.3, &req.4), (a, b, PORT_X, &want), "request {i}");
        assert_eq!((rep.0, rep.1, rep.2, rep.3, &rep.4), (b, a, PORT_X, req.2, &want), "echo {i}");
        for (frame, orig) in pair {
            assert_eq!(frame.len() as u32, *orig, "short frames are captured whole");
        }
    }

    // `nflet capture`: ICMP received on b (the port unreachables UDP to Y draws), three frames.
    let out_file = dir.join("cli.pcap");
    let cli = Command::new(binary("nflet"))
        .args(["capture", "--endpoint", &format!("127.0.0.1:{listen}"), "--point", "rx:b"])
        .args(["--proto", "icmp", "--count", "3", "--seconds", "20", "--out"])
        .arg(&out_file)
        .env("NFLET_TOKEN", TOKEN)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nflet capture");
    let v = wait_capture(listen, |v| v["state"] == "running" && v["file"] != file.as_str());
    assert_eq!(v["filter"], "proto icmp", "{v}");
    for _ in 0..5 {
        let out = h.peer(&h.ns_a, &["udp-refused", h.addr_b, &PORT_Y.to_string(), "1000"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused");
    }
    let cli = cli.wait_with_output().expect("nflet capture ends at its count");
    let cli_err = String::from_utf8_lossy(&cli.stderr);
    assert!(cli.status.success(), "{cli_err}");
    assert!(cli_err.contains("3 frame(s) written, 0 skipped (ended: count)"), "{cli_err}");
    let icmp = records(&std::fs::read(&out_file).expect("the CLI's file"));
    assert_eq!(icmp.len(), 3);
    for (frame, _) in &icmp {
        assert_eq!((frame[23], frame[34]), (1, 3), "ICMP destination unreachable");
        assert_eq!(&frame[26..34], &[10, 77, 0, 2, 10, 77, 0, 1], "from b to a");
    }
    // Without a token the CLI says what it needs.
    let no_token = Command::new(binary("nflet"))
        .args(["capture", "--endpoint", &format!("127.0.0.1:{listen}"), "--out", "/dev/null"])
        .env_remove("NFLET_TOKEN")
        .output()
        .expect("nflet capture");
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("--token"), "{no_token:?}");

    let (_, err) = nflet.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains(&format!("capture 1: ended (stopped), {} frame(s)", 2 * PINGS)), "{err}");
}
