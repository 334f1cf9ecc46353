//! A parsed rule: action, header (protocol, addresses, ports, direction), and options.

use super::content::Content;
use super::spec::{AddrSpec, PortSpec};
use crate::packet::{IpProtocol, Meta};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Log and count.
    Alert,
    /// Log, count and (in `ips` mode) drop the packet.
    Drop,
    /// Stop evaluation for this packet: no alert, no drop.
    Pass,
}

/// The protocol a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
    /// Every IP packet.
    Ip,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Ip => "ip",
        }
    }

    fn matches(self, p: IpProtocol) -> bool {
        match self {
            Proto::Tcp => p == IpProtocol::Tcp,
            Proto::Udp => p == IpProtocol::Udp,
            Proto::Icmp => matches!(p, IpProtocol::Icmp | IpProtocol::Icmpv6),
            Proto::Ip => true,
        }
    }
}

/// The `flow` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowOpt {
    /// `established`.
    pub established: bool,
    /// `Some(true)`: `to_server`/`from_client`; `Some(false)`: `to_client`/`from_server`.
    pub to_server: Option<bool>,
}

/// Where a rule came from, for messages: `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.source, self.line)
    }
}

/// A rule ready for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub proto: Proto,
    pub src: AddrSpec,
    pub sport: PortSpec,
    pub dst: AddrSpec,
    pub dport: PortSpec,
    /// `<>`: the header matches in either orientation.
    pub bidirectional: bool,
    pub msg: String,
    pub contents: Vec<Content>,
    /// Index into `contents` of the fast pattern (`None`: the rule has no content).
    pub fast: Option<usize>,
    pub flow: FlowOpt,
    pub sid: u32,
    pub rev: u32,
    pub origin: Origin,
}

/// What the flow tracker knows about a packet, for the `flow` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFacts {
    pub established: bool,
    pub to_server: bool,
}

impl Rule {
    /// Protocol, addresses, ports and direction.
    #[inline]
    pub fn header_matches(&self, meta: &Meta) -> bool {
        if !self.proto.matches(meta.proto) {
            return false;
        }
        let has_ports = matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp);
        let any_ports = self.sport == PortSpec::Any && self.dport == PortSpec::Any;
        if !any_ports && !has_ports {
            return false;
        }
        let fam = meta.key.family;
        let forward = |sa: &[u8; 16], sp: u16, da: &[u8; 16], dp: u16| {
            self.src.matches(fam, sa)
                && self.dst.matches(fam, da)
                && (any_ports || (self.sport.matches(sp) && self.dport.matches(dp)))
        };
        forward(&meta.src, meta.sport, &meta.dst, meta.dport)
            || (self.bidirectional && forward(&meta.dst, meta.dport, &meta.src, meta.sport))
    }

    /// The `flow` option.
    #[inline]
    pub fn flow_matches(&self, facts: FlowFacts) -> bool {
        (!self.flow.established || facts.established)
            && self.flow.to_server.is_none_or(|t| t == facts.to_server)
    }
}
