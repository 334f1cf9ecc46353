//! Test support: temporary files, test frames, reading a whole capture.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::super::PcapReader;
use crate::port::{BufPool, PktBuf, RxQueue, RxStatus};

/// A file under the temp dir, removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("nflet-pcap-{}-{n}-{tag}", std::process::id())))
    }

    pub fn with_bytes(tag: &str, bytes: &[u8]) -> TempFile {
        let f = TempFile::new(tag);
        std::fs::write(&f.0, bytes).unwrap();
        f
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A deterministic test frame: `len` bytes, distinct per `seed`.
pub fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

pub fn bufs(pool: &mut BufPool, frames: &[Vec<u8>]) -> Vec<PktBuf> {
    frames
        .iter()
        .map(|f| {
            let mut b = pool.get().unwrap();
            assert!(b.fill(f));
            b
        })
        .collect()
}

/// Reads the whole capture with bursts of `burst`; returns frames and their timestamps.
pub fn read_all(r: &mut PcapReader, pool: &mut BufPool, burst: usize) -> (Vec<Vec<u8>>, Vec<Duration>) {
    let (mut frames, mut stamps) = (Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(burst);
    for _ in 0..100_000 {
        match r.rx_burst(pool, &mut out, burst) {
            RxStatus::Exhausted => return (frames, stamps),
            RxStatus::Received(n) => {
                assert_eq!(n, out.len());
                assert_eq!(r.last_timestamps().len(), n);
                stamps.extend_from_slice(r.last_timestamps());
                for b in out.drain(..) {
                    frames.push(b.data().to_vec());
                    pool.put(b);
                }
            }
        }
    }
    panic!("reader never reported Exhausted");
}

pub const T0: Duration = Duration::new(1_700_000_000, 123_456_000);

pub fn fixed_clock() -> Duration {
    T0
}
