//! Usage billing on a live appliance: two cores between two Linux network namespaces, real UDP
//! traffic, then idle time. The usage records must add up, across cores and intervals, to the
//! counters the endpoint reports, and the idle intervals must bill nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nflet_tests::{sh, Nflet, TwoHosts};

fn config(h: &TwoHosts, usage_dir: &Path, listen: u16) -> String {
    format!(
        r#"
[appliance]
cores = 2

{ports}
[[nf]]
name = "mon"
kind = "monitor"

[[chain]]
name = "a_to_b"
tenant = "acme"
ingress = ["a"]
steps = ["mon"]
output = "b"

[[chain]]
name = "b_to_a"
tenant = "acme"
ingress = ["b"]
steps = ["mon"]
output = "a"

[management]
listen = {listen}

[billing]
dir = "{dir}"
interval_s = 1
"#,
        ports = h.af_packet_ports(),
        dir = usage_dir.display()
    )
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET /metrics HTTP/1.1\r\nHost: nflet\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text
}

fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{metrics}"))
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64()
}

#[derive(Debug, Default, Clone, Copy)]
struct Line {
    start: f64,
    end: f64,
    core: u64,
    packets: u64,
    bytes: u64,
    cpu_ns: u64,
}

fn records(dir: &Path) -> Vec<(String, Vec<(String, Line)>)> {
    let mut files: Vec<_> =
        std::fs::read_dir(dir).expect("usage dir").map(|e| e.expect("entry").path()).collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let name = f.file_name().expect("name").to_string_lossy().into_owned();
            assert!(name.starts_with("usage-") && name.ends_with(".jsonl"), "unexpected file {name}");
            let lines = std::fs::read_to_string(&f)
                .expect("read usage file")
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                    assert_eq!(v["tenant"], "acme", "{l}");
                    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {l}"));
                    let chain = v["chain"].as_str().expect("chain").to_string();
                    let line = Line {
                        start: v["start"].as_f64().expect("start"),
                        end: v["end"].as_f64().expect("end"),
                        core: n("core"),
                        packets: n("packets"),
                        bytes: n("bytes"),
                        cpu_ns: n("cpu_ns"),
                    };
                    (chain, line)
                })
                .collect();
            (name, lines)
        })
        .collect()
}

#[test]
fn usage_adds_up_across_cores_and_idle_bills_nothing() {
    let h = TwoHosts::new("bil");
    // No IPv6 on the wire: router and neighbour solicitations would be (rightly) billed.
    for (ns, dev) in
        [(Some(&h.ns_a), "a0"), (Some(&h.ns_b), "b0"), (None, h.port_a.as_str()), (None, h.port_b.as_str())]
    {
        let key = format!("net.ipv6.conf.{dev}.disable_ipv6=1");
        match ns {
            Some(ns) => sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", &key]),
            None => sh(&["sysctl", "-qw", &key]),
        };
    }
    let dir = std::env::temp_dir().join(format!("nflet-usage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listen =
        std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    let nflet = Nflet::start(&config(&h, &dir, listen), "bil");
    sleep(Duration::from_millis(700));

    // Sixteen UDP flows (a new source port each), 20 request/reply pairs each: with the
    // kernel's flow fanout over two cores, both cores carry some of them.
    let mut echo = h.spawn_peer(&h.ns_b, &["udp-echo", "5002", "320"]);
    sleep(Duration::from_millis(200));
    for _ in 0..16 {
        let out = h.peer(&h.ns_a, &["udp-ping", h.addr_b, "5002", "20", "1000"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "replies=20");
    }
    let _ = echo.wait();
    let traffic_end = now_s();

    // Idle: at least two whole usage intervals without a packet.
    sleep(Duration::from_millis(3500));
    let m = metrics(listen);
    // The veths are up, and the endpoint says so.
    assert_eq!(sample(&m, "nflet_port_link_up{port=\"a\"}"), 1.0);
    assert_eq!(sample(&m, "nflet_port_link_up{port=\"b\"}"), 1.0);
    let (out, err) = nflet.stop();
    let files = records(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(files.len() >= 4, "one file per second of the run: {files:?}\n{err}");

    for chain in ["a_to_b", "b_to_a"] {
        let all: Vec<Line> =
            files.iter().flat_map(|(_, l)| l.iter()).filter(|(c, _)| c == chain).map(|(_, l)| *l).collect();
        let sum = |f: fn(&Line) -> u64| all.iter().map(f).sum::<u64>();
        let labels = format!("{{chain=\"{chain}\",tenant=\"acme\"}}");
        // The records of every interval and core add up to the endpoint's totals.
        assert_eq!(
            sum(|l| l.packets) as f64,
            sample(&m, &format!("nflet_chain_packets_total{labels}")),
            "{chain}"
        );
        assert_eq!(
            sum(|l| l.bytes) as f64,
            sample(&m, &format!("nflet_chain_bytes_total{labels}")),
            "{chain}"
        );
        let cpu = sample(&m, &format!("nflet_chain_cpu_seconds_total{labels}"));
        assert!(
            (sum(|l| l.cpu_ns) as f64 / 1e9 - cpu).abs() < 1e-6,
            "{chain}: {} ns vs {cpu} s",
            sum(|l| l.cpu_ns)
        );
        assert!(sum(|l| l.packets) >= 320, "{chain}: 320 datagrams each way, plus ARP");
        assert!(sum(|l| l.cpu_ns) > 0, "{chain}: work was done");
        for core in 0..2 {
            let on_core: u64 = all.iter().filter(|l| l.core == core).map(|l| l.packets).sum();
            assert!(on_core > 0, "{chain}: core {core} carried no flow: {all:?}");
        }
    }
    // Intervals that began after the traffic ended bill nothing on any core.
    let idle: Vec<&(String, Vec<(String, Line)>)> =
        files.iter().filter(|(_, l)| l.first().is_some_and(|(_, x)| x.start > traffic_end + 0.2)).collect();
    assert!(idle.len() >= 2, "expected two idle intervals: {files:?}");
    for (name, lines) in idle {
        for (chain, l) in lines {
            assert_eq!((l.packets, l.cpu_ns), (0, 0), "{name}: {chain} on core {} billed while idle", l.core);
        }
    }
    // Intervals are contiguous: each starts where the previous ended.
    for w in files.windows(2) {
        let (a, b) = (&w[0].1[0].1, &w[1].1[0].1);
        assert!((b.start - a.end).abs() < 1e-3, "gap between intervals: {a:?} {b:?}");
    }
    assert!(out.contains("a_to_b"), "{out}");
}
