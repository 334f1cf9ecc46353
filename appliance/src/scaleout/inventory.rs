//! What a restarted director learns from its workers before it steers anything.
//!
//! The snapshot a director writes every 100 ms misses the flows that started, and the
//! flowlets that moved, after it was written. The workers know better: each holds the state of
//! the flows it processed, tagged with the clock of the last packet applied (SNF §5.3). So a
//! director taking over asks every worker it adopts for that list ([`Kind::Inventory`]), the
//! workers answer in parts ([`Kind::Holding`]), and each flow goes to where its newest state
//! is: the snapshot's owner, unless a worker holds state with a later clock. A flow the
//! snapshot never saw then keeps its worker — and its NAT mapping — instead of starting afresh
//! on whichever worker its next flowlet would get. Each flow also comes with the tuple an NF
//! rewrote it to (the NAT's public side), so replies to it are steered as the flow's own
//! even when the snapshot predates the alias.
//!
//! [`Kind::Inventory`]: nflet_scale::wire::Kind::Inventory
//! [`Kind::Holding`]: nflet_scale::wire::Kind::Holding

use std::collections::{BTreeSet, HashMap};

use nflet_nfs::flow::FlowKey;
use nflet_scale::director::SavedFlow;
use nflet_scale::units::{LogicalClock, WorkerId};

const KEY: usize = std::mem::size_of::<FlowKey>();
/// Flow key, clock, rewritten tuple (all zero: none).
const ENTRY: usize = KEY + 8 + KEY;
/// Flows per part: a part stays within one 1500-byte frame with the message's own header.
pub const PER_PART: usize = 13;

/// A flow whose state a worker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub flow: FlowKey,
    /// Clock of the last packet applied to the state.
    pub clock: LogicalClock,
    /// The tuple its frames leave with, when an NF rewrites them.
    pub rewritten: Option<FlowKey>,
}

/// Encodes `held` as the bodies of the parts of an answer.
pub fn encode(held: &[Holding]) -> Vec<Vec<u8>> {
    let chunks: Vec<&[Holding]> =
        if held.is_empty() { vec![&[][..]] } else { held.chunks(PER_PART).collect() };
    let parts = u16::try_from(chunks.len()).unwrap_or(u16::MAX);
    chunks
        .iter()
        .take(usize::from(parts))
        .enumerate()
        .map(|(i, chunk)| {
            let mut body = Vec::with_capacity(4 + chunk.len() * ENTRY);
            body.extend_from_slice(&u16::try_from(i).unwrap_or(u16::MAX).to_be_bytes());
            body.extend_from_slice(&parts.to_be_bytes());
            for h in chunk.iter() {
                body.extend_from_slice(bytemuck::bytes_of(&h.flow));
                body.extend_from_slice(&h.clock.0.to_be_bytes());
                body.extend_from_slice(bytemuck::bytes_of(&h.rewritten.unwrap_or_default()));
            }
            body
        })
        .collect()
}

/// One part of an answer.
#[derive(Debug, PartialEq)]
pub struct Part {
    pub index: u16,
    pub parts: u16,
    pub held: Vec<Holding>,
}

/// Decodes a part's body; `None` when it is malformed.
pub fn decode(body: &[u8]) -> Option<Part> {
    let (head, entries) = body.split_first_chunk::<4>()?;
    let index = u16::from_be_bytes([head[0], head[1]]);
    let parts = u16::from_be_bytes([head[2], head[3]]);
    if index >= parts || entries.len() % ENTRY != 0 {
        return None;
    }
    let held = entries
        .chunks_exact(ENTRY)
        .map(|e| {
            let (key, rest) = e.split_at(KEY);
            let (clock, rewritten) = rest.split_at(8);
            let clock = u64::from_be_bytes(clock.try_into().unwrap_or_default());
            let rewritten = bytemuck::pod_read_unaligned::<FlowKey>(rewritten);
            Holding {
                flow: bytemuck::pod_read_unaligned::<FlowKey>(key),
                clock: LogicalClock(clock),
                rewritten: (rewritten != FlowKey::default()).then_some(rewritten),
            }
        })
        .collect();
    Some(Part { index, parts, held })
}

/// The answers collected from the adopted workers.
#[derive(Debug, Default)]
pub struct Inventories {
    /// Per asked worker: the part count of its answer and the parts received.
    asked: HashMap<WorkerId, (u16, BTreeSet<u16>)>,
    /// Per flow: the worker holding the newest state reported, its clock, and the tuple the
    /// flow is rewritten to there.
    newest: HashMap<FlowKey, (WorkerId, LogicalClock, Option<FlowKey>)>,
    /// Parts that did not decode.
    pub malformed: u64,
}

impl Inventories {
    /// `worker` was asked for its list.
    pub fn asked(&mut self, worker: WorkerId) {
        self.asked.entry(worker).or_default();
    }

    /// A part of `worker`'s answer (parts of repeated answers are merged).
    pub fn part(&mut self, worker: WorkerId, body: &[u8]) {
        let Some(p) = decode(body) else {
            self.malformed += 1;
            return;
        };
        let (parts, seen) = self.asked.entry(worker).or_default();
        *parts = p.parts;
        seen.insert(p.index);
        for h in p.held {
            match self.newest.get_mut(&h.flow) {
                Some(n) if n.1 >= h.clock => {}
                Some(n) => *n = (worker, h.clock, h.rewritten.or(n.2)),
                None => {
                    self.newest.insert(h.flow, (worker, h.clock, h.rewritten));
                }
            }
        }
    }

    /// Workers asked whose answer is not complete yet.
    pub fn incomplete(&self) -> Vec<WorkerId> {
        let mut v: Vec<WorkerId> = self
            .asked
            .iter()
            .filter(|(_, (parts, seen))| *parts == 0 || seen.len() < usize::from(*parts))
            .map(|(w, _)| *w)
            .collect();
        v.sort_by_key(|w| w.0);
        v
    }

    /// The flows to restore: the snapshot's, each moved to the worker that reported a later
    /// clock than the snapshot's, plus the flows only the workers know.
    pub fn merge(&self, snapshot: &[SavedFlow]) -> (Vec<SavedFlow>, Merged) {
        let mut counts = Merged::default();
        let mut known: HashMap<FlowKey, usize> = HashMap::with_capacity(snapshot.len());
        let mut flows: Vec<SavedFlow> = Vec::with_capacity(snapshot.len() + self.newest.len());
        for s in snapshot {
            known.insert(s.flow, flows.len());
            flows.push(*s);
        }
        for (flow, &(worker, clock, _)) in &self.newest {
            match known.get(flow).and_then(|&i| flows.get_mut(i)) {
                Some(s) if clock > s.clock && s.owner != worker => {
                    *s = SavedFlow { owner: worker, clock, ..*s };
                    counts.moved += 1;
                }
                Some(s) => s.clock = s.clock.max(clock),
                None => {
                    // Started after the snapshot: most likely where it is now.
                    flows.push(SavedFlow { flow: *flow, owner: worker, origin: worker, clock });
                    counts.added += 1;
                }
            }
        }
        (flows, counts)
    }

    /// Reply aliases: each rewritten tuple a worker reported, to its flow.
    pub fn aliases(&self) -> Vec<(FlowKey, FlowKey)> {
        self.newest.iter().filter_map(|(flow, n)| n.2.map(|alias| (alias, *flow))).collect()
    }
}

/// What the workers' answers changed in the snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Merged {
    /// Flows the snapshot did not have.
    pub added: u64,
    /// Flows whose newest state was on another worker than the snapshot said.
    pub moved: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> FlowKey {
        FlowKey { lo_port: n, hi_port: 80, family: 4, proto: 6, ..FlowKey::default() }
    }

    fn held(k: u16, clock: u64) -> Holding {
        Holding { flow: key(k), clock: LogicalClock(clock), rewritten: None }
    }

    #[test]
    fn answers_round_trip_in_parts() {
        let mut all: Vec<Holding> = (0..30).map(|i| held(i, u64::from(i) * 7)).collect();
        if let Some(h) = all.get_mut(4) {
            h.rewritten = Some(key(4000));
        }
        let bodies = encode(&all);
        assert_eq!(bodies.len(), 3);
        assert!(bodies.iter().all(|b| b.len() <= 4 + PER_PART * ENTRY && b.len() < 1200));
        let parts: Vec<Part> = bodies.iter().map(|b| decode(b).expect("decodes")).collect();
        assert!(parts.iter().all(|p| p.parts == 3));
        assert_eq!(parts.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 1, 2]);
        let back: Vec<Holding> = parts.into_iter().flat_map(|p| p.held).collect();
        assert_eq!(back, all);
        // An empty list is one empty part, so the director still learns the answer is whole.
        let empty = encode(&[]);
        assert_eq!(empty.len(), 1);
        assert_eq!(decode(&empty[0]), Some(Part { index: 0, parts: 1, held: Vec::new() }));
    }

    #[test]
    fn malformed_parts_are_refused() {
        let body = encode(&[held(1, 3)]).remove(0);
        assert!(decode(&body[..3]).is_none(), "short head");
        assert!(decode(&body[..body.len() - 1]).is_none(), "truncated entry");
        let mut bad = body.clone();
        bad[1] = 1; // part 1 of 1
        assert!(decode(&bad).is_none(), "index beyond the count");
        let mut inv = Inventories::default();
        inv.asked(WorkerId(0));
        inv.part(WorkerId(0), &bad);
        assert_eq!(inv.malformed, 1);
        assert_eq!(inv.incomplete(), [WorkerId(0)]);
    }

    #[test]
    fn an_answer_is_complete_once_every_part_arrived_from_any_repeat() {
        let all: Vec<Holding> = (0..20).map(|i| held(i, 1)).collect();
        let bodies = encode(&all);
        assert_eq!(bodies.len(), 2);
        let mut inv = Inventories::default();
        inv.asked(WorkerId(1));
        inv.asked(WorkerId(2));
        inv.part(WorkerId(1), &bodies[1]);
        assert_eq!(inv.incomplete(), [WorkerId(1), WorkerId(2)]);
        // The first part came with a repeated answer.
        inv.part(WorkerId(1), &bodies[0]);
        inv.part(WorkerId(2), &encode(&[])[0]);
        assert!(inv.incomplete().is_empty());
    }

    #[test]
    fn each_flow_goes_where_its_newest_state_is() {
        let w = WorkerId;
        let snapshot = vec![
            SavedFlow { flow: key(1), owner: w(0), origin: w(2), clock: LogicalClock(10) },
            SavedFlow { flow: key(2), owner: w(0), origin: w(0), clock: LogicalClock(10) },
            SavedFlow { flow: key(3), owner: w(1), origin: w(1), clock: LogicalClock(10) },
        ];
        let nat = |k: u16, clock: u64| Holding { rewritten: Some(key(k + 1000)), ..held(k, clock) };
        let mut inv = Inventories::default();
        // Flow 1 moved to worker 1 after the snapshot; worker 0 still has the older copy.
        inv.part(w(0), &encode(&[held(1, 9), held(2, 12)])[0]);
        inv.part(w(1), &encode(&[nat(1, 14), nat(4, 3)])[0]);
        // Worker 2 holds a copy of flow 3 no newer than the snapshot's: the owner stays.
        inv.part(w(2), &encode(&[held(3, 10)])[0]);
        let (flows, merged) = inv.merge(&snapshot);
        let owner = |k: u16| flows.iter().find(|f| f.flow == key(k)).map(|f| (f.owner, f.clock));
        assert_eq!(owner(1), Some((w(1), LogicalClock(14))));
        assert_eq!(owner(2), Some((w(0), LogicalClock(12))), "same owner, later clock");
        assert_eq!(owner(3), Some((w(1), LogicalClock(10))));
        assert_eq!(owner(4), Some((w(1), LogicalClock(3))), "only a worker knew it");
        assert_eq!(flows.len(), 4);
        assert_eq!(merged, Merged { added: 1, moved: 1 });
        let origin = |k: u16| flows.iter().find(|f| f.flow == key(k)).map(|f| f.origin);
        assert_eq!(origin(1), Some(w(2)), "a moved flow keeps the worker it started on");
        assert_eq!(origin(4), Some(w(1)), "a flow only a worker knew started there");
        let mut aliases = inv.aliases();
        aliases.sort_by_key(|(a, _)| a.lo_port);
        assert_eq!(aliases, [(key(1001), key(1)), (key(1004), key(4))]);
    }
}
