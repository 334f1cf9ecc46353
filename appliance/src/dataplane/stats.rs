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
    /// Nanoseconds spent inside each chain (index = chain): the CPU time billed to it. Only
    /// bursts that carry packets are timed, so idle polling never bills.
    pub chain_cpu_ns: Vec<u64>,
    /// Processing time of each non-empty burst (parse to transmit).
    pub bursts: BurstHistogram,
}

/// A histogram of burst processing times with power-of-two bucket bounds, 256 ns to 4 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BurstHistogram {
    /// `counts[i]`: bursts that took less than [`BurstHistogram::bound_ns`]`(i)` and at least
    /// the previous bound; the last bucket has no upper bound.
    pub counts: [u64; BurstHistogram::BUCKETS],
    pub sum_ns: u64,
}

impl BurstHistogram {
    pub const BUCKETS: usize = 16;
    /// log2 of the first bucket's upper bound (256 ns).
    const FIRST_BOUND_LOG2: u32 = 8;

    /// The upper bound of bucket `i` in nanoseconds; `None` for the last (unbounded) one.
    pub fn bound_ns(i: usize) -> Option<u64> {
        (i + 1 < Self::BUCKETS).then(|| 1u64 << (Self::FIRST_BOUND_LOG2 as usize + i))
    }

    #[inline]
    pub fn record(&mut self, ns: u64) {
        // Bucket = how many powers of two past 256 ns the duration reaches.
        let bits = u64::BITS - ns.leading_zeros();
        let i = (bits.saturating_sub(Self::FIRST_BOUND_LOG2) as usize).min(Self::BUCKETS - 1);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum_ns += ns;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn merge(&mut self, o: &BurstHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum_ns += o.sum_ns;
    }
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
        if self.chain_cpu_ns.len() < o.chain_cpu_ns.len() {
            self.chain_cpu_ns.resize(o.chain_cpu_ns.len(), 0);
        }
        for (a, b) in self.chain_cpu_ns.iter_mut().zip(&o.chain_cpu_ns) {
            *a += b;
        }
        self.bursts.merge(&o.bursts);
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

#[cfg(test)]
mod tests {
    use super::BurstHistogram;

    #[test]
    fn bursts_fall_in_power_of_two_buckets() {
        let mut h = BurstHistogram::default();
        for ns in [0, 255, 256, 511, 512, 1_000_000, u64::MAX / 2] {
            h.record(ns);
        }
        assert_eq!(h.counts[0], 2, "below 256 ns");
        assert_eq!(h.counts[1], 2, "256..512 ns");
        assert_eq!(h.counts[2], 1, "512 ns..1 µs");
        // 1 ms lies in [2^19, 2^20) ns: bucket 12, bounded by 2^20 ns.
        assert_eq!(h.counts[12], 1);
        assert_eq!(BurstHistogram::bound_ns(12), Some(1 << 20));
        assert_eq!(h.counts[BurstHistogram::BUCKETS - 1], 1, "the unbounded bucket");
        assert_eq!(BurstHistogram::bound_ns(BurstHistogram::BUCKETS - 1), None);
        assert_eq!(h.count(), 7);
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
