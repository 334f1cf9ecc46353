//! Plain-text tables of the results, with the paper's numbers alongside where it gives them.

use super::run::RunResult;
use super::stats::Percentiles;

/// A table: a header row and data rows, rendered as a Markdown table.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Markdown with columns padded to line up in a terminal too.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![3usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate() {
                let c = cells.get(i).map_or("", String::as_str);
                s.push_str(&format!(" {c:<w$} |"));
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        out.push('|');
        for w in &width {
            out.push_str(&format!("{}|", "-".repeat(w + 2)));
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// A latency in µs, with a unit that keeps it short.
pub fn time_us(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else if us >= 10.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

/// p1 / p25 / p50 / p75 / p99 of a latency summary in µs.
pub fn latency_cells(p: &Percentiles) -> Vec<String> {
    [p.p1, p.p25, p.p50, p.p75, p.p99].iter().map(|&v| time_us(v)).collect()
}

pub fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// The packet-count check every table ends with: each run served or counted every packet.
pub fn packet_check(runs: &[RunResult]) -> String {
    let mut s = String::new();
    for r in runs {
        s.push_str(&format!(
            "- {}: {} packets in the trace: {} served (of which {} lost in a failed worker's queue), {} without a worker\n",
            r.name,
            r.packets,
            r.served,
            r.recovery.map_or(0, |x| x.lost),
            r.no_worker
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up_and_times_pick_units() {
        let mut t = Table::new(&["a", "long header"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "| a   | long header |\n|-----|-------------|\n| xyz | 1           |\n");
        assert_eq!(
            (time_us(2.345), time_us(45.6), time_us(2_500.0)),
            ("2.3 µs".into(), "46 µs".into(), "2.5 ms".into())
        );
        assert_eq!(pct(0.9043), "90.4 %");
    }
}
