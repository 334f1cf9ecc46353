//! Handing data NICs from their kernel driver to a DPDK-capable one.
//!
//! Per device, through sysfs: unbind it from its current driver, set `driver_override` to
//! the wanted driver and ask the PCI bus to probe it again. Devices not listed (the
//! management NIC) keep their kernel driver.

use std::path::{Path, PathBuf};

/// A NIC that could not be bound, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindError {
    pub device: String,
    pub reason: String,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PCI device {}: {}", self.device, self.reason)
    }
}

impl std::error::Error for BindError {}

const PCI: &str = "/sys/bus/pci";

/// The full PCI address (`00:04.0` → `0000:00:04.0`).
pub fn full_address(addr: &str) -> String {
    if addr.len() == 7 {
        format!("0000:{}", addr.to_ascii_lowercase())
    } else {
        addr.to_ascii_lowercase()
    }
}

/// The driver a device is bound to, if any.
pub fn driver_of(dev: &Path) -> Option<String> {
    std::fs::read_link(dev.join("driver")).ok()?.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Binds every device in `addrs` to `driver`.
pub fn bind_all(addrs: &[String], driver: &str) -> Result<(), BindError> {
    for a in addrs {
        bind(&full_address(a), driver)?;
    }
    Ok(())
}

fn bind(addr: &str, driver: &str) -> Result<(), BindError> {
    let err = |reason: String| BindError { device: addr.to_string(), reason };
    let dev: PathBuf = Path::new(PCI).join("devices").join(addr);
    if !dev.exists() {
        let present: Vec<String> = std::fs::read_dir(Path::new(PCI).join("devices"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        return Err(err(format!("no such device; this machine has: {}", present.join(", "))));
    }
    if !Path::new(PCI).join("drivers").join(driver).exists() {
        return Err(err(format!("driver {driver} is not loaded (add its module to the image)")));
    }
    let current = driver_of(&dev);
    if current.as_deref() == Some(driver) {
        return Ok(());
    }
    std::fs::write(dev.join("driver_override"), driver)
        .map_err(|e| err(format!("setting driver_override: {e}")))?;
    if let Some(cur) = &current {
        std::fs::write(dev.join("driver/unbind"), addr)
            .map_err(|e| err(format!("unbinding from {cur}: {e}")))?;
    }
    std::fs::write(Path::new(PCI).join("drivers_probe"), addr).map_err(|e| err(format!("probing: {e}")))?;
    match driver_of(&dev) {
        Some(d) if d == driver => {
            log::info!(
                "boot: {addr} bound to {driver}{}",
                current.map(|c| format!(" (was {c})")).unwrap_or_default()
            );
            Ok(())
        }
        other => Err(err(format!(
            "{driver} did not take it (now bound to {})",
            other.unwrap_or_else(|| "nothing".into())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_addresses_get_the_domain() {
        assert_eq!(full_address("00:04.0"), "0000:00:04.0");
        assert_eq!(full_address("0000:AF:00.1"), "0000:af:00.1");
    }

    #[test]
    fn a_missing_device_is_named() {
        let e = bind_all(&["0000:ff:1f.7".into()], "uio_pci_generic").unwrap_err();
        assert_eq!(e.device, "0000:ff:1f.7");
        assert!(e.reason.contains("no such device"), "{e}");
    }
}
