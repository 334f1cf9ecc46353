//! The analyzer: a transmit-only port that takes frames like a sink and measures the probes
//! in them (see [`crate::traffic`]).
//!
//! Each core's queue keeps its own [`ProbeStats`]; nothing is shared on the packet path. The
//! session clock is read once per burst. When the queue goes away (its core's loop has
//! ended, before the dataplane joins the core) it hands its stats to its slot in
//! [`AnalyzerSlots`], where the dataplane merges the cores. Nothing is handed over while
//! running: copying thousands of streams at every idle moment would cost more than it tells.

use std::sync::Arc;

use super::{BufPool, PktBuf, TxQueue};
use crate::traffic::streams::ProbeStats;
use crate::traffic::ProbeSession;

/// Each core's final stats of one analyzer port, by core.
pub type AnalyzerSlots = Vec<Arc<spin::Mutex<ProbeStats>>>;

/// An analyzer transmit queue.
#[derive(Debug)]
pub struct Analyzer {
    stats: ProbeStats,
    session: ProbeSession,
    slot: Arc<spin::Mutex<ProbeStats>>,
}

impl Analyzer {
    /// A queue that tracks at most `max_streams` streams and reports into `slot`.
    pub fn new(session: ProbeSession, max_streams: usize, slot: Arc<spin::Mutex<ProbeStats>>) -> Analyzer {
        Analyzer { stats: ProbeStats::new(max_streams), session, slot }
    }
}

impl TxQueue for Analyzer {
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        let n = pkts.len();
        let now = self.session.now_ns();
        for b in pkts.drain(..) {
            self.stats.record(b.data(), self.session.id, now);
            pool.put(b);
        }
        n
    }
}

impl Drop for Analyzer {
    fn drop(&mut self) {
        *self.slot.lock() = std::mem::take(&mut self.stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawGenerator;
    use crate::port::generator::Generator;
    use crate::port::{RxQueue, RxStatus};

    #[test]
    fn generated_probes_arrive_complete_with_latency() {
        let session = ProbeSession::new();
        let cfg: RawGenerator =
            toml::from_str("flows = 8\ncount = 1000\nsize = 128\nproto = \"mix\"").unwrap();
        let mut g = Generator::new(&cfg, 0, 1).with_probe(session.clone(), 0);
        let slot = Arc::new(spin::Mutex::new(ProbeStats::default()));
        let mut a = Analyzer::new(session.clone(), 64, Arc::clone(&slot));
        let mut pool = BufPool::new(256, 2048);
        let mut burst = Vec::new();
        while g.rx_burst(&mut pool, &mut burst, 32) != RxStatus::Exhausted {
            // Deliver each burst reversed: every frame but the first of a stream's run in the
            // burst is then reordered.
            burst.reverse();
            let n = burst.len();
            assert_eq!(a.tx_burst(&mut burst, &mut pool), n);
            assert!(burst.is_empty());
        }
        drop(a);
        let s = slot.lock().clone();
        let t = s.sequence_totals();
        assert_eq!((s.frames, s.probes, s.foreign, s.other_session), (1000, 1000, 0, 0));
        assert_eq!((t.expected, t.received, t.duplicates), (1000, 1000, 0));
        assert!(t.reordered > 0);
        assert_eq!(s.streams.len(), 8);
        assert_eq!(s.latency.count(), 1000);
    }
}
