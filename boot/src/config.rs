//! Where the appliance's configuration comes from, in order of preference:
//! 1. QEMU fw_cfg: `-fw_cfg name=opt/nflet/config,file=nflet.toml`;
//! 2. the kernel command line: `nflet.config=<base64 TOML>`;
//! 3. a config partition: the first FAT file system on a block device with `nflet.toml` at
//!    its root (a USB stick, or a partition of the boot disk);
//! 4. the initramfs: `/etc/nflet/nflet.toml` (baked in by `images/build.sh --config`);
//! 5. nflet's embedded default.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};

/// The QEMU fw_cfg item nflet reads.
pub const FW_CFG: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/nflet/config/raw";
/// The configuration baked into the initramfs.
pub const BAKED: &str = "/etc/nflet/nflet.toml";
const PARTITION_MOUNT: &str = "/mnt/config";
const PARTITION_FILE: &str = "nflet.toml";

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    FwCfg,
    Cmdline,
    /// A file system on this block device.
    Partition(String),
    Initramfs,
    Embedded,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::FwCfg => write!(f, "fw_cfg:opt/nflet/config"),
            Origin::Cmdline => write!(f, "kernel command line (nflet.config)"),
            Origin::Partition(dev) => write!(f, "{dev}:/{PARTITION_FILE}"),
            Origin::Initramfs => write!(f, "initramfs:{BAKED}"),
            Origin::Embedded => write!(f, "<embedded default>"),
        }
    }
}

/// A configuration and where it came from; `text` is `None` for the embedded default.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub origin: Origin,
    pub text: Option<Result<String, String>>,
}

/// Finds the configuration (see the module doc) and logs which source was used.
pub fn find(cmdline: &crate::Cmdline) -> ConfigSource {
    let src = if let Ok(t) = std::fs::read_to_string(FW_CFG) {
        ConfigSource { origin: Origin::FwCfg, text: Some(Ok(t)) }
    } else if let Some(t) = &cmdline.config {
        ConfigSource { origin: Origin::Cmdline, text: Some(t.clone()) }
    } else if let Some((dev, t)) = from_partition() {
        ConfigSource { origin: Origin::Partition(dev), text: Some(Ok(t)) }
    } else if let Ok(t) = std::fs::read_to_string(BAKED) {
        ConfigSource { origin: Origin::Initramfs, text: Some(Ok(t)) }
    } else {
        ConfigSource { origin: Origin::Embedded, text: None }
    };
    log::info!("boot: configuration from {}", src.origin);
    src
}

/// Block devices (whole disks and partitions) in /sys/class/block, sorted.
fn block_devices() -> Vec<String> {
    let mut devs: Vec<String> = std::fs::read_dir("/sys/class/block")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    devs.retain(|d| !d.starts_with("loop") && !d.starts_with("ram"));
    devs.sort();
    devs
}

/// The first FAT file system holding nflet.toml.
fn from_partition() -> Option<(String, String)> {
    let mnt = PathBuf::from(PARTITION_MOUNT);
    std::fs::create_dir_all(&mnt).ok()?;
    for dev in block_devices() {
        let node = Path::new("/dev").join(&dev);
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if mount(Some(&node), &mnt, Some("vfat"), flags, None::<&str>).is_err() {
            continue;
        }
        let text = std::fs::read_to_string(mnt.join(PARTITION_FILE));
        let _ = umount(&mnt);
        if let Ok(t) = text {
            return Some((node.display().to_string(), t));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_name_their_source() {
        assert_eq!(Origin::FwCfg.to_string(), "fw_cfg:opt/nflet/config");
        assert_eq!(Origin::Partition("/dev/vdb1".into()).to_string(), "/dev/vdb1:/nflet.toml");
        assert_eq!(Origin::Initramfs.to_string(), "initramfs:/etc/nflet/nflet.toml");
    }
}
