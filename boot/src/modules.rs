//! Loading the kernel modules the image builder put in the initramfs.

use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// The list of modules to load, one absolute path per line, dependencies first.
pub const LIST: &str = "/etc/nflet/modules";

/// Loads every module in `list`, in order. A module already loaded (or built into the kernel)
/// is fine; other failures are logged and the rest still load.
pub fn load_listed(list: &Path) {
    let Ok(text) = std::fs::read_to_string(list) else {
        log::info!("boot: no {} (no modules to load)", list.display());
        return;
    };
    let started = std::time::Instant::now();
    let (mut loaded, mut failed) = (0, 0);
    for path in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match load(Path::new(path)) {
            Ok(()) => loaded += 1,
            Err(e) => {
                failed += 1;
                log::warn!("boot: module {path}: {e}");
            }
        }
    }
    log::info!(
        "boot: {loaded} kernel modules loaded ({failed} failed) in {} ms",
        started.elapsed().as_millis()
    );
}

fn load(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.desc().to_string()),
    }
}
