//! Moving a flow's buckets between instances (scale-out).
//!
//! A flow's state is its bucket pair in each direction in every `per = "flow"` class: the
//! token levels and sub-token carries, and the time since the bucket last filled (the
//! instances' clocks differ, so not the time itself). A policed flow keeps its level across a
//! move, so a flow out of profile before stays out of profile after. Class buckets are per
//! core and per-host buckets (`per = "src" | "dst"`) are shared by many flows: neither moves.

use super::flows::{BucketEntry, Per};
use super::meter::MeterState;
use super::Policer;
use crate::flow::{Dir, FlowKey};
use crate::nf::{Ctx, ImportError};
use crate::packet::Meta;
use crate::state::migrate::{self, Place};
use crate::state::wire::tag;
use crate::state::FlowTable;
use crate::time::Nanos;

const RECORD: (u8, u8) = (tag::POLICER, 1);

/// Nanoseconds per second: carries stay below it.
const NS_PER_S: u32 = 1_000_000_000;

impl Policer {
    /// The classes metering per flow, in configuration order (the table numbering of the
    /// record).
    fn flow_classes(&self) -> impl Iterator<Item = &super::Class> + '_ {
        self.classes.iter().filter(|c| c.per == Per::Flow && c.buckets.is_some())
    }

    /// Both directions' bucket places of `flow` in every per-flow class.
    fn places(&self, flow: &FlowKey) -> Vec<Place<FlowKey>> {
        let mut meta = Meta { key: *flow, hash: flow.hash(), ..Meta::default() };
        let mut out = Vec::new();
        for t in 0..self.flow_classes().count() {
            for dir in [Dir::LoToHi, Dir::HiToLo] {
                meta.dir = dir;
                let (key, hash) = super::flows::bucket_key(Per::Flow, &meta);
                out.push(Place { table: t, hash, key });
            }
        }
        out
    }

    pub(super) fn export(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        let places = self.places(flow);
        let tables: Vec<&FlowTable<BucketEntry>> =
            self.flow_classes().filter_map(|c| c.buckets.as_ref()).collect();
        // On the wire `last` is the bucket's age.
        migrate::export(
            &tables,
            &places,
            RECORD,
            ctx.now,
            |m, now| m.last = now.0.saturating_sub(m.last),
            out,
        )
    }

    pub(super) fn import(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
        let places = self.places(flow);
        let caps: Vec<[u64; 2]> = self.flow_classes().map(|c| c.profile.full(Nanos::ZERO).tokens).collect();
        let mut tables: Vec<&mut FlowTable<BucketEntry>> = self
            .classes
            .iter_mut()
            .filter(|c| c.per == Per::Flow)
            .filter_map(|c| c.buckets.as_mut())
            .collect();
        migrate::import(&mut tables, &places, RECORD, ctx.now, bytes, |m: &mut MeterState, t, now| {
            let cap = caps.get(t).ok_or(ImportError::Malformed("class"))?;
            if m.tokens.iter().zip(cap).any(|(have, max)| have > max) {
                return Err(ImportError::Config("bucket level above this class's burst size"));
            }
            if m.carry.iter().any(|c| *c >= NS_PER_S) {
                return Err(ImportError::Malformed("token carry"));
            }
            m.last = now.0.saturating_sub(m.last);
            Ok(())
        })
    }
}
