//! A clairvoyant provisioning bound: how close to the demand *any* pool of whole workers can
//! stay on a trace without queueing for longer than a short window.
//!
//! The oracle knows the trace. It cuts time into windows of `window` (the launch delay: no
//! real policy can react faster) and, in each, runs exactly the fewest whole workers whose
//! capacity carries that window's bytes — launched and retired instantly, packed perfectly.
//! An epoch's provisioned capacity is the mean over its windows. Any policy that keeps every
//! window's demand within the running workers' capacity provisions at least this much, so
//! its provisioned ÷ demand at an epoch is at least the oracle's: traffic that is burstier
//! inside an epoch than the epoch mean costs capacity whatever the policy.

use nflet_nfs::time::Nanos;
use serde::Serialize;

use super::trace::Trace;

/// The oracle's provisioning over a trace, in the terms of [`super::run::RunResult`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OracleBound {
    /// The window, ms.
    pub window_ms: f64,
    /// Provisioned capacity summed over the epochs ÷ demand summed over them.
    pub ratio_total: f64,
    /// The same over the busy epochs (demand ≥ half the peak epoch's).
    pub ratio_busy: f64,
    /// The worst busy epoch's provisioned ÷ demand.
    pub ratio_busy_max: f64,
}

/// The bound for workers of `capacity` bytes/s, windows of `window` and epochs of `epoch`
/// (a whole number of windows; a trailing part window counts as a whole one).
pub fn bound(trace: &Trace, capacity: f64, window: Nanos, epoch: Nanos) -> OracleBound {
    let (w, e) = (window.0.max(1), epoch.0.max(1));
    let per_epoch = e.div_ceil(w).max(1) as usize;
    let windows = (trace.end().0 / w + 1) as usize;
    let mut bytes = vec![0u64; windows.div_ceil(per_epoch) * per_epoch];
    for p in &trace.packets {
        if let Some(b) = bytes.get_mut((p.at.0 / w) as usize) {
            *b += p.len.0;
        }
    }
    let window_capacity = capacity * w as f64 / 1e9;
    // Per epoch: (demand bytes, provisioned bytes' worth of capacity).
    let epochs: Vec<(f64, f64)> = bytes
        .chunks(per_epoch)
        .map(|c| {
            let demand: u64 = c.iter().sum();
            let workers: f64 = c.iter().map(|&b| (b as f64 / window_capacity).ceil()).sum();
            (demand as f64, workers * window_capacity)
        })
        .collect();
    let ratio = |es: &[(f64, f64)]| {
        let d: f64 = es.iter().map(|x| x.0).sum();
        if d > 0.0 {
            es.iter().map(|x| x.1).sum::<f64>() / d
        } else {
            0.0
        }
    };
    let peak = epochs.iter().map(|x| x.0).fold(0.0, f64::max);
    let busy: Vec<(f64, f64)> = epochs.iter().copied().filter(|x| x.0 > 0.0 && x.0 >= peak / 2.0).collect();
    OracleBound {
        window_ms: w as f64 / 1e6,
        ratio_total: ratio(&epochs),
        ratio_busy: ratio(&busy),
        ratio_busy_max: busy.iter().map(|x| x.1 / x.0).fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use nflet_nfs::flow::FlowKey;
    use nflet_nfs::ids::Bytes;

    use super::*;
    use crate::eval::trace::{FlowIdx, TracePacket};

    fn trace(packets: &[(u64, u64)]) -> Trace {
        Trace {
            keys: vec![FlowKey::default()],
            packets: packets
                .iter()
                .map(|&(at_ms, len)| TracePacket {
                    at: Nanos::from_millis(at_ms),
                    flow: FlowIdx(0),
                    len: Bytes(len),
                })
                .collect(),
            flow_bytes: vec![packets.iter().map(|p| p.1).sum()],
        }
    }

    #[test]
    fn whole_workers_per_window_by_hand() {
        // Workers of 1000 B/s, 1 s windows, 2 s epochs.
        let (cap, w, e) = (1000.0, Nanos::from_secs(1), Nanos::from_secs(2));
        // Steady 1000 B per window: one worker each, exactly the demand.
        let steady = bound(&trace(&[(0, 1000), (1000, 1000), (2000, 1000), (3000, 1000)]), cap, w, e);
        assert_eq!((steady.ratio_total, steady.ratio_busy, steady.ratio_busy_max), (1.0, 1.0, 1.0));
        // The same epoch demand in one burst: 2 workers for a window, none for the other —
        // whole workers cost nothing when the burst fills them.
        let burst = bound(&trace(&[(0, 2000), (2000, 1000), (3000, 1000)]), cap, w, e);
        assert_eq!(burst.ratio_busy_max, 1.0);
        // 1500 B in a window needs 2 workers: epoch 0 provisions 3000 for 2500.
        let ragged = bound(&trace(&[(0, 1500), (1000, 1000), (2000, 1000), (3000, 1000)]), cap, w, e);
        assert_eq!(ragged.ratio_busy_max, 3000.0 / 2500.0);
        assert_eq!(ragged.ratio_total, 5000.0 / 4500.0);
        // A quiet epoch (< half the peak) is left out of the busy figures only.
        let quiet = bound(&trace(&[(0, 1500), (1000, 1000), (2000, 100)]), cap, w, e);
        assert_eq!(quiet.ratio_busy, 3000.0 / 2500.0);
        assert_eq!(quiet.ratio_total, 4000.0 / 2600.0);
    }
}
