//! `gateway`: makes nflet an IPv4 router (an L3 hop) between the subnets of its ports.
//!
//! Each routed port has an interface: an address with its prefix and a MAC. The gateway
//! - answers ARP requests for its interface addresses by rewriting the request in place into
//!   the reply and sending it back out of the port it came in on (`Verdict::Out(ingress)`);
//! - learns neighbours from the ARP it sees (`neigh.rs`): the sender of a request or reply
//!   addressed to it, and updates of neighbours it already knows (RFC 826 "merge");
//! - forwards IPv4 frames addressed to its MAC: TTL decremented (RFC 1812 §5.3.1; a TTL that
//!   would reach 0 is a `ttl_expired` drop, no ICMP time-exceeded is sent), egress chosen by
//!   connected subnet, else the default route; source MAC set to the egress interface's and
//!   destination MAC to the next hop's, then `Verdict::Out(egress)`.
//!
//! # Unknown neighbours
//!
//! A packet cannot be both itself and an ARP request, and the NF API has no way to emit a
//! second frame. So a packet whose next hop has no MAC yet is turned, in place, into the
//! broadcast ARP request for that next hop and sent out of the egress port: the packet is
//! lost, as a router's first packet towards an unresolved neighbour often is, and the
//! sender's retransmission finds the neighbour learned from the reply. Counted as
//! `arp_requests`. Further packets to the same next hop within `arp_retry_ms` are dropped
//! (`neighbour_unknown`) instead of flooding the segment with requests. Hosts on a routed
//! segment ARP for the gateway before their first packet through it, which teaches the
//! gateway their MAC, so in practice only the first packet towards a silent host is lost;
//! `[[nf.neighbour]]` entries avoid even that.
//!
//! # Placement and NAT
//!
//! The gateway chooses the egress port itself, so it is the last step of each ingress chain
//! (the chain's `output` is never reached by routed packets). With `nat`, put the NAT first
//! (`steps = ["nat", "gw"]` on every port) so the gateway routes on the translated
//! destination, and set the NAT's `hairpin = "route"` so hairpinned packets are routed (and
//! get the inside host's MAC) instead of being reflected as they are. Traffic to the
//! gateway's own addresses passes the NAT first as well: from the inside it gets a mapping
//! and is then dropped here (`to_gateway`); the gateway does not answer pings.
//!
//! # Limits
//!
//! IPv4 only (IPv6 is dropped, `ipv6_not_routed`); untagged frames (VLAN tags are kept as
//! they came); no ICMP errors, redirects or fragmentation; directed and limited broadcasts and
//! multicast are not forwarded (`to_gateway`).
//!
//! # Multiple cores
//!
//! Neighbours are learned per core and shared eventually (see `neigh.rs`); static neighbours
//! and interfaces are read-only configuration shared by all cores. A core publishes a
//! neighbour it learns at once, and a core missing a next hop merges the shared table before
//! asking for it (at most every [`CATCH_UP`]): with a NAT steering replies to the core that
//! holds their mapping, that core is often not the one that saw the inside host's ARP.
//!
//! Scale-out: no per-flow state (routes are configuration, neighbours are per link and
//! relearned by ARP on each instance), so nothing moves with a flow and the NF does not
//! migrate.

mod arp;
mod config;
mod neigh;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use arp::{ArpPacket, Op};
pub use config::{GatewayConfig, IfAddr, Interface, InterfaceConfig, Mac, NeighbourConfig, Settings};
pub use neigh::{Learn, NeighTable};

use crate::drop::DropReason;
use crate::nf::{Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::ethernet::EthernetFrame;
use crate::packet::rewrite::decrement_ttl;
use crate::packet::{L3Kind, Meta};
use crate::state::{Eventual, StateDecl, TableStats};
use crate::time::Nanos;
use neigh::{Learned, Neigh, Pending};

/// Next hops with a request in flight, per core.
const PENDING: usize = 256;
/// Least time between two merges of the shared neighbours forced by unknown next hops (so a
/// flood towards unresolvable hosts takes the shared lock at most this often per core).
pub const CATCH_UP: Nanos = Nanos::from_millis(10);

/// Per-core counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// IPv4 packets routed out.
    pub forwarded: u64,
    /// ARP requests for our addresses answered.
    pub arp_replies: u64,
    /// Packets turned into ARP requests for an unresolved next hop.
    pub arp_requests: u64,
    /// Neighbours added (from ARP seen on this core).
    pub learned: u64,
    /// Known neighbours seen again.
    pub refreshed: u64,
    /// Neighbours added from other cores' learning.
    pub synced: u64,
    /// Neighbours refused by a full table.
    pub table_full: u64,
    /// ARP frames consumed without an answer (replies, requests for other addresses).
    pub arp_consumed: u64,
    pub bad_arp: u64,
    pub ttl_expired: u64,
    pub no_route: u64,
    pub neighbour_unknown: u64,
    pub not_our_mac: u64,
    pub to_gateway: u64,
    pub not_ipv4: u64,
}

/// The gateway on one core.
#[derive(Debug)]
pub struct Gateway {
    s: Arc<Settings>,
    table: NeighTable,
    shared: Eventual<Learned>,
    pending: Pending,
    /// When an unknown next hop last forced a merge of the shared neighbours.
    caught_up: Option<Nanos>,
    c: Counters,
}

impl NetworkFunction for Gateway {
    const KIND: &'static str = "gateway";
    type Config = GatewayConfig;

    fn init(config: &GatewayConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let settings = Settings::from_config(config, rt)?;
        let s = rt.global_read("settings", || Ok(settings))?;
        let (cap, timeout, sync) = (s.capacity, s.timeout, s.sync);
        let shared = rt.per_core("neighbours", move |cores| {
            let deltas = (0..cores).map(|_| Learned::new(cap, timeout)).collect();
            Ok(Eventual::group(deltas, sync).0)
        })?;
        Ok(Gateway {
            table: NeighTable::new(cap, timeout),
            pending: Pending::new(PENDING, s.retry),
            s,
            shared,
            caught_up: None,
            c: Counters::default(),
        })
    }

    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        let r = match meta.l3_kind {
            L3Kind::Arp => self.arp(ctx.now, frame, meta),
            L3Kind::Ipv4 => self.forward(ctx.now, frame, meta),
            L3Kind::Ipv6 => {
                self.c.not_ipv4 += 1;
                Err(DropReason::Ipv6NotRouted)
            }
        };
        r.unwrap_or_else(Verdict::Drop)
    }

    fn housekeeping(&mut self, ctx: &Ctx) {
        if self.shared.tick(ctx.now) {
            self.merge_shared();
        }
    }

    fn report(&self, out: &mut Report) {
        let c = &self.c;
        for (name, v) in [
            ("forwarded", c.forwarded),
            ("arp_replies", c.arp_replies),
            ("arp_requests", c.arp_requests),
            ("learned", c.learned),
            ("refreshed", c.refreshed),
            ("synced", c.synced),
            ("table_full", c.table_full),
            ("arp_consumed", c.arp_consumed),
            ("bad_arp", c.bad_arp),
            ("ttl_expired", c.ttl_expired),
            ("no_route", c.no_route),
            ("neighbour_unknown", c.neighbour_unknown),
            ("not_our_mac", c.not_our_mac),
            ("to_gateway", c.to_gateway),
            ("not_ipv4", c.not_ipv4),
        ] {
            out.counter(name, v);
        }
        let t = TableStats {
            len: self.table.len() as u64,
            capacity: self.table.capacity() as u64,
            inserts: c.learned + c.synced,
            refused: c.table_full,
            ..TableStats::default()
        };
        out.table("neighbours", StateDecl::GlobalWriteEventual, t);
    }
}

impl Gateway {
    /// Counters of this core.
    pub fn counters(&self) -> Counters {
        self.c
    }

    /// The MAC this core would use for `ip` at `now` (static or learned).
    pub fn neighbour(&self, ip: [u8; 4], now: Nanos) -> Option<[u8; 6]> {
        self.s.statics.iter().find(|(a, _)| *a == ip).map(|(_, m)| m.0).or_else(|| self.table.lookup(ip, now))
    }

    /// Takes in the neighbours other cores learned, as of this core's last merge.
    fn merge_shared(&mut self) {
        let Gateway { table, shared, pending, c, .. } = self;
        for (ip, n) in shared.snapshot().iter() {
            if table.learn(ip, n.mac, n.seen) == Learn::New {
                c.synced += 1;
                pending.resolved(ip);
            }
        }
    }

    /// The MAC of a next hop this core does not know: another core may have learned it since
    /// the last timed merge, so merge now (at most every [`CATCH_UP`]) and look again.
    fn catch_up(&mut self, hop: [u8; 4], now: Nanos) -> Option<[u8; 6]> {
        if self.caught_up.is_some_and(|t| now.saturating_sub(t) < CATCH_UP) {
            return None;
        }
        self.caught_up = Some(now);
        self.shared.sync(now);
        self.merge_shared();
        self.neighbour(hop, now)
    }

    /// ARP: answer requests for our address, learn, consume the rest.
    fn arp(&mut self, now: Nanos, frame: &mut [u8], meta: &Meta) -> Result<Verdict, DropReason> {
        let Some(iface) = self.s.on_port(meta.ingress).copied() else {
            self.c.arp_consumed += 1;
            return Err(DropReason::ArpConsumed);
        };
        let body = frame.get_mut(usize::from(meta.l3)..).unwrap_or_default();
        let mut arp = match ArpPacket::new_checked(body) {
            Ok(a) => a,
            Err(r) => {
                self.c.bad_arp += 1;
                return Err(r);
            }
        };
        let (sha, spa, tpa) = (arp.sender_mac(), arp.sender_ip(), arp.target_ip());
        let for_us = tpa == iface.addr.addr;
        // Learn only plausible neighbours on this interface's subnet: not a probe (0.0.0.0),
        // not ourselves, not a group MAC; new ones only when they talk to us (RFC 826: a
        // request for us means the sender will talk to us; others only update what we know).
        let plausible = spa != [0; 4]
            && spa != iface.addr.addr
            && iface.addr.contains(spa)
            && !Mac(sha).is_group()
            && sha != [0; 6]
            && !self.s.statics.iter().any(|(a, _)| *a == spa);
        if plausible && (for_us || self.table.lookup(spa, now).is_some()) {
            self.learn(spa, sha, now);
        }
        if arp.op() != Op::Request || !for_us {
            self.c.arp_consumed += 1;
            return Err(DropReason::ArpConsumed);
        }
        arp.make_reply(iface.mac.0, iface.addr.addr);
        let mut eth = EthernetFrame::new_checked(&mut *frame)?;
        let requester = eth.src();
        eth.set_dst(requester);
        eth.set_src(iface.mac.0);
        self.c.arp_replies += 1;
        Ok(Verdict::Out(meta.ingress))
    }

    fn learn(&mut self, ip: [u8; 4], mac: [u8; 6], now: Nanos) {
        match self.table.learn(ip, mac, now) {
            Learn::New => self.c.learned += 1,
            Learn::Refreshed => self.c.refreshed += 1,
            Learn::Stale => return,
            Learn::Full => {
                self.c.table_full += 1;
                return;
            }
        }
        self.pending.resolved(ip);
        self.shared.delta().push(ip, Neigh { mac, seen: now });
        // Publish at once (ARP is rare): the other cores may need it for the very next reply.
        self.shared.sync(now);
    }

    /// IPv4: route, decrement TTL, rewrite MACs, or resolve the next hop.
    fn forward(&mut self, now: Nanos, frame: &mut [u8], meta: &mut Meta) -> Result<Verdict, DropReason> {
        let Some(iface) = self.s.on_port(meta.ingress).copied() else {
            self.c.no_route += 1;
            return Err(DropReason::NoRoute);
        };
        if frame.get(..6) != Some(&iface.mac.0[..]) {
            self.c.not_our_mac += 1;
            return Err(DropReason::NotOurMac);
        }
        let dst = [meta.dst[0], meta.dst[1], meta.dst[2], meta.dst[3]];
        let local = self.s.is_own(dst)
            || dst[0] >= 224
            || self.s.interfaces.iter().any(|i| i.addr.broadcast() == dst);
        if local {
            self.c.to_gateway += 1;
            return Err(DropReason::ToGateway);
        }
        let Some((egress, hop)) = self.s.route(dst).map(|(i, h)| (*i, h)) else {
            self.c.no_route += 1;
            return Err(DropReason::NoRoute);
        };
        if let Err(r) = decrement_ttl(frame, meta) {
            if r == DropReason::TtlExpired {
                self.c.ttl_expired += 1;
            }
            return Err(r);
        }
        let Some(mac) = self.neighbour(hop, now).or_else(|| self.catch_up(hop, now)) else {
            return self.resolve(now, frame, &egress, hop);
        };
        let mut eth = EthernetFrame::new_checked(frame)?;
        eth.set_src(egress.mac.0);
        eth.set_dst(mac);
        self.c.forwarded += 1;
        Ok(Verdict::Out(egress.port))
    }

    /// The next hop has no MAC: the packet becomes the ARP request for it (see the module doc).
    fn resolve(
        &mut self,
        now: Nanos,
        frame: &mut [u8],
        egress: &Interface,
        hop: [u8; 4],
    ) -> Result<Verdict, DropReason> {
        if !self.pending.may_ask(hop, now)
            || arp::write_request(frame, egress.mac.0, egress.addr.addr, hop).is_err()
        {
            self.c.neighbour_unknown += 1;
            return Err(DropReason::NeighbourUnknown);
        }
        self.c.arp_requests += 1;
        Ok(Verdict::Out(egress.port))
    }
}
