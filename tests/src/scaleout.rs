//! Helpers of the scale-out tests and of the recovery bench: the director process, a NAT
//! deployment between two hosts with TCP transfers across it, the two hosts' static
//! neighbours, and the JSON summaries the director and its workers print.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{binary, sh, spawn_peer_in, TwoHosts};

/// The public address the deployments' NAT translates host A to.
pub const PUBLIC: &str = "10.77.0.100";

/// A deployment between the two hosts: the director's ports, a NAT from host A's side
/// (public address [`PUBLIC`]), `extra_nfs` (TOML), chains `out` (A → B) and `in` (B → A)
/// through `steps`, and `[scale]` with `scale` (TOML lines).
pub fn deployment(t: &TwoHosts, extra_nfs: &str, steps: &[&str], scale: &str) -> String {
    let steps = steps.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
{ports}
[[nf]]
name = "nat"
kind = "nat"
inside = "a"
public = "{PUBLIC}"
{extra_nfs}
[[chain]]
name = "out"
ingress = ["a"]
steps = [{steps}]
output = "b"

[[chain]]
name = "in"
ingress = ["b"]
steps = [{steps}]
output = "a"

[scale]
{scale}
"#,
        ports = t.af_packet_ports(),
    )
}

/// `n` loopback UDP addresses from port `first`, as a TOML list's items.
pub fn addresses(first: u16, n: u16) -> String {
    (0..n).map(|i| format!("\"127.0.0.1:{}\"", first + i)).collect::<Vec<_>>().join(", ")
}

pub fn mac(ns: &str, dev: &str) -> String {
    let out = sh(&["ip", "-n", ns, "-br", "link", "show", dev]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().nth(2).unwrap_or_else(|| panic!("no MAC in `{text}`")).to_string()
}

/// Host A reaches B, and B reaches the NAT's public address `public`, through permanent
/// neighbour entries (the MAC of the other side), so only the test's IPv4 crosses nflet.
pub fn static_neighbours(t: &TwoHosts, public: &str) {
    let a_mac = mac(&t.ns_a, "a0");
    let b_mac = mac(&t.ns_b, "b0");
    sh(&[
        "ip",
        "-n",
        &t.ns_a,
        "neigh",
        "replace",
        t.addr_b,
        "lladdr",
        &b_mac,
        "dev",
        "a0",
        "nud",
        "permanent",
    ]);
    sh(&["ip", "-n", &t.ns_b, "neigh", "replace", public, "lladdr", &a_mac, "dev", "b0", "nud", "permanent"]);
}

/// A running `nflet director`, stopped (SIGTERM) by [`Director::stop`] or killed on drop.
pub struct Director {
    pub child: Option<Child>,
    path: std::path::PathBuf,
}

impl Director {
    pub fn start(path: &std::path::Path) -> Director {
        let child = Command::new(binary("nflet"))
            .args(["director", "-c"])
            .arg(path)
            // `NFLET_TEST_LOG` sets the director's (and its workers') log filter, e.g. to debug
            // one NF: `info,nflet_nfs::functions::nat=debug`.
            .env("RUST_LOG", std::env::var("NFLET_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the director");
        let mut d = Director { child: Some(child), path: path.to_path_buf() };
        // A director that refuses its configuration exits within milliseconds: fail now, with
        // its error, rather than after the test's traffic has timed out.
        for _ in 0..10 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            d.assert_running();
        }
        d
    }

    /// Panics with the director's output if it has exited.
    pub fn assert_running(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        if let Ok(Some(status)) = child.try_wait() {
            let out = self.child.take().expect("running").wait_with_output().expect("director output");
            // Any instance it launched goes too (as on drop).
            let _ = Command::new("pkill").arg("-KILL").arg("-f").arg(&self.path).status();
            panic!(
                "the director exited early ({status}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    pub fn stop(mut self) -> (String, String) {
        let child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let out = child.wait_with_output().expect("director exit");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "director failed:\n{se}");
        (so, se)
    }
}

impl Drop for Director {
    /// A director dropped running (a failed test) is killed, and so is every instance it
    /// launched (they outlive a killed director by design: a restarted one adopts them).
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            let _ = Command::new("pkill").arg("-KILL").arg("-f").arg(&self.path).status();
        }
    }
}

/// The value after `key=` in a peer's output.
pub fn value(s: &str, key: &str) -> String {
    s.lines()
        .flat_map(str::split_whitespace)
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{s}"))
        .to_string()
}

/// The director's summary line.
pub fn director_summary(out: &str, err: &str) -> serde_json::Value {
    out.lines()
        .find(|l| l.contains("\"director\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no director summary in:\n{out}\n{err}"))
}

/// The summary lines of the workers (printed by worker processes on the same stdout, or on
/// a worker VM's console).
pub fn worker_summaries(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str::<serde_json::Value>(&l[i..]).ok()))
        .filter(|v| v["worker"].is_u64() && v.get("director").is_none())
        .collect()
}

/// Two hosts and a NAT deployment between them whose `[scale]` is `scale(base)`, written to a
/// file; its director is started and given 1.5 s to bring its workers up. `base` is the first
/// of the deployment's UDP ports: `first_port` plus a slot of 8 taken from the process id, so
/// callers keep their `first_port`s 4000 apart and runs side by side do not collide.
pub fn site(tag: &str, first_port: u16, scale: impl FnOnce(u16) -> String) -> (TwoHosts, PathBuf, Director) {
    let t = TwoHosts::new(tag);
    static_neighbours(&t, PUBLIC);
    let slot = u16::try_from(std::process::id() % 500).unwrap_or(0) * 8;
    let config = deployment(&t, "", &["nat"], &scale(first_port + slot));
    let path = std::env::temp_dir().join(format!("nflet-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, &config).unwrap();
    let director = Director::start(&path);
    sleep(Duration::from_millis(1500));
    (t, path, director)
}

/// The `[scale]` table of the worker-kill deployment (`scaleout_failover`, the recovery
/// bench), UDP ports from `base`: three workers with output loggers, packed in id order onto
/// worker 0 (capacity far above the test's traffic), no proactive replicas (a recovered flow's
/// state can only come from the logger), failure detected after 100 ms of silence.
pub fn worker_kill_scale(base: u16) -> String {
    format!(
        r#"director = "127.0.0.1:{base}"
workers = [{workers}]
loggers = [{loggers}]
key = "worker kill deployment key, not secret"
initial_workers = 3
capacity_mbps = 1000000
replicas = 0
retire_idle_ms = 600000
heartbeat_ms = 20
failure_timeout_ms = 100"#,
        workers = addresses(base + 1, 3),
        loggers = addresses(base + 4, 3),
    )
}

/// Runs `conns` TCP transfers A → B at `rate` bytes/s each; `during` runs 1 s after they
/// start. Returns (sender output, server output) per connection; a connection still open after
/// a minute is cut (and fails the byte count).
pub fn transfers(
    t: &TwoHosts,
    first_port: usize,
    conns: usize,
    bytes: u64,
    rate: u64,
    during: impl FnOnce(),
) -> Vec<(String, String)> {
    let servers: Vec<Child> = (0..conns)
        .map(|i| spawn_peer_in(&t.ns_b, &["tcp-serve", &(first_port + i).to_string(), "show-peer"]))
        .collect();
    sleep(Duration::from_millis(300));
    let senders: Vec<Child> = (0..conns)
        .map(|i| {
            spawn_peer_in(
                &t.ns_a,
                &["tcp-send", t.addr_b, &(first_port + i).to_string(), &bytes.to_string(), &rate.to_string()],
            )
        })
        .collect();
    sleep(Duration::from_millis(1000));
    during();
    let deadline = Instant::now() + Duration::from_secs(60);
    let finish = |mut c: Child| {
        while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait_with_output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
    };
    let sent: Vec<String> = senders.into_iter().map(finish).collect();
    let got: Vec<String> = servers.into_iter().map(finish).collect();
    sent.into_iter().zip(got).collect()
}
