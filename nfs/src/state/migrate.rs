//! Moving per-flow table entries between instances: the shared export/import of NFs whose
//! per-flow state is a few [`FlowTable`] entries (firewall, policer, IDS, monitor, ...).
//!
//! The NF names the entries of a flow as a short list of (table, hash, key) places; the
//! record (`state::wire`: tag, version, …, check value) holds, per live entry, its place in
//! that list, its time left and its value. Values travel in the table's plain-old-data layout
//! in host byte order (the instances of one deployment run the same build), after the NF's
//! `outward` hook has made any absolute time in them relative; `inward` turns it back and
//! validates the value against the importer's configuration. Import checks every entry before
//! changing anything, and refuses with [`ImportError::Full`] when a refusing table lacks room.

use super::table::{Entry, FlowTable, FullPolicy};
use super::wire::{Reader, Writer};
use crate::nf::ImportError;
use crate::time::Nanos;

/// The largest packet or byte count an imported entry may carry: far beyond any real flow,
/// and far enough below `u64::MAX` that counting on cannot overflow.
pub const MAX_COUNT: u64 = 1 << 62;

/// Where one entry of a flow lives: which of the NF's tables, and the key's hash and key.
#[derive(Debug, Clone, Copy)]
pub struct Place<K> {
    pub table: usize,
    pub hash: u32,
    pub key: K,
}

/// Appends the live entries at `places` to `out` as one sealed record; false (nothing
/// appended) when none is live. `outward` may rewrite a copy of each value for the wire.
pub fn export<E: Entry>(
    tables: &[&FlowTable<E>],
    places: &[Place<E::Key>],
    (tag, version): (u8, u8),
    now: Nanos,
    outward: impl Fn(&mut E::Value, Nanos),
    out: &mut Vec<u8>,
) -> bool {
    let live: Vec<(u8, E)> = places
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let t = tables.get(p.table)?;
            let idx = t.find(p.hash, &p.key, now)?;
            Some((u8::try_from(i).ok()?, *t.entry(idx)?))
        })
        .collect();
    let Ok(n) = u8::try_from(live.len()) else { return false };
    if n == 0 {
        return false;
    }
    let mut w = Writer::new(out);
    w.header(tag, version).u8(n);
    for (i, e) in live {
        let mut v = *e.value();
        outward(&mut v, now);
        w.u8(i).remaining(Nanos(e.header().expires), now).bytes(bytemuck::bytes_of(&v));
    }
    w.seal();
    true
}

/// Installs a record written by [`export`] into `tables` at `places` (the same list, built
/// by the importer for the same flow), replacing the entries there. `inward` turns a value
/// back (times onto this clock) and refuses one that does not fit table `table` here.
pub fn import<E: Entry>(
    tables: &mut [&mut FlowTable<E>],
    places: &[Place<E::Key>],
    (tag, version): (u8, u8),
    now: Nanos,
    bytes: &[u8],
    inward: impl Fn(&mut E::Value, usize, Nanos) -> Result<(), ImportError>,
) -> Result<(), ImportError> {
    let mut r = Reader::sealed(bytes)?;
    r.header(tag, version)?;
    let n = r.u8("entry count")?;
    let mut got: Vec<(Place<E::Key>, Nanos, E::Value)> = Vec::with_capacity(usize::from(n));
    let mut seen = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let i = usize::from(r.u8("entry place")?);
        let place = *places.get(i).ok_or(ImportError::Malformed("entry place"))?;
        if seen.contains(&i) || place.table >= tables.len() {
            return Err(ImportError::Malformed("entry place"));
        }
        seen.push(i);
        let left = Nanos(r.u64("time left")?);
        let raw = r.take(std::mem::size_of::<E::Value>(), "entry value")?;
        let mut v: E::Value =
            bytemuck::try_pod_read_unaligned(raw).map_err(|_| ImportError::Malformed("entry value"))?;
        inward(&mut v, place.table, now)?;
        got.push((place, left, v));
    }
    r.finish()?;
    if n == 0 {
        return Err(ImportError::Malformed("entry count"));
    }
    // Room first, so a refusal changes nothing.
    for (t, table) in tables.iter().enumerate() {
        let new =
            got.iter().filter(|(p, _, _)| p.table == t && table.find(p.hash, &p.key, now).is_none()).count();
        if new > 0 && table.full_policy() == FullPolicy::Refuse && table.len() + new > table.capacity() {
            return Err(ImportError::Full);
        }
    }
    for (p, left, v) in got {
        let Some(table) = tables.get_mut(p.table) else { continue };
        let idx = match table.find(p.hash, &p.key, now) {
            Some(idx) => {
                if let Some(slot) = table.get_mut(idx) {
                    *slot = v;
                }
                idx
            }
            None => table.insert(p.hash, p.key, v, now).map_err(|_| ImportError::Full)?,
        };
        table.touch(idx, now, left);
    }
    Ok(())
}
