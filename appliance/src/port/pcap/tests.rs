//! Tests of the capture-file ports: writer/reader round trips here; pcapng and classic
//! variants in `pcapng`, damaged and real-world files in `damaged`.

mod damaged;
mod pcapng;
mod support;

use std::path::Path;

use super::*;
use crate::port::{BufPool, PortError, RxQueue, RxStatus, TxQueue};
use pcapng::{epb, idb, sample_pcapng, shb};
use support::*;

#[test]
fn writer_then_reader_is_byte_exact() {
    let f = TempFile::new("roundtrip.pcap");
    let frames: Vec<Vec<u8>> =
        [60, 1514, 14, 2048, 64, 0].iter().enumerate().map(|(i, &l)| frame(i as u8, l)).collect();
    let mut pool = BufPool::new(16, 2048);
    let mut w = open_writer("p0", f.path()).unwrap().with_clock(fixed_clock);
    let mut pkts = bufs(&mut pool, &frames[..4]);
    assert_eq!(w.tx_burst(&mut pkts, &mut pool), 4);
    assert!(pkts.is_empty());
    let mut pkts = bufs(&mut pool, &frames[4..]);
    assert_eq!(w.tx_burst(&mut pkts, &mut pool), 2);
    assert_eq!(pool.available(), 16, "sent buffers go back to the pool");
    w.flush();
    assert_eq!(w.frames(), 6);

    let bytes = std::fs::read(f.path()).unwrap();
    // Golden global header: LE micro magic, v2.4, zone 0, sigfigs 0, snaplen 262144, Ethernet.
    assert_eq!(
        bytes[..24],
        [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0]
    );
    // First record header: ts_sec, ts_usec, incl_len = orig_len = 60.
    let mut rec = Vec::new();
    for v in [1_700_000_000u32, 123_456, 60, 60] {
        rec.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(bytes[24..40], rec[..]);

    let mut r = open_reader("p0", f.path()).unwrap();
    assert_eq!(r.total_bytes(), Some(bytes.len() as u64));
    let (got, stamps) = read_all(&mut r, &mut pool, 4);
    assert_eq!(got, frames);
    assert_eq!(stamps, vec![T0; 6]);
    assert_eq!((r.lost(), r.frames(), r.error()), (0, 6, None));
    assert_eq!(r.bytes_read(), bytes.len() as u64);
    assert_eq!(count_frames(f.path()).unwrap(), 6);
}

#[test]
fn shared_writer_keeps_every_queue_in_order() {
    let f = TempFile::new("shared.pcap");
    let queues = open_shared_writer("p1", f.path(), 3).unwrap();
    std::thread::scope(|s| {
        for (q, mut tx) in queues.into_iter().enumerate() {
            s.spawn(move || {
                let mut pool = BufPool::new(8, 128);
                for i in 0..50u8 {
                    let mut pkts = bufs(&mut pool, &[vec![q as u8, i, 0xee]]);
                    assert_eq!(tx.tx_burst(&mut pkts, &mut pool), 1);
                }
                tx.flush();
            });
        }
    });
    let mut pool = BufPool::new(8, 128);
    let (got, _) = read_all(&mut open_reader("p1", f.path()).unwrap(), &mut pool, 8);
    assert_eq!(got.len(), 150);
    for q in 0..3u8 {
        let seq: Vec<u8> = got.iter().filter(|f| f[0] == q).map(|f| f[1]).collect();
        assert_eq!(seq, (0..50).collect::<Vec<u8>>(), "queue {q}");
    }
    assert!(open_shared_writer("p1", f.path(), 0).is_err());
}

#[test]
fn frames_longer_than_the_buffers_are_counted_and_skipped() {
    let f = TempFile::new("long.pcap");
    let frames = vec![frame(1, 100), frame(2, 300), frame(3, 128)];
    let mut big = BufPool::new(4, 2048);
    let mut w = open_writer("p", f.path()).unwrap();
    let mut pkts = bufs(&mut big, &frames);
    w.tx_burst(&mut pkts, &mut big);
    drop(w); // BufWriter flushes on drop
    let mut small = BufPool::new(4, 128);
    let mut r = open_reader("p", f.path()).unwrap();
    let (got, _) = read_all(&mut r, &mut small, 4);
    assert_eq!(got, vec![frames[0].clone(), frames[2].clone()]);
    assert_eq!((r.oversize(), r.lost(), r.frames()), (1, 1, 2));
}

#[test]
fn an_empty_pool_delays_frames_without_losing_them() {
    let (bytes, frames, _) = sample_pcapng();
    let file = TempFile::with_bytes("nopool.pcapng", &bytes);
    let mut pool = BufPool::new(1, 2048);
    let mut r = open_reader("ng", file.path()).unwrap();
    let mut out = Vec::new();
    assert_eq!(r.rx_burst(&mut pool, &mut out, 8), RxStatus::Received(1));
    assert_eq!(r.rx_burst(&mut pool, &mut out, 8), RxStatus::Received(0));
    pool.put(out.pop().unwrap());
    let (rest, _) = read_all(&mut r, &mut pool, 8);
    assert_eq!(rest, frames[1..]);
}

fn capture_detail(e: PortError) -> String {
    match e {
        PortError::Capture { detail, .. } => detail,
        other => panic!("expected a capture error, got {other}"),
    }
}

#[test]
fn unusable_files_are_refused_with_a_reason() {
    let mut sll = Vec::new();
    for v in [0xa1b2_c3d4_u32, 0x0004_0002, 0, 0, 65535, 113] {
        sll.extend_from_slice(&v.to_le_bytes());
    }
    let mut ng_raw = shb();
    ng_raw.extend(idb(101, None));
    let mut ng_packet_first = shb();
    ng_packet_first.extend(epb(0, 0, &frame(0, 60)));
    let cases: &[(&str, &[u8], &str)] = &[
        ("empty", b"", "empty"),
        ("text", b"hello, this is not a capture file at all", "unknown magic number"),
        ("short", &[0xd4, 0xc3, 0xb2, 0xa1, 2, 0], "too short"),
        ("sll", &sll, "LINUX_SLL (113)"),
        ("raw", &ng_raw, "RAW (101)"),
        ("order", &ng_packet_first, "before any interface"),
    ];
    for (tag, bytes, want) in cases {
        let file = TempFile::with_bytes(tag, bytes);
        let err = open_reader("bad", file.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(want), "{tag}: {msg}");
        assert!(msg.contains(&file.path().display().to_string()), "{tag}: {msg}");
        capture_detail(err);
    }
    match open_reader("bad", Path::new("/nonexistent/nflet.pcap")) {
        Err(PortError::Io { .. }) => {}
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn records_larger_than_the_read_buffer_grow_it() {
    let f = TempFile::new("jumbo.pcap");
    let frames = vec![frame(1, 60), frame(2, 200_000), frame(3, 60)];
    let mut pool = BufPool::new(4, 256 << 10);
    let mut w = open_writer("j", f.path()).unwrap();
    assert_eq!(w.tx_burst(&mut bufs(&mut pool, &frames), &mut pool), 3);
    w.flush();
    let mut r = open_reader("j", f.path()).unwrap();
    let (got, _) = read_all(&mut r, &mut pool, 8);
    assert_eq!(got, frames);
    assert_eq!(r.error(), None);
}
