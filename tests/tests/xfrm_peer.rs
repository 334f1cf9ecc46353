//! The Linux IPsec peer harness against itself: two peer guests (Debian kernel, xfrm) on one
//! bridge in a host network namespace, joined by a tunnel-mode ESP tunnel with
//! `rfc4106(gcm(aes))`, 128- and 256-bit keys. A ping and a TCP transfer (byte-exact) cross
//! the tunnel; the frames captured on the bridge are ESP with the configured SPIs and never
//! carry the inner addresses in clear; each SA's `ip -s xfrm state` packet counter equals the
//! number of ESP frames captured with its SPI, on both ends. Before that, the console
//! protocol itself: output, a non-zero status, a timeout whose error carries the console log,
//! and a veth plugged into the peers' bridge (where an nflet port goes).
//!
//! Needs root and the peer guest (`./images/peer/build.sh`, run by ./tests/run.sh), and
//! tcpdump on the host.
//!
//! Two `#[ignore]`d tests reuse the same setup:
//! - `write_esp_vectors` regenerates `tests/vectors/esp/` (ESP frames made by Linux, with
//!   their keys, for the ESP NF's unit tests):
//!   `cargo test -p nflet-tests --all-features --test xfrm_peer -- --ignored write_esp_vectors`
//! - `tunnel_throughput` times TCP through the tunnel between the two guests (BENCHMARKS.md):
//!   `cargo test -p nflet-tests --all-features --test xfrm_peer -- --ignored tunnel_throughput --nocapture`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nflet_tests::xfrm_peer::{
    PeerConfig, PeerError, PeerNetns, PeerVm, Prefix, Sa, TunnelSpec, BUILD_COMMAND,
};

const BRIDGE: &str = "br0";
const OUTER_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUTER_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const INNER_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const INNER_B: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// SPIs of the SA a → b and b → a.
const SPI_AB: u32 = 0x0000_a001;
const SPI_BA: u32 = 0x0000_b001;

/// Two booted peers on one bridge.
struct Pair {
    a: PeerVm,
    b: PeerVm,
    // Dropped after the VMs (fields drop in declaration order).
    ns: PeerNetns,
}

fn pair(tag: &str) -> Pair {
    let ns = PeerNetns::new(&format!("nflxp{tag}{}", std::process::id() % 100_000)).unwrap();
    ns.add_bridge(BRIDGE).unwrap();
    let start = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let boot = |name: &'static str, tap: &'static str| {
            let ns = &ns;
            s.spawn(move || PeerVm::boot(ns, &PeerConfig::new(name).nic(tap, BRIDGE)))
        };
        let (a, b) = (boot("peer-a", "tpa0"), boot("peer-b", "tpb0"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (a.unwrap_or_else(|e| panic!("{e}")), b.unwrap_or_else(|e| panic!("{e}")));
    eprintln!("two peers booted in {:.1?}", start.elapsed());
    Pair { a, b, ns }
}

/// Deterministic key material (the vectors must be reproducible from their JSON alone anyway).
fn sa(spi: u32, key_len: usize, seed: u8) -> Sa {
    let key = (0..key_len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)).collect();
    Sa { spi, key, salt: [seed, 0xca, 0xfe, seed ^ 0x5a] }
}

fn spec_a(key_len: usize) -> TunnelSpec {
    TunnelSpec {
        outer_dev: "eth0".into(),
        local_outer: OUTER_A,
        outer_len: 24,
        remote_outer: OUTER_B,
        gateway: None,
        local_inner: INNER_A,
        local_net: Prefix { addr: Ipv4Addr::new(10, 1, 0, 0), len: 24 },
        remote_net: Prefix { addr: Ipv4Addr::new(10, 2, 0, 0), len: 24 },
        out_sa: sa(SPI_AB, key_len, 1),
        in_sa: sa(SPI_BA, key_len, 2),
        replay_window: 64,
    }
}

impl Pair {
    fn tunnel(&self, key_len: usize) -> TunnelSpec {
        let spec = spec_a(key_len);
        for (vm, s) in [(&self.a, spec.clone()), (&self.b, spec.mirrored(INNER_B))] {
            vm.flush_tunnels().unwrap();
            vm.configure_tunnel(&s).unwrap_or_else(|e| panic!("{}: {e}", vm.name));
        }
        spec
    }

    /// tcpdump on the bridge, every frame, written as it arrives (immediate mode: no frames wait
    /// in the capture ring's block timeout when tcpdump is stopped).
    fn capture(&self, file: &Path) -> Child {
        let mut child = self
            .ns
            .command("tcpdump")
            .args(["-i", BRIDGE, "-n", "-s", "0", "--immediate-mode", "-U", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (apt-get install tcpdump)");
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        child
    }

    /// Starts `nc -l` on b, writing to `file`, and waits until it listens.
    fn listen(&self, port: u16, file: &str) {
        self.b
            .exec(&format!(
                "nc -l -p {port} >{file} & for i in $(seq 50); do netstat -ltn | grep -q ':{port} ' && break; usleep 100000; done"
            ))
            .unwrap();
    }
}

/// Deletes a root-namespace link on drop.
struct VethGuard(String);

impl Drop for VethGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn stop(mut child: Child) {
    std::thread::sleep(Duration::from_millis(300)); // the last frames reach the file (-U)
    let _ = child.kill();
    let _ = child.wait();
}

/// A frame from a pcap file (Ethernet link type).
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], &0xa1b2_c3d4u32.to_le_bytes(), "{}: not a little-endian pcap", path.display());
    assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 1, "link type Ethernet");
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

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]); // thiszone, sigfigs
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend((i as u32).to_le_bytes()); // timestamps: the frame index, for reproducibility
        out.extend(0u32.to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    std::fs::write(path, out).unwrap();
}

/// The IPv4 packet of an Ethernet frame (no VLAN tags on this bridge).
fn ipv4(frame: &[u8]) -> Option<&[u8]> {
    (frame.len() >= 34 && frame[12..14] == [0x08, 0x00]).then(|| &frame[14..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Esp {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    spi: u32,
    seq: u32,
}

/// What the capture holds: ESP frames, and IPv4 packets that are not ESP.
fn classify(frames: &[Vec<u8>]) -> (Vec<Esp>, Vec<(Ipv4Addr, Ipv4Addr, u8)>) {
    let (mut esp, mut other) = (Vec::new(), Vec::new());
    for f in frames {
        let Some(ip) = ipv4(f) else { continue };
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        if ip[9] == 50 {
            let h = &ip[ihl..ihl + 8];
            let spi = u32::from_be_bytes(h[..4].try_into().unwrap());
            let seq = u32::from_be_bytes(h[4..8].try_into().unwrap());
            esp.push(Esp { src, dst, spi, seq });
        } else {
            other.push((src, dst, ip[9]));
        }
    }
    (esp, other)
}

fn sha256(vm: &PeerVm, file: &str) -> String {
    let out = vm.exec(&format!("sha256sum {file}")).unwrap();
    out.split_whitespace().next().unwrap().to_string()
}

/// One tunnel, checked end to end; returns the capture.
fn check_tunnel(p: &Pair, key_len: usize) -> Vec<Vec<u8>> {
    let spec = p.tunnel(key_len);
    let dir = std::env::temp_dir().join(format!("nflet-xfrm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join(format!("gcm{}.pcap", key_len * 8));
    let tcpdump = p.capture(&pcap);

    // Ping across the tunnel, inner address to inner address.
    let out =
        p.a.exec_timeout(&format!("ping -c 3 -W 10 -I {INNER_A} {INNER_B}"), Duration::from_secs(40))
            .unwrap();
    assert!(out.contains("3 packets transmitted, 3 packets received"), "ping: {out}");

    // TCP, 256 KiB of random bytes, a -> b.
    p.a.exec("dd if=/dev/urandom of=/tmp/tx bs=1024 count=256 2>/dev/null").unwrap();
    p.listen(5000, "/tmp/rx");
    p.a.exec_timeout(&format!("nc {INNER_B} 5000 </tmp/tx"), Duration::from_secs(60)).unwrap();
    p.b.exec_timeout("wait", Duration::from_secs(30)).unwrap();
    assert_eq!(p.b.exec("wc -c </tmp/rx").unwrap().trim(), "262144");
    assert_eq!(sha256(&p.a, "/tmp/tx"), sha256(&p.b, "/tmp/rx"), "TCP through the tunnel");

    std::thread::sleep(Duration::from_millis(500)); // the last ACKs cross before counting
    let ab_sent = p.a.sa_counters(SPI_AB).unwrap();
    let ab_recv = p.b.sa_counters(SPI_AB).unwrap();
    let ba_sent = p.b.sa_counters(SPI_BA).unwrap();
    let ba_recv = p.a.sa_counters(SPI_BA).unwrap();
    stop(tcpdump);

    let frames = read_pcap(&pcap);
    let (esp, other) = classify(&frames);
    // Every IPv4 packet on the wire is ESP between the tunnel endpoints; nothing inner leaks.
    assert!(other.is_empty(), "non-ESP IPv4 on the bridge: {other:?}");
    let count = |spi: u32, src: Ipv4Addr, dst: Ipv4Addr| {
        let of_spi: Vec<&Esp> = esp.iter().filter(|e| e.spi == spi).collect();
        assert!(of_spi.iter().all(|e| e.src == src && e.dst == dst), "SPI 0x{spi:x} between wrong addresses");
        // RFC 4303 §3.3.3: sequence numbers start at 1 and increase by one per packet.
        let seqs: Vec<u32> = of_spi.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u32).collect::<Vec<_>>(), "SPI 0x{spi:x} sequence numbers");
        of_spi.len() as u64
    };
    let (n_ab, n_ba) = (count(SPI_AB, OUTER_A, OUTER_B), count(SPI_BA, OUTER_B, OUTER_A));
    assert_eq!(n_ab + n_ba, esp.len() as u64, "ESP with an unknown SPI");
    // 3 echo requests + 256 KiB at most 1448 bytes a segment + SYN/FIN.
    assert!(n_ab >= 3 + 262_144 / 1448 + 2, "a -> b ESP frames: {n_ab}");
    assert!(n_ba >= 3 + 2, "b -> a ESP frames: {n_ba}");
    assert_eq!((ab_sent.packets, ab_recv.packets), (n_ab, n_ab), "SA a->b counters vs the capture");
    assert_eq!((ba_sent.packets, ba_recv.packets), (n_ba, n_ba), "SA b->a counters vs the capture");
    assert!(ab_sent.bytes > 262_144 && ab_sent.bytes == ab_recv.bytes, "{ab_sent:?} {ab_recv:?}");
    assert_eq!(spec.out_sa.key.len(), key_len);
    frames
}

#[test]
fn esp_tunnel_between_two_linux_peers_gcm128_and_gcm256() {
    let p = pair("t");
    // The console protocol: output, a failing status, a timeout that shows the console.
    assert_eq!(p.a.exec("echo hello; echo world >&2").unwrap(), "hello\nworld\n");
    match p.a.exec("false") {
        Err(PeerError::Failed { status: 1, .. }) => {}
        other => panic!("`false` gave {other:?}"),
    }
    match p.b.exec_timeout("sleep 2", Duration::from_millis(300)) {
        Err(e @ PeerError::Timeout { .. }) => {
            let text = e.to_string();
            assert!(text.contains("`sleep 2` on peer-b") && text.contains("console so far"), "{text}");
        }
        other => panic!("a timeout was expected: {other:?}"),
    }
    assert_eq!(p.b.exec("echo after").unwrap(), "after\n", "the console resynchronises");
    // Where a later test plugs an nflet port: a veth into the same bridge.
    let outside = format!("nxp{}", std::process::id() % 100_000);
    p.ns.plug_veth(BRIDGE, &outside, "nfport0").unwrap();
    let veth = VethGuard(outside.clone());
    let link = String::from_utf8(
        std::process::Command::new("ip")
            .args(["-n", &p.ns.name, "link", "show", "nfport0"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(link.contains("master br0") && link.contains("UP"), "{link}");
    drop(veth);
    for key_len in [16, 32] {
        let start = Instant::now();
        check_tunnel(&p, key_len);
        eprintln!("AES-GCM-{}: checked in {:.1?}", key_len * 8, start.elapsed());
    }
}

#[test]
fn missing_peer_images_name_the_build_command() {
    let ns = PeerNetns::new(&format!("nflxpm{}", std::process::id() % 100_000)).unwrap();
    let mut cfg = PeerConfig::new("peer-m");
    cfg.initrd = "/nonexistent/peer-initramfs.cpio.gz".into();
    let e = PeerVm::boot(&ns, &cfg).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("/nonexistent/peer-initramfs.cpio.gz") && text.contains(BUILD_COMMAND), "{text}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors/esp")
}

/// Regenerates tests/vectors/esp/: for each key size, the ESP frames of two pings (echo
/// requests a -> b, replies b -> a) as Linux sent them, and their SAs.
#[test]
#[ignore = "regenerates tests/vectors/esp (boots two QEMU guests)"]
fn write_esp_vectors() {
    let p = pair("v");
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = std::env::temp_dir().join(format!("nflet-xfrm-v{}.pcap", std::process::id()));
    for key_len in [16usize, 32] {
        let spec = p.tunnel(key_len);
        let tcpdump = p.capture(&tmp);
        let out = p
            .a
            .exec_timeout(&format!("ping -c 2 -s 56 -W 10 -I {INNER_A} {INNER_B}"), Duration::from_secs(40));
        assert!(out.unwrap().contains("2 packets received"));
        std::thread::sleep(Duration::from_millis(300));
        stop(tcpdump);
        let esp_frames: Vec<Vec<u8>> =
            read_pcap(&tmp).into_iter().filter(|f| ipv4(f).is_some_and(|ip| ip[9] == 50)).collect();
        assert_eq!(esp_frames.len(), 4, "2 requests + 2 replies");
        let name = format!("linux-gcm{}", key_len * 8);
        write_pcap(&dir.join(format!("{name}.pcap")), &esp_frames);

        let (esp, _) = classify(&esp_frames);
        let sa_json = |sa: &Sa, src: Ipv4Addr, dst: Ipv4Addr, isrc: Ipv4Addr, idst: Ipv4Addr, d: &str| {
            serde_json::json!({
                "direction": d, "spi": sa.spi, "key": hex(&sa.key), "salt": hex(&sa.salt),
                "outer_src": src.to_string(), "outer_dst": dst.to_string(),
                "inner_src": isrc.to_string(), "inner_dst": idst.to_string(),
            })
        };
        let frames: Vec<serde_json::Value> = esp
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let req = e.spi == SPI_AB;
                serde_json::json!({
                    "index": i, "spi": e.spi, "seq": e.seq,
                    "direction": if req { "a->b" } else { "b->a" },
                    "inner": if req { "ICMP echo request" } else { "ICMP echo reply" },
                    "inner_src": if req { INNER_A } else { INNER_B }.to_string(),
                    "inner_dst": if req { INNER_B } else { INNER_A }.to_string(),
                    "inner_len": 20 + 8 + 56,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "description": "ESP frames (Ethernet) sent by Linux xfrm (Debian kernel 6.1), tunnel mode, \
                            rfc4106(gcm(aes)), 16-byte ICV, 8-byte IV; the inner packets are IPv4 ICMP \
                            echo with busybox ping's 56-byte payload",
            "generated_by": "cargo test -p nflet-tests --all-features --test xfrm_peer -- --ignored write_esp_vectors",
            "pcap": format!("{name}.pcap"),
            "aead": "rfc4106(gcm(aes))", "key_bits": key_len * 8, "icv_len": 16, "mode": "tunnel",
            "sas": [
                sa_json(&spec.out_sa, OUTER_A, OUTER_B, INNER_A, INNER_B, "a->b"),
                sa_json(&spec.in_sa, OUTER_B, OUTER_A, INNER_B, INNER_A, "b->a"),
            ],
            "frames": frames,
        });
        std::fs::write(dir.join(format!("{name}.json")), serde_json::to_string_pretty(&doc).unwrap() + "\n")
            .unwrap();
        eprintln!("wrote {}/{name}.pcap and .json", dir.display());
    }
    let _ = std::fs::remove_file(&tmp);
}

/// Times TCP a -> b through the tunnel (and without it, for reference) inside the guests.
#[test]
#[ignore = "benchmark (BENCHMARKS.md): boots two QEMU guests, takes about a minute"]
fn tunnel_throughput() {
    let p = pair("b");
    let mib = 16;
    let run = |dst: Ipv4Addr, label: &str| {
        p.listen(5001, "/dev/null");
        let start = Instant::now();
        p.a.exec_timeout(
            &format!("dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc {dst} 5001", mib * 16),
            Duration::from_secs(300),
        )
        .unwrap();
        let secs = start.elapsed().as_secs_f64();
        p.b.exec_timeout("wait", Duration::from_secs(30)).unwrap();
        println!("{label}: {mib} MiB in {secs:.2} s = {:.1} Mbit/s", (mib * 8) as f64 / secs * 1.048_576);
    };
    p.tunnel(16);
    run(OUTER_B, "plain TCP (no tunnel)");
    run(INNER_B, "ESP AES-GCM-128");
    p.tunnel(32);
    run(INNER_B, "ESP AES-GCM-256");
}
