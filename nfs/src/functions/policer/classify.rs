//! The policer's classifier: an ordered list of rules, the first match picks the class.
//!
//! A rule matches on any combination of protocol, source and destination prefixes, source and
//! destination port ranges, DSCP and ingress port; an absent field matches everything. Rules
//! are validated once at init and read-only on the packet path.

use serde::Deserialize;

use crate::addr::{OneOrMany, PortRange, Prefix, ProtoMatch};
use crate::ids::PortId;
use crate::nf::{InitCtx, NfError};
use crate::packet::{IpProtocol, Meta};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name of the class matching packets are metered by.
    pub class: String,
    /// `any` (default), `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    #[serde(default)]
    pub proto: ProtoMatch,
    /// Source prefixes, one or a list (any if absent).
    #[serde(default)]
    pub src: OneOrMany<Prefix>,
    /// Destination prefixes, one or a list (any if absent).
    #[serde(default)]
    pub dst: OneOrMany<Prefix>,
    /// Source port or range (`5060` or `"1024-65535"`).
    pub sport: Option<PortRange>,
    /// Destination port or range.
    pub dport: Option<PortRange>,
    /// DSCP the packet arrives with (0..=63).
    pub dscp: Option<u8>,
    /// Name of the port the packet must arrive on.
    pub ingress: Option<String>,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    pub class: usize,
    proto: Option<IpProtocol>,
    src: Vec<Prefix>,
    dst: Vec<Prefix>,
    sport: Option<PortRange>,
    dport: Option<PortRange>,
    pub dscp: Option<u8>,
    ingress: Option<PortId>,
}

fn param(key: String, detail: &str) -> NfError {
    NfError::Param { key, detail: detail.to_string() }
}

impl Rule {
    /// Validates rule `i`; `class_names` are the classes in configuration order.
    pub fn new(i: usize, r: &RuleConfig, class_names: &[&str], rt: &InitCtx<'_>) -> Result<Rule, NfError> {
        let class = class_names
            .iter()
            .position(|c| *c == r.class)
            .ok_or_else(|| param(format!("rule[{i}].class"), "no `[[class]]` has this name"))?;
        if r.dscp.is_some_and(|d| d > 63) {
            return Err(param(format!("rule[{i}].dscp"), "DSCP is 0..=63"));
        }
        let ingress = match &r.ingress {
            Some(name) => Some(rt.port(&format!("rule[{i}].ingress"), name)?),
            None => None,
        };
        Ok(Rule {
            class,
            proto: r.proto.0.map(IpProtocol::from),
            src: r.src.clone().into_vec(),
            dst: r.dst.clone().into_vec(),
            sport: r.sport,
            dport: r.dport,
            dscp: r.dscp,
            ingress,
        })
    }

    /// True if the packet matches; `dscp` is its DSCP (None for non-IP).
    #[inline]
    pub fn matches(&self, meta: &Meta, dscp: Option<u8>) -> bool {
        let family = meta.key.family;
        self.proto.is_none_or(|p| p == meta.proto)
            && self.dport.is_none_or(|p| p.contains(meta.dport))
            && self.sport.is_none_or(|p| p.contains(meta.sport))
            && self.dscp.is_none_or(|d| Some(d) == dscp)
            && self.ingress.is_none_or(|p| p == meta.ingress)
            && (self.src.is_empty() || self.src.iter().any(|p| p.contains(family, &meta.src)))
            && (self.dst.is_empty() || self.dst.iter().any(|p| p.contains(family, &meta.dst)))
    }
}
