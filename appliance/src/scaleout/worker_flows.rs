//! A worker's record of the flows it has seen: the logical clock of the state it holds for
//! each (SNF §5.3), and the packets it holds while it pulls a flow's state from the previous
//! owner (§5.1). No I/O: [`WorkerFlows::admit`] says what to do with a packet and the worker
//! carries it out.

use std::collections::{HashMap, VecDeque};

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::ChainId;
use nflet_nfs::time::Nanos;
use nflet_scale::clock::{check_packet, check_state, PacketClock, StateUpdate};
use nflet_scale::units::{LogicalClock, WorkerId};
use nflet_scale::wire::SteerHeader;

use crate::config::scale::LOGGER;

/// A packet waiting for its flow's state.
#[derive(Debug)]
pub struct Held {
    pub header: SteerHeader,
    pub frame: Vec<u8>,
}

#[derive(Debug)]
struct Pull {
    from: WorkerId,
    chain: ChainId,
    clock: LogicalClock,
    flowlet: LogicalClock,
    /// When the first request went out (for the pull latency).
    first: Nanos,
    sent: Nanos,
    tries: u8,
}

#[derive(Debug, Default)]
struct Entry {
    /// Clock of the last packet applied to the state held here (`None`: no state here).
    clock: Option<LogicalClock>,
    chain: ChainId,
    /// The moved flowlet (its first packet's clock) whose state is known to be here.
    synced: Option<LogicalClock>,
    pull: Option<Pull>,
    held: VecDeque<Held>,
    /// Peers whose pull of this flow arrived while this worker was itself pulling it: they
    /// are answered once the held packets ran, so they get the state those packets made.
    waiting: Vec<(WorkerId, ChainId, LogicalClock)>,
    /// The tuple an NF rewrote the flow's last frame to (a NAT's public side), if it did.
    rewritten: Option<FlowKey>,
    /// The state went to another worker (a pull answered, or the director said it moved on
    /// from a replica) and has not come back: the copy here is not the live one.
    given_away: bool,
    last: Nanos,
}

/// Pull requests deferred per flow; more are answered at once with what is here.
const MAX_WAITING: usize = 8;

/// What to do with an arriving data packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The state here is current: run the chain.
    Run,
    /// A pull is under way: the packet was held.
    Held,
    /// The state is elsewhere: the packet was held; send a pull request to `from`.
    Pull { from: WorkerId },
    /// The flow's hold buffer is full: drop the packet (counted).
    Overflow,
}

/// The outcome of a pull's answer.
#[derive(Debug, Default)]
pub struct Answered {
    pub install: bool,
    /// From the first request to the answer.
    pub waited: Nanos,
    /// From the request answered (the last one sent: a retry, or re-aimed at an output
    /// logger) to the answer.
    pub round_trip: Nanos,
    pub held: VecDeque<Held>,
}

/// A pull that timed out: ask again, or give up and run the held packets on what is here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Retry { flow: FlowKey, from: WorkerId, chain: ChainId, clock: LogicalClock },
    GiveUp { flow: FlowKey },
}

/// The flows of one worker.
#[derive(Debug)]
pub struct WorkerFlows {
    me: WorkerId,
    hold_limit: usize,
    /// Pull attempts before the held packets run on the state at hand.
    pull_tries: u8,
    map: HashMap<FlowKey, Entry>,
}

impl WorkerFlows {
    /// `pull_tries`: keep it long enough to outlast the director's failure detection, so a
    /// pull from a worker that died is re-aimed at its output logger rather than given up.
    pub fn new(me: WorkerId, hold_limit: usize, pull_tries: u8) -> WorkerFlows {
        WorkerFlows { me, hold_limit, pull_tries: pull_tries.max(1), map: HashMap::new() }
    }

    /// Clock of the state held for `flow`.
    pub fn clock(&self, flow: &FlowKey) -> Option<LogicalClock> {
        self.map.get(flow).and_then(|e| e.clock)
    }

    /// Decides for a data packet; a held packet is kept here (`frame` is taken).
    pub fn admit(&mut self, h: &SteerHeader, frame: &mut Option<Vec<u8>>, now: Nanos) -> Admit {
        if h.untracked {
            return Admit::Run;
        }
        let e = self.map.entry(h.flow).or_default();
        e.last = now;
        e.chain = h.chain;
        let moved_here = h.moved && h.prev_owner.is_some_and(|p| p != self.me);
        let retarget = match (&mut e.pull, h.prev_owner) {
            // The director now names another source for this flowlet, or the output logger of
            // a failed owner. (A later flowlet from elsewhere waits: its packets are admitted
            // again once this pull is answered, and pull then.)
            (Some(p), Some(from))
                if moved_here && p.from != from && (p.flowlet == h.flowlet || from.0 & LOGGER != 0) =>
            {
                p.from = from;
                // The request goes out with this packet's clock (answers echo it).
                p.clock = h.clock;
                p.tries = 1;
                p.sent = now;
                Some(from)
            }
            _ => None,
        };
        let admit = if let Some(from) = retarget {
            Admit::Pull { from }
        } else if e.pull.is_some() {
            Admit::Held
        } else if !moved_here || e.synced == Some(h.flowlet) {
            return Admit::Run;
        } else if e.clock.is_some_and(|c| check_packet(c, h.clock) == PacketClock::Apply) {
            // A proactive replica that is current (SNF §5.2): no pull.
            e.synced = Some(h.flowlet);
            return Admit::Run;
        } else {
            let Some(from) = h.prev_owner else { return Admit::Run };
            e.pull = Some(Pull {
                from,
                chain: h.chain,
                clock: h.clock,
                flowlet: h.flowlet,
                first: now,
                sent: now,
                tries: 1,
            });
            Admit::Pull { from }
        };
        if e.held.len() >= self.hold_limit {
            return Admit::Overflow;
        }
        if let Some(f) = frame.take() {
            e.held.push_back(Held { header: *h, frame: f });
        }
        admit
    }

    /// The packet with clock `clock` of `flow` ran here; `rewritten`: the tuple its frame left
    /// with, when an NF changed it.
    pub fn applied(&mut self, flow: &FlowKey, clock: LogicalClock, rewritten: Option<FlowKey>) {
        if let Some(e) = self.map.get_mut(flow) {
            e.clock = Some(e.clock.map_or(clock, |c| c.max(clock)));
            e.given_away = false;
            if rewritten.is_some() {
                e.rewritten = rewritten;
            }
        }
    }

    /// `flow`'s state went to another worker (see `Entry::given_away`).
    pub fn gave_away(&mut self, flow: &FlowKey) {
        if let Some(e) = self.map.get_mut(flow) {
            e.given_away = true;
        }
    }

    /// The flows whose live state is here, for a restarted director (`inventory.rs`). A copy
    /// given away is left out: its clock can equal the receiver's, which must win.
    pub fn inventory(&self) -> Vec<super::inventory::Holding> {
        self.map
            .iter()
            .filter(|(_, e)| !e.given_away)
            .filter_map(|(k, e)| {
                e.clock.map(|clock| super::inventory::Holding { flow: *k, clock, rewritten: e.rewritten })
            })
            .collect()
    }

    /// `from`'s answer to our request with clock `request` arrived at `now`: a pulled copy
    /// tagged `copy`, or word that it had none. Says whether to install the copy (stale copies
    /// are not) and how long the pull took, and hands back the packets to run now, in arrival
    /// order. `None`: no such pull is pending (a repeated answer, or the pull was re-aimed).
    pub fn pull_answered(
        &mut self,
        flow: &FlowKey,
        from: WorkerId,
        request: LogicalClock,
        copy: Option<LogicalClock>,
        now: Nanos,
    ) -> Option<Answered> {
        let e = self.map.get_mut(flow)?;
        if !e.pull.as_ref().is_some_and(|p| p.from == from && p.clock == request) {
            return None;
        }
        let pull = e.pull.take()?;
        e.synced = Some(pull.flowlet);
        let install = copy.is_some_and(|c| check_state(e.clock, c) == StateUpdate::Install);
        if install {
            e.clock = copy;
            e.given_away = false;
        }
        Some(Answered {
            install,
            waited: now.saturating_sub(pull.first),
            round_trip: now.saturating_sub(pull.sent),
            held: std::mem::take(&mut e.held),
        })
    }

    /// The director says `failed` is dead and the state of `flow` is at `source` (its output
    /// logger, or the worker that last released a frame of the flow): a pull of `flow`
    /// waiting on `failed` is re-aimed there. Returns the request to send (to, chain, clock),
    /// if any.
    pub fn recover(
        &mut self,
        flow: &FlowKey,
        failed: WorkerId,
        source: WorkerId,
        now: Nanos,
    ) -> Option<(WorkerId, ChainId, LogicalClock)> {
        let p = self.map.get_mut(flow)?.pull.as_mut()?;
        if p.from != failed {
            return None;
        }
        p.from = source;
        p.tries = 1;
        p.sent = now;
        Some((source, p.chain, p.clock))
    }

    /// The director says `failed` is dead and the newest state of `flow` is the copy here: a
    /// pull of `flow` waiting on `failed` ends; returns its chain and its held packets, to
    /// run on that copy.
    pub fn settle_here(&mut self, flow: &FlowKey, failed: WorkerId) -> Option<(ChainId, VecDeque<Held>)> {
        let e = self.map.get_mut(flow)?;
        let p = e.pull.as_ref().filter(|p| p.from == failed)?;
        let chain = p.chain;
        e.synced = Some(p.flowlet);
        e.pull = None;
        e.given_away = false;
        Some((chain, std::mem::take(&mut e.held)))
    }

    /// Defers `requester`'s pull of `flow` (for its packet with clock `clock`) while this
    /// worker is pulling the flow for an earlier flowlet; `false`: answer now. A request for
    /// an earlier flowlet than ours wants the state as it is here now, so pulls only ever
    /// wait for older flowlets and never wait on each other in a circle.
    pub fn defer_pull(
        &mut self,
        flow: &FlowKey,
        requester: WorkerId,
        chain: ChainId,
        clock: LogicalClock,
    ) -> bool {
        match self.map.get_mut(flow) {
            Some(e)
                if e.pull.as_ref().is_some_and(|p| clock > p.flowlet) && e.waiting.len() < MAX_WAITING =>
            {
                if !e.waiting.iter().any(|w| w.0 == requester && w.2 == clock) {
                    e.waiting.push((requester, chain, clock));
                }
                true
            }
            _ => false,
        }
    }

    /// The deferred pulls of `flow` to answer now.
    pub fn take_waiting(&mut self, flow: &FlowKey) -> Vec<(WorkerId, ChainId, LogicalClock)> {
        self.map.get_mut(flow).map(|e| std::mem::take(&mut e.waiting)).unwrap_or_default()
    }

    /// The flows whose state is here, with their chain and clock.
    pub fn held_state(&self) -> impl Iterator<Item = (FlowKey, ChainId, LogicalClock)> + '_ {
        self.map.iter().filter_map(|(k, e)| e.clock.map(|c| (*k, e.chain, c)))
    }

    /// A proactive copy arrived: whether it is newer than what is held (then it is recorded).
    pub fn push_arrived(&mut self, flow: &FlowKey, chain: ChainId, copy: LogicalClock, now: Nanos) -> bool {
        let e = self.map.entry(*flow).or_default();
        e.chain = chain;
        if e.pull.is_some() || check_state(e.clock, copy) == StateUpdate::RefuseStale {
            return false;
        }
        e.clock = Some(copy);
        e.given_away = false;
        e.last = now;
        true
    }

    /// Pulls unanswered for `timeout`; a given-up pull's held packets are returned with it.
    pub fn expired(&mut self, now: Nanos, timeout: Nanos, out: &mut Vec<(Expired, VecDeque<Held>)>) {
        for (flow, e) in &mut self.map {
            let Some(p) = &mut e.pull else { continue };
            if now.saturating_sub(p.sent) < timeout {
                continue;
            }
            if p.tries < self.pull_tries {
                p.tries += 1;
                p.sent = now;
                out.push((
                    Expired::Retry { flow: *flow, from: p.from, chain: p.chain, clock: p.clock },
                    VecDeque::new(),
                ));
            } else {
                e.synced = Some(p.flowlet);
                e.pull = None;
                out.push((Expired::GiveUp { flow: *flow }, std::mem::take(&mut e.held)));
            }
        }
    }

    /// Forgets flows idle for `idle` with nothing pending.
    pub fn sweep(&mut self, now: Nanos, idle: Nanos) {
        self.map.retain(|_, e| e.pull.is_some() || now.saturating_sub(e.last) < idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::ids::PortId;
    use nflet_scale::wire::Direction;

    fn header(clock: u64, moved_from: Option<u16>) -> SteerHeader {
        SteerHeader {
            direction: Direction::ToWorker,
            chain: ChainId(0),
            port: PortId(0),
            worker: WorkerId(1),
            prev_owner: moved_from.map(WorkerId),
            clock: LogicalClock(clock),
            flow: FlowKey::default(),
            flowlet: LogicalClock(clock),
            flowlet_start: moved_from.is_some(),
            moved: moved_from.is_some(),
            untracked: false,
        }
    }

    fn admit(f: &mut WorkerFlows, h: SteerHeader) -> Admit {
        f.admit(&h, &mut Some(vec![h.clock.0 as u8]), Nanos(0))
    }

    #[test]
    fn the_inventory_lists_held_flows_with_their_clock_and_rewritten_tuple() {
        let mut f = WorkerFlows::new(WorkerId(1), 2, 3);
        assert!(f.inventory().is_empty());
        assert_eq!(admit(&mut f, header(1, None)), Admit::Run);
        let public = FlowKey { lo_port: 61000, ..FlowKey::default() };
        f.applied(&FlowKey::default(), LogicalClock(1), Some(public));
        // A later frame that left unchanged (or was dropped) keeps the tuple learned.
        f.applied(&FlowKey::default(), LogicalClock(2), None);
        let held = super::super::inventory::Holding {
            flow: FlowKey::default(),
            clock: LogicalClock(2),
            rewritten: Some(public),
        };
        assert_eq!(f.inventory(), [held]);
        // Given away (pulled, or moved on from a replica): no longer listed, until the state
        // comes back and runs here again.
        f.gave_away(&FlowKey::default());
        assert!(f.inventory().is_empty());
        f.applied(&FlowKey::default(), LogicalClock(9), None);
        assert_eq!(f.inventory().len(), 1);
    }

    #[test]
    fn local_flowlets_run_and_moved_ones_pull_then_release_in_order() {
        let mut f = WorkerFlows::new(WorkerId(1), 2, 3);
        assert_eq!(admit(&mut f, header(1, None)), Admit::Run);
        f.applied(&FlowKey::default(), LogicalClock(1), None);
        assert_eq!(admit(&mut f, header(5, Some(0))), Admit::Pull { from: WorkerId(0) });
        assert_eq!(admit(&mut f, header(6, None)), Admit::Held);
        assert_eq!(admit(&mut f, header(7, None)), Admit::Overflow, "hold limit 2");
        let k = FlowKey::default();
        assert!(
            f.pull_answered(&k, WorkerId(2), LogicalClock(5), Some(LogicalClock(4)), Nanos(7)).is_none(),
            "not asked"
        );
        assert!(
            f.pull_answered(&k, WorkerId(0), LogicalClock(3), Some(LogicalClock(4)), Nanos(7)).is_none(),
            "other request"
        );
        let a = f.pull_answered(&k, WorkerId(0), LogicalClock(5), Some(LogicalClock(4)), Nanos(7)).unwrap();
        assert!(a.install);
        assert_eq!(a.waited, Nanos(7));
        assert_eq!(a.held.iter().map(|h| h.header.clock.0).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(f.clock(&FlowKey::default()), Some(LogicalClock(4)));
        let again = f.pull_answered(&k, WorkerId(0), LogicalClock(5), Some(LogicalClock(9)), Nanos(8));
        assert!(again.is_none(), "a repeated answer: no pull pending");
    }

    #[test]
    fn current_replica_runs_stale_one_pulls() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        assert!(f.push_arrived(&FlowKey::default(), ChainId(0), LogicalClock(10), Nanos(0)));
        assert!(
            !f.push_arrived(&FlowKey::default(), ChainId(0), LogicalClock(9), Nanos(0)),
            "older copy refused"
        );
        assert_eq!(admit(&mut f, header(11, Some(0))), Admit::Run);
        f.applied(&FlowKey::default(), LogicalClock(11), None);
        // Lingering packets reached the old owner after the push: the copy is behind.
        assert_eq!(admit(&mut f, header(20, Some(2))), Admit::Pull { from: WorkerId(2) });
        let a = f.pull_answered(
            &FlowKey::default(),
            WorkerId(2),
            LogicalClock(20),
            Some(LogicalClock(11)),
            Nanos(1),
        );
        assert!(!a.unwrap().install, "a copy no newer than ours is not installed");
    }

    #[test]
    fn unanswered_pulls_retry_then_give_up_with_their_packets() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        assert_eq!(admit(&mut f, header(3, Some(0))), Admit::Pull { from: WorkerId(0) });
        let mut out = Vec::new();
        f.expired(Nanos(5), Nanos(10), &mut out);
        assert!(out.is_empty());
        for t in [10, 20] {
            f.expired(Nanos(t), Nanos(10), &mut out);
        }
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(e, _)| matches!(e, Expired::Retry { .. })));
        out.clear();
        f.expired(Nanos(30), Nanos(10), &mut out);
        assert!(matches!(out.as_slice(), [(Expired::GiveUp { .. }, held)] if held.len() == 1));
        assert_eq!(admit(&mut f, header(4, None)), Admit::Run, "no pull pending any more");
    }

    #[test]
    fn a_pull_from_a_failed_worker_settles_on_the_copy_here_when_the_director_says_so() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        let k = FlowKey::default();
        assert_eq!(admit(&mut f, header(3, Some(2))), Admit::Pull { from: WorkerId(2) });
        assert_eq!(admit(&mut f, header(4, None)), Admit::Held);
        // A word about another worker's failure leaves the pull alone.
        assert!(f.settle_here(&k, WorkerId(0)).is_none());
        let (_, held) = f.settle_here(&k, WorkerId(2)).expect("the pull waited on worker 2");
        assert_eq!(held.len(), 2, "both held packets run");
        assert!(f.settle_here(&k, WorkerId(2)).is_none(), "settled once");
        assert_eq!(admit(&mut f, header(5, None)), Admit::Run, "no pull pending any more");
    }

    #[test]
    fn a_pull_is_re_aimed_when_the_director_names_another_source() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        assert_eq!(admit(&mut f, header(3, Some(0))), Admit::Pull { from: WorkerId(0) });
        assert_eq!(admit(&mut f, header(4, None)), Admit::Held);
        // Worker 0 died; the director's next packet names its logger.
        assert_eq!(admit(&mut f, header(5, Some(0x8000))), Admit::Pull { from: WorkerId(0x8000) });
        let k = FlowKey::default();
        assert!(
            f.pull_answered(&k, WorkerId(0), LogicalClock(3), None, Nanos(1)).is_none(),
            "the dead owner's"
        );
        let a =
            f.pull_answered(&k, WorkerId(0x8000), LogicalClock(5), Some(LogicalClock(4)), Nanos(1)).unwrap();
        assert_eq!(a.held.len(), 3);
    }

    #[test]
    fn any_packet_of_a_moved_flowlet_pulls_once() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        // The flowlet starting at clock 10 moved here from worker 0; its second packet
        // arrives first.
        let mut second = header(11, Some(0));
        second.flowlet = LogicalClock(10);
        second.flowlet_start = false;
        assert_eq!(admit(&mut f, second), Admit::Pull { from: WorkerId(0) });
        let mut first = header(10, Some(0));
        first.flowlet = LogicalClock(10);
        assert_eq!(admit(&mut f, first), Admit::Held);
        let a = f.pull_answered(
            &FlowKey::default(),
            WorkerId(0),
            LogicalClock(11),
            Some(LogicalClock(9)),
            Nanos(1),
        );
        assert_eq!(a.unwrap().held.len(), 2);
        // Later packets of the same flowlet run; the next moved flowlet pulls again.
        let mut third = header(12, Some(0));
        third.flowlet = LogicalClock(10);
        assert_eq!(admit(&mut f, third), Admit::Run);
        let mut next = header(30, Some(2));
        next.flowlet = LogicalClock(30);
        assert_eq!(admit(&mut f, next), Admit::Pull { from: WorkerId(2) });
    }

    #[test]
    fn a_later_flowlet_from_elsewhere_waits_for_the_pull_under_way() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        assert_eq!(admit(&mut f, header(3, Some(0))), Admit::Pull { from: WorkerId(0) });
        // The next flowlet went to worker 2 and came back here: it is held, not re-aimed.
        assert_eq!(admit(&mut f, header(9, Some(2))), Admit::Held);
        let a = f
            .pull_answered(&FlowKey::default(), WorkerId(0), LogicalClock(3), Some(LogicalClock(2)), Nanos(1))
            .unwrap();
        let clocks: Vec<u64> = a.held.iter().map(|h| h.header.clock.0).collect();
        assert_eq!(clocks, vec![3, 9]);
        // Admitted again in order: the first runs, the later flowlet pulls from worker 2.
        let mut held = a.held.into_iter();
        let mut first = held.next().map(|h| h.frame);
        assert_eq!(f.admit(&header(3, Some(0)), &mut first, Nanos(2)), Admit::Run);
        f.applied(&FlowKey::default(), LogicalClock(3), None);
        let mut second = held.next().map(|h| h.frame);
        assert_eq!(f.admit(&header(9, Some(2)), &mut second, Nanos(2)), Admit::Pull { from: WorkerId(2) });
    }

    #[test]
    fn pulls_of_a_flow_being_pulled_wait_for_its_packets() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        let flow = FlowKey::default();
        let c = LogicalClock(5);
        assert!(!f.defer_pull(&flow, WorkerId(2), ChainId(0), c), "nothing pending: answer now");
        assert_eq!(admit(&mut f, header(3, Some(0))), Admit::Pull { from: WorkerId(0) });
        assert!(!f.defer_pull(&flow, WorkerId(0), ChainId(0), LogicalClock(2)), "an earlier flowlet's pull");
        assert!(f.defer_pull(&flow, WorkerId(2), ChainId(0), c));
        assert!(f.defer_pull(&flow, WorkerId(2), ChainId(0), c), "a retried request waits once");
        let a =
            f.pull_answered(&flow, WorkerId(0), LogicalClock(3), Some(LogicalClock(2)), Nanos(1)).unwrap();
        assert_eq!(a.held.len(), 1);
        assert_eq!(f.take_waiting(&flow), vec![(WorkerId(2), ChainId(0), c)]);
        assert!(f.take_waiting(&flow).is_empty());
    }

    #[test]
    fn a_pull_waiting_on_a_failed_worker_is_re_aimed_at_its_logger() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        let k = FlowKey::default();
        assert_eq!(f.recover(&k, WorkerId(0), WorkerId(0x8000), Nanos(1)), None, "no pull");
        assert_eq!(admit(&mut f, header(3, Some(0))), Admit::Pull { from: WorkerId(0) });
        assert_eq!(f.recover(&k, WorkerId(2), WorkerId(0x8002), Nanos(1)), None, "another worker failed");
        let again = f.recover(&k, WorkerId(0), WorkerId(0x8000), Nanos(1));
        assert_eq!(again, Some((WorkerId(0x8000), ChainId(0), LogicalClock(3))));
        assert!(
            f.pull_answered(&k, WorkerId(0), LogicalClock(3), None, Nanos(2)).is_none(),
            "the dead one's"
        );
        let a =
            f.pull_answered(&k, WorkerId(0x8000), LogicalClock(3), Some(LogicalClock(2)), Nanos(2)).unwrap();
        assert!(a.install);
    }

    #[test]
    fn untracked_and_own_flowlets_never_pull() {
        let mut f = WorkerFlows::new(WorkerId(1), 8, 3);
        let mut h = header(9, Some(1));
        assert_eq!(admit(&mut f, h), Admit::Run, "previous owner is this worker");
        h = header(9, Some(0));
        h.untracked = true;
        assert_eq!(admit(&mut f, h), Admit::Run);
    }
}
