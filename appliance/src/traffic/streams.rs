//! What an analyzer learns from received frames: per-stream sequence tracking (loss,
//! duplicates, reordering) and the latency histogram. Pure bookkeeping, no I/O: time is
//! passed in, so every case is tested with exact numbers.
//!
//! Sequence accounting, per stream (`seq` counts a stream's frames from 0):
//! - a frame above the highest sequence seen moves the highest up (a gap is not yet a loss:
//!   the missing frames may still come);
//! - a frame below it is *reordered*; within the last [`WINDOW`] sequence numbers a bitmap
//!   tells a late frame from a *duplicate*; further back it is counted as *late* (reordered,
//!   taken as new: it cannot be told from a duplicate any more);
//! - at the end, a stream expected `highest + 1` frames; lost = expected − unique received.
//!   Frames lost after a stream's last received one are only visible when the number sent is
//!   known (a generator in the same process): see [`super::report`].

use std::collections::HashMap;

use super::histogram::Histogram;
use super::probe::{self, Probe};

/// How many sequence numbers below the highest a stream remembers exactly.
pub const WINDOW: u64 = 256;
const WORDS: usize = (WINDOW / 64) as usize;

/// A stream: one flow of one generator port of one sending process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub session: u32,
    pub port: u16,
    pub stream: u32,
}

/// One stream's sequence state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub highest: u64,
    /// Distinct frames received.
    pub received: u64,
    pub duplicates: u64,
    /// Frames that arrived after a higher sequence number (late ones included).
    pub reordered: u64,
    /// Reordered frames further than [`WINDOW`] behind (not checked for duplication).
    pub late: u64,
    /// Bit `i` set: `highest - i` was received.
    seen: [u64; WORDS],
}

impl StreamState {
    /// A stream whose first received frame is `seq`.
    fn first(seq: u64) -> StreamState {
        let mut s = StreamState { highest: seq, received: 1, ..StreamState::default() };
        s.seen[0] = 1;
        s
    }

    fn bit(&self, back: u64) -> bool {
        self.seen.get((back / 64) as usize).is_some_and(|w| w & (1 << (back % 64)) != 0)
    }

    fn set(&mut self, back: u64) {
        if let Some(w) = self.seen.get_mut((back / 64) as usize) {
            *w |= 1 << (back % 64);
        }
    }

    /// Shifts the window up by `by` sequence numbers.
    fn advance(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let old = self.seen;
        for (i, w) in self.seen.iter_mut().enumerate() {
            let lo = i.checked_sub(words).and_then(|j| old.get(j)).copied().unwrap_or(0);
            let below = i.checked_sub(words + 1).and_then(|j| old.get(j)).copied().unwrap_or(0);
            *w = if bits == 0 { lo } else { (lo << bits) | (below >> (64 - bits)) };
        }
    }

    /// Accounts for frame `seq` of this stream.
    pub fn record(&mut self, seq: u64) {
        if seq > self.highest {
            self.advance(seq - self.highest);
            self.highest = seq;
            self.set(0);
            self.received += 1;
            return;
        }
        let back = self.highest - seq;
        if back >= WINDOW {
            self.received += 1;
            self.reordered += 1;
            self.late += 1;
        } else if self.bit(back) {
            self.duplicates += 1;
        } else {
            self.set(back);
            self.received += 1;
            self.reordered += 1;
        }
    }

    /// Frames this stream should have delivered, judging by the highest sequence seen.
    pub fn expected(&self) -> u64 {
        self.highest.saturating_add(1)
    }

    fn merge(&mut self, o: &StreamState) {
        self.highest = self.highest.max(o.highest);
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.late += o.late;
    }
}

/// Everything one analyzer queue (one core) has seen; merged over cores at the end.
#[derive(Debug, Clone, Default)]
pub struct ProbeStats {
    /// Frames and bytes handed to the analyzer, probes or not.
    pub frames: u64,
    pub bytes: u64,
    /// Frames that carried a probe, and their bytes.
    pub probes: u64,
    pub probe_bytes: u64,
    /// Frames without a probe (ARP, neighbour discovery, other traffic).
    pub foreign: u64,
    /// Probes from another session: counted, but their latency is not comparable.
    pub other_session: u64,
    /// Probes whose TX time lies ahead of the analyzer's clock (should not happen in one
    /// session; counted rather than recorded as a huge latency).
    pub clock_behind: u64,
    /// Probes of streams beyond the tracking limit (counted, not sequence-checked).
    pub untracked: u64,
    /// Time of the first and last probe received, on the session clock.
    pub first_ns: Option<u64>,
    pub last_ns: u64,
    pub streams: HashMap<StreamKey, StreamState>,
    pub latency: Histogram,
    /// The most streams tracked.
    pub max_streams: usize,
}

impl ProbeStats {
    /// Stats for an analyzer that tracks at most `max_streams` streams (room for up to 1024
    /// is reserved now; more grows the table once per new stream, never per frame).
    pub fn new(max_streams: usize) -> ProbeStats {
        ProbeStats {
            streams: HashMap::with_capacity(max_streams.min(1024)),
            max_streams,
            ..ProbeStats::default()
        }
    }

    /// Accounts for one received frame at time `now_ns`; `session` is the analyzer's own.
    pub fn record(&mut self, frame: &[u8], session: u32, now_ns: u64) {
        self.frames += 1;
        self.bytes += frame.len() as u64;
        let Some(p) = probe::find(frame) else {
            self.foreign += 1;
            return;
        };
        self.record_probe(&p, frame.len(), session, now_ns);
    }

    /// Accounts for a probe found in a frame of `len` bytes.
    pub fn record_probe(&mut self, p: &Probe, len: usize, session: u32, now_ns: u64) {
        self.probes += 1;
        self.probe_bytes += len as u64;
        self.first_ns.get_or_insert(now_ns);
        self.last_ns = self.last_ns.max(now_ns);
        if p.session != session {
            self.other_session += 1;
        } else if let Some(lat) = now_ns.checked_sub(p.tx_ns) {
            self.latency.record(lat);
        } else {
            self.clock_behind += 1;
        }
        let key = StreamKey { session: p.session, port: p.port, stream: p.stream };
        let room = self.streams.len() < self.max_streams;
        match self.streams.get_mut(&key) {
            Some(s) => s.record(p.seq),
            None if room => {
                self.streams.insert(key, StreamState::first(p.seq));
            }
            None => self.untracked += 1,
        }
    }

    /// Adds another core's stats.
    pub fn merge(&mut self, o: &ProbeStats) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.probes += o.probes;
        self.probe_bytes += o.probe_bytes;
        self.foreign += o.foreign;
        self.other_session += o.other_session;
        self.clock_behind += o.clock_behind;
        self.untracked += o.untracked;
        self.first_ns = match (self.first_ns, o.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = self.last_ns.max(o.last_ns);
        for (k, s) in &o.streams {
            match self.streams.get_mut(k) {
                Some(mine) => mine.merge(s),
                None => {
                    self.streams.insert(*k, s.clone());
                }
            }
        }
        self.latency.merge(&o.latency);
        self.max_streams = self.max_streams.max(o.max_streams);
    }

    /// Totals over all streams: (expected by sequence, distinct received, duplicates,
    /// reordered, late).
    pub fn sequence_totals(&self) -> SequenceTotals {
        let mut t = SequenceTotals { untracked: self.untracked, ..SequenceTotals::default() };
        for s in self.streams.values() {
            t.expected += s.expected();
            t.received += s.received;
            t.duplicates += s.duplicates;
            t.reordered += s.reordered;
            t.late += s.late;
        }
        t
    }
}

/// Sequence accounting summed over streams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SequenceTotals {
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
    pub reordered: u64,
    pub late: u64,
    pub untracked: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u64]) -> StreamState {
        let mut s = StreamState::first(seqs[0]);
        for q in &seqs[1..] {
            s.record(*q);
        }
        s
    }

    #[test]
    fn sequences_give_exact_loss_duplicate_and_reorder_counts() {
        /// (expected, distinct received, duplicates, reordered, late)
        type Counts = (u64, u64, u64, u64, u64);
        let far = WINDOW + 10;
        // (name, arrivals, counts)
        let cases: &[(&str, Vec<u64>, Counts)] = &[
            ("in order", (0..1000).collect(), (1000, 1000, 0, 0, 0)),
            ("one lost", vec![0, 1, 2, 4, 5], (6, 5, 0, 0, 0)),
            ("swap", vec![0, 2, 1, 3], (4, 4, 0, 1, 0)),
            ("duplicate", vec![0, 1, 1, 2, 2, 2], (3, 3, 3, 0, 0)),
            ("late duplicate", vec![0, 2, 1, 1, 3], (4, 4, 1, 1, 0)),
            ("reversed", vec![4, 3, 2, 1, 0], (5, 5, 0, 4, 0)),
            ("gap then fill", vec![0, 100, 50, 99, 1], (101, 5, 0, 3, 0)),
            ("beyond window", vec![0, far, 1], (far + 1, 3, 0, 1, 1)),
            ("window edge", vec![0, WINDOW - 1, 0, 1], (WINDOW, 3, 1, 1, 0)),
            ("first seen late", vec![5, 6, 7], (8, 3, 0, 0, 0)),
            ("big jump clears", vec![0, 1, 10_000, 10_000, 9_999], (10_001, 4, 1, 1, 0)),
        ];
        for (name, seqs, counts) in cases {
            let s = run(seqs);
            assert_eq!((s.expected(), s.received, s.duplicates, s.reordered, s.late), *counts, "{name}");
        }
    }

    #[test]
    fn window_shifts_keep_bits_across_words() {
        // Every even number, then the odd ones downwards: 199 is new and highest, the 99 odd
        // ones below it are reordered; then five duplicates spread over the window's words.
        let mut seqs: Vec<u64> = (0..200).step_by(2).collect();
        seqs.extend((0..100u64).rev().map(|i| 2 * i + 1));
        seqs.extend([0, 64, 65, 128, 199]);
        let s = run(&seqs);
        assert_eq!((s.received, s.reordered, s.duplicates, s.late), (200, 99, 5, 0));
    }

    fn frame_with(p: &Probe) -> Vec<u8> {
        let mut payload = vec![0u8; probe::PROBE_LEN + 8];
        assert!(p.write(&mut payload));
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2);
        let mut v = Vec::new();
        b.write(&mut v, &payload).unwrap();
        v
    }

    #[test]
    fn stats_count_latency_only_for_the_own_session_and_merge_per_core() {
        let mine = |stream, seq, tx_ns| Probe { session: 7, port: 0, stream, seq, tx_ns };
        let (mut a, mut b) = (ProbeStats::new(16), ProbeStats::new(16));
        a.record(&frame_with(&mine(1, 0, 1_000)), 7, 1_500);
        a.record(&frame_with(&mine(1, 1, 2_000)), 7, 4_000);
        a.record(b"\x02\x00 not a probe frame at all......", 7, 5_000);
        b.record(&frame_with(&mine(2, 0, 1_000)), 7, 2_000);
        b.record(&frame_with(&Probe { session: 9, ..mine(2, 0, 0) }), 7, 3_000);
        b.record(&frame_with(&mine(2, 2, 9_000)), 7, 8_000); // TX time ahead of now
        a.merge(&b);
        assert_eq!((a.frames, a.probes, a.foreign, a.other_session, a.clock_behind), (6, 5, 1, 1, 1));
        assert_eq!(a.latency.count(), 3);
        assert_eq!((a.latency.min(), a.latency.max()), (Some(500), Some(2_000)));
        assert_eq!(a.first_ns, Some(1_500));
        assert_eq!(a.last_ns, 8_000);
        let t = a.sequence_totals();
        // Streams: (7,0,1) got 0,1; (7,0,2) got 0,2; (9,0,2) got 0.
        assert_eq!((t.expected, t.received, t.duplicates, t.reordered), (2 + 3 + 1, 5, 0, 0));
    }

    #[test]
    fn streams_beyond_the_limit_are_counted_not_tracked() {
        let mut s = ProbeStats::new(2);
        for stream in 0..5 {
            s.record_probe(&Probe { session: 1, port: 0, stream, seq: 0, tx_ns: 0 }, 100, 1, 10);
        }
        assert_eq!((s.streams.len(), s.untracked, s.probes), (2, 3, 5));
    }
}
