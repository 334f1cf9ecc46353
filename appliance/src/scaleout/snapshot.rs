//! The director's snapshot (`[scale] state_file`): where each tracked flow's state is, how far
//! its clock got, and the rewritten tuples (aliases) that steer replies — written every 100 ms
//! (to a temporary file, then renamed over the old one, so a crash leaves the previous
//! snapshot whole) and read by a director restarted after a crash. The workers keep running
//! across the restart and hold the flows' state; the new director adopts them when they say
//! hello and takes over the flows ([`nflet_scale::director::Director::restore`]).
//!
//! Format: `NFDS`, version 2, flow count (u32), flows (flow key, owner u16, origin u16, clock
//! u64), alias count (u32), aliases (rewritten key, flow key); big-endian. Version 1 (no
//! origin: each flow counts as started on its owner) is still read. A file that does not parse
//! is reported and ignored (the director starts with no flows).

use std::collections::HashMap;
use std::path::Path;

use nflet_nfs::flow::FlowKey;
use nflet_scale::director::SavedFlow;
use nflet_scale::units::{LogicalClock, WorkerId};

const MAGIC: &[u8; 4] = b"NFDS";
const VERSION: u8 = 2;
const KEY: usize = std::mem::size_of::<FlowKey>();

/// What a snapshot holds.
#[derive(Debug, Default, PartialEq)]
pub struct Snapshot {
    pub flows: Vec<SavedFlow>,
    pub aliases: Vec<(FlowKey, FlowKey)>,
}

impl Snapshot {
    pub fn encode(flows: &[SavedFlow], aliases: &HashMap<FlowKey, FlowKey>) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + flows.len() * (KEY + 12) + aliases.len() * 2 * KEY);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&u32::try_from(flows.len()).unwrap_or(u32::MAX).to_be_bytes());
        for f in flows {
            out.extend_from_slice(bytemuck::bytes_of(&f.flow));
            out.extend_from_slice(&f.owner.0.to_be_bytes());
            out.extend_from_slice(&f.origin.0.to_be_bytes());
            out.extend_from_slice(&f.clock.0.to_be_bytes());
        }
        out.extend_from_slice(&u32::try_from(aliases.len()).unwrap_or(u32::MAX).to_be_bytes());
        for (a, f) in aliases {
            out.extend_from_slice(bytemuck::bytes_of(a));
            out.extend_from_slice(bytemuck::bytes_of(f));
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Snapshot, &'static str> {
        let mut r = Cursor { bytes, at: 0 };
        if r.take(4)? != MAGIC.as_slice() {
            return Err("not a director snapshot");
        }
        let version = r.take(1)?.first().copied();
        if !matches!(version, Some(1 | VERSION)) {
            return Err("unknown snapshot version");
        }
        let n = r.u32()?;
        let mut flows = Vec::new();
        for _ in 0..n {
            let flow = bytemuck::pod_read_unaligned(r.take(KEY)?);
            let owner = WorkerId(r.u16()?);
            let origin = if version == Some(1) { owner } else { WorkerId(r.u16()?) };
            let clock = LogicalClock(u64::from_be_bytes(r.take(8)?.try_into().map_err(|_| "clock")?));
            flows.push(SavedFlow { flow, owner, origin, clock });
        }
        let n = r.u32()?;
        let mut aliases = Vec::new();
        for _ in 0..n {
            let a = bytemuck::pod_read_unaligned(r.take(KEY)?);
            let f = bytemuck::pod_read_unaligned(r.take(KEY)?);
            aliases.push((a, f));
        }
        if r.at != bytes.len() {
            return Err("trailing bytes");
        }
        Ok(Snapshot { flows, aliases })
    }

    /// Writes `bytes` to `path` through a temporary file and a rename.
    pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(n).ok_or("truncated")?;
        let s = self.bytes.get(self.at..end).ok_or("truncated")?;
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().map_err(|_| "worker id")?))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| "count")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::flow::{v4, FAMILY_V4};

    fn key(p: u16) -> FlowKey {
        FlowKey::new(FAMILY_V4, 6, v4([10, 0, 0, 1]), p, v4([192, 0, 2, 1]), 80).0
    }

    #[test]
    fn round_trip_and_every_truncation_refused() {
        let flows = vec![
            SavedFlow { flow: key(1), owner: WorkerId(2), origin: WorkerId(5), clock: LogicalClock(77) },
            SavedFlow { flow: key(2), owner: WorkerId(0), origin: WorkerId(0), clock: LogicalClock(1) },
        ];
        let aliases: HashMap<FlowKey, FlowKey> = [(key(9), key(1))].into_iter().collect();
        let bytes = Snapshot::encode(&flows, &aliases);
        let back = Snapshot::decode(&bytes).unwrap();
        assert_eq!(back.flows, flows);
        assert_eq!(back.aliases, vec![(key(9), key(1))]);
        for n in 0..bytes.len() {
            assert!(Snapshot::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        let mut more = bytes.clone();
        more.push(0);
        assert_eq!(Snapshot::decode(&more), Err("trailing bytes"));
        let mut other = bytes;
        other[0] = b'X';
        assert_eq!(Snapshot::decode(&other), Err("not a director snapshot"));
    }

    #[test]
    fn a_version_1_snapshot_counts_each_flow_as_started_on_its_owner() {
        let mut v1 = MAGIC.to_vec();
        v1.push(1);
        v1.extend_from_slice(&1u32.to_be_bytes());
        v1.extend_from_slice(bytemuck::bytes_of(&key(1)));
        v1.extend_from_slice(&3u16.to_be_bytes());
        v1.extend_from_slice(&42u64.to_be_bytes());
        v1.extend_from_slice(&0u32.to_be_bytes());
        let snap = Snapshot::decode(&v1).unwrap();
        let want =
            SavedFlow { flow: key(1), owner: WorkerId(3), origin: WorkerId(3), clock: LogicalClock(42) };
        assert_eq!(snap.flows, [want]);
        let mut v3 = v1;
        v3[4] = 3;
        assert_eq!(Snapshot::decode(&v3), Err("unknown snapshot version"));
    }
}
