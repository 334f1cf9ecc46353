//! Ports: where frames enter and leave the dataplane.
//!
//! A port is opened from its configuration into receive and transmit *queues*. Each queue is
//! owned by exactly one core and moved to that core's thread, so the per-packet path never
//! shares a queue. Frames travel in [`PktBuf`]s taken from the core's own [`BufPool`]; a queue
//! fills buffers on receive and hands them back to the pool after transmit, so the loop
//! allocates nothing per packet.
//!
//! Backends: [`generator`], [`sink`] and [`analyzer`] (in memory), [`pcap`] (pcap/pcapng files) and
//! [`af_packet`] (Linux interfaces through TPACKET_V3 rings) and, with the `dpdk` feature,
//! `dpdk` (poll-mode NIC drivers and virtual devices, zero copy).

pub mod af_packet;
pub mod analyzer;
pub mod buf;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod generator;
pub mod pcap;
pub mod replay;
pub mod sink;

pub use buf::{BufPool, PktBuf};

/// What a receive poll produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxStatus {
    /// `n` frames were appended (possibly zero: poll again later).
    Received(usize),
    /// The source is finite and has nothing more to give (end of a capture, generator count
    /// reached). The dataplane stops once every receive queue is exhausted.
    Exhausted,
}

/// One receive queue of a port, owned by one core.
pub trait RxQueue: Send {
    /// Appends up to `max` received frames to `out`, taking buffers from `pool`. Never blocks.
    fn rx_burst(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus;

    /// True when the port already spreads flows over queues by a symmetric hash (hardware
    /// RSS, kernel fanout): then the dataplane skips hash-based software steering for this
    /// queue (an NF that steers by its own state still may move frames, see `dataplane::core`).
    fn steered(&self) -> bool {
        false
    }

    /// Frames the port itself lost before nflet saw them (ring overruns, kernel drops).
    fn lost(&self) -> u64 {
        0
    }
}

/// One transmit queue of a port, owned by one core.
pub trait TxQueue: Send {
    /// Sends frames from the front of `pkts`, removes the sent ones (their buffers go back to
    /// `pool`) and returns how many were sent; frames it could not send stay in `pkts`.
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize;

    /// Pushes out anything buffered (file writers, kernel rings). Called when a core idles
    /// and at shutdown.
    fn flush(&mut self) {}
}

/// A port after opening: its queues, ready to be handed to cores.
pub struct OpenedPort {
    pub name: String,
    /// One receive queue per core that polls this port (empty for transmit-only ports).
    pub rx: Vec<Box<dyn RxQueue>>,
    /// One transmit queue per core (empty for receive-only ports).
    pub tx: Vec<Box<dyn TxQueue>>,
}

impl std::fmt::Debug for OpenedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedPort")
            .field("name", &self.name)
            .field("rx_queues", &self.rx.len())
            .field("tx_queues", &self.tx.len())
            .finish()
    }
}

/// Why a port could not be opened; messages say what to do about it.
#[derive(Debug)]
pub enum PortError {
    /// A file could not be opened, read or written.
    Io { port: String, path: String, source: std::io::Error },
    /// A capture file is not pcap or pcapng, or is corrupt.
    Capture { port: String, path: String, detail: String },
    /// A Linux interface could not be used.
    Interface { port: String, iface: String, detail: String },
    /// Anything else wrong with the port's parameters.
    Config { port: String, detail: String },
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::Io { port, path, source } => write!(f, "port {port}: {path}: {source}"),
            PortError::Capture { port, path, detail } => {
                write!(f, "port {port}: {path}: not a readable pcap/pcapng capture: {detail}")
            }
            PortError::Interface { port, iface, detail } => {
                write!(f, "port {port}: interface {iface}: {detail}")
            }
            PortError::Config { port, detail } => write!(f, "port {port}: {detail}"),
        }
    }
}

impl std::error::Error for PortError {}

/// Where a port's link state comes from, for the management endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkSource {
    /// A Linux interface (AF_PACKET port): its `operstate`.
    Iface(String),
    /// A DPDK device (PCI address or vdev spec): the driver's link status.
    Dpdk(String),
    /// Generators, sinks, captures: no link.
    Virtual,
}

impl LinkSource {
    pub fn of(kind: &crate::config::RawPortKind) -> LinkSource {
        use crate::config::RawPortKind;
        match kind {
            RawPortKind::AfPacket(a) => LinkSource::Iface(a.iface.clone()),
            RawPortKind::Dpdk(d) => LinkSource::Dpdk(d.device.clone()),
            RawPortKind::Generator(_)
            | RawPortKind::Sink
            | RawPortKind::Pcap(_)
            | RawPortKind::Analyzer(_) => LinkSource::Virtual,
        }
    }

    /// `up`, `down` (no carrier, or the interface or NIC is gone) or `virtual`.
    pub fn state(&self) -> &'static str {
        match self {
            LinkSource::Iface(iface) => {
                match std::fs::read_to_string(format!("/sys/class/net/{iface}/operstate")) {
                    // `unknown`: drivers without carrier reporting (tun, some virtual NICs)
                    // pass traffic while up.
                    Ok(s) if matches!(s.trim(), "up" | "unknown") => "up",
                    _ => "down",
                }
            }
            #[cfg(feature = "dpdk")]
            LinkSource::Dpdk(device) => match dpdk::port_state(device) {
                Some((link, _)) if link.up => "up",
                _ => "down",
            },
            #[cfg(not(feature = "dpdk"))]
            LinkSource::Dpdk(_) => "down",
            LinkSource::Virtual => "virtual",
        }
    }
}
