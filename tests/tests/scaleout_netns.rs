//! Scale-out end to end: a director (`nflet director`) on two af_packet ports between two
//! Linux network namespaces, and worker processes it launches itself, running a NAT and an
//! IDS. Real TCP connections from host A to host B cross the NAT while the director moves
//! their flowlets between workers, launches workers as the load ramps up and retires them
//! when it stops.
//!
//! ```text
//!  [ns a: 10.77.0.1] ── a ─ director ─ b ── [ns b: 10.77.0.2]
//!                            │ UDP 127.0.0.1 (VXLAN + state messages)
//!                     worker0 worker1 worker2   (nat → ids)
//! ```
//!
//! Host B reaches the NAT's public address 10.77.0.100 through a static neighbour entry
//! (host A's MAC); host A has a static entry for B, so only the test's IPv4 crosses.

use std::process::Child;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::ChainId;
use nflet_scale::units::{LogicalClock, WorkerId};
use nflet_scale::wire::{deployment_fingerprint, Kind, Sealer};
use nflet_tests::scaleout::{
    addresses, deployment, director_summary, static_neighbours, value, worker_summaries, Director, PUBLIC,
};
use nflet_tests::{spawn_peer_in, TwoHosts};

fn config(t: &TwoHosts, base: u16, capacity_mbps: u32, extra: &str) -> String {
    let ids = r#"
[[nf]]
name = "ids"
kind = "ids"
rules = ['''
alert tcp any any -> any any (msg:"split marker"; content:"NFLET-SPLIT-MARKER"; sid:9001;)''']
"#;
    let scale = format!(
        r#"director = "127.0.0.1:{base}"
workers = [{workers}]
key = "scale-out test key, not a secret"
initial_workers = 1
warm_pool = 1
capacity_mbps = {capacity_mbps}
retire_idle_ms = 300
launch_utilisation = 0.5
{extra}"#,
        workers = addresses(base + 1, 3),
    );
    format!("[appliance]\nidle_sleep_us = 20\n{}", deployment(t, ids, &["nat", "ids"], &scale))
}

#[test]
fn tcp_through_a_scaled_out_nat_survives_moves_launches_and_retirement() {
    scale_out("so", 40_000, "");
}

/// The same over a fabric where every instance loses 1 %, duplicates 1 % and reorders 5 % of
/// the datagrams it sends (data and state messages): the state still converges — the same
/// byte-exact transfers, one NAT mapping per connection, each split signature seen once.
#[test]
fn the_same_over_a_lossy_duplicating_reordering_fabric() {
    scale_out("si", 44_000, "impair_loss = 0.01\nimpair_duplicate = 0.01\nimpair_reorder = 0.05");
}

/// The same with draining (`drain_utilisation`): as the load falls, the highest worker stops
/// taking flowlets and retires as soon as its running ones end, instead of after
/// `retire_idle_ms` of silence; every check above still holds, and a worker did drain.
#[test]
fn the_same_with_workers_drained_while_their_flows_run() {
    scale_out("sd", 52_000, "drain_utilisation = 0.4");
}

fn scale_out(tag: &str, base: u16, extra: &str) {
    let t = TwoHosts::new(tag);
    static_neighbours(&t, PUBLIC);
    let base = base + u16::try_from(std::process::id() % 400).unwrap() * 10;
    let path = std::env::temp_dir().join(format!("nflet-scaleout-{tag}-{}.toml", std::process::id()));
    let text = config(&t, base, 40, extra);
    std::fs::write(&path, &text).unwrap();
    let director = Director::start(&path);
    sleep(Duration::from_millis(1500));
    attack(&text, base + 1);

    // Four connections, ramping: two start at 2 MB/s each, two more join at 6 MB/s each.
    const CONNS: usize = 4;
    const MARKERS: usize = 12;
    const BYTES: u64 = 6_000_000;
    let servers: Vec<Child> = (0..CONNS)
        .map(|i| spawn_peer_in(&t.ns_b, &["tcp-serve", &(9000 + i).to_string(), "show-peer"]))
        .collect();
    sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut senders = Vec::new();
    for i in 0..CONNS {
        if i == 2 {
            sleep(Duration::from_millis(1500));
        }
        let rate = if i < 2 { "2000000" } else { "6000000" };
        senders.push(spawn_peer_in(
            &t.ns_a,
            &["tcp-send", t.addr_b, &(9000 + i).to_string(), &BYTES.to_string(), rate],
        ));
    }
    // Meanwhile, short connections whose payload carries the IDS signature in two segments
    // 20 ms apart: the second half starts a new flowlet, which may run on another worker.
    // The second half leaves once the server has the first: the IDS matches segments in the
    // order it sees them (no reassembly), so a first half lost on the way and resent after
    // the second would hide the signature from any IDS, scaled out or not.
    let markers: Vec<(Child, Child)> = (0..MARKERS)
        .map(|i| {
            let port = (9100 + i).to_string();
            let server = spawn_peer_in(&t.ns_b, &["tcp-serve", &port, "show-peer", "ack"]);
            sleep(Duration::from_millis(100));
            let client =
                spawn_peer_in(&t.ns_a, &["tcp-split", t.addr_b, &port, "20", "NFLET-SPLIT", "-MARKER"]);
            (server, client)
        })
        .collect();
    // Outcomes are checked once the director's summary is out (it tells what went wrong).
    let marker_outcomes: Vec<(bool, std::process::Output)> = markers
        .into_iter()
        .map(|(server, mut client)| (client.wait().unwrap().success(), server.wait_with_output().unwrap()))
        .collect();
    let sender_outcomes: Vec<std::process::Output> =
        senders.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let got: Vec<String> = servers
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned())
        .collect();
    let elapsed = started.elapsed();
    // Idle: the extra workers retire.
    sleep(Duration::from_millis(2500));
    let (out, err) = director.stop();
    let _ = std::fs::remove_file(&path);

    let summary = director_summary(&out, &err);
    let workers = worker_summaries(&out);
    eprintln!("transfers took {elapsed:?}\n{summary:#}\n{workers:#?}");
    for (client_ok, server) in &marker_outcomes {
        assert!(client_ok, "a marker connection's client failed");
        assert!(
            String::from_utf8_lossy(&server.stdout).contains("bytes=18"),
            "marker connection: {server:?}"
        );
    }
    let sent: Vec<String> = sender_outcomes
        .iter()
        .map(|o| {
            assert!(o.status.success(), "tcp-send: {}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).into_owned()
        })
        .collect();
    for (s, g) in sent.iter().zip(&got) {
        assert_eq!(value(g, "bytes"), BYTES.to_string(), "server saw:\n{g}\ndirector log:\n{err}");
        assert_eq!(value(s, "hash"), value(g, "hash"), "stream corrupted");
        let from = value(g, "from");
        assert!(from.starts_with(&format!("{PUBLIC}:")), "server saw the connection from {from}");
    }
    // The figures BENCHMARKS.md quotes (one line, for the record).
    let state_bytes: u64 =
        workers.iter().map(|w| w["counters"]["state_bytes_sent"].as_u64().unwrap_or(0)).sum();
    let lat: Vec<String> = workers
        .iter()
        .map(|w| {
            format!(
                "w{} pull p50 {} p99 {} us (n={}), push p50 {} us",
                w["worker"],
                w["latency"]["pull"]["p50_us"],
                w["latency"]["pull"]["p99_us"],
                w["latency"]["pull"]["count"],
                w["latency"]["push"]["p50_us"]
            )
        })
        .collect();
    let ev: Vec<String> = summary["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["what"] == "launched" || e["what"] == "activated")
        .map(|e| format!("{} w{} {:.0} us", e["what"], e["worker"], e["latency_us"].as_f64().unwrap_or(0.0)))
        .collect();
    eprintln!(
        "measured: {} packets in {:.2} s; state traffic {} B ({:.0} B/s); {}; {}",
        summary["director"]["received"],
        elapsed.as_secs_f64(),
        state_bytes,
        state_bytes as f64 / elapsed.as_secs_f64(),
        lat.join("; "),
        ev.join(", ")
    );
    let d = &summary["decisions"];
    let events = summary["events"].as_array().unwrap();
    let count = |what: &str| events.iter().filter(|e| e["what"] == what).count();
    assert!(count("activated") + count("launched") >= 3, "launches/activations: {events:?}");
    assert!(count("activated") >= 1, "the warm worker was activated: {events:?}");
    assert!(count("retired") >= 1, "no worker retired: {events:?}");
    let moved = d["state_pull"].as_u64().unwrap() + d["state_replica"].as_u64().unwrap();
    assert!(moved >= 1, "no flowlet moved between workers: {d}");
    let sum = |k: &str| workers.iter().map(|w| w["counters"][k].as_u64().unwrap_or(0)).sum::<u64>();
    assert!(sum("pulls_answered") + sum("pushes_installed") >= 1, "no state moved: {workers:#?}");
    assert_eq!(sum("imports_failed"), 0);
    // Packets held past the hold bound are dropped and counted (TCP resends them); say how many.
    eprintln!("held {} packets during pulls, {} over the bound", sum("held"), sum("hold_overflow"));
    assert!(summary["director"]["aliases_learned"].as_u64().unwrap() >= CONNS as u64);
    // One NAT mapping per inside endpoint over the whole deployment: every move carried the
    // mapping (and its public port) along, and no reply ever missed it. (Linux may give two
    // connections to different servers the same source port; endpoint-independent mapping
    // then gives them one mapping, so the count is of the public ports the servers saw.)
    let public_ports: std::collections::BTreeSet<String> = got
        .iter()
        .map(String::as_str)
        .chain(marker_outcomes.iter().map(|(_, o)| std::str::from_utf8(&o.stdout).unwrap_or_default()))
        .map(|out| value(out, "from"))
        .collect();
    let nat = |k: &str| workers.iter().map(|w| w["nf"]["nat"][k].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!(nat("new_mappings"), public_ports.len() as u64, "{public_ports:?}\n{workers:#?}");
    // Every split signature was seen exactly once, wherever its halves ran.
    let alerts: u64 = workers.iter().map(|w| w["nf"]["ids"]["alerts"].as_u64().unwrap_or(0)).sum();
    assert_eq!(alerts, MARKERS as u64, "{workers:#?}");
    assert_eq!(nat("no_mapping"), 0);
    // The forged, replayed and malformed datagrams of `attack` were refused and counted.
    let w0 = workers.iter().find(|w| w["worker"] == 0).expect("worker 0 summary");
    assert_eq!(w0["counters"]["rejected"]["msg_forged"], 1, "{w0:#}");
    if extra.contains("drain_utilisation") {
        assert!(d["drains"].as_u64().unwrap() >= 1, "no worker drained: {d}");
    }
    let impaired = extra.contains("impair");
    if impaired {
        // Duplicated messages are refused as replays too.
        assert!(w0["counters"]["rejected"]["msg_replayed"].as_u64().unwrap() >= 1, "{w0:#}");
        let sum_impaired =
            |k: &str| workers.iter().map(|w| w["counters"]["impaired"][k].as_u64().unwrap_or(0)).sum::<u64>();
        let (d, u, r) = (sum_impaired("dropped"), sum_impaired("duplicated"), sum_impaired("reordered"));
        eprintln!("impaired by the workers: {d} dropped, {u} duplicated, {r} reordered");
        assert!(d > 0 && u > 0 && r > 0);
    } else {
        assert_eq!(w0["counters"]["rejected"]["msg_replayed"], 1, "{w0:#}");
    }
    assert_eq!(w0["counters"]["rejected"]["msg_other_deployment"], 1, "{w0:#}");
    assert_eq!(w0["counters"]["bad_headers"], 1, "{w0:#}");
}

/// Sends worker 0 a message sealed with another key, one sealed with the right key twice, one
/// from another deployment and a datagram that is neither a message nor a steered frame.
fn attack(config: &str, worker0: u16) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = ("127.0.0.1", worker0);
    let deployment = deployment_fingerprint(config);
    let mut msg = Vec::new();
    let seal = |key: &[u8], deployment: u64, msg: &mut Vec<u8>| {
        let mut s = Sealer::new(key, WorkerId(99), deployment, 1);
        s.seal(Kind::Hello, ChainId(0), &FlowKey::default(), LogicalClock::ZERO, &[], msg);
    };
    seal(b"not the deployment's key at all", deployment, &mut msg);
    sock.send_to(&msg, to).unwrap();
    seal(b"scale-out test key, not a secret", deployment, &mut msg);
    sock.send_to(&msg, to).unwrap();
    sock.send_to(&msg, to).unwrap();
    let mut other = Sealer::new(b"scale-out test key, not a secret", WorkerId(98), deployment ^ 1, 1);
    other.seal(Kind::Hello, ChainId(0), &FlowKey::default(), LogicalClock::ZERO, &[], &mut msg);
    sock.send_to(&msg, to).unwrap();
    sock.send_to(b"\x0c not a frame", to).unwrap();
}
