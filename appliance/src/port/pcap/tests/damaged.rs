//! Truncated, corrupt and real-world captures: the reader ends cleanly or explains, never
//! panics.

use std::path::PathBuf;

use super::super::{count_frames, open_reader, open_writer};
use super::pcapng::sample_pcapng;
use super::support::*;
use crate::port::{BufPool, RxQueue, TxQueue};

/// Replays damaged bytes; must end in `Exhausted`, never panic. Returns (frames, error).
fn replay_damaged(tag: &str, bytes: &[u8]) -> Option<(usize, Option<String>)> {
    let file = TempFile::with_bytes(tag, bytes);
    let mut r = open_reader("dmg", file.path()).ok()?;
    let mut pool = BufPool::new(8, 2048);
    let (got, _) = read_all(&mut r, &mut pool, 8);
    Some((got.len(), r.error().map(str::to_string)))
}

#[test]
fn truncated_captures_end_cleanly_with_a_reason() {
    let f = TempFile::new("whole.pcap");
    let frames: Vec<Vec<u8>> = (0..4u8).map(|i| frame(i, 50)).collect();
    let mut pool = BufPool::new(8, 2048);
    let mut w = open_writer("t", f.path()).unwrap();
    w.tx_burst(&mut bufs(&mut pool, &frames), &mut pool);
    w.flush();
    let pcap = std::fs::read(f.path()).unwrap();
    let (pcapng, _, _) = sample_pcapng();
    for (name, whole, n) in [("pcap", &pcap, 4), ("pcapng", &pcapng, 5)] {
        for cut in 0..whole.len() {
            let Some((got, err)) = replay_damaged(name, &whole[..cut]) else {
                continue;
            };
            assert!(got <= n, "{name} cut at {cut}");
            if let Some(e) = err {
                assert!(e.contains("truncated"), "{name} cut at {cut}: {e}");
            }
        }
    }
    // Cut inside the last record of the classic file: three frames, then the reason.
    let (got, err) = replay_damaged("cut", &pcap[..pcap.len() - 10]).unwrap();
    assert_eq!(got, 3);
    assert!(err.unwrap().contains("truncated capture"));
}

#[test]
fn corrupt_bytes_never_panic() {
    let (pcapng, _, _) = sample_pcapng();
    let f = TempFile::new("c.pcap");
    let mut pool = BufPool::new(8, 2048);
    let mut w = open_writer("c", f.path()).unwrap();
    w.tx_burst(&mut bufs(&mut pool, &[frame(1, 60), frame(2, 70)]), &mut pool);
    w.flush();
    let pcap = std::fs::read(f.path()).unwrap();
    for whole in [&pcap, &pcapng] {
        for pos in 0..whole.len() {
            for val in [0x00, 0xff, 0x7f] {
                let mut bytes = whole.clone();
                bytes[pos] = val;
                let _ = replay_damaged("corrupt", &bytes);
            }
        }
    }
    // A record claiming 3 GB: the reader refuses it instead of allocating.
    let mut huge = pcap[..24].to_vec();
    for v in [0u32, 0, 3_000_000_000, 3_000_000_000] {
        huge.extend_from_slice(&v.to_le_bytes());
    }
    huge.extend_from_slice(&[0u8; 64]);
    let (got, err) = replay_damaged("huge", &huge).unwrap();
    assert_eq!(got, 0);
    assert!(err.is_some());
}

/// Replays every capture under `$NFLET_PCAP_SAMPLES`, e.g. the files of Debian's
/// golang-github-google-gopacket-dev (pcap/, pcapgo/tests/{le,be}/) and python3-dpkt
/// (examples/data/): `apt-get download` both, `dpkg -x` them into one directory.
#[test]
#[ignore = "needs NFLET_PCAP_SAMPLES=<directory of captures>"]
fn real_captures_replay_without_surprises() {
    let dir = std::env::var("NFLET_PCAP_SAMPLES").expect("set NFLET_PCAP_SAMPLES to a directory");
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::from(dir)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no .pcap/.pcapng files found");
    let mut pool = BufPool::new(64, 64 << 10);
    for f in files {
        match open_reader("real", &f) {
            Ok(mut r) => {
                let (got, _) = read_all(&mut r, &mut pool, 32);
                let records = count_frames(&f).ok();
                let e = r.error().unwrap_or("");
                println!("{}: {} frames, {} lost {e}", f.display(), got.len(), r.lost());
                if r.error().is_none() {
                    assert_eq!(Some(got.len() as u64 + r.lost()), records, "{}", f.display());
                }
            }
            Err(e) => println!("{}: refused: {e}", f.display()),
        }
    }
}
