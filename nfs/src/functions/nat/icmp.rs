//! ICMP error translation (RFC 5508 §4.2, REQ-3/REQ-4, and REQ-10 hairpinning).
//!
//! An ICMP error quotes the datagram that caused it: an inbound error (from a remote host or
//! a router on the way) quotes the datagram as it left the NAT, with the *public* endpoint as
//! its source; an outbound error (from an inside host) quotes a datagram the NAT delivered,
//! with the *inside* endpoint as its destination. The NAT finds the mapping by that quoted
//! endpoint, rewrites the outer destination (inbound) or source (outbound) address, the quoted
//! IP address with the quoted IP checksum, the quoted port or echo identifier with the quoted
//! transport checksum when it is within the quote, and finally the ICMP checksum over the whole
//! message. Errors never create or refresh a mapping. A quote too short to hold the IP header
//! and 8 bytes of transport header, or a message whose checksum does not verify, is dropped
//! as `nat_bad_icmp_error`; one for which no mapping exists as `nat_no_mapping`.

use super::mapping::Endpoint;
use super::translate::a4;
use super::Nat;
use crate::drop::DropReason;
use crate::nf::Verdict;
use crate::packet::checksum::{udp_adjusted, update16, update32};
use crate::packet::icmp::{IcmpPacket, IcmpType};
use crate::packet::rewrite::{set_ipv4_dst, set_ipv4_src};
use crate::packet::{IpProtocol, Meta};
use crate::time::Nanos;

/// Offsets in the quoted datagram, validated once so the accessors below cannot fail.
struct Quote {
    /// IP header length.
    ihl: usize,
    proto: IpProtocol,
    src: [u8; 4],
    dst: [u8; 4],
    /// Source and destination ports, or the echo identifier in both.
    sport: u16,
    dport: u16,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr(b: &[u8], at: usize) -> Option<[u8; 4]> {
    b.get(at..at + 4)?.try_into().ok()
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

impl Quote {
    /// Reads a quoted IPv4 datagram: version 4, IHL ≥ 5 and 8 transport bytes present.
    fn parse(q: &[u8]) -> Option<Quote> {
        let v = *q.first()?;
        let ihl = usize::from(v & 0x0f) * 4;
        if v >> 4 != 4 || ihl < 20 || q.len() < ihl + 8 {
            return None;
        }
        let proto = IpProtocol::from(*q.get(9)?);
        let (sport, dport) = match proto {
            IpProtocol::Tcp | IpProtocol::Udp => (be16(q, ihl)?, be16(q, ihl + 2)?),
            IpProtocol::Icmp => {
                let t = IcmpType::from(*q.get(ihl)?);
                if !t.is_echo() {
                    return None;
                }
                let id = be16(q, ihl + 4)?;
                (id, id)
            }
            _ => return None,
        };
        Some(Quote { ihl, proto, src: addr(q, 12)?, dst: addr(q, 16)?, sport, dport })
    }

    /// Rewrites the quoted source (`src`) or destination endpoint to `to`, keeping the quoted
    /// IP checksum and, where it is in the quote, the transport checksum right.
    fn rewrite(&self, q: &mut [u8], src: bool, to: Endpoint) -> Option<()> {
        let (addr_at, old_addr, old_port) =
            if src { (12, self.src, self.sport) } else { (16, self.dst, self.dport) };
        q.get_mut(addr_at..addr_at + 4)?.copy_from_slice(&to.addr);
        let ipck = be16(q, 10)?;
        put16(q, 10, update32(ipck, old_addr, to.addr))?;
        let l4 = self.ihl;
        match self.proto {
            IpProtocol::Tcp | IpProtocol::Udp => {
                put16(q, l4 + if src { 0 } else { 2 }, to.port)?;
                let ck_at = if self.proto == IpProtocol::Tcp { l4 + 16 } else { l4 + 6 };
                // A quote of only 8 transport bytes holds no TCP checksum: nothing to fix.
                if let Some(ck) = be16(q, ck_at) {
                    let new = update16(update32(ck, old_addr, to.addr), old_port, to.port);
                    let new = if self.proto == IpProtocol::Udp { udp_adjusted(ck, new) } else { new };
                    put16(q, ck_at, new)?;
                }
            }
            _ => {
                // Echo: the identifier, under the quoted ICMP checksum (no pseudo-header).
                put16(q, l4 + 4, to.port)?;
                let ck = be16(q, l4 + 2)?;
                put16(q, l4 + 2, update16(ck, old_port, to.port))?;
            }
        }
        Some(())
    }
}

/// The protocol and the source and destination endpoints of the datagram an ICMP error
/// quotes, for steering (the checksum is verified when the error is translated).
pub(super) fn quoted(frame: &[u8], meta: &Meta) -> Option<(IpProtocol, Endpoint, Endpoint)> {
    let msg = frame.get(usize::from(meta.l4)..usize::from(meta.l3_end))?;
    let q = Quote::parse(IcmpPacket::new_checked(msg).ok()?.embedded()?)?;
    let p = u8::from(q.proto);
    Some((q.proto, Endpoint::new(q.src, q.sport, p), Endpoint::new(q.dst, q.dport, p)))
}

impl Nat {
    /// Translates an ICMP error; `outbound` when it comes from the inside.
    pub(super) fn icmp_error(
        &mut self,
        now: Nanos,
        frame: &mut [u8],
        meta: &mut Meta,
        outbound: bool,
    ) -> Result<Verdict, DropReason> {
        let bad = |c: &mut super::Counters| {
            c.bad_icmp_errors += 1;
            DropReason::NatBadIcmpError
        };
        if !outbound && self.s.public_index(a4(&meta.dst)).is_none() {
            // Like any inbound packet, an error must be addressed to the NAT.
            return Err(self.no_mapping());
        }
        let range = usize::from(meta.l4)..usize::from(meta.l3_end);
        let msg = frame.get(range.clone()).ok_or(DropReason::Truncated)?;
        let icmp = IcmpPacket::new_checked(msg)?;
        if !icmp.verify_checksum() {
            return Err(bad(&mut self.c));
        }
        let Some(quote) = icmp.embedded().and_then(Quote::parse) else {
            return Err(bad(&mut self.c));
        };
        let proto = u8::from(quote.proto);
        let (new_outer, new_quoted) = if outbound {
            // The quoted datagram went to the inside endpoint; it becomes the public one.
            let k = Endpoint::new(quote.dst, quote.dport, proto);
            let public = match self.forward_source(quote.proto, quote.dst, quote.dport) {
                Some(p) => p,
                None => {
                    let idx = self.maps.find(&k, now, &mut self.freed);
                    match idx.and_then(|i| self.maps.out.get(i)) {
                        Some(m) => Endpoint::new(m.public_addr, m.public_port, proto),
                        None => return Err(self.no_mapping()),
                    }
                }
            };
            (public.addr, public)
        } else {
            // The quoted datagram left from the public endpoint; it becomes the inside one.
            let p = Endpoint::new(quote.src, quote.sport, proto);
            let inside = match self.forward_target(quote.proto, quote.src, quote.sport) {
                Some(i) => i,
                None => {
                    let found = self.maps.find_public(&p, now, &mut self.freed);
                    let (inside, idx) = found.ok_or_else(|| self.no_mapping())?;
                    let filtering = self.s.filtering;
                    let rport = if quote.proto == IpProtocol::Icmp { 0 } else { quote.dport };
                    if !self.maps.out.get(idx).is_some_and(|m| m.admits(filtering, quote.dst, rport)) {
                        self.c.filtered += 1;
                        return Err(DropReason::NatFiltered);
                    }
                    inside
                }
            };
            (inside.addr, inside)
        };
        if a4(if outbound { &meta.src } else { &meta.dst }) != new_outer {
            if outbound {
                set_ipv4_src(frame, meta, new_outer)?;
            } else {
                set_ipv4_dst(frame, meta, new_outer)?;
            }
        }
        let msg = frame.get_mut(range).ok_or(DropReason::Truncated)?;
        let mut icmp = IcmpPacket::new_checked(msg)?;
        let q = icmp.embedded_mut().ok_or(DropReason::NatBadIcmpError)?;
        quote.rewrite(q, !outbound, new_quoted).ok_or(DropReason::NatBadIcmpError)?;
        icmp.fill_checksum();
        if outbound && self.s.public_index(a4(&meta.dst)).is_some() {
            // RFC 5508 REQ-10: an error about a hairpinned datagram is hairpinned too; its
            // quote now names the sender's public endpoint, which the inbound half resolves.
            self.icmp_error(now, frame, meta, false)?;
            self.c.hairpinned += 1;
            return Ok(match self.s.hairpin {
                super::Hairpin::Reflect => Verdict::Out(meta.ingress),
                super::Hairpin::Route => Verdict::Continue,
            });
        }
        Ok(Verdict::Continue)
    }

    fn no_mapping(&mut self) -> DropReason {
        self.c.no_mapping += 1;
        DropReason::NatNoMapping
    }
}
