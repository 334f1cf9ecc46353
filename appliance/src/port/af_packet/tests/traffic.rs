//! Frames through a veth pair: byte-exact delivery, ring wrap-around, losses counted exactly.

use std::time::Duration;

use super::super::{open_queues, sys, AfPacketOptions, TxStats};
use super::harness::*;
use crate::port::{BufPool, RxQueue};

#[test]
fn frames_cross_a_veth_pair_byte_exact() {
    let ns = Netns::new("xfer");
    // Through the qdisc, transmitted frames pass the interface's taps: the receive queues on
    // the sending side must still not see them (PACKET_IGNORE_OUTGOING, and for a fanout
    // group PACKET_FANOUT_FLAG_IGNORE_OUTGOING).
    let variants = [
        (1, AfPacketOptions::default()),
        (1, AfPacketOptions { qdisc_bypass: false, ..Default::default() }),
        (2, AfPacketOptions { qdisc_bypass: false, ..Default::default() }),
    ];
    for (a_queues, opts) in variants {
        ns.run(|| xfer(a_queues, &opts));
    }
}

fn xfer(a_queues: usize, opts: &AfPacketOptions) {
    let (mut a_rx, mut a_tx) = open_queues("a", "va", a_queues, opts).unwrap();
    let (mut b_rx, _b_tx) = open_queues("b", "vb", 1, opts).unwrap();
    let mut frames: Vec<Vec<u8>> = [16, 60, 61, 128, 777, 1514]
        .iter()
        .enumerate()
        .map(|(i, &len)| test_frame(i as u16, len, None))
        .collect();
    frames.push(test_frame(100, 64, Some(0x2064))); // PCP 1, VLAN 100
    frames.push(test_frame(101, 1518, Some(7))); // full-size tagged frame
    let mut pool = BufPool::new(256, 2048);
    send_all(&mut a_tx[0], &mut pool, &frames);

    assert_eq!(receive(&mut b_rx[0], &mut pool, frames.len()), frames, "{opts:?}");
    let own = receive_any(&mut a_rx, &mut pool, 0);
    assert!(own.is_empty(), "own frames seen with {a_queues} queues, {opts:?}");
    let sent = TxStats { frames: frames.len() as u64, ..TxStats::default() };
    assert_eq!(a_tx[0].stats(), sent);
    let s = b_rx[0].stats();
    assert_eq!((s.oversize, s.ring_errors, b_rx[0].lost()), (0, 0, 0));
    assert!(!b_rx[0].steered());
    assert_eq!(pool.available(), 256);
}

#[test]
fn rings_wrap_and_refused_frames_do_not_stall_them() {
    let ns = Netns::new("wrap");
    ns.run(|| {
        // Small rings: the transmit ring wraps 30 times, the receive ring many times.
        let opts = AfPacketOptions {
            rx_block_size: sys::page_size(),
            rx_blocks: 4,
            tx_frames: 64,
            ..AfPacketOptions::default()
        };
        let (_a_rx, mut a_tx) = open_queues("a", "va", 1, &opts).unwrap();
        let (mut b_rx, _b_tx) = open_queues("b", "vb", 1, &opts).unwrap();
        let mut pool = BufPool::new(512, 2048);
        let frames: Vec<Vec<u8>> = (0..2000).map(|i| test_frame(i, 60 + usize::from(i % 64), None)).collect();
        let mut got = Vec::new();
        for chunk in frames.chunks(16) {
            send_all(&mut a_tx[0], &mut pool, chunk);
            got.extend(receive_some(&mut b_rx[0], &mut pool));
        }
        // 1600 bytes untagged exceeds MTU 1500: the kernel discards it (PACKET_LOSS) and
        // the frames behind it still go out.
        let tail = vec![test_frame(5000, 60, None), test_frame(5001, 1600, None), test_frame(5002, 60, None)];
        send_all(&mut a_tx[0], &mut pool, &tail);
        got.extend(receive(&mut b_rx[0], &mut pool, frames.len() + 2 - got.len()));
        let mut want = frames.clone();
        want.push(tail[0].clone());
        want.push(tail[2].clone());
        assert_eq!(got.len(), want.len());
        assert!(got == want, "frames reordered or corrupted");
        assert_eq!(b_rx[0].lost(), 0);
    });
}

#[test]
fn ring_overruns_are_counted_exactly() {
    let ns = Netns::new("overrun");
    ns.run(|| {
        // Two one-page blocks: about 30 frames fit, the rest of the 500 overrun the ring.
        let opts =
            AfPacketOptions { rx_block_size: sys::page_size(), rx_blocks: 2, ..AfPacketOptions::default() };
        let (_a_rx, mut a_tx) = open_queues("a", "va", 1, &opts).unwrap();
        let (mut b_rx, _b_tx) = open_queues("b", "vb", 1, &opts).unwrap();
        let mut pool = BufPool::new(512, 2048);
        let frames: Vec<Vec<u8>> = (0..500).map(|i| test_frame(i, 200, None)).collect();
        send_all(&mut a_tx[0], &mut pool, &frames);
        std::thread::sleep(Duration::from_millis(20));
        let mut got = receive_some(&mut b_rx[0], &mut pool);
        assert!(got.len() < 100, "the ring did not overflow: {} frames", got.len());
        // The drops are reported by the next block the kernel closes (TP_STATUS_LOSING).
        let trigger = test_frame(9999, 60, None);
        send_all(&mut a_tx[0], &mut pool, std::slice::from_ref(&trigger));
        got.extend(receive(&mut b_rx[0], &mut pool, 1));
        assert_eq!(got.last(), Some(&trigger));
        assert_eq!(got.len() as u64 + b_rx[0].lost(), 501, "received + lost = sent");
        assert!(got[..got.len() - 1].iter().zip(&frames).all(|(g, f)| g == f));
    });
}

#[test]
fn frames_longer_than_the_buffers_are_counted_as_lost() {
    let ns = Netns::new("long");
    ns.run(|| {
        let opts = AfPacketOptions::default();
        let (_a_rx, mut a_tx) = open_queues("a", "va", 1, &opts).unwrap();
        let (mut b_rx, _b_tx) = open_queues("b", "vb", 1, &opts).unwrap();
        let frames = vec![test_frame(1, 1200, None), test_frame(2, 100, None), test_frame(3, 1000, None)];
        send_all(&mut a_tx[0], &mut BufPool::new(8, 2048), &frames);
        let mut small = BufPool::new(64, 1000);
        assert_eq!(receive(&mut b_rx[0], &mut small, 2), vec![frames[1].clone(), frames[2].clone()]);
        assert_eq!((b_rx[0].stats().oversize, b_rx[0].lost()), (1, 1));
    });
}

/// A port sees only its own interface's frames, from the first one: a packet socket opened
/// for every protocol would queue frames of all interfaces until it is bound to its own.
/// Loopback traffic flows while the port on `vb` opens again and again; none of it may come
/// out of the port. (A restarted scale-out director took a worker's fabric datagram on
/// 127.0.0.1 for a frame of its inside port, and the NAT made a mapping for it.)
#[test]
fn a_port_never_receives_other_interfaces_frames_while_it_opens() {
    let ns = Netns::new("leak");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.run(|| {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        // Threads spawned here stay in the namespace of the thread that spawns them.
        let sender = std::thread::spawn(move || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut sent = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                if s.send_to(b"loopback, not vb", "127.0.0.1:9").is_ok() {
                    sent += 1;
                }
            }
            sent
        });
        let mut pool = BufPool::new(256, 2048);
        let mut foreign = 0usize;
        for _ in 0..30 {
            let (mut rx, _tx) = open_queues("p", "vb", 1, &AfPacketOptions::default()).unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let mut out = Vec::new();
            while let crate::port::RxStatus::Received(1..) = rx[0].rx_burst(&mut pool, &mut out, 64) {
                for b in out.drain(..) {
                    // IPv4 source 127.0.0.1 at offset 26 of an untagged Ethernet frame.
                    if b.data().get(26..30) == Some(&[127, 0, 0, 1][..]) {
                        foreign += 1;
                    }
                    pool.put(b);
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = sender.join().unwrap();
        assert!(sent > 1000, "the loopback sender ran ({sent} datagrams)");
        assert_eq!(foreign, 0, "loopback frames came out of the port on vb");
    });
}
