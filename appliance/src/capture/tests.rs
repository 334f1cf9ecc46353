//! The hub, the taps and the writer together, with frames handed to taps directly and time
//! passed in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nflet_nfs::ids::PortId;
use nflet_nfs::time::Nanos;

use super::filter::Spec;
use super::{End, Hub, StartError, Tap, QUEUE_DEPTH};
use crate::config::Config;
use crate::port::PktBuf;

/// A 300-byte Ethernet/IPv4/UDP frame to `dport`, its payload bytes numbered.
fn frame(dport: u16, n: u8) -> PktBuf {
    let mut f =
        vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0, 1, 30, 0, 0, 0, 0, 64, 17, 0, 0];
    f.extend([10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend(4000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend([1, 10, 0, 0]);
    f.resize(300, n);
    let mut b = PktBuf::with_capacity(2048);
    assert!(b.fill(&f));
    b
}

fn hub(tag: &str, cores: usize) -> (Arc<Hub>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("nflet-capture-unit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}\n[management]\nlisten = 0\ncapture_dir = \"{}\"\n",
        crate::config::EMBEDDED_DEFAULT.replace("cores = 1", &format!("cores = {cores}")),
        dir.display()
    );
    let cfg = Config::parse("t.toml", &text).unwrap();
    (Arc::new(Hub::new(&cfg)), dir)
}

fn spec(h: &Hub, q: &str) -> Spec {
    Spec::parse(q, &h.ports, &h.chains()).unwrap()
}

fn wait_end(h: &Hub) -> super::Report {
    let start = Instant::now();
    loop {
        let r = h.session().unwrap().report();
        if r.ended.is_some() || start.elapsed() > Duration::from_secs(10) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// (incl_len, orig_len, timestamp in µs, data) of each record.
fn records(path: &std::path::Path) -> Vec<(usize, u32, u64, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let mut at = 24;
    let mut out = Vec::new();
    while at < b.len() {
        let w = |i: usize| u32::from_le_bytes(b[at + i..at + i + 4].try_into().unwrap());
        let incl = w(8) as usize;
        out.push((
            incl,
            w(12),
            u64::from(w(0)) * 1_000_000 + u64::from(w(4)),
            b[at + 16..at + 16 + incl].to_vec(),
        ));
        at += 16 + incl;
    }
    out
}

#[test]
fn the_rate_limit_and_points_decide_what_is_written_and_the_rest_is_counted() {
    let (h, dir) = hub("rate", 2);
    // 200 frames/s over 2 cores: 100 per core, a bucket of 10.
    let s = h.start(spec(&h, "point=chain:main,tx:sink&proto=udp&port=53&rate=200&snaplen=64")).unwrap();
    let mut tap = Tap::new(Arc::clone(&h), 1);
    let t0 = Nanos::from_secs(7);
    tap.poll(t0);
    let frames: Vec<PktBuf> = (0..100).map(|i| frame(if i % 2 == 0 { 53 } else { 54 }, i as u8)).collect();
    let all: Vec<u16> = (0..100).collect();
    // Not a point of this capture: nothing taken, nothing skipped.
    tap.rx(PortId(0), &frames);
    tap.tx(0, &frames);
    tap.chain(0, &frames, &all);
    // 50 frames to port 53: the bucket's 10 pass.
    let r = s.report();
    assert_eq!(r.skipped, 40);
    // 100 ms later, 10 more tokens; on the transmit point, 20 matching frames offered.
    tap.poll(t0.saturating_add(Nanos::from_millis(100)));
    tap.tx(1, &frames[..40]);
    assert!(h.stop());
    let r = wait_end(&h);
    assert_eq!((r.written, r.skipped, r.ended), (20, 50, Some(End::Stopped)), "{r:?}");
    assert_eq!(r.filter, "proto udp and port 53");
    let recs = records(&s.path);
    assert_eq!(recs.len(), 20);
    for (i, (incl, orig, _, data)) in recs.iter().enumerate() {
        assert_eq!((*incl, *orig), (64, 300), "snaplen 64 of 300 bytes");
        assert_eq!(u16::from_be_bytes([data[36], data[37]]), 53);
        let want = frame(53, (2 * (i % 10)) as u8);
        assert_eq!(data[..], want.data()[..64], "record {i}");
    }
    // Timestamps are when the core saw the frames: 100 ms apart, wall clock.
    let (first, second) = (recs[0].2, recs[10].2);
    assert_eq!(recs[9].2, first);
    assert_eq!(second - first, 100_000);
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
    assert!(now_us.abs_diff(second) < 10_000_000, "{second} vs {now_us}");
    // Ended: the next poll lets the session go.
    tap.poll(t0.saturating_add(Nanos::from_millis(200)));
    tap.chain(0, &frames, &all);
    assert_eq!(s.report().skipped, 50);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_count_ends_a_capture_a_full_queue_is_a_skip_and_one_runs_at_a_time() {
    let (h, dir) = hub("count", 1);
    let s = h.start(spec(&h, "point=rx:gen&count=5")).unwrap();
    assert_eq!(h.start(spec(&h, "")).unwrap_err(), StartError::Busy(1));
    let mut tap = Tap::new(Arc::clone(&h), 0);
    tap.poll(Nanos(1));
    let frames: Vec<PktBuf> = (0..QUEUE_DEPTH + 100).map(|i| frame(9, i as u8)).collect();
    tap.rx(PortId(0), &frames);
    let r = wait_end(&h);
    // (How many were skipped depends on when the writer drained: see the next test.)
    assert_eq!((r.written, r.ended), (5, Some(End::Count)), "{r:?}");
    assert!(r.skipped <= 100, "{r:?}");
    assert_eq!(records(&s.path).len(), 5);
    assert!(!h.stop(), "nothing left to stop");
    // A new capture gets a new file and the taps pick it up.
    let s2 = h.start(spec(&h, "point=rx:gen&count=1&snaplen=9216")).unwrap();
    assert_ne!(s2.path, s.path);
    tap.poll(Nanos(2));
    tap.rx(PortId(0), &frames[..1]);
    let r = wait_end(&h);
    assert_eq!((r.id, r.written, r.ended), (2, 1, Some(End::Count)));
    assert_eq!(records(&s2.path)[0].3, frames[0].data(), "whole frames under a large snaplen");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_queue_is_a_counted_skip_not_a_wait() {
    let (h, _) = hub("full", 1);
    // A session without its writer thread, so nothing drains the queue.
    let spec = spec(&h, "point=rx:gen&snaplen=64");
    let slot = super::Slot {
        full: crossbeam_queue::ArrayQueue::new(QUEUE_DEPTH),
        free: crossbeam_queue::ArrayQueue::new(QUEUE_DEPTH + 10),
        skipped: std::sync::atomic::AtomicU64::new(0),
    };
    // More free buffers than queue slots: the queue, not the free list, is what fills.
    for _ in 0..QUEUE_DEPTH + 10 {
        slot.free.push(Vec::with_capacity(64)).unwrap();
    }
    let s = Arc::new(super::Session {
        id: 1,
        spec,
        file: String::new(),
        path: "/nonexistent".into(),
        slots: vec![slot],
        stop: std::sync::atomic::AtomicBool::new(false),
        written: std::sync::atomic::AtomicU64::new(0),
        ended: std::sync::Mutex::new(None),
        started: Instant::now(),
    });
    *h.current.lock().unwrap() = Some(Arc::clone(&s));
    h.generation.store(1, std::sync::atomic::Ordering::Release);
    h.active.store(true, std::sync::atomic::Ordering::Release);
    let mut tap = Tap::new(Arc::clone(&h), 0);
    tap.poll(Nanos(1));
    let frames: Vec<PktBuf> = (0..QUEUE_DEPTH + 100).map(|i| frame(9, i as u8)).collect();
    tap.rx(PortId(0), &frames);
    assert_eq!(s.slots[0].full.len(), QUEUE_DEPTH);
    assert_eq!(s.report().skipped, 100);
    // The buffer of a frame that found the queue full went back to the free list.
    assert_eq!(s.slots[0].free.len(), 10);
    // The capture is off: the tap lets go and takes nothing more.
    h.active.store(false, std::sync::atomic::Ordering::Release);
    tap.poll(Nanos(2));
    tap.rx(PortId(0), &frames);
    assert_eq!(s.report().skipped, 100);
}

#[test]
fn a_reload_that_changes_the_chains_stops_a_chain_capture_only() {
    let (h, dir) = hub("reload", 1);
    let main = vec!["main".to_string()];
    let s = h.start(spec(&h, "point=rx:gen")).unwrap();
    h.follow_chains(&["other".to_string()]);
    assert_eq!(s.report().ended, None, "a port capture runs on");
    assert!(h.stop());
    wait_end(&h);
    h.follow_chains(&main);
    let s = h.start(spec(&h, "point=chain:main")).unwrap();
    h.follow_chains(&main);
    assert_eq!(s.report().ended, None, "same chains: nothing to do");
    h.follow_chains(&["main".to_string(), "new".to_string()]);
    assert_eq!(wait_end(&h).ended, Some(End::Stopped));
    assert_eq!(h.chains(), ["main", "new"]);
    assert!(Spec::parse("point=chain:new", &h.ports, &h.chains()).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn queues_shrink_with_large_snaplens_on_many_cores() {
    use super::queue_depth;
    assert_eq!(queue_depth(256, 1), QUEUE_DEPTH);
    assert_eq!(queue_depth(256, 64), QUEUE_DEPTH);
    assert_eq!(queue_depth(9216, 1), QUEUE_DEPTH);
    assert_eq!(queue_depth(9216, 8), 455);
    assert_eq!(queue_depth(9216, 64), 64);
}

#[test]
fn an_unwritable_directory_is_reported_with_the_setting_to_change() {
    let (mut h, _) = hub("dir", 1);
    Arc::get_mut(&mut h).unwrap().dir = "/proc/nflet-cannot-be-here".into();
    let spec = spec(&h, "");
    match h.start(spec) {
        Err(StartError::Io(e)) => assert!(e.contains("`[management] capture_dir`"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(h.session().is_none());
}
