#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! Launching the nflet appliance under QEMU, for people and for tests.
//!
//! A [`Vm`] describes one appliance instance: its image (kernel + initramfs, a UKI or a disk
//! image), memory and CPUs, its data NICs and the configuration handed over by fw_cfg.
//! [`Vm::command`] turns it into a QEMU command line; [`Vm::check`] first verifies what can
//! be checked before starting (QEMU installed, image files present, local UDP ports free) and
//! says what to do when something is missing.
//!
//! Data NIC `i` is a `virtio-net-pci` device at PCI address `0000:00:0{4+i}.0`
//! ([`data_nic_address`]), so a configuration can name it as a DPDK port. A NIC is wired to:
//! - `Udp { local, remote }`: a UDP socket on 127.0.0.1 — frames the guest sends arrive as
//!   datagrams at `remote`; datagrams sent to `local` arrive as frames. Two instances are
//!   joined by crossing their ports (generator instance ↔ appliance instance, a chain of K
//!   appliances), and a host program can play the far side;
//! - `Tap { ifname }`: a host tap device (e.g. moved into a network namespace).
//!
//! The management NIC (optional) is QEMU user networking at `0000:00:03.0`, left to the
//! guest kernel's virtio_net, with host port forwards to the guest.
//!
//! Acceleration: KVM only when asked for; the default is TCG with `-cpu max` (DPDK needs
//! SSE4; QEMU's default CPU model lacks it).

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the appliance image is booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Direct kernel boot (fastest): kernel, initramfs, extra command line.
    Kernel { kernel: PathBuf, initrd: PathBuf },
    /// The GPT disk image (UKI on its EFI system partition) booted by OVMF, as a box would.
    Disk(PathBuf),
    /// The same disk image booted by a legacy BIOS (SeaBIOS, QEMU's default) through SYSLINUX.
    BiosDisk(PathBuf),
}

/// What a data NIC is wired to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wire {
    Udp { local: u16, remote: u16 },
    Tap { ifname: String },
}

/// A host port forwarded to the guest's management NIC (TCP unless `udp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
    pub udp: bool,
}

impl Forward {
    pub fn tcp(host: u16, guest: u16) -> Forward {
        Forward { host, guest, udp: false }
    }

    pub fn udp(host: u16, guest: u16) -> Forward {
        Forward { host, guest, udp: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

/// One appliance instance.
#[derive(Debug, Clone)]
pub struct Vm {
    pub image: Image,
    pub memory_mib: u32,
    pub cpus: u32,
    pub nics: Vec<Wire>,
    pub mgmt: Option<Vec<Forward>>,
    /// The nflet configuration, passed as fw_cfg `opt/nflet/config`.
    pub config: Option<PathBuf>,
    /// Appended to the kernel command line (direct kernel boot only).
    pub append: String,
    /// Where the serial console goes: a file, or `None` for QEMU's stdio.
    pub serial: Option<PathBuf>,
    /// A QEMU monitor on a Unix socket (for `system_powerdown`).
    pub monitor: Option<PathBuf>,
    pub accel: Accel,
}

/// The OVMF firmware Debian's `ovmf` package installs.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The PCI address of data NIC `i`.
pub fn data_nic_address(i: usize) -> String {
    format!("0000:00:{:02x}.0", 4 + i)
}

/// Why a VM cannot start, with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchError {
    QemuMissing,
    FileMissing { what: &'static str, path: PathBuf, hint: &'static str },
    PortInUse { port: u16 },
    TooManyNics(usize),
}

impl std::fmt::Display for LaunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaunchError::QemuMissing => {
                write!(f, "qemu-system-x86_64 not found: apt-get install qemu-system-x86 (and ovmf for UKI/disk boot)")
            }
            LaunchError::FileMissing { what, path, hint } => {
                write!(f, "{what} {} not found: {hint}", path.display())
            }
            LaunchError::PortInUse { port } => {
                write!(f, "UDP port 127.0.0.1:{port} is in use: pick another local port for this NIC")
            }
            LaunchError::TooManyNics(n) => write!(f, "{n} data NICs: at most 20 fit on the PCI bus"),
        }
    }
}

impl std::error::Error for LaunchError {}

fn need(what: &'static str, path: &Path, hint: &'static str) -> Result<(), LaunchError> {
    if path.exists() {
        Ok(())
    } else {
        Err(LaunchError::FileMissing { what, path: path.to_path_buf(), hint })
    }
}

const BUILD_HINT: &str = "build the images with ./images/build.sh";

impl Vm {
    /// An instance booting `image` with 1 GiB, 2 CPUs, no NICs, TCG.
    pub fn new(image: Image) -> Vm {
        Vm {
            image,
            memory_mib: 1024,
            cpus: 2,
            nics: Vec::new(),
            mgmt: None,
            config: None,
            append: String::new(),
            serial: None,
            monitor: None,
            accel: Accel::Tcg,
        }
    }

    /// Checks what can be checked before starting.
    pub fn check(&self) -> Result<(), LaunchError> {
        let found =
            Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success());
        if !found {
            return Err(LaunchError::QemuMissing);
        }
        match &self.image {
            Image::Kernel { kernel, initrd } => {
                need("kernel", kernel, BUILD_HINT)?;
                need("initramfs", initrd, BUILD_HINT)?;
            }
            Image::Disk(p) => {
                need("image", p, BUILD_HINT)?;
                need("firmware", Path::new(OVMF), "apt-get install ovmf")?;
            }
            Image::BiosDisk(p) => need("image", p, BUILD_HINT)?,
        }
        if let Some(c) = &self.config {
            need("configuration", c, "pass an existing nflet TOML file")?;
        }
        if self.nics.len() > 20 {
            return Err(LaunchError::TooManyNics(self.nics.len()));
        }
        for w in &self.nics {
            if let Wire::Udp { local, .. } = w {
                if UdpSocket::bind(("127.0.0.1", *local)).is_err() {
                    return Err(LaunchError::PortInUse { port: *local });
                }
            }
        }
        Ok(())
    }

    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let accel = match self.accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        };
        c.args(["-accel", accel, "-cpu", "max", "-nographic", "-vga", "none", "-no-reboot"]);
        c.args(["-m", &self.memory_mib.to_string(), "-smp", &self.cpus.to_string()]);
        match &self.image {
            Image::Kernel { kernel, initrd } => {
                c.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
                let append = format!("console=ttyS0 panic=-1 {}", self.append).trim().to_string();
                c.args(["-append", &append]);
            }
            Image::Disk(p) | Image::BiosDisk(p) => {
                if matches!(self.image, Image::Disk(_)) {
                    c.args(["-bios", OVMF]);
                }
                c.arg("-drive").arg(format!("if=none,id=disk,format=raw,readonly=on,file={}", p.display()));
                // Slot 2, before the data NICs' fixed slots.
                c.args(["-device", "virtio-blk-pci,drive=disk,addr=0x2"]);
            }
        }
        match &self.serial {
            Some(path) => c.arg("-serial").arg(format!("file:{}", path.display())),
            None => c.args(["-serial", "stdio"]),
        };
        if let Some(m) = &self.monitor {
            c.arg("-monitor").arg(format!("unix:{},server,nowait", m.display()));
        } else {
            c.args(["-monitor", "none"]);
        }
        if let Some(cfg) = &self.config {
            c.arg("-fw_cfg").arg(format!("name=opt/nflet/config,file={}", cfg.display()));
        }
        if let Some(fwd) = &self.mgmt {
            let mut netdev = String::from("user,id=mgmt");
            for f in fwd {
                let proto = if f.udp { "udp" } else { "tcp" };
                netdev.push_str(&format!(",hostfwd={proto}:127.0.0.1:{}-:{}", f.host, f.guest));
            }
            c.args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=mgmt,addr=0x3"]);
        }
        for (i, w) in self.nics.iter().enumerate() {
            let netdev = match w {
                Wire::Udp { local, remote } => {
                    format!("socket,id=d{i},udp=127.0.0.1:{remote},localaddr=127.0.0.1:{local}")
                }
                Wire::Tap { ifname } => format!("tap,id=d{i},ifname={ifname},script=no,downscript=no"),
            };
            c.args(["-netdev", &netdev]);
            c.arg("-device").arg(format!(
                "virtio-net-pci,netdev=d{i},addr=0x{:x},mac=52:54:00:00:00:{:02x}",
                4 + i,
                0x10 + i
            ));
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nics_get_fixed_pci_addresses_and_sockets() {
        let mut vm = Vm::new(Image::Kernel { kernel: "k".into(), initrd: "i".into() });
        vm.nics = vec![Wire::Udp { local: 4000, remote: 4001 }, Wire::Tap { ifname: "tap0".into() }];
        vm.config = Some("c.toml".into());
        vm.append = "nflet.on_error=poweroff".into();
        let args: Vec<String> = vm.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = args.join(" ");
        assert!(
            joined.contains("-netdev socket,id=d0,udp=127.0.0.1:4001,localaddr=127.0.0.1:4000"),
            "{joined}"
        );
        assert!(joined.contains("virtio-net-pci,netdev=d0,addr=0x4,"), "{joined}");
        assert!(joined.contains("virtio-net-pci,netdev=d1,addr=0x5,"), "{joined}");
        assert!(joined.contains("-fw_cfg name=opt/nflet/config,file=c.toml"));
        assert!(joined.contains("-append console=ttyS0 panic=-1 nflet.on_error=poweroff"));
        assert!(joined.contains("-accel tcg -cpu max"));
        assert_eq!(data_nic_address(0), "0000:00:04.0");
        assert_eq!(data_nic_address(1), "0000:00:05.0");
    }

    #[test]
    fn missing_files_and_busy_ports_are_explained() {
        let vm = Vm::new(Image::Kernel { kernel: "/nonexistent/vmlinuz".into(), initrd: "i".into() });
        match vm.check() {
            Err(LaunchError::QemuMissing) => {}
            Err(e) => assert!(
                e.to_string().contains("/nonexistent/vmlinuz") && e.to_string().contains("images/build.sh")
            ),
            Ok(()) => panic!("a missing kernel must be refused"),
        }
        let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let dir = std::env::temp_dir();
        let mut vm = Vm::new(Image::Kernel { kernel: dir.clone(), initrd: dir });
        vm.nics = vec![Wire::Udp { local: port, remote: 1 }];
        match vm.check() {
            Err(LaunchError::QemuMissing) => {}
            other => assert_eq!(other, Err(LaunchError::PortInUse { port })),
        }
    }
}
