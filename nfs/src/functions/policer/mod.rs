//! `policer`: per-class QoS metering with RFC 2697 srTCM or RFC 2698 trTCM (colour-blind) and
//! an action per colour: pass, remark the IPv4 DSCP (incremental checksum), or drop.
//!
//! Classes are picked by the first matching classifier rule (protocol, destination port,
//! DSCP); unmatched packets pass unmetered. A class's rate is **per core**: each core owns its
//! buckets outright, so nothing is shared on the packet path; with RSS spreading a class over
//! N cores the aggregate limit is N × the configured rate. Configure rate / N for an
//! appliance-wide limit.

pub mod meter;
#[cfg(test)]
mod tests;

use serde::Deserialize;

use self::meter::{Colour, SrTcm, TrTcm};
use crate::drop::DropReason;
use crate::nf::{Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::{IpProtocol, L3Kind, Meta};
use crate::time::Nanos;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Bytes,
    Packets,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    Pass,
    Remark { dscp: u8 },
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassConfig {
    pub name: String,
    #[serde(default = "unit_bytes")]
    pub unit: Unit,
    /// Committed rate (units/s) and bursts. `pir`/`pbs` select trTCM; `ebs` selects srTCM.
    pub cir: u64,
    pub cbs: u64,
    #[serde(default)]
    pub ebs: u64,
    pub pir: Option<u64>,
    pub pbs: Option<u64>,
    pub green: Action,
    pub yellow: Action,
    pub red: Action,
}

fn unit_bytes() -> Unit {
    Unit::Bytes
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub class: String,
    pub proto: Option<u8>,
    pub dport: Option<u16>,
    pub dscp: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicerConfig {
    /// `[[nf.class]]` tables, as the firewall's `[[nf.rule]]`.
    #[serde(rename = "class")]
    pub classes: Vec<ClassConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Copy)]
enum Meter {
    Sr(SrTcm),
    Tr(TrTcm),
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    class: usize,
    proto: Option<IpProtocol>,
    dport: Option<u16>,
    dscp: Option<u8>,
}

#[derive(Debug)]
struct Class {
    unit: Unit,
    meter: Meter,
    actions: [Action; 3],
}

#[derive(Debug)]
pub struct Policer {
    rules: Vec<Rule>,
    classes: Vec<Class>,
    /// Packets coloured green, yellow, red; packets remarked, dropped, unclassified.
    coloured: [u64; 3],
    remarked: u64,
    dropped: u64,
    unclassified: u64,
}

fn param(key: String, detail: &str) -> NfError {
    NfError::Param { key, detail: detail.to_string() }
}

impl NetworkFunction for Policer {
    const KIND: &'static str = "policer";
    type Config = PolicerConfig;

    fn init(config: &PolicerConfig, _rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        let mut classes = Vec::new();
        for (i, c) in config.classes.iter().enumerate() {
            for (a, what) in [(c.green, "green"), (c.yellow, "yellow"), (c.red, "red")] {
                if let Action::Remark { dscp } = a {
                    if dscp > 63 {
                        return Err(param(format!("class[{i}].{what}.dscp"), "DSCP is 0..=63"));
                    }
                }
            }
            let meter = match (c.pir, c.pbs) {
                (Some(pir), Some(pbs)) => {
                    if pir < c.cir {
                        return Err(param(format!("class[{i}].pir"), "pir must be >= cir (RFC 2698)"));
                    }
                    Meter::Tr(TrTcm::new(pir, pbs, c.cir, c.cbs, Nanos(0)))
                }
                (None, None) => Meter::Sr(SrTcm::new(c.cir, c.cbs, c.ebs, Nanos(0))),
                _ => {
                    return Err(param(
                        format!("class[{i}]"),
                        "set both `pir` and `pbs` for trTCM, or neither",
                    ))
                }
            };
            classes.push(Class { unit: c.unit, meter, actions: [c.green, c.yellow, c.red] });
        }
        let mut rules = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            let class =
                config.classes.iter().position(|c| c.name == r.class).ok_or_else(|| {
                    param(format!("rules[{i}].class"), "no class with this name in `classes`")
                })?;
            rules.push(Rule { class, proto: r.proto.map(IpProtocol::from), dport: r.dport, dscp: r.dscp });
        }
        Ok(Policer { rules, classes, coloured: [0; 3], remarked: 0, dropped: 0, unclassified: 0 })
    }

    #[inline]
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        let dscp = dscp_of(frame, meta);
        let hit = self.rules.iter().find(|r| {
            r.proto.is_none_or(|p| p == meta.proto)
                && r.dport.is_none_or(|p| p == meta.dport)
                && r.dscp.is_none_or(|d| Some(d) == dscp)
        });
        let Some(class) = hit.and_then(|r| self.classes.get_mut(r.class)) else {
            self.unclassified += 1;
            return Verdict::Continue;
        };
        let size = match class.unit {
            Unit::Bytes => u64::from(meta.ip_len()),
            Unit::Packets => 1,
        };
        let colour = match &mut class.meter {
            Meter::Sr(m) => m.mark(ctx.now, size),
            Meter::Tr(m) => m.mark(ctx.now, size),
        };
        let idx = match colour {
            Colour::Green => 0,
            Colour::Yellow => 1,
            Colour::Red => 2,
        };
        if let Some(c) = self.coloured.get_mut(idx) {
            *c += 1;
        }
        match class.actions.get(idx).copied().unwrap_or(Action::Pass) {
            Action::Pass => Verdict::Continue,
            Action::Drop => {
                self.dropped += 1;
                Verdict::Drop(DropReason::Policed)
            }
            Action::Remark { dscp } => {
                if meta.l3_kind == L3Kind::Ipv4 {
                    if let Some(Ok(mut ip)) = frame
                        .get_mut(usize::from(meta.l3)..usize::from(meta.l3_end))
                        .map(Ipv4Packet::new_checked)
                    {
                        ip.set_dscp(dscp);
                        self.remarked += 1;
                    }
                }
                Verdict::Continue
            }
        }
    }

    fn report(&self, out: &mut Report) {
        out.counter("green", self.coloured[0]);
        out.counter("yellow", self.coloured[1]);
        out.counter("red", self.coloured[2]);
        out.counter("remarked", self.remarked);
        out.counter("dropped", self.dropped);
        out.counter("unclassified", self.unclassified);
    }
}

fn dscp_of(frame: &[u8], meta: &Meta) -> Option<u8> {
    let tos = frame.get(usize::from(meta.l3) + 1).copied()?;
    match meta.l3_kind {
        L3Kind::Ipv4 => Some(tos >> 2),
        _ => None,
    }
}
