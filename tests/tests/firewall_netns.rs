//! nflet as a bump-in-the-wire firewall between two Linux network namespaces (AF_PACKET
//! ports), with real TCP and UDP stacks on both sides.

use std::io::{BufRead, BufReader};
use std::thread::sleep;
use std::time::Duration;

use nflet_tests::{drops, field, Nflet, TwoHosts};

fn config(h: &TwoHosts, cores: usize) -> String {
    format!(
        r#"
[appliance]
cores = {cores}

[[port]]
name = "a"
kind = "af_packet"
iface = "{pa}"

[[port]]
name = "b"
kind = "af_packet"
iface = "{pb}"

[[nf]]
name = "fw"
kind = "firewall"
default = "deny"

  [[nf.rule]]
  action = "allow"
  ingress = "a"
  proto = "tcp"
  dst = "{b}"
  dport = 5001

  [[nf.rule]]
  action = "allow"
  ingress = "a"
  proto = "udp"
  dst = "{b}"
  dport = "5002"

  [[nf.rule]]
  action = "allow"
  proto = "icmp"

[[nf]]
name = "mon"
kind = "monitor"

[[chain]]
name = "a_to_b"
ingress = ["a"]
steps = ["fw", "mon"]
output = "b"

[[chain]]
name = "b_to_a"
ingress = ["b"]
steps = ["fw", "mon"]
output = "a"
"#,
        pa = h.port_a,
        pb = h.port_b,
        b = h.addr_b
    )
}

fn wait_listening(child: &mut std::process::Child) -> BufReader<std::process::ChildStdout> {
    let out = child.stdout.take().expect("stdout");
    let mut r = BufReader::new(out);
    let mut line = String::new();
    r.read_line(&mut line).expect("peer output");
    assert_eq!(line.trim(), "listening");
    r
}

fn rest(mut r: BufReader<std::process::ChildStdout>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("peer result");
    s.trim().to_string()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn run_scenario(cores: usize, tag: &str) {
    let h = TwoHosts::new(tag);
    let nflet = Nflet::start(&config(&h, cores), tag);
    // Let the ports come up; ARP then crosses the firewall like any non-IP frame.
    sleep(Duration::from_millis(500));

    // 1. A multi-megabyte TCP transfer a → b on the allowed port arrives byte-exact.
    let mut server = h.spawn_peer(&h.ns_b, &["tcp-serve", "5001"]);
    let r = wait_listening(&mut server);
    let sent = h.peer(&h.ns_a, &["tcp-send", h.addr_b, "5001", "8000000"]);
    let got = rest(r);
    let _ = server.wait();
    let sent = stdout(&sent);
    assert!(sent.starts_with("sent=8000000 "), "sender: {sent}");
    assert_eq!(got.replace("bytes=", "sent="), sent, "receiver saw different bytes");

    // 2. UDP requests a → b pass, and so do the replies (connection tracking).
    let mut echo = h.spawn_peer(&h.ns_b, &["udp-echo", "5002", "20"]);
    let r = wait_listening(&mut echo);
    let ping = h.peer(&h.ns_a, &["udp-ping", h.addr_b, "5002", "20", "1000"]);
    assert_eq!(stdout(&ping), "replies=20");
    assert_eq!(rest(r), "echoed=20");
    let _ = echo.wait();

    // 3. A denied port: the server listens, but the SYN never reaches it.
    let mut denied = h.spawn_peer(&h.ns_b, &["tcp-serve", "5003"]);
    let _r = wait_listening(&mut denied);
    let probe = h.peer(&h.ns_a, &["tcp-probe", h.addr_b, "5003", "1500"]);
    assert_eq!(stdout(&probe), "failed", "port 5003 must be blocked");
    let _ = denied.kill();
    let _ = denied.wait();

    // 4. Unsolicited inbound b → a is dropped, though a listens.
    let mut inside = h.spawn_peer(&h.ns_a, &["tcp-serve", "5001"]);
    let _r = wait_listening(&mut inside);
    let probe = h.peer(&h.ns_b, &["tcp-probe", h.addr_a, "5001", "1500"]);
    assert_eq!(stdout(&probe), "failed", "inbound connection must be blocked");
    let _ = inside.kill();
    let _ = inside.wait();

    let (summary, stderr) = nflet.stop();
    // Two connections were opened by allowed traffic (TCP 5001, UDP 5002), plus ICMP/ARP
    // that the kernel may send; every blocked SYN (and its retransmissions) is a deny.
    let allowed = field(&summary, "fw (firewall)", "allowed_new").unwrap_or(0);
    let denied_new = field(&summary, "fw (firewall)", "denied_new").unwrap_or(0);
    assert!(allowed >= 2, "allowed_new={allowed}\n{summary}\n{stderr}");
    assert!(denied_new >= 2, "denied_new={denied_new}\n{summary}");
    assert_eq!(drops(&summary, "firewall_deny"), denied_new, "{summary}");
    assert_eq!(drops(&summary, "tx_full"), 0, "{summary}");
}

#[test]
fn firewall_between_namespaces_one_core() {
    run_scenario(1, "f1");
}

#[test]
fn firewall_between_namespaces_two_cores() {
    run_scenario(2, "f2");
}
