//! `nflet top`: a live terminal view of a running appliance, from successive `/status`
//! samples of its management endpoint.
//!
//! Rates are counter differences over the difference of the appliance's own uptime between
//! two samples, so a slow network or a late refresh does not skew them. Rendering is a pure
//! function ([`render`]: two samples in, text out); the command adds only the fetching, the
//! plain ANSI clear-screen (no curses: it works over a serial console) and the loop.

use serde_json::Value;

/// One core's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreSample {
    pub rx: u64,
    pub tx: u64,
    /// Share of the last second spent on bursts with packets (0..1), as the appliance reports.
    pub busy_ratio: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainSample {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub cpu_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSample {
    pub name: String,
    pub rx: u64,
    pub tx: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub lost: u64,
}

/// One `/status` document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub uptime_s: f64,
    pub version: String,
    pub cores: Vec<CoreSample>,
    pub chains: Vec<ChainSample>,
    pub ports: Vec<PortSample>,
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("?").to_string()
}

fn list<'a>(doc: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    doc.get(key).and_then(Value::as_array).into_iter().flatten()
}

impl Sample {
    /// Reads a `/status` document; missing counters read as zero.
    pub fn parse(json: &str) -> Result<Sample, String> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| format!("/status is not the JSON nflet serves: {e}"))?;
        let uptime_s = doc
            .get("uptime_s")
            .and_then(Value::as_f64)
            .ok_or_else(|| "/status has no `uptime_s`: is this nflet's management endpoint?".to_string())?;
        Ok(Sample {
            uptime_s,
            version: s(&doc, "version"),
            cores: list(&doc, "per_core")
                .map(|c| CoreSample {
                    rx: u(c, "rx"),
                    tx: u(c, "tx"),
                    busy_ratio: c.get("busy_ratio").and_then(Value::as_f64).unwrap_or(0.0),
                })
                .collect(),
            chains: list(&doc, "chains")
                .map(|c| ChainSample {
                    name: s(c, "name"),
                    packets: u(c, "packets"),
                    bytes: u(c, "bytes"),
                    dropped: u(c, "dropped"),
                    cpu_ns: u(c, "cpu_ns"),
                })
                .collect(),
            ports: list(&doc, "ports")
                .map(|p| PortSample {
                    name: s(p, "name"),
                    rx: u(p, "rx"),
                    tx: u(p, "tx"),
                    rx_bytes: u(p, "rx_bytes"),
                    tx_bytes: u(p, "tx_bytes"),
                    lost: u(p, "lost"),
                })
                .collect(),
        })
    }
}

/// Per-second rate of a counter between two samples; a counter that went backwards (the
/// appliance restarted) reads as 0.
fn per_s(now: u64, then: u64, dt: f64) -> f64 {
    now.saturating_sub(then) as f64 / dt
}

/// Bytes per second as Mbit/s.
fn mbit(bytes_per_s: f64) -> f64 {
    bytes_per_s * 8.0 / 1e6
}

/// The view between samples `prev` and `cur` of the appliance at `endpoint`. Rows are matched
/// by position (cores) or name (chains, ports); rows new in `cur` show zero rates.
pub fn render(prev: &Sample, cur: &Sample, endpoint: &str) -> String {
    let dt = (cur.uptime_s - prev.uptime_s).max(1e-3);
    let mut out = format!(
        "nflet {} at {endpoint}: up {:.0} s, {} core(s), rates over {:.1} s\n\n",
        cur.version,
        cur.uptime_s,
        cur.cores.len(),
        dt
    );
    out.push_str(&format!("{:<6} {:>12} {:>12} {:>7}\n", "CORE", "RX pps", "TX pps", "BUSY %"));
    for (i, c) in cur.cores.iter().enumerate() {
        let p = prev.cores.get(i).cloned().unwrap_or_else(|| c.clone());
        out.push_str(&format!(
            "{:<6} {:>12.0} {:>12.0} {:>7.1}\n",
            i,
            per_s(c.rx, p.rx, dt),
            per_s(c.tx, p.tx, dt),
            c.busy_ratio * 100.0
        ));
    }
    out.push_str(&format!(
        "\n{:<16} {:>12} {:>10} {:>10} {:>10}\n",
        "CHAIN", "pps", "Mbit/s", "drops/s", "CPU ms/s"
    ));
    for c in &cur.chains {
        let p = prev.chains.iter().find(|p| p.name == c.name).unwrap_or(c);
        out.push_str(&format!(
            "{:<16} {:>12.0} {:>10.2} {:>10.0} {:>10.2}\n",
            c.name,
            per_s(c.packets, p.packets, dt),
            mbit(per_s(c.bytes, p.bytes, dt)),
            per_s(c.dropped, p.dropped, dt),
            per_s(c.cpu_ns, p.cpu_ns, dt) / 1e6
        ));
    }
    out.push_str(&format!(
        "\n{:<16} {:>12} {:>10} {:>12} {:>10} {:>8}\n",
        "PORT", "RX pps", "RX Mbit/s", "TX pps", "TX Mbit/s", "lost/s"
    ));
    for c in &cur.ports {
        let p = prev.ports.iter().find(|p| p.name == c.name).unwrap_or(c);
        out.push_str(&format!(
            "{:<16} {:>12.0} {:>10.2} {:>12.0} {:>10.2} {:>8.0}\n",
            c.name,
            per_s(c.rx, p.rx, dt),
            mbit(per_s(c.rx_bytes, p.rx_bytes, dt)),
            per_s(c.tx, p.tx, dt),
            mbit(per_s(c.tx_bytes, p.tx_bytes, dt)),
            per_s(c.lost, p.lost, dt)
        ));
    }
    out
}

/// Clear the screen and move home (plain ANSI, understood by serial consoles' terminals).
pub const CLEAR: &str = "\x1b[2J\x1b[H";

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(uptime: f64, rx: u64, chain_pkts: u64, bytes: u64, dropped: u64, cpu_ns: u64) -> String {
        serde_json::json!({
            "version": "0.1.0", "uptime_s": uptime, "cores": 1,
            "ports": [{"name": "gen", "rx": rx, "tx": 0, "lost": 0, "rx_bytes": rx * 64, "tx_bytes": 0},
                      {"name": "sink", "rx": 0, "tx": rx, "lost": 0, "rx_bytes": 0, "tx_bytes": rx * 64}],
            "chains": [{"name": "main", "tenant": "main", "packets": chain_pkts, "bytes": bytes,
                        "forwarded": chain_pkts - dropped, "dropped": dropped, "cpu_ns": cpu_ns}],
            "per_core": [{"core": 0, "rx": rx, "tx": rx, "busy_ratio": 0.25, "steered_in": 0, "steered_out": 0}],
            "drops": {},
        })
        .to_string()
    }

    fn row<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{text}"))
            .split_whitespace()
            .collect()
    }

    #[test]
    fn rates_are_differences_over_the_appliances_uptime() {
        let a = Sample::parse(&doc(10.0, 1000, 1000, 64_000, 10, 5_000_000)).unwrap();
        // Two seconds later: 40000 more frames, 2.56 MB, 200 drops, 30 ms of CPU.
        let b = Sample::parse(&doc(12.0, 41_000, 41_000, 2_624_000, 210, 35_000_000)).unwrap();
        let text = render(&a, &b, "127.0.0.1:8080");
        assert!(
            text.starts_with("nflet 0.1.0 at 127.0.0.1:8080: up 12 s, 1 core(s), rates over 2.0 s\n"),
            "{text}"
        );
        assert_eq!(row(&text, "0"), ["0", "20000", "20000", "25.0"]);
        assert_eq!(row(&text, "main"), ["main", "20000", "10.24", "100", "15.00"]);
        assert_eq!(row(&text, "gen"), ["gen", "20000", "10.24", "0", "0.00", "0"]);
        assert_eq!(row(&text, "sink"), ["sink", "0", "0.00", "20000", "10.24", "0"]);
        assert!(!text.contains('\x1b'), "no escape codes in the rendering itself");
    }

    #[test]
    fn a_restart_or_a_new_row_reads_as_zero_not_as_garbage() {
        let a = Sample::parse(&doc(100.0, 1_000_000, 1_000_000, 64_000_000, 0, 1)).unwrap();
        let b = Sample::parse(&doc(1.0, 10, 10, 640, 0, 1)).unwrap();
        let text = render(&a, &b, "x");
        assert_eq!(row(&text, "main")[1], "0");
        let mut c = b.clone();
        c.chains.push(ChainSample { name: "new".into(), packets: 5, ..ChainSample::default() });
        c.uptime_s = 2.0;
        assert_eq!(row(&render(&b, &c, "x"), "new")[1], "0");
    }

    #[test]
    fn what_is_not_a_status_document_is_refused_with_a_reason() {
        assert!(Sample::parse("<html>").unwrap_err().contains("not the JSON nflet serves"));
        assert!(Sample::parse("{}").unwrap_err().contains("no `uptime_s`"));
        let s = Sample::parse(r#"{"uptime_s": 1.5}"#).unwrap();
        assert_eq!((s.uptime_s, s.cores.len(), s.version.as_str()), (1.5, 0, "?"));
    }
}
