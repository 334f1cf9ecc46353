//! Hitless restart: nflet as a NAT gateway (see [`GatewayNet`]) with its state tables in a
//! state directory on /dev/shm is stopped (SIGTERM) in the middle of a TCP transfer and started
//! again on the same configuration; the new process re-attaches the NAT's mappings, so the
//! connection carries on through the same public port and completes byte-exact.
//!
//! Also: a second nflet on the same state directory is refused while the first runs, and a
//! restart with another table capacity starts that table cold and says so.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use nflet_tests::{field, spawn_peer_in, GatewayNet, Nflet};

const S1: usize = 0;
const H1: usize = 0;
const PUBLIC: &str = GatewayNet::GW_OUTSIDE;

fn config(g: &GatewayNet, cores: usize, state: &std::path::Path, mappings: usize) -> String {
    format!(
        r#"
[appliance]
cores = {cores}
state_dir = "{state}"

[[port]]
name = "lan"
kind = "af_packet"
iface = "{pi}"

[[port]]
name = "wan"
kind = "af_packet"
iface = "{po}"

[[nf]]
name = "nat"
kind = "nat"
inside = "lan"
public = "{public}"
mappings = {mappings}
steer_outbound = {steer}

[[nf]]
name = "gw"
kind = "gateway"

  [[nf.interface]]
  port = "lan"
  address = "{gw_in}/24"
  mac = "02:00:00:77:00:01"

  [[nf.interface]]
  port = "wan"
  address = "{public}/24"
  mac = "02:00:00:64:00:01"

  [[nf.neighbour]]
  address = "{s1}"
  mac = "{s1_mac}"

[[chain]]
name = "from_lan"
ingress = ["lan"]
steps = ["nat", "gw"]

[[chain]]
name = "from_wan"
ingress = ["wan"]
steps = ["nat", "gw"]
"#,
        state = state.display(),
        // Several cores: each inside endpoint on the core its hash names. The port's own
        // spreading may move a connection after the restart (seen here: Linux may pick a new
        // flow hash for a TCP connection on a retransmission timeout, and fanout follows it).
        steer = cores > 1,
        pi = g.port_in,
        po = g.port_out,
        public = PUBLIC,
        gw_in = GatewayNet::GW_INSIDE,
        s1 = GatewayNet::OUTSIDE_ADDRS[S1],
        s1_mac = GatewayNet::OUTSIDE_MACS[S1],
    )
}

/// A state directory on /dev/shm, removed on drop.
struct ShmDir(PathBuf);

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn next_line(r: &mut BufReader<ChildStdout>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("peer output");
    s.trim().to_string()
}

fn wait_listening(child: &mut Child) -> BufReader<ChildStdout> {
    let mut r = BufReader::new(child.stdout.take().expect("stdout"));
    assert_eq!(next_line(&mut r), "listening");
    r
}

/// Follows nflet's log (stderr) on a thread: every line, with the time it arrived.
fn follow_log(nflet: &mut Nflet) -> Receiver<(Instant, String)> {
    let err = nflet.child.as_mut().and_then(|c| c.stderr.take()).expect("nflet stderr");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (up to 10 s) for a log line containing `text`; returns when it came and every line
/// seen until then.
fn wait_log(rx: &Receiver<(Instant, String)>, text: &str, seen: &mut Vec<String>) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok((at, line)) => {
                let hit = line.contains(text);
                seen.push(line);
                if hit {
                    return at;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no log line with `{text}`; log:\n{}", seen.join("\n"));
}

#[test]
fn tcp_through_nat_survives_a_restart_on_one_core() {
    restart(1);
}

/// Two cores: the restored mapping's public port must still steer replies to its core.
#[test]
fn tcp_through_nat_survives_a_restart_on_two_cores() {
    restart(2);
}

fn restart(cores: usize) {
    let tag = format!("rs{cores}");
    let g = GatewayNet::new(&tag);
    let state = ShmDir(PathBuf::from(format!("/dev/shm/nflet-{tag}-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&state.0);
    let text = config(&g, cores, &state.0, 4096);
    let mut first = Nflet::start(&text, &tag);
    let first_log = follow_log(&mut first);
    let mut log = Vec::new();
    wait_log(&first_log, "started empty", &mut log);
    std::thread::sleep(Duration::from_millis(500));

    // 12 MB at 3 MB/s: the transfer spans the restart.
    let total = 12_000_000u64;
    let mut server = spawn_peer_in(&g.outside[S1], &["tcp-serve", "5001", "show-peer"]);
    let mut r = wait_listening(&mut server);
    let sender = spawn_peer_in(
        &g.inside[H1],
        &["tcp-send", GatewayNet::OUTSIDE_ADDRS[S1], "5001", &total.to_string(), "3000000"],
    );
    let from = next_line(&mut r);
    let public_port = from
        .strip_prefix(&format!("from={PUBLIC}:"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("the server saw `{from}`, not the public address"));
    std::thread::sleep(Duration::from_millis(1500));

    // A second instance on the same state directory is refused while the first runs.
    let mut other = Nflet::start(&text, &format!("{tag}x"));
    let out = other.child.take().expect("running").wait_with_output().expect("second nflet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("locked by another nflet"), "second nflet: {err}");

    // Restart: SIGTERM, then the same configuration again.
    let stopping = Instant::now();
    let (summary, _) = first.stop();
    let stopped = stopping.elapsed();
    let mapped = field(&summary, "nat (nat)", "new_mappings").unwrap_or(0);
    assert_eq!(mapped, 1, "{summary}");
    let starting = Instant::now();
    let mut second = Nflet::start(&text, &tag);
    let second_log = follow_log(&mut second);
    let mut log = Vec::new();
    let attached = wait_log(&second_log, "re-attached,", &mut log);
    let line = log.last().cloned().unwrap_or_default();
    // mappings, reverse, fragments on every core.
    assert!(line.contains(&format!("{} table(s) re-attached, 0 started empty", 3 * cores)), "{line}");
    let kept: usize = log
        .iter()
        .filter_map(|l| l.split("NAT kept ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(kept as u64, mapped, "every mapping of the first run is kept:\n{}", log.join("\n"));

    let sent = sender.wait_with_output().expect("sender");
    let sent = String::from_utf8_lossy(&sent.stdout).trim().to_string();
    let gap = next_line(&mut r);
    let got = next_line(&mut r);
    let _ = server.wait();
    assert!(sent.starts_with(&format!("sent={total} ")), "sender: {sent}");
    assert_eq!(got.replace("bytes=", "sent="), sent, "the server saw different bytes");
    let (summary, _) = second.stop();
    // No new mapping: the connection went on through the restored one (same public port; a
    // new port would have been a new connection to the server, which accepts only one), and
    // every reply found it.
    assert_eq!(field(&summary, "nat (nat)", "new_mappings"), Some(0), "{summary}");
    assert_eq!(field(&summary, "nat (nat)", "no_mapping"), Some(0), "{summary}");
    assert!(field(&summary, "nat (nat)", "outbound").unwrap_or(0) > 0, "{summary}");
    eprintln!(
        "restart on {cores} core(s), public port {public_port}: SIGTERM to exit {} ms, start to \
         state re-attached {} ms, SIGTERM to state re-attached {} ms; receiver's longest stall {gap}",
        stopped.as_millis(),
        attached.duration_since(starting).as_millis(),
        attached.duration_since(stopping).as_millis(),
    );

    // Another table capacity: the tables are not re-attached, and the log says why.
    let mut third = Nflet::start(&config(&g, cores, &state.0, 8192), &tag);
    let third_log = follow_log(&mut third);
    let mut log = Vec::new();
    wait_log(&third_log, "started empty", &mut log);
    let cold: Vec<&String> = log.iter().filter(|l| l.contains("cold start")).collect();
    assert!(
        cold.iter().any(|l| l.contains("nat.mappings: written by")
            && l.contains("capacity 4096")
            && l.contains("capacity 8192")),
        "{}",
        log.join("\n")
    );
    let _ = third.stop();
}
