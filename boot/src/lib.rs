#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! What nflet does when it is PID 1 — the sole workload of a VM or an edge box, started by
//! the kernel as `/init` from its initramfs.
//!
//! In order ([`start`]):
//! 1. mount proc, sys, devtmpfs, hugetlbfs and tmpfs (`/run`, `/tmp`), and make sure the
//!    console is stdin/stdout/stderr, so logs reach the serial console;
//! 2. read the kernel command line (`nflet.*` parameters, see [`cmdline`]);
//! 3. load the kernel modules listed in `/etc/nflet/modules` (dependencies first, as the
//!    image builder wrote them) with `finit_module`;
//! 4. start reaping orphans and watching for shutdown requests: SIGTERM/SIGINT (QEMU's
//!    `-no-shutdown`, a container runtime, Ctrl-Alt-Del) and the ACPI power button.
//!
//! The appliance then asks for its configuration ([`Boot::config`]: QEMU fw_cfg, the kernel
//! command line, a config partition, the initramfs, the embedded default — in that order,
//! logging which one was used), reserves hugepages ([`Boot::reserve_hugepages`]), binds its
//! data NICs to a DPDK-capable driver ([`Boot::bind_nics`]), configures the management NIC
//! left on the kernel stack ([`Boot::configure_management`]) and runs. At the end — a clean
//! stop or a fatal error — [`Boot::finish`] logs why, syncs and powers off, halts or reboots
//! as configured. PID 1 never returns: the kernel would panic.

pub mod cmdline;
pub mod config;
mod console;
pub mod dhcp;
pub mod mgmt;
mod modules;
mod mounts;
pub mod nics;
mod power;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

pub use cmdline::{Cmdline, OnError};
pub use config::{ConfigSource, Origin};

/// True when this process is PID 1.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// The state of a booted appliance.
#[derive(Debug)]
pub struct Boot {
    pub cmdline: Cmdline,
    stop: Arc<AtomicBool>,
    /// When PID 1 started, for the boot-time log lines.
    pub started: Instant,
}

/// Does the PID-1 set-up that needs no configuration (see the module doc). Never fails:
/// what cannot be done is logged, and the appliance decides whether it can run without it.
pub fn start() -> Boot {
    let started = Instant::now();
    mounts::mount_all();
    console::attach();
    let cmdline = Cmdline::read();
    log::info!("boot: nflet {} is PID 1; kernel command line: {}", env!("CARGO_PKG_VERSION"), cmdline.raw);
    modules::load_listed(std::path::Path::new(modules::LIST));
    let stop = Arc::new(AtomicBool::new(false));
    power::watch(Arc::clone(&stop));
    power::reap_orphans();
    log::info!("boot: PID-1 set-up done in {} ms", started.elapsed().as_millis());
    Boot { cmdline, stop, started }
}

impl Boot {
    /// Set when the appliance must stop: SIGTERM/SIGINT or the power button.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// The configuration to run, from the first source that has one.
    pub fn config(&self) -> ConfigSource {
        config::find(&self.cmdline)
    }

    /// Binds the PCI devices `addrs` (the DPDK ports' `device`s) to `uio_pci_generic` (or
    /// the driver the command line names) so DPDK can drive them.
    pub fn bind_nics(&self, addrs: &[String]) -> Result<(), nics::BindError> {
        nics::bind_all(addrs, &self.cmdline.nic_driver)
    }

    /// Configures the management NIC: link up, static address, default route (see [`mgmt`]).
    /// A failure is logged and the appliance runs on without it: the dataplane does not need
    /// it.
    pub fn configure_management(&self, nic: &mgmt::Interface) {
        if let Err(e) = mgmt::configure(nic) {
            log::error!("boot: {e}; running without the management NIC");
        }
    }

    /// Reserves 2 MiB hugepages: `nflet.hugepages` from the command line, else `wanted` but
    /// at most a quarter of memory.
    pub fn reserve_hugepages(&self, wanted: u64) {
        mounts::reserve_hugepages(
            self.cmdline.hugepages.unwrap_or_else(|| mounts::default_hugepages(wanted)),
        );
    }

    /// Ends PID 1: logs the outcome, syncs, then powers off, halts or reboots (a fatal error
    /// follows `nflet.on_error`, a clean stop powers off).
    pub fn finish(self, outcome: Result<(), String>) -> ! {
        let action = match &outcome {
            Ok(()) => {
                log::info!(
                    "boot: appliance stopped cleanly after {:.1} s",
                    self.started.elapsed().as_secs_f64()
                );
                OnError::Poweroff
            }
            Err(msg) => {
                log::error!("boot: fatal: {msg}");
                self.cmdline.on_error
            }
        };
        power::end(action)
    }
}
