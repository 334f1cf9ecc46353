//! `gateway` configuration: the serde shape of the `[[nf]]` table and its validation into
//! [`Settings`], the immutable, typed form the packet path reads.

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Deserialize;

use crate::ids::PortId;
use crate::nf::{InitCtx, NfError};
use crate::time::Nanos;

/// An Ethernet MAC address, written `02:00:00:00:00:01` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// True for group (multicast or broadcast) addresses: the I/G bit.
    pub fn is_group(self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let expected = || format!("expected a MAC address like 02:00:00:00:00:01, got `{s}`");
        let mut out = [0u8; 6];
        let mut parts = s.trim().split([':', '-']);
        for b in out.iter_mut() {
            let p = parts.next().filter(|p| p.len() == 2).ok_or_else(expected)?;
            *b = u8::from_str_radix(p, 16).map_err(|_| expected())?;
        }
        if parts.next().is_some() {
            return Err(expected());
        }
        Ok(Mac(out))
    }
}

impl TryFrom<String> for Mac {
    type Error = String;
    fn try_from(s: String) -> Result<Mac, String> {
        s.parse()
    }
}

/// An interface address with its prefix length, written `192.168.1.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct IfAddr {
    pub addr: [u8; 4],
    pub len: u8,
}

impl IfAddr {
    fn mask(self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0)
    }

    /// True if `a` is on this interface's connected subnet.
    pub fn contains(self, a: [u8; 4]) -> bool {
        (u32::from_be_bytes(a) ^ u32::from_be_bytes(self.addr)) & self.mask() == 0
    }

    /// The subnet's directed-broadcast address.
    pub fn broadcast(self) -> [u8; 4] {
        (u32::from_be_bytes(self.addr) | !self.mask()).to_be_bytes()
    }
}

impl FromStr for IfAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<IfAddr, String> {
        let expected = || format!("expected an interface address like 192.168.1.1/24, got `{s}`");
        let (a, l) = s.trim().split_once('/').ok_or_else(expected)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| expected())?;
        let len: u8 = l.parse().map_err(|_| expected())?;
        if !(1..=32).contains(&len) {
            return Err(format!("prefix length {len} in `{s}` is outside 1 to 32"));
        }
        Ok(IfAddr { addr: addr.octets(), len })
    }
}

impl TryFrom<String> for IfAddr {
    type Error = String;
    fn try_from(s: String) -> Result<IfAddr, String> {
        s.parse()
    }
}

/// One routed interface (`[[nf.interface]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// The port this interface lives on.
    pub port: String,
    /// The gateway's address on the port's subnet, with the prefix length.
    pub address: IfAddr,
    /// The gateway's MAC address on this port.
    pub mac: Mac,
    /// Next hop of the default route, on this interface's subnet (at most one interface).
    #[serde(default)]
    pub default_route: Option<Ipv4Addr>,
}

/// A static neighbour (`[[nf.neighbour]]`), never replaced by learning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeighbourConfig {
    pub address: Ipv4Addr,
    pub mac: Mac,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    #[serde(default, rename = "neighbour")]
    pub neighbours: Vec<NeighbourConfig>,
    /// Learned neighbours per core (and in the table shared between cores).
    #[serde(default = "default_capacity")]
    pub neighbour_capacity: usize,
    /// Seconds after which a learned neighbour is no longer used unless seen again.
    #[serde(default = "default_timeout")]
    pub neighbour_timeout: u64,
    /// Milliseconds between ARP requests for the same unresolved next hop.
    #[serde(default = "default_retry")]
    pub arp_retry_ms: u64,
    /// Milliseconds between merges of learned neighbours across cores.
    #[serde(default = "default_sync")]
    pub sync_ms: u64,
}

fn default_capacity() -> usize {
    1024
}
fn default_timeout() -> u64 {
    1200
}
fn default_retry() -> u64 {
    1000
}
fn default_sync() -> u64 {
    100
}

/// A validated interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    pub port: PortId,
    pub addr: IfAddr,
    pub mac: Mac,
}

/// The validated configuration, shared read-only by all cores.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interfaces: Vec<Interface>,
    /// Default route: (index into `interfaces`, next hop).
    pub default_route: Option<(usize, [u8; 4])>,
    pub statics: Vec<([u8; 4], Mac)>,
    pub capacity: usize,
    pub timeout: Nanos,
    pub retry: Nanos,
    pub sync: Nanos,
}

impl Settings {
    /// The interface on `port`.
    pub fn on_port(&self, port: PortId) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.port == port)
    }

    /// True if `a` is one of the gateway's own addresses.
    pub fn is_own(&self, a: [u8; 4]) -> bool {
        self.interfaces.iter().any(|i| i.addr.addr == a)
    }

    /// Egress interface and next hop for destination `dst`: the connected subnet holding it,
    /// else the default route.
    pub fn route(&self, dst: [u8; 4]) -> Option<(&Interface, [u8; 4])> {
        if let Some(i) = self.interfaces.iter().find(|i| i.addr.contains(dst)) {
            return Some((i, dst));
        }
        let (i, hop) = self.default_route?;
        Some((self.interfaces.get(i)?, hop))
    }

    /// Validates `config`, resolving port names through `rt`.
    pub fn from_config(config: &GatewayConfig, rt: &InitCtx<'_>) -> Result<Settings, NfError> {
        let param = |key: String, detail: String| NfError::Param { key, detail };
        if config.interfaces.is_empty() {
            return Err(param("interface".into(), "configure at least one `[[nf.interface]]`".into()));
        }
        let mut interfaces: Vec<Interface> = Vec::new();
        let mut default_route = None;
        for (n, i) in config.interfaces.iter().enumerate() {
            let key = |k: &str| format!("interface[{n}].{k}");
            let port = rt.port(&key("port"), &i.port)?;
            if interfaces.iter().any(|o| o.port == port) {
                return Err(param(key("port"), format!("port `{}` already has an interface", i.port)));
            }
            if i.mac.is_group() || i.mac == Mac::default() {
                return Err(param(key("mac"), format!("{:?} is not a unicast MAC address", i.mac.0)));
            }
            if i.addr_is_edge() {
                return Err(param(
                    key("address"),
                    "the address is the subnet's network or broadcast address".into(),
                ));
            }
            let overlap = interfaces
                .iter()
                .position(|o| o.addr.contains(i.address.addr) || i.address.contains(o.addr.addr));
            if let Some(other) = overlap.and_then(|j| config.interfaces.get(j)) {
                return Err(param(
                    key("address"),
                    format!("subnet overlaps the interface on port `{}`", other.port),
                ));
            }
            if let Some(hop) = i.default_route {
                if default_route.is_some() {
                    return Err(param(
                        key("default_route"),
                        "only one interface may have a default route".into(),
                    ));
                }
                if !i.address.contains(hop.octets()) || hop.octets() == i.address.addr {
                    return Err(param(
                        key("default_route"),
                        format!(
                            "next hop {hop} is not another host on {}/{}",
                            Ipv4Addr::from(i.address.addr),
                            i.address.len
                        ),
                    ));
                }
                default_route = Some((n, hop.octets()));
            }
            interfaces.push(Interface { port, addr: i.address, mac: i.mac });
        }
        let mut statics = Vec::new();
        for (n, s) in config.neighbours.iter().enumerate() {
            let a = s.address.octets();
            if !interfaces.iter().any(|i| i.addr.contains(a)) {
                return Err(param(
                    format!("neighbour[{n}].address"),
                    format!("{} is on no interface's subnet", s.address),
                ));
            }
            if s.mac.is_group() {
                return Err(param(format!("neighbour[{n}].mac"), "a neighbour needs a unicast MAC".into()));
            }
            statics.push((a, s.mac));
        }
        if config.neighbour_capacity == 0 {
            return Err(param("neighbour_capacity".into(), "must be at least 1".into()));
        }
        for (key, v) in [
            ("neighbour_timeout", config.neighbour_timeout),
            ("arp_retry_ms", config.arp_retry_ms),
            ("sync_ms", config.sync_ms),
        ] {
            if v == 0 {
                return Err(param(key.into(), "must be above 0".into()));
            }
        }
        Ok(Settings {
            interfaces,
            default_route,
            statics,
            capacity: config.neighbour_capacity,
            timeout: Nanos::from_secs(config.neighbour_timeout),
            retry: Nanos::from_millis(config.arp_retry_ms),
            sync: Nanos::from_millis(config.sync_ms),
        })
    }
}

impl InterfaceConfig {
    /// True when the address is its subnet's network or broadcast address (below /31).
    fn addr_is_edge(&self) -> bool {
        let a = self.address;
        a.len < 31
            && (a.addr == a.broadcast() || (u32::from_be_bytes(a.addr) & a.mask()).to_be_bytes() == a.addr)
    }
}
