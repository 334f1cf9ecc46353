//! The packet path: outbound, inbound and hairpin translation of TCP, UDP and ICMP echo,
//! and the dispatch to ICMP errors and fragments.

use super::frag::{FragKey, FragXlat};
use super::mapping::{self, Endpoint, Mapping};
use super::pool::Slot;
use super::{pool_index, Hairpin, Nat};
use crate::drop::DropReason;
use crate::nf::Verdict;
use crate::packet::icmp::IcmpPacket;
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::rewrite::{set_dst_port, set_icmp_echo_id, set_ipv4_dst, set_ipv4_src, set_src_port};
use crate::packet::{Fragment, IpProtocol, L3Kind, Meta};
use crate::time::Nanos;

/// The IPv4 address in a key address.
pub(super) fn a4(a: &[u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// What a packet is, for the NAT.
pub(super) enum Kind {
    /// TCP, UDP or ICMP echo: translated by (address, port or identifier).
    Query,
    /// An ICMP error quoting a datagram.
    IcmpError,
    Other,
}

pub(super) fn kind(frame: &[u8], meta: &Meta) -> Result<Kind, DropReason> {
    Ok(match meta.proto {
        IpProtocol::Tcp | IpProtocol::Udp => Kind::Query,
        IpProtocol::Icmp => {
            let seg =
                frame.get(usize::from(meta.l4)..usize::from(meta.l3_end)).ok_or(DropReason::Truncated)?;
            let t = IcmpPacket::new_checked(seg)?.msg_type();
            if t.is_echo() {
                Kind::Query
            } else if t.is_error() {
                Kind::IcmpError
            } else {
                Kind::Other
            }
        }
        _ => Kind::Other,
    })
}

/// The IP identification of the datagram.
fn ident(frame: &[u8], meta: &Meta) -> Result<u16, DropReason> {
    let ip = frame.get(usize::from(meta.l3)..usize::from(meta.l3_end)).ok_or(DropReason::Truncated)?;
    Ok(Ipv4Packet::new_checked(ip)?.ident())
}

/// The remote port a filter sees: ICMP echo has the identifier in both key ports, so only
/// the address counts for filtering.
fn remote_port(proto: IpProtocol, port: u16) -> u16 {
    if proto == IpProtocol::Icmp {
        0
    } else {
        port
    }
}

/// Sets the source (or destination) port, or the echo identifier for ICMP.
fn set_port(frame: &mut [u8], meta: &mut Meta, src: bool, port: u16) -> Result<(), DropReason> {
    match (meta.proto, src) {
        (IpProtocol::Icmp, _) => set_icmp_echo_id(frame, meta, port),
        (_, true) => set_src_port(frame, meta, port),
        (_, false) => set_dst_port(frame, meta, port),
    }
}

impl Nat {
    /// Translates one packet.
    pub(super) fn translate(
        &mut self,
        now: Nanos,
        frame: &mut [u8],
        meta: &mut Meta,
    ) -> Result<Verdict, DropReason> {
        if meta.l3_kind != L3Kind::Ipv4 {
            // ARP and IPv6 are not this NF's business (NAT44).
            self.c.passed_non_ipv4 += 1;
            return Ok(Verdict::Continue);
        }
        let outbound = self.s.is_inside(meta.ingress);
        if meta.fragment == Fragment::Later {
            return self.later_fragment(now, frame, meta);
        }
        let first = (meta.fragment == Fragment::First)
            .then(|| ident(frame, meta).map(|id| FragKey::new(meta, id)))
            .transpose()?;
        let v = match kind(frame, meta)? {
            Kind::Query if outbound => self.outbound(now, frame, meta),
            Kind::Query => self.inbound(now, frame, meta),
            Kind::IcmpError => {
                let v = self.icmp_error(now, frame, meta, outbound);
                if v.is_ok() {
                    self.c.icmp_errors += 1;
                }
                v
            }
            Kind::Other => {
                if outbound {
                    self.c.unsupported += 1;
                    Err(DropReason::NatUnsupported)
                } else {
                    self.c.no_mapping += 1;
                    Err(DropReason::NatNoMapping)
                }
            }
        }?;
        if let Some(k) = first {
            let out = match v {
                Verdict::Out(p) => p.0.saturating_add(1),
                _ => 0,
            };
            let x = FragXlat { src: a4(&meta.src), dst: a4(&meta.dst), out, _pad: [0; 2] };
            self.frags.remember(k, x, now);
        }
        Ok(v)
    }

    /// Outbound TCP/UDP/echo: source to the public mapping, then hairpin if the destination
    /// is one of ours.
    fn outbound(&mut self, now: Nanos, frame: &mut [u8], meta: &mut Meta) -> Result<Verdict, DropReason> {
        let proto = meta.proto;
        let (src, sport, dst, dport) = (a4(&meta.src), meta.sport, a4(&meta.dst), meta.dport);
        let public = match self.forward_source(proto, src, sport) {
            Some(p) => p,
            None => self.map_outbound(now, meta, Endpoint::new(src, sport, proto.into()), dst, dport)?,
        };
        set_ipv4_src(frame, meta, public.addr)?;
        set_port(frame, meta, true, public.port)?;
        self.c.outbound += 1;
        if self.s.public_index(dst).is_none() {
            return Ok(Verdict::Continue);
        }
        // RFC 4787 REQ-9 / RFC 5382 REQ-8: hairpinning. The target sees the sender's public
        // endpoint, and its mapping's filtering applies to that endpoint.
        // Counted as outbound and inbound too.
        self.inbound(now, frame, meta)?;
        self.c.hairpinned += 1;
        Ok(match self.s.hairpin {
            Hairpin::Reflect => Verdict::Out(meta.ingress),
            Hairpin::Route => Verdict::Continue,
        })
    }

    /// The public endpoint of a static forward whose inside target sent this packet.
    pub(super) fn forward_source(&self, proto: IpProtocol, src: [u8; 4], sport: u16) -> Option<Endpoint> {
        self.s.forwards.iter().find_map(|f| {
            let p = (f.proto == proto && f.inside_addr == src).then(|| f.public_port(sport))??;
            Some(Endpoint::new(f.public_addr, p, proto.into()))
        })
    }

    /// The mapping of inside endpoint `k` (created if needed), updated for a packet to
    /// `dst:dport`; returns the public endpoint.
    fn map_outbound(
        &mut self,
        now: Nanos,
        meta: &Meta,
        k: Endpoint,
        dst: [u8; 4],
        dport: u16,
    ) -> Result<Endpoint, DropReason> {
        let idx = match self.maps.find(&k, now, &mut self.freed) {
            Some(idx) => idx,
            None => self.new_mapping(now, k)?,
        };
        let s = &*self.s;
        let m = self.maps.out.get_mut(idx).ok_or(DropReason::NatNoMapping)?;
        m.sent_to(dst, remote_port(meta.proto, dport));
        let timeout = match meta.proto {
            IpProtocol::Tcp => mapping::track_tcp(m, true, meta.tcp_flags, s),
            IpProtocol::Udp => s.udp(),
            _ => s.icmp(),
        };
        // A mapping moved to another instance is no longer refreshed here.
        if m.flags & mapping::flags::MOVED == 0 {
            m.deadline = now.saturating_add(timeout).0;
        }
        Ok(Endpoint::new(m.public_addr, m.public_port, k.proto))
    }

    /// Allocates a public port for `k` and inserts the mapping.
    fn new_mapping(&mut self, now: Nanos, k: Endpoint) -> Result<crate::state::FlowIdx, DropReason> {
        let slot = self.allocate(k)?;
        let public_addr = self.s.public.get(slot.addr()).copied().ok_or(DropReason::NatPoolExhausted)?;
        let m = Mapping { public_addr, public_port: slot.port(), ..Mapping::default() };
        match self.maps.insert(k, m, now) {
            Ok(idx) => {
                self.c.new_mappings += 1;
                log::debug!(
                    "nat: new mapping {:?}:{} proto {} -> {:?}:{}",
                    k.addr,
                    k.port,
                    k.proto,
                    public_addr,
                    slot.port()
                );
                Ok(idx)
            }
            Err(_) => {
                self.give_back(k.proto, slot);
                self.c.table_full += 1;
                Err(DropReason::TableFull)
            }
        }
    }

    pub(super) fn give_back(&mut self, proto: u8, slot: Slot) {
        if let Some(p) = pool_index(proto).and_then(|i| self.pools.get_mut(i)) {
            p.local().put(slot);
        }
    }

    /// Picks a public (address, port) for inside endpoint `k` from this core's share: the
    /// paired address (RFC 4787 REQ-2), the inside port itself if free (port preservation),
    /// else a pseudo-random free port (RFC 6056). A dry share refills from the reserve, and
    /// the ports it takes in are recorded as this core's ([`PortOwners`](super::PortOwners)),
    /// so replies to them are steered here.
    fn allocate(&mut self, k: Endpoint) -> Result<Slot, DropReason> {
        let pi = pool_index(k.proto).ok_or(DropReason::NatUnsupported)?;
        let naddr = self.s.public.len().max(1);
        let paired = self.paired(k);
        // Picked ahead by the burst (its preserved port was not free then).
        if let Some(i) = self.picked.iter().position(|(e, _)| *e == k) {
            self.c.picked_ahead += 1;
            return Ok(self.picked.swap_remove(i).1);
        }
        for attempt in 0..2 {
            let pool = self.pools.get_mut(pi).ok_or(DropReason::NatPoolExhausted)?;
            let local = pool.local();
            let preserve = Slot::new(paired, k.port);
            if self.s.ports.contains(k.port) && local.take(preserve) {
                self.c.preserved_ports += 1;
                return Ok(preserve);
            }
            for a in (0..naddr).map(|i| (paired + i) % naddr) {
                if let Some(s) = local.pick(a, &mut self.rng, 1, |_| true) {
                    return Ok(s);
                }
            }
            let (owners, core) = (&self.owners, self.core);
            if attempt == 0 && !pool.refill_with(|got| owners.claim(pi, got, core)) {
                break;
            }
        }
        self.c.exhausted += 1;
        Err(DropReason::NatPoolExhausted)
    }

    /// The index of inside endpoint `k`'s paired public address (RFC 4787 REQ-2: every
    /// mapping of one inside address gets the same public address, while the pool allows).
    fn paired(&self, k: Endpoint) -> usize {
        (Endpoint::new(k.addr, 0, 0).hash() as usize) % self.s.public.len().max(1)
    }

    /// The public endpoint [`Nat::allocate`] will most likely give inside endpoint `k`, chosen
    /// ahead of the packet (see [`Nat::process`]): its preserved port if free now, else a
    /// random free port of its paired address, taken from the pool into `picked` for
    /// `allocate` to use. `None` when the paired address's share has no free port (the
    /// packet then takes the ordinary path, refilling from the reserve).
    pub(super) fn pick_ahead(&mut self, k: Endpoint) -> Option<Endpoint> {
        let paired = self.paired(k);
        let addr = *self.s.public.get(paired)?;
        let in_range = self.s.ports.contains(k.port);
        let local = self.pools.get_mut(pool_index(k.proto)?)?.local();
        if in_range && local.contains(Slot::new(paired, k.port)) {
            return Some(Endpoint::new(addr, k.port, k.proto));
        }
        let slot = local.pick(paired, &mut self.rng, 1, |_| true)?;
        self.picked.push((k, slot));
        Some(Endpoint::new(addr, slot.port(), k.proto))
    }

    /// Inbound TCP/UDP/echo (and the second half of a hairpin): destination from the public
    /// endpoint to the inside one, if a forward or an admitting mapping exists.
    fn inbound(&mut self, now: Nanos, frame: &mut [u8], meta: &mut Meta) -> Result<Verdict, DropReason> {
        let proto = meta.proto;
        let (src, sport, dst, dport) = (a4(&meta.src), meta.sport, a4(&meta.dst), meta.dport);
        let inside = match self.forward_target(proto, dst, dport) {
            Some(t) => {
                self.c.forwarded += 1;
                t
            }
            None => self.map_inbound(now, meta, Endpoint::new(dst, dport, proto.into()), src, sport)?,
        };
        set_ipv4_dst(frame, meta, inside.addr)?;
        set_port(frame, meta, false, inside.port)?;
        self.c.inbound += 1;
        Ok(Verdict::Continue)
    }

    /// The inside endpoint a static forward sends public `dst:dport` to.
    pub(super) fn forward_target(&self, proto: IpProtocol, dst: [u8; 4], dport: u16) -> Option<Endpoint> {
        self.s.forwards.iter().find_map(|f| {
            (f.proto == proto && f.public_addr == dst && f.public.contains(dport))
                .then(|| Endpoint::new(f.inside_addr, f.inside_port(dport), proto.into()))
        })
    }

    fn map_inbound(
        &mut self,
        now: Nanos,
        meta: &Meta,
        public: Endpoint,
        src: [u8; 4],
        sport: u16,
    ) -> Result<Endpoint, DropReason> {
        let Some((inside, idx)) = self.maps.find_public(&public, now, &mut self.freed) else {
            self.c.no_mapping += 1;
            return Err(DropReason::NatNoMapping);
        };
        let s = &*self.s;
        let m = self.maps.out.get_mut(idx).ok_or(DropReason::NatNoMapping)?;
        if !m.admits(s.filtering, src, remote_port(meta.proto, sport)) {
            self.c.filtered += 1;
            return Err(DropReason::NatFiltered);
        }
        // RFC 4787 REQ-6: UDP (and ICMP query) mappings are refreshed by outbound traffic
        // only; TCP follows the connection in both directions (RFC 5382 REQ-5).
        if meta.proto == IpProtocol::Tcp {
            let t = mapping::track_tcp(m, false, meta.tcp_flags, s);
            if m.flags & mapping::flags::MOVED == 0 {
                m.deadline = now.saturating_add(t).0;
            }
        }
        Ok(inside)
    }

    /// A non-first fragment: the address rewrite of its first fragment, or a counted drop.
    fn later_fragment(
        &mut self,
        now: Nanos,
        frame: &mut [u8],
        meta: &mut Meta,
    ) -> Result<Verdict, DropReason> {
        let k = FragKey::new(meta, ident(frame, meta)?);
        let Some(x) = self.frags.lookup(&k, now) else {
            self.c.unknown_fragments += 1;
            return Err(DropReason::Fragment);
        };
        if a4(&meta.src) != x.src {
            set_ipv4_src(frame, meta, x.src)?;
        }
        if a4(&meta.dst) != x.dst {
            set_ipv4_dst(frame, meta, x.dst)?;
        }
        self.c.fragments += 1;
        Ok(match x.out {
            0 => Verdict::Continue,
            p => Verdict::Out(crate::ids::PortId(p - 1)),
        })
    }
}

impl FragKey {
    /// The key of the datagram `meta` belongs to, as it arrived.
    pub fn new(meta: &Meta, ident: u16) -> FragKey {
        FragKey { src: a4(&meta.src), dst: a4(&meta.dst), ident, proto: meta.proto.into(), _pad: 0 }
    }
}
