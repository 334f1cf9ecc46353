//! The file systems PID 1 mounts, and hugepage reservation.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// (source, target, type, flags, data)
const MOUNTS: &[(&str, &str, &str, MsFlags, Option<&str>)] = &[
    ("proc", "/proc", "proc", MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC), None),
    ("sysfs", "/sys", "sysfs", MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV).union(MsFlags::MS_NOEXEC), None),
    ("devtmpfs", "/dev", "devtmpfs", MsFlags::MS_NOSUID, Some("mode=0755")),
    ("hugetlbfs", "/dev/hugepages", "hugetlbfs", MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), None),
    ("tmpfs", "/run", "tmpfs", MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), Some("mode=0755")),
    ("tmpfs", "/tmp", "tmpfs", MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV), Some("mode=1777")),
];

/// Mounts everything in [`MOUNTS`]; a file system that is already mounted is fine, any
/// other failure is logged (the appliance may still run without it).
pub fn mount_all() {
    for (src, target, fstype, flags, data) in MOUNTS {
        if let Err(e) = std::fs::create_dir_all(target) {
            log::warn!("boot: cannot create {target}: {e}");
            continue;
        }
        match mount(Some(*src), *target, Some(*fstype), *flags, *data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => log::warn!("boot: mounting {fstype} on {target}: {}", e.desc()),
        }
    }
}

/// Total memory in bytes, from /proc/meminfo.
fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The hugepages to reserve when the command line does not say: `wanted`, but at most a
/// quarter of memory.
pub fn default_hugepages(wanted: u64) -> u64 {
    mem_total().map_or(wanted, |m| wanted.min(m / 4 / (2 << 20)))
}

/// Reserves `pages` 2 MiB hugepages and logs how many the kernel actually gave.
///
/// Pages the kernel reserved at boot (`hugepages=N` on its command line: taken before memory
/// fragments, and off nflet's start-up time) are kept when there are enough; a reservation
/// is never shrunk.
pub fn reserve_hugepages(pages: u64) {
    let knob = Path::new("/proc/sys/vm/nr_hugepages");
    let before = std::fs::read_to_string(knob).ok().and_then(|t| t.trim().parse::<u64>().ok());
    if let Some(have) = before.filter(|&have| have >= pages) {
        log::info!("boot: {have} hugepages of 2 MiB already reserved by the kernel (enough for {pages})");
        return;
    }
    if let Err(e) = std::fs::write(knob, pages.to_string()) {
        log::warn!("boot: cannot reserve {pages} hugepages: {e}");
        return;
    }
    let got = std::fs::read_to_string(knob).unwrap_or_default();
    let got = got.trim();
    if got != pages.to_string() {
        log::warn!(
            "boot: asked for {pages} hugepages, the kernel reserved {got} (memory is short or fragmented)"
        );
    } else {
        log::info!("boot: {pages} hugepages of 2 MiB reserved");
    }
}
