//! The packet path: classify (to a VIP, from a backend, neither), pick or recall the backend,
//! and rewrite — destination to the backend on the way in, source back to the VIP on the way
//! out.

use super::config::{BackendId, Settings, VipId};
use super::{BackendState, Balancer, FlowEntry, LbFlow};
use crate::drop::DropReason;
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::nf::Verdict;
use crate::packet::rewrite::{set_dst_port, set_ipv4_dst, set_ipv4_src, set_src_port};
use crate::packet::{Fragment, IpProtocol, L3Kind, Meta};
use crate::state::TableView;
use crate::time::Nanos;

/// The IPv4 address in a key address.
fn a4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

impl Balancer {
    /// The verdict for one packet.
    #[inline]
    pub(super) fn packet(
        &mut self,
        s: &Settings,
        flows: &mut TableView<'_, FlowEntry>,
        now: Nanos,
        frame: &mut [u8],
        meta: &mut Meta,
    ) -> Verdict {
        if meta.l3_kind != L3Kind::Ipv4 || !matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp) {
            self.c.passed += 1;
            return Verdict::Continue;
        }
        let proto = u8::from(meta.proto);
        let (src, dst) = (a4(&meta.src), a4(&meta.dst));
        if meta.fragment != Fragment::None && s.vip_addrs.contains(&dst) {
            // A later fragment has no ports to balance on, and its first fragment's backend
            // is not remembered: the datagram cannot be delivered whole.
            self.c.fragments += 1;
            return Verdict::Drop(DropReason::Fragment);
        }
        let r = if let Some(vip) = s.vip_at(proto, dst, meta.dport) {
            self.forward(s, flows, now, vip, frame, meta)
        } else if meta.fragment == Fragment::Later {
            Ok(self.later_fragment(s, src))
        } else if let Some(cands) = s.backends_at(proto, src, meta.sport) {
            self.reply(s, flows, now, cands, frame, meta)
        } else {
            self.c.passed += 1;
            Ok(Verdict::Continue)
        };
        r.unwrap_or_else(Verdict::Drop)
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
    ) -> Result<Verdict, DropReason> {
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
        set_ipv4_dst(frame, meta, be.addr)?;
        set_dst_port(frame, meta, be.port)?;
        Ok(Verdict::Continue)
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
