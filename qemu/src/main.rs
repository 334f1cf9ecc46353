//! `nflet-qemu`: boot the nflet appliance image under QEMU.
//!
//! ```text
//! nflet-qemu --config gw.toml --nic udp:5000:6000 --nic udp:5001:6001 --mgmt 8080:80
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nflet_qemu::{data_nic_address, Accel, Forward, Image, Vm, Wire};

#[derive(Parser, Debug)]
#[command(name = "nflet-qemu", about = "Boot the nflet appliance image under QEMU")]
struct Args {
    /// Directory with the images built by ./images/build.sh.
    #[arg(long, default_value = "images/out")]
    images: PathBuf,
    /// Boot the GPT disk image through UEFI firmware instead of the kernel directly.
    #[arg(long)]
    disk: bool,
    /// With --disk: boot it with a legacy BIOS (SeaBIOS + SYSLINUX) instead of OVMF.
    #[arg(long, requires = "disk")]
    bios: bool,
    /// nflet configuration handed to the guest by fw_cfg.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// A data NIC: `udp:LOCAL:REMOTE` (127.0.0.1 ports) or `tap:IFNAME`. Repeatable; NIC i is
    /// PCI 0000:00:0{4+i}.0 in the guest.
    #[arg(long = "nic", value_parser = parse_wire)]
    nics: Vec<Wire>,
    /// Management NIC with a host port forwarded to a guest port: `HOST:GUEST`. Repeatable.
    #[arg(long = "mgmt", value_parser = parse_forward)]
    mgmt: Vec<Forward>,
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Extra kernel command line (e.g. `nflet.on_error=poweroff nflet.hugepages=256`).
    #[arg(long, default_value = "")]
    append: String,
    /// Write the serial console to this file instead of the terminal.
    #[arg(long)]
    serial: Option<PathBuf>,
    /// QEMU monitor on this Unix socket (`echo system_powerdown | socat - UNIX:PATH`).
    #[arg(long)]
    monitor: Option<PathBuf>,
    /// Use KVM (it must work on this host); the default is TCG.
    #[arg(long)]
    kvm: bool,
    /// Print the QEMU command line instead of running it.
    #[arg(long)]
    dry_run: bool,
}

fn parse_wire(s: &str) -> Result<Wire, String> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        ["udp", l, r] => {
            let port = |p: &str| p.parse::<u16>().map_err(|_| format!("`{p}` is not a UDP port"));
            Ok(Wire::Udp { local: port(l)?, remote: port(r)? })
        }
        ["tap", name] if !name.is_empty() => Ok(Wire::Tap { ifname: (*name).to_string() }),
        _ => Err(format!("`{s}`: expected udp:LOCAL:REMOTE or tap:IFNAME")),
    }
}

fn parse_forward(s: &str) -> Result<Forward, String> {
    let (h, g) = s.split_once(':').ok_or_else(|| format!("`{s}`: expected HOST:GUEST ports"))?;
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("`{p}` is not a TCP port"));
    Ok(Forward::tcp(port(h)?, port(g)?))
}

fn main() -> ExitCode {
    let a = Args::parse();
    let image = if a.disk && a.bios {
        Image::BiosDisk(a.images.join("nflet.img"))
    } else if a.disk {
        Image::Disk(a.images.join("nflet.img"))
    } else {
        Image::Kernel { kernel: a.images.join("vmlinuz"), initrd: a.images.join("initramfs.cpio") }
    };
    let mut vm = Vm::new(image);
    vm.memory_mib = a.memory;
    vm.cpus = a.cpus;
    vm.nics = a.nics;
    vm.mgmt = (!a.mgmt.is_empty()).then_some(a.mgmt);
    vm.config = a.config;
    vm.append = a.append;
    vm.serial = a.serial;
    vm.monitor = a.monitor;
    vm.accel = if a.kvm { Accel::Kvm } else { Accel::Tcg };
    let cmd = vm.command();
    if a.dry_run {
        let args: Vec<String> = cmd.get_args().map(|s| s.to_string_lossy().into_owned()).collect();
        println!("qemu-system-x86_64 {}", args.join(" "));
        return ExitCode::SUCCESS;
    }
    if let Err(e) = vm.check() {
        eprintln!("nflet-qemu: {e}");
        return ExitCode::FAILURE;
    }
    for i in 0..vm.nics.len() {
        eprintln!("nflet-qemu: data NIC {i} is PCI {} in the guest", data_nic_address(i));
    }
    let mut cmd = cmd;
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("nflet-qemu: QEMU exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("nflet-qemu: cannot run QEMU: {e}");
            ExitCode::FAILURE
        }
    }
}
