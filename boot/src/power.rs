//! Shutdown requests, orphan reaping and the end of PID 1.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::reboot::{reboot, set_cad_enabled, RebootMode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::OnError;

/// Linux input events: `struct input_event` on 64-bit (timeval, type, code, value).
const INPUT_EVENT_SIZE: usize = 24;
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// Sets `stop` on SIGTERM, SIGINT (Ctrl-Alt-Del, once the kernel is told to send it) and a
/// press of the ACPI power button (QEMU's `system_powerdown`).
pub fn watch(stop: Arc<AtomicBool>) {
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            log::warn!("boot: cannot handle signal {sig}: {e}");
        }
    }
    if let Err(e) = set_cad_enabled(false) {
        log::warn!("boot: Ctrl-Alt-Del stays a hard reboot: {}", e.desc());
    }
    // Input devices appear asynchronously after their modules load: keep looking for new
    // ones and watch each from its own thread.
    let spawned = std::thread::Builder::new().name("nflet-inputs".into()).spawn(move || {
        let mut watched = std::collections::HashSet::new();
        let mut listed = String::new();
        loop {
            for path in event_devices() {
                if watched.insert(path.clone()) {
                    watch_device(path, Arc::clone(&stop));
                }
            }
            // Which input device has which event node, whenever that changes (to tell why a
            // power button press is not seen).
            let now = input_devices();
            if now != listed {
                log::info!("boot: input devices: {now}");
                listed = now;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    if let Err(e) = spawned {
        log::warn!("boot: cannot watch the power button: {e}");
    }
}

/// The kernel's input devices as `name (handlers)`, from /proc/bus/input/devices.
fn input_devices() -> String {
    let text = std::fs::read_to_string("/proc/bus/input/devices").unwrap_or_default();
    let mut out = Vec::new();
    let mut name = "";
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("N: Name=") {
            name = n.trim_matches('"');
        } else if let Some(h) = line.strip_prefix("H: Handlers=") {
            out.push(format!("{name} ({})", h.trim()));
        }
    }
    out.join(", ")
}

/// /dev/input/event* as they are now.
fn event_devices() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/dev/input")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("event")))
                .collect()
        })
        .unwrap_or_default()
}

/// Reads input events from `path` and sets `stop` when the power key is pressed.
fn watch_device(path: std::path::PathBuf, stop: Arc<AtomicBool>) {
    let name = path.display().to_string();
    let spawned = std::thread::Builder::new().name("nflet-power".into()).spawn(move || {
        let Ok(mut dev) = std::fs::File::open(&path) else { return };
        log::info!("boot: watching {} for the power button", path.display());
        let mut ev = [0u8; INPUT_EVENT_SIZE];
        while dev.read_exact(&mut ev).is_ok() {
            let kind = u16::from_ne_bytes([ev[16], ev[17]]);
            let code = u16::from_ne_bytes([ev[18], ev[19]]);
            let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
            if kind == EV_KEY && code == KEY_POWER && value == 1 {
                log::info!("boot: power button pressed; stopping");
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
    if let Err(e) = spawned {
        log::warn!("boot: cannot watch {name}: {e}");
    }
}

/// Reaps orphaned processes re-parented to PID 1, so they do not linger as zombies.
pub fn reap_orphans() {
    let spawned = std::thread::Builder::new().name("nflet-reaper".into()).spawn(|| loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => std::thread::sleep(Duration::from_millis(500)),
            Ok(status) => log::debug!("boot: reaped {status:?}"),
        }
    });
    if let Err(e) = spawned {
        log::warn!("boot: cannot start the orphan reaper: {e}");
    }
}

/// Syncs and powers off, halts or reboots; never returns.
pub fn end(action: OnError) -> ! {
    nix::unistd::sync();
    let mode = match action {
        OnError::Poweroff => RebootMode::RB_POWER_OFF,
        OnError::Halt => RebootMode::RB_HALT_SYSTEM,
        OnError::Reboot => RebootMode::RB_AUTOBOOT,
    };
    log::info!(
        "boot: {}",
        match action {
            OnError::Poweroff => "powering off",
            OnError::Halt => "halting (the reason is above)",
            OnError::Reboot => "rebooting",
        }
    );
    let Err(e) = reboot(mode);
    log::error!("boot: {mode:?} failed: {}; halting here", e.desc());
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
