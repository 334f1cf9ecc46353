//! The configuration file as written: serde structs that reject unknown keys.

use serde::Deserialize;
use toml::Spanned;

use nflet_nfs::addr::{OneOrMany, Prefix};
use nflet_nfs::packet::FragmentPolicy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub appliance: RawAppliance,
    #[serde(default)]
    pub parse: RawParse,
    #[serde(default)]
    pub dpdk: RawDpdk,
    #[serde(default, rename = "port")]
    pub ports: Vec<Spanned<RawPort>>,
    #[serde(default, rename = "nf")]
    pub nfs: Vec<Spanned<RawNf>>,
    #[serde(default, rename = "chain")]
    pub chains: Vec<Spanned<RawChain>>,
    /// `[management]`: the management NIC and endpoint (absent: neither).
    pub management: Option<RawManagement>,
    /// `[billing]`: periodic usage records (absent: none written; usage still in /metrics).
    pub billing: Option<RawBilling>,
    /// `[scale]`: a scale-out deployment (director and workers).
    pub scale: Option<super::scale::RawScale>,
}

/// `[billing]`: where and how often usage records are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBilling {
    /// Directory for the usage files (created when missing).
    pub dir: String,
    /// Seconds per usage interval (one file each).
    #[serde(default = "default_billing_interval")]
    pub interval_s: u64,
}

fn default_billing_interval() -> u64 {
    60
}

/// `[management]`: a NIC left on the kernel stack, and the HTTP endpoint on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManagement {
    /// The kernel's name for the management NIC.
    #[serde(default = "default_mgmt_iface")]
    pub iface: String,
    /// `"10.0.2.15/24"` or `"dhcp"`; absent: the NIC is not configured.
    pub address: Option<String>,
    /// Default route via this IPv4 address.
    pub gateway: Option<String>,
    /// TCP port of the HTTP endpoint (`/status`, `/metrics`); 0: no endpoint.
    #[serde(default = "default_mgmt_listen")]
    pub listen: u16,
    /// Bearer token for requests that change state (`POST /shutdown`, `POST /capture`) and
    /// capture downloads; absent: none allowed.
    pub token: Option<String>,
    /// Directory for packet captures (created when missing); absent: /tmp/nflet-captures.
    pub capture_dir: Option<String>,
}

fn default_mgmt_iface() -> String {
    "eth0".into()
}

fn default_mgmt_listen() -> u16 {
    8080
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAppliance {
    /// Worker cores (threads running the dataplane loop).
    pub cores: usize,
    /// CPUs to pin worker core i to (`cpus[i]`); empty: let the OS schedule them.
    pub cpus: Vec<usize>,
    /// Packets per receive burst.
    pub burst: usize,
    /// Bytes of state arena per core, in MiB.
    pub state_arena_mib: usize,
    /// `prefer` (hugepages when reserved, else normal pages) or `off`.
    pub hugepages: HugepageMode,
    /// Frame buffers per core.
    pub buffers_per_core: usize,
    /// Frame buffer size in bytes.
    pub frame_size: usize,
    /// Microseconds to sleep after a run of empty polls (0 = busy-poll forever).
    pub idle_sleep_us: u64,
    /// Directory (on tmpfs or hugetlbfs) holding the per-core state tables, so that a
    /// restarted nflet re-attaches them (hitless restart). Absent: anonymous memory.
    pub state_dir: Option<std::path::PathBuf>,
}

impl Default for RawAppliance {
    fn default() -> Self {
        RawAppliance {
            cores: 1,
            cpus: Vec::new(),
            burst: 32,
            state_arena_mib: 512,
            hugepages: HugepageMode::Prefer,
            buffers_per_core: 4096,
            frame_size: 2048,
            idle_sleep_us: 50,
            state_dir: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HugepageMode {
    Prefer,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawParse {
    pub fragments: RawFragments,
    pub verify_ipv4_checksum: bool,
}

impl Default for RawParse {
    fn default() -> Self {
        RawParse { fragments: RawFragments::Allow, verify_ipv4_checksum: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawFragments {
    Allow,
    DropNonFirst,
    DropAll,
}

impl From<RawFragments> for FragmentPolicy {
    fn from(f: RawFragments) -> Self {
        match f {
            RawFragments::Allow => FragmentPolicy::Allow,
            RawFragments::DropNonFirst => FragmentPolicy::DropNonFirst,
            RawFragments::DropAll => FragmentPolicy::DropAll,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RawPort {
    pub name: String,
    pub kind: String,
    /// The kind's own parameters, parsed into a [`RawPortKind`] once the kind is known.
    #[serde(flatten)]
    pub params: toml::Table,
}

/// A port's kind and parameters.
#[derive(Debug)]
pub enum RawPortKind {
    /// In-memory traffic generator (receive side).
    Generator(RawGenerator),
    /// Counts and discards what is sent to it.
    Sink,
    /// Reads frames from a capture and/or writes them to one.
    Pcap(RawPcap),
    /// A Linux interface through AF_PACKET (TPACKET_V3).
    AfPacket(RawAfPacket),
    /// A DPDK poll-mode port: a PCI NIC or a virtual device.
    Dpdk(RawDpdkPort),
    /// Measures the probes in what is sent to it, then discards it (`nflet gen`).
    Analyzer(RawAnalyzer),
}

/// The port kinds, as written in `kind = "..."`.
pub const PORT_KINDS: &[&str] = &["generator", "sink", "pcap", "af_packet", "dpdk", "analyzer"];

impl RawPortKind {
    /// Parses the parameters of a port of `kind`.
    pub fn parse(kind: &str, params: toml::Table) -> Result<RawPortKind, String> {
        let v = toml::Value::Table(params);
        let e = |e: toml::de::Error| e.message().trim().to_string();
        match kind {
            "generator" => v.try_into().map(RawPortKind::Generator).map_err(e),
            "sink" => v.try_into::<RawSink>().map(|_| RawPortKind::Sink).map_err(e),
            "pcap" => v.try_into().map(RawPortKind::Pcap).map_err(e),
            "af_packet" => v.try_into().map(RawPortKind::AfPacket).map_err(e),
            "dpdk" => v.try_into().map(RawPortKind::Dpdk).map_err(e),
            "analyzer" => v.try_into().map(RawPortKind::Analyzer).map_err(e),
            other => Err(format!("unknown port kind `{other}`; expected one of: {}", PORT_KINDS.join(", "))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {}

/// `[[port]] kind = "analyzer"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAnalyzer {
    /// Streams (generator flows) tracked per core for loss and reordering; probes of further
    /// streams are counted as untracked.
    pub streams: usize,
}

impl Default for RawAnalyzer {
    fn default() -> Self {
        RawAnalyzer { streams: 65_536 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPcap {
    pub read: Option<String>,
    pub write: Option<String>,
    /// Replay `read` at this many frames per second (0: as fast as possible).
    #[serde(default)]
    pub rate_pps: u64,
    /// Stamp a probe into each replayed TCP/UDP frame with room for it (`nflet gen` turns it
    /// on); other frames are replayed unchanged.
    #[serde(default)]
    pub probe: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAfPacket {
    pub iface: String,
}

/// `[[port]] kind = "dpdk"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDpdkPort {
    /// A PCI address (`0000:00:04.0`) or a virtual device with its arguments
    /// (`net_memif0,role=client,socket=/run/memif.sock`).
    pub device: String,
    /// Receive descriptors per queue.
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    /// Transmit descriptors per queue.
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
}

fn default_desc() -> u16 {
    1024
}

/// `[dpdk]`: the DPDK environment (EAL), shared by all DPDK ports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDpdk {
    /// Use hugepages (the default). `false` runs on normal pages: slower, for tests and
    /// machines without hugepages.
    pub hugepages: bool,
    /// Memory for DPDK in MiB (`-m`); 0: as much as it needs, from hugepages on demand.
    /// Without hugepages 0 means 256.
    pub memory_mib: usize,
    /// Packet buffers (mbufs) in the pool of each NUMA socket.
    pub mbufs: u32,
    /// Extra EAL arguments, passed as given (e.g. `["--log-level", "pmd.net.memif:debug"]`).
    pub eal_args: Vec<String>,
    /// How long to wait at start for the links of DPDK ports to come up, in milliseconds.
    pub link_wait_ms: u64,
}

impl Default for RawDpdk {
    fn default() -> Self {
        RawDpdk { hugepages: true, memory_mib: 0, mbufs: 16383, eal_args: Vec::new(), link_wait_ms: 5000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawGenerator {
    /// Number of distinct flows.
    pub flows: u32,
    /// Frame size in bytes (60..=frame_size) or `imix`.
    pub size: RawSize,
    /// `udp`, `tcp` or `mix`.
    pub proto: RawGenProto,
    /// `uniform` or `heavy_tailed` (flow popularity ~ 1/rank).
    pub flow_popularity: RawPopularity,
    /// Packets per second per core (0 = as fast as possible).
    pub rate_pps: u64,
    /// Packets to send per core (0 = unlimited).
    pub count: u64,
    pub seed: u64,
    /// Send every flow once, in order, before the random mix (so a benchmark can set all
    /// flows up first and measure the steady state separately).
    pub setup_pass: bool,
    /// Write a probe (session, stream, sequence number, TX time) into every frame's payload,
    /// for an analyzer port to measure; `nflet gen` turns it on.
    pub probe: bool,
    pub src: Prefix,
    pub dst: Prefix,
}

impl Default for RawGenerator {
    fn default() -> Self {
        RawGenerator {
            flows: 10_000,
            size: RawSize::Bytes(64),
            proto: RawGenProto::Udp,
            flow_popularity: RawPopularity::Uniform,
            rate_pps: 0,
            count: 0,
            seed: 1,
            setup_pass: false,
            probe: false,
            src: Prefix { addr: nflet_nfs::flow::v4([10, 0, 0, 0]), len: 8, family: 4 },
            dst: Prefix { addr: nflet_nfs::flow::v4([198, 18, 0, 0]), len: 15, family: 4 },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u16),
    Named(NamedSize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamedSize {
    Imix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawGenProto {
    Udp,
    Tcp,
    Mix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawPopularity {
    Uniform,
    HeavyTailed,
}

#[derive(Debug, Deserialize)]
pub struct RawNf {
    pub name: String,
    pub kind: String,
    /// Everything else in the table: the NF's own parameters.
    #[serde(flatten)]
    pub params: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChain {
    pub name: String,
    /// Ports whose received frames enter this chain.
    pub ingress: Vec<String>,
    pub steps: Vec<RawStep>,
    /// Port for frames that reach the end of the chain (none: they are dropped).
    pub output: Option<String>,
    /// Classifier, when several chains share an ingress port: outermost VLAN id(s)...
    pub vlan: Option<OneOrMany<u16>>,
    /// ...and/or source and destination prefixes. A chain without any is the port's default.
    #[serde(default)]
    pub src: OneOrMany<Prefix>,
    #[serde(default)]
    pub dst: OneOrMany<Prefix>,
    /// Who is billed for the chain's work (default: the chain's name).
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawStep {
    Nf(String),
    Distribute(RawDistribute),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDistribute {
    /// `label` or `protocol`.
    pub distribute: String,
    /// Branch key (a label number, or a protocol name/number) → steps.
    pub branches: toml::Table,
    pub default: Option<Vec<RawStep>>,
}
