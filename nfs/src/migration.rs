//! Per-flow state migration through a pipeline: the blob a scale-out runtime moves between
//! instances running the same configuration.
//!
//! [`Pipeline::export_flow`] asks every migrating NF of one chain for its state of a flow
//! ([`NetworkFunction::export_flow`](crate::nf::NetworkFunction::export_flow)) and writes one
//! record per NF that has some:
//!
//! ```text
//! record = nf index in the pipeline (u16 BE) | length (u32 BE) | the NF's bytes
//! ```
//!
//! The NF's bytes open with its kind tag and format version (`state::wire`). Each NF sees the
//! flow as its packets reach it: the key given, rewritten by the NFs before it in step order
//! ([`NetworkFunction::flow_after`](crate::nf::NetworkFunction::flow_after); a firewall after
//! a NAT finds its connection by the translated tuple). Import installs the records in step
//! order and derives each NF's key from the state just installed, so both sides agree.
//! [`Pipeline::import_flow`] first checks the whole blob — every record's NF is a step of the
//! chain, migrates, appears once, and its length fits — and only then hands each record to
//! its NF, so a blob from another chain or configuration is refused with nothing changed. An
//! NF refuses its record with nothing changed too; records of earlier NFs in the same blob are
//! then already installed (each NF's state stands alone; the runtime drops the flow's move).
//!
//! NFs with per-flow state that cannot move ([`Pipeline::unmigratable`]) make a chain
//! unsuitable for scale-out: the runtime refuses it at startup ([`Pipeline::migrates`]).

use crate::chain::{Pipeline, Step};
use crate::flow::FlowKey;
use crate::nf::{Ctx, ImportError};
use crate::state::wire::Reader;

/// Bytes before each record's NF bytes.
const RECORD_HEADER: usize = 2 + 4;

impl Pipeline {
    /// The NFs (pipeline indices) that are steps of chain `chain`, in step order, each once.
    pub fn chain_nfs(&self, chain: usize) -> Option<Vec<usize>> {
        fn walk(steps: &[Step], out: &mut Vec<usize>) {
            for s in steps {
                match s {
                    Step::Nf(n) => {
                        if !out.contains(n) {
                            out.push(*n);
                        }
                    }
                    Step::Distribute { branches, default, .. } => {
                        for (_, b) in branches {
                            walk(b, out);
                        }
                        walk(default.as_deref().unwrap_or_default(), out);
                    }
                }
            }
        }
        let c = self.chains.get(chain)?;
        let mut out = Vec::new();
        walk(&c.steps, &mut out);
        Some(out)
    }

    /// True when every NF of chain `chain` that keeps per-flow state can migrate it (false
    /// for an unknown chain).
    pub fn migrates(&self, chain: usize) -> bool {
        self.unmigratable(chain).is_some_and(|v| v.is_empty())
    }

    /// The NFs of chain `chain` (name, kind) that keep per-flow state but do not migrate it:
    /// a chain with any cannot be scaled out. `None` for an unknown chain.
    pub fn unmigratable(&self, chain: usize) -> Option<Vec<(String, &'static str)>> {
        let nfs = self.chain_nfs(chain)?;
        Some(
            nfs.iter()
                .filter_map(|&n| self.nfs.get(n))
                .filter(|s| s.nf.keeps_flow_state() && !s.nf.migrates())
                .map(|s| (s.name.clone(), s.nf.kind()))
                .collect(),
        )
    }

    /// Appends the state of `flow` held by the NFs of chain `chain` to `out` (module doc);
    /// returns the number of NF records written (0 for an unknown chain or a flow no NF
    /// holds state for, with nothing appended).
    pub fn export_flow(&mut self, chain: usize, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> usize {
        self.write_flow(chain, flow, ctx, out, true)
    }

    /// [`Pipeline::export_flow`] for a copy: the state stays live here (a proactive replica,
    /// an output logger's record), so no NF marks it moved.
    pub fn copy_flow(&mut self, chain: usize, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> usize {
        self.write_flow(chain, flow, ctx, out, false)
    }

    fn write_flow(
        &mut self,
        chain: usize,
        flow: &FlowKey,
        ctx: &Ctx,
        out: &mut Vec<u8>,
        moving: bool,
    ) -> usize {
        let Some(nfs) = self.chain_nfs(chain) else { return 0 };
        let mut records = 0;
        let mut key = *flow;
        for n in nfs {
            let (Some(slot), Ok(index)) = (self.nfs.get_mut(n), u16::try_from(n)) else { continue };
            let here = key;
            key = slot.nf.flow_after(&here, ctx.now);
            if !slot.nf.migrates() {
                continue;
            }
            let start = out.len();
            out.extend_from_slice(&index.to_be_bytes());
            out.extend_from_slice(&[0; 4]);
            let wrote = if moving {
                slot.nf.export_flow(&here, ctx, out)
            } else {
                slot.nf.copy_flow(&here, ctx, out)
            };
            let len = u32::try_from(out.len() - start - RECORD_HEADER);
            match (wrote, len, out.get_mut(start + 2..start + RECORD_HEADER)) {
                (true, Ok(len), Some(field)) => {
                    field.copy_from_slice(&len.to_be_bytes());
                    records += 1;
                }
                _ => out.truncate(start),
            }
        }
        records
    }

    /// Installs the state in `bytes` (written by [`Pipeline::export_flow`] for the same
    /// chain of the same configuration on another instance) for `flow`; returns the number
    /// of NF records installed. See the module doc for what is checked before anything
    /// changes.
    pub fn import_flow(
        &mut self,
        chain: usize,
        flow: &FlowKey,
        ctx: &Ctx,
        bytes: &[u8],
    ) -> Result<usize, ImportError> {
        let nfs = self.chain_nfs(chain).ok_or(ImportError::NoChain(chain))?;
        let mut records: Vec<(usize, &[u8])> = Vec::new();
        let mut r = Reader::new(bytes);
        while r.remaining() > 0 {
            let index = r.u16("record NF index")?;
            let len = r.u32("record length")?;
            let body = r.take(usize::try_from(len).unwrap_or(usize::MAX), "record bytes")?;
            let n = usize::from(index);
            if !nfs.contains(&n) {
                return Err(ImportError::NotInChain(index));
            }
            let slot = self.nfs.get(n).ok_or(ImportError::NotInChain(index))?;
            if !slot.nf.migrates() {
                return Err(ImportError::NotMigrating(slot.nf.kind()));
            }
            if records.iter().any(|(m, _)| *m == n) {
                return Err(ImportError::Malformed("record NF index (repeated)"));
            }
            records.push((n, body));
        }
        let mut key = *flow;
        for n in nfs {
            let Some(slot) = self.nfs.get_mut(n) else { continue };
            if let Some((_, body)) = records.iter().find(|(m, _)| *m == n) {
                slot.nf.import_flow(&key, ctx, body)?;
            }
            key = slot.nf.flow_after(&key, ctx.now);
        }
        Ok(records.len())
    }
}
