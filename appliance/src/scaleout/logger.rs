//! The output logger role (`nflet logger --id N`, SNF §6): worker N sends every processed
//! frame here together with its flow's state after the frame; the logger stores the state
//! (newest clock wins) and only then releases the frame to the director. So every frame that
//! left the deployment is reflected in the state the logger holds, and when worker N fails, the
//! worker that takes over one of its flows pulls the flow's state from here with the ordinary
//! pull request. The logger runs no NF: it keeps the state as the bytes the worker's NFs
//! exported, which is all a recovery needs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::ChainId;
use nflet_nfs::time::{Clock, MonotonicClock, Nanos};
use nflet_scale::clock::{check_state, StateUpdate};
use nflet_scale::units::{LogicalClock, WorkerId};
use nflet_scale::wire::{answer_body, is_state_message, Kind, Message, Sealer, Verifier, DIRECTOR};

use super::fabric::{Fabric, Idle, Outgoing};
use crate::config::scale::Scale;

/// A logger's counters (printed as JSON when it stops).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoggerCounters {
    pub logged: u64,
    pub released: u64,
    pub stale_states: u64,
    pub malformed: u64,
    pub pulls_served: u64,
    pub pulls_empty: u64,
    pub resync_pushes: u64,
    pub not_from_worker: u64,
    pub rejected: std::collections::BTreeMap<&'static str, u64>,
    pub flows: usize,
    /// What `[scale] impair_*` did to this instance's sends.
    pub impaired: super::fabric::ImpairCounters,
}

struct Stored {
    clock: LogicalClock,
    chain: ChainId,
    state: Vec<u8>,
    last: Nanos,
}

/// The output logger of one worker.
pub struct Logger {
    worker: WorkerId,
    fabric: Fabric,
    scale: Scale,
    sealer: Sealer,
    verifier: Verifier,
    store: HashMap<FlowKey, Stored>,
    pub counters: LoggerCounters,
    /// Told to stop: serve until nothing has arrived for a while (see [`Logger::run`]).
    stopping: Option<Drain>,
}

/// A stopping logger still releases what its worker sent before stopping: it exits once the
/// fabric has been quiet for `quiet`, or at `limit` whatever comes.
#[derive(Debug, Clone, Copy)]
struct Drain {
    quiet_until: Nanos,
    limit: Nanos,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger").field("worker", &self.worker).finish()
    }
}

impl Logger {
    /// The logger of worker `id`; `deployment`: the configuration's fingerprint.
    pub fn new(scale: Scale, id: u16, deployment: u64) -> Result<Logger, String> {
        let addr = *scale
            .loggers
            .get(usize::from(id))
            .ok_or_else(|| format!("logger {id}: `[scale] loggers` has no address for worker {id}"))?;
        let mut fabric = Fabric::bind(Scale::bind_address(addr)).map_err(|e| e.to_string())?;
        fabric.impair(scale.impair);
        let me = Scale::logger_id(id);
        Ok(Logger {
            worker: WorkerId(id),
            fabric,
            sealer: Sealer::new(&scale.key, me, deployment, super::first_sequence()),
            verifier: Verifier::new(&scale.key, deployment),
            scale,
            store: HashMap::new(),
            counters: LoggerCounters::default(),
            stopping: None,
        })
    }

    pub fn run(&mut self, stop: &Arc<AtomicBool>) {
        let clock = MonotonicClock::new();
        let mut next_hello = Nanos::ZERO;
        let mut next_sweep = Nanos::ZERO;
        let mut datagram = Vec::new();
        let mut idle = Idle::backing_off(Duration::from_micros(20), Duration::from_millis(1));
        while !stop.load(Ordering::Relaxed) {
            let now = clock.now();
            if let Some(d) = self.stopping {
                if now >= d.quiet_until || now >= d.limit {
                    break;
                }
            }
            let mut got = 0;
            while got < 64 {
                if !self.fabric.recv_into(&mut datagram) {
                    break;
                }
                got += 1;
                if !is_state_message(&datagram) {
                    self.counters.malformed += 1;
                    continue;
                }
                match self.verifier.open(&datagram) {
                    Ok(m) => self.on_message(m, now),
                    Err(e) => *self.counters.rejected.entry(e.name()).or_default() += 1,
                }
            }
            if now >= next_hello {
                next_hello = now.saturating_add(self.scale.heartbeat);
                let director = self.scale.director;
                self.send(Kind::Hello, ChainId(0), &FlowKey::default(), LogicalClock::ZERO, &[], director);
            }
            if now >= next_sweep {
                next_sweep = now.saturating_add(Nanos::from_secs(1));
                let idle_limit = self.scale.decisions.flow_idle_timeout;
                self.store.retain(|_, s| now.saturating_sub(s.last) < idle_limit);
            }
            if got > 0 {
                let quiet = self.drain_quiet();
                if let Some(d) = &mut self.stopping {
                    d.quiet_until = now.saturating_add(quiet);
                }
            }
            idle.after_poll(got, &mut self.fabric);
        }
        self.counters.flows = self.store.len();
        self.counters.impaired = self.fabric.impaired;
    }

    fn store(&mut self, m: &Message<'_>, state: &[u8], now: Nanos) {
        let held = self.store.get(&m.flow).map(|s| s.clock);
        if check_state(held, m.clock) == StateUpdate::RefuseStale {
            self.counters.stale_states += 1;
            return;
        }
        let s = self.store.entry(m.flow).or_insert_with(|| Stored {
            clock: m.clock,
            chain: m.chain,
            state: Vec::new(),
            last: now,
        });
        s.clock = m.clock;
        s.chain = m.chain;
        s.last = now;
        s.state.clear();
        s.state.extend_from_slice(state);
    }

    fn on_message(&mut self, m: Message<'_>, now: Nanos) {
        match m.kind {
            Kind::Logged | Kind::Push if m.sender != self.worker => self.counters.not_from_worker += 1,
            Kind::Logged => {
                let Some((frame, state)) = split_logged(m.body) else {
                    self.counters.malformed += 1;
                    return;
                };
                self.counters.logged += 1;
                self.store(&m, state, now);
                // Released only now: the state it reflects is stored.
                let director = self.scale.director;
                self.fabric.send(frame, director);
                self.counters.released += 1;
            }
            Kind::Push => {
                self.counters.resync_pushes += 1;
                self.store(&m, m.body, now);
            }
            Kind::PullRequest => {
                let Some(to) = self.scale.addr_of(m.sender) else { return };
                self.counters.pulls_served += 1;
                let mut body = Vec::new();
                answer_body(m.clock, &mut body);
                let (kind, chain, clock) = match self.store.get(&m.flow) {
                    Some(s) => {
                        body.extend_from_slice(&s.state);
                        (Kind::State, s.chain, s.clock)
                    }
                    None => {
                        self.counters.pulls_empty += 1;
                        (Kind::NoState, m.chain, LogicalClock::ZERO)
                    }
                };
                self.send(kind, chain, &m.flow, clock, &body, to);
            }
            Kind::Stop if m.sender == DIRECTOR && self.stopping.is_none() => {
                self.stopping = Some(Drain {
                    quiet_until: now.saturating_add(self.drain_quiet()),
                    limit: now.saturating_add(Nanos::from_secs(2)),
                });
            }
            _ => {}
        }
    }

    /// How long a stopping logger waits for the fabric to go quiet: the worker's last messages
    /// may still be on their way (three heartbeats, at least 50 ms).
    fn drain_quiet(&self) -> Nanos {
        Nanos(self.scale.heartbeat.0.saturating_mul(3).max(Nanos::from_millis(50).0))
    }

    fn send(
        &mut self,
        kind: Kind,
        chain: ChainId,
        flow: &FlowKey,
        clock: LogicalClock,
        body: &[u8],
        to: SocketAddr,
    ) {
        let m = Outgoing { kind, chain, flow, clock, body };
        self.fabric.send_message(&mut self.sealer, m, to);
    }
}

/// The frame's datagram and the state of a `Logged` body.
fn split_logged(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let end = 4usize.checked_add(usize::try_from(len).ok()?)?;
    Some((body.get(4..end)?, body.get(end..)?))
}

#[cfg(test)]
mod tests {
    use super::split_logged;

    #[test]
    fn logged_bodies_split_or_are_refused() {
        let mut body = 3u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"abcSTATE");
        assert_eq!(split_logged(&body), Some((&b"abc"[..], &b"STATE"[..])));
        for n in 0..7 {
            assert_eq!(split_logged(&body[..n]), None, "cut at {n}");
        }
        let huge = u32::MAX.to_be_bytes();
        assert_eq!(split_logged(&huge), None);
    }
}
