//! Flow-aware behaviour: fanout keeps both directions of a flow on one queue, and partial
//! checksums from the local stack are completed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::super::{open_queues, AfPacketOptions};
use super::harness::*;
use crate::port::{BufPool, RxQueue};

/// A UDP/IPv4 or TCP/IPv6 test frame of flow `flow`, direction `dir` (0 or 1).
fn flow_frame(flow: u8, dir: u8) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let (ps, pd) = (1000 + u16::from(flow), 53);
    let (ps, pd) = if dir == 0 { (ps, pd) } else { (pd, ps) };
    let mut v = Vec::new();
    let payload = [flow, dir];
    if flow < 48 {
        let (a, b) = ([10, 0, flow, 1], [10, 1, flow, 2]);
        let (s, d) = if dir == 0 { (a, b) } else { (b, a) };
        eth.ipv4(s, d, 64).udp(ps, pd).write(&mut v, &payload).unwrap();
    } else {
        let (mut a, mut b) = ([0xfd; 16], [0xfe; 16]);
        (a[15], b[15]) = (flow, flow);
        let (s, d) = if dir == 0 { (a, b) } else { (b, a) };
        eth.ipv6(s, d, 64).tcp(ps, pd, 1, 1000).ack(1).write(&mut v, &payload).unwrap();
    }
    v
}

fn is_flow_frame(f: &[u8]) -> bool {
    f.get(6..12) == Some(&SRC_MAC[..]) && matches!(f.get(12..14), Some([0x08, 0x00] | [0x86, 0xdd]))
}

#[test]
fn fanout_keeps_both_directions_of_a_flow_on_one_queue() {
    let ns = Netns::new("fanout");
    ns.run(|| {
        let opts = AfPacketOptions::default();
        let (_a_rx, mut a_tx) = open_queues("a", "va", 1, &opts).unwrap();
        let (mut b_rx, _b_tx) = open_queues("b", "vb", 2, &opts).unwrap();
        assert!(b_rx.iter().all(|q| q.steered()));
        let frames: Vec<Vec<u8>> = (0..64).flat_map(|f| [flow_frame(f, 0), flow_frame(f, 1)]).collect();
        let mut pool = BufPool::new(512, 2048);
        send_all(&mut a_tx[0], &mut pool, &frames);

        let mut queue_of: HashMap<(u8, u8), usize> = HashMap::new();
        let mut out = Vec::with_capacity(64);
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue_of.len() < frames.len() && Instant::now() < deadline {
            for (q, rx) in b_rx.iter_mut().enumerate() {
                rx.rx_burst(&mut pool, &mut out, 64);
                for b in out.drain(..) {
                    if let (true, [.., flow, dir]) = (is_flow_frame(b.data()), b.data()) {
                        let prev = queue_of.insert((*flow, *dir), q);
                        assert_eq!(prev, None, "flow {flow} dir {dir} received twice");
                    }
                    pool.put(b);
                }
            }
        }
        assert_eq!(queue_of.len(), frames.len(), "frames missing");
        for f in 0..64 {
            assert_eq!(queue_of[&(f, 0)], queue_of[&(f, 1)], "flow {f} split across queues");
        }
        let on_zero = (0..64).filter(|f| queue_of[&(*f, 0)] == 0).count();
        assert!((1..64).contains(&on_zero), "all 64 flows on one queue: no spreading");
        assert_eq!(b_rx.iter().map(|q| q.lost()).sum::<u64>(), 0);
    });
}

#[test]
fn partial_checksums_from_the_local_stack_are_completed() {
    let ns = Netns::new("csum");
    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "va"]);
    let lladdr = "02:00:00:00:00:bb";
    ns.ip(&["neigh", "add", "10.77.0.2", "lladdr", lladdr, "dev", "va", "nud", "permanent"]);
    ns.run(|| {
        let (mut b_rx, _b_tx) = open_queues("b", "vb", 1, &AfPacketOptions::default()).unwrap();
        let udp = std::net::UdpSocket::bind("10.77.0.1:0").unwrap();
        udp.send_to(b"checksum me", "10.77.0.2:9999").unwrap();
        let peer = "10.77.0.2:80".parse().unwrap();
        let _ = std::net::TcpStream::connect_timeout(&peer, Duration::from_millis(300)); // a SYN
        let mut pool = BufPool::new(64, 2048);
        let mut out = Vec::new();
        let (mut udp_ok, mut tcp_ok) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !(udp_ok && tcp_ok) && Instant::now() < deadline {
            b_rx[0].rx_burst(&mut pool, &mut out, 64);
            for b in out.drain(..) {
                match checksum_ok(b.data()) {
                    Some((true, ok)) => udp_ok |= ok,
                    Some((false, ok)) => tcp_ok |= ok,
                    None => {}
                }
                pool.put(b);
            }
        }
        assert!(udp_ok && tcp_ok, "udp {udp_ok}, tcp {tcp_ok}");
        let s = b_rx[0].stats();
        assert!(s.csum_completed >= 2, "the kernel left no partial checksum? {s:?}");
        assert_eq!(s.csum_partial_left, 0);
    });
}

/// For an IPv4 UDP or TCP frame: (is UDP, checksum correct).
fn checksum_ok(frame: &[u8]) -> Option<(bool, bool)> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        return None;
    };
    let ip_hdr = ip.header().to_header();
    match p.transport? {
        TransportSlice::Udp(u) => {
            let want = u.to_header().calc_checksum_ipv4(&ip_hdr, u.payload()).ok()?;
            Some((true, want == u.checksum()))
        }
        TransportSlice::Tcp(t) => {
            let want = t.to_header().calc_checksum_ipv4(&ip_hdr, t.payload()).ok()?;
            Some((false, want == t.checksum()))
        }
        _ => None,
    }
}
