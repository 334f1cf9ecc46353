//! The load balancer's `encap` mode against live Linux backends: nflet puts each packet to
//! the VIP in an IP-in-IP header (RFC 2003) toward the backend Maglev chose; the Debian
//! kernel of a peer guest (`tests/src/xfrm_peer.rs`, `ipip` module) decapsulates it on its
//! fallback tunnel device `tunl0`, serves the VIP, a local address, and answers the client
//! directly from the VIP (direct server return, routed back through nflet's gateway):
//!
//! ```text
//!  [ns cli: eth0 10.1.0.2/24 mtu 1400] ─ cli port ─ nflet (lb encap → gateway) ─ be port ─ [peer ns: br0] ─ tap ─ [guest eth0 192.0.2.2, 192.0.2.3]
//!       default via 10.1.0.1             10.1.0.1/24                 192.0.2.1/24                          VIP 198.51.100.10 on lo, tunl0 up
//! ```
//!
//! Two backend addresses on the one guest are the VIP's two backends. `CONNS` TCP
//! connections each carry 256 KiB of random bytes to the VIP; the guest's `nc` stores each
//! and its SHA-256 must equal the sender's. nflet's counters must show every connection
//! balanced and every forwarded packet encapsulated; the guest's `tunl0` must have
//! decapsulated at least the payload's bytes and no more than nflet encapsulated. Needs root and the peer guest
//! (`./images/peer/build.sh`); about a minute under TCG.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nflet_tests::appliance::{free_port, Appliance, Metrics};
use nflet_tests::xfrm_peer::{PeerConfig, PeerNetns, PeerVm};
use nflet_tests::{is_root, sh};

const BRIDGE: &str = "br0";
const VIP: &str = "198.51.100.10";
const PORT: u16 = 5000;
const BACKENDS: [&str; 2] = ["192.0.2.2", "192.0.2.3"];
const CLIENT: &str = "10.1.0.2";
const CONNS: usize = 6;
const BYTES: usize = 256 * 1024;

struct Site {
    vm: PeerVm,
    cli_ns: String,
    cli_port: String,
    be_port: String,
    _peer_ns: PeerNetns,
}

impl Drop for Site {
    fn drop(&mut self) {
        // The client's veth pair goes with its namespace.
        let _ = Command::new("ip").args(["netns", "del", &self.cli_ns]).status();
        let _ = Command::new("ip").args(["link", "del", &self.be_port]).status();
    }
}

fn site() -> Site {
    assert!(is_root(), "the encap interop test needs root (network namespaces, taps)");
    let id = std::process::id() % 100_000;
    let (cli_ns, cli_port, be_port) = (format!("nflbc{id}"), format!("nlc{id}"), format!("nlb{id}"));
    let peer_ns = PeerNetns::new(&format!("nflbp{id}")).unwrap_or_else(|e| panic!("{e}"));
    peer_ns.add_bridge(BRIDGE).unwrap();
    peer_ns.plug_veth(BRIDGE, &be_port, "nfbe0").unwrap();
    sh(&["ip", "netns", "add", &cli_ns]);
    sh(&[
        "ip", "link", "add", &cli_port, "mtu", "1400", "type", "veth", "peer", "name", "eth0", "netns",
        &cli_ns,
    ]);
    // 1400: the outer header's 20 bytes fit the backend network's 1500 (`encap_mtu`).
    sh(&["ip", "-n", &cli_ns, "link", "set", "eth0", "mtu", "1400", "up"]);
    sh(&["ip", "-n", &cli_ns, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &cli_ns, "addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"]);
    sh(&["ip", "-n", &cli_ns, "route", "add", "default", "via", "10.1.0.1"]);
    sh(&["ip", "link", "set", &cli_port, "up"]);
    for (ns, dev) in [(Some(cli_ns.as_str()), "eth0"), (None, cli_port.as_str())] {
        let mut a: Vec<&str> = match ns {
            Some(ns) => vec!["ip", "netns", "exec", ns, "ethtool", "-K", dev],
            None => vec!["ethtool", "-K", dev],
        };
        a.extend(["tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"]);
        sh(&a);
    }
    let cfg = PeerConfig::new("lb-backend").nic("tlb0", BRIDGE);
    let vm = PeerVm::boot(&peer_ns, &cfg).unwrap_or_else(|e| panic!("{e}"));
    let setup = format!(
        "ip addr add {b0}/24 dev eth0 && ip addr add {b1}/24 dev eth0 && ip link set eth0 up && \
         ip route add default via 192.0.2.1 && ip addr add {VIP}/32 dev lo && \
         ip link set tunl0 up && for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 >$f; done",
        b0 = BACKENDS[0],
        b1 = BACKENDS[1],
    );
    let (status, out) = vm.exec_status(&setup, Duration::from_secs(20)).unwrap();
    assert_eq!(status, 0, "guest setup: {out}\n{}", vm.console_log());
    Site { vm, cli_ns, cli_port, be_port, _peer_ns: peer_ns }
}

fn nflet_config(s: &Site, listen: u16) -> String {
    format!(
        r#"
[appliance]
cores = 1

[[port]]
name = "cli"
kind = "af_packet"
iface = "{cli}"

[[port]]
name = "be"
kind = "af_packet"
iface = "{be}"

[[nf]]
name = "lb"
kind = "lb"
mode = "encap"
encap_source = "192.0.2.1"
flows = 1024

  [[nf.vip]]
  addr = "{VIP}:{PORT}"
  proto = "tcp"

    [[nf.vip.backend]]
    addr = "{b0}"

    [[nf.vip.backend]]
    addr = "{b1}"

[[nf]]
name = "gw"
kind = "gateway"

  [[nf.interface]]
  port = "cli"
  address = "10.1.0.1/24"
  mac = "02:00:00:00:01:01"

  [[nf.interface]]
  port = "be"
  address = "192.0.2.1/24"
  mac = "02:00:00:00:02:01"

[[chain]]
name = "from_cli"
ingress = ["cli"]
steps = ["lb", "gw"]

[[chain]]
name = "from_be"
ingress = ["be"]
steps = ["lb", "gw"]

[management]
listen = {listen}
"#,
        cli = s.cli_port,
        be = s.be_port,
        b0 = BACKENDS[0],
        b1 = BACKENDS[1],
    )
}

fn in_cli(s: &Site, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", &s.cli_ns]).args(args).output().unwrap()
}

/// Sends `BYTES` random bytes to the VIP (retrying the connect while the guest's `nc`
/// restarts), waits for the server to close, prints the SHA-256 of what was sent.
const SENDER: &str = r#"
import hashlib, os, socket, sys, time
data = os.urandom(int(sys.argv[3]))
for attempt in range(50):
    try:
        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
        break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("cannot connect")
s.sendall(data)
s.shutdown(socket.SHUT_WR)
while s.recv(65536):
    pass
print(hashlib.sha256(data).hexdigest())
"#;

fn guest_value(vm: &PeerVm, cmd: &str) -> u64 {
    let out = vm.exec(cmd).unwrap();
    out.trim().parse().unwrap_or_else(|_| panic!("`{cmd}` gave {out:?}"))
}

#[test]
fn encapsulated_connections_reach_linux_backends_byte_exact() {
    let s = site();
    let mut nflet = Appliance::start(&nflet_config(&s, free_port()), "lb-encap");
    nflet.wait_ready();
    let diag = |nflet: &Appliance| {
        let guest =
            s.vm.exec("ip neigh; ip -s link; ip addr; ip route; cat /proc/net/snmp").unwrap_or_default();
        format!(
            "\n--- guest network ---\n{guest}\n--- guest console (tail) ---\n{}\n--- nflet stderr ---\n{}\n--- nflet counters (non-zero) ---\n{}",
            s.vm.console_log(),
            nflet.stderr(),
            nflet.try_metrics().map(|m| Metrics(m).nonzero()).unwrap_or_default()
        )
    };
    // The gateway and the guest learn each other's MAC.
    let ping = in_cli(&s, &["busybox", "ping", "-c", "3", "-W", "5", BACKENDS[0]]);
    assert!(ping.status.success(), "ping the backend network: {:?}{}", ping, diag(&nflet));
    // One `nc` per connection, one after the other (its input stays open: busybox nc would
    // close the connection's other half at end of input).
    s.vm.exec(&format!(
        "rm -f /tmp/rx*; (i=0; while [ $i -lt {CONNS} ]; do nc -l -p {PORT} </dev/null >/tmp/rx$i; i=$((i+1)); done) \
         >/dev/null 2>&1 &"
    ))
    .unwrap();
    // Bytes, not packets: the guest's GRO merges the decapsulated segments.
    let tunl0_bytes = "cat /sys/class/net/tunl0/statistics/rx_bytes";
    let rx0 = guest_value(&s.vm, tunl0_bytes);
    let started = Instant::now();
    let mut sent = Vec::new();
    for i in 0..CONNS {
        let o = in_cli(&s, &["python3", "-c", SENDER, VIP, &PORT.to_string(), &BYTES.to_string()]);
        assert!(o.status.success(), "connection {i}: {o:?}{}", diag(&nflet));
        sent.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    let secs = started.elapsed().as_secs_f64();
    let sums = s.vm.exec("for f in /tmp/rx*; do sha256sum <$f; done").unwrap();
    let got: Vec<&str> = sums.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(got, sent, "what the guest stored vs what the client sent{}", diag(&nflet));
    let decapsulated = guest_value(&s.vm, tunl0_bytes) - rx0;

    std::thread::sleep(Duration::from_millis(300));
    let m = nflet.metrics();
    let (encapsulated, forwarded, flows) =
        (m.event("lb", "encapsulated"), m.event("lb", "forwarded"), m.event("lb", "new_flows"));
    let backend = |b: &str, what: &str| m.event("lb", &format!("backend.{VIP}:{PORT}/tcp.{b}:{PORT}.{what}"));
    let per_backend: Vec<u64> = BACKENDS.iter().map(|b| backend(b, "new_flows")).collect();
    // The inner packets' bytes, as the backends' counters add them up.
    let inner_bytes: u64 = BACKENDS.iter().map(|b| backend(b, "bytes")).sum();
    eprintln!(
        "measured: {CONNS} connections × {BYTES} B through lb encap in {secs:.1} s; {encapsulated} packets \
         encapsulated ({inner_bytes} B inside), {decapsulated} B decapsulated by the guest's tunl0; flows per \
         backend {per_backend:?}"
    );
    assert_eq!(flows, CONNS as u64, "one balanced flow per connection{}", diag(&nflet));
    assert_eq!(per_backend.iter().sum::<u64>(), CONNS as u64);
    assert_eq!(encapsulated, forwarded, "every packet to the VIP encapsulated{}", diag(&nflet));
    assert!(
        decapsulated >= (CONNS * BYTES) as u64 && decapsulated <= inner_bytes,
        "tunl0 received {decapsulated} B, nflet encapsulated {inner_bytes} B{}",
        diag(&nflet)
    );
    assert_eq!(m.dropped("lb_encap_too_big") + m.dropped("lb_no_room"), 0);
    nflet.stop();
}
