//! Opening the configured ports and dealing their queues out to cores.

use std::path::Path;
use std::sync::Arc;

use nflet_nfs::ids::PortId;

use crate::config::{Config, RawPortKind};
use crate::port::analyzer::{Analyzer, AnalyzerSlots};
use crate::port::generator::Generator;
use crate::port::replay::Replay;
use crate::port::sink::{Sink, SinkTotals};
use crate::port::{af_packet, pcap, PortError, RxQueue, TxQueue};
use crate::traffic::ProbeSession;

/// Queues of all ports, dealt out per core.
pub struct CoreQueues {
    pub rx: Vec<Vec<(PortId, Box<dyn RxQueue>)>>,
    /// `tx[core][port]`.
    pub tx: Vec<Vec<Option<Box<dyn TxQueue>>>>,
    /// Sink totals by port name.
    pub sinks: Vec<(String, Arc<SinkTotals>)>,
    /// Each analyzer port's per-core stats slots, by port name.
    pub analyzers: Vec<(String, AnalyzerSlots)>,
}

impl std::fmt::Debug for CoreQueues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreQueues").field("cores", &self.rx.len()).finish()
    }
}

/// Overrides for offline processing (`nflet process`): frames come from a capture on one
/// port and everything transmitted goes to one capture.
#[derive(Debug, Clone)]
pub struct Offline<'a> {
    pub input: &'a Path,
    pub ingress: PortId,
    pub output: &'a Path,
}

/// Opens every port of `config` for `cores` cores; probing generators and analyzers share
/// `session`.
pub fn open_ports(
    config: &Config,
    offline: Option<&Offline<'_>>,
    session: &ProbeSession,
) -> Result<CoreQueues, PortError> {
    let cores = config.settings.cores;
    let nports = config.ports.len();
    let mut q = CoreQueues {
        rx: (0..cores).map(|_| Vec::new()).collect(),
        tx: (0..cores).map(|_| (0..nports).map(|_| None).collect()).collect(),
        sinks: Vec::new(),
        analyzers: Vec::new(),
    };
    if let Some(off) = offline {
        let reader = pcap::open_reader("input", off.input)?;
        if let Some(core0) = q.rx.get_mut(0) {
            core0.push((off.ingress, Box::new(reader)));
        }
        let writers = pcap::open_shared_writer("output", off.output, cores * nports)?;
        let mut writers = writers.into_iter();
        for per_core in &mut q.tx {
            for slot in per_core.iter_mut() {
                *slot = writers.next();
            }
        }
        return Ok(q);
    }
    // (port name, device) of every DPDK port.
    let dpdk_ports: Vec<(&str, &str)> = config
        .ports
        .iter()
        .filter_map(|p| match &p.kind {
            RawPortKind::Dpdk(d) => Some((p.name.as_str(), d.device.as_str())),
            _ => None,
        })
        .collect();
    if !dpdk_ports.is_empty() {
        let devices: Vec<&str> = dpdk_ports.iter().map(|(_, d)| *d).collect();
        init_dpdk(config, &devices)?;
    }
    for (i, port) in config.ports.iter().enumerate() {
        let id = PortId(u16::try_from(i).unwrap_or(u16::MAX));
        let name = port.name.as_str();
        match &port.kind {
            RawPortKind::Generator(g) => {
                for (c, rx) in q.rx.iter_mut().enumerate() {
                    let gen = Generator::new(g, c, cores);
                    let gen = if g.probe { gen.with_probe(session.clone(), id.0) } else { gen };
                    rx.push((id, Box::new(gen)));
                }
            }
            RawPortKind::Sink => {
                let totals = Arc::new(SinkTotals::default());
                for tx in &mut q.tx {
                    if let Some(slot) = tx.get_mut(i) {
                        *slot = Some(Box::new(Sink::new(Arc::clone(&totals))));
                    }
                }
                q.sinks.push((name.to_string(), totals));
            }
            RawPortKind::Analyzer(a) => {
                let slots: AnalyzerSlots = (0..cores).map(|_| Arc::default()).collect();
                for (tx, slot) in q.tx.iter_mut().zip(&slots) {
                    if let Some(s) = tx.get_mut(i) {
                        *s = Some(Box::new(Analyzer::new(session.clone(), a.streams, Arc::clone(slot))));
                    }
                }
                q.analyzers.push((name.to_string(), slots));
            }
            RawPortKind::Pcap(crate::config::raw::RawPcap { read, write, rate_pps, probe }) => {
                if read.is_none() && write.is_none() {
                    return Err(PortError::Config {
                        port: name.to_string(),
                        detail: "a pcap port needs `read`, `write` or both".into(),
                    });
                }
                if let Some(path) = read {
                    let reader = pcap::open_reader(name, Path::new(path))?;
                    let rxq: Box<dyn RxQueue> = if *rate_pps > 0 || *probe {
                        let stamp = probe.then(|| (session.clone(), id.0));
                        Box::new(Replay::new(reader, *rate_pps, stamp))
                    } else {
                        Box::new(reader)
                    };
                    if let Some(rx) = q.rx.get_mut(i % cores) {
                        rx.push((id, rxq));
                    }
                }
                if let Some(path) = write {
                    let mut writers = pcap::open_shared_writer(name, Path::new(path), cores)?.into_iter();
                    for tx in &mut q.tx {
                        if let Some(slot) = tx.get_mut(i) {
                            *slot = writers.next();
                        }
                    }
                }
            }
            RawPortKind::AfPacket(crate::config::raw::RawAfPacket { iface }) => {
                let opened = af_packet::open(name, iface, cores, &af_packet::AfPacketOptions::default())?;
                deal(&mut q, id, opened);
            }
            RawPortKind::Dpdk(d) => {
                let opened = open_dpdk(name, d, cores)?;
                deal(&mut q, id, opened);
            }
        }
    }
    #[cfg(feature = "dpdk")]
    if !dpdk_ports.is_empty() {
        crate::port::dpdk::wait_links(
            &dpdk_ports,
            std::time::Duration::from_millis(config.dpdk.link_wait_ms),
        );
    }
    log::info!("ports up: {}", config.port_names().join(", "));
    Ok(q)
}

/// Deals the queues of an opened port out to cores: queue i to core i (mod cores).
fn deal(q: &mut CoreQueues, id: PortId, opened: crate::port::OpenedPort) {
    let cores = q.rx.len().max(1);
    let i = usize::from(id.0);
    for (c, rxq) in opened.rx.into_iter().enumerate() {
        if let Some(rx) = q.rx.get_mut(c % cores) {
            rx.push((id, rxq));
        }
    }
    for (c, txq) in opened.tx.into_iter().enumerate() {
        if let Some(slot) = q.tx.get_mut(c % cores).and_then(|t| t.get_mut(i)) {
            *slot = Some(txq);
        }
    }
}

#[cfg(feature = "dpdk")]
fn init_dpdk(config: &Config, devices: &[&str]) -> Result<(), PortError> {
    crate::port::dpdk::init(&config.dpdk, devices)
}

#[cfg(feature = "dpdk")]
fn open_dpdk(
    name: &str,
    d: &crate::config::RawDpdkPort,
    cores: usize,
) -> Result<crate::port::OpenedPort, PortError> {
    crate::port::dpdk::open(name, d, cores)
}

#[cfg(not(feature = "dpdk"))]
fn init_dpdk(_config: &Config, _devices: &[&str]) -> Result<(), PortError> {
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk(
    name: &str,
    _d: &crate::config::RawDpdkPort,
    _cores: usize,
) -> Result<crate::port::OpenedPort, PortError> {
    Err(PortError::Config {
        port: name.into(),
        detail: "this nflet was built without DPDK: rebuild with `cargo build --release --features dpdk` \
                 (needs `apt-get install libdpdk-dev libclang-dev`), or `cargo static`"
            .into(),
    })
}
