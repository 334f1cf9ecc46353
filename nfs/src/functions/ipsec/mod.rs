//! `ipsec`: an IPsec VPN gateway, ESP in tunnel mode with AES-GCM (RFC 4303, RFC 4106),
//! configured like a pair of Linux xfrm states; tested against scapy's ESP (both directions)
//! and frames sent by Linux xfrm (`tests/tests/esp_scapy.rs`, `esp_linux_vectors.rs`).
//!
//! Cleartext packets (from the `inside` ports, default all) are matched against the policies
//! in order (`config.rs`): `protect` encapsulates them in ESP on the policy's SA (`esp.rs`: a
//! new outer IPv4 header from `local` to `remote`, protocol 50), `bypass` passes them on,
//! `discard` drops them (`ipsec_discard`); `unmatched` says what happens to the rest, except
//! cleartext in the reverse direction of a `protect` policy, which had to arrive in ESP
//! (`ipsec_unprotected`, RFC 4301 §5.2). ESP
//! packets addressed to the `local` endpoint of an SA are inbound: the SA is found by SPI, the
//! sequence number checked against the anti-replay window (`replay.rs`), the ICV verified,
//! the payload decrypted and its padding checked, the outer headers stripped (the Ethernet
//! header stays, its ethertype set for the inner packet), and the inner packet must match a
//! `protect` policy of that SA with source and destination swapped, as the peer's outbound
//! policy would have selected it. Every malformed or refused ESP packet is a drop with its own
//! reason (`ipsec_*`). Either way the packet continues along the chain, so a `gateway` step can
//! route the outer (or inner) packet.
//!
//! # One owner core per SA
//!
//! An SA's outbound sequence number must never repeat (it is also the GCM nonce's IV: a
//! repeated nonce under one key breaks GCM) and its replay window must see every inbound
//! packet, so, as VPP binds an SA to one thread, each SA pair is owned by one core: the core
//! `inbound SPI mod cores`. The NF steers ([`NetworkFunction::steer`]): an outbound packet
//! selected by a `protect` policy and an inbound ESP packet for the SA go to the owner core
//! before the chain runs, so both directions of an SA run there. A packet of an SA that still
//! reaches another core (an NF earlier in the chain rewrote it after steering) is dropped as
//! `ipsec_wrong_core` rather than sent with a sequence number the owner may also send.
//!
//! # Choices and limits
//!
//! - AES-GCM with 128- or 256-bit keys, 4-byte salt, 8-byte IV, 16-byte ICV only; outer IPv4
//!   only; inner IPv4 or IPv6. No IKE: keys come from the configuration (rekeying is a
//!   configuration reload; `rekey_needed` counts SAs past their soft limit).
//! - Outer header: TTL `ttl` (64), DSCP and ECN copied from the inner packet, DF copied from
//!   an IPv4 inner packet and set for IPv6 (`df`), identification = low 16 bits of the
//!   sequence number. The inner packet's TTL (hop limit) goes down by one before it is
//!   encapsulated, as the router it passes through (RFC 4301 §5.1.2.1; Linux routes before
//!   xfrm); `decrement_ttl = false` leaves it alone for a bump in the wire. On the way in, a
//!   `gateway` step after this NF decrements the decrypted packet's TTL as it routes it. ECN on
//!   the way in follows RFC 6040 §4.2: a CE mark on the outer header reaches an ECN-capable
//!   inner packet, and over a Not-ECT one is a drop (`ipsec_ce_not_ect`).
//! - No fragmentation or path-MTU handling: the ESP packet is 54–57 bytes longer than the
//!   inner one, whatever the egress MTU.
//! - Fragmented outer ESP is dropped (`fragment`): there is no reassembly. A non-initial
//!   inner fragment matches only policies without port selectors.
//! - The receiver checks the padding to be 1, 2, 3, ... (RFC 4303 §2.4), as Linux and scapy
//!   send it.
//!
//! Scale-out: security associations and their sequence and replay state are per tunnel, not
//! per flow, and are not migrated: a tunnel must stay on one instance.

mod config;
mod esp;
mod replay;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_malformed;

use std::sync::Arc;

use hashbrown::HashMap;

pub use config::{Action, DfMode, IpsecConfig, KeyLen, Policy, SaConfig, Settings};
pub use esp::{Cipher, InSa, OutSa};
pub use replay::{Refused, Window};

use crate::drop::{DropCounters, DropReason};
use crate::flow::{FAMILY_V4, FAMILY_V6};
use crate::frame::Frame;
use crate::ids::CoreId;
use crate::nf::{Burst, Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::{parse, Fragment, IpProtocol, L3Kind, Meta, ParsePolicy};

/// Per-core counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub encrypted: u64,
    pub decrypted: u64,
    pub bypassed: u64,
    /// SAs that crossed their soft limit on this core (each counted once).
    pub rekey_needed: u64,
}

/// What a packet is to the NF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// ESP for SA `n`.
    Inbound(usize),
    /// Cleartext to encrypt on SA `n`.
    Protect(usize),
    Bypass,
    Drop(DropReason),
}

/// The IPsec NF on one core.
#[derive(Debug)]
pub struct Ipsec {
    s: Arc<Settings>,
    /// Inbound SPI → SA index (SPIs are unique per local address; the address is checked).
    by_spi: Arc<HashMap<u32, Vec<usize>>>,
    out: Vec<OutSa>,
    inb: Vec<InSa>,
    cores: usize,
    c: Counters,
    drops: DropCounters,
}

impl NetworkFunction for Ipsec {
    const KIND: &'static str = "ipsec";
    type Config = IpsecConfig;
    const STEERS: bool = true;

    fn init(config: &IpsecConfig, rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let s = {
            let built = Settings::from_config(config, rt)?;
            rt.global_read("settings", || Ok(built))?
        };
        let by_spi = rt.global_read("spi", || {
            let mut m: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, sa) in s.sas.iter().enumerate() {
                m.entry(sa.inb.spi).or_default().push(i);
            }
            Ok(m)
        })?;
        // Ciphers are expanded once per SA, here, on every core (a core uses only the SAs it
        // owns; the others cost a key schedule each).
        let out = s.sas.iter().map(OutSa::new).collect::<Result<Vec<_>, _>>()?;
        let inb = s.sas.iter().map(InSa::new).collect::<Result<Vec<_>, _>>()?;
        Ok(Ipsec {
            s,
            by_spi,
            out,
            inb,
            cores: rt.cores.max(1),
            c: Counters::default(),
            drops: DropCounters::default(),
        })
    }

    fn process_packet(&mut self, _ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        // A bare slice cannot change length: only the burst path ([`Ipsec::process`])
        // encapsulates and decapsulates. Classify so cleartext policies still apply.
        match self.classify(meta, frame) {
            Class::Bypass => Verdict::Continue,
            Class::Drop(r) => Verdict::Drop(r),
            Class::Inbound(_) | Class::Protect(_) => Verdict::Drop(DropReason::IpsecNoRoom),
        }
    }

    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        for &i in burst.active {
            let i = usize::from(i);
            if let (Some(frame), Some(meta), Some(v)) =
                (burst.frames.get_mut(i), burst.metas.get_mut(i), burst.verdicts.get_mut(i))
            {
                *v = self.packet(ctx, frame, meta);
                if let Verdict::Drop(r) = *v {
                    self.drops.count(r);
                }
            }
        }
    }

    #[inline]
    fn steer(&self, meta: &Meta, frame: &[u8]) -> Option<CoreId> {
        if self.cores <= 1 {
            return None;
        }
        match self.classify(meta, frame) {
            Class::Inbound(sa) | Class::Protect(sa) => Some(self.owner(sa)),
            Class::Bypass | Class::Drop(_) => None,
        }
    }

    fn report(&self, out: &mut Report) {
        out.counter("encrypted", self.c.encrypted);
        out.counter("decrypted", self.c.decrypted);
        out.counter("bypassed", self.c.bypassed);
        out.counter("rekey_needed", self.c.rekey_needed);
        for (r, n) in self.drops.nonzero() {
            out.counter(r.name(), n);
        }
    }
}

impl Ipsec {
    /// The core owning SA `sa` (see the module doc).
    pub fn owner(&self, sa: usize) -> CoreId {
        let spi = self.s.sas.get(sa).map_or(0, |s| s.inb.spi) as usize;
        CoreId(u16::try_from(spi % self.cores).unwrap_or(0))
    }

    pub fn counters(&self) -> &Counters {
        &self.c
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Whether SA `sa`'s outbound side has crossed its soft limit on this core.
    pub fn rekey_needed(&self, sa: usize) -> bool {
        self.out.get(sa).is_some_and(|o| o.rekey_needed)
    }

    fn classify(&self, meta: &Meta, frame: &[u8]) -> Class {
        if !meta.is_ip() {
            return Class::Bypass;
        }
        if meta.l3_kind == L3Kind::Ipv4 && meta.proto == IpProtocol::Esp {
            let dst = [meta.dst[0], meta.dst[1], meta.dst[2], meta.dst[3]];
            if self.s.sas.iter().any(|sa| sa.local == dst) {
                if meta.fragment != Fragment::None {
                    return Class::Drop(DropReason::Fragment);
                }
                let l4 = usize::from(meta.l4);
                let Some(spi) = frame.get(l4..l4 + 4).filter(|_| l4 + 8 <= usize::from(meta.l3_end)) else {
                    return Class::Drop(DropReason::IpsecTruncated);
                };
                let spi = u32::from_be_bytes([spi[0], spi[1], spi[2], spi[3]]);
                let sa = self.by_spi.get(&spi).and_then(|v| {
                    v.iter().copied().find(|&i| self.s.sas.get(i).is_some_and(|sa| sa.local == dst))
                });
                return sa.map_or(Class::Drop(DropReason::IpsecUnknownSpi), Class::Inbound);
            }
        }
        if !self.s.inside.is_empty() && !self.s.inside.contains(&meta.ingress) {
            return Class::Bypass;
        }
        let matched = self.s.policies.iter().find_map(|p| match selects(p, meta, false) {
            Sel::No => None,
            Sel::Yes => Some((p.action, p.sa)),
            Sel::UnknownPorts => Some((Action::Discard, None)),
        });
        let Some(action) = matched else {
            // RFC 4301 §5.2: cleartext that a `protect` policy would have carried inside ESP
            // (the reverse direction of a protected pair) is not let in. An explicit `bypass`
            // policy for that direction takes precedence.
            let protected = self
                .s
                .policies
                .iter()
                .any(|p| p.action == Action::Protect && selects(p, meta, true) != Sel::No);
            if protected {
                return Class::Drop(DropReason::IpsecUnprotected);
            }
            return match self.s.unmatched {
                Action::Bypass => Class::Bypass,
                Action::Protect | Action::Discard => Class::Drop(DropReason::IpsecDiscard),
            };
        };
        match action {
            (Action::Protect, Some(sa)) => Class::Protect(sa),
            (Action::Protect, None) | (Action::Discard, _) => Class::Drop(DropReason::IpsecDiscard),
            (Action::Bypass, _) => Class::Bypass,
        }
    }

    fn packet<F: Frame>(&mut self, ctx: &Ctx, frame: &mut F, meta: &mut Meta) -> Verdict {
        match self.classify(meta, frame.as_ref()) {
            Class::Bypass => {
                self.c.bypassed += 1;
                Verdict::Continue
            }
            Class::Drop(r) => Verdict::Drop(r),
            Class::Protect(sa) => {
                if self.owner(sa) != ctx.core {
                    return Verdict::Drop(DropReason::IpsecWrongCore);
                }
                let Some(o) = self.out.get_mut(sa) else { return Verdict::Drop(DropReason::IpsecDiscard) };
                match o.encapsulate(frame, meta, self.s.decrement_ttl) {
                    Ok(crossed) => {
                        if crossed {
                            self.c.rekey_needed += 1;
                            if let Some(p) = self.s.sas.get(sa) {
                                log::warn!("ipsec: SA `{}` crossed its soft limit: rekey it", p.name);
                            }
                        }
                        self.c.encrypted += 1;
                        self.reparse(frame, meta, DropReason::IpsecNoRoom)
                    }
                    Err(r) => Verdict::Drop(r),
                }
            }
            Class::Inbound(sa) => {
                if self.owner(sa) != ctx.core {
                    return Verdict::Drop(DropReason::IpsecWrongCore);
                }
                let Some(i) = self.inb.get_mut(sa) else { return Verdict::Drop(DropReason::IpsecUnknownSpi) };
                if let Err(r) = i.decapsulate(frame, meta) {
                    return Verdict::Drop(r);
                }
                let v = self.reparse(frame, meta, DropReason::IpsecBadInner);
                if v != Verdict::Continue {
                    return v;
                }
                // RFC 4301 §5.2: the inner packet must be one the SA's policy admits.
                let admitted = self.s.policies.iter().any(|p| {
                    p.action == Action::Protect && p.sa == Some(sa) && selects(p, meta, true) == Sel::Yes
                });
                if !admitted {
                    return Verdict::Drop(DropReason::IpsecSelectorMismatch);
                }
                self.c.decrypted += 1;
                Verdict::Continue
            }
        }
    }

    /// Parses the rewritten frame afresh, so the rest of the chain sees its new headers.
    fn reparse<F: Frame>(&self, frame: &F, meta: &mut Meta, bad: DropReason) -> Verdict {
        match parse(frame.as_ref(), meta.ingress, &ParsePolicy::default()) {
            Ok(m) => {
                *meta = m;
                Verdict::Continue
            }
            Err(_) => Verdict::Drop(bad),
        }
    }
}

/// A policy's verdict on a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sel {
    No,
    Yes,
    /// Addresses and protocol match but the packet is a non-initial fragment and the policy
    /// has port selectors: it cannot be decided, so it is discarded rather than leaked.
    UnknownPorts,
}

/// Whether `p` selects the packet of `meta`; `reverse` swaps source and destination (an
/// inbound packet checked against the outbound policy).
fn selects(p: &Policy, meta: &Meta, reverse: bool) -> Sel {
    let family = match meta.l3_kind {
        L3Kind::Ipv4 if p.v4 => FAMILY_V4,
        L3Kind::Ipv6 if p.v6 => FAMILY_V6,
        _ => return Sel::No,
    };
    let (src, dst, sport, dport) = if reverse {
        (&meta.dst, &meta.src, meta.dport, meta.sport)
    } else {
        (&meta.src, &meta.dst, meta.sport, meta.dport)
    };
    let addr_ok =
        |l: &[crate::addr::Prefix], a: &[u8; 16]| l.is_empty() || l.iter().any(|x| x.contains(family, a));
    if !addr_ok(&p.src, src) || !addr_ok(&p.dst, dst) {
        return Sel::No;
    }
    let proto: u8 = meta.proto.into();
    if p.proto.0.is_some_and(|want| want != proto) {
        return Sel::No;
    }
    if p.sport == crate::addr::PortRange::ANY && p.dport == crate::addr::PortRange::ANY {
        return Sel::Yes;
    }
    if meta.fragment == Fragment::Later {
        return Sel::UnknownPorts;
    }
    let ported = matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp);
    if ported && p.sport.contains(sport) && p.dport.contains(dport) {
        Sel::Yes
    } else {
        Sel::No
    }
}
