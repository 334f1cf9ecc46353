//! Support for nflet's end-to-end tests: Linux network namespaces wired to nflet with veth
//! pairs, the nflet binary, and the `peer` program that plays real TCP/UDP endpoints.
//!
//! Everything created here is named after the test process id and removed on drop, so tests
//! can run side by side and leave nothing behind.

pub mod appliance;
pub mod scaleout;
pub mod xfrm_peer;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Runs a command and fails with its output when it does not succeed.
pub fn sh(args: &[&str]) -> Output {
    let (prog, rest) = args.split_first().expect("a command");
    let out = Command::new(prog).args(rest).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The workspace's target directory for the profile the tests were built with.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).expect("target dir")
}

/// Path of a workspace binary (`nflet`, `peer`), built by `cargo test --workspace`.
pub fn binary(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (it builds the binaries)",
        p.display()
    );
    p
}

/// True when running as root (network namespaces need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Two hosts in their own network namespaces, each with a veth whose other end stays in the
/// root namespace for nflet to attach to:
///
/// ```text
///  [ns a: a0 10.77.0.1/24] ── a1 ─ nflet ─ b1 ── [ns b: b0 10.77.0.2/24]
/// ```
#[derive(Debug)]
pub struct TwoHosts {
    pub ns_a: String,
    pub ns_b: String,
    /// Interfaces in the root namespace, for nflet's af_packet ports.
    pub port_a: String,
    pub port_b: String,
    pub addr_a: &'static str,
    pub addr_b: &'static str,
}

impl TwoHosts {
    pub fn new(tag: &str) -> TwoHosts {
        assert!(is_root(), "end-to-end tests need root for network namespaces (run ./tests/run.sh as root)");
        let id = std::process::id() % 100_000;
        let t = TwoHosts {
            ns_a: format!("nfl{tag}a{id}"),
            ns_b: format!("nfl{tag}b{id}"),
            port_a: format!("n{tag}a{id}"),
            port_b: format!("n{tag}b{id}"),
            addr_a: "10.77.0.1",
            addr_b: "10.77.0.2",
        };
        for (ns, inner, outer, addr) in
            [(&t.ns_a, "a0", &t.port_a, t.addr_a), (&t.ns_b, "b0", &t.port_b, t.addr_b)]
        {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns]);
            sh(&["ip", "-n", ns, "addr", "add", &format!("{addr}/24"), "dev", inner]);
            sh(&["ip", "-n", ns, "link", "set", inner, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "link", "set", outer, "up"]);
            // nflet sees frames as they are on the wire: no segmentation or checksum offload
            // (a forwarded frame must carry a complete checksum).
            for dev_args in [
                vec!["ip", "netns", "exec", ns.as_str(), "ethtool", "-K", inner],
                vec!["ethtool", "-K", outer.as_str()],
            ] {
                let mut a = dev_args.clone();
                a.extend(["tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"]);
                sh(&a);
            }
        }
        t
    }

    /// The `[[port]]` tables of nflet's AF_PACKET ports on the root-namespace ends of the
    /// veths: `a` towards host A, `b` towards host B.
    pub fn af_packet_ports(&self) -> String {
        format!(
            "[[port]]\nname = \"a\"\nkind = \"af_packet\"\niface = \"{}\"\n\n\
             [[port]]\nname = \"b\"\nkind = \"af_packet\"\niface = \"{}\"\n",
            self.port_a, self.port_b
        )
    }

    /// Runs `peer` with `args` in namespace `ns` and waits for it.
    pub fn peer(&self, ns: &str, args: &[&str]) -> Output {
        let peer = binary("peer");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(&peer).args(args);
        cmd.output().unwrap_or_else(|e| panic!("peer {args:?}: {e}"))
    }

    /// Starts `peer` with `args` in namespace `ns` in the background.
    pub fn spawn_peer(&self, ns: &str, args: &[&str]) -> Child {
        let peer = binary("peer");
        Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&peer)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("peer {args:?}: {e}"))
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for dev in [&self.port_a, &self.port_b] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
    }
}

/// A running nflet that is stopped (SIGTERM) and reaped on drop.
#[derive(Debug)]
pub struct Nflet {
    pub child: Option<Child>,
    pub config: PathBuf,
}

impl Nflet {
    /// Writes `config` to a temporary file and starts `nflet run -q -c` on it.
    pub fn start(config: &str, tag: &str) -> Nflet {
        let path = std::env::temp_dir().join(format!("nflet-{tag}-{}.toml", std::process::id()));
        std::fs::write(&path, config).expect("write config");
        let child = Command::new(binary("nflet"))
            .args(["run", "-q", "-c"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nflet");
        Nflet { child: Some(child), config: path }
    }

    /// Stops nflet with SIGTERM and returns its stdout (the summary) and stderr.
    pub fn stop(mut self) -> (String, String) {
        let child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let out = child.wait_with_output().expect("nflet exit");
        assert!(out.status.success(), "nflet failed: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

impl Drop for Nflet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The value after `key=` in a summary line of the form `... key=123 ...`.
pub fn field(text: &str, line_prefix: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.trim_start().starts_with(line_prefix))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
}

/// The count of a drop reason in a summary, 0 when not listed.
pub fn drops(text: &str, reason: &str) -> u64 {
    let mut in_drops = false;
    for l in text.lines() {
        if l.starts_with("drops by reason") {
            in_drops = true;
            continue;
        }
        if in_drops {
            let mut w = l.split_whitespace();
            if w.next() == Some(reason) {
                return w.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
            if !l.starts_with("  ") {
                break;
            }
        }
    }
    0
}

/// Runs `peer` with `args` in namespace `ns` and waits for it.
pub fn peer_in(ns: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(binary("peer")).args(args);
    cmd.output().unwrap_or_else(|e| panic!("peer {args:?}: {e}"))
}

/// Starts `peer` with `args` in namespace `ns` in the background, stdout and stderr piped.
pub fn spawn_peer_in(ns: &str, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(binary("peer"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("peer {args:?}: {e}"))
}

/// Turns off segmentation and checksum offloads, so frames are complete as they cross nflet.
fn offloads_off(ns: Option<&str>, dev: &str) {
    let mut a: Vec<&str> = match ns {
        Some(ns) => vec!["ip", "netns", "exec", ns, "ethtool", "-K", dev],
        None => vec!["ethtool", "-K", dev],
    };
    a.extend(["tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"]);
    sh(&a);
}

/// A routed site: two inside hosts and two outside servers, each side on its own Linux
/// bridge (a switch namespace) whose uplink veth ends in the root namespace for one of
/// nflet's af_packet ports. nflet is the router (and NAT) between the two subnets:
///
/// ```text
///  [h1 192.168.77.10]─┐                                 ┌─[s1 198.51.100.10]
///                     ├─[switch]─ port_in ─ nflet ─ port_out ─[switch]─┤
///  [h2 192.168.77.11]─┘   gateway 192.168.77.1   198.51.100.1          └─[s2 198.51.100.11]
/// ```
///
/// Hosts use the gateway as their default route; servers only know their own subnet (the
/// NAT's public address is the gateway's outside address). Every host interface has a fixed
/// MAC ([`GatewayNet::OUTSIDE_MACS`] for the servers) so configurations can name them.
/// IPv6 is off in every namespace, so nflet sees only the traffic a test makes (and ARP).
#[derive(Debug)]
pub struct GatewayNet {
    /// Namespaces of the inside hosts h1, h2.
    pub inside: [String; 2],
    /// Namespaces of the outside servers s1, s2.
    pub outside: [String; 2],
    switches: [String; 2],
    /// Interfaces in the root namespace, for nflet's `lan` and `wan` af_packet ports.
    pub port_in: String,
    pub port_out: String,
}

impl GatewayNet {
    pub const INSIDE_ADDRS: [&'static str; 2] = ["192.168.77.10", "192.168.77.11"];
    pub const OUTSIDE_ADDRS: [&'static str; 2] = ["198.51.100.10", "198.51.100.11"];
    pub const INSIDE_MACS: [&'static str; 2] = ["02:77:00:00:00:10", "02:77:00:00:00:11"];
    pub const OUTSIDE_MACS: [&'static str; 2] = ["02:64:00:00:00:10", "02:64:00:00:00:11"];
    /// The gateway's inside address (the hosts' default route) and its outside address.
    pub const GW_INSIDE: &'static str = "192.168.77.1";
    pub const GW_OUTSIDE: &'static str = "198.51.100.1";

    pub fn new(tag: &str) -> GatewayNet {
        assert!(is_root(), "end-to-end tests need root for network namespaces (run ./tests/run.sh as root)");
        let id = std::process::id() % 100_000;
        let g = GatewayNet {
            inside: [format!("nfl{tag}h1{id}"), format!("nfl{tag}h2{id}")],
            outside: [format!("nfl{tag}s1{id}"), format!("nfl{tag}s2{id}")],
            switches: [format!("nfl{tag}si{id}"), format!("nfl{tag}so{id}")],
            port_in: format!("n{tag}i{id}"),
            port_out: format!("n{tag}o{id}"),
        };
        for ns in g.inside.iter().chain(&g.outside).chain(&g.switches) {
            sh(&["ip", "netns", "add", ns]);
            for key in ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"] {
                sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", key]);
            }
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let sides = [
            (&g.switches[0], &g.port_in, &g.inside, Self::INSIDE_ADDRS, Self::INSIDE_MACS),
            (&g.switches[1], &g.port_out, &g.outside, Self::OUTSIDE_ADDRS, Self::OUTSIDE_MACS),
        ];
        for (sw, uplink, hosts, addrs, macs) in sides {
            // No multicast snooping: the bridge would announce itself with IGMP and MLD.
            sh(&["ip", "-n", sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
            sh(&["ip", "-n", sw, "link", "set", "br0", "up"]);
            sh(&["ip", "link", "add", uplink, "type", "veth", "peer", "name", "up0", "netns", sw]);
            for (i, ((host, addr), mac)) in hosts.iter().zip(addrs).zip(macs).enumerate() {
                let port = format!("p{i}");
                sh(&[
                    "ip", "-n", host, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name",
                    &port, "netns", sw,
                ]);
                sh(&["ip", "-n", host, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
                sh(&["ip", "-n", host, "link", "set", "eth0", "up"]);
                offloads_off(Some(host), "eth0");
                sh(&["ip", "-n", sw, "link", "set", &port, "master", "br0", "up"]);
                offloads_off(Some(sw), &port);
            }
            sh(&["ip", "-n", sw, "link", "set", "up0", "master", "br0", "up"]);
            offloads_off(Some(sw), "up0");
            sh(&["ip", "link", "set", uplink, "up"]);
            offloads_off(None, uplink);
        }
        for h in &g.inside {
            sh(&["ip", "-n", h, "route", "add", "default", "via", Self::GW_INSIDE]);
        }
        g
    }
}

impl Drop for GatewayNet {
    fn drop(&mut self) {
        for ns in self.inside.iter().chain(&self.outside).chain(&self.switches) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for dev in [&self.port_in, &self.port_out] {
            let _ = Command::new("ip").args(["link", "del", dev]).output();
        }
    }
}

/// RFC 1071 one's-complement sum of `data` on top of `acc`, folded to 16 bits: 0xffff over a
/// header or segment whose checksum is right.
pub fn sum16(data: &[u8], mut acc: u32) -> u16 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum (addresses, protocol, length) of IPv4 header `ip` for an L4 segment
/// of `len` bytes, to start [`sum16`] of the segment from.
pub fn pseudo_v4(ip: &[u8], len: usize) -> u32 {
    ip[12..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>()
        + u32::from(ip[9])
        + len as u32
}

/// Classic pcap, written by hand so the test does not depend on nflet's writer.
pub fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// Frames of a classic pcap file (either byte order), parsed by hand.
pub fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    let d = std::fs::read(path).unwrap();
    assert!(d.len() >= 24, "output capture too short");
    let le = match &d[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("not a pcap file: magic {m:?}"),
    };
    let u32_at = |o: usize| {
        let b = [d[o], d[o + 1], d[o + 2], d[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "link type must be Ethernet");
    let mut frames = Vec::new();
    let mut o = 24;
    while o + 16 <= d.len() {
        let incl = u32_at(o + 8) as usize;
        frames.push(d[o + 16..o + 16 + incl].to_vec());
        o += 16 + incl;
    }
    frames
}
