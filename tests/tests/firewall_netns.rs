//! nflet as a bump-in-the-wire firewall between two Linux network namespaces, with real TCP
//! and UDP stacks on both sides: through nflet's own AF_PACKET ports and, with the `dpdk`
//! feature, through DPDK's `net_af_packet` poll-mode driver on the same veths.

use std::io::{BufRead, BufReader};
use std::thread::sleep;
use std::time::Duration;

use nflet_tests::{drops, field, Nflet, TwoHosts};

/// How nflet attaches to the veths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ports {
    AfPacket,
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    Dpdk,
}

fn port(p: Ports, name: &str, iface: &str) -> String {
    match p {
        Ports::AfPacket => {
            format!("[[port]]\nname = \"{name}\"\nkind = \"af_packet\"\niface = \"{iface}\"\n")
        }
        Ports::Dpdk => format!(
            "[[port]]\nname = \"{name}\"\nkind = \"dpdk\"\ndevice = \"net_af_packet_{name},iface={iface}\"\n"
        ),
    }
}

fn config(h: &TwoHosts, cores: usize, ports: Ports) -> String {
    format!(
        r#"
[appliance]
cores = {cores}

[dpdk]
mbufs = 4095

{port_a}
{port_b}

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
        port_a = port(ports, "a", &h.port_a),
        port_b = port(ports, "b", &h.port_b),
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

fn run_scenario(cores: usize, tag: &str, ports: Ports) -> String {
    let h = TwoHosts::new(tag);
    let nflet = Nflet::start(&config(&h, cores, ports), tag);
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
    summary
}

#[test]
fn firewall_between_namespaces_one_core() {
    run_scenario(1, "f1", Ports::AfPacket);
}

#[test]
fn firewall_between_namespaces_two_cores() {
    run_scenario(2, "f2", Ports::AfPacket);
}

#[cfg(feature = "dpdk")]
#[test]
fn firewall_on_dpdk_af_packet_ports_one_core() {
    let summary = run_scenario(1, "d1", Ports::Dpdk);
    assert!(!summary.contains("software steering"), "{summary}");
}

/// Two cores on DPDK ports: each port has one queue pair per core, spread by the kernel's
/// symmetric fanout hash. The firewall's connection table is per core and admits replies
/// only on the core that saw the connection open (its rules admit nothing new from `b`), so
/// a reply reaching the other core would be a denied new flow and break the transfer. The
/// per-core counters add up: each core's packets are its own connections' packets.
#[cfg(feature = "dpdk")]
#[test]
fn firewall_on_dpdk_af_packet_ports_two_cores() {
    let summary = run_scenario(2, "d2", Ports::Dpdk);
    assert!(!summary.contains("software steering"), "no frame may need moving between cores:\n{summary}");
    for core in ["core0", "core1"] {
        let line = |k: &str| field(&summary, &format!("{core} fw "), k).unwrap_or(0);
        let packets = line("packets");
        let accounted = line("allowed_new")
            + line("denied_new")
            + line("tracked_hits")
            + line("non_ip")
            + line("related_icmp")
            + line("invalid_tcp")
            + line("table_full");
        assert_eq!(packets, accounted, "{core}: packets not accounted for\n{summary}");
    }
    // The two allowed connections (TCP, UDP) were each opened exactly once, on whichever core
    // the hash chose: a reply on the other core would have been denied, not opened again.
    let opened: Vec<u64> = ["core0", "core1"]
        .iter()
        .map(|c| field(&summary, &format!("{c} fw "), "allowed_new").unwrap_or(0))
        .collect();
    assert_eq!(opened.iter().sum::<u64>(), 2, "{summary}");
}
