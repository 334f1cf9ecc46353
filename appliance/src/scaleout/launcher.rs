//! Starting and stopping worker instances.
//!
//! The director decides *when* a worker is needed; a [`Launcher`] makes one exist. nflet ships
//! three: [`ProcessLauncher`] runs `nflet worker` processes on this host, [`CommandLauncher`]
//! runs a site's own commands (a libvirt domain, a Kubernetes scale call, `qemu` through the
//! nflet QEMU launcher, an ssh to another box) with `{id}`, `{addr}` and `{config}` filled in,
//! and [`StaticLauncher`] expects workers that someone else keeps running. A worker counts as
//! ready when its first authenticated hello reaches the director, whoever started it; a worker
//! is stopped by an authenticated stop message, then by the launcher's own means.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};

use nflet_scale::units::WorkerId;

use crate::config::scale::LauncherKind;

/// Why a worker could not be started.
#[derive(Debug)]
pub struct LaunchError {
    pub worker: WorkerId,
    pub detail: String,
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot launch {}: {}", self.worker, self.detail)
    }
}

impl std::error::Error for LaunchError {}

/// Starts and stops worker instances.
pub trait Launcher: Send {
    fn start(&mut self, id: WorkerId, addr: SocketAddr) -> Result<(), LaunchError>;
    /// Called after the stop message was sent: make sure the instance is gone.
    fn stop(&mut self, id: WorkerId);
}

/// Builds the configured launcher; `config` is the deployment's file, passed to workers.
pub fn from_config(kind: &LauncherKind, config: PathBuf) -> Result<Box<dyn Launcher>, String> {
    Ok(match kind {
        LauncherKind::Process => {
            let exe = std::env::current_exe().map_err(|e| format!("cannot find the nflet executable: {e}"))?;
            Box::new(ProcessLauncher { exe, config, children: HashMap::new() })
        }
        LauncherKind::Command { launch, stop } => {
            Box::new(CommandLauncher { launch: launch.clone(), stop: stop.clone(), config })
        }
        LauncherKind::Static => Box::new(StaticLauncher),
    })
}

/// `nflet worker` child processes.
#[derive(Debug)]
pub struct ProcessLauncher {
    exe: PathBuf,
    config: PathBuf,
    children: HashMap<WorkerId, Child>,
}

impl Launcher for ProcessLauncher {
    fn start(&mut self, id: WorkerId, _addr: SocketAddr) -> Result<(), LaunchError> {
        if let Some(c) = self.children.get_mut(&id) {
            if matches!(c.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let child = Command::new(&self.exe)
            .arg("worker")
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(id.0.to_string())
            .spawn()
            .map_err(|e| LaunchError { worker: id, detail: format!("{}: {e}", self.exe.display()) })?;
        self.children.insert(id, child);
        Ok(())
    }

    fn stop(&mut self, id: WorkerId) {
        let Some(mut child) = self.children.remove(&id) else { return };
        // The stop message asked it to exit; give it a moment to print its counters.
        for _ in 0..200 {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        log::warn!("worker{} did not stop within 2 s; killing it", id.0);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ProcessLauncher {
    fn drop(&mut self) {
        let ids: Vec<WorkerId> = self.children.keys().copied().collect();
        for id in ids {
            self.stop(id);
        }
    }
}

/// A site's own commands, run with `sh -c`.
#[derive(Debug)]
pub struct CommandLauncher {
    launch: String,
    stop: Option<String>,
    config: PathBuf,
}

impl CommandLauncher {
    fn expand(&self, template: &str, id: WorkerId, addr: Option<SocketAddr>) -> String {
        template
            .replace("{id}", &id.0.to_string())
            .replace("{addr}", &addr.map(|a| a.to_string()).unwrap_or_default())
            .replace("{config}", &self.config.display().to_string())
    }
}

impl Launcher for CommandLauncher {
    fn start(&mut self, id: WorkerId, addr: SocketAddr) -> Result<(), LaunchError> {
        let cmd = self.expand(&self.launch, id, Some(addr));
        // The command returns once the instance is on its way; readiness is its hello.
        let status = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .map_err(|e| LaunchError { worker: id, detail: format!("`{cmd}`: {e}") })?;
        if status.success() {
            Ok(())
        } else {
            Err(LaunchError { worker: id, detail: format!("`{cmd}` exited with {status}") })
        }
    }

    fn stop(&mut self, id: WorkerId) {
        if let Some(t) = &self.stop {
            let cmd = self.expand(t, id, None);
            if let Err(e) = Command::new("sh").arg("-c").arg(&cmd).status() {
                log::warn!("stop command `{cmd}` for worker{}: {e}", id.0);
            }
        }
    }
}

/// Workers run by someone else: starting one is waiting for its hello.
#[derive(Debug)]
pub struct StaticLauncher;

impl Launcher for StaticLauncher {
    fn start(&mut self, _id: WorkerId, _addr: SocketAddr) -> Result<(), LaunchError> {
        Ok(())
    }

    fn stop(&mut self, _id: WorkerId) {}
}
