//! Modelled workers: what a packet steered to a worker costs in latency.
//!
//! A worker processes `capacity` bytes per second, one packet at a time, in arrival order (a
//! FIFO input queue). A packet arriving at `at` starts when the worker is free, takes
//! `len / capacity`, and so leaves at `done = max(at, busy_until) + service`. A packet whose
//! flow state is not in place until `ready` is held in the runtime's buffer without blocking
//! the worker's other flows: it leaves at `max(done, ready + service)`. Latency is departure
//! minus arrival: queueing + service + state wait.
//!
//! The pool mirrors the director's: a slot per worker ID, activated when the director's launch
//! comes up after the launch delay, deactivated when it retires or fails. A failed worker
//! loses the packets still in its queue; [`Worker::in_flight`] counts them.

use std::collections::VecDeque;

use nflet_nfs::ids::Bytes;
use nflet_nfs::time::Nanos;

use crate::units::{Rate, WorkerId};

/// When a packet leaves and how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    pub departure: Nanos,
    pub latency: Nanos,
    /// Part of the latency spent waiting for state.
    pub state_wait: Nanos,
}

/// One modelled worker.
#[derive(Debug, Clone)]
pub struct Worker {
    capacity: Rate,
    busy_until: Nanos,
    /// Departure times of packets not yet gone (ascending), to count losses on failure.
    queue: VecDeque<Nanos>,
    pub active: bool,
    /// Bytes steered to the worker since the epoch started.
    pub epoch_bytes: u64,
    /// Active at some point of the current epoch.
    pub seen_in_epoch: bool,
}

impl Worker {
    pub fn new(capacity: Rate) -> Worker {
        Worker {
            capacity,
            busy_until: Nanos::ZERO,
            queue: VecDeque::new(),
            active: false,
            epoch_bytes: 0,
            seen_in_epoch: false,
        }
    }

    /// Time to process `len` bytes.
    pub fn service(&self, len: Bytes) -> Nanos {
        if self.capacity.0 > 0.0 {
            Nanos((len.0 as f64 * 1e9 / self.capacity.0).ceil() as u64)
        } else {
            Nanos(u64::MAX)
        }
    }

    /// Processes a packet of `len` arriving at `at` whose state is in place at `ready`.
    pub fn serve(&mut self, at: Nanos, len: Bytes, ready: Nanos) -> Served {
        let service = self.service(len);
        let done = at.max(self.busy_until).saturating_add(service);
        self.busy_until = done;
        let departure = done.max(ready.saturating_add(service));
        while self.queue.front().is_some_and(|&d| d <= at) {
            self.queue.pop_front();
        }
        self.queue.push_back(done);
        self.epoch_bytes = self.epoch_bytes.saturating_add(len.0);
        Served {
            departure,
            latency: departure.saturating_sub(at),
            state_wait: departure.saturating_sub(done),
        }
    }

    /// Packets accepted but not yet processed at `now`.
    pub fn in_flight(&self, now: Nanos) -> usize {
        self.queue.iter().filter(|&&d| d > now).count()
    }

    /// Work queued at `now`, as time.
    pub fn backlog(&self, now: Nanos) -> Nanos {
        self.busy_until.saturating_sub(now)
    }

    /// The worker (re)starts empty.
    pub fn start(&mut self) {
        self.active = true;
        self.seen_in_epoch = true;
        self.busy_until = Nanos::ZERO;
        self.queue.clear();
    }
}

/// The modelled pool, indexed by worker ID.
#[derive(Debug, Clone)]
pub struct Workers {
    slots: Vec<Worker>,
    /// Launches the director asked for: the ID and when it is up.
    launching: Vec<(WorkerId, Nanos)>,
}

impl Workers {
    /// `max` slots of `capacity`; the first `initial` active.
    pub fn new(max: u16, initial: u16, capacity: Rate) -> Workers {
        let mut slots = vec![Worker::new(capacity); usize::from(max)];
        for w in slots.iter_mut().take(usize::from(initial)) {
            w.start();
        }
        Workers { slots, launching: Vec::new() }
    }

    pub fn get_mut(&mut self, id: WorkerId) -> Option<&mut Worker> {
        self.slots.get_mut(usize::from(id.0))
    }

    pub fn get(&self, id: WorkerId) -> Option<&Worker> {
        self.slots.get(usize::from(id.0))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Worker> {
        self.slots.iter_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.slots.iter()
    }

    pub fn active(&self) -> usize {
        self.slots.iter().filter(|w| w.active).count()
    }

    /// The director asked for `id` at `now`; it is up `delay` later.
    pub fn launch(&mut self, id: WorkerId, now: Nanos, delay: Nanos) {
        self.launching.push((id, now.saturating_add(delay)));
    }

    /// Launches that are up by `now`: they are started and returned for the director.
    pub fn ready(&mut self, now: Nanos, out: &mut Vec<WorkerId>) {
        let mut i = 0;
        while let Some(&(id, at)) = self.launching.get(i) {
            if at <= now {
                self.launching.swap_remove(i);
                if let Some(w) = self.get_mut(id) {
                    w.start();
                }
                out.push(id);
            } else {
                i += 1;
            }
        }
    }

    /// The worker stops (retired or failed); what is queued still drains (retire) or is lost
    /// (failure; the caller counts [`Worker::in_flight`] first).
    pub fn stop(&mut self, id: WorkerId) {
        if let Some(w) = self.get_mut(id) {
            w.active = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_queueing_service_and_state_wait_by_hand() {
        // 1 byte per ns.
        let mut w = Worker::new(Rate(1e9));
        // (arrival, bytes, state ready) -> (departure, latency, state wait)
        let cases = [
            ((0, 1000, 0), (1000, 1000, 0)),         // idle worker: service only
            ((200, 500, 0), (1500, 1300, 0)),        // queues behind the first: 800 + 500
            ((1500, 100, 0), (1600, 100, 0)),        // arrives as the queue empties
            ((5000, 100, 6000), (6100, 1100, 1000)), // held until its state arrives
            ((5050, 100, 0), (5200, 150, 0)),        // another flow is not blocked by the held one
            ((7000, 200, 6500), (7200, 200, 0)),     // state arrived before the packet
        ];
        for ((at, len, ready), (dep, lat, wait)) in cases {
            let s = w.serve(Nanos(at), Bytes(len), Nanos(ready));
            assert_eq!(
                (s.departure, s.latency, s.state_wait),
                (Nanos(dep), Nanos(lat), Nanos(wait)),
                "packet at {at}"
            );
        }
        assert_eq!(w.epoch_bytes, 2000);
        assert_eq!(w.backlog(Nanos(7100)), Nanos(100));
        assert_eq!(w.in_flight(Nanos(7100)), 1);
    }

    #[test]
    fn launches_come_up_after_the_delay() {
        let mut p = Workers::new(4, 1, Rate(1e9));
        assert_eq!(p.active(), 1);
        p.launch(WorkerId(1), Nanos(100), Nanos(50));
        let mut up = Vec::new();
        p.ready(Nanos(149), &mut up);
        assert!(up.is_empty());
        p.ready(Nanos(150), &mut up);
        assert_eq!((up, p.active()), (vec![WorkerId(1)], 2));
        p.stop(WorkerId(0));
        assert_eq!(p.active(), 1);
    }
}
