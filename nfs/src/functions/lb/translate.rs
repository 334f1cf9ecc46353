//! The packet path: classify (to a VIP, from a backend, neither), pick or recall the backend,
//! and rewrite — destination to the backend on the way in, source back to the VIP on the way
//! out — or, in `encap` mode, put the packet in an outer IPv4 header addressed to the backend.

use super::config::Encap;
use super::config::{BackendId, Settings, VipId};
use super::{BackendState, Balancer, FlowEntry, LbFlow};
use crate::drop::DropReason;
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::frame::Frame;
use crate::nf::Verdict;
use crate::packet::rewrite::{set_dst_port, set_ipv4_dst, set_ipv4_src, set_src_port};
use crate::packet::{parse, Fragment, IpProtocol, L3Kind, Meta, ParsePolicy};
use crate::state::TableView;
use crate::time::Nanos;

/// The IPv4 address in a key address.
fn a4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// What the packet path decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Done(Verdict),
    /// `encap` mode: encapsulate toward the backend at this address.
    Encap([u8; 4]),
}

/// IP-in-IP's protocol number (RFC 2003).
const IPIP: u8 = 4;
/// An outer IPv4 header without options.
const OUTER: usize = 20;

impl Balancer {
    /// The decision for one packet.
    #[inline]
    pub(super) fn packet(
        &mut self,
        s: &Settings,
        flows: &mut TableView<'_, FlowEntry>,
        now: Nanos,
        frame: &mut [u8],
        meta: &mut Meta,
    ) -> Step {
        if meta.l3_kind != L3Kind::Ipv4 || !matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp) {
            self.c.passed += 1;
            return Step::Done(Verdict::Continue);
        }
        let proto = u8::from(meta.proto);
        let (src, dst) = (a4(&meta.src), a4(&meta.dst));
        if meta.fragment != Fragment::None && s.vip_addrs.contains(&dst) {
            // A later fragment has no ports to balance on, and its first fragment's backend
            // is not remembered: the datagram cannot be delivered whole.
            self.c.fragments += 1;
            return Step::Done(Verdict::Drop(DropReason::Fragment));
        }
        let r = if let Some(vip) = s.vip_at(proto, dst, meta.dport) {
            self.forward(s, flows, now, vip, frame, meta)
        } else if s.encap.is_some() {
            // Backends answer clients directly, from the VIP: nothing to translate back.
            self.c.passed += 1;
            Ok(Step::Done(Verdict::Continue))
        } else if meta.fragment == Fragment::Later {
            Ok(Step::Done(self.later_fragment(s, src)))
        } else if let Some(cands) = s.backends_at(proto, src, meta.sport) {
            self.reply(s, flows, now, cands, frame, meta).map(Step::Done)
        } else {
            self.c.passed += 1;
            Ok(Step::Done(Verdict::Continue))
        };
        r.unwrap_or_else(|d| Step::Done(Verdict::Drop(d)))
    }

    /// `encap` mode: puts the packet in an outer IPv4 header from `e.source` to `to`
    /// (RFC 2003 §3.1: TOS, ECN included, and DF copied from the inner header), then
    /// describes the new packet in `meta` for the NFs after this one.
    pub(super) fn encapsulate<F: Frame>(
        &mut self,
        e: &Encap,
        frame: &mut F,
        meta: &mut Meta,
        to: [u8; 4],
    ) -> Verdict {
        let l3 = usize::from(meta.l3);
        let total = usize::from(meta.ip_len()) + OUTER;
        if total > usize::from(e.mtu) {
            return Verdict::Drop(DropReason::LbEncapTooBig);
        }
        let Some(&[_, tos, _, _, _, _, flags, ..]) = frame.as_ref().get(l3..l3 + OUTER) else {
            return Verdict::Drop(DropReason::Truncated);
        };
        if frame.insert_gap(l3, OUTER).is_err() {
            return Verdict::Drop(DropReason::LbNoRoom);
        }
        self.ip_id = self.ip_id.wrapping_add(1);
        let [t0, t1] = u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes();
        let [i0, i1] = self.ip_id.to_be_bytes();
        let [s0, s1, s2, s3] = e.source;
        let [d0, d1, d2, d3] = to;
        let mut h =
            [0x45, tos, t0, t1, i0, i1, flags & 0x40, 0, e.ttl, IPIP, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3];
        let [c0, c1] = crate::packet::checksum::checksum(&h).to_be_bytes();
        h[10] = c0;
        h[11] = c1;
        let Some(out) = frame.as_mut().get_mut(l3..l3 + OUTER) else {
            return Verdict::Drop(DropReason::LbNoRoom);
        };
        out.copy_from_slice(&h);
        self.c.encapsulated += 1;
        match parse(frame.as_ref(), meta.ingress, &ParsePolicy::default()) {
            Ok(m) => {
                *meta = m;
                Verdict::Continue
            }
            Err(d) => Verdict::Drop(d),
        }
    }

    /// The backend Maglev gives a new flow of `vip` with hash `hash`.
    #[inline]
    fn pick(&mut self, s: &Settings, vip: VipId, hash: u32) -> Result<BackendId, DropReason> {
        let v = s.vip(vip).ok_or(DropReason::LbNoBackend)?;
        let i = self.tables.get(usize::from(vip.0)).and_then(|t| t.lookup(hash));
        match i {
            Some(i) => Ok(BackendId(v.first + i)),
            None => {
                self.c.no_backend += 1;
                Err(DropReason::LbNoBackend)
            }
        }
    }

    /// Counts one packet of `bytes` for backend `b` (and a new flow if `new`).
    #[inline]
    fn count(&mut self, b: BackendId, bytes: u64, new: bool) {
        if let Some(k) = self.per_backend.get_mut(usize::from(b.0)) {
            k.packets += 1;
            k.bytes += bytes;
            k.new_flows += u64::from(new);
        }
        self.c.new_flows += u64::from(new);
    }

    /// A packet to a VIP: recall or pick the backend, rewrite the destination to it.
    fn forward(
        &mut self,
        s: &Settings,
        flows: &mut TableView<'_, FlowEntry>,
        now: Nanos,
        vip: VipId,
        frame: &mut [u8],
        meta: &mut Meta,
    ) -> Result<Step, DropReason> {
        let (hash, key) = (meta.hash, meta.key);
        let bytes = u64::from(meta.ip_len());
        let (backend, new) = match flows.find_touch(hash, &key, now, self.timeout) {
            Some(e) => {
                let pinned = BackendId(e.value.backend);
                e.value.packets += 1;
                e.value.bytes += bytes;
                if self.states.get(usize::from(pinned.0)) == Some(&BackendState::Removed) {
                    // Its backend is gone: the connection cannot survive, move the flow.
                    let b = self.pick(s, vip, hash)?;
                    e.value.backend = b.0;
                    self.c.rescheduled += 1;
                    (b, true)
                } else {
                    (pinned, false)
                }
            }
            None => {
                let b = self.pick(s, vip, hash)?;
                let f = LbFlow { backend: b.0, vip: vip.0, _pad: 0, packets: 1, bytes };
                if flows.insert(hash, key, f, now).is_err() {
                    self.c.table_full += 1;
                    return Err(DropReason::TableFull);
                }
                (b, true)
            }
        };
        self.count(backend, bytes, new);
        self.c.forwarded += 1;
        let be = s.backend(backend).ok_or(DropReason::LbNoBackend)?;
        if s.encap.is_some() {
            return Ok(Step::Encap(be.addr));
        }
        set_ipv4_dst(frame, meta, be.addr)?;
        set_dst_port(frame, meta, be.port)?;
        Ok(Step::Done(Verdict::Continue))
    }

    /// A packet from a backend endpoint: if it answers a flow balanced to that backend,
    /// rewrite its source back to the flow's VIP.
    fn reply(
        &mut self,
        s: &Settings,
        flows: &mut TableView<'_, FlowEntry>,
        now: Nanos,
        cands: &[BackendId],
        frame: &mut [u8],
        meta: &mut Meta,
    ) -> Result<Verdict, DropReason> {
        let (client, cport, proto) = (a4(&meta.dst), meta.dport, u8::from(meta.proto));
        let bytes = u64::from(meta.ip_len());
        // The forward flow of this reply, for each VIP the backend serves (usually one).
        for &b in cands {
            let Some(vip) = s.backend(b).and_then(|be| s.vip(be.vip)) else { continue };
            let (key, _) = FlowKey::new(FAMILY_V4, proto, v4(client), cport, v4(vip.addr), vip.port);
            let Some(e) = flows.find_touch(key.hash(), &key, now, self.timeout) else { continue };
            if e.value.backend != b.0 {
                continue;
            }
            e.value.packets += 1;
            e.value.bytes += bytes;
            let (vaddr, vport) = (vip.addr, vip.port);
            self.count(b, bytes, false);
            self.c.replies += 1;
            set_ipv4_src(frame, meta, vaddr)?;
            set_src_port(frame, meta, vport)?;
            return Ok(Verdict::Continue);
        }
        match cands {
            [b] if s.stateless_replies => {
                let vip = s.backend(*b).and_then(|be| s.vip(be.vip)).ok_or(DropReason::LbNoBackend)?;
                self.c.replies_stateless += 1;
                set_ipv4_src(frame, meta, vip.addr)?;
                set_src_port(frame, meta, vip.port)?;
            }
            _ => self.c.replies_unmatched += 1,
        }
        Ok(Verdict::Continue)
    }

    /// A later fragment (no ports): untranslated if it comes from a backend address.
    fn later_fragment(&mut self, s: &Settings, src: [u8; 4]) -> Verdict {
        if s.backends.iter().any(|b| b.addr == src) {
            self.c.untranslated_fragments += 1;
        } else {
            self.c.passed += 1;
        }
        Verdict::Continue
    }
}
