//! Monitor: per-flow counters, per-host counters merged across cores, overflow accounting.

use super::monitor::*;
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::ids::CoreId;
use crate::nf::{Ctx, InitCtx, NetworkFunction, SharedRegistry};
use crate::packet::{parse, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::testutil::udp4;
use crate::time::Nanos;

fn monitors(params: &str, cores: usize) -> (Vec<Monitor>, Vec<Arena>) {
    let cfg: MonitorConfig = toml::from_str(&format!("flows = 1024\n{params}")).unwrap();
    let mut shared = SharedRegistry::default();
    let ports = ["a".to_string()];
    let mut arenas: Vec<Arena> =
        (0..cores).map(|c| Arena::new(CoreId(c as u16), 64 << 20, Backing::Normal)).collect();
    let mons = arenas
        .iter_mut()
        .enumerate()
        .map(|(c, arena)| {
            let mut rt = InitCtx {
                instance: crate::ids::Instance::default(),
                name: "mon",
                core: CoreId(c as u16),
                cores,
                ports: &ports,
                arena,
                shared: &mut shared,
            };
            Monitor::init(&cfg, &mut rt).unwrap()
        })
        .collect();
    (mons, arenas)
}

fn send(m: &mut Monitor, now: Nanos, frame: &[u8]) {
    let mut f = frame.to_vec();
    let mut meta = parse(&f, crate::ids::PortId(0), &ParsePolicy::default()).unwrap();
    m.process_packet(&Ctx { now, core: CoreId(0) }, &mut f, &mut meta);
}

fn host(a: [u8; 4]) -> HostKey {
    HostKey { addr: v4(a), family: FAMILY_V4, _pad: [0; 7] }
}

const A: [u8; 4] = [10, 0, 0, 1];
const B: [u8; 4] = [10, 0, 0, 2];
const C: [u8; 4] = [10, 0, 0, 3];

#[test]
fn flow_counters_per_direction() {
    let (mut m, _a) = monitors("", 1);
    let out = udp4(A, 1000, B, 53, b"query");
    let back = udp4(B, 53, A, 1000, b"a longer answer");
    send(&mut m[0], Nanos(1), &out);
    send(&mut m[0], Nanos(2), &back);
    send(&mut m[0], Nanos(3), &back);
    let (key, dir) = FlowKey::new(FAMILY_V4, 17, v4(A), 1000, v4(B), 53);
    let c = m[0].flow(&key, Nanos(3)).unwrap();
    let (o, b) = if dir == crate::flow::Dir::LoToHi { (0, 1) } else { (1, 0) };
    assert_eq!((c.packets[o], c.packets[b]), (1, 2));
    assert_eq!((c.bytes[o], c.bytes[b]), (out.len() as u64, 2 * back.len() as u64));
    assert_eq!(c.first_seen, 1);
}

#[test]
fn host_counters_merge_across_cores() {
    let (mut m, _a) = monitors("merge_interval_ms = 100", 2);
    let ab = udp4(A, 1, B, 2, b"xx");
    let cb = udp4(C, 1, B, 2, b"yyyy");
    for _ in 0..3 {
        send(&mut m[0], Nanos(1), &ab);
    }
    send(&mut m[1], Nanos(1), &cb);
    // Nothing is global before a merge.
    assert!(m[0].hosts().lock().hosts.is_empty());
    m[0].flush_hosts(Nanos(2));
    m[1].flush_hosts(Nanos(2));
    let hosts = m[0].hosts();
    let g = hosts.lock();
    let b = g.hosts[&host(B)];
    assert_eq!((b.rx_packets, b.rx_bytes), (4, 3 * ab.len() as u64 + cb.len() as u64));
    assert_eq!((b.tx_packets, b.tx_bytes), (0, 0));
    assert_eq!(g.hosts[&host(A)].tx_packets, 3);
    assert_eq!(g.hosts[&host(C)].tx_packets, 1);
    assert_eq!(g.hosts.len(), 3);
}

#[test]
fn merges_count_each_packet_once_and_silent_hosts_expire() {
    let (mut m, _a) = monitors("merge_interval_ms = 100", 1);
    let ab = udp4(A, 1, B, 2, b"");
    let ctx = |ms: u64| Ctx { now: Nanos::from_millis(ms), core: CoreId(0) };
    for t in [0u64, 50, 150, 250] {
        send(&mut m[0], Nanos::from_millis(t), &ab);
        for _ in 0..200 {
            m[0].housekeeping(&ctx(t + 10));
        }
    }
    // Long silence: the entries expire; a last merge must not double count.
    for _ in 0..2000 {
        m[0].housekeeping(&ctx(5_000));
    }
    m[0].flush_hosts(Nanos::from_millis(5_001));
    let hosts = m[0].hosts();
    let g = hosts.lock();
    assert_eq!(g.hosts[&host(A)].tx_packets, 4);
    assert_eq!(g.hosts[&host(B)].rx_packets, 4);
    assert_eq!(g.other, HostCounters::default());
}

#[test]
fn more_hosts_than_the_delta_holds_are_counted_in_other() {
    let (mut m, _a) = monitors("host_delta = 4", 1);
    let mut frames = 0u64;
    for i in 0..20u8 {
        send(&mut m[0], Nanos(1), &udp4([10, 1, 0, i], 1, [10, 2, 0, i], 2, b""));
        frames += 1;
    }
    m[0].flush_hosts(Nanos(2));
    let hosts = m[0].hosts();
    let g = hosts.lock();
    let tx: u64 = g.hosts.values().map(|h| h.tx_packets).sum::<u64>() + g.other.tx_packets;
    let rx: u64 = g.hosts.values().map(|h| h.rx_packets).sum::<u64>() + g.other.rx_packets;
    assert_eq!((tx, rx), (frames, frames), "totals add up, attributed or not");
    assert!(g.other.tx_packets > 0);
    let other = g.other;
    drop(g); // the report reads the shared map too
    let mut r = crate::nf::Report::default();
    m[0].report(&mut r);
    let overflow = r.counters.iter().find(|(n, _)| *n == "host_overflow").unwrap().1;
    assert_eq!(overflow, other.tx_packets + other.rx_packets);
}
