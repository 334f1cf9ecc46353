//! `nat` configuration: the serde shape of the `[[nf]]` table and its validation into
//! [`Settings`], the immutable, typed form the packet path reads.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::addr::{OneOrMany, PortRange};
use crate::ids::{Instance, PortId};
use crate::nf::{InitCtx, NfError};
use crate::packet::IpProtocol;
use crate::time::Nanos;

/// RFC 4787 REQ-8 filtering behaviour: which inbound packets a mapping lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filtering {
    /// Any remote endpoint may send to the mapping (full cone).
    EndpointIndependent,
    /// Only remote addresses the mapping has sent to.
    AddressDependent,
    /// Only remote (address, port) pairs the mapping has sent to.
    #[default]
    AddressAndPortDependent,
}

/// Where a hairpinned packet (inside to a public endpoint of this NAT) goes once translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hairpin {
    /// Straight back out of the port it came in on (`Verdict::Out`): right for a
    /// bump-in-the-wire NAT, where the frame's MAC addresses already suit the inside segment.
    #[default]
    Reflect,
    /// On along the chain (`Verdict::Continue`), so a later step (the `gateway` NF) routes it
    /// on its translated destination and rewrites its MAC addresses.
    Route,
}

/// Idle timeouts in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Established TCP (RFC 5382 REQ-5: at least 2 h 4 min = 7440 s).
    pub tcp_established: u64,
    /// TCP opening or closing, and after RST (RFC 5382 REQ-5, RFC 7857 §2.1: 4 min).
    pub tcp_transitory: u64,
    /// UDP (RFC 4787 REQ-5: at least 2 min; 5 min recommended).
    pub udp: u64,
    /// ICMP query (RFC 5508 REQ-1: at least 60 s).
    pub icmp: u64,
    /// Fragment tracking entries (short: they only bridge one datagram's fragments).
    pub fragment: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { tcp_established: 7440, tcp_transitory: 240, udp: 300, icmp: 60, fragment: 2 }
    }
}

/// A static port-forward (`[[nf.forward]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// `tcp` or `udp`.
    pub proto: String,
    /// Public port or range, e.g. `8080` or `"8080-8090"`.
    pub public_port: PortRange,
    /// Inside endpoint `addr:port`; with a range, the port is the start of the inside range.
    pub to: String,
    /// Public address (default: the first `public` address).
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Port name(s) facing the private side; every other port is outside.
    pub inside: OneOrMany<String>,
    /// Public (pool) addresses.
    pub public: OneOrMany<Ipv4Addr>,
    /// Public ports (and ICMP identifiers) the pool hands out.
    #[serde(default = "default_ports")]
    pub ports: PortRange,
    #[serde(default)]
    pub filtering: Filtering,
    /// Mappings per core.
    #[serde(default = "default_mappings")]
    pub mappings: usize,
    /// Fragment-tracking entries per core (least recently used evicted when full).
    #[serde(default = "default_fragments")]
    pub fragments: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Ports a dry core takes from the shared reserve at once.
    #[serde(default = "default_batch")]
    pub refill_batch: usize,
    #[serde(default, rename = "forward")]
    pub forwards: Vec<ForwardConfig>,
    /// What happens to hairpinned packets once translated.
    #[serde(default)]
    pub hairpin: Hairpin,
    /// With several cores, also steer packets from the inside by their inside endpoint (and
    /// both directions of forwarded connections by their public-side flow), so all flows of an
    /// inside endpoint share one core and so one mapping: endpoint independence across cores
    /// (RFC 4787 REQ-1), at the price of moving most inside traffic between cores on ports
    /// that spread flows themselves (see the module doc).
    #[serde(default)]
    pub steer_outbound: bool,
    /// Seconds a mapping exported to another instance keeps its public port reserved here
    /// after it expires (module doc, "Scale-out"); default: the established TCP timeout.
    #[serde(default = "default_moved_hold")]
    pub moved_hold_s: u64,
}

fn default_moved_hold() -> u64 {
    7440
}

fn default_ports() -> PortRange {
    PortRange { lo: 1024, hi: u16::MAX }
}
fn default_mappings() -> usize {
    1 << 20
}
fn default_fragments() -> usize {
    1024
}
fn default_batch() -> usize {
    256
}

/// A validated static forward: `public` ports `lo..=hi` map to `inside` ports from `to_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub proto: IpProtocol,
    pub public_addr: [u8; 4],
    pub public: PortRange,
    pub inside_addr: [u8; 4],
    pub to_port: u16,
}

impl Forward {
    /// The inside port for public port `p` (in range).
    pub fn inside_port(&self, p: u16) -> u16 {
        self.to_port.wrapping_add(p.wrapping_sub(self.public.lo))
    }

    /// The public port for inside port `p`, if it is one of this forward's targets.
    pub fn public_port(&self, p: u16) -> Option<u16> {
        let off = p.checked_sub(self.to_port)?;
        let span = self.public.hi - self.public.lo;
        (off <= span).then(|| self.public.lo + off)
    }
}

/// The validated configuration, shared read-only by all cores.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inside: Vec<PortId>,
    pub public: Vec<[u8; 4]>,
    pub ports: PortRange,
    pub filtering: Filtering,
    pub forwards: Vec<Forward>,
    pub timeouts: Timeouts,
    pub hairpin: Hairpin,
    pub steer_outbound: bool,
    /// This appliance among the deployment's instances.
    pub instance: Instance,
    /// The slice of `ports` this instance hands out (`Instance::id` of `count` equal slices).
    pub share: PortRange,
    /// How long a moved mapping's port stays reserved after the mapping expires.
    pub moved_hold: Nanos,
}

impl Settings {
    pub fn is_inside(&self, port: PortId) -> bool {
        self.inside.contains(&port)
    }

    /// Index of `addr` among the pool addresses.
    pub fn public_index(&self, addr: [u8; 4]) -> Option<usize> {
        self.public.iter().position(|a| *a == addr)
    }

    pub fn tcp(&self, established: bool) -> Nanos {
        Nanos::from_secs(if established {
            self.timeouts.tcp_established
        } else {
            self.timeouts.tcp_transitory
        })
    }

    pub fn udp(&self) -> Nanos {
        Nanos::from_secs(self.timeouts.udp)
    }

    pub fn icmp(&self) -> Nanos {
        Nanos::from_secs(self.timeouts.icmp)
    }

    /// Whether public `port` is in this instance's share of the pool (a port outside it
    /// belongs to another instance, or to no pool at all).
    pub fn owns_port(&self, port: u16) -> bool {
        self.share.contains(port)
    }

    /// Validates `config`, resolving port names through `rt`.
    pub fn from_config(config: &NatConfig, rt: &InitCtx<'_>) -> Result<Settings, NfError> {
        let param = |key: &str, detail: String| NfError::Param { key: key.to_string(), detail };
        let inside = config
            .inside
            .clone()
            .into_vec()
            .iter()
            .map(|n| rt.port("inside", n))
            .collect::<Result<Vec<_>, _>>()?;
        if inside.is_empty() {
            return Err(param("inside", "name at least one inside port".into()));
        }
        let public: Vec<[u8; 4]> = config.public.clone().into_vec().iter().map(|a| a.octets()).collect();
        if public.is_empty() || public.len() > 256 {
            return Err(param("public", format!("give 1 to 256 pool addresses, not {}", public.len())));
        }
        if config.ports.lo == 0 {
            return Err(param("ports", "port 0 cannot be handed out; start the range at 1 or above".into()));
        }
        let t = config.timeouts;
        // RFC minima: refusing them keeps the NF conformant whatever the file says.
        for (key, got, min) in [
            ("timeouts.tcp_established", t.tcp_established, 7440),
            ("timeouts.tcp_transitory", t.tcp_transitory, 240),
            ("timeouts.udp", t.udp, 120),
            ("timeouts.icmp", t.icmp, 60),
            ("timeouts.fragment", t.fragment, 1),
        ] {
            if got < min {
                return Err(param(
                    key,
                    format!("{got} s is below the minimum of {min} s (RFC 5382/4787/5508)"),
                ));
            }
        }
        let mut forwards = Vec::new();
        for (i, f) in config.forwards.iter().enumerate() {
            let key = |k: &str| format!("forward[{i}].{k}");
            let proto = match f.proto.to_ascii_lowercase().as_str() {
                "tcp" => IpProtocol::Tcp,
                "udp" => IpProtocol::Udp,
                other => return Err(param(&key("proto"), format!("expected `tcp` or `udp`, got `{other}`"))),
            };
            let to: std::net::SocketAddrV4 = f.to.parse().map_err(|_| {
                param(&key("to"), format!("expected `addr:port` like 192.168.1.10:80, got `{}`", f.to))
            })?;
            let span = f.public_port.hi - f.public_port.lo;
            if to.port().checked_add(span).is_none() {
                return Err(param(&key("to"), format!("inside ports {}+{span} run past 65535", to.port())));
            }
            let first = public.first().copied().unwrap_or_default();
            let public_addr = f.address.map_or(first, |a| a.octets());
            if !public.contains(&public_addr) {
                return Err(param(&key("address"), format!("{public_addr:?} is not a `public` address")));
            }
            forwards.push(Forward {
                proto,
                public_addr,
                public: f.public_port,
                inside_addr: to.ip().octets(),
                to_port: to.port(),
            });
        }
        for (i, a) in forwards.iter().enumerate() {
            for b in forwards.iter().skip(i + 1) {
                if a.proto == b.proto
                    && a.public_addr == b.public_addr
                    && a.public.lo <= b.public.hi
                    && b.public.lo <= a.public.hi
                {
                    return Err(param(
                        "forward",
                        format!("public ports of forwards overlap: {a:?} and {b:?}"),
                    ));
                }
            }
        }
        let instance = rt.instance;
        let share = instance_share(config.ports, instance).ok_or_else(|| {
            param(
                "ports",
                format!(
                    "{}-{} cannot be split among {} instances (each needs at least one port)",
                    config.ports.lo, config.ports.hi, instance.count
                ),
            )
        })?;
        Ok(Settings {
            instance,
            share,
            moved_hold: Nanos::from_secs(config.moved_hold_s),
            inside,
            public,
            ports: config.ports,
            filtering: config.filtering,
            forwards,
            timeouts: t,
            hairpin: config.hairpin,
            steer_outbound: config.steer_outbound,
        })
    }
}

/// The `instance.id`-th of `instance.count` equal, contiguous slices of `ports`; `None` when
/// the instance is out of range or its slice would be empty.
pub fn instance_share(ports: PortRange, instance: Instance) -> Option<PortRange> {
    let (id, count) = (u32::from(instance.id), u32::from(instance.count));
    if id >= count {
        return None;
    }
    let span = u32::from(ports.hi).checked_sub(u32::from(ports.lo))? + 1;
    let start = u32::from(ports.lo) + span * id / count;
    let end = u32::from(ports.lo) + span * (id + 1) / count;
    if end <= start {
        return None;
    }
    Some(PortRange { lo: u16::try_from(start).ok()?, hi: u16::try_from(end - 1).ok()? })
}

#[cfg(test)]
mod share_tests {
    use super::*;

    #[test]
    fn instance_shares_tile_the_range() {
        let r = |lo, hi| PortRange { lo, hi };
        let cases = [
            (r(1024, 65535), 0, 1, Some(r(1024, 65535))),
            (r(1024, 65535), 0, 2, Some(r(1024, 33279))),
            (r(1024, 65535), 1, 2, Some(r(33280, 65535))),
            (r(10, 12), 2, 3, Some(r(12, 12))),
            (r(10, 11), 0, 3, None),
            (r(10, 11), 2, 3, Some(r(11, 11))),
            (r(10, 11), 3, 3, None),
        ];
        for (ports, id, count, want) in cases {
            assert_eq!(instance_share(ports, Instance { id, count }), want, "{id}/{count}");
        }
        // Every port of the range is in exactly one share.
        for count in 1..6u16 {
            let mut n = 0u32;
            for id in 0..count {
                let s = instance_share(r(1024, 2047), Instance { id, count }).unwrap();
                n += u32::from(s.hi - s.lo) + 1;
            }
            assert_eq!(n, 1024);
        }
    }
}
