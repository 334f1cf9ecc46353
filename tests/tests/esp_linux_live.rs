//! nflet as a site-to-site IPsec gateway against a live Linux IPsec peer: the `ipsec` and
//! `gateway` NFs of `examples/ipsec-gateway.toml` between a LAN host and the Linux xfrm stack
//! of a peer guest (`tests/src/xfrm_peer.rs`), tunnel-mode ESP with AES-GCM-128 and -256:
//!
//! ```text
//!  [ns lan: eth0 10.1.0.2/24] ─ lan port ─ nflet ─ wan port ─ [peer ns: br0] ─ tap ─ [guest eth0 192.0.2.2]
//!       default via 10.1.0.1      10.1.0.1/24        192.0.2.1/24                  inner 10.2.0.1 (dummy0)
//! ```
//!
//! For each key size, on one booted guest (its SAs flushed and reconfigured, nflet restarted
//! with the mirrored SAs):
//! 1. pings cross the tunnel both ways (LAN host → guest inner address and back);
//! 2. 2 MiB of random bytes cross it by TCP in each direction, byte-exact (SHA-256);
//! 3. on the WAN wire (tcpdump on the bridge end of nflet's WAN veth, no frame lost) every
//!    frame is ARP or ESP, nflet's ESP comes from its tunnel endpoint with its outbound SPI
//!    and the guest's with its own, both with consecutive sequence numbers; the counters
//!    agree with the capture: nflet's `encrypted` = the guest's inbound SA packets = ESP
//!    frames nflet sent; the guest's outbound SA packets = ESP frames the guest sent = nflet's
//!    `decrypted` plus what nflet's receive ring overran (`nflet_port_lost_total`, exact:
//!    received + lost = frames from the guest); no `ipsec_*` drop; the gateway routed each;
//! 4. replay, with the ESP frames of one more echo request and reply: the guest's written
//!    again towards nflet is exactly one `ipsec_replayed` drop and nothing is decrypted,
//!    routed or sent to the LAN; nflet's written again towards the guest raises Linux's
//!    `replay` counter and `XfrmInStateSeqError` by one and not its SA counters;
//! 5. ECN (RFC 6040): an nftables rule on the peer's bridge plays a router marking CE on the
//!    guest's ECT ESP packets during a TCP transfer with ECN; every mark reaches the LAN host
//!    on the decrypted packet; marked over a Not-ECT packet, an echo request is dropped
//!    (`ipsec_ce_not_ect`);
//! 6. the ping RTT and the TCP rates are printed (BENCHMARKS.md, "IPsec"), and the echo
//!    reply TTL each end sees.
//!
//! Failures carry the guest console, nflet's log and its non-zero counters. Needs root, the
//! peer guest (`./images/peer/build.sh`), tcpdump, nftables, python3
//! (`tests/scripts/esp_live.py`) and busybox (ping) on the host; 45–60 s.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nflet_tests::appliance::{free_port, Appliance, Metrics};
use nflet_tests::xfrm_peer::{PeerConfig, PeerNetns, PeerVm, Prefix, Sa, TunnelSpec};
use nflet_tests::{is_root, sh};

const BRIDGE: &str = "br0";
/// The peer-side end of the veth from nflet's WAN port, on the bridge.
const WAN_WIRE: &str = "nfwan0";
/// nflet's interfaces.
const LAN_GW: &str = "10.1.0.1";
const WAN_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LAN_MAC: &str = "02:00:00:00:01:01";
const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const LAN_HOST: &str = "10.1.0.2";
const GUEST_OUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GUEST_INNER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// SPIs of the SA guest → nflet and nflet → guest.
const SPI_TO_NFLET: u32 = 0x0000_c001;
const SPI_TO_GUEST: u32 = 0x0000_d001;
/// Bytes of each TCP transfer.
const TCP_BYTES: usize = 2 << 20;
/// The LAN's MTU: room for the 54–57 bytes of ESP in the WAN's 1500.
const LAN_MTU: &str = "1400";

fn python() -> String {
    std::env::var("NFLET_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/esp_live.py")
}

/// The LAN host's namespace and the veths of nflet's two ports; removed on drop.
struct Wiring {
    lan_ns: String,
    lan_port: String,
    wan_port: String,
}

impl Drop for Wiring {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.lan_ns]).output();
        for dev in [&self.lan_port, &self.wan_port] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
    }
}

/// Everything but nflet. Fields drop in order: the VM before its namespace.
struct Site {
    vm: PeerVm,
    guest_mac: [u8; 6],
    wiring: Wiring,
    peer_ns: PeerNetns,
}

fn disable_ipv6(ns: Option<&str>, dev: &str) {
    let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
    match ns {
        Some(ns) => sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key]),
        None => sh(&["sysctl", "-qw", &key]),
    };
}

fn site() -> Site {
    assert!(is_root(), "the live ESP test needs root (network namespaces, taps)");
    let id = std::process::id() % 100_000;
    let wiring =
        Wiring { lan_ns: format!("nflel{id}"), lan_port: format!("nel{id}"), wan_port: format!("new{id}") };
    let peer_ns = PeerNetns::new(&format!("nflep{id}")).unwrap_or_else(|e| panic!("{e}"));
    for dev in ["all", "default"] {
        disable_ipv6(Some(&peer_ns.name), dev);
    }
    peer_ns.add_bridge(BRIDGE).unwrap();
    sh(&["ip", "-n", &peer_ns.name, "link", "set", BRIDGE, "type", "bridge", "mcast_snooping", "0"]);
    peer_ns.plug_veth(BRIDGE, &wiring.wan_port, WAN_WIRE).unwrap();
    disable_ipv6(None, &wiring.wan_port);

    // The LAN host: eth0 in its namespace, the other end in the root namespace for nflet.
    let (ns, port) = (wiring.lan_ns.as_str(), wiring.lan_port.as_str());
    sh(&["ip", "netns", "add", ns]);
    for dev in ["all", "default"] {
        disable_ipv6(Some(ns), dev);
    }
    sh(&["ip", "link", "add", port, "mtu", LAN_MTU, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    disable_ipv6(None, port);
    sh(&["ip", "-n", ns, "link", "set", "eth0", "mtu", LAN_MTU, "up"]);
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", ns, "addr", "add", &format!("{LAN_HOST}/24"), "dev", "eth0"]);
    sh(&["ip", "-n", ns, "route", "add", "default", "via", LAN_GW]);
    sh(&["ip", "link", "set", port, "up"]);
    let off = ["tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"];
    let mut a = vec!["ip", "netns", "exec", ns, "ethtool", "-K", "eth0"];
    a.extend(off);
    sh(&a);
    let mut b = vec!["ethtool", "-K", port];
    b.extend(off);
    sh(&b);

    let cfg = PeerConfig::new("peer-live").nic("tpl0", BRIDGE);
    let guest_mac = cfg.nics[0].mac;
    let start = Instant::now();
    let vm = PeerVm::boot(&peer_ns, &cfg).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("peer booted in {:.1?}", start.elapsed());
    // No IPv6 on the guest either: the wire carries only what the test makes, and ARP.
    vm.exec("for f in /proc/sys/net/ipv6/conf/*/disable_ipv6; do echo 1 >$f; done 2>/dev/null; true")
        .unwrap();
    Site { vm, guest_mac, wiring, peer_ns }
}

/// Deterministic key material.
fn sa(spi: u32, key_len: usize, seed: u8) -> Sa {
    let key = (0..key_len).map(|i| seed.wrapping_mul(37).wrapping_add(i as u8 * 3)).collect();
    Sa { spi, key, salt: [seed, 0x5a, 0x17, seed ^ 0xa5] }
}

/// The tunnel as the guest sees it.
fn guest_spec(key_len: usize) -> TunnelSpec {
    TunnelSpec {
        outer_dev: "eth0".into(),
        local_outer: GUEST_OUTER,
        outer_len: 24,
        remote_outer: WAN_ADDR,
        gateway: None,
        local_inner: GUEST_INNER,
        local_net: Prefix { addr: Ipv4Addr::new(10, 2, 0, 0), len: 24 },
        remote_net: Prefix { addr: Ipv4Addr::new(10, 1, 0, 0), len: 24 },
        out_sa: sa(SPI_TO_NFLET, key_len, 3),
        in_sa: sa(SPI_TO_GUEST, key_len, 4),
        replay_window: 64,
    }
}

/// examples/ipsec-gateway.toml on this topology, with the guest's SAs mirrored.
fn nflet_config(w: &Wiring, spec: &TunnelSpec, listen: u16) -> String {
    format!(
        r#"
[appliance]
cores = 1

[[port]]
name = "lan"
kind = "af_packet"
iface = "{lan}"

[[port]]
name = "wan"
kind = "af_packet"
iface = "{wan}"

[[nf]]
name = "vpn"
kind = "ipsec"
inside = "lan"

  [[nf.sa]]
  name = "peer"
  local = "{WAN_ADDR}"
  remote = "{GUEST_OUTER}"
  outbound = {{ spi = {out_spi}, key = "{out_key}" }}
  inbound = {{ spi = {in_spi}, key = "{in_key}" }}
  replay_window = 64

  [[nf.policy]]
  action = "protect"
  sa = "peer"
  src = "10.1.0.0/24"
  dst = "10.2.0.0/24"

[[nf]]
name = "gw"
kind = "gateway"

  [[nf.interface]]
  port = "lan"
  address = "{LAN_GW}/24"
  mac = "{LAN_MAC}"

  [[nf.interface]]
  port = "wan"
  address = "{WAN_ADDR}/24"
  mac = "02:00:00:00:02:01"

[[chain]]
name = "from_lan"
ingress = ["lan"]
steps = ["vpn", "gw"]

[[chain]]
name = "from_wan"
ingress = ["wan"]
steps = ["vpn", "gw"]

[management]
listen = {listen}
"#,
        lan = w.lan_port,
        wan = w.wan_port,
        out_spi = spec.in_sa.spi,
        out_key = spec.in_sa.keymat_hex(),
        in_spi = spec.out_sa.spi,
        in_key = spec.out_sa.keymat_hex(),
    )
}

/// What a failure message needs: the guest console, nflet's stderr and counters.
fn diag(site: &Site, nflet: &Appliance) -> String {
    format!(
        "\n--- guest console (tail) ---\n{}\n--- nflet stderr ---\n{}\n--- nflet counters (non-zero) ---\n{}",
        site.vm.console_log(),
        nflet.stderr(),
        nflet.try_metrics().map(|m| Metrics(m).nonzero()).unwrap_or_default()
    )
}

macro_rules! ensure {
    ($site:expr, $nflet:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            panic!("{}{}", format!($($fmt)+), diag($site, $nflet));
        }
    };
}

fn in_lan(site: &Site, args: &[&str]) -> Output {
    Command::new("ip").args(["netns", "exec", &site.wiring.lan_ns]).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `key=value` of a result line of esp_live.py.
fn kv<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The TTL of a ping's first reply (`... ttl=N ...`).
fn reply_ttl(out: &str) -> Option<u8> {
    out.split_whitespace().find_map(|w| w.strip_prefix("ttl=")?.parse().ok())
}

/// The average of a ping's `min/avg/max` line, in ms.
fn rtt_avg(out: &str) -> f64 {
    out.lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1)?.trim().split('/').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no round-trip summary in:\n{out}"))
}

/// Pings until one echo comes back (the gateway turns the first packet towards an unknown
/// neighbour into its ARP request, and each side must learn the other's MAC).
fn warm_up(site: &Site, nflet: &Appliance) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    loop {
        let o = in_lan(site, &["busybox", "ping", "-c", "1", "-W", "1", &GUEST_INNER.to_string()]);
        if o.status.success() {
            break;
        }
        last = text(&o);
        std::thread::sleep(Duration::from_millis(200));
        ensure!(site, nflet, Instant::now() < deadline, "LAN host → guest: no echo reply in 15 s:\n{last}");
    }
    let cmd = format!("ping -c 1 -W 2 -I {GUEST_INNER} {LAN_HOST}");
    for _ in 0..5 {
        match site.vm.exec_timeout(&cmd, Duration::from_secs(10)) {
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
    }
    ensure!(site, nflet, false, "guest → LAN host: no echo reply:\n{last}");
}

/// tcpdump on the peer's end of nflet's WAN veth (every frame nflet sends or is sent on the
/// WAN), written as it arrives; a large buffer, so nothing is dropped while the guest and
/// nflet share two cores.
fn capture(site: &Site, file: &Path) -> Child {
    tcpdump(site.peer_ns.command("tcpdump"), WAN_WIRE, file, &[])
}

/// tcpdump (`cmd`, in some namespace) on `iface` into `file`, frames matching `filter`.
fn tcpdump(mut cmd: Command, iface: &str, file: &Path, filter: &[&str]) -> Child {
    let mut child = cmd
        .args(["-i", iface, "-n", "-s", "0", "-B", "16384", "--immediate-mode", "-U", "-w"])
        .arg(file)
        .args(filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "tcpdump: {line}");
    child
}

/// Stops tcpdump (SIGINT, so it reports its statistics); returns them.
fn stop_capture(mut child: Child) -> String {
    std::thread::sleep(Duration::from_millis(300)); // the last frames reach the file (-U)
    sh(&["kill", "-INT", &child.id().to_string()]);
    let mut stats = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stats);
    let _ = child.wait();
    stats
}

/// The frames of a pcap file (little-endian, Ethernet).
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], &0xa1b2_c3d4u32.to_le_bytes(), "{}: not a little-endian pcap", path.display());
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let Some(frame) = data.get(at + 16..at + 16 + len) else { break };
        frames.push(frame.to_vec());
        at += 16 + len;
    }
    frames
}

/// One frame on the bridge, as far as the test cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wire {
    Arp,
    Esp {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        spi: u32,
        seq: u32,
    },
    /// IPv4 that is not ESP: source, destination, protocol.
    Clear(Ipv4Addr, Ipv4Addr, u8),
    Other(u16),
}

fn classify(f: &[u8]) -> Wire {
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    match ethertype {
        0x0806 => Wire::Arp,
        0x0800 => {
            let ip = &f[14..];
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            if ip[9] != 50 {
                return Wire::Clear(src, dst, ip[9]);
            }
            let h = &ip[ihl..ihl + 8];
            let spi = u32::from_be_bytes(h[..4].try_into().unwrap());
            let seq = u32::from_be_bytes(h[4..8].try_into().unwrap());
            Wire::Esp { src, dst, spi, seq }
        }
        other => Wire::Other(other),
    }
}

fn src_mac(f: &[u8]) -> [u8; 6] {
    f[6..12].try_into().unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Linux's replay errors for inbound SA `spi` (`ip -s xfrm state`: `replay-window W replay N
/// failed F`) and `XfrmInStateSeqError` of /proc/net/xfrm_stat.
fn guest_replays(vm: &PeerVm, spi: u32) -> (u64, u64) {
    let state = vm.exec(&format!("ip -s xfrm state list spi 0x{spi:08x}")).unwrap();
    // The `stats:` line; the state's own `replay-window 0 seq ...` line has no `replay N`.
    let replay = state
        .lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter().position(|x| *x == "replay").and_then(|i| w.get(i + 1)?.parse().ok())
        })
        .unwrap_or_else(|| panic!("no `replay N` in:\n{state}"));
    let stat = vm.exec("cat /proc/net/xfrm_stat").unwrap();
    let seq_err = stat
        .lines()
        .find_map(|l| l.strip_prefix("XfrmInStateSeqError"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no XfrmInStateSeqError in:\n{stat}"));
    (replay, seq_err)
}

/// Writes `frame` on `dev` of the peer's namespace with an AF_PACKET socket.
fn inject(site: &Site, dev: &str, frame: &[u8]) {
    let o =
        site.peer_ns.command(&python()).arg(script()).args(["inject", dev, &hex(frame)]).output().unwrap();
    assert!(
        o.status.success() && text(&o).contains(&format!("sent={}", frame.len())),
        "inject: {}",
        text(&o)
    );
}

/// Reference numbers of one key size.
#[derive(Debug, Default)]
struct Numbers {
    rtt_ms: f64,
    lan_to_guest_mbit: f64,
    guest_to_lan_mbit: f64,
}

fn mbit(bytes: usize, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs / 1e6
}

/// Waits until nflet has seen no packet for a second (the last ACKs and FINs of the
/// transfers have crossed), at most 10 s; returns its counters then.
fn settle(nflet: &Appliance) -> Metrics {
    let rx = |m: &Metrics| m.get("nflet_port_rx_packets_total", &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = nflet.metrics();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = nflet.metrics();
        if rx(&now) == rx(&last) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// Pings and TCP both ways through the tunnel; returns the RTT and the rates.
fn traffic(site: &Site, nflet: &Appliance) -> Numbers {
    let vm = &site.vm;
    let mut n = Numbers::default();
    let o = in_lan(site, &["busybox", "ping", "-c", "5", "-i", "0.2", "-W", "3", &GUEST_INNER.to_string()]);
    let out = text(&o);
    ensure!(
        site,
        nflet,
        out.contains("5 packets transmitted, 5 packets received"),
        "LAN host → guest ping:\n{out}"
    );
    n.rtt_ms = rtt_avg(&out);
    let lan_ttl = reply_ttl(&out);
    let out = vm
        .exec_timeout(&format!("ping -c 3 -W 5 -I {GUEST_INNER} {LAN_HOST}"), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("guest → LAN host ping: {e}{}", diag(site, nflet)));
    ensure!(site, nflet, out.contains("3 packets received"), "guest → LAN host ping:\n{out}");
    // nflet is one router hop in both directions: `ipsec` decrements the inner TTL of what
    // goes into the tunnel, `gateway` that of what comes out (both peers answer with 64).
    let guest_ttl = reply_ttl(&out);
    ensure!(
        site,
        nflet,
        (lan_ttl, guest_ttl) == (Some(63), Some(63)),
        "echo reply TTLs: LAN host saw {lan_ttl:?}, guest saw {guest_ttl:?}; expected 63 both ways"
    );

    // TCP LAN host → guest: busybox nc listens in the guest, the LAN host sends.
    vm.exec(
        "rm -f /tmp/rx; nc -l -p 5000 >/tmp/rx & \
         for i in $(seq 50); do netstat -ltn | grep -q ':5000 ' && break; usleep 100000; done",
    )
    .unwrap();
    let o = in_lan(
        site,
        &[
            &python(),
            script().to_str().unwrap(),
            "send",
            &GUEST_INNER.to_string(),
            "5000",
            &TCP_BYTES.to_string(),
        ],
    );
    let sent = text(&o);
    ensure!(site, nflet, o.status.success(), "TCP LAN host → guest: {sent}");
    vm.exec_timeout("wait", Duration::from_secs(30)).unwrap();
    let got = vm.exec("wc -c </tmp/rx; sha256sum /tmp/rx").unwrap();
    ensure!(
        site,
        nflet,
        got.split_whitespace().take(2).collect::<Vec<_>>() == [&TCP_BYTES.to_string(), kv(&sent, "sha256")],
        "TCP LAN host → guest: sent {sent}, the guest has {got}"
    );
    n.lan_to_guest_mbit = mbit(TCP_BYTES, kv(&sent, "secs").parse().unwrap());

    // TCP guest → LAN host.
    let secs = guest_to_lan(site, nflet, TCP_BYTES, 5001);
    n.guest_to_lan_mbit = mbit(TCP_BYTES, secs);
    n
}

/// `bytes` random bytes by TCP from the guest (busybox nc) to the LAN host (esp_live.py
/// listening on `port`), checked byte-exact; returns the receiver's seconds.
fn guest_to_lan(site: &Site, nflet: &Appliance, bytes: usize, port: u16) -> f64 {
    let vm = &site.vm;
    vm.exec(&format!("dd if=/dev/urandom of=/tmp/tx bs=65536 count={} 2>/dev/null", bytes / 65536)).unwrap();
    let tx_sum = vm.exec("sha256sum /tmp/tx").unwrap();
    let mut recv = Command::new("ip")
        .args(["netns", "exec", &site.wiring.lan_ns, &python()])
        .arg(script())
        .args(["recv", &port.to_string(), &bytes.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(recv.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "listening");
    let sent = vm.exec_timeout(&format!("nc {LAN_HOST} {port} </tmp/tx"), Duration::from_secs(120));
    let got = lines.next().map(Result::unwrap).unwrap_or_default();
    let status = recv.wait().unwrap();
    ensure!(
        site,
        nflet,
        status.success() && sent.is_ok(),
        "TCP guest → LAN host: guest nc {sent:?}, receiver {status}: {got}"
    );
    ensure!(
        site,
        nflet,
        kv(&got, "bytes") == bytes.to_string() && tx_sum.starts_with(kv(&got, "sha256")),
        "TCP guest → LAN host: the guest sent {tx_sum}, the LAN host got {got}"
    );
    kv(&got, "secs").parse().unwrap()
}

/// Configures the guest's SAs and starts nflet with the mirrored ones, then runs steps 1-5.
fn run(site: &Site, key_len: usize) -> Numbers {
    let spec = guest_spec(key_len);
    site.vm.flush_tunnels().unwrap();
    site.vm.configure_tunnel(&spec).unwrap_or_else(|e| panic!("{e}"));
    let config = nflet_config(&site.wiring, &spec, free_port());
    let mut nflet = Appliance::start(&config, &format!("esplive-gcm{}", key_len * 8));
    nflet.wait_ready();
    warm_up(site, &nflet);
    let numbers = traffic_on_the_wire(site, &nflet, key_len);
    let (request, reply) = echo_pair(site, &nflet);
    replay_to_nflet(site, &nflet, &reply);
    replay_to_guest(site, &nflet, &request);
    ecn_across_the_tunnel(site, &nflet);
    let summary = nflet.stop();
    for l in summary.lines().filter(|l| l.contains("vpn") || l.contains("ipsec")) {
        eprintln!("  {l}");
    }
    numbers
}

/// Steps 1-3: the traffic, captured on the WAN and counted on both ends.
fn traffic_on_the_wire(site: &Site, nflet: &Appliance, key_len: usize) -> Numbers {
    let vm = &site.vm;
    let pcap = nflet.dir.join("wan.pcap");
    // Counters are published every 100 ms: read them once the warm-up's last packets are in.
    let m0 = settle(nflet);
    let tcpdump = capture(site, &pcap);
    let (g_out0, g_in0) = (vm.sa_counters(SPI_TO_NFLET).unwrap(), vm.sa_counters(SPI_TO_GUEST).unwrap());
    let numbers = traffic(site, nflet);
    let m1 = settle(nflet);
    let (g_out1, g_in1) = (vm.sa_counters(SPI_TO_NFLET).unwrap(), vm.sa_counters(SPI_TO_GUEST).unwrap());
    let stats = stop_capture(tcpdump);
    let no_loss = stats.lines().any(|l| l.trim() == "0 packets dropped by kernel");
    ensure!(site, nflet, no_loss, "tcpdump lost frames: {stats}");
    let frames = read_pcap(&pcap);

    let (mut from_nflet, mut from_guest) = (Vec::new(), Vec::new());
    for f in &frames {
        let w = classify(f);
        if let Wire::Clear(..) | Wire::Other(_) = w {
            ensure!(site, nflet, false, "not ARP or ESP on the WAN: {w:?} from {:02x?}", src_mac(f));
        }
        if src_mac(f) == WAN_MAC {
            from_nflet.push(w);
        } else if src_mac(f) == site.guest_mac {
            from_guest.push(w);
        }
    }
    let seq_out = esp_seqs(site, nflet, &from_nflet, (WAN_ADDR, GUEST_OUTER, SPI_TO_GUEST));
    let seq_in = esp_seqs(site, nflet, &from_guest, (GUEST_OUTER, WAN_ADDR, SPI_TO_NFLET));
    let (n_out, n_in) = (seq_out.len() as u64, seq_in.len() as u64);
    let segments = (TCP_BYTES / 1360) as u64;
    ensure!(site, nflet, n_out >= 5 + 3 + segments, "ESP frames nflet → guest: {n_out}");
    ensure!(site, nflet, n_in >= 5 + 3 + segments, "ESP frames guest → nflet: {n_in}");

    // The receive rings' overrun statistics are read lazily (a debug build sharing two cores
    // with a TCG guest does not always keep up): wait for them to account for every frame.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut lost_now = m1.port("wan", "lost");
    let received = m1.port("wan", "rx_packets") - m0.port("wan", "rx_packets");
    while received + lost_now - m0.port("wan", "lost") != from_guest.len() as u64 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        lost_now = nflet.metrics().port("wan", "lost");
    }
    let d = |f: &dyn Fn(&Metrics) -> u64| f(&m1) - f(&m0);
    let (encrypted, decrypted) = (d(&|m| m.event("vpn", "encrypted")), d(&|m| m.event("vpn", "decrypted")));
    let lost_wan = lost_now - m0.port("wan", "lost");
    let counts = format!(
        "captured: {n_out} ESP nflet → guest, {n_in} ESP guest → nflet ({} frames from the guest); \
         nflet: encrypted {encrypted}, decrypted {decrypted}, WAN received {received}, lost to ring \
         overruns {lost_wan}, LAN lost {}; guest SA in {:?} → {:?}, out {:?} → {:?}",
        from_guest.len(),
        d(&|m| m.port("lan", "lost")),
        g_in0,
        g_in1,
        g_out0,
        g_out1
    );
    eprintln!("AES-GCM-{}: {counts}", key_len * 8);
    // Every ESP packet nflet made went out, and Linux accepted every one.
    ensure!(site, nflet, encrypted == n_out && g_in1.packets - g_in0.packets == n_out, "{counts}");
    // Every frame of the guest reached nflet's ring; every ESP one nflet read, it decrypted.
    ensure!(site, nflet, g_out1.packets - g_out0.packets == n_in, "{counts}");
    ensure!(site, nflet, received + lost_wan == from_guest.len() as u64, "{counts}");
    ensure!(site, nflet, decrypted <= n_in && decrypted + lost_wan >= n_in, "{counts}");
    ensure!(site, nflet, m1.dropped_with_prefix("ipsec_") == 0, "ipsec drops:\n{}", m1.nonzero());
    ensure!(
        site,
        nflet,
        d(&|m| m.event("gw", "forwarded")) == encrypted + decrypted,
        "the gateway routes every ESP packet out and every decrypted one in: {counts}"
    );
    numbers
}

/// The sequence numbers of the ESP frames in `frames`, which must all be between `endpoints`
/// (source, destination, SPI) and consecutive (RFC 4303 §3.3.3: one more per packet).
fn esp_seqs(
    site: &Site,
    nflet: &Appliance,
    frames: &[Wire],
    endpoints: (Ipv4Addr, Ipv4Addr, u32),
) -> Vec<u32> {
    let mut seqs = Vec::new();
    for w in frames {
        if let Wire::Esp { src, dst, spi, seq } = *w {
            ensure!(site, nflet, (src, dst, spi) == endpoints, "ESP {w:?}: expected {endpoints:?}");
            seqs.push(seq);
        }
    }
    let first = seqs.first().copied().unwrap_or(1);
    let consecutive = seqs.iter().enumerate().all(|(i, s)| *s == first + i as u32);
    ensure!(site, nflet, consecutive, "ESP sequence numbers {endpoints:?} are not consecutive: {seqs:?}");
    seqs
}

/// Step 4's material: one echo request LAN host → guest and its reply, as ESP frames on the
/// WAN (nflet's, the guest's). Both were accepted: the ping succeeded.
fn echo_pair(site: &Site, nflet: &Appliance) -> (Vec<u8>, Vec<u8>) {
    let pcap = nflet.dir.join("replay.pcap");
    let tcpdump = capture(site, &pcap);
    let o = in_lan(site, &["busybox", "ping", "-c", "1", "-W", "5", &GUEST_INNER.to_string()]);
    ensure!(site, nflet, o.status.success(), "LAN host → guest ping: {}", text(&o));
    stop_capture(tcpdump);
    let frames = read_pcap(&pcap);
    let last_esp = |mac: [u8; 6]| {
        let f = frames.iter().rev().find(|f| src_mac(f) == mac && matches!(classify(f), Wire::Esp { .. }));
        f.cloned().unwrap_or_else(|| panic!("no ESP frame from {mac:02x?} in {} frames", frames.len()))
    };
    (last_esp(WAN_MAC), last_esp(site.guest_mac))
}

/// 4a: the guest's ESP frame, again, towards nflet: exactly one `ipsec_replayed` drop, nothing
/// decrypted, routed or sent to the LAN (but ARP).
fn replay_to_nflet(site: &Site, nflet: &Appliance, frame: &[u8]) {
    let m2 = settle(nflet);
    inject(site, WAN_WIRE, frame);
    let deadline = Instant::now() + Duration::from_secs(5);
    while nflet.metrics().dropped("ipsec_replayed") == m2.dropped("ipsec_replayed")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let m3 = nflet.metrics();
    let d = |f: &dyn Fn(&Metrics) -> u64| f(&m3) - f(&m2);
    let (replayed, ipsec) = (d(&|m| m.dropped("ipsec_replayed")), d(&|m| m.dropped_with_prefix("ipsec_")));
    ensure!(
        site,
        nflet,
        (replayed, ipsec) == (1, 1),
        "one replayed ESP frame: {replayed} replayed, {ipsec} ipsec drops"
    );
    ensure!(site, nflet, d(&|m| m.event("vpn", "decrypted")) == 0, "a replayed frame was decrypted");
    ensure!(site, nflet, d(&|m| m.event("gw", "forwarded")) == 0, "a replayed frame was routed");
    let to_lan = d(&|m| m.port("lan", "tx_packets"));
    let arp = d(&|m| m.event("gw", "arp_replies"));
    ensure!(
        site,
        nflet,
        to_lan == arp,
        "nflet sent the LAN {to_lan} frames ({arp} ARP replies) after the replayed frame"
    );
}

/// 4b: nflet's ESP frame, again, towards the guest (through the bridge): Linux's `replay`
/// and `XfrmInStateSeqError` counters rise by one, its SA counters do not move.
fn replay_to_guest(site: &Site, nflet: &Appliance, frame: &[u8]) {
    let vm = &site.vm;
    let (r0, e0) = guest_replays(vm, SPI_TO_GUEST);
    let before = vm.sa_counters(SPI_TO_GUEST).unwrap();
    inject(site, BRIDGE, frame);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut r1, mut e1) = (r0, e0);
    while (r1, e1) == (r0, e0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        (r1, e1) = guest_replays(vm, SPI_TO_GUEST);
    }
    ensure!(
        site,
        nflet,
        r1 == r0 + 1 && e1 == e0 + 1,
        "Linux's replay counters after one replayed frame: replay {r0} → {r1}, XfrmInStateSeqError {e0} → {e1}"
    );
    ensure!(site, nflet, vm.sa_counters(SPI_TO_GUEST).unwrap() == before, "Linux accepted a replayed frame");
}

/// Step 5 (RFC 6040): a router between the tunnel endpoints (an nftables rule on the peer's
/// bridge) marks CE on the guest's ECN-capable ESP packets; nflet passes the mark on to the
/// decrypted packets the LAN host receives. Then the same router marks Not-ECT ones too (as
/// no RFC 3168 router does): nflet drops them (`ipsec_ce_not_ect`), as Linux would.
fn ecn_across_the_tunnel(site: &Site, nflet: &Appliance) {
    let vm = &site.vm;
    let m = site.guest_mac;
    let mac = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
    let rules = |codepoint: &str| {
        let file = nflet.dir.join("router.nft");
        std::fs::write(
            &file,
            format!(
                "flush ruleset\ntable bridge wanpath {{\n  chain marking {{\n    \
                 type filter hook forward priority 0; policy accept;\n    \
                 ether saddr {mac} ip protocol esp ip ecn {codepoint} counter ip ecn set ce\n  }}\n}}\n"
            ),
        )
        .unwrap();
        let o = site
            .peer_ns
            .command("nft")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("nft (apt-get install nftables)");
        assert!(o.status.success(), "nft -f {}: {}", file.display(), text(&o));
    };
    let marked = || {
        let o = site.peer_ns.command("nft").args(["list", "ruleset"]).output().unwrap();
        let t = text(&o);
        t.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no counter in:\n{t}"))
    };

    rules("ect0");
    vm.exec("echo 1 >/proc/sys/net/ipv4/tcp_ecn").unwrap();
    let pcap = nflet.dir.join("lan-ce.pcap");
    let mut lan_tcpdump = Command::new("ip");
    lan_tcpdump.args(["netns", "exec", &site.wiring.lan_ns, "tcpdump"]);
    let filter = format!("src host {GUEST_INNER} and ip[1] & 3 == 3");
    let cap = tcpdump(lan_tcpdump, "eth0", &pcap, &[&filter]);
    let m0 = settle(nflet);
    guest_to_lan(site, nflet, 256 << 10, 5002);
    let m1 = settle(nflet);
    stop_capture(cap);
    let (ce_on_path, ce_at_lan) = (marked(), read_pcap(&pcap).len() as u64);
    let lost = m1.port("wan", "lost") - m0.port("wan", "lost");
    let drops = m1.dropped_with_prefix("ipsec_") - m0.dropped_with_prefix("ipsec_");
    eprintln!("ECN: {ce_on_path} ESP packets marked CE on the path, {ce_at_lan} CE packets at the LAN host");
    ensure!(
        site,
        nflet,
        ce_on_path > 0 && ce_at_lan <= ce_on_path && ce_at_lan + lost >= ce_on_path && drops == 0,
        "CE marks: {ce_on_path} on the path, {ce_at_lan} reached the LAN host ({lost} frames lost to \
         nflet's ring, {drops} ipsec drops)"
    );

    rules("not-ect");
    let before = m1.dropped("ipsec_ce_not_ect");
    let (status, out) = vm
        .exec_status(&format!("ping -c 1 -W 2 -I {GUEST_INNER} {LAN_HOST}"), Duration::from_secs(20))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = nflet.metrics().dropped("ipsec_ce_not_ect");
    ensure!(
        site,
        nflet,
        status != 0 && after - before == 1 && marked() == 1,
        "a CE-marked echo request (Not-ECT inside): ping status {status}, ipsec_ce_not_ect {before} → {after}:\n{out}"
    );
    site.peer_ns.command("nft").args(["flush", "ruleset"]).output().unwrap();
    vm.exec("echo 2 >/proc/sys/net/ipv4/tcp_ecn").unwrap();
}

#[test]
fn nflet_and_linux_xfrm_tunnel_both_ways_gcm128_and_gcm256() {
    let start = Instant::now();
    let site = site();
    for key_len in [16, 32] {
        let t = Instant::now();
        let n = run(&site, key_len);
        println!(
            "AES-GCM-{}: ping LAN host → guest avg RTT {:.2} ms; TCP {} MiB LAN host → guest {:.1} Mbit/s, \
             guest → LAN host {:.1} Mbit/s (checked in {:.1?})",
            key_len * 8,
            n.rtt_ms,
            TCP_BYTES >> 20,
            n.lan_to_guest_mbit,
            n.guest_to_lan_mbit,
            t.elapsed()
        );
    }
    eprintln!("total {:.1?}", start.elapsed());
}
