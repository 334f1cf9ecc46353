//! Why a packet was dropped.
//!
//! Every drop in nflet has exactly one reason; reasons index counter arrays, so a drop is a
//! counter increment, never a log line or a panic on the packet path.

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// The reason a packet left the dataplane without being transmitted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in counter-index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// How many reasons there are (the length of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// A stable snake_case name for logs, metrics and summaries.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// Index into a `[u64; DropReason::COUNT]` counter array.
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// The frame ends before a header it announces.
    Truncated => "truncated",
    /// An ethertype nflet does not forward (after up to two VLAN tags).
    UnknownEthertype => "unknown_ethertype",
    /// More VLAN tags than nflet walks.
    TooManyVlanTags => "too_many_vlan_tags",
    /// The IP version nibble does not match the ethertype.
    BadIpVersion => "bad_ip_version",
    /// IPv4 header length below 20 bytes or beyond the frame.
    BadIhl => "bad_ihl",
    /// IP total/payload length smaller than the header or larger than the frame.
    BadTotalLength => "bad_total_length",
    /// IPv4 header checksum mismatch.
    BadIpChecksum => "bad_ip_checksum",
    /// TTL or hop limit would reach zero.
    TtlExpired => "ttl_expired",
    /// A fragment refused by the fragment policy.
    Fragment => "fragment",
    /// IPv6 extension-header chain longer than nflet walks, or malformed.
    BadExtensionHeaders => "bad_extension_headers",
    /// TCP data offset below 5 words or beyond the packet.
    BadTcpHeader => "bad_tcp_header",
    /// UDP length field inconsistent with the IP payload.
    BadUdpLength => "bad_udp_length",
    /// A source address that may never appear on the wire (multicast, broadcast).
    BadSourceAddress => "bad_source_address",
    /// A firewall rule (or the default policy) denied the packet.
    FirewallDeny => "firewall_deny",
    /// Inbound packet of a connection the firewall does not know.
    NoConnection => "no_connection",
    /// TCP packet invalid for the tracked connection state.
    InvalidTcpState => "invalid_tcp_state",
    /// A state table was full and its policy refused a new entry.
    TableFull => "table_full",
    /// No chain is configured for the ingress port or classifier.
    NoChain => "no_chain",
    /// A chain ended without sending the packet anywhere.
    NoOutput => "no_output",
    /// A distribute step saw a label no branch handles.
    UnknownLabel => "unknown_label",
    /// The output port's transmit ring was full.
    TxFull => "tx_full",
    /// The queue towards another core (software steering) was full.
    SteeringFull => "steering_full",
    /// An NF asked for the packet to be dropped on purpose (e.g. a `drop` NF).
    Policy => "policy",
    /// A frame longer than the parser's 16-bit offsets can describe (64 KiB).
    Oversize => "oversize",
    /// NAT: no free public port for a new mapping (the pool and its reserve are exhausted).
    NatPoolExhausted => "nat_pool_exhausted",
    /// NAT: an inbound packet (or ICMP error) for which no mapping or forward exists.
    NatNoMapping => "nat_no_mapping",
    /// NAT: an inbound packet the mapping's filtering refuses (RFC 4787 REQ-8).
    NatFiltered => "nat_filtered",
    /// NAT: an ICMP error with a bad checksum or a quote too short to translate (RFC 5508).
    NatBadIcmpError => "nat_bad_icmp_error",
    /// NAT: an outbound packet the NAT cannot translate (no ports or identifier to map).
    NatUnsupported => "nat_unsupported",
    /// Policer: the packet's colour maps to the `drop` action.
    Policed => "policed",
    /// UDP whitelister: inbound UDP from a remote endpoint no inside host contacted first.
    Unsolicited => "unsolicited",
    /// DDoS pipeline: traffic to a detected victim over the mitigation rate (or all of it).
    DdosMitigated => "ddos_mitigated",
    /// Gateway: an IPv4 frame not addressed to the ingress interface's MAC (flooded or
    /// misdirected frames are not routed).
    NotOurMac => "not_our_mac",
    /// Gateway: no connected subnet or default route for the destination (or no interface
    /// on the ingress port).
    NoRoute => "no_route",
    /// Gateway: the next hop's MAC is unknown and an ARP request for it is already in flight
    /// (or the frame is too short to become one).
    NeighbourUnknown => "neighbour_unknown",
    /// Gateway: an ARP frame that is not Ethernet/IPv4 ARP or is cut short.
    BadArp => "bad_arp",
    /// Gateway: an ARP frame learned from or ignored, not answered (replies, requests for
    /// other addresses).
    ArpConsumed => "arp_consumed",
    /// Gateway: addressed to the gateway itself, or a broadcast or multicast it does not
    /// forward.
    ToGateway => "to_gateway",
    /// Gateway: an IPv6 packet (the gateway routes IPv4 only).
    Ipv6NotRouted => "ipv6_not_routed",
    /// Load balancer: every backend of the VIP is draining or removed.
    LbNoBackend => "lb_no_backend",
    /// `lb` in `encap` mode: the packet with its outer header would exceed `encap_mtu`.
    LbEncapTooBig => "lb_encap_too_big",
    /// `lb` in `encap` mode: the frame's buffer has no room for the outer header.
    LbNoRoom => "lb_no_room",
    /// IDS/IPS: a `drop` rule matched (in `ips` mode).
    IdsRule => "ids_rule",
    /// IPsec: ESP addressed to a local tunnel endpoint with an SPI no inbound SA has.
    IpsecUnknownSpi => "ipsec_unknown_spi",
    /// IPsec: an ESP packet shorter than its headers, ICV and trailer.
    IpsecTruncated => "ipsec_truncated",
    /// IPsec: the ICV did not verify (forged, corrupted, or the wrong key).
    IpsecBadIcv => "ipsec_bad_icv",
    /// IPsec: the padding is not 1, 2, 3, ... or longer than the payload (RFC 4303 §2.4).
    IpsecBadPadding => "ipsec_bad_padding",
    /// IPsec: a sequence number already received (RFC 4303 §3.4.3).
    IpsecReplayed => "ipsec_replayed",
    /// IPsec: a sequence number below the anti-replay window.
    IpsecTooOld => "ipsec_too_old",
    /// IPsec: the outbound SA has sent its last sequence number and must be rekeyed.
    IpsecSeqOverflow => "ipsec_seq_overflow",
    /// IPsec: a decrypted packet its SA's policy selectors do not admit.
    IpsecSelectorMismatch => "ipsec_selector_mismatch",
    /// IPsec: the frame buffer cannot grow by the ESP headers and trailer.
    IpsecNoRoom => "ipsec_no_room",
    /// IPsec: a decrypted payload that is not an IPv4 or IPv6 packet (or a dummy packet).
    IpsecBadInner => "ipsec_bad_inner",
    /// IPsec: cleartext that a `protect` policy says must arrive inside ESP (RFC 4301 §5.2).
    IpsecUnprotected => "ipsec_unprotected",
    /// IPsec: a packet selected by a `discard` policy.
    IpsecDiscard => "ipsec_discard",
    /// IPsec: a packet of an SA reached a core that does not own the SA (no steering).
    IpsecWrongCore => "ipsec_wrong_core",
    /// IPsec: the outer header arrived marked CE (congestion experienced) over an inner packet
    /// that is not ECN-capable, so the mark cannot be passed on (RFC 6040 §4.2: drop).
    IpsecCeNotEct => "ipsec_ce_not_ect",
    /// Scale-out: a worker's hold buffer for a flow whose state it is pulling was full.
    HoldOverflow => "hold_overflow",
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-reason drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounters(pub [u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters([0; DropReason::COUNT])
    }
}

impl DropCounters {
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        if let Some(c) = self.0.get_mut(reason.index()) {
            *c += 1;
        }
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.get(reason.index()).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn add(&mut self, other: &DropCounters) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }

    /// Non-zero counters with their reasons, in index order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().zip(self.0.iter()).filter(|(_, n)| **n > 0).map(|(r, n)| (*r, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_dense() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn counters_count_per_reason() {
        let mut c = DropCounters::default();
        c.count(DropReason::Truncated);
        c.count(DropReason::Truncated);
        c.count(DropReason::TxFull);
        assert_eq!(c.get(DropReason::Truncated), 2);
        assert_eq!(c.get(DropReason::TxFull), 1);
        assert_eq!(c.total(), 3);
        assert_eq!(c.nonzero().count(), 2);
    }
}
