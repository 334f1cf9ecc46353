//! A real Linux IPsec peer for interoperability tests: the Debian kernel's xfrm stack (ESP,
//! tunnel mode, `rfc4106(gcm(aes))`, RFC 4303/4106) in a small QEMU guest.
//!
//! The host kernel may have no ESP or GCM, so the peer runs as a guest booted from
//! `images/out/peer-vmlinuz` + `images/out/peer-initramfs.cpio.gz` (built by
//! `./images/peer/build.sh`): busybox, iproute2's `ip` and the xfrm/crypto modules.
//!
//! Wiring: a [`PeerNetns`] is a host network namespace with bridges in it. Each NIC of a
//! [`PeerVm`] is a tap device created in that namespace and enslaved to a bridge; QEMU runs in
//! the namespace (`ip netns exec`). Anything else plugged into the same bridge (a veth from
//! one of nflet's ports, a second peer) is on the guest's Ethernet segment.
//!
//! Control: the guest's serial console is a shell. [`PeerVm::exec`] writes one command,
//! framed by a start and an end marker that carries the exit status, and reads the console
//! until the end marker; a timeout reports the console log so far.
//! [`PeerVm::configure_tunnel`] sets up addresses, both SAs, the policies and the route of
//! one ESP tunnel from a [`TunnelSpec`].
//!
//! The VM is killed and its taps are removed on drop; the namespace goes with its
//! [`PeerNetns`].

use std::collections::hash_map::DefaultHasher;
use std::fmt::{self, Write as _};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The command that builds the peer guest.
pub const BUILD_COMMAND: &str = "./images/peer/build.sh";

/// The console text kept in error messages (the tail, in bytes).
const LOG_TAIL: usize = 6000;

/// Why the peer could not be started or driven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerError {
    /// Network namespaces and taps need root.
    NotRoot,
    QemuMissing,
    /// The kernel or the initramfs is not there.
    ImageMissing {
        what: &'static str,
        path: PathBuf,
    },
    /// A host command (`ip ...`) failed.
    Host {
        cmd: String,
        output: String,
    },
    /// QEMU could not be started, or its console could not be written.
    Io {
        what: String,
        error: String,
    },
    /// Nothing came back in time.
    Timeout {
        what: String,
        waited: Duration,
        console: String,
    },
    /// QEMU exited.
    Exited {
        console: String,
    },
    /// A guest command ran and returned a non-zero status.
    Failed {
        cmd: String,
        status: i32,
        output: String,
    },
    /// A [`TunnelSpec`] that cannot be configured.
    BadSpec(String),
    /// Guest output that does not have the expected shape.
    Parse {
        what: String,
        text: String,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::NotRoot => write!(f, "the IPsec peer needs root (network namespaces, tap devices)"),
            PeerError::QemuMissing => {
                write!(f, "qemu-system-x86_64 not found: apt-get install qemu-system-x86")
            }
            PeerError::ImageMissing { what, path } => write!(
                f,
                "peer {what} {} not found: build the peer guest with {BUILD_COMMAND}",
                path.display()
            ),
            PeerError::Host { cmd, output } => write!(f, "host command `{cmd}` failed: {output}"),
            PeerError::Io { what, error } => write!(f, "{what}: {error}"),
            PeerError::Timeout { what, waited, console } => {
                write!(f, "peer: no answer to {what} after {waited:?}; console so far:\n{console}")
            }
            PeerError::Exited { console } => write!(f, "peer: QEMU exited; console:\n{console}"),
            PeerError::Failed { cmd, status, output } => {
                write!(f, "peer: `{cmd}` exited with status {status}:\n{output}")
            }
            PeerError::BadSpec(why) => write!(f, "tunnel spec: {why}"),
            PeerError::Parse { what, text } => write!(f, "peer: cannot read {what} from:\n{text}"),
        }
    }
}

impl std::error::Error for PeerError {}

/// Runs a host command, returning its stdout or a [`PeerError::Host`].
fn host(args: &[&str]) -> Result<String, PeerError> {
    let cmd = args.join(" ");
    let Some((prog, rest)) = args.split_first() else {
        return Err(PeerError::Host { cmd, output: "empty command".into() });
    };
    let out = Command::new(prog)
        .args(rest)
        .output()
        .map_err(|e| PeerError::Host { cmd: cmd.clone(), output: e.to_string() })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let output =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Err(PeerError::Host { cmd, output: output.trim().to_string() })
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A host network namespace holding the bridges the peers' taps are plugged into. Deleted,
/// with everything in it, on drop.
#[derive(Debug)]
pub struct PeerNetns {
    pub name: String,
}

impl PeerNetns {
    /// Creates namespace `name` (with `lo` up).
    pub fn new(name: &str) -> Result<PeerNetns, PeerError> {
        if !is_root() {
            return Err(PeerError::NotRoot);
        }
        // A namespace left behind by a killed run of the same test would make `add` fail.
        let _ = host(&["ip", "netns", "del", name]);
        host(&["ip", "netns", "add", name])?;
        let ns = PeerNetns { name: name.to_string() };
        host(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Adds a bridge (no STP: ports forward at once) and brings it up.
    pub fn add_bridge(&self, bridge: &str) -> Result<(), PeerError> {
        host(&["ip", "-n", &self.name, "link", "add", bridge, "type", "bridge", "stp_state", "0"])?;
        host(&["ip", "-n", &self.name, "link", "set", bridge, "up"])?;
        Ok(())
    }

    /// Plugs a veth pair into `bridge`: `outside` stays in the root namespace (for an nflet
    /// port), its peer `inside` is enslaved to the bridge. Offloads are off on both ends, so
    /// frames cross as they are on the wire (no GSO super-frames, complete checksums).
    pub fn plug_veth(&self, bridge: &str, outside: &str, inside: &str) -> Result<(), PeerError> {
        let ns = self.name.as_str();
        host(&["ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns])?;
        host(&["ip", "-n", ns, "link", "set", inside, "master", bridge])?;
        host(&["ip", "-n", ns, "link", "set", inside, "up"])?;
        host(&["ip", "link", "set", outside, "up"])?;
        let off = ["tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off"];
        let mut a = vec!["ip", "netns", "exec", ns, "ethtool", "-K", inside];
        a.extend(off);
        host(&a)?;
        let mut b = vec!["ethtool", "-K", outside];
        b.extend(off);
        host(&b)?;
        Ok(())
    }

    /// `cmd` prefixed with `ip netns exec <name>`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for PeerNetns {
    fn drop(&mut self) {
        let _ = host(&["ip", "netns", "del", &self.name]);
    }
}

/// One guest NIC: `tap` is created in the namespace and enslaved to `bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerNic {
    pub tap: String,
    pub bridge: String,
    pub mac: [u8; 6],
}

/// How to boot a peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Names the VM in messages and derives its MAC addresses.
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub memory_mib: u32,
    /// NIC `i` is the guest's `eth<i>`.
    pub nics: Vec<PeerNic>,
    pub boot_timeout: Duration,
}

/// `images/out` of this checkout.
pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/out")
}

impl PeerConfig {
    /// A peer named `name` booting the images of this checkout, 256 MiB, no NICs yet.
    pub fn new(name: &str) -> PeerConfig {
        let dir = images_dir();
        PeerConfig {
            name: name.to_string(),
            kernel: dir.join("peer-vmlinuz"),
            initrd: dir.join("peer-initramfs.cpio.gz"),
            memory_mib: 256,
            nics: Vec::new(),
            boot_timeout: Duration::from_secs(90),
        }
    }

    /// Adds a NIC on `bridge` through tap `tap`, with a locally administered MAC derived from
    /// the VM name and the NIC index.
    pub fn nic(mut self, tap: &str, bridge: &str) -> PeerConfig {
        let mut h = DefaultHasher::new();
        self.name.hash(&mut h);
        let b = h.finish().to_be_bytes();
        let i = u8::try_from(self.nics.len()).unwrap_or(u8::MAX);
        let mac = [0x52, 0x54, b[0], b[1], b[2], i];
        self.nics.push(PeerNic { tap: tap.to_string(), bridge: bridge.to_string(), mac });
        self
    }
}

/// The serial console as read so far.
#[derive(Debug, Default)]
struct ConsoleBuf {
    bytes: Vec<u8>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Console {
    buf: Mutex<ConsoleBuf>,
    more: Condvar,
}

impl Console {
    fn lock(&self) -> MutexGuard<'_, ConsoleBuf> {
        // A reader thread cannot panic while holding the lock; recover the data if it did.
        self.buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pump(self: Arc<Self>, mut from: impl Read + Send + 'static) {
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                let n = from.read(&mut chunk).unwrap_or(0);
                let mut b = self.lock();
                if n == 0 {
                    b.closed = true;
                    self.more.notify_all();
                    return;
                }
                b.bytes.extend(chunk.iter().take(n).filter(|&&c| c != b'\r'));
                self.more.notify_all();
            }
        });
    }

    fn tail(&self) -> String {
        let b = self.lock();
        let start = b.bytes.len().saturating_sub(LOG_TAIL);
        String::from_utf8_lossy(b.bytes.get(start..).unwrap_or_default()).into_owned()
    }

    /// Waits until `needle` appears at or after byte `from`; returns the offset just past it.
    fn wait_for(&self, needle: &[u8], from: usize, deadline: Instant) -> Result<usize, bool> {
        let mut b = self.lock();
        loop {
            if let Some(rest) = b.bytes.get(from..) {
                if let Some(pos) = rest.windows(needle.len()).position(|w| w == needle) {
                    return Ok(from + pos + needle.len());
                }
            }
            if b.closed {
                return Err(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(false);
            }
            b = self
                .more
                .wait_timeout(b, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A running peer guest.
#[derive(Debug)]
pub struct PeerVm {
    pub name: String,
    netns: String,
    taps: Vec<String>,
    child: Child,
    stdin: Mutex<ChildStdin>,
    console: Arc<Console>,
    /// Default time limit of [`PeerVm::exec`].
    pub timeout: Duration,
}

impl PeerVm {
    /// Creates the taps in `netns`, boots the guest there and waits for its shell.
    pub fn boot(netns: &PeerNetns, cfg: &PeerConfig) -> Result<PeerVm, PeerError> {
        if !is_root() {
            return Err(PeerError::NotRoot);
        }
        let qemu_ok =
            Command::new("qemu-system-x86_64").arg("--version").output().is_ok_and(|o| o.status.success());
        if !qemu_ok {
            return Err(PeerError::QemuMissing);
        }
        for (what, path) in [("kernel", &cfg.kernel), ("initramfs", &cfg.initrd)] {
            if !path.exists() {
                return Err(PeerError::ImageMissing { what, path: path.clone() });
            }
        }
        let mut taps = Vec::new();
        let mut created = Vec::new();
        let cleanup = |created: &[String]| {
            for t in created {
                let _ = host(&["ip", "-n", &netns.name, "link", "del", t]);
            }
        };
        for nic in &cfg.nics {
            let ns = netns.name.as_str();
            let r = host(&["ip", "-n", ns, "tuntap", "add", "dev", &nic.tap, "mode", "tap"])
                .and_then(|_| {
                    created.push(nic.tap.clone());
                    host(&["ip", "-n", ns, "link", "set", &nic.tap, "master", &nic.bridge])
                })
                .and_then(|_| host(&["ip", "-n", ns, "link", "set", &nic.tap, "up"]));
            if let Err(e) = r {
                cleanup(&created);
                return Err(e);
            }
            taps.push(nic.tap.clone());
        }

        let mut c = netns.command("qemu-system-x86_64");
        c.args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-nographic", "-vga", "none", "-no-reboot"]);
        c.args(["-m", &cfg.memory_mib.to_string(), "-serial", "stdio", "-monitor", "none"]);
        c.arg("-kernel").arg(&cfg.kernel).arg("-initrd").arg(&cfg.initrd);
        c.args(["-append", "console=ttyS0 panic=-1 quiet loglevel=1"]);
        for (i, nic) in cfg.nics.iter().enumerate() {
            let m = nic.mac;
            c.args(["-netdev", &format!("tap,id=n{i},ifname={},script=no,downscript=no", nic.tap)]);
            c.args([
                "-device",
                &format!(
                    "virtio-net-pci,netdev=n{i},mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                    m[0], m[1], m[2], m[3], m[4], m[5]
                ),
            ]);
        }
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match c.spawn() {
            Ok(child) => child,
            Err(e) => {
                cleanup(&created);
                return Err(PeerError::Io {
                    what: "starting qemu-system-x86_64".into(),
                    error: e.to_string(),
                });
            }
        };
        let console = Arc::new(Console::default());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            cleanup(&created);
            return Err(PeerError::Io { what: "QEMU's stdio".into(), error: "not piped".into() });
        };
        console.clone().pump(stdout);
        console.clone().pump(stderr);
        let vm = PeerVm {
            name: cfg.name.clone(),
            netns: netns.name.clone(),
            taps,
            child,
            stdin: Mutex::new(stdin),
            console,
            timeout: Duration::from_secs(30),
        };
        vm.wait_ready(cfg.boot_timeout)?;
        Ok(vm)
    }

    /// Waits for `/init`'s ready line, then pokes the shell until it answers (input sent
    /// before the shell opens ttyS0 is lost).
    fn wait_ready(&self, limit: Duration) -> Result<(), PeerError> {
        let start = Instant::now();
        let deadline = start + limit;
        let timeout = |what: &str| PeerError::Timeout {
            what: format!("{} boot ({what})", self.name),
            waited: start.elapsed(),
            console: self.console.tail(),
        };
        match self.console.wait_for(b"peer-init: ready", 0, deadline) {
            Ok(_) => {}
            Err(true) => return Err(PeerError::Exited { console: self.console.tail() }),
            Err(false) => return Err(timeout("waiting for peer-init: ready")),
        }
        loop {
            let n = SEQ.fetch_add(1, Ordering::Relaxed);
            self.write(&format!("echo '@@RE''ADY_{n}'\n"))?;
            let poke = (Instant::now() + Duration::from_secs(2)).min(deadline);
            match self.console.wait_for(format!("@@READY_{n}\n").as_bytes(), 0, poke) {
                Ok(_) => return Ok(()),
                Err(true) => return Err(PeerError::Exited { console: self.console.tail() }),
                Err(false) if Instant::now() >= deadline => return Err(timeout("waiting for the shell")),
                Err(false) => {}
            }
        }
    }

    fn write(&self, text: &str) -> Result<(), PeerError> {
        let mut w = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        w.write_all(text.as_bytes()).and_then(|()| w.flush()).map_err(|e| PeerError::Io {
            what: format!("writing to {}'s console", self.name),
            error: e.to_string(),
        })
    }

    /// Runs `cmd` in the guest's shell and returns its output (stdout and stderr); a non-zero
    /// exit status is an error carrying the output. Keep `cmd` to one line under 1000 bytes
    /// (the shell's line editor limit).
    pub fn exec(&self, cmd: &str) -> Result<String, PeerError> {
        self.exec_timeout(cmd, self.timeout)
    }

    /// [`PeerVm::exec`] with its own time limit.
    pub fn exec_timeout(&self, cmd: &str, limit: Duration) -> Result<String, PeerError> {
        let (status, output) = self.exec_status(cmd, limit)?;
        if status == 0 {
            Ok(output)
        } else {
            Err(PeerError::Failed { cmd: cmd.to_string(), status, output })
        }
    }

    /// Runs `cmd` and returns its exit status and output, whatever the status.
    pub fn exec_status(&self, cmd: &str, limit: Duration) -> Result<(i32, String), PeerError> {
        if cmd.contains('\n') || cmd.len() > 1000 {
            return Err(PeerError::BadSpec(format!(
                "guest command must be one line under 1000 bytes: {cmd:?}"
            )));
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        // The markers are split by quotes in the command, so the terminal's echo of the
        // command line never matches them; only the shell's output does.
        let line = format!("echo '@@BE''GIN_{n}'; {{ {cmd}\n}} 2>&1; echo \"@@EN\"\"D_{n} $?\"\n");
        let start = {
            let b = self.console.lock();
            b.bytes.len()
        };
        self.write(&line)?;
        let deadline = Instant::now() + limit;
        let begin_tag = format!("@@BEGIN_{n}\n");
        let end_tag = format!("@@END_{n} ");
        let fail = |closed: bool| {
            if closed {
                PeerError::Exited { console: self.console.tail() }
            } else {
                PeerError::Timeout {
                    what: format!("`{cmd}` on {}", self.name),
                    waited: limit,
                    console: self.console.tail(),
                }
            }
        };
        let body = self.console.wait_for(begin_tag.as_bytes(), start, deadline).map_err(fail)?;
        let after_end = self.console.wait_for(end_tag.as_bytes(), body, deadline).map_err(fail)?;
        let status_end = self.console.wait_for(b"\n", after_end, deadline).map_err(fail)?;
        let b = self.console.lock();
        let output = b.bytes.get(body..after_end - end_tag.len()).unwrap_or_default();
        let status_text = b.bytes.get(after_end..status_end - 1).unwrap_or_default();
        let status_text = String::from_utf8_lossy(status_text);
        let status = status_text
            .trim()
            .parse::<i32>()
            .map_err(|_| PeerError::Parse { what: "an exit status".into(), text: status_text.to_string() })?;
        Ok((status, String::from_utf8_lossy(output).into_owned()))
    }

    /// The console log so far (its tail).
    pub fn console_log(&self) -> String {
        self.console.tail()
    }

    /// Configures one ESP tunnel (see [`TunnelSpec`]): outer address on `outer_dev`, inner
    /// address on `dummy0`, the outbound and inbound SAs, policies in the out, in and fwd
    /// directions, and a route for the remote inner prefix.
    pub fn configure_tunnel(&self, t: &TunnelSpec) -> Result<(), PeerError> {
        for cmd in t.commands()? {
            self.exec(&cmd)?;
        }
        Ok(())
    }

    /// Removes every SA and policy (to configure another tunnel).
    pub fn flush_tunnels(&self) -> Result<(), PeerError> {
        self.exec("ip xfrm state flush && ip xfrm policy flush")?;
        Ok(())
    }

    /// The byte and packet counters of the SA with `spi` (`ip -s xfrm state`).
    pub fn sa_counters(&self, spi: u32) -> Result<SaCounters, PeerError> {
        let text = self.exec(&format!("ip -s xfrm state list spi 0x{spi:08x}"))?;
        SaCounters::parse(&text)
    }
}

impl Drop for PeerVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for t in &self.taps {
            let _ = host(&["ip", "-n", &self.netns, "link", "del", t]);
        }
    }
}

/// `ip -s xfrm state`'s "lifetime current" of one SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaCounters {
    pub bytes: u64,
    pub packets: u64,
}

impl SaCounters {
    /// Reads the line after "lifetime current:", `N(bytes), M(packets)`.
    pub fn parse(text: &str) -> Result<SaCounters, PeerError> {
        let err = || PeerError::Parse { what: "SA counters".into(), text: text.to_string() };
        let mut lines = text.lines().skip_while(|l| !l.trim().starts_with("lifetime current:"));
        let line = lines.nth(1).ok_or_else(err)?;
        let mut nums = line.split(',').map(|part| {
            let part = part.trim();
            let num: String = part.chars().take_while(char::is_ascii_digit).collect();
            num.parse::<u64>().ok().map(|v| (v, part.ends_with("(bytes)"), part.ends_with("(packets)")))
        });
        match (nums.next().flatten(), nums.next().flatten()) {
            (Some((bytes, true, _)), Some((packets, _, true))) => Ok(SaCounters { bytes, packets }),
            _ => Err(err()),
        }
    }
}

/// One direction's security association: SPI and AES-GCM key material (RFC 4106 §8.1: the
/// key followed by a 4-byte salt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sa {
    pub spi: u32,
    /// 16, 24 or 32 bytes (AES-128/192/256).
    pub key: Vec<u8>,
    pub salt: [u8; 4],
}

impl Sa {
    /// The `aead` argument of `ip xfrm state`: hex of key ‖ salt.
    pub fn keymat_hex(&self) -> String {
        let mut s = String::from("0x");
        for b in self.key.iter().chain(self.salt.iter()) {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// An IPv4 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One tunnel-mode ESP tunnel as the peer sees it ("local" is the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The guest NIC carrying ESP (`eth0`).
    pub outer_dev: String,
    /// The guest's tunnel endpoint address and its subnet length on `outer_dev`.
    pub local_outer: Ipv4Addr,
    pub outer_len: u8,
    /// The other tunnel endpoint.
    pub remote_outer: Ipv4Addr,
    /// Outer next hop towards `remote_outer` when it is not on the link.
    pub gateway: Option<Ipv4Addr>,
    /// The guest's inner address (put on `dummy0`, used as the source of inner traffic).
    pub local_inner: Ipv4Addr,
    /// Traffic selectors: the local and remote inner prefixes.
    pub local_net: Prefix,
    pub remote_net: Prefix,
    /// SA for local → remote and remote → local.
    pub out_sa: Sa,
    pub in_sa: Sa,
    /// Anti-replay window in packets (0 disables replay checking).
    pub replay_window: u32,
}

impl TunnelSpec {
    /// The same tunnel seen from the other end.
    pub fn mirrored(&self, remote_inner: Ipv4Addr) -> TunnelSpec {
        TunnelSpec {
            outer_dev: self.outer_dev.clone(),
            local_outer: self.remote_outer,
            outer_len: self.outer_len,
            remote_outer: self.local_outer,
            gateway: self.gateway,
            local_inner: remote_inner,
            local_net: self.remote_net,
            remote_net: self.local_net,
            out_sa: self.in_sa.clone(),
            in_sa: self.out_sa.clone(),
            replay_window: self.replay_window,
        }
    }

    /// The guest commands, in order.
    pub fn commands(&self) -> Result<Vec<String>, PeerError> {
        for sa in [&self.out_sa, &self.in_sa] {
            if ![16, 24, 32].contains(&sa.key.len()) {
                return Err(PeerError::BadSpec(format!(
                    "SA 0x{:08x}: AES-GCM key of {} bytes (16, 24 or 32)",
                    sa.spi,
                    sa.key.len()
                )));
            }
            if sa.spi < 256 {
                // RFC 4303 §2.1: SPIs 1-255 are reserved by IANA, 0 is local use only.
                return Err(PeerError::BadSpec(format!("SPI {} is reserved (RFC 4303 §2.1)", sa.spi)));
            }
        }
        if self.out_sa.spi == self.in_sa.spi {
            return Err(PeerError::BadSpec(format!("both SAs use SPI 0x{:08x}", self.out_sa.spi)));
        }
        let (dev, lo, ro) = (&self.outer_dev, self.local_outer, self.remote_outer);
        let (ln, rn) = (self.local_net, self.remote_net);
        let sa = |src: Ipv4Addr, dst: Ipv4Addr, sa: &Sa, reqid: u32| {
            format!(
                "ip xfrm state add src {src} dst {dst} proto esp spi 0x{:08x} reqid {reqid} mode tunnel \
                 replay-window {} aead 'rfc4106(gcm(aes))' {} 128",
                sa.spi,
                self.replay_window,
                sa.keymat_hex()
            )
        };
        let policy = |src: Prefix, dst: Prefix, dir: &str, tsrc: Ipv4Addr, tdst: Ipv4Addr, reqid: u32| {
            format!(
                "ip xfrm policy add src {src} dst {dst} dir {dir} \
                 tmpl src {tsrc} dst {tdst} proto esp reqid {reqid} mode tunnel"
            )
        };
        let via = self.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
        Ok(vec![
            format!("ip link set {dev} up && ip addr replace {lo}/{} dev {dev}", self.outer_len),
            format!("ip link set dummy0 up && ip addr replace {}/32 dev dummy0", self.local_inner),
            sa(lo, ro, &self.out_sa, 1),
            sa(ro, lo, &self.in_sa, 2),
            policy(ln, rn, "out", lo, ro, 1),
            policy(rn, ln, "in", ro, lo, 2),
            policy(rn, ln, "fwd", ro, lo, 2),
            format!("ip route replace {rn}{via} dev {dev} src {}", self.local_inner),
        ])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn spec() -> TunnelSpec {
        TunnelSpec {
            outer_dev: "eth0".into(),
            local_outer: Ipv4Addr::new(192, 0, 2, 1),
            outer_len: 24,
            remote_outer: Ipv4Addr::new(192, 0, 2, 2),
            gateway: None,
            local_inner: Ipv4Addr::new(10, 1, 0, 1),
            local_net: Prefix { addr: Ipv4Addr::new(10, 1, 0, 0), len: 24 },
            remote_net: Prefix { addr: Ipv4Addr::new(10, 2, 0, 0), len: 24 },
            out_sa: Sa { spi: 0x1001, key: vec![0x11; 16], salt: [1, 2, 3, 4] },
            in_sa: Sa { spi: 0x2002, key: vec![0x22; 16], salt: [5, 6, 7, 8] },
            replay_window: 64,
        }
    }

    #[test]
    fn tunnel_commands_name_both_sas_and_policies() {
        let cmds = spec().commands().unwrap();
        let all = cmds.join("\n");
        assert!(all.contains(
            "ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x00001001 reqid 1 mode tunnel \
             replay-window 64 aead 'rfc4106(gcm(aes))' 0x1111111111111111111111111111111101020304 128"
        ));
        assert!(all.contains("src 192.0.2.2 dst 192.0.2.1 proto esp spi 0x00002002 reqid 2"));
        assert!(all.contains("ip xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir out tmpl src 192.0.2.1"));
        assert!(all.contains("ip xfrm policy add src 10.2.0.0/24 dst 10.1.0.0/24 dir in tmpl src 192.0.2.2"));
        assert!(all.contains("ip route replace 10.2.0.0/24 dev eth0 src 10.1.0.1"));
        assert!(cmds.iter().all(|c| c.len() < 1000));
        let m = spec().mirrored(Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(m.out_sa.spi, 0x2002);
        assert_eq!(m.local_outer, Ipv4Addr::new(192, 0, 2, 2));
    }

    #[test]
    fn bad_specs_are_refused() {
        let mut s = spec();
        s.out_sa.key = vec![0; 20];
        assert!(s.commands().unwrap_err().to_string().contains("20 bytes"));
        let mut s = spec();
        s.in_sa.spi = 0x1001;
        assert!(s.commands().is_err());
        let mut s = spec();
        s.in_sa.spi = 7;
        assert!(s.commands().unwrap_err().to_string().contains("reserved"));
    }

    #[test]
    fn sa_counters_are_read_from_ip_s_xfrm_state() {
        let text = "src 192.0.2.1 dst 192.0.2.2\n\tproto esp spi 0x00001001 reqid 1 mode tunnel\n\
                    \tlifetime current:\n\t  1234(bytes), 17(packets)\n\t  add 2026-01-01 00:00:00 use -\n";
        assert_eq!(SaCounters::parse(text).unwrap(), SaCounters { bytes: 1234, packets: 17 });
        assert!(SaCounters::parse("nothing").is_err());
    }

    #[test]
    fn missing_images_name_the_build_command() {
        let e = PeerError::ImageMissing { what: "kernel", path: "/x/peer-vmlinuz".into() };
        assert!(e.to_string().contains(BUILD_COMMAND));
    }
}
