//! DPDK poll-mode ports: PCI NICs (virtio, ixgbe, i40e, e1000/igb) and virtual devices
//! (memif, af_packet, ring, null, tap), compiled in with the `dpdk` feature.
//!
//! What it promises:
//! - Zero copy: a received frame stays in the DPDK buffer the NIC wrote it to; NFs rewrite it
//!   in place and the same buffer is transmitted. Frames from non-DPDK ports are copied into a
//!   DPDK buffer on transmit.
//! - One receive and one transmit queue per worker core. With several cores, a NIC with RSS
//!   spreads flows with a *symmetric* Toeplitz key (0x6d5a repeated), so both directions of a
//!   flow land on the same core and no software steering is needed. Devices without RSS get
//!   one receive queue, polled by core 0, and nflet steers in software; `net_af_packet` gets
//!   one queue pair per core and the kernel's symmetric fanout hash.
//! - Losses are counted: the NIC's `imissed` (receive queues full: nflet is too slow) and
//!   `rx_nombuf` (no packet buffers) show up as the port's lost frames, and frames spanning
//!   several buffers (larger than a buffer: jumbo frames without a jumbo pool) are dropped and
//!   counted too.
//! - Errors say what to do: no hugepages, a PCI address that does not exist or is bound to a
//!   kernel driver, a device DPDK cannot start, an EAL failure with DPDK's own reason.
//!
//! The EAL is initialised once per process, with `--in-memory` (no files in /dev/hugepages or
//! /var/run, as needed in an initramfs) and the PCI addresses of every configured port on its
//! allow-list (`--no-pci` when there are none). Virtual devices are created when their port
//! opens and removed when it closes, so a process can open and close them repeatedly. Every
//! `unsafe` of the port is in `dpdk/ffi.rs`.

#[path = "dpdk/ffi.rs"]
mod ffi;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use ffi::{DpdkError, Link, Mbuf, Stats};

use super::{BufPool, OpenedPort, PktBuf, PortError, RxQueue, RxStatus, TxQueue};
use crate::config::{RawDpdk, RawDpdkPort};

/// Symmetric RSS: with this key the Toeplitz hash of (src, dst) equals that of (dst, src).
const SYMMETRIC_RSS_KEY_WORD: [u8; 2] = [0x6d, 0x5a];

/// Bytes of packet data per DPDK buffer (plus DPDK's headroom): a 1518-byte frame with tags.
const MBUF_DATA_ROOM: u16 = 2048 + 128;

/// The port's hardware counters are read once per this many `lost()` calls.
const STATS_EVERY: u32 = 1024;

/// Process-wide DPDK state: the EAL outcome and the buffer pool per NUMA socket.
struct Env {
    /// PCI addresses on the EAL allow-list.
    pci: Vec<String>,
    pools: HashMap<i32, ffi::Mempool>,
    mbufs: u32,
}

static ENV: Mutex<Option<Result<Env, String>>> = Mutex::new(None);

use crate::config::is_pci_address as is_pci;

/// The name DPDK gives the port of `device`: the full PCI address (`00:04.0` →
/// `0000:00:04.0`), or a virtual device's name (before its first comma).
fn dpdk_name(device: &str) -> String {
    if is_pci(device) {
        nflet_boot::nics::full_address(device)
    } else {
        device.split(',').next().unwrap_or_default().trim().to_string()
    }
}

/// Free hugepages of the default size, from /proc/meminfo.
fn free_hugepages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| l.strip_prefix("HugePages_Free:")).and_then(|v| v.trim().parse().ok())
}

/// The EAL command line for `settings` and the PCI devices of the configuration.
fn eal_args(settings: &RawDpdk, pci: &[String]) -> Vec<String> {
    // `--in-memory`: no files in /dev/hugepages or /var/run (an initramfs has neither). DPDK
    // refuses it together with `--no-huge`, which implies legacy memory; `--no-shconf` then
    // keeps the shared config out of the file system instead.
    let mut a: Vec<String> = if settings.hugepages {
        vec!["--in-memory".into()]
    } else {
        vec!["--no-huge".into(), "--no-shconf".into()]
    };
    // One EAL lcore for the main thread, allowed on every CPU nflet may use: EAL pins the
    // thread that initialises it, and the worker threads spawned later inherit that.
    let cpus: Vec<String> =
        core_affinity::get_core_ids().unwrap_or_default().iter().map(|c| c.id.to_string()).collect();
    if cpus.is_empty() {
        a.extend(["-l".into(), "0".into()]);
    } else {
        a.extend(["--lcores".into(), format!("0@({})", cpus.join(","))]);
    }
    let mib = if settings.memory_mib == 0 && !settings.hugepages { 256 } else { settings.memory_mib };
    if mib > 0 {
        a.extend(["-m".into(), mib.to_string()]);
    }
    if pci.is_empty() {
        a.push("--no-pci".into());
    }
    for p in pci {
        a.extend(["-a".into(), p.clone()]);
    }
    a.push("--no-telemetry".into());
    a.extend(settings.eal_args.iter().cloned());
    a
}

/// Initialises the EAL (once per process) for the DPDK ports among `devices`.
pub fn init(settings: &RawDpdk, devices: &[&str]) -> Result<(), PortError> {
    let err = |detail: String| PortError::Config { port: "dpdk".into(), detail };
    let pci: Vec<String> = devices.iter().filter(|d| is_pci(d)).map(|d| dpdk_name(d)).collect();
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(state) = env.as_ref() {
        return match state {
            Ok(e) => match pci.iter().find(|p| !e.pci.contains(p)) {
                Some(p) => Err(err(format!(
                    "PCI device {p} was not configured when DPDK started in this process; restart nflet"
                ))),
                None => Ok(()),
            },
            Err(msg) => Err(err(msg.clone())),
        };
    }
    if !Path::new("/sys/devices/system/cpu").exists() {
        return Err(err(
            "DPDK needs sysfs to find CPUs and devices: mount it (`mount -t sysfs sysfs /sys`)".into()
        ));
    }
    if settings.hugepages && free_hugepages().unwrap_or(0) == 0 {
        return Err(err(
            "no free hugepages: reserve some with `echo 512 > /proc/sys/vm/nr_hugepages` (as root), \
             or set `hugepages = false` in [dpdk] to run on normal pages (slower)"
                .into(),
        ));
    }
    let args = eal_args(settings, &pci);
    log::info!("dpdk: {} with EAL arguments: {}", ffi::version(), args.join(" "));
    let outcome = ffi::eal_init(&args)
        .map(|()| Env { pci, pools: HashMap::new(), mbufs: settings.mbufs })
        .map_err(|e| format!("{e}; EAL arguments: {}", args.join(" ")));
    let result = outcome.as_ref().map(|_| ()).map_err(|m| err(m.clone()));
    *env = Some(outcome);
    result
}

/// The buffer pool of NUMA `socket`, created on first use.
fn pool(socket: i32) -> Result<ffi::Mempool, DpdkError> {
    let socket = socket.max(0);
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let Some(Ok(env)) = env.as_mut() else {
        return Err(DpdkError { what: "packet buffers".into(), reason: "DPDK is not initialised".into() });
    };
    if let Some(p) = env.pools.get(&socket) {
        return Ok(*p);
    }
    let p = ffi::Mempool::create(&format!("nflet_mbufs_{socket}"), env.mbufs, MBUF_DATA_ROOM, socket)?;
    env.pools.insert(socket, p);
    Ok(p)
}

/// Why a PCI device is not a DPDK port, with the fix.
fn pci_problem(addr: &str) -> String {
    let dev = Path::new("/sys/bus/pci/devices").join(addr);
    if !dev.exists() {
        return format!("no PCI device {addr} on this machine (see `lspci -D`)");
    }
    let driver = std::fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    match driver {
        Some(d) if d == "vfio-pci" || d == "uio_pci_generic" || d == "igb_uio" => {
            format!("PCI device {addr} is bound to {d} but DPDK did not probe it: is its driver compiled in?")
        }
        Some(d) => format!(
            "PCI device {addr} is bound to the kernel driver {d}; bind it to a DPDK-capable driver: \
             `dpdk-devbind.py --bind=vfio-pci {addr}` (or `modprobe uio_pci_generic` and \
             `dpdk-devbind.py --bind=uio_pci_generic {addr}`)"
        ),
        None => format!(
            "PCI device {addr} has no driver; bind it: `modprobe vfio-pci && dpdk-devbind.py --bind=vfio-pci {addr}`"
        ),
    }
}

/// Closes the device when the last queue of the port is dropped.
#[derive(Debug)]
struct PortGuard {
    id: u16,
    name: String,
    /// The virtual device to remove after closing (`None` for PCI devices).
    vdev: Option<String>,
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        if let Ok(s) = ffi::stats(self.id) {
            log::info!(
                "port {}: closing; NIC counters: rx {} tx {} missed {} no-buffer {} rx-errors {} tx-errors {}",
                self.name,
                s.ipackets,
                s.opackets,
                s.imissed,
                s.rx_nombuf,
                s.ierrors,
                s.oerrors
            );
        }
        // The driver's own loss and error counters, when it has any to report.
        let trouble: Vec<String> = ffi::xstats(self.id)
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, v)| {
                *v > 0 && ["error", "miss", "nombuf", "drop", "fail"].iter().any(|k| n.contains(k))
            })
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if !trouble.is_empty() {
            log::warn!("port {}: driver counters: {}", self.name, trouble.join(" "));
        }
        ffi::stop_and_close(self.id);
        if let Some(v) = &self.vdev {
            ffi::vdev_remove(v);
        }
    }
}

/// Opens the DPDK device of port `name` with one queue pair per core.
pub fn open(name: &str, cfg: &RawDpdkPort, cores: usize) -> Result<OpenedPort, PortError> {
    let dev_err = |e: DpdkError| PortError::Interface {
        port: name.into(),
        iface: cfg.device.clone(),
        detail: e.to_string(),
    };
    let cores16 = u16::try_from(cores).unwrap_or(u16::MAX);
    let dpdk_name = dpdk_name(&cfg.device);
    let vdev = if is_pci(&cfg.device) {
        None
    } else {
        let vname = dpdk_name.clone();
        if ffi::port_by_name(&vname).is_some() {
            return Err(PortError::Config {
                port: name.into(),
                detail: format!("DPDK device {vname} is already in use by another port"),
            });
        }
        let mut spec = cfg.device.trim().to_string();
        // af_packet: one queue pair per core, spread by the kernel's symmetric fanout hash.
        if vname.starts_with("net_af_packet") && !spec.contains("qpairs=") {
            spec.push_str(&format!(",qpairs={cores}"));
        }
        ffi::vdev_create(&spec).map_err(dev_err)?;
        Some(vname)
    };
    let Some(id) = ffi::port_by_name(&dpdk_name) else {
        let detail = if vdev.is_some() {
            format!("DPDK created {dpdk_name} but it is not an Ethernet port")
        } else {
            pci_problem(&dpdk_name)
        };
        if let Some(v) = &vdev {
            ffi::vdev_remove(v);
        }
        return Err(PortError::Interface { port: name.into(), iface: cfg.device.clone(), detail });
    };
    let guard = Arc::new(PortGuard { id, name: name.into(), vdev });
    let info = ffi::dev_info(id).map_err(dev_err)?;
    if info.max_tx_queues < cores16 {
        return Err(PortError::Interface {
            port: name.into(),
            iface: cfg.device.clone(),
            detail: format!(
                "{} offers {} transmit queues; nflet needs one per core ({cores}): lower [appliance] cores",
                info.driver, info.max_tx_queues
            ),
        });
    }
    let wanted = ffi::wanted_rss_types() & info.rss_types;
    let kernel_fanout = info.driver == "net_af_packet";
    let rss = cores > 1 && wanted != 0 && info.max_rx_queues >= cores16;
    let (nrx, steered) = if rss || (kernel_fanout && info.max_rx_queues >= cores16) {
        (cores16, true)
    } else {
        (1, cores == 1)
    };
    let mut key: Vec<u8> =
        SYMMETRIC_RSS_KEY_WORD.iter().copied().cycle().take(usize::from(info.rss_key_size.max(40))).collect();
    let flag = ffi::rx_offload_rss_hash();
    let rss_hash_offload = if rss && info.rx_offloads & flag != 0 { flag } else { 0 };
    ffi::configure(id, nrx, cores16, rss.then_some((key.as_mut_slice(), wanted)), rss_hash_offload)
        .map_err(dev_err)?;
    let pool = pool(info.socket).map_err(dev_err)?;
    for q in 0..nrx {
        ffi::rx_queue_setup(id, q, cfg.rx_desc, info.socket.max(0), pool).map_err(dev_err)?;
    }
    for q in 0..cores16 {
        ffi::tx_queue_setup(id, q, cfg.tx_desc, info.socket.max(0)).map_err(dev_err)?;
    }
    ffi::start(id).map_err(dev_err)?;
    let link = ffi::link(id).map_err(dev_err)?;
    let mac = ffi::mac(id).unwrap_or_default();
    log::info!(
        "port {name}: DPDK {} port {id} ({dpdk_name}), MAC {}, {nrx} receive / {cores} transmit queues{}, link {}",
        info.driver,
        mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        if rss { ", symmetric RSS" } else if kernel_fanout { ", kernel fanout" } else if cores > 1 { ", software steering" } else { "" },
        match (link.up, link.speed_mbps) {
            (false, _) => "down".to_string(),
            // RTE_ETH_SPEED_NUM_UNKNOWN: virtual NICs have no speed.
            (true, u32::MAX | 0) => "up".to_string(),
            (true, s) => format!("up {s} Mbit/s"),
        }
    );
    let rx: Vec<Box<dyn RxQueue>> = (0..nrx)
        .map(|q| {
            Box::new(DpdkRx {
                guard: Arc::clone(&guard),
                queue: q,
                steered,
                scratch: Vec::with_capacity(ffi::MAX_BURST),
                refused: 0,
                hw_lost: Cell::new(0),
                calls: Cell::new(0),
                registered: false,
            }) as Box<dyn RxQueue>
        })
        .collect();
    let tx: Vec<Box<dyn TxQueue>> = (0..cores16)
        .map(|q| {
            Box::new(DpdkTx {
                guard: Arc::clone(&guard),
                queue: q,
                pool,
                staged: Vec::with_capacity(ffi::MAX_BURST),
                no_buffer: 0,
            }) as Box<dyn TxQueue>
        })
        .collect();
    Ok(OpenedPort { name: name.into(), rx, tx })
}

/// Waits until the links of the DPDK ports `(name, device)` are up, at most `timeout`: a
/// memif or a NIC whose cable was just plugged needs a moment, and traffic sent before is
/// lost. Ports still down are reported and the dataplane starts anyway (links come and go).
pub fn wait_links(ports: &[(&str, &str)], timeout: std::time::Duration) {
    let started = std::time::Instant::now();
    let down = || -> Vec<&str> {
        ports.iter().filter(|(_, dev)| !port_state(dev).is_some_and(|(l, _)| l.up)).map(|(n, _)| *n).collect()
    };
    loop {
        let d = down();
        if d.is_empty() {
            return;
        }
        if started.elapsed() >= timeout {
            log::warn!("link down after {} ms: {}; starting anyway", timeout.as_millis(), d.join(", "));
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Link state and counters of the DPDK port `name` opened in this process, for reports.
pub fn port_state(device: &str) -> Option<(Link, Stats)> {
    let id = ffi::port_by_name(&dpdk_name(device))?;
    Some((ffi::link(id).ok()?, ffi::stats(id).ok()?))
}

/// One receive queue of a DPDK port.
struct DpdkRx {
    guard: Arc<PortGuard>,
    queue: u16,
    steered: bool,
    scratch: Vec<Mbuf>,
    /// Frames dropped for spanning several buffers.
    refused: u64,
    /// The NIC's missed + no-buffer count at the last read (queue 0 only).
    hw_lost: Cell<u64>,
    calls: Cell<u32>,
    /// The polling thread is known to DPDK (registered on the first burst).
    registered: bool,
}

impl RxQueue for DpdkRx {
    #[inline]
    fn rx_burst(&mut self, _pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus {
        if !self.registered {
            ffi::register_thread();
            self.registered = true;
        }
        let (n, refused) = ffi::rx_burst(self.guard.id, self.queue, &mut self.scratch, max);
        self.refused += refused as u64;
        out.extend(self.scratch.drain(..).map(PktBuf::from_mbuf));
        RxStatus::Received(n)
    }

    fn steered(&self) -> bool {
        self.steered
    }

    fn lost(&self) -> u64 {
        if self.queue == 0 {
            let calls = self.calls.get().wrapping_add(1);
            self.calls.set(calls);
            if calls % STATS_EVERY == 1 {
                if let Ok(s) = ffi::stats(self.guard.id) {
                    self.hw_lost.set(s.imissed + s.rx_nombuf);
                }
            }
        }
        self.hw_lost.get() + self.refused
    }
}

/// One transmit queue of a DPDK port.
struct DpdkTx {
    guard: Arc<PortGuard>,
    queue: u16,
    pool: ffi::Mempool,
    staged: Vec<Mbuf>,
    /// Frames from other ports not sent for lack of a DPDK buffer to copy them into.
    no_buffer: u64,
}

impl TxQueue for DpdkTx {
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        let mut sent = 0;
        while !pkts.is_empty() {
            let take = pkts.len().min(ffi::MAX_BURST);
            let mut taken = 0;
            for p in pkts.drain(..take) {
                match p.into_mbuf() {
                    Ok(m) => self.staged.push(m),
                    Err(heap) => {
                        // A frame from a non-DPDK port: copy it into a DPDK buffer.
                        let Some(mut m) = self.pool.alloc() else {
                            self.no_buffer += 1;
                            pool.put(heap);
                            continue;
                        };
                        let len = heap.len();
                        if let Some(dst) = m.room_mut().get_mut(..len) {
                            dst.copy_from_slice(heap.data());
                            m.set_len(len);
                            self.staged.push(m);
                        } else {
                            self.no_buffer += 1;
                        }
                        pool.put(heap);
                    }
                }
                taken += 1;
            }
            let n = ffi::tx_burst(self.guard.id, self.queue, &mut self.staged);
            sent += n;
            if !self.staged.is_empty() {
                // The ring is full: what was not sent goes back to the front, in order.
                // (An exact-size iterator: no allocation, `pkts` has the room it was drained of.)
                pkts.splice(0..0, self.staged.drain(..).map(PktBuf::from_mbuf));
                break;
            }
            if taken == 0 {
                break;
            }
        }
        sent
    }
}

impl std::fmt::Debug for DpdkRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkRx").field("port", &self.guard.name).field("queue", &self.queue).finish()
    }
}

impl std::fmt::Debug for DpdkTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpdkTx").field("port", &self.guard.name).field("queue", &self.queue).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_told_from_virtual_devices() {
        for d in ["0000:00:04.0", "00:04.0", "0000:af:1F.7"] {
            assert!(is_pci(d), "{d}");
        }
        for d in
            ["net_memif0", "net_ring0", "00:04.8", "0000:00:04", "net_af_packet0,iface=v", "0000-00:04.0"]
        {
            assert!(!is_pci(d), "{d}");
        }
        assert_eq!(dpdk_name("00:04.0"), "0000:00:04.0");
        assert_eq!(dpdk_name("net_memif0,role=server"), "net_memif0");
    }

    #[test]
    fn eal_arguments_follow_the_settings() {
        let mut s = RawDpdk::default();
        let a = eal_args(&s, &[]);
        assert!(a.contains(&"--in-memory".to_string()) && a.contains(&"--no-pci".to_string()));
        assert!(!a.contains(&"--no-huge".to_string()) && !a.contains(&"-m".to_string()));
        s.hugepages = false;
        let pci = vec!["0000:00:04.0".to_string()];
        let a = eal_args(&s, &pci);
        let joined = a.join(" ");
        assert!(
            joined.contains("--no-huge") && joined.contains("-m 256") && joined.contains("-a 0000:00:04.0"),
            "{joined}"
        );
        assert!(
            !joined.contains("--no-pci") && !joined.contains("--in-memory") && joined.contains("--no-shconf")
        );
    }
}
