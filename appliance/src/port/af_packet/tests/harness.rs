//! The test bench: a network namespace with a veth pair, marked test frames, and polling
//! helpers with deadlines.

use std::fs::File;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::super::{sys, AfPacketRx, AfPacketTx};
use crate::port::{BufPool, RxQueue, RxStatus, TxQueue};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];
/// EtherType of test frames (IEEE 802 local experimental): anything else on the wire is noise.
const MARK: u16 = 0x88b5;

pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    // CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_SYS_ADMIN (21, for setns).
    let needed = (1 << 12) | (1 << 13) | (1 << 21);
    assert!(
        caps & needed == needed,
        "the af_packet tests need root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN) to create \
         network namespaces, veth pairs and packet sockets; run them as root, e.g. \
         `sudo -E cargo test -p nflet port::af_packet`"
    );
}

/// A network namespace with a veth pair `va` <-> `vb`, both up; deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        require_root();
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("nflet-{tag}-{}-{n}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        // No IPv6 (when the kernel has it): its router solicitations and MLD reports would be
        // noise on the pair.
        let no_ipv6 = "cd /proc/sys/net/ipv6/conf 2>/dev/null || exit 0; \
                       echo 1 > all/disable_ipv6 && echo 1 > default/disable_ipv6";
        run(Command::new("ip").args(["netns", "exec", &ns.name, "sh", "-c", no_ipv6]));
        ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
        ns.ip(&["link", "set", "va", "up"]);
        ns.ip(&["link", "set", "vb", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").args(["-n", &self.name]).args(args));
    }

    /// Runs `body` on a thread inside the namespace.
    pub fn run<T: Send>(&self, body: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap();
                sys::enter_netns(&ns).unwrap();
                body()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (is iproute2 installed?)"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A marked test frame of `len` bytes (at least 16) carrying `seq`, optionally VLAN-tagged.
pub fn test_frame(seq: u16, len: usize, vlan: Option<u16>) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&DST_MAC);
    f.extend_from_slice(&SRC_MAC);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&MARK.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    let fill = (0..).map(|i: usize| (i as u8) ^ (seq as u8));
    f.extend(fill.take(len.saturating_sub(f.len())));
    f
}

pub fn is_test_frame(f: &[u8]) -> bool {
    let at = |i: usize| f.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    f.get(6..12) == Some(&SRC_MAC[..])
        && (at(12) == Some(MARK) || (at(12) == Some(0x8100) && at(16) == Some(MARK)))
}

pub fn send_all(tx: &mut AfPacketTx, pool: &mut BufPool, frames: &[Vec<u8>]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for chunk in frames.chunks(32) {
        let mut pkts: Vec<_> = chunk
            .iter()
            .map(|f| {
                let mut b = pool.get().unwrap();
                assert!(b.fill(f));
                b
            })
            .collect();
        while !pkts.is_empty() {
            if tx.tx_burst(&mut pkts, pool) == 0 {
                assert!(Instant::now() < deadline, "transmit ring stuck");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    tx.flush();
}

/// Polls until `want` test frames arrived (plus a grace period that would reveal extras).
pub fn receive(rx: &mut AfPacketRx, pool: &mut BufPool, want: usize) -> Vec<Vec<u8>> {
    receive_any(std::slice::from_mut(rx), pool, want).into_iter().map(|(_, f)| f).collect()
}

/// Like [`receive`] over several queues; each frame comes with its queue index.
pub fn receive_any(rxs: &mut [AfPacketRx], pool: &mut BufPool, want: usize) -> Vec<(usize, Vec<u8>)> {
    let mut got = Vec::new();
    let mut out = Vec::with_capacity(64);
    let mut deadline = Instant::now() + Duration::from_secs(5);
    let mut grace = false;
    while Instant::now() < deadline {
        let mut idle = true;
        for (q, rx) in rxs.iter_mut().enumerate() {
            let RxStatus::Received(n) = rx.rx_burst(pool, &mut out, 64) else {
                panic!("an interface is never exhausted");
            };
            idle &= n == 0;
            for b in out.drain(..) {
                if is_test_frame(b.data()) {
                    got.push((q, b.data().to_vec()));
                }
                pool.put(b);
            }
        }
        if got.len() >= want && !grace {
            grace = true;
            deadline = Instant::now() + Duration::from_millis(30);
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

/// One non-blocking poll of test frames.
pub fn receive_some(rx: &mut AfPacketRx, pool: &mut BufPool) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    let mut got = Vec::new();
    while let RxStatus::Received(n @ 1..) = rx.rx_burst(pool, &mut out, 64) {
        assert_eq!(n, out.len());
        for b in out.drain(..) {
            if is_test_frame(b.data()) {
                got.push(b.data().to_vec());
            }
            pool.put(b);
        }
    }
    got
}
