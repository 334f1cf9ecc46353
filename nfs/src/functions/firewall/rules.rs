//! Firewall rules: an ordered list, first match wins, evaluated once per new connection.

use serde::Deserialize;

use crate::addr::{OneOrMany, PortRange, Prefix, ProtoMatch};
use crate::ids::PortId;
use crate::packet::{IpProtocol, Meta};

/// What a rule does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Allow,
    #[default]
    Deny,
}

/// A rule as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub action: Action,
    #[serde(default)]
    pub proto: ProtoMatch,
    /// Source prefixes (any if empty).
    #[serde(default)]
    pub src: OneOrMany<Prefix>,
    /// Destination prefixes (any if empty).
    #[serde(default)]
    pub dst: OneOrMany<Prefix>,
    pub sport: Option<PortRange>,
    pub dport: Option<PortRange>,
    /// Name of the port the connection's first packet must arrive on.
    pub ingress: Option<String>,
}

/// A rule ready for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub proto: Option<u8>,
    pub src: Vec<Prefix>,
    pub dst: Vec<Prefix>,
    pub sport: PortRange,
    pub dport: PortRange,
    pub ingress: Option<PortId>,
}

impl Rule {
    #[inline]
    pub fn matches(&self, meta: &Meta) -> bool {
        let family = meta.key.family;
        let has_ports = matches!(meta.proto, IpProtocol::Tcp | IpProtocol::Udp);
        let wants_ports = self.sport != PortRange::ANY || self.dport != PortRange::ANY;
        if wants_ports && !has_ports {
            return false;
        }
        self.proto.is_none_or(|p| u8::from(meta.proto) == p)
            && self.ingress.is_none_or(|p| p == meta.ingress)
            && self.sport.contains(meta.sport)
            && self.dport.contains(meta.dport)
            && (self.src.is_empty() || self.src.iter().any(|p| p.contains(family, &meta.src)))
            && (self.dst.is_empty() || self.dst.iter().any(|p| p.contains(family, &meta.dst)))
    }
}

/// The ordered rule list and the default action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub default: Action,
}

impl RuleSet {
    /// The action of the first matching rule (and its index), or the default.
    #[inline]
    pub fn decide(&self, meta: &Meta) -> (Action, Option<usize>) {
        match self.rules.iter().position(|r| r.matches(meta)) {
            Some(i) => (self.rules.get(i).map_or(self.default, |r| r.action), Some(i)),
            None => (self.default, None),
        }
    }
}
