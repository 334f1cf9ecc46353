//! Live reload on a running two-core dataplane: changed NFs are rebuilt, unchanged ones keep
//! their state and counters, and refused configurations leave everything as it was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::reload::ReloadRequests;
use super::*;

const BASE: &str = r#"
[appliance]
cores = 2

[[port]]
name = "gen"
kind = "generator"
flows = 1000
size = 64
proto = "udp"
rate_pps = 40000

[[port]]
name = "sink"
kind = "sink"

[[nf]]
name = "fw"
kind = "firewall"
default = "deny"

  [[nf.rule]]
  action = "allow"
  src = "10.0.0.0/8"

[[nf]]
name = "mon"
kind = "monitor"

[[chain]]
name = "main"
ingress = ["gen"]
steps = ["fw", "mon"]
output = "sink"
"#;

/// Packets an NF (by name) has seen, summed over cores.
fn nf_packets(s: &Summary, name: &str) -> u64 {
    s.nfs.iter().flatten().filter(|(n, ..)| n == name).map(|(_, _, st, _)| st.packets).sum()
}

#[test]
fn reload_rebuilds_changed_nfs_keeps_the_rest_and_refuses_bad_configs() {
    let dir = std::env::temp_dir().join(format!("nflet-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.toml");
    std::fs::write(&path, BASE).unwrap();
    let cfg = Config::load(&path).unwrap();
    let requests = ReloadRequests::default();
    let latest: Mutex<Summary> = Mutex::default();
    let progress = |s: &Summary| *latest.lock().unwrap() = s.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let wait_for = |what: &str, ok: &dyn Fn(&Summary) -> bool| {
        let start = Instant::now();
        loop {
            if ok(&latest.lock().unwrap()) {
                return latest.lock().unwrap().clone();
            }
            assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let opts =
                RunOptions { progress: Some(&progress), reload: Some(&requests), ..RunOptions::default() };
            run(&cfg, &opts, Arc::clone(&stop))
        });
        let before = wait_for("traffic", &|s| nf_packets(s, "mon") > 2000);
        let mon_before = nf_packets(&before, "mon");

        // 1. A new firewall rule: `fw` is rebuilt, `mon` carries on with its counters.
        let changed = BASE.replace(
            "  [[nf.rule]]\n  action = \"allow\"",
            "  [[nf.rule]]\n  action = \"deny\"\n  proto = \"udp\"\n  dport = \"0-9\"\n\n  [[nf.rule]]\n  action = \"allow\"",
        );
        assert_ne!(changed, BASE);
        std::fs::write(&path, &changed).unwrap();
        let note = requests.request().recv_timeout(Duration::from_secs(20)).unwrap().unwrap();
        assert!(note.contains("kept [mon]") && note.contains("rebuilt [fw]"), "{note}");
        assert!(note.contains("retired 2 instance(s)"), "one `fw` per core: {note}");
        let after =
            wait_for("the first summary after the reload", &|s| nf_packets(s, "mon") > mon_before + 1000);
        assert!(
            nf_packets(&after, "fw") < nf_packets(&after, "mon"),
            "the new `fw` counts from zero, the kept `mon` does not"
        );
        let mon_tables: u64 = after
            .nfs
            .iter()
            .flatten()
            .filter(|(n, ..)| n == "mon")
            .flat_map(|(.., r)| r.tables.iter())
            .map(|t| t.2.len)
            .sum();
        assert!(mon_tables > 0, "the kept monitor still holds its flows");

        // 2. Refused: a syntax error (with its place), then a port change.
        std::fs::write(&path, changed.replace("[[chain]]", "[[chain]\n")).unwrap();
        let err = requests.request().recv_timeout(Duration::from_secs(20)).unwrap().unwrap_err();
        assert!(err.contains("t.toml:"), "{err}");
        std::fs::write(&path, changed.replace("rate_pps = 40000", "rate_pps = 50000")).unwrap();
        let err = requests.request().recv_timeout(Duration::from_secs(20)).unwrap().unwrap_err();
        assert!(err.contains("the ports changed"), "{err}");

        // 3. Everything kept running: the counters go on from where they were.
        let fw_now = nf_packets(&latest.lock().unwrap(), "fw");
        let last = wait_for("traffic after the refused reloads", &|s| nf_packets(s, "fw") > fw_now + 1000);
        assert!(nf_packets(&last, "mon") > nf_packets(&after, "mon"));

        // 4. A SIGHUP-style request (no one waiting) with the original file: `fw` rebuilt again.
        std::fs::write(&path, BASE).unwrap();
        requests.signal.store(true, Ordering::Relaxed);
        let fw_before = nf_packets(&latest.lock().unwrap(), "fw");
        wait_for("the signalled reload", &|s| nf_packets(s, "fw") < fw_before);
        stop.store(true, Ordering::Relaxed);
        let summary = runner.join().unwrap().unwrap();
        assert_eq!(summary.chain_names, vec!["main".to_string()]);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}
