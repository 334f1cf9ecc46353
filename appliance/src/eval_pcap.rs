//! `nflet eval --pcap`: a capture file as the scale-out evaluation's trace.
//!
//! Frames are read with the pcap/pcapng replay reader and parsed with the dataplane's parser
//! (IPv4/IPv6, TCP/UDP/ICMP, VLAN tags); each becomes (capture time, direction-normalised
//! flow key, frame length). Frames the parser refuses (non-IP, truncated by a snap length,
//! TTL-expired, ...) are skipped and counted. The IPv4 checksum is not verified: captures of
//! offloading hosts carry unfilled checksums.

use std::path::Path;

use nflet_nfs::ids::{Bytes, PortId};
use nflet_nfs::packet::parse::{parse, ParsePolicy};
use nflet_nfs::time::Nanos;
use nflet_scale::eval::trace::{from_packets, Trace};

use crate::port::pcap::open_reader;
use crate::port::{BufPool, RxQueue, RxStatus};

/// What reading a capture gave.
#[derive(Debug)]
pub struct Captured {
    pub trace: Trace,
    /// Frames the parser refused.
    pub skipped: u64,
}

/// Reads `path` into a trace whose times are divided by `time_scale`.
pub fn read_trace(path: &Path, time_scale: f64) -> Result<Captured, String> {
    let mut reader = open_reader("eval", path).map_err(|e| e.to_string())?;
    let mut pool = BufPool::new(256, 1 << 16);
    let mut out = Vec::with_capacity(256);
    let policy = ParsePolicy { verify_ipv4_checksum: false, ..ParsePolicy::default() };
    let (mut records, mut skipped) = (Vec::new(), 0u64);
    while let RxStatus::Received(_) = reader.rx_burst(&mut pool, &mut out, 256) {
        for (frame, ts) in out.iter().zip(reader.last_timestamps()) {
            match parse(frame.data(), PortId(0), &policy) {
                Ok(meta) => records.push((
                    Nanos(u64::try_from(ts.as_nanos()).unwrap_or(u64::MAX)),
                    meta.key,
                    Bytes(frame.len() as u64),
                )),
                Err(_) => skipped += 1,
            }
        }
        out.drain(..).for_each(|b| pool.put(b));
    }
    if let Some(e) = reader.error() {
        return Err(format!("eval: {}: {e}", path.display()));
    }
    skipped += reader.oversize() + reader.skipped_non_ethernet();
    Ok(Captured { trace: from_packets(records, time_scale), skipped })
}
