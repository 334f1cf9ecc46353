//! The sink: a transmit-only port that counts frames and gives their buffers back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{BufPool, PktBuf, TxQueue};

/// Totals of one sink, shared by its per-core queues (each adds once per burst).
#[derive(Debug, Default)]
pub struct SinkTotals {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
}

/// A sink transmit queue.
#[derive(Debug)]
pub struct Sink {
    totals: Arc<SinkTotals>,
}

impl Sink {
    pub fn new(totals: Arc<SinkTotals>) -> Sink {
        Sink { totals }
    }
}

impl TxQueue for Sink {
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        let n = pkts.len();
        let bytes: usize = pkts.iter().map(PktBuf::len).sum();
        for b in pkts.drain(..) {
            pool.put(b);
        }
        self.totals.packets.fetch_add(n as u64, Ordering::Relaxed);
        self.totals.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        n
    }
}
