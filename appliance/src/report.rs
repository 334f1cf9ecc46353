//! Human-readable summaries of a run: ports, chains, NFs, drops by reason.

use std::fmt::Write as _;

use crate::dataplane::Summary;

/// An NF's counters summed over cores: name, kind, packets, named counters.
type NfTotals = (String, &'static str, u64, Vec<(&'static str, u64)>);

/// The end-of-run summary printed by `nflet run` and `nflet process`.
pub fn summary(s: &Summary) -> String {
    let mut o = String::new();
    let t = &s.total;
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    let rx = t.rx_total();
    let tx = t.tx_total();
    let _ = writeln!(o, "== nflet summary ({:.2} s, {} core(s))", secs, s.cores.len().max(s.nfs.len()));
    let _ = writeln!(
        o,
        "received {} frames ({} bytes), transmitted {} frames ({} bytes), dropped {}",
        rx.packets,
        rx.bytes,
        tx.packets,
        tx.bytes,
        t.drops.total()
    );
    let _ = writeln!(o, "ports:");
    for (i, name) in s.port_names.iter().enumerate() {
        let r = t.rx.get(i).copied().unwrap_or_default();
        let x = t.tx.get(i).copied().unwrap_or_default();
        let lost = t.port_lost.get(i).copied().unwrap_or(0);
        let _ = writeln!(o, "  {name:<12} rx {:>12} tx {:>12} lost {lost}", r.packets, x.packets);
    }
    let _ = writeln!(o, "chains:");
    for (name, c) in s.chain_names.iter().zip(&s.chains) {
        let _ = writeln!(
            o,
            "  {name:<12} packets {:>12} forwarded {:>12} dropped {:>12}",
            c.packets, c.forwarded, c.dropped
        );
    }
    let _ = writeln!(o, "network functions (all cores):");
    let mut merged: Vec<NfTotals> = Vec::new();
    for core in &s.nfs {
        for (name, kind, stats, report) in core {
            let entry = match merged.iter_mut().find(|m| &m.0 == name) {
                Some(e) => e,
                None => {
                    merged.push((name.clone(), kind, 0, Vec::new()));
                    let Some(last) = merged.last_mut() else { continue };
                    last
                }
            };
            entry.2 += stats.packets;
            for (k, v) in &report.counters {
                match entry.3.iter_mut().find(|(n, _)| n == k) {
                    Some(c) => c.1 += v,
                    None => entry.3.push((k, *v)),
                }
            }
        }
    }
    for (name, kind, packets, counters) in &merged {
        let cs: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(o, "  {name} ({kind}): packets={packets} {}", cs.join(" "));
    }
    if s.nfs.len() > 1 {
        let _ = writeln!(o, "network functions per core:");
        for (c, core) in s.nfs.iter().enumerate() {
            for (name, kind, stats, report) in core {
                let cs: Vec<String> = report.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(o, "  core{c} {name} ({kind}): packets={} {}", stats.packets, cs.join(" "));
            }
        }
    }
    if t.drops.total() > 0 {
        let _ = writeln!(o, "drops by reason:");
        for (r, n) in t.drops.nonzero() {
            let _ = writeln!(o, "  {:<22} {n}", r.name());
        }
    }
    if t.steered_out > 0 {
        let _ = writeln!(
            o,
            "software steering: {} frames moved between cores ({} to the core holding their NF state)",
            t.steered_out, t.steered_by_nf
        );
    }
    let _ = write!(o, "rate: {:.3} Mpps received", rx.packets as f64 / secs / 1e6);
    o
}
