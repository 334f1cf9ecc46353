//! Output equivalence: the same capture through one nflet (`nflet process`) and through a
//! scaled-out deployment (director + workers with output loggers, reading and writing
//! captures) while flowlets move, a warm worker is activated, a worker is killed and workers
//! retire. What comes out must be the same frames — firewall verdicts, NAT translations (up to
//! the public port each deployment picked), and IDS alerts — except what the fault-tolerance
//! guarantee allows: frames lost with the killed worker, at most what arrives in two failure
//! timeouts.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use nflet_tests::scaleout::{addresses, director_summary, worker_summaries, Director};
use nflet_tests::{binary, read_pcap, write_pcap};

const FLOWS: u16 = 120;
const PER_FLOW: u16 = 12;
const RATE_PPS: u64 = 1000;
/// Longer than the default 100 ms: a debug build's workers starting on a busy 2-core machine
/// can go quiet for that long, and a falsely suspected worker is not what this test is about
/// (`scaleout_failover` measures detection).
const FAILURE_TIMEOUT_MS: u64 = 300;

/// Flow `i`'s packet `seq`: UDP from an inside host to one of three servers; every tenth
/// flow to port 23 (the firewall drops it); every fifteenth carries the IDS signature split
/// over packets 5 and 6.
fn frame(i: u16, seq: u16) -> Vec<u8> {
    let src = [10, 0, 0, u8::try_from(2 + i % 50).unwrap()];
    let dst = [198, 51, 100, u8::try_from(10 + i % 3).unwrap()];
    let dport = if i % 10 == 7 { 23 } else { 53 };
    let payload = match (i % 15 == 4, seq) {
        (true, 5) => format!("m{i:03} NFLET-SPLIT"),
        (true, 6) => format!("-MARKER m{i:03}"),
        _ => format!("flow={i} seq={seq} ........"),
    };
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .udp(20_000 + i, dport);
    let mut v = Vec::new();
    b.write(&mut v, payload.as_bytes()).unwrap();
    v
}

/// A frame's (flow, seq).
type Id = (u16, u16);
/// A public (address, port).
type Public = ([u8; 4], u16);

/// (flow, seq) of an output frame, its public source, and the frame with the public port
/// and the UDP checksum zeroed (the only bytes two NATs may choose differently).
fn identify(f: &[u8], sent: &BTreeMap<Vec<u8>, Id>) -> (Id, Public, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(f).expect("an Ethernet frame");
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("not IPv4") };
    let Some(TransportSlice::Udp(udp)) = p.transport else { panic!("not UDP") };
    let public = (ip.header().source(), udp.source_port());
    let mut norm = f.to_vec();
    norm[34..36].fill(0);
    norm[40..42].fill(0);
    let id = *sent.get(&norm).unwrap_or_else(|| panic!("a frame that was never sent: {f:?}"));
    (id, public, norm)
}

#[test]
fn a_scaled_out_deployment_outputs_what_one_instance_does() {
    let dir = std::env::temp_dir().join(format!("nflet-equiv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut frames = Vec::new();
    for seq in 0..PER_FLOW {
        for i in 0..FLOWS {
            frames.push(frame(i, seq));
        }
    }
    let trace = dir.join("trace.pcap");
    write_pcap(&trace, &frames);
    // What each frame looks like translated, up to the public port: the inside source
    // replaced by the public address (checksums aside), the TTL as it was (no router here).
    let mut sent = BTreeMap::new();
    for seq in 0..PER_FLOW {
        for i in 0..FLOWS {
            let mut f = frame(i, seq);
            f[26..30].copy_from_slice(&[203, 0, 113, 7]);
            f[24..26].fill(0);
            let sum = ip_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&sum.to_be_bytes());
            f[34..36].fill(0);
            f[40..42].fill(0);
            sent.insert(f, (i, seq));
        }
    }

    let base = 36_000 + u16::try_from(std::process::id() % 300).unwrap() * 8;
    let out = dir.join("out.pcap");
    let config = format!(
        r#"
[[port]]
name = "inside"
kind = "pcap"
read = "{trace}"
rate_pps = {RATE_PPS}

[[port]]
name = "outside"
kind = "pcap"
write = "{out}"

[[nf]]
name = "fw"
kind = "firewall"
default = "allow"

  [[nf.rule]]
  action = "deny"
  proto = "udp"
  dport = 23

[[nf]]
name = "nat"
kind = "nat"
inside = "inside"
public = "203.0.113.7"

[[nf]]
name = "ids"
kind = "ids"
rules = ['alert udp any any -> any any (msg:"split marker"; content:"NFLET-SPLIT-MARKER"; sid:9002;)']

[[chain]]
name = "out"
ingress = ["inside"]
steps = ["fw", "nat", "ids"]
output = "outside"

[scale]
director = "127.0.0.1:{base}"
workers = [{workers}]
loggers = [{loggers}]
key = "equivalence test key, not secret"
initial_workers = 2
warm_pool = 1
capacity_mbps = 0.2
launch_utilisation = 0.5
retire_idle_ms = 300
failure_timeout_ms = {FAILURE_TIMEOUT_MS}
"#,
        trace = trace.display(),
        out = out.display(),
        workers = addresses(base + 1, 3),
        loggers = addresses(base + 4, 3),
    );
    let path = dir.join("deployment.toml");
    std::fs::write(&path, &config).unwrap();

    // One instance.
    let reference = dir.join("ref.pcap");
    let one = Command::new(binary("nflet"))
        .args(["process", "-c"])
        .arg(&path)
        .arg("--in")
        .arg(&trace)
        .arg("--out")
        .arg(&reference)
        .args(["--ingress", "inside"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let one_alerts = String::from_utf8_lossy(&one.stderr).matches("[1:9002:").count();

    // The deployment, with worker 1 killed a third of the way through.
    let director = Director::start(&path);
    let trace_time = Duration::from_millis(u64::from(FLOWS) * u64::from(PER_FLOW) * 1000 / RATE_PPS);
    sleep(trace_time / 3);
    let pattern = format!("worker --config {} --id 1", path.display());
    assert!(Command::new("pkill").args(["-KILL", "-f", &pattern]).status().unwrap().success());
    let started = Instant::now();
    while started.elapsed() < trace_time + Duration::from_secs(2) {
        sleep(Duration::from_millis(100));
    }
    let (stdout, stderr) = director.stop();
    let summary = director_summary(&stdout, &stderr);
    let scaled_alerts = stderr.matches("[1:9002:").count();

    let ref_frames = read_pcap(&reference);
    let got_frames = read_pcap(&out);
    let _ = std::fs::remove_dir_all(&dir);

    // One instance: every frame not to port 23, translated once.
    let expected = usize::from(FLOWS - FLOWS / 10) * usize::from(PER_FLOW);
    assert_eq!(ref_frames.len(), expected);
    let mut ref_ids = BTreeSet::new();
    for f in &ref_frames {
        let (id, _, _) = identify(f, &sent);
        assert!(ref_ids.insert(id), "duplicate {id:?}");
    }
    let markers = (0..FLOWS).filter(|i| i % 15 == 4).count();
    assert_eq!(one_alerts, markers);

    // The deployment: the same frames, each once, no frame the reference lacks, and each
    // flow behind one public endpoint from first to last packet, across moves and the kill.
    let mut got = BTreeSet::new();
    let mut publics: BTreeMap<u16, BTreeSet<([u8; 4], u16)>> = BTreeMap::new();
    for f in &got_frames {
        let (id, public, _) = identify(f, &sent);
        assert!(got.insert(id), "duplicate {id:?}");
        assert!(ref_ids.contains(&id), "{id:?} was dropped by one instance");
        publics.entry(id.0).or_default().insert(public);
    }
    for (flow, p) in &publics {
        assert_eq!(
            p.len(),
            1,
            "flow {flow} left through {p:?}\ndirector: {}\n{}\nworkers: {:#?}",
            summary["decisions"],
            summary["director"],
            worker_summaries(&stdout).iter().map(|w| (&w["worker"], &w["counters"])).collect::<Vec<_>>()
        );
    }
    let lost = ref_ids.len() - got.len();
    let window = 2 * FAILURE_TIMEOUT_MS * RATE_PPS / 1000;
    eprintln!(
        "equivalence: {} of {} frames out ({lost} lost with the killed worker; bound {window}); alerts {scaled_alerts} vs {one_alerts}; decisions {}",
        got.len(),
        ref_ids.len(),
        summary["decisions"]
    );
    assert!(lost as u64 <= window, "{lost} frames lost");
    // Alerts: every marker flow whose two halves came out was alerted; none twice.
    let both = (0..FLOWS).filter(|i| i % 15 == 4 && got.contains(&(*i, 5)) && got.contains(&(*i, 6))).count();
    assert!((both..=markers).contains(&scaled_alerts), "{scaled_alerts} alerts, {both} markers delivered");
    // The run had the events it is meant to have.
    let events = summary["events"].as_array().unwrap();
    let count = |what: &str| events.iter().filter(|e| e["what"] == what).count();
    assert_eq!(count("failed"), 1, "{events:?}");
    assert!(count("activated") + count("launched") >= 3, "{events:?}");
    let moved = summary["decisions"]["state_pull"].as_u64().unwrap()
        + summary["decisions"]["state_replica"].as_u64().unwrap();
    // The killed worker's flows came back from its logger: on their next flowlet
    // (`state_recover`), or through pulls the director re-aimed at the logger.
    let recovered = summary["decisions"]["state_recover"].as_u64().unwrap()
        + summary["director"]["pulls_redirected"].as_u64().unwrap();
    assert!(moved > 0 && recovered > 0, "{}\n{}", summary["decisions"], summary["director"]);
}

fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 =
        h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
