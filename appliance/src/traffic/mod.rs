//! Measured traffic: the probe a generator writes into each frame, and what an analyzer port
//! learns from the probes it receives (throughput, loss, duplicates, reordering, latency).
//!
//! A *session* ties one process's generators and analyzers together: one monotonic clock
//! (TX times and arrival times are read from it), one random session id written into every
//! probe, and one flag that stops the generators (`nflet gen` ends sending, then waits for
//! frames in flight). Latency is measured only for probes of the analyzer's own session:
//! the clock's origin is private to the process, so a probe sent by another nflet (another
//! VM, another host, or just another process) has a TX time that means nothing here. Such
//! probes still count for throughput, loss, duplicates and reordering.
//!
//! Latency runs from the moment the generator wrote the frame to the moment the analyzer
//! saw it: it includes nflet's own chain, transmit ring and receive ring (the af_packet
//! receive ring hands frames over at least every millisecond at low rates).

pub mod gen;
pub mod histogram;
pub mod probe;
pub mod report;
pub mod streams;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use nflet_nfs::time::{Clock, MonotonicClock};

/// One process's probing context; clones share the clock and the halt flag.
#[derive(Debug, Clone)]
pub struct ProbeSession {
    pub clock: MonotonicClock,
    /// Written into every probe; an analyzer measures latency only for its own session.
    pub id: u32,
    /// Set to make every probing generator stop sending.
    pub halt: Arc<AtomicBool>,
    /// Probes sent by this session's queues.
    pub sent: Arc<AtomicU64>,
    /// Probing queues that have not finished sending.
    pub senders: Arc<AtomicUsize>,
}

impl ProbeSession {
    /// A new session with an id that differs between processes (process id and start time).
    pub fn new() -> ProbeSession {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        let mixed =
            (u64::from(std::process::id()) << 32 | u64::from(nanos)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        ProbeSession {
            clock: MonotonicClock::new(),
            id: (mixed >> 32) as u32,
            halt: Arc::default(),
            sent: Arc::default(),
            senders: Arc::default(),
        }
    }

    /// Probes sent so far by all of the session's queues.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// True once every probing queue has finished (or none was ever made).
    pub fn senders_done(&self) -> bool {
        self.senders.load(Ordering::Acquire) == 0
    }

    /// Nanoseconds on the session clock.
    pub fn now_ns(&self) -> u64 {
        self.clock.now().0
    }
}

impl Default for ProbeSession {
    fn default() -> Self {
        ProbeSession::new()
    }
}

/// A probing queue's link to its session: adds what it sends (once per burst) and says when
/// it has finished; registered on creation, finished at the latest when dropped.
#[derive(Debug)]
pub struct Sender {
    session: ProbeSession,
    finished: bool,
}

impl Sender {
    pub fn new(session: ProbeSession) -> Sender {
        session.senders.fetch_add(1, Ordering::AcqRel);
        Sender { session, finished: false }
    }

    pub fn session(&self) -> &ProbeSession {
        &self.session
    }

    /// True when the session wants sending to stop.
    pub fn halted(&self) -> bool {
        self.session.halt.load(Ordering::Relaxed)
    }

    /// Counts `n` probes sent.
    pub fn sent(&self, n: u64) {
        if n > 0 {
            self.session.sent.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// This queue sends no more.
    pub fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.session.senders.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.finish();
    }
}
