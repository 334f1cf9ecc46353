//! The appliance image booted in QEMU (TCG): nflet as PID 1 finds its configuration on
//! fw_cfg, binds its two virtio NICs to uio_pci_generic, NATs frames the host sends into
//! one NIC out of the other, and powers off cleanly on the ACPI power button; a broken
//! configuration is printed on the serial console and the VM powers off. The management NIC
//! (QEMU user networking, left on virtio_net) gets its static address and default route, and
//! the management endpoint answers through a host port forward.
//!
//! The same runs on the specialised kernel (`images/kernel/`: drivers built in, no modules).
//!
//! Needs the images (`cargo static && ./images/build.sh && ./images/build.sh --specialised`,
//! which ./tests/run.sh runs first).
#![cfg(feature = "dpdk")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nflet_qemu::{data_nic_address, Forward, Image, Vm, Wire};
use nflet_tests::{pseudo_v4, sum16};

const PUBLIC: [u8; 4] = [203, 0, 113, 7];
const INSIDE_HOST: [u8; 4] = [10, 0, 0, 5];
const SERVER: [u8; 4] = [198, 51, 100, 1];

fn images() -> PathBuf {
    image_dir("out", &["initramfs.cpio", "nflet.img"], "./images/build.sh")
}

/// The images built on the specialised kernel (`images/kernel/`).
fn specialised_images() -> PathBuf {
    image_dir(
        "out/specialised",
        &["initramfs.cpio", "vmlinuz", "nflet.img"],
        "./images/build.sh --specialised",
    )
}

/// `images/<sub>`, which must hold `files` (else: how to build them).
fn image_dir(sub: &str, files: &[&str], build: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images").join(sub);
    assert!(
        files.iter().all(|f| dir.join(f).exists()),
        "{} has no images: run `cargo static && {build}`",
        dir.display()
    );
    dir
}

fn nat_config() -> String {
    format!(
        r#"
[appliance]
state_arena_mib = 256
hugepages = "off"

[dpdk]
mbufs = 4095

[[port]]
name = "inside"
kind = "dpdk"
device = "{}"

[[port]]
name = "outside"
kind = "dpdk"
device = "{}"

[[nf]]
name = "nat"
kind = "nat"
inside = "inside"
public = ["203.0.113.7"]

[[chain]]
name = "out"
ingress = ["inside"]
steps = ["nat"]
output = "outside"

[[chain]]
name = "in"
ingress = ["outside"]
steps = ["nat"]
output = "inside"
"#,
        data_nic_address(0),
        data_nic_address(1)
    )
}

/// A host UDP socket on a free port, and that port.
fn udp() -> (UdpSocket, u16) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let port = s.local_addr().expect("address").port();
    (s, port)
}

/// A free local UDP port for QEMU's end of a NIC.
fn free_port() -> u16 {
    udp().1
}

/// A free local TCP port for a management forward.
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("tcp socket").local_addr().expect("address").port()
}

/// The management endpoint's token in the boot test's configuration.
const TOKEN: &str = "boot-test-token-0123456789";

/// `GET path` on 127.0.0.1:port; the body of a 200 answer, or why there was none.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: nflet\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| format!("read: {e}"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 ") => Ok(body.to_string()),
        _ => Err(format!("no 200 answer: {text:?}")),
    }
}

/// `http_get`, retried until `accept` takes the body (QEMU accepts the forwarded connection
/// before the guest does, and closes it when nothing listens yet).
fn http_poll(guest: &Guest, port: u16, path: &str, accept: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let got = http_get(port, path);
        match &got {
            Ok(body) if accept(body) => return body.clone(),
            _ if start.elapsed() > Duration::from_secs(30) => {
                panic!("GET {path} through the management forward: {got:?}\n{}", guest.log())
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// A booted guest: QEMU's process, its serial log and monitor.
struct Guest {
    child: Child,
    serial: PathBuf,
    monitor: PathBuf,
    dir: PathBuf,
}

impl Guest {
    fn boot(tag: &str, image: Image, config: &str, nics: Vec<Wire>) -> Guest {
        Guest::boot_with_mgmt(tag, image, config, nics, None)
    }

    fn boot_with_mgmt(
        tag: &str,
        image: Image,
        config: &str,
        nics: Vec<Wire>,
        mgmt: Option<Vec<Forward>>,
    ) -> Guest {
        Guest::boot_with_cmdline(tag, image, config, nics, mgmt, "")
    }

    /// Boots with `append` added to the kernel command line (direct kernel boots only).
    fn boot_with_cmdline(
        tag: &str,
        image: Image,
        config: &str,
        nics: Vec<Wire>,
        mgmt: Option<Vec<Forward>>,
        append: &str,
    ) -> Guest {
        let dir = std::env::temp_dir().join(format!("nflet-boot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = dir.join("nflet.toml");
        std::fs::write(&cfg, config).expect("config");
        let mut vm = Vm::new(image);
        vm.nics = nics;
        vm.mgmt = mgmt;
        vm.config = Some(cfg);
        vm.append = format!("nflet.on_error=poweroff {append}").trim().to_string();
        vm.serial = Some(dir.join("serial.log"));
        vm.monitor = Some(dir.join("monitor.sock"));
        vm.check().unwrap_or_else(|e| panic!("cannot boot: {e}"));
        let child = vm.command().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("qemu");
        Guest { child, serial: dir.join("serial.log"), monitor: dir.join("monitor.sock"), dir }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console shows `needle`; returns the log.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && start.elapsed() < timeout,
                "no `{needle}` on the console ({exited:?}):\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses the ACPI power button until the appliance says it saw it (a press before
    /// the input devices are watched is lost, as on real hardware), then waits for QEMU to
    /// exit: the guest powered off.
    fn power_off(&mut self) -> String {
        let start = Instant::now();
        loop {
            self.power_button();
            let wait = Instant::now();
            while wait.elapsed() < Duration::from_secs(3) {
                if self.log().contains("boot: power button pressed") {
                    return self.wait_exit(Duration::from_secs(60));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the power button was not seen in 60 s of presses:\n{}",
                self.log()
            );
        }
    }

    /// Presses the ACPI power button.
    fn power_button(&self) {
        self.monitor_command(b"system_powerdown\n");
    }

    /// Runs one command on QEMU's human monitor and waits until it has run: the monitor
    /// prints its `(qemu) ` prompt once the connection is ready and again after the command.
    /// (Closing the connection as soon as the command was written, on a loaded host, let
    /// QEMU drop it unread: the guest's ACPI interrupt count then stayed 0 through 30 s of
    /// presses.)
    fn monitor_command(&self, command: &[u8]) {
        const PROMPT: &[u8] = b"(qemu) ";
        let mut m = UnixStream::connect(&self.monitor).expect("monitor");
        m.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut seen = Vec::new();
        let mut wait_prompts = |m: &mut UnixStream, n: usize| {
            let start = Instant::now();
            let mut buf = [0u8; 512];
            while seen.windows(PROMPT.len()).filter(|w| *w == PROMPT).count() < n {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "no monitor prompt in 20 s: {}",
                    String::from_utf8_lossy(&seen)
                );
                if let Ok(k) = m.read(&mut buf) {
                    seen.extend_from_slice(buf.get(..k).unwrap_or_default());
                }
            }
        };
        wait_prompts(&mut m, 1);
        m.write_all(command).expect("monitor command");
        wait_prompts(&mut m, 2);
    }

    /// Waits for QEMU to exit (the guest powered off); returns the console log.
    fn wait_exit(&mut self, timeout: Duration) -> String {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "QEMU failed: {status}\n{}", self.log());
                return self.log();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the guest did not power off within {timeout:?}:\n{}", self.log());
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An Ethernet/IPv4/UDP frame with correct checksums.
fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = vec![0x52, 0x54, 0, 0, 0, 0x10, 0x02, 0, 0, 0, 0, 0x05, 0x08, 0x00];
    let total = (20 + udp_len) as u16;
    let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = !sum16(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = !sum16(&udp, pseudo_v4(&ip, udp_len));
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&udp);
    f
}

/// Checks both checksums of a received IPv4/UDP frame; returns (src, sport, dst, dport).
fn check_udp(f: &[u8]) -> ([u8; 4], u16, [u8; 4], u16) {
    assert_eq!(&f[12..14], &[8, 0], "IPv4");
    let ip = &f[14..34];
    assert_eq!(sum16(ip, 0), 0xffff, "IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let udp = &f[34..14 + total];
    assert_eq!(sum16(udp, pseudo_v4(ip, udp.len())), 0xffff, "UDP checksum");
    let a = |s: &[u8]| [s[0], s[1], s[2], s[3]];
    (
        a(&ip[12..16]),
        u16::from_be_bytes([udp[0], udp[1]]),
        a(&ip[16..20]),
        u16::from_be_bytes([udp[2], udp[3]]),
    )
}

/// Seconds on the kernel's clock of the console line containing `needle` (`[    2.05] ...`).
fn kernel_time(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    line.trim_start_matches('[').split(']').next()?.trim().parse().ok()
}

#[test]
fn appliance_boots_translates_and_powers_off_cleanly() {
    let log = boot_translate_power_off("nat", &images(), "");
    assert!(log.contains("kernel modules loaded (0 failed)"), "{log}");
}

/// The same on the specialised kernel: every driver built in, so PID 1 loads no module, and
/// the hugepages come from the kernel's own `hugepages=` reservation at boot. `pci=noacpi`
/// routes PCI interrupts without ACPI's interpreter, which under TCG made taking each NIC
/// from its kernel driver cost ~0.2 s.
#[test]
fn the_specialised_kernel_boots_translates_and_powers_off_cleanly() {
    let append = "hugepages=128 pci=noacpi";
    let log = boot_translate_power_off("specialised", &specialised_images(), append);
    assert!(log.contains("boot: no /etc/nflet/modules (no modules to load)"), "{log}");
    assert!(log.contains("boot: 128 hugepages of 2 MiB already reserved by the kernel"), "{log}");
    assert!(!log.contains("kernel modules loaded"), "{log}");
}

/// Boots the kernel and initramfs in `dir` with the NAT configuration, checks the management
/// endpoint and translation both ways, presses the power button and checks the clean stop;
/// returns the console log.
fn boot_translate_power_off(tag: &str, dir: &Path, append: &str) -> String {
    // NIC 0 (inside) and NIC 1 (outside), each a pair of host UDP ports.
    let (inside, inside_host) = udp();
    let (outside, outside_host) = udp();
    let (inside_qemu, outside_qemu) = (free_port(), free_port());
    let nics = vec![
        Wire::Udp { local: inside_qemu, remote: inside_host },
        Wire::Udp { local: outside_qemu, remote: outside_host },
    ];
    let image = Image::Kernel { kernel: dir.join("vmlinuz"), initrd: dir.join("initramfs.cpio") };
    // The management NIC: QEMU user networking (guest 10.0.2.15, gateway 10.0.2.2).
    let http = free_tcp_port();
    let config = format!(
        "{}\n[management]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\nlisten = 8080\ntoken = \"{TOKEN}\"\n",
        nat_config()
    );
    let mgmt = Some(vec![Forward::tcp(http, 8080)]);
    let mut guest = Guest::boot_with_cmdline(tag, image, &config, nics, mgmt, append);
    let log = guest.wait_for("ports up: inside, outside", Duration::from_secs(120));
    assert!(log.contains("boot: configuration from fw_cfg:opt/nflet/config"), "{log}");
    assert!(log.contains("0000:00:04.0 bound to uio_pci_generic"), "{log}");
    for line in [
        "boot: management NIC eth0: address 10.0.2.15/24",
        "boot: management NIC eth0: default route via 10.0.2.2",
        "management endpoint on http://10.0.2.15:8080/",
    ] {
        assert!(log.contains(line), "missing `{line}`:\n{log}");
    }

    // The management endpoint answers through the host forward and names the ports.
    let body = http_poll(&guest, http, "/status", |_| true);
    let status: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
    let names: Vec<&str> =
        status["ports"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["inside", "outside"], "{status}");
    assert_eq!(status["chains"][0]["name"], "out", "{status}");

    // Outbound: 20 datagrams from two inside ports leave from the public address.
    for timeout in [
        inside.set_read_timeout(Some(Duration::from_secs(10))),
        outside.set_read_timeout(Some(Duration::from_secs(10))),
    ] {
        timeout.expect("timeout");
    }
    for i in 0..20u16 {
        let f = udp_frame(INSIDE_HOST, 40000 + i % 2, SERVER, 53, format!("query {i}").as_bytes());
        inside.send_to(&f, ("127.0.0.1", inside_qemu)).expect("send");
    }
    let mut public_ports = std::collections::BTreeSet::new();
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        let (n, _) =
            outside.recv_from(&mut buf).unwrap_or_else(|e| panic!("outbound frame: {e}\n{}", guest.log()));
        let (src, sport, dst, dport) = check_udp(&buf[..n]);
        assert_eq!((src, dst, dport), (PUBLIC, SERVER, 53));
        public_ports.insert(sport);
    }
    assert_eq!(public_ports.len(), 2, "one public port per inside endpoint");

    // Inbound: a reply to each public port reaches the inside host's original port.
    for (i, p) in public_ports.iter().enumerate() {
        let f = udp_frame(SERVER, 53, PUBLIC, *p, format!("answer {i}").as_bytes());
        outside.send_to(&f, ("127.0.0.1", outside_qemu)).expect("send");
    }
    let mut back = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let (n, _) =
            inside.recv_from(&mut buf).unwrap_or_else(|e| panic!("inbound frame: {e}\n{}", guest.log()));
        let (src, sport, dst, dport) = check_udp(&buf[..n]);
        assert_eq!((src, sport, dst), (SERVER, 53, INSIDE_HOST));
        back.insert(dport);
    }
    assert_eq!(back, [40000u16, 40001].into_iter().collect());

    // The endpoint's counters follow the dataplane's (published every 100 ms).
    let metrics = http_poll(&guest, http, "/metrics", |m| {
        m.contains("nflet_port_rx_packets_total{port=\"outside\"} 2\n")
    });
    for line in [
        "nflet_port_rx_packets_total{port=\"inside\"} 20",
        "nflet_port_tx_packets_total{port=\"outside\"} 20",
        "nflet_port_tx_packets_total{port=\"inside\"} 2",
        "nflet_chain_packets_total{chain=\"out\",tenant=\"out\"} 20",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing `{line}` in /metrics:\n{metrics}");
    }

    let log = guest.power_off();
    assert!(log.contains("boot: power button pressed; stopping"), "{log}");
    for line in [
        "new_mappings=2",
        "inside       rx           20 tx            2",
        "boot: appliance stopped cleanly",
        "boot: powering off",
        "reboot: Power down",
    ] {
        assert!(log.contains(line), "missing `{line}`:\n{log}");
    }
    if let Some(init) = kernel_time(&log, "Run /init as init process") {
        println!("kernel start → PID 1: {init:.2} s (guest clock, TCG)");
    }
    if let Some(l) = log.lines().find(|l| l.contains("ms after PID 1 started")) {
        println!("{tag}: {l}");
    }
    if let (Some(pid1), Some(up)) = (log_time(&log, "is PID 1"), log_time(&log, "ports up:")) {
        println!("{tag}: PID 1 → ports up: {:.0} ms (guest clock, TCG)", (up - pid1) * 1000.0);
    }
    log
}

/// Seconds into the day of nflet's log line containing `needle` (`[2026-12-02T06:08:25.101Z ...`).
fn log_time(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle) && l.starts_with("[20"))?;
    let clock = line.get(12..24)?; // 06:08:25.101
    let mut parts = clock.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

#[test]
fn a_broken_configuration_is_printed_and_the_vm_powers_off() {
    let dir = images();
    let image = Image::Kernel { kernel: dir.join("vmlinuz"), initrd: dir.join("initramfs.cpio") };
    let mut guest = Guest::boot("broken", image, "[appliance]\ncores = 1\nburst = \"lots\"\n", Vec::new());
    let log = guest.wait_exit(Duration::from_secs(120));
    assert!(
        log.contains("boot: fatal: fw_cfg:opt/nflet/config:3:"),
        "the error names the source and line:\n{log}"
    );
    assert!(log.contains("burst"), "{log}");
    assert!(log.contains("reboot: Power down"), "{log}");
    assert!(!log.contains("Kernel panic"), "{log}");
}

#[test]
fn the_disk_image_boots_under_uefi() {
    let dir = images();
    let nics = unconnected_nics();
    // The management NIC leases its address from QEMU's user-network DHCP server.
    let http = free_tcp_port();
    let config = format!("{}\n[management]\naddress = \"dhcp\"\nlisten = 8080\n", nat_config());
    let mgmt = Some(vec![Forward::tcp(http, 8080)]);
    let mut guest = Guest::boot_with_mgmt("disk", Image::Disk(dir.join("nflet.img")), &config, nics, mgmt);
    let log = guest.wait_for("ports up: inside, outside", Duration::from_secs(180));
    assert!(log.contains("boot: configuration from fw_cfg:opt/nflet/config"), "{log}");
    assert!(
        log.contains("boot: management NIC eth0: DHCP lease 10.0.2.15/24 router 10.0.2.2 from 10.0.2.2"),
        "{log}"
    );
    let body = http_poll(&guest, http, "/status", |_| true);
    assert!(body.contains("\"inside\""), "{body}");
    // The power button under OVMF.
    let log = guest.power_off();
    for line in ["boot: appliance stopped cleanly", "reboot: Power down"] {
        assert!(log.contains(line), "missing `{line}`:\n{log}");
    }
}

/// The specialised kernel's disk image under UEFI: the UKI (under 8 MB) boots through the
/// kernel's own EFI stub to a running appliance.
#[test]
fn the_specialised_disk_image_boots_under_uefi() {
    let dir = specialised_images();
    let uki = std::fs::metadata(dir.join("nflet.efi")).expect("nflet.efi").len();
    println!("specialised UKI: {uki} bytes");
    let log = boot_to_ports_up("specialised-disk", Image::Disk(dir.join("nflet.img")));
    assert!(log.contains("boot: no /etc/nflet/modules (no modules to load)"), "{log}");
}

/// The same disk image on a legacy-BIOS machine: SeaBIOS runs the GPT MBR code, which starts
/// SYSLINUX from the EFI system partition, which boots the kernel and initramfs stored beside
/// the UKI.
#[test]
fn the_disk_image_boots_under_bios() {
    let log = boot_to_ports_up("bios", Image::BiosDisk(images().join("nflet.img")));
    assert!(log.contains("0000:00:04.0 bound to uio_pci_generic"), "{log}");
}

/// Two data NICs on host UDP ports nobody sends to (boots that only check start-up).
fn unconnected_nics() -> Vec<Wire> {
    vec![
        Wire::Udp { local: free_port(), remote: free_port() },
        Wire::Udp { local: free_port(), remote: free_port() },
    ]
}

/// Boots `image` with the NAT configuration on fw_cfg until its ports are up, checks that the
/// configuration came from fw_cfg, stops QEMU, and returns the console log.
fn boot_to_ports_up(tag: &str, image: Image) -> String {
    let mut guest = Guest::boot(tag, image, &nat_config(), unconnected_nics());
    let log = guest.wait_for("ports up: inside, outside", Duration::from_secs(180));
    assert!(log.contains("boot: configuration from fw_cfg:opt/nflet/config"), "{log}");
    log
}
