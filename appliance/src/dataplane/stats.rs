//! Counters of the dataplane: kept per core without sharing, published as snapshots.

use nflet_nfs::chain::{ChainStats, NfStats};
use nflet_nfs::drop::DropCounters;
use nflet_nfs::nf::Report;

/// Packets and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub packets: u64,
    pub bytes: u64,
}

impl Tally {
    #[inline]
    pub fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    pub fn merge(&mut self, o: &Tally) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// One core's counters.
#[derive(Debug, Clone, Default)]
pub struct CoreStats {
    /// Received per port (index = port id).
    pub rx: Vec<Tally>,
    /// Transmitted per port.
    pub tx: Vec<Tally>,
    /// Frames the port lost before nflet saw them, per port.
    pub port_lost: Vec<u64>,
    pub drops: DropCounters,
    /// Frames handed to / taken from other cores by software steering.
    pub steered_out: u64,
    pub steered_in: u64,
    /// Of `steered_out`, frames an NF steered to the core holding their state.
    pub steered_by_nf: u64,
    pub polls: u64,
    pub busy_polls: u64,
    /// Nanoseconds spent in iterations that had packets (parse + chains + tx).
    pub busy_ns: u64,
    /// Nanoseconds spent inside chains only.
    pub chain_ns: u64,
    /// Packets that went through a chain.
    pub chained: u64,
    /// `(chained, chain_ns, busy_ns)` when the warm-up ended (see `RunOptions::warmup`).
    pub at_warmup: Option<(u64, u64, u64)>,
}

impl CoreStats {
    pub fn new(ports: usize) -> CoreStats {
        CoreStats {
            rx: vec![Tally::default(); ports],
            tx: vec![Tally::default(); ports],
            port_lost: vec![0; ports],
            ..CoreStats::default()
        }
    }

    pub fn merge(&mut self, o: &CoreStats) {
        let grow = |v: &mut Vec<Tally>, n: usize| {
            if v.len() < n {
                v.resize(n, Tally::default());
            }
        };
        grow(&mut self.rx, o.rx.len());
        grow(&mut self.tx, o.tx.len());
        if self.port_lost.len() < o.port_lost.len() {
            self.port_lost.resize(o.port_lost.len(), 0);
        }
        for (a, b) in self.rx.iter_mut().zip(&o.rx) {
            a.merge(b);
        }
        for (a, b) in self.tx.iter_mut().zip(&o.tx) {
            a.merge(b);
        }
        for (a, b) in self.port_lost.iter_mut().zip(&o.port_lost) {
            *a += b;
        }
        self.drops.add(&o.drops);
        self.steered_out += o.steered_out;
        self.steered_in += o.steered_in;
        self.steered_by_nf += o.steered_by_nf;
        self.polls += o.polls;
        self.busy_polls += o.busy_polls;
        self.busy_ns += o.busy_ns;
        self.chain_ns += o.chain_ns;
        self.chained += o.chained;
        if let Some((a, b, c)) = o.at_warmup {
            let (x, y, z) = self.at_warmup.unwrap_or((0, 0, 0));
            self.at_warmup = Some((x + a, y + b, z + c));
        }
    }

    pub fn rx_total(&self) -> Tally {
        self.rx.iter().fold(Tally::default(), |mut a, t| {
            a.merge(t);
            a
        })
    }

    pub fn tx_total(&self) -> Tally {
        self.tx.iter().fold(Tally::default(), |mut a, t| {
            a.merge(t);
            a
        })
    }
}

/// What a core publishes: its counters and its NFs' and chains' reports.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub core: CoreStats,
    pub nfs: Vec<(String, &'static str, NfStats, Report)>,
    pub chains: Vec<ChainStats>,
    /// Set when the core's loop has ended.
    pub finished: bool,
}
