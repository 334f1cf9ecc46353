//! The appliance configuration: TOML in, validated typed values out.
//!
//! Loading happens in two steps. serde reads the file into [`raw`] structs that reject
//! unknown keys; then [`validate`] resolves names (ports, NFs) into ids, parses every NF's
//! parameters and checks cross-references. Every error names the file, line, key and what was
//! expected; nothing starts until the whole configuration is valid.

mod error;
pub mod raw;
pub mod scale;

use std::net::Ipv4Addr;
use std::path::Path;

use nflet_nfs::addr::OneOrMany;
use nflet_nfs::chain::{Selector, Step};
use nflet_nfs::functions::AnyConfig;
use nflet_nfs::ids::{Label, PortId};
use nflet_nfs::packet::ParsePolicy;
use nflet_nfs::state::Backing;

pub use error::{ConfigError, Location, SourceMap};
pub use raw::{RawDpdk, RawDpdkPort, RawGenerator, RawPortKind};

/// The configuration nflet runs when given none: generator → firewall → monitor → sink.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Appliance-wide settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cores: usize,
    /// CPU for each worker core (empty: not pinned).
    pub cpus: Vec<usize>,
    pub burst: usize,
    pub arena_bytes: usize,
    pub backing: Backing,
    pub buffers_per_core: usize,
    pub frame_size: usize,
    pub idle_sleep_us: u64,
    /// Where state tables live across restarts (`None`: anonymous memory).
    pub state_dir: Option<std::path::PathBuf>,
}

/// True when `device` names a PCI device (`0000:00:04.0` or `00:04.0`) rather than a
/// virtual device.
pub fn is_pci_address(device: &str) -> bool {
    let d = device.as_bytes();
    let hex = |r: std::ops::Range<usize>| d.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit));
    let short = |o: usize| {
        d.len() == o + 7
            && hex(o..o + 2)
            && d.get(o + 2) == Some(&b':')
            && hex(o + 3..o + 5)
            && d.get(o + 5) == Some(&b'.')
            && d.get(o + 6).is_some_and(|c| (b'0'..=b'7').contains(c))
    };
    short(0) || (hex(0..4) && d.get(4) == Some(&b':') && short(5))
}

/// A validated port.
#[derive(Debug)]
pub struct PortConfig {
    pub name: String,
    pub kind: RawPortKind,
}

/// A validated chain.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub name: String,
    pub ingress: Vec<PortId>,
    pub steps: Vec<Step>,
    pub output: Option<PortId>,
    /// Which frames of the ingress ports this chain takes (empty: all the others).
    pub classifier: crate::dataplane::select::Classifier,
    /// Who is billed for the chain's work.
    pub tenant: String,
}

/// The validated `[billing]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Billing {
    pub dir: std::path::PathBuf,
    pub interval: std::time::Duration,
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where it came from (a path, or `<embedded default>`).
    pub source: String,
    pub settings: Settings,
    pub parse: ParsePolicy,
    pub ports: Vec<PortConfig>,
    /// The DPDK environment (used when a port has `kind = "dpdk"`).
    pub dpdk: raw::RawDpdk,
    /// NF instances by name, with parsed parameters.
    pub nfs: Vec<(String, AnyConfig)>,
    pub chains: Vec<ChainConfig>,
    /// `[management]`, when present.
    pub management: Option<Management>,
    /// `[billing]`, when present.
    pub billing: Option<Billing>,
    /// `[scale]`, when present: this file describes a scale-out deployment.
    pub scale: Option<scale::Scale>,
}

/// The validated `[management]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    /// The kernel's name for the management NIC (`eth0`).
    pub iface: String,
    /// Static IPv4 address and prefix length; `None`: the NIC is left as it is.
    pub address: Option<(Ipv4Addr, u8)>,
    /// Default route via this address.
    pub gateway: Option<Ipv4Addr>,
    /// TCP port of the HTTP endpoint; `None`: no endpoint.
    pub listen: Option<u16>,
    /// Bearer token for state-changing requests; `None`: they are refused.
    pub token: Option<String>,
    /// Where packet captures are written.
    pub capture_dir: std::path::PathBuf,
    /// Lease the address and default route by DHCP (`address = "dhcp"`).
    pub dhcp: bool,
}

impl Config {
    /// Loads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            at: Location { file: file.clone(), line: 0, column: 0 },
            key: String::new(),
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(&file, &text)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Result<Config, ConfigError> {
        Config::parse("<embedded default>", EMBEDDED_DEFAULT)
    }

    /// Parses and validates configuration text; `file` is used in error messages.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let map = SourceMap { file, text };
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let at =
                e.span().map_or(Location { file: file.to_string(), line: 0, column: 0 }, |s| map.at(s.start));
            let key = e.span().map(|s| key_at(text, s.start)).unwrap_or_default();
            ConfigError { at, key, message: e.message().trim().to_string() }
        })?;
        validate(&map, raw)
    }

    pub fn port_id(&self, name: &str) -> Option<PortId> {
        self.ports.iter().position(|p| p.name == name).and_then(|i| u16::try_from(i).ok()).map(PortId)
    }

    pub fn port_names(&self) -> Vec<String> {
        self.ports.iter().map(|p| p.name.clone()).collect()
    }

    /// The unclassified (default) chain of `port`, if any.
    pub fn chain_of(&self, port: PortId) -> Option<usize> {
        self.chains.iter().position(|c| c.ingress.contains(&port) && c.classifier.is_empty())
    }
}

fn validate(map: &SourceMap<'_>, raw: raw::RawConfig) -> Result<Config, ConfigError> {
    let a = &raw.appliance;
    let whole = 0..map.text.len();
    let bad = |key: &str, msg: String| ConfigError {
        at: map.key_in(whole.clone(), key.rsplit('.').next().unwrap_or(key)),
        key: key.to_string(),
        message: msg,
    };
    if !(1..=64).contains(&a.cores) {
        return Err(bad("appliance.cores", format!("expected 1 to 64 worker cores, got {}", a.cores)));
    }
    if !(1..=256).contains(&a.burst) {
        return Err(bad("appliance.burst", format!("expected a burst of 1 to 256 packets, got {}", a.burst)));
    }
    if !(256..=16384).contains(&a.frame_size) {
        return Err(bad(
            "appliance.frame_size",
            format!("expected 256 to 16384 bytes, got {}", a.frame_size),
        ));
    }
    if a.buffers_per_core < a.burst * 4 {
        return Err(bad(
            "appliance.buffers_per_core",
            format!("expected at least 4 bursts' worth ({}), got {}", a.burst * 4, a.buffers_per_core),
        ));
    }
    if !a.cpus.is_empty() && a.cpus.len() != a.cores {
        return Err(bad(
            "appliance.cpus",
            format!("expected one CPU per worker core ({} of them), got {}", a.cores, a.cpus.len()),
        ));
    }
    if a.state_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        return Err(bad(
            "appliance.state_dir",
            "expected a directory (on tmpfs or hugetlbfs, e.g. \"/dev/shm/nflet\"), got \"\"".to_string(),
        ));
    }
    let online = std::thread::available_parallelism().map_or(usize::MAX, |n| n.get());
    if let Some(cpu) = a.cpus.iter().find(|c| **c >= online) {
        return Err(bad(
            "appliance.cpus",
            format!("CPU {cpu} does not exist; this machine has CPUs 0 to {}", online - 1),
        ));
    }
    let settings = Settings {
        cores: a.cores,
        cpus: a.cpus.clone(),
        burst: a.burst,
        arena_bytes: a.state_arena_mib.saturating_mul(1 << 20),
        backing: match a.hugepages {
            raw::HugepageMode::Prefer => Backing::PreferHuge,
            raw::HugepageMode::Off => Backing::Normal,
        },
        buffers_per_core: a.buffers_per_core,
        frame_size: a.frame_size,
        idle_sleep_us: a.idle_sleep_us,
        state_dir: a.state_dir.clone(),
    };
    let parse = ParsePolicy {
        fragments: raw.parse.fragments.into(),
        verify_ipv4_checksum: raw.parse.verify_ipv4_checksum,
    };

    // Ports.
    let mut ports: Vec<PortConfig> = Vec::new();
    for p in raw.ports {
        let span = p.span();
        let p = p.into_inner();
        if ports.iter().any(|q| q.name == p.name) {
            return Err(map.error(
                span,
                format!("port[{}]", p.name),
                "a port with this name is already defined",
            ));
        }
        let kind = RawPortKind::parse(&p.kind, p.params).map_err(|msg| {
            let at = quoted_name(&msg).map_or_else(|| map.at(span.start), |k| map.key_in(span.clone(), k));
            ConfigError { at, key: format!("port[{}]", p.name), message: msg }
        })?;
        if let RawPortKind::Generator(g) = &kind {
            if let raw::RawSize::Bytes(n) = g.size {
                if usize::from(n) < 60 || usize::from(n) > settings.frame_size {
                    return Err(ConfigError {
                        at: map.key_in(span, "size"),
                        key: format!("port[{}].size", p.name),
                        message: format!(
                            "expected a frame size from 60 to {} bytes or \"imix\", got {n}",
                            settings.frame_size
                        ),
                    });
                }
            }
            if g.flows == 0 {
                return Err(ConfigError {
                    at: map.key_in(span, "flows"),
                    key: format!("port[{}].flows", p.name),
                    message: "expected at least 1 flow".into(),
                });
            }
        }
        if let RawPortKind::Dpdk(d) = &kind {
            for (key, n) in [("rx_desc", d.rx_desc), ("tx_desc", d.tx_desc)] {
                if !(64..=4096).contains(&n) || !n.is_power_of_two() {
                    return Err(ConfigError {
                        at: map.key_in(span.clone(), key),
                        key: format!("port[{}].{key}", p.name),
                        message: format!("expected a power of two from 64 to 4096 descriptors, got {n}"),
                    });
                }
            }
            if d.device.trim().is_empty() {
                return Err(ConfigError {
                    at: map.key_in(span.clone(), "device"),
                    key: format!("port[{}].device", p.name),
                    message: "expected a PCI address (0000:00:04.0) or a virtual device (net_memif0,...)"
                        .into(),
                });
            }
        }
        ports.push(PortConfig { name: p.name, kind });
    }
    if ports.len() > usize::from(u16::MAX) {
        return Err(bad("port", "too many ports".into()));
    }
    let port_id = |name: &str| {
        ports.iter().position(|p| p.name == name).and_then(|i| u16::try_from(i).ok()).map(PortId)
    };
    let port_list = ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");

    // NFs.
    let mut nfs: Vec<(String, AnyConfig)> = Vec::new();
    for n in raw.nfs {
        let span = n.span();
        let n = n.into_inner();
        if nfs.iter().any(|(name, _)| *name == n.name) {
            return Err(map.error(
                span,
                format!("nf[{}]", n.name),
                "an NF with this name is already defined",
            ));
        }
        let mut parsed = AnyConfig::parse(&n.kind, toml::Value::Table(n.params)).map_err(|e| {
            let msg = e.to_string();
            // Point at the offending key when the message names one.
            let at = quoted_name(&msg).map_or_else(|| map.at(span.start), |k| map.key_in(span.clone(), k));
            ConfigError { at, key: format!("nf[{}]", n.name), message: msg }
        })?;
        // The NF crate does no I/O: an IDS rules file is read here, relative to this file.
        if let AnyConfig::Ids(ids) = &mut parsed {
            if let Some(path) = ids.rules_file.clone() {
                let base = Path::new(map.file).parent().unwrap_or(Path::new(""));
                let full = base.join(&path);
                let text = std::fs::read_to_string(&full).map_err(|e| ConfigError {
                    at: map.key_in(span.clone(), "rules_file"),
                    key: format!("nf[{}].rules_file", n.name),
                    message: format!("cannot read rules file `{}`: {e}", full.display()),
                })?;
                ids.rules_file = Some(full.display().to_string());
                ids.rules_file_text = Some(text);
            }
        }
        nfs.push((n.name, parsed));
    }

    // Chains.
    let mut chains: Vec<ChainConfig> = Vec::new();
    for c in raw.chains {
        let span = c.span();
        let c = c.into_inner();
        let key = format!("chain[{}]", c.name);
        if chains.iter().any(|q| q.name == c.name) {
            return Err(map.error(span, key, "a chain with this name is already defined"));
        }
        let mut ingress = Vec::new();
        for name in &c.ingress {
            let id = port_id(name).ok_or_else(|| ConfigError {
                at: map.key_in(span.clone(), "ingress"),
                key: format!("{key}.ingress"),
                message: format!("no port named `{name}`; ports are: {port_list}"),
            })?;
            let classified = c.vlan.is_some() || !c.src.is_empty() || !c.dst.is_empty();
            let default_taken = chains.iter().find(|q| q.ingress.contains(&id) && q.classifier.is_empty());
            if let (false, Some(other)) = (classified, default_taken) {
                return Err(ConfigError {
                    at: map.key_in(span.clone(), "ingress"),
                    key: format!("{key}.ingress"),
                    message: format!(
                        "port `{name}` already feeds chain `{}`; give one of them a classifier \
                         (`vlan`, `src`, `dst`) to share the port",
                        other.name
                    ),
                });
            }
            ingress.push(id);
        }
        let output = match &c.output {
            Some(name) => Some(port_id(name).ok_or_else(|| ConfigError {
                at: map.key_in(span.clone(), "output"),
                key: format!("{key}.output"),
                message: format!("no port named `{name}`; ports are: {port_list}"),
            })?),
            None => None,
        };
        let steps = steps(&c.steps, &nfs).map_err(|message| ConfigError {
            at: map.key_in(span.clone(), "steps"),
            key: format!("{key}.steps"),
            message,
        })?;
        let classifier = crate::dataplane::select::Classifier {
            vlans: c.vlan.map(OneOrMany::into_vec).unwrap_or_default(),
            src: c.src.into_vec(),
            dst: c.dst.into_vec(),
        };
        if classifier.vlans.iter().any(|v| *v > 4095) {
            return Err(ConfigError {
                at: map.key_in(span.clone(), "vlan"),
                key: format!("{key}.vlan"),
                message: "expected VLAN ids from 0 to 4095".into(),
            });
        }
        let tenant = match c.tenant {
            None => c.name.clone(),
            Some(t) if is_label_text(&t) => t,
            Some(t) => {
                return Err(ConfigError {
                    at: map.key_in(span.clone(), "tenant"),
                    key: format!("{key}.tenant"),
                    message: format!(
                        "expected a tenant name of 1 to 64 letters, digits, `-`, `_` or `.`, got `{t}`"
                    ),
                })
            }
        };
        chains.push(ChainConfig { name: c.name, ingress, steps, output, classifier, tenant });
    }
    let dpdk = raw.dpdk;
    if !(1023..=(1 << 24)).contains(&dpdk.mbufs) {
        return Err(bad(
            "dpdk.mbufs",
            format!("expected 1023 to 16777216 packet buffers, got {}", dpdk.mbufs),
        ));
    }
    let management = match raw.management {
        Some(m) => Some(management(m).map_err(|(key, message)| {
            // Point into the `[management]` table, not at a same-named key of an NF.
            let from = map.text.find("[management]").unwrap_or(0);
            ConfigError {
                at: map.key_in(from..map.text.len(), key),
                key: format!("management.{key}"),
                message,
            }
        })?),
        None => None,
    };
    let billing = match raw.billing {
        Some(b) => Some(billing(b).map_err(|(key, message)| {
            let from = map.text.find("[billing]").unwrap_or(0);
            ConfigError { at: map.key_in(from..map.text.len(), key), key: format!("billing.{key}"), message }
        })?),
        None => None,
    };
    let scale = match raw.scale {
        Some(s) => Some(scale::scale(s).map_err(|(key, message)| {
            let from = map.text.find("[scale]").unwrap_or(0);
            ConfigError { at: map.key_in(from..map.text.len(), key), key: format!("scale.{key}"), message }
        })?),
        None => None,
    };
    Ok(Config {
        source: map.file.to_string(),
        settings,
        parse,
        ports,
        dpdk,
        nfs,
        chains,
        management,
        billing,
        scale,
    })
}

/// A name that is safe in a metric label, a JSON string and a file listing.
fn is_label_text(t: &str) -> bool {
    (1..=64).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Validates `[billing]`; errors are `(key, message)`.
fn billing(b: raw::RawBilling) -> Result<Billing, (&'static str, String)> {
    if b.dir.trim().is_empty() {
        return Err((
            "dir",
            "expected a directory for the usage records, e.g. \"/var/lib/nflet/usage\"".into(),
        ));
    }
    if !(1..=86_400).contains(&b.interval_s) {
        return Err((
            "interval_s",
            format!("expected 1 to 86400 seconds per usage interval, got {}", b.interval_s),
        ));
    }
    Ok(Billing { dir: b.dir.into(), interval: std::time::Duration::from_secs(b.interval_s) })
}

/// Validates `[management]`; errors are `(key, message)`.
fn management(m: raw::RawManagement) -> Result<Management, (&'static str, String)> {
    if m.iface.is_empty() || m.iface.len() > 15 || m.iface.contains(['/', ' ']) {
        return Err((
            "iface",
            format!(
                "expected a kernel interface name (1 to 15 characters, e.g. \"eth0\"), got `{}`",
                m.iface
            ),
        ));
    }
    let dhcp = m.address.as_deref().map(str::trim) == Some("dhcp");
    let address = match m.address.as_deref().map(str::trim) {
        None | Some("dhcp") => None,
        Some(text) => Some(ipv4_with_prefix(text).map_err(|msg| ("address", msg))?),
    };
    if dhcp && m.gateway.is_some() {
        return Err((
            "gateway",
            "with `address = \"dhcp\"` the default route comes from the lease; remove `gateway`".into(),
        ));
    }
    let gateway = match m.gateway.as_deref().map(str::trim) {
        None => None,
        Some(text) => {
            let gw: Ipv4Addr = text.parse().map_err(|_| {
                ("gateway", format!("expected an IPv4 address such as \"10.0.2.2\", got `{text}`"))
            })?;
            let Some((addr, len)) = address else {
                return Err(("gateway", "a gateway needs a static `address` on the management NIC".into()));
            };
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            if u32::from(gw) & mask != u32::from(addr) & mask || gw == addr {
                return Err((
                    "gateway",
                    format!(
                        "{gw} is not another host on {addr}/{len}: the gateway must be on the NIC's subnet"
                    ),
                ));
            }
            Some(gw)
        }
    };
    if let Some(t) = &m.token {
        if t.len() < 16 || !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(("token", "expected at least 16 printable characters without spaces".into()));
        }
    }
    Ok(Management {
        iface: m.iface,
        address,
        gateway,
        listen: (m.listen != 0).then_some(m.listen),
        token: m.token,
        capture_dir: match m.capture_dir {
            Some(d) if d.trim().is_empty() => {
                return Err(("capture_dir", "expected a directory path, got an empty string".into()))
            }
            Some(d) => d.into(),
            None => crate::capture::DEFAULT_DIR.into(),
        },
        dhcp,
    })
}

/// `a.b.c.d/len`: a unicast IPv4 host address with a prefix length of 1 to 32.
fn ipv4_with_prefix(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let wrong = || {
        format!("expected a static IPv4 address with its prefix length, e.g. \"10.0.2.15/24\", got `{text}`")
    };
    let (a, l) = text.split_once('/').ok_or_else(wrong)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| wrong())?;
    let len: u8 = l.parse().map_err(|_| wrong())?;
    if !(1..=32).contains(&len) {
        return Err(format!("prefix length /{len} in `{text}`: expected 1 to 32"));
    }
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr.is_loopback() {
        return Err(format!("{addr} cannot be the address of a NIC: give a unicast host address"));
    }
    Ok((addr, len))
}

/// The dotted key (`section.key`) written on the line holding byte `offset`, for errors the
/// TOML parser reports with a position only (wrong value types).
fn key_at(text: &str, offset: usize) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..).and_then(|t| t.lines().next()).unwrap_or("");
    let key = line.split_once('=').map_or("", |(k, _)| k.trim().trim_matches('"'));
    let section = before
        .get(..line_start)
        .unwrap_or("")
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map_or("", |l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match (section.is_empty(), key.is_empty()) {
        (_, true) => section.to_string(),
        (true, false) => key.to_string(),
        (false, false) => format!("{section}.{key}"),
    }
}

/// The first name in backquotes in a message (serde's "unknown field `x`").
fn quoted_name(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg.get(start..)?.find('`')?;
    msg.get(start..start + len)
}

fn steps(raw: &[raw::RawStep], nfs: &[(String, AnyConfig)]) -> Result<Vec<Step>, String> {
    raw.iter()
        .map(|s| match s {
            raw::RawStep::Nf(name) => {
                nfs.iter().position(|(n, _)| n == name).map(Step::Nf).ok_or_else(|| {
                    let known: Vec<&str> = nfs.iter().map(|(n, _)| n.as_str()).collect();
                    format!("no NF named `{name}`; NFs are: {}", known.join(", "))
                })
            }
            raw::RawStep::Distribute(d) => {
                let selector = match d.distribute.as_str() {
                    "label" => Selector::Label,
                    "protocol" => Selector::Protocol,
                    other => return Err(format!("distribute by `label` or `protocol`, got `{other}`")),
                };
                let mut branches = Vec::new();
                for (k, v) in &d.branches {
                    let label = branch_label(selector, k)?;
                    let sub: Vec<raw::RawStep> = v
                        .clone()
                        .try_into()
                        .map_err(|e: toml::de::Error| format!("branch `{k}`: {}", e.message()))?;
                    branches.push((label, steps(&sub, nfs)?));
                }
                let default = match &d.default {
                    Some(s) => Some(steps(s, nfs)?),
                    None => None,
                };
                Ok(Step::Distribute { selector, branches, default })
            }
        })
        .collect()
}

fn branch_label(selector: Selector, key: &str) -> Result<Label, String> {
    let named = match (selector, key) {
        (Selector::Protocol, "tcp") => Some(6),
        (Selector::Protocol, "udp") => Some(17),
        (Selector::Protocol, "icmp") => Some(1),
        (Selector::Protocol, "icmpv6") => Some(58),
        _ => None,
    };
    match named {
        Some(n) => Ok(Label(n)),
        None => key.parse::<u16>().map(Label).map_err(|_| match selector {
            Selector::Protocol => {
                format!("branch `{key}`: expected tcp, udp, icmp, icmpv6 or a protocol number")
            }
            Selector::Label => format!("branch `{key}`: expected a label number"),
        }),
    }
}

#[cfg(test)]
mod tests;
