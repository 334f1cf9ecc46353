//! The load balancer (`dnat` mode) on two cores between two network namespaces: real TCP
//! connections from host A to a VIP reach the backend on host B and its replies come back
//! from the VIP. The ports spread frames over the cores by the kernel's fanout hash, which
//! gives a connection's forward packets (client → VIP) and its replies (backend → client)
//! different hashes; the balancer steers both to the core holding the connection's state,
//! or the replies would leave untranslated and the connections would break.
//!
//! ```text
//!  [ns a: 10.77.0.1] ── a ─ nflet (lb, 2 cores) ─ b ── [ns b: 10.77.0.2, backend :8080]
//!        VIP 10.77.0.100:80 → neighbour entry to B's MAC
//! ```

use std::io::{BufRead, BufReader};

use nflet_tests::scaleout::mac;
use nflet_tests::{field, sh, Nflet, TwoHosts};

const VIP: &str = "10.77.0.100";
const CONNS: usize = 16;

fn config(t: &TwoHosts) -> String {
    format!(
        r#"
[appliance]
cores = 2

{ports}

[[nf]]
name = "lb"
kind = "lb"
flows = 4096

  [[nf.vip]]
  addr = "{VIP}:80"
  proto = "tcp"

    [[nf.vip.backend]]
    addr = "{b}:8080"

[[chain]]
name = "a_to_b"
ingress = ["a"]
steps = ["lb"]
output = "b"

[[chain]]
name = "b_to_a"
ingress = ["b"]
steps = ["lb"]
output = "a"
"#,
        ports = t.af_packet_ports(),
        b = t.addr_b,
    )
}

#[test]
fn connections_through_a_vip_on_two_cores_keep_their_translation() {
    let t = TwoHosts::new("lb");
    // Host A sends the VIP's frames to B's MAC; nflet rewrites the address on the way.
    let b_mac = mac(&t.ns_b, "b0");
    sh(&["ip", "-n", &t.ns_a, "neigh", "replace", VIP, "lladdr", &b_mac, "dev", "a0", "nud", "permanent"]);
    let nflet = Nflet::start(&config(&t), "lb2");
    std::thread::sleep(std::time::Duration::from_millis(500));
    for i in 0..CONNS {
        let mut server = t.spawn_peer(&t.ns_b, &["tcp-serve", "8080", "show-peer"]);
        let mut out = BufReader::new(server.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("peer output");
        assert_eq!(line.trim(), "listening");
        let sent = t.peer(&t.ns_a, &["tcp-send", VIP, "80", "200000"]);
        if !sent.status.success() {
            let _ = server.kill();
            let _ = server.wait();
            panic!("connection {i} through the VIP failed: {}", String::from_utf8_lossy(&sent.stderr));
        }
        let mut got = String::new();
        std::io::Read::read_to_string(&mut out, &mut got).expect("server output");
        let _ = server.wait();
        let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
        assert!(sent.starts_with("sent=200000 "), "connection {i}: sender {sent}");
        assert!(got.contains(&format!("from={}:", t.addr_a)), "connection {i}: the backend saw {got}");
        let hash = |s: &str| s.split_whitespace().find(|w| w.starts_with("hash=")).map(str::to_string);
        assert_eq!(hash(&sent), hash(&got), "connection {i}: stream corrupted");
    }
    let (summary, _) = nflet.stop();
    let total = |k: &str| field(&summary, "lb (lb)", k).unwrap_or(0);
    assert_eq!(total("new_flows"), CONNS as u64, "{summary}");
    assert_eq!(total("replies_unmatched"), 0, "every reply met its flow's state:\n{summary}");
    assert!(total("replies") > 0, "{summary}");
    // The connections spread over both cores (16 random choices: all on one is 2 in 65 536).
    for core in ["core0", "core1"] {
        let flows = field(&summary, &format!("{core} lb "), "new_flows").unwrap_or(0);
        assert!(flows > 0, "no connection on {core}:\n{summary}");
    }
    eprintln!(
        "measured: {CONNS} connections through the VIP on 2 cores; {} frames moved between cores by steering",
        summary.lines().filter(|l| l.contains("steer")).collect::<Vec<_>>().join(" ")
    );
}
