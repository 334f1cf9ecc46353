//! Per-flow and per-host buckets: one [`MeterState`] per key in a fixed-capacity
//! [`FlowTable`], created full on a key's first packet and forgotten after an idle timeout.
//!
//! Forgetting is lossless once the timeout is at least the time an empty bucket takes to fill
//! (`(cbs + ebs) / cir` for srTCM, `max(cbs / cir, pbs / pir)` for trTCM): a bucket idle that
//! long would be full again anyway, which is what a new one is.

use serde::Deserialize;

use super::meter::MeterState;
use crate::flow::{Dir, FlowKey};
use crate::packet::Meta;

/// What gets its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// One bucket for the whole class (on each core).
    #[default]
    Class,
    /// One bucket per flow and direction: the 5-tuple as sent (the two directions of a
    /// connection are metered apart). Non-first fragments have no ports, so they share a
    /// bucket per address pair and protocol.
    Flow,
    /// One bucket per source address.
    Src,
    /// One bucket per destination address.
    Dst,
}

/// What a packet whose key is new does when the class's bucket table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFull {
    /// Meter it with the class's shared bucket (counted as `table_full`).
    #[default]
    Class,
    /// Drop it as `table_full`.
    Drop,
    /// Evict the least recently used bucket near its slot and take its place (counted in the
    /// table's `evicted`); if none can be evicted, as `class`.
    Evict,
}

crate::table_entry! {
    /// A bucket table slot: header 16 + key 40 + state 32 bytes.
    pub struct BucketEntry { key: FlowKey, value: MeterState }
}

/// Marks the reverse direction in the spare key byte.
const REVERSE: u8 = 1;
/// Mixed into the hash of a reversed key so both directions land on different slots.
const REVERSE_SALT: u32 = 0x9E37_79B9;

/// The hash of a packet's bucket key (as [`bucket_key`], without building the key when the
/// packet's own flow hash serves).
#[inline]
pub fn bucket_hash(per: Per, meta: &Meta) -> u32 {
    match per {
        Per::Class | Per::Flow if meta.dir == Dir::HiToLo => meta.hash ^ REVERSE_SALT,
        Per::Class | Per::Flow => meta.hash,
        Per::Src | Per::Dst => bucket_key(per, meta).1,
    }
}

/// The bucket key of a packet and its hash.
#[inline]
pub fn bucket_key(per: Per, meta: &Meta) -> (FlowKey, u32) {
    match per {
        Per::Class | Per::Flow => {
            // The normalised key plus the direction: the sender's 5-tuple, without hashing again.
            let mut key = meta.key;
            let mut hash = meta.hash;
            if meta.dir == Dir::HiToLo {
                key._pad[0] = REVERSE;
                hash ^= REVERSE_SALT;
            }
            (key, hash)
        }
        Per::Src | Per::Dst => {
            let addr = if per == Per::Src { meta.src } else { meta.dst };
            let key = FlowKey { lo_addr: addr, family: meta.key.family, ..FlowKey::default() };
            (key, key.hash())
        }
    }
}
