//! Starting and stopping worker instances.
//!
//! The director decides *when* a worker is needed; a [`Launcher`] makes one exist. nflet ships
//! four: [`ProcessLauncher`] runs `nflet worker` processes on this host, [`QemuLauncher`] boots
//! worker VMs from the appliance image (kernel command line `nflet.worker=N`), [`CommandLauncher`]
//! runs a site's own commands (`{role}` is `worker` or `logger`; a libvirt domain, a Kubernetes scale call, `qemu` through the
//! nflet QEMU launcher, an ssh to another box) with `{id}`, `{addr}` and `{config}` filled in,
//! and [`StaticLauncher`] expects workers that someone else keeps running. A worker counts as
//! ready when its first authenticated hello reaches the director, whoever started it; a worker
//! is stopped by an authenticated stop message, then by the launcher's own means.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

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

/// What an instance serves as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Worker,
    /// The output logger of the worker with the same id (SNF §6).
    Logger,
}

impl Role {
    /// The `nflet` subcommand of the role (also `{role}` in launch commands).
    pub fn command(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Logger => "logger",
        }
    }
}

/// Starts and stops worker instances (and their output loggers).
pub trait Launcher: Send {
    fn start(&mut self, role: Role, id: WorkerId, addr: SocketAddr) -> Result<(), LaunchError>;
    /// Called after the stop message was sent (or the instance was found dead): make sure the
    /// instance is gone.
    fn stop(&mut self, role: Role, id: WorkerId);
}

/// Builds the configured launcher; `config` is the deployment's file, passed to workers.
pub fn from_config(kind: &LauncherKind, config: PathBuf) -> Result<Box<dyn Launcher>, String> {
    Ok(match kind {
        LauncherKind::Process => {
            let exe =
                std::env::current_exe().map_err(|e| format!("cannot find the nflet executable: {e}"))?;
            Box::new(ProcessLauncher { exe, config, children: HashMap::new(), reapers: Vec::new() })
        }
        LauncherKind::Command { launch, stop } => {
            Box::new(CommandLauncher { launch: launch.clone(), stop: stop.clone(), config })
        }
        LauncherKind::Static => Box::new(StaticLauncher),
        LauncherKind::Qemu { kernel, initrd, memory_mib } => {
            let base = config.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
            Box::new(QemuLauncher {
                kernel: base.join(kernel),
                initrd: base.join(initrd),
                memory_mib: *memory_mib,
                config,
                children: HashMap::new(),
                reapers: Vec::new(),
            })
        }
    })
}

/// A started instance: its process and, for a local process, the thread relaying its output.
#[derive(Debug)]
struct Running {
    child: Child,
    relay: Option<JoinHandle<()>>,
}

/// Copies a child's standard output to ours one whole line at a time, so the lines of
/// instances stopping together (their summaries are long) never interleave.
fn relay_lines(out: std::process::ChildStdout) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(out);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let mut stdout = std::io::stdout().lock();
                    let _ = stdout.write_all(&line).and_then(|()| stdout.flush());
                }
            }
        }
    })
}

/// Waits up to `grace` for a stopping instance to exit on its own (it was sent a stop
/// message, which the fabric may lose), asks it again with SIGTERM halfway (it still stops
/// cleanly and prints its counters), then kills it; in the background, so the director's
/// loop never blocks on it.
fn reap(id: WorkerId, mut run: Running, grace: std::time::Duration) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let wait = |child: &mut Child, d: std::time::Duration| {
            let deadline = std::time::Instant::now() + d;
            while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            matches!(child.try_wait(), Ok(None))
        };
        if wait(&mut run.child, grace / 2) {
            let pid = run.child.id().to_string();
            if let Err(e) = Command::new("kill").args(["-TERM", &pid]).status() {
                log::warn!("kill -TERM {pid}: {e}");
            }
        }
        if wait(&mut run.child, grace / 2) {
            log::warn!("worker{} did not stop within {grace:?}; killing it", id.0);
            let _ = run.child.kill();
            let _ = run.child.wait();
        }
        if let Some(r) = run.relay.take() {
            let _ = r.join();
        }
    })
}

/// `nflet worker` child processes.
#[derive(Debug)]
pub struct ProcessLauncher {
    exe: PathBuf,
    config: PathBuf,
    children: HashMap<(Role, WorkerId), Running>,
    reapers: Vec<JoinHandle<()>>,
}

impl Launcher for ProcessLauncher {
    fn start(&mut self, role: Role, id: WorkerId, _addr: SocketAddr) -> Result<(), LaunchError> {
        if let Some(c) = self.children.get_mut(&(role, id)) {
            if matches!(c.child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        let mut child = Command::new(&self.exe)
            .arg(role.command())
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(id.0.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| LaunchError { worker: id, detail: format!("{}: {e}", self.exe.display()) })?;
        let relay = child.stdout.take().map(relay_lines);
        self.children.insert((role, id), Running { child, relay });
        Ok(())
    }

    fn stop(&mut self, role: Role, id: WorkerId) {
        if let Some(child) = self.children.remove(&(role, id)) {
            self.reapers.push(reap(id, child, std::time::Duration::from_secs(2)));
        }
    }
}

/// Stops what is still running (grace `grace`) and waits for every stopping instance.
fn shut_down(
    children: &mut HashMap<(Role, WorkerId), Running>,
    reapers: &mut Vec<JoinHandle<()>>,
    grace: std::time::Duration,
) {
    for ((_, id), child) in children.drain() {
        reapers.push(reap(id, child, grace));
    }
    for r in reapers.drain(..) {
        let _ = r.join();
    }
}

impl Drop for ProcessLauncher {
    fn drop(&mut self) {
        shut_down(&mut self.children, &mut self.reapers, std::time::Duration::from_secs(2));
    }
}

/// Worker and logger VMs under QEMU (KVM when it works, else TCG): the appliance image boots
/// with the deployment's file by fw_cfg and `nflet.worker=N` (or `nflet.logger=N`) on the
/// kernel command line. The VM's
/// management NIC is QEMU user networking: the worker's UDP port is forwarded from the host's
/// loopback, and the guest reaches the host's loopback addresses of `[scale]` through
/// 10.0.2.2 (`nflet.fabric_via`).
#[derive(Debug)]
pub struct QemuLauncher {
    kernel: PathBuf,
    initrd: PathBuf,
    memory_mib: u32,
    config: PathBuf,
    children: HashMap<(Role, WorkerId), Running>,
    reapers: Vec<JoinHandle<()>>,
}

impl Launcher for QemuLauncher {
    fn start(&mut self, role: Role, id: WorkerId, addr: SocketAddr) -> Result<(), LaunchError> {
        let err = |detail: String| LaunchError { worker: id, detail };
        let mut vm = nflet_qemu::Vm::new(nflet_qemu::Image::Kernel {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
        });
        vm.memory_mib = self.memory_mib;
        vm.mgmt = Some(vec![nflet_qemu::Forward::udp(addr.port(), addr.port())]);
        vm.config = Some(self.config.clone());
        let name = role.command();
        vm.serial =
            Some(std::env::temp_dir().join(format!("nflet-{name}{}-{}.log", id.0, std::process::id())));
        vm.append = format!("nflet.{name}={} nflet.fabric_via=10.0.2.2 nflet.on_error=poweroff", id.0);
        vm.check().map_err(|e| err(e.to_string()))?;
        let child = vm.command().spawn().map_err(|e| err(format!("qemu-system-x86_64: {e}")))?;
        if let Some(serial) = &vm.serial {
            log::info!("{name}{} VM booting; serial console in {}", id.0, serial.display());
        }
        self.children.insert((role, id), Running { child, relay: None });
        Ok(())
    }

    fn stop(&mut self, role: Role, id: WorkerId) {
        if let Some(child) = self.children.remove(&(role, id)) {
            // The guest powers off after the worker exits; TCG takes a few seconds.
            self.reapers.push(reap(id, child, std::time::Duration::from_secs(30)));
        }
    }
}

impl Drop for QemuLauncher {
    fn drop(&mut self) {
        shut_down(&mut self.children, &mut self.reapers, std::time::Duration::from_secs(30));
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
    fn expand(&self, template: &str, role: Role, id: WorkerId, addr: Option<SocketAddr>) -> String {
        template
            .replace("{role}", role.command())
            .replace("{id}", &id.0.to_string())
            .replace("{addr}", &addr.map(|a| a.to_string()).unwrap_or_default())
            .replace("{config}", &self.config.display().to_string())
    }
}

impl Launcher for CommandLauncher {
    fn start(&mut self, role: Role, id: WorkerId, addr: SocketAddr) -> Result<(), LaunchError> {
        let cmd = self.expand(&self.launch, role, id, Some(addr));
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

    fn stop(&mut self, role: Role, id: WorkerId) {
        if let Some(t) = &self.stop {
            let cmd = self.expand(t, role, id, None);
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
    fn start(&mut self, _role: Role, _id: WorkerId, _addr: SocketAddr) -> Result<(), LaunchError> {
        Ok(())
    }

    fn stop(&mut self, _role: Role, _id: WorkerId) {}
}
