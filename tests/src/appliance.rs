//! A running nflet for end-to-end tests that need more than [`crate::Nflet`]: its stderr goes
//! to a file, so a failure message can quote it while nflet still runs, and its management
//! endpoint's `/metrics` is read as [`Metrics`]. Killed on drop; its files are removed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{binary, sh};

/// A running `nflet run -q -c <config>` with a management endpoint on 127.0.0.1.
#[derive(Debug)]
pub struct Appliance {
    child: Option<Child>,
    /// The configuration, stdout and stderr files; also a place for a test's captures.
    pub dir: PathBuf,
    listen: u16,
}

/// A free local TCP port for `[management] listen`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

impl Appliance {
    /// Writes `config` (which must contain `listen = <port>` for the management endpoint) to
    /// a directory named after `tag` and the test process, and starts nflet on it.
    pub fn start(config: &str, tag: &str) -> Appliance {
        let dir = std::env::temp_dir().join(format!("nflet-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        std::fs::write(dir.join("nflet.toml"), config).expect("write the configuration");
        let listen: u16 = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("listen = "))
            .and_then(|v| v.trim().parse().ok())
            .expect("`listen = <port>` in the configuration's [management]");
        let file = |name: &str| std::fs::File::create(dir.join(name)).expect("an output file");
        let child = Command::new(binary("nflet"))
            .args(["run", "-q", "-c"])
            .arg(dir.join("nflet.toml"))
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("start nflet");
        Appliance { child: Some(child), dir, listen }
    }

    /// nflet's log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// `GET /metrics`, the whole response.
    pub fn try_metrics(&self) -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.listen))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.1\r\nHost: nflet\r\nConnection: close\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        Ok(text)
    }

    /// Waits (at most 10 s) until the management endpoint answers; the ports are open by
    /// then. Fails with nflet's log if it exits or does not answer.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("nflet exited ({status}) at start:\n{}", self.stderr());
            }
            if self.try_metrics().is_ok_and(|m| m.contains("nflet_port_rx_packets_total")) {
                return;
            }
            assert!(Instant::now() < deadline, "nflet's /metrics did not answer in 10 s:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The current counters (cores publish theirs every 100 ms).
    pub fn metrics(&self) -> Metrics {
        Metrics(self.try_metrics().unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.stderr())))
    }

    /// Stops nflet with SIGTERM and returns the summary it prints on exit.
    pub fn stop(mut self) -> String {
        let mut child = self.child.take().expect("running");
        sh(&["kill", "-TERM", &child.id().to_string()]);
        let status = child.wait().expect("nflet's exit status");
        assert!(status.success(), "nflet exited with {status}:\n{}", self.stderr());
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `/metrics` text (Prometheus exposition).
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of the samples of `name` that carry every `key="value"` of `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix(name))
            .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
            .filter(|rest| labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// An NF's own counter (`nflet_nf_events_total`), summed over cores.
    pub fn event(&self, nf: &str, event: &str) -> u64 {
        self.get("nflet_nf_events_total", &[("nf", nf), ("event", event)])
    }

    /// Drops of `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.get("nflet_drops_total", &[("reason", reason)])
    }

    /// Drops of every reason whose name starts with `prefix`.
    pub fn dropped_with_prefix(&self, prefix: &str) -> u64 {
        let start = format!("nflet_drops_total{{reason=\"{prefix}");
        self.0
            .lines()
            .filter(|l| l.starts_with(&start))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// A port's counter (`nflet_port_<what>_total`: `rx_packets`, `tx_packets`, `lost`, ...).
    pub fn port(&self, port: &str, what: &str) -> u64 {
        self.get(&format!("nflet_port_{what}_total"), &[("port", port)])
    }

    /// The non-zero NF, drop and port counters, one per line, for failure messages.
    pub fn nonzero(&self) -> String {
        self.0
            .lines()
            .filter(|l| {
                ["nflet_nf_events_total", "nflet_drops_total", "nflet_port_"].iter().any(|p| l.starts_with(p))
                    && !l.ends_with(" 0")
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_by_labels() {
        let m = Metrics(
            "HTTP/1.1 200 OK\r\n\r\n# TYPE nflet_nf_events_total counter\n\
             nflet_nf_events_total{nf=\"vpn\",core=\"0\",event=\"encrypted\"} 3\n\
             nflet_nf_events_total{nf=\"vpn\",core=\"1\",event=\"encrypted\"} 4\n\
             nflet_nf_events_total{nf=\"vpn\",core=\"1\",event=\"encrypted_bytes\"} 99\n\
             nflet_drops_total{reason=\"ipsec_replayed\"} 1\n\
             nflet_drops_total{reason=\"ipsec_bad_icv\"} 2\n\
             nflet_drops_total{reason=\"truncated\"} 0\n\
             nflet_port_lost_total{port=\"wan\"} 5\n"
                .into(),
        );
        assert_eq!(m.event("vpn", "encrypted"), 7);
        assert_eq!(m.dropped("ipsec_replayed"), 1);
        assert_eq!(m.dropped_with_prefix("ipsec_"), 3);
        assert_eq!(m.port("wan", "lost"), 5);
        assert!(!m.nonzero().contains("truncated"));
    }
}
