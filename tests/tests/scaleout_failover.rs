//! Fault tolerance (SNF §6) end to end: three workers, each with an output logger; worker 0
//! is killed (SIGKILL) while TCP connections from host A to host B run through the NAT on
//! it (the packing fills workers in ID order and one has room for all of them — the
//! capacity is set far above the microsecond bursts TCP makes on veths, which a flowlet's
//! measured rate sees; no proactive replicas, so the state can only come from the logger). The director notices the silence, the flows' next packets go to the other workers,
//! which pull each flow's state from worker 0's logger, and every connection completes
//! byte-exact through its original public port.

use std::process::{Child, Command};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nflet_tests::scaleout::{director_summary, static_neighbours, value, worker_summaries, Director};
use nflet_tests::{spawn_peer_in, TwoHosts};

const PUBLIC: &str = "10.77.0.100";

#[test]
fn killing_a_worker_breaks_no_connection() {
    let t = TwoHosts::new("sf");
    static_neighbours(&t, PUBLIC);
    let base = 42_000 + u16::try_from(std::process::id() % 1_000).unwrap() * 8;
    let addrs = |first: u16| (0..3).map(|i| format!("\"127.0.0.1:{}\"", first + i)).collect::<Vec<_>>().join(", ");
    let config = format!(
        r#"
{ports}
[[nf]]
name = "nat"
kind = "nat"
inside = "a"
public = "{PUBLIC}"

[[chain]]
name = "out"
ingress = ["a"]
steps = ["nat"]
output = "b"

[[chain]]
name = "in"
ingress = ["b"]
steps = ["nat"]
output = "a"

[scale]
director = "127.0.0.1:{base}"
workers = [{workers}]
loggers = [{loggers}]
key = "fault tolerance test key, not secret"
initial_workers = 3
capacity_mbps = 100000
replicas = 0
retire_idle_ms = 600000
heartbeat_ms = 20
failure_timeout_ms = 100
"#,
        ports = t.af_packet_ports(),
        workers = addrs(base + 1),
        loggers = addrs(base + 4),
    );
    let path = std::env::temp_dir().join(format!("nflet-failover-{}.toml", std::process::id()));
    std::fs::write(&path, &config).unwrap();
    let director = Director::start(&path);
    sleep(Duration::from_millis(1500));

    const CONNS: usize = 4;
    const BYTES: u64 = 5_000_000;
    let servers: Vec<Child> = (0..CONNS)
        .map(|i| spawn_peer_in(&t.ns_b, &["tcp-serve", &(9400 + i).to_string(), "show-peer"]))
        .collect();
    sleep(Duration::from_millis(300));
    let senders: Vec<Child> = (0..CONNS)
        .map(|i| spawn_peer_in(&t.ns_a, &["tcp-send", t.addr_b, &(9400 + i).to_string(), &BYTES.to_string(), "2000000"]))
        .collect();
    sleep(Duration::from_millis(1000));
    let pattern = format!("worker --config {} --id 0", path.display());
    let killed = Command::new("pkill").args(["-KILL", "-f", &pattern]).status().unwrap();
    assert!(killed.success(), "no worker 0 process to kill");
    let killed_at = Instant::now();

    // A broken connection would leave its server waiting: give up after a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let finish = |mut c: Child| {
        while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned()
    };
    let sent: Vec<String> = senders.into_iter().map(finish).collect();
    let got: Vec<String> = servers.into_iter().map(finish).collect();
    let after_kill = killed_at.elapsed();
    let (out, err) = director.stop();
    let _ = std::fs::remove_file(&path);

    for (s, g) in sent.iter().zip(&got) {
        assert_eq!(value(g, "bytes"), BYTES.to_string(), "server:\n{g}\ndirector:\n{err}");
        assert_eq!(value(s, "hash"), value(g, "hash"), "stream corrupted");
        assert!(value(g, "from").starts_with(&format!("{PUBLIC}:")));
    }
    let summary = director_summary(&out, &err);
    let events = summary["events"].as_array().unwrap();
    let failed: Vec<&serde_json::Value> = events.iter().filter(|e| e["what"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0]["worker"], 0);
    let detection_ms = failed[0]["latency_us"].as_f64().unwrap() / 1e3;
    let workers = worker_summaries(&out);
    let loggers: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["logger"].is_u64())
        .collect();
    eprintln!("{summary:#}\n{workers:#?}\n{loggers:#?}");
    assert_eq!(workers.len(), 2, "the two survivors print their counters:\n{out}");
    let logger0 = loggers.iter().find(|l| l["logger"] == 0).expect("logger 0 summary");
    let recovered = logger0["counters"]["pulls_served"].as_u64().unwrap() - logger0["counters"]["pulls_empty"].as_u64().unwrap();
    assert!(recovered >= 1, "no flow recovered from worker 0's logger: {logger0:#}");
    assert_eq!(summary["decisions"]["failures"], 1);
    assert_eq!(summary["decisions"]["state_recover"].as_u64().unwrap(), recovered, "{summary:#}");
    let nat = |k: &str| workers.iter().map(|w| w["nf"]["nat"][k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(nat("no_mapping"), 0, "a reply found no mapping");
    let pulls: Vec<String> = workers.iter().map(|w| format!("w{} pull p50 {} p99 {} us", w["worker"], w["latency"]["pull"]["p50_us"], w["latency"]["pull"]["p99_us"])).collect();
    eprintln!(
        "measured: failure detected {detection_ms:.1} ms after the last hello; {recovered} flow(s) recovered from the logger; {}; transfers ended {:.2} s after the kill",
        pulls.join("; "),
        after_kill.as_secs_f64()
    );
}
