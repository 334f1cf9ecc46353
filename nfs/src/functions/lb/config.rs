//! `lb` configuration: the serde shape of the `[[nf]]` table and its validation into
//! [`Settings`], the immutable, typed form the packet path reads.

use std::net::SocketAddrV4;
use std::sync::{Mutex, OnceLock};

use hashbrown::{HashMap, HashSet};
use serde::Deserialize;

use super::maglev::is_prime;
use crate::nf::NfError;
use crate::packet::IpProtocol;
use crate::state::FullPolicy;

/// How a balanced packet reaches its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Rewrite the destination to the backend; rewrite replies' source back to the VIP.
    #[default]
    Dnat,
    /// Encapsulate in IPv4 (IP-in-IP, RFC 2003) toward the backend, which decapsulates,
    /// serves the VIP itself and answers the client directly (direct server return).
    Encap,
}

/// A backend (`[[nf.vip.backend]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `addr:port` of the backend, e.g. `10.1.0.1:8080`; in `encap` mode the address alone
    /// (the backend serves the VIP's own port).
    pub addr: String,
    /// Relative share of new flows (1 to 65535).
    #[serde(default = "one")]
    pub weight: u32,
    /// Start draining: existing flows stay, new flows go elsewhere.
    #[serde(default)]
    pub drain: bool,
}

/// A virtual service (`[[nf.vip]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    /// Name used in counters (default: `addr/proto`).
    #[serde(default)]
    pub name: Option<String>,
    /// `addr:port` clients connect to, e.g. `192.0.2.10:80`.
    pub addr: String,
    /// `tcp` or `udp`.
    pub proto: String,
    #[serde(rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbConfig {
    #[serde(default)]
    pub mode: Mode,
    /// Tracked flows per core.
    #[serde(default = "default_flows")]
    pub flows: usize,
    /// What a full flow table does with a new flow.
    #[serde(default)]
    pub full_policy: FullPolicy,
    /// Seconds a flow may stay idle before its backend choice is forgotten.
    #[serde(default = "default_idle")]
    pub idle_timeout: u64,
    /// Maglev lookup-table size `M` per VIP: a prime, at least 100 × its backends.
    #[serde(default = "default_table_size")]
    pub table_size: usize,
    /// Translate a reply from a backend that serves exactly one VIP even when no flow state
    /// is found for it (see "Multiple cores" in the module doc). Off by default: with it on,
    /// clients reaching a backend directly (health checks) see the VIP as the source.
    #[serde(default)]
    pub stateless_replies: bool,
    /// `encap` mode: the outer header's source address (this appliance's address on the
    /// backend network).
    #[serde(default)]
    pub encap_source: Option<String>,
    /// `encap` mode: the outer header's TTL.
    #[serde(default = "default_encap_ttl")]
    pub encap_ttl: u8,
    /// `encap` mode: the largest outer IPv4 packet (the backend network's MTU); a packet
    /// that would be larger is dropped (`lb_encap_too_big`).
    #[serde(default = "default_encap_mtu")]
    pub encap_mtu: u16,
    #[serde(rename = "vip")]
    pub vips: Vec<VipConfig>,
}

fn one() -> u32 {
    1
}
fn default_flows() -> usize {
    1 << 20
}
fn default_idle() -> u64 {
    300
}
fn default_table_size() -> usize {
    65537
}
fn default_encap_ttl() -> u8 {
    64
}
fn default_encap_mtu() -> u16 {
    1500
}

/// The outer header of `encap` mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encap {
    pub source: [u8; 4],
    pub ttl: u8,
    pub mtu: u16,
}

/// Largest Maglev table accepted (the builder's memory and time stay bounded).
const MAX_TABLE: usize = 1 << 24;

/// A backend identifier: index into [`Settings::backends`], stable for the NF's lifetime
/// (removal marks a backend, it never shifts the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u16);

/// A VIP identifier: index into [`Settings::vips`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipId(pub u16);

/// A validated backend.
#[derive(Debug, Clone)]
pub struct Backend {
    pub vip: VipId,
    pub addr: [u8; 4],
    pub port: u16,
    pub weight: u32,
    pub drain: bool,
    /// `addr:port`, the Maglev permutation seed.
    pub name: String,
    /// Counter names `backend.<vip>.<addr:port>.{new_flows,packets,bytes}`.
    pub counter_names: [&'static str; 3],
}

/// A validated VIP; its backends are `backends[first..first + count]` of [`Settings`].
#[derive(Debug, Clone)]
pub struct Vip {
    pub name: String,
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: IpProtocol,
    pub first: u16,
    pub count: u16,
}

/// The validated configuration, shared read-only by all cores.
#[derive(Debug, Clone)]
pub struct Settings {
    pub vips: Vec<Vip>,
    pub backends: Vec<Backend>,
    /// Endpoint key ([`endpoint`]) of each VIP.
    pub vip_index: HashMap<u64, VipId>,
    /// Endpoint key of each backend → the backends at that endpoint (one per VIP it serves).
    pub backend_index: HashMap<u64, Vec<BackendId>>,
    /// Every VIP address (fragments addressed to one are refused).
    pub vip_addrs: HashSet<[u8; 4]>,
    pub stateless_replies: bool,
    /// `Some` in `encap` mode.
    pub encap: Option<Encap>,
    pub table_size: usize,
    pub idle_timeout: u64,
    pub flows: usize,
    pub full_policy: FullPolicy,
}

/// (protocol, IPv4 address, port) as one word, the key of the endpoint indexes.
#[inline]
pub fn endpoint(proto: u8, addr: [u8; 4], port: u16) -> u64 {
    u64::from(proto) << 48 | u64::from(u32::from_be_bytes(addr)) << 16 | u64::from(port)
}

/// A `'static` copy of `s`, leaked once per distinct string for the life of the process:
/// [`Report`](crate::nf::Report) counters are named by `&'static str`, and per-backend names
/// come from the configuration. Re-initialising with the same configuration leaks nothing.
fn intern(s: String) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = NAMES.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s.as_str()) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.into_boxed_str());
    set.insert(leaked);
    leaked
}

fn param(key: String, detail: String) -> NfError {
    NfError::Param { key, detail }
}

fn parse_endpoint(key: String, s: &str) -> Result<SocketAddrV4, NfError> {
    s.trim()
        .parse::<SocketAddrV4>()
        .map_err(|_| param(key, format!("expected an IPv4 `addr:port` like 192.0.2.10:80, got `{s}`")))
}

impl Settings {
    /// Validates `config`.
    pub fn from_config(config: &LbConfig) -> Result<Settings, NfError> {
        let encap = match config.mode {
            Mode::Dnat => None,
            Mode::Encap => Some(Settings::encap(config)?),
        };
        if config.flows == 0 {
            return Err(param("flows".into(), "track at least 1 flow per core".into()));
        }
        if config.idle_timeout == 0 {
            return Err(param("idle_timeout".into(), "give at least 1 second".into()));
        }
        if !is_prime(config.table_size) || config.table_size > MAX_TABLE {
            return Err(param(
                "table_size".into(),
                format!(
                    "{} is not a prime up to {MAX_TABLE}; Maglev needs a prime (e.g. 65537, 655373)",
                    config.table_size
                ),
            ));
        }
        if config.vips.is_empty() {
            return Err(param("vip".into(), "configure at least one `[[nf.vip]]`".into()));
        }
        let mut s = Settings {
            vips: Vec::new(),
            backends: Vec::new(),
            vip_index: HashMap::new(),
            backend_index: HashMap::new(),
            vip_addrs: HashSet::new(),
            stateless_replies: config.stateless_replies,
            encap,
            table_size: config.table_size,
            idle_timeout: config.idle_timeout,
            flows: config.flows,
            full_policy: config.full_policy,
        };
        for (i, v) in config.vips.iter().enumerate() {
            s.add_vip(i, v)?;
        }
        Ok(s)
    }

    fn encap(config: &LbConfig) -> Result<Encap, NfError> {
        let Some(src) = &config.encap_source else {
            return Err(param(
                "encap_source".into(),
                "`mode = \"encap\"` needs the outer header's source address, e.g. `encap_source = \"10.1.0.254\"`"
                    .into(),
            ));
        };
        let source = src.trim().parse::<std::net::Ipv4Addr>().map_err(|_| {
            param("encap_source".into(), format!("expected an IPv4 address like 10.1.0.254, got `{src}`"))
        })?;
        if config.encap_ttl == 0 {
            return Err(param("encap_ttl".into(), "give a TTL of at least 1".into()));
        }
        if config.encap_mtu < 576 {
            return Err(param(
                "encap_mtu".into(),
                format!("{} is below IPv4's minimum of 576 bytes", config.encap_mtu),
            ));
        }
        Ok(Encap { source: source.octets(), ttl: config.encap_ttl, mtu: config.encap_mtu })
    }

    /// A backend's `addr`: `addr:port`, or in `encap` mode the address alone or with the
    /// VIP's own port (the encapsulated packet keeps its destination port).
    fn backend_addr(&self, key: String, s: &str, vip_port: u16) -> Result<SocketAddrV4, NfError> {
        if self.encap.is_none() {
            return parse_endpoint(key, s);
        }
        if let Ok(ip) = s.trim().parse::<std::net::Ipv4Addr>() {
            return Ok(SocketAddrV4::new(ip, vip_port));
        }
        let a = parse_endpoint(key.clone(), s)?;
        if a.port() != vip_port {
            return Err(param(
                key,
                format!(
                    "in `encap` mode a backend serves the VIP's port {vip_port}; give `{}` without a port",
                    a.ip()
                ),
            ));
        }
        Ok(a)
    }

    fn add_vip(&mut self, i: usize, v: &VipConfig) -> Result<(), NfError> {
        let key = |k: &str| format!("vip[{i}].{k}");
        let addr = parse_endpoint(key("addr"), &v.addr)?;
        let (proto, pname) = match v.proto.to_ascii_lowercase().as_str() {
            "tcp" => (IpProtocol::Tcp, "tcp"),
            "udp" => (IpProtocol::Udp, "udp"),
            other => return Err(param(key("proto"), format!("expected `tcp` or `udp`, got `{other}`"))),
        };
        if v.backends.is_empty() {
            return Err(param(key("backend"), "give the VIP at least one `[[nf.vip.backend]]`".into()));
        }
        if self.table_size < v.backends.len().saturating_mul(100) {
            return Err(param(
                "table_size".into(),
                format!(
                    "{} is below 100 x the {} backends of vip[{i}]; Maglev balances evenly only when \
                     M >> N (NSDI'16 §3.4): raise it to a prime above {}",
                    self.table_size,
                    v.backends.len(),
                    v.backends.len() * 100
                ),
            ));
        }
        let id = VipId(u16::try_from(i).map_err(|_| param("vip".into(), "at most 65535 VIPs".into()))?);
        let ek = endpoint(proto.into(), addr.ip().octets(), addr.port());
        if self.vip_index.insert(ek, id).is_some() {
            return Err(param(key("addr"), format!("{addr}/{pname} is already another VIP")));
        }
        let name = v.name.clone().unwrap_or_else(|| format!("{addr}/{pname}"));
        if self.vips.iter().any(|o| o.name == name) {
            return Err(param(key("name"), format!("another VIP is already named `{name}`")));
        }
        let first = self.backends.len();
        // u16::MAX is the "no backend" marker of the Maglev table.
        if first + v.backends.len() >= usize::from(u16::MAX) {
            return Err(param(key("backend"), "at most 65534 backends in all".into()));
        }
        let mut seen = HashSet::new();
        for (j, b) in v.backends.iter().enumerate() {
            let bkey = |k: &str| format!("vip[{i}].backend[{j}].{k}");
            let ba = self.backend_addr(bkey("addr"), &b.addr, addr.port())?;
            if !seen.insert(ba) {
                return Err(param(bkey("addr"), format!("{ba} is listed twice for this VIP")));
            }
            if b.weight == 0 || b.weight > u32::from(u16::MAX) {
                return Err(param(
                    bkey("weight"),
                    format!("{} is not in 1..=65535 (use `drain = true` to take no new flows)", b.weight),
                ));
            }
            let bid = BackendId((first + j) as u16);
            let bname = ba.to_string();
            self.backend_index
                .entry(endpoint(proto.into(), ba.ip().octets(), ba.port()))
                .or_default()
                .push(bid);
            let counter = |what: &str| intern(format!("backend.{name}.{bname}.{what}"));
            self.backends.push(Backend {
                vip: id,
                addr: ba.ip().octets(),
                port: ba.port(),
                weight: b.weight,
                drain: b.drain,
                counter_names: [counter("new_flows"), counter("packets"), counter("bytes")],
                name: bname,
            });
        }
        self.vip_addrs.insert(addr.ip().octets());
        self.vips.push(Vip {
            name,
            addr: addr.ip().octets(),
            port: addr.port(),
            proto,
            first: first as u16,
            count: v.backends.len() as u16,
        });
        Ok(())
    }

    /// The VIP clients reach at `addr:port` over `proto`.
    #[inline]
    pub fn vip_at(&self, proto: u8, addr: [u8; 4], port: u16) -> Option<VipId> {
        self.vip_index.get(&endpoint(proto, addr, port)).copied()
    }

    /// The backends (of any VIP) at `addr:port` over `proto`.
    #[inline]
    pub fn backends_at(&self, proto: u8, addr: [u8; 4], port: u16) -> Option<&[BackendId]> {
        self.backend_index.get(&endpoint(proto, addr, port)).map(Vec::as_slice)
    }

    pub fn vip(&self, id: VipId) -> Option<&Vip> {
        self.vips.get(usize::from(id.0))
    }

    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(usize::from(id.0))
    }
}
