//! Chains: NFs composed into a per-burst program, executed by direct calls on one core.
//!
//! A chain is a sequence of steps; a step is an NF or a `distribute` that splits the active
//! packets into branches by a selector (an NF-set label or the IP protocol), runs each
//! branch's steps on its subset, and aggregates the survivors back into one sequence
//! (Serpens §III-B: chain / distribute(selector) / aggregate). The whole burst moves through
//! the chain step by step with an index list of active packets; there are no queues between
//! NFs and nothing is allocated once the scratch lists have warmed up.
//!
//! NF instances belong to the core's [`Pipeline`], not to a chain, so two chains (say one per
//! direction of a bump-in-the-wire firewall) can share an NF and its state.

use crate::drop::{DropCounters, DropReason};
use crate::frame::Frame;
use crate::functions::AnyNf;
use crate::ids::{CoreId, Label, PortId};
use crate::nf::{Burst, Ctx, Report, Verdict};
use crate::packet::{IpProtocol, Meta};

/// What a `distribute` step splits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    /// The label an earlier NF attached with [`Verdict::Label`].
    Label,
    /// The IP protocol number (6 = TCP, 17 = UDP, 1 = ICMP, ...).
    Protocol,
}

/// One step of a chain, with NFs referred to by their index in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nf(usize),
    Distribute { selector: Selector, branches: Vec<(Label, Vec<Step>)>, default: Option<Vec<Step>> },
}

/// Per-NF packet counters kept by the pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NfStats {
    /// Packets handed to the NF.
    pub packets: u64,
    /// Packets the NF dropped, by reason.
    pub drops: DropCounters,
}

/// An NF instance on one core.
#[derive(Debug)]
pub struct NfSlot {
    pub name: String,
    pub nf: AnyNf,
    pub stats: NfStats,
}

/// A chain: its steps and where packets that finish it go.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    pub steps: Vec<Step>,
    /// Port for packets that reach the end with [`Verdict::Continue`]; `None` drops them as
    /// [`DropReason::NoOutput`].
    pub output: Option<PortId>,
}

impl Chain {
    /// True when a step distributes by label (labels must then be reset per burst).
    fn uses_labels(&self) -> bool {
        fn any(steps: &[Step]) -> bool {
            steps.iter().any(|s| match s {
                Step::Nf(_) => false,
                Step::Distribute { selector, branches, default } => {
                    *selector == Selector::Label
                        || branches.iter().any(|(_, b)| any(b))
                        || default.as_deref().is_some_and(any)
                }
            })
        }
        any(&self.steps)
    }
}

/// Per-chain packet counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChainStats {
    pub packets: u64,
    /// Bytes up to the end of each IP datagram (Ethernet padding not counted).
    pub bytes: u64,
    pub forwarded: u64,
    pub dropped: u64,
}

/// A core's NF instances and the chains that use them.
#[derive(Debug)]
pub struct Pipeline {
    pub nfs: Vec<NfSlot>,
    pub chains: Vec<Chain>,
    pub chain_stats: Vec<ChainStats>,
    /// Per chain, the NFs (pipeline indices) that steer at ingress, in step order.
    steerers: Vec<Vec<usize>>,
    labels: Vec<Label>,
    scratch: Vec<Vec<u16>>,
}

impl Pipeline {
    pub fn new(nfs: Vec<NfSlot>, chains: Vec<Chain>) -> Pipeline {
        let chain_stats = vec![ChainStats::default(); chains.len()];
        fn walk(steps: &[Step], nfs: &[NfSlot], out: &mut Vec<usize>) {
            for s in steps {
                match s {
                    Step::Nf(n) => {
                        if nfs.get(*n).is_some_and(|slot| slot.nf.steers()) && !out.contains(n) {
                            out.push(*n);
                        }
                    }
                    Step::Distribute { branches, default, .. } => {
                        for (_, b) in branches {
                            walk(b, nfs, out);
                        }
                        walk(default.as_deref().unwrap_or_default(), nfs, out);
                    }
                }
            }
        }
        let steerers = chains
            .iter()
            .map(|c| {
                let mut v = Vec::new();
                walk(&c.steps, &nfs, &mut v);
                v
            })
            .collect();
        Pipeline { nfs, chains, chain_stats, steerers, labels: Vec::new(), scratch: Vec::new() }
    }

    /// True when chain `chain` holds an NF that steers frames at ingress
    /// ([`NetworkFunction::steer`](crate::nf::NetworkFunction::steer)).
    pub fn steers(&self, chain: usize) -> bool {
        self.steerers.get(chain).is_some_and(|v| !v.is_empty())
    }

    /// The core the NFs of chain `chain` steer a frame entering it to: the first NF (in step
    /// order) with an opinion, or `None`.
    #[inline]
    pub fn steer(&self, chain: usize, meta: &Meta, frame: &[u8]) -> Option<CoreId> {
        let steerers = self.steerers.get(chain)?;
        steerers.iter().find_map(|&n| self.nfs.get(n).and_then(|slot| slot.nf.steer(meta, frame)))
    }

    /// Runs chain `chain` over the packets listed in `active` (indices into the burst arrays).
    /// Afterwards every listed packet's verdict is final: `Out(port)` or `Drop(reason)`.
    pub fn run<F: Frame>(
        &mut self,
        chain: usize,
        ctx: &Ctx,
        frames: &mut [F],
        metas: &mut [Meta],
        verdicts: &mut [Verdict],
        active: &[u16],
    ) {
        let Pipeline { nfs, chains, chain_stats, labels, scratch, .. } = self;
        let (Some(ch), Some(stats)) = (chains.get(chain), chain_stats.get_mut(chain)) else {
            for &i in active {
                set(verdicts, i, Verdict::Drop(DropReason::NoChain));
            }
            return;
        };
        if labels.len() < frames.len() {
            labels.resize(frames.len(), Label(0));
        }
        for &i in active {
            set(verdicts, i, Verdict::Continue);
        }
        if ch.uses_labels() {
            for &i in active {
                if let Some(l) = labels.get_mut(usize::from(i)) {
                    *l = Label(0);
                }
            }
        }
        let mut live = scratch.pop().unwrap_or_default();
        live.clear();
        live.extend_from_slice(active);
        let mut exec = Exec { nfs, ctx, frames, metas, verdicts, labels, scratch, left_early: 0 };
        exec.steps(&ch.steps, &mut live);
        let end = ch.output.map_or(Verdict::Drop(DropReason::NoOutput), Verdict::Out);
        for &i in &live {
            set(exec.verdicts, i, end);
        }
        let forwarded = exec.left_early + if ch.output.is_some() { live.len() as u64 } else { 0 };
        stats.packets += active.len() as u64;
        stats.bytes += active
            .iter()
            .filter_map(|&i| exec.metas.get(usize::from(i)))
            .map(|m| u64::from(m.l3_end))
            .sum::<u64>();
        stats.forwarded += forwarded;
        stats.dropped += active.len() as u64 - forwarded;
        exec.scratch.push(live);
    }

    /// [`NetworkFunction::after_init`](crate::nf::NetworkFunction::after_init) of every NF:
    /// call once every core's pipeline is built.
    pub fn after_init(&mut self) {
        for slot in &mut self.nfs {
            slot.nf.after_init();
        }
    }

    /// Burst-boundary duties of every NF.
    pub fn housekeeping(&mut self, ctx: &Ctx) {
        for slot in &mut self.nfs {
            slot.nf.housekeeping(ctx);
        }
    }

    /// Reports of every NF, by name.
    pub fn reports(&self) -> Vec<(String, &'static str, NfStats, Report)> {
        self.nfs
            .iter()
            .map(|s| {
                let mut r = Report::default();
                s.nf.report(&mut r);
                (s.name.clone(), s.nf.kind(), s.stats, r)
            })
            .collect()
    }
}

#[inline]
fn set(verdicts: &mut [Verdict], i: u16, v: Verdict) {
    if let Some(slot) = verdicts.get_mut(usize::from(i)) {
        *slot = v;
    }
}

struct Exec<'a, 'b, F> {
    nfs: &'a mut [NfSlot],
    ctx: &'a Ctx,
    frames: &'b mut [F],
    metas: &'b mut [Meta],
    verdicts: &'b mut [Verdict],
    labels: &'a mut [Label],
    scratch: &'a mut Vec<Vec<u16>>,
    /// Packets an NF sent straight to a port (`Verdict::Out`).
    left_early: u64,
}

impl<F: Frame> Exec<'_, '_, F> {
    fn steps(&mut self, steps: &[Step], active: &mut Vec<u16>) {
        for step in steps {
            if active.is_empty() {
                return;
            }
            match step {
                Step::Nf(n) => self.nf(*n, active),
                Step::Distribute { selector, branches, default } => {
                    self.distribute(*selector, branches, default.as_deref(), active)
                }
            }
        }
    }

    fn nf(&mut self, n: usize, active: &mut Vec<u16>) {
        let Some(slot) = self.nfs.get_mut(n) else {
            for &i in active.iter() {
                set(self.verdicts, i, Verdict::Drop(DropReason::NoChain));
            }
            active.clear();
            return;
        };
        slot.stats.packets += active.len() as u64;
        let mut burst = Burst {
            frames: &mut *self.frames,
            metas: &mut *self.metas,
            verdicts: &mut *self.verdicts,
            active: active.as_slice(),
        };
        slot.nf.process(self.ctx, &mut burst);
        let (verdicts, labels) = (&mut *self.verdicts, &mut *self.labels);
        let mut out = 0u64;
        active.retain(|&i| {
            let i = usize::from(i);
            match verdicts.get(i).copied() {
                Some(Verdict::Continue) => true,
                Some(Verdict::Label(l)) => {
                    if let (Some(v), Some(slot_l)) = (verdicts.get_mut(i), labels.get_mut(i)) {
                        *v = Verdict::Continue;
                        *slot_l = l;
                    }
                    true
                }
                Some(Verdict::Drop(r)) => {
                    slot.stats.drops.count(r);
                    false
                }
                Some(Verdict::Out(_)) => {
                    out += 1;
                    false
                }
                None => false,
            }
        });
        self.left_early += out;
    }

    fn select(&self, selector: Selector, i: u16) -> Label {
        let i = usize::from(i);
        match selector {
            Selector::Label => self.labels.get(i).copied().unwrap_or_default(),
            Selector::Protocol => {
                let p: u8 = self.metas.get(i).map_or(IpProtocol::default(), |m| m.proto).into();
                Label(u16::from(p))
            }
        }
    }

    fn distribute(
        &mut self,
        selector: Selector,
        branches: &[(Label, Vec<Step>)],
        default: Option<&[Step]>,
        active: &mut Vec<u16>,
    ) {
        let mut merged = self.scratch.pop().unwrap_or_default();
        merged.clear();
        for (label, steps) in branches {
            let mut sub = self.scratch.pop().unwrap_or_default();
            sub.clear();
            sub.extend(active.iter().copied().filter(|&i| self.select(selector, i) == *label));
            self.steps(steps, &mut sub);
            merged.extend_from_slice(&sub);
            self.scratch.push(sub);
        }
        let mut rest = self.scratch.pop().unwrap_or_default();
        rest.clear();
        rest.extend(active.iter().copied().filter(|&i| {
            let l = self.select(selector, i);
            !branches.iter().any(|(b, _)| *b == l)
        }));
        match default {
            Some(steps) => {
                self.steps(steps, &mut rest);
                merged.extend_from_slice(&rest);
            }
            None => {
                for &i in &rest {
                    set(self.verdicts, i, Verdict::Drop(DropReason::UnknownLabel));
                }
            }
        }
        self.scratch.push(rest);
        // Aggregate: survivors continue in their original burst order.
        merged.sort_unstable();
        std::mem::swap(active, &mut merged);
        self.scratch.push(merged);
    }
}
