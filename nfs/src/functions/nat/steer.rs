//! Steering of packets addressed to a public endpoint to the core that owns it.
//!
//! A mapping lives on the core that allocated its public port, and that core's share of the
//! pool held the port ([`Release`](crate::state::Release)). [`PortOwners`] records, for every
//! public (protocol, address, port), which core's share took the port in — when the pool is
//! split at start and when a dry core refills from the reserve — so any core can tell where
//! the state behind a public port is. [`Nat::owner_core`] answers the dataplane's ingress
//! question ([`NetworkFunction::steer`](crate::nf::NetworkFunction::steer)) from it: a reply
//! (or a hairpinned packet) to `public:port` runs on the core owning `port`, whichever core
//! the port's hash or the NIC's RSS delivered it to.
//!
//! Cost per packet: packets not addressed to a pool address (all ordinary outbound traffic)
//! leave after the address comparison; others take one table load (ICMP errors also parse
//! their quote). No port of a static forward is ever in a share, so forwards have no owner
//! and are translated wherever they arrive (they need no per-core state).
//!
//! With `steer_outbound`, packets from the inside are steered too: by the hash of their inside
//! endpoint, so every flow of an endpoint runs on one core and shares one mapping (RFC 4787
//! REQ-1 across cores; that core then owns the mapping's port, so replies follow); and both
//! directions of a forwarded connection by the symmetric hash of its public side, so a
//! stateful NF in the chain sees the whole connection on one core. The cost: one hash per
//! inside packet, and on ports that spread flows themselves most inside traffic changes core.

use super::config::Settings;
use super::mapping::Endpoint;
use super::pool::{PortPool, Slot};
use super::translate::{a4, kind, Kind};
use super::{icmp, pool_index, Nat};
use crate::flow::{core_for, v4, FlowKey, FAMILY_V4};
use crate::ids::CoreId;
use crate::nf::NfError;
use crate::packet::{Fragment, IpProtocol, L3Kind, Meta};
use crate::state::OwnerMap;

/// The owning core of every dynamic public port, per protocol pool (TCP, UDP, ICMP).
#[derive(Debug)]
pub struct PortOwners {
    maps: [OwnerMap; 3],
    lo: u16,
    /// Ports per address (`ports.hi - ports.lo + 1`).
    span: usize,
}

impl PortOwners {
    /// An empty map for the pool of `s`, for `cores` cores.
    pub fn new(s: &Settings, cores: usize) -> Result<PortOwners, NfError> {
        if cores > OwnerMap::MAX_CORES {
            return Err(NfError::Param {
                key: "cores".into(),
                detail: format!("the NAT steers to at most {} cores, not {cores}", OwnerMap::MAX_CORES),
            });
        }
        let span = usize::from(s.ports.hi - s.ports.lo) + 1;
        let units = s.public.len() * span;
        Ok(PortOwners { maps: std::array::from_fn(|_| OwnerMap::new(units)), lo: s.ports.lo, span })
    }

    fn unit(&self, addr: usize, port: u16) -> Option<usize> {
        let off = usize::from(port.checked_sub(self.lo)?);
        (off < self.span).then_some(addr * self.span + off)
    }

    /// Records that `core`'s share of pool `pool` took in every free port of `ports`.
    pub fn claim(&self, pool: usize, ports: &PortPool, core: CoreId) {
        let Some(map) = self.maps.get(pool) else { return };
        for s in ports.slots() {
            if let Some(u) = self.unit(s.addr(), s.port()) {
                map.claim(u, core);
            }
        }
    }

    /// Records that `core` holds public `slot` of pool `pool` (a restored mapping's port).
    pub fn claim_slot(&self, pool: usize, slot: Slot, core: CoreId) {
        if let (Some(map), Some(u)) = (self.maps.get(pool), self.unit(slot.addr(), slot.port())) {
            map.claim(u, core);
        }
    }

    /// The core owning public `slot` of pool `pool`, if any core has held it.
    #[inline]
    pub fn owner(&self, pool: usize, slot: Slot) -> Option<CoreId> {
        self.maps.get(pool)?.owner(self.unit(slot.addr(), slot.port())?)
    }
}

impl Nat {
    /// The core that must process this packet (see the module doc), or `None`: one core, not
    /// IPv4, a later fragment (no port to go by), or a packet this NF has no opinion on
    /// (outbound without `steer_outbound`, a forward's port without it, a port nobody holds).
    #[inline]
    pub(super) fn owner_core(&self, meta: &Meta, frame: &[u8]) -> Option<CoreId> {
        if self.cores <= 1 || meta.l3_kind != L3Kind::Ipv4 || meta.fragment == Fragment::Later {
            return None;
        }
        let Some(addr) = self.s.public_index(a4(&meta.dst)) else {
            // Not to a pool address: ordinary outbound traffic, steered only on request.
            if self.s.steer_outbound && self.s.is_inside(meta.ingress) {
                return self.endpoint_core(meta, frame);
            }
            return None;
        };
        // The public endpoint addressed, and the remote that addressed it.
        let (addr, proto, port, remote, rport) = match meta.proto {
            IpProtocol::Tcp | IpProtocol::Udp => (addr, meta.proto, meta.dport, a4(&meta.src), meta.sport),
            IpProtocol::Icmp => match kind(frame, meta).ok()? {
                // Echo: the identifier is in both key ports.
                Kind::Query => (addr, meta.proto, meta.dport, a4(&meta.src), meta.sport),
                // An error about a datagram that left from a public endpoint.
                Kind::IcmpError => {
                    let (proto, src, dst) = icmp::quoted(frame, meta)?;
                    (self.s.public_index(src.addr)?, proto, src.port, dst.addr, dst.port)
                }
                Kind::Other => return None,
            },
            _ => return None,
        };
        let public = *self.s.public.get(addr)?;
        if self.s.steer_outbound && self.forward_target(proto, public, port).is_some() {
            return Some(self.flow_core(proto, public, port, remote, rport));
        }
        self.owners.owner(pool_index(proto.into())?, Slot::new(addr, port))
    }

    /// With `steer_outbound`: the core of the inside endpoint a packet from the inside (or
    /// the ICMP error it sends) belongs to, or of the public-side flow for a forward's target.
    fn endpoint_core(&self, meta: &Meta, frame: &[u8]) -> Option<CoreId> {
        let (proto, inside, iport, remote, rport) = match kind(frame, meta).ok()? {
            Kind::Query => (meta.proto, a4(&meta.src), meta.sport, a4(&meta.dst), meta.dport),
            // It quotes a datagram the NAT delivered to the inside endpoint.
            Kind::IcmpError => {
                let (proto, src, dst) = icmp::quoted(frame, meta)?;
                (proto, dst.addr, dst.port, src.addr, src.port)
            }
            Kind::Other => return None,
        };
        if let Some(p) = self.forward_source(proto, inside, iport) {
            return Some(self.flow_core(proto, p.addr, p.port, remote, rport));
        }
        let h = Endpoint::new(inside, iport, proto.into()).hash();
        Some(CoreId(u16::try_from(core_for(h, self.cores)).ok()?))
    }

    /// The core of a forwarded connection: by the symmetric hash of its public side, the same
    /// from both directions.
    fn flow_core(
        &self,
        proto: IpProtocol,
        public: [u8; 4],
        port: u16,
        remote: [u8; 4],
        rport: u16,
    ) -> CoreId {
        let (key, _) = FlowKey::new(FAMILY_V4, proto.into(), v4(public), port, v4(remote), rport);
        CoreId(u16::try_from(core_for(key.hash(), self.cores)).unwrap_or(0))
    }
}
