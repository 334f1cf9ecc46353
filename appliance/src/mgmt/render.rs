//! What the endpoint renders: `/status` as JSON and `/metrics` in the Prometheus text
//! exposition format.

use nflet_nfs::drop::DropReason;

use super::{ChainView, CoreView, PortView, View};
use crate::dataplane::stats::BurstHistogram;

/// `/status`.
pub fn status_json(v: &View) -> String {
    let ports: Vec<serde_json::Value> = v
        .ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "name": p.name, "link": p.link, "rx": p.rx_packets, "tx": p.tx_packets, "lost": p.lost,
                "rx_bytes": p.rx_bytes, "tx_bytes": p.tx_bytes,
            })
        })
        .collect();
    let chains: Vec<serde_json::Value> = v
        .chains
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "tenant": c.tenant, "packets": c.packets, "bytes": c.bytes,
                "forwarded": c.forwarded, "dropped": c.dropped, "cpu_ns": c.cpu_ns,
            })
        })
        .collect();
    let cores: Vec<serde_json::Value> = v
        .per_core
        .iter()
        .enumerate()
        .map(|(i, c)| {
            serde_json::json!({
                "core": i, "rx": c.rx_packets, "tx": c.tx_packets,
                "busy_ratio": (c.busy_ratio * 1000.0).round() / 1000.0,
                "steered_in": c.steered_in, "steered_out": c.steered_out,
            })
        })
        .collect();
    let drops: serde_json::Map<String, serde_json::Value> =
        v.drops.nonzero().map(|(r, n)| (r.name().to_string(), n.into())).collect();
    let doc = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (v.uptime_s * 1000.0).round() / 1000.0,
        "cores": v.cores,
        "ports": ports,
        "chains": chains,
        "per_core": cores,
        "drops": drops,
    });
    format!("{doc}\n")
}

/// Prometheus text, one metric family at a time.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (String, String)>,
    ) {
        self.out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            self.out.push_str(&format!("{name}{labels} {value}\n"));
        }
    }
}

/// `{k1="v1",k2="v2"}` with the values escaped.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
    format!("{{{}}}", inner.join(","))
}

fn seconds(ns: u64) -> String {
    format!("{:.9}", ns as f64 / 1e9)
}

/// `/metrics`: the Prometheus text exposition format.
pub fn metrics(v: &View) -> String {
    let mut e = Exposition { out: String::new() };
    e.family(
        "nflet_uptime_seconds",
        "gauge",
        "Seconds since the appliance started.",
        [(String::new(), format!("{:.3}", v.uptime_s))],
    );
    e.family("nflet_cores", "gauge", "Dataplane worker cores.", [(String::new(), v.cores.to_string())]);
    let per_port = |f: fn(&PortView) -> u64| -> Vec<(String, String)> {
        v.ports.iter().map(|p| (labels(&[("port", &p.name)]), f(p).to_string())).collect()
    };
    e.family(
        "nflet_port_rx_packets_total",
        "counter",
        "Frames received on the port.",
        per_port(|p| p.rx_packets),
    );
    e.family("nflet_port_rx_bytes_total", "counter", "Bytes received on the port.", per_port(|p| p.rx_bytes));
    e.family(
        "nflet_port_tx_packets_total",
        "counter",
        "Frames transmitted on the port.",
        per_port(|p| p.tx_packets),
    );
    e.family(
        "nflet_port_tx_bytes_total",
        "counter",
        "Bytes transmitted on the port.",
        per_port(|p| p.tx_bytes),
    );
    e.family(
        "nflet_port_lost_total",
        "counter",
        "Frames the port lost before nflet saw them.",
        per_port(|p| p.lost),
    );
    e.family(
        "nflet_port_link_up",
        "gauge",
        "1 when the port's link is up (NICs and interfaces; virtual ports are not listed).",
        v.ports
            .iter()
            .filter(|p| p.link != "virtual")
            .map(|p| (labels(&[("port", &p.name)]), u8::from(p.link == "up").to_string())),
    );
    let per_chain = |f: fn(&ChainView) -> String| -> Vec<(String, String)> {
        v.chains.iter().map(|c| (labels(&[("chain", &c.name), ("tenant", &c.tenant)]), f(c))).collect()
    };
    e.family(
        "nflet_chain_packets_total",
        "counter",
        "Packets that entered the chain.",
        per_chain(|c| c.packets.to_string()),
    );
    e.family(
        "nflet_chain_bytes_total",
        "counter",
        "Bytes that entered the chain (IP datagrams).",
        per_chain(|c| c.bytes.to_string()),
    );
    e.family(
        "nflet_chain_forwarded_total",
        "counter",
        "Packets the chain sent out.",
        per_chain(|c| c.forwarded.to_string()),
    );
    e.family(
        "nflet_chain_dropped_total",
        "counter",
        "Packets the chain dropped.",
        per_chain(|c| c.dropped.to_string()),
    );
    e.family(
        "nflet_chain_cpu_seconds_total",
        "counter",
        "CPU time spent inside the chain on all cores; idle polling is never counted (billing).",
        per_chain(|c| seconds(c.cpu_ns)),
    );
    e.family(
        "nflet_drops_total",
        "counter",
        "Packets dropped, by reason.",
        DropReason::ALL.iter().map(|r| (labels(&[("reason", r.name())]), v.drops.get(*r).to_string())),
    );
    core_metrics(&mut e, v);
    nf_metrics(&mut e, v);
    e.out
}

fn core_metrics(e: &mut Exposition, v: &View) {
    let per_core = |f: fn(&CoreView) -> String| -> Vec<(String, String)> {
        v.per_core.iter().enumerate().map(|(i, c)| (labels(&[("core", &i.to_string())]), f(c))).collect()
    };
    e.family(
        "nflet_core_rx_packets_total",
        "counter",
        "Frames the core received.",
        per_core(|c| c.rx_packets.to_string()),
    );
    e.family(
        "nflet_core_tx_packets_total",
        "counter",
        "Frames the core transmitted.",
        per_core(|c| c.tx_packets.to_string()),
    );
    e.family(
        "nflet_core_busy_seconds_total",
        "counter",
        "Time the core spent on polls that had packets.",
        per_core(|c| seconds(c.busy_ns)),
    );
    e.family(
        "nflet_core_busy_ratio",
        "gauge",
        "Share of the last second the core spent on polls that had packets.",
        per_core(|c| format!("{:.4}", c.busy_ratio)),
    );
    e.family(
        "nflet_core_polls_total",
        "counter",
        "Receive polls of the core.",
        per_core(|c| c.polls.to_string()),
    );
    e.family(
        "nflet_core_steered_in_total",
        "counter",
        "Frames other cores handed to this one.",
        per_core(|c| c.steered_in.to_string()),
    );
    e.family(
        "nflet_core_steered_out_total",
        "counter",
        "Frames this core handed to others.",
        per_core(|c| c.steered_out.to_string()),
    );
    let mut samples = Vec::new();
    for (i, c) in v.per_core.iter().enumerate() {
        let core = i.to_string();
        let mut cumulative = 0u64;
        for (b, n) in c.bursts.counts.iter().enumerate() {
            cumulative += n;
            let le = BurstHistogram::bound_ns(b)
                .map_or_else(|| "+Inf".to_string(), |ns| format!("{}", ns as f64 / 1e9));
            samples.push((
                format!("_bucket{}", labels(&[("core", &core), ("le", &le)])),
                cumulative.to_string(),
            ));
        }
        samples.push((format!("_sum{}", labels(&[("core", &core)])), seconds(c.bursts.sum_ns)));
        samples.push((format!("_count{}", labels(&[("core", &core)])), c.bursts.count().to_string()));
    }
    e.family(
        "nflet_burst_duration_seconds",
        "histogram",
        "Processing time of a burst with packets, from parsing to transmit.",
        samples,
    );
}

fn nf_metrics(e: &mut Exposition, v: &View) {
    let id = |n: &super::NfView| (n.name.clone(), n.kind, n.core.to_string());
    e.family(
        "nflet_nf_packets_total",
        "counter",
        "Packets handed to the NF instance.",
        v.nfs.iter().map(|n| {
            let (name, kind, core) = id(n);
            (labels(&[("nf", &name), ("kind", kind), ("core", &core)]), n.packets.to_string())
        }),
    );
    e.family(
        "nflet_nf_drops_total",
        "counter",
        "Packets the NF instance dropped, by reason (reasons seen so far).",
        v.nfs.iter().flat_map(|n| {
            let (name, _, core) = id(n);
            n.drops.nonzero().map(move |(r, c)| {
                (labels(&[("nf", &name), ("core", &core), ("reason", r.name())]), c.to_string())
            })
        }),
    );
    e.family(
        "nflet_nf_events_total",
        "counter",
        "The NF's own counters (mappings created, rule hits, pool use, ...).",
        v.nfs.iter().flat_map(|n| {
            let (name, _, core) = id(n);
            n.counters.iter().map(move |(event, c)| {
                (labels(&[("nf", &name), ("core", &core), ("event", event)]), c.to_string())
            })
        }),
    );
    let tables = |f: fn(&nflet_nfs::state::TableStats) -> u64| -> Vec<(String, String)> {
        v.nfs
            .iter()
            .flat_map(|n| {
                n.tables.iter().map(move |(t, s)| {
                    (
                        labels(&[("nf", &n.name), ("core", &n.core.to_string()), ("table", t)]),
                        f(s).to_string(),
                    )
                })
            })
            .collect()
    };
    e.family("nflet_table_entries", "gauge", "Live entries in the state table.", tables(|s| s.len));
    e.family("nflet_table_capacity", "gauge", "Capacity of the state table.", tables(|s| s.capacity));
    e.family(
        "nflet_table_refused_total",
        "counter",
        "Inserts refused because the table was full.",
        tables(|s| s.refused),
    );
    e.family("nflet_table_evicted_total", "counter", "Entries evicted to make room.", tables(|s| s.evicted));
    e.family(
        "nflet_table_expired_total",
        "counter",
        "Entries removed after their idle timeout.",
        tables(|s| s.expired),
    );
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::drop::DropCounters;

    fn view() -> View {
        let mut drops = DropCounters::default();
        drops.count(DropReason::Truncated);
        View {
            uptime_s: 1.5,
            cores: 2,
            ports: vec![PortView {
                name: "in\"side".into(),
                link: "up",
                rx_packets: 5,
                rx_bytes: 300,
                tx_packets: 4,
                tx_bytes: 240,
                lost: 1,
            }],
            chains: vec![ChainView {
                name: "out".into(),
                tenant: "acme".into(),
                packets: 5,
                dropped: 1,
                ..ChainView::default()
            }],
            drops,
            ..View::default()
        }
    }

    #[test]
    fn status_is_json_with_ports_and_chains() {
        let doc: serde_json::Value = serde_json::from_str(&status_json(&view())).unwrap();
        assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["uptime_s"], 1.5);
        assert_eq!(doc["cores"], 2);
        assert_eq!(
            doc["ports"],
            serde_json::json!([{ "name": "in\"side", "link": "up", "rx": 5, "tx": 4, "lost": 1, "rx_bytes": 300, "tx_bytes": 240 }])
        );
        assert_eq!(
            doc["chains"],
            serde_json::json!([{ "name": "out", "tenant": "acme", "packets": 5, "bytes": 0, "forwarded": 0, "dropped": 1, "cpu_ns": 0 }])
        );
        assert_eq!(doc["drops"], serde_json::json!({ "truncated": 1 }));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let m = metrics(&view());
        for line in [
            "# TYPE nflet_port_rx_packets_total counter",
            "nflet_port_rx_packets_total{port=\"in\\\"side\"} 5",
            "nflet_port_tx_bytes_total{port=\"in\\\"side\"} 240",
            "nflet_port_lost_total{port=\"in\\\"side\"} 1",
            "nflet_port_link_up{port=\"in\\\"side\"} 1",
            "nflet_chain_dropped_total{chain=\"out\",tenant=\"acme\"} 1",
            "nflet_drops_total{reason=\"truncated\"} 1",
            "nflet_drops_total{reason=\"unknown_ethertype\"} 0",
            "nflet_uptime_seconds 1.500",
            "nflet_cores 2",
        ] {
            assert!(m.lines().any(|l| l == line), "missing `{line}` in:\n{m}");
        }
        // Every sample line: name{labels} value, value numeric.
        for l in m.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        assert_eq!(escape_label("a\\b\nc"), "a\\\\b\\nc");
    }
}
