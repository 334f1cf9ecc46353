//! Recording transmitted frames into a classic pcap file.
//!
//! The format is written by hand rather than with pcap-file's `PcapWriter`: it is a 24-byte
//! global header plus a 16-byte header per record, and pcap-file's writer offers no way to
//! flush its inner writer short of consuming it, which a long-running sink needs (`flush()`
//! is called whenever a core idles). Records go through a `BufWriter`, so a burst costs a few
//! memcpys and, now and then, one `write(2)`.
//!
//! Files are little-endian, microsecond-resolution pcap (magic `a1b2c3d4`), link type
//! Ethernet: the variant every tool reads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::port::{BufPool, PktBuf, PortError, TxQueue};

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// libpcap's largest snaplen; longer frames are recorded truncated (orig_len stays whole).
const SNAPLEN: u32 = 262_144;
const WRITE_BUFFER: usize = 256 << 10;

/// Wall-clock time since the Unix epoch: the default timestamp source of a [`PcapWriter`].
pub fn system_clock() -> Duration {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

/// A transmit queue that appends every frame to a pcap file.
pub struct PcapWriter {
    port: String,
    path: String,
    out: BufWriter<File>,
    clock: fn() -> Duration,
    frames: u64,
    /// Set after the first write error; the writer then sends nothing.
    failed: bool,
}

impl std::fmt::Debug for PcapWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapWriter")
            .field("port", &self.port)
            .field("path", &self.path)
            .field("frames", &self.frames)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// Creates (or truncates) `path` and writes the pcap global header.
pub fn open_writer(port: &str, path: &Path) -> Result<PcapWriter, PortError> {
    let path_str = path.display().to_string();
    let io_err = |source| PortError::Io { port: port.to_string(), path: path_str.clone(), source };
    let file = File::create(path).map_err(io_err)?;
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut header = [0u8; 24];
    put_u32s(&mut header, &[MAGIC_MICROS, 2 | (4 << 16), 0, 0, SNAPLEN, LINKTYPE_ETHERNET]);
    // Flushed at once, so that a file exists as a valid (empty) capture from the start.
    out.write_all(&header).and_then(|()| out.flush()).map_err(io_err)?;
    Ok(PcapWriter {
        port: port.to_string(),
        path: path_str,
        out,
        clock: system_clock,
        frames: 0,
        failed: false,
    })
}

/// Opens one pcap file written by `queues` transmit queues (one per core).
///
/// The queues share the writer behind a `std::sync::Mutex`, taken once per burst. That breaks
/// the share-nothing rule of the dataplane on purpose: a file sink is a debugging and testing
/// port bounded by the disk, not a NIC, and one file with interleaved bursts is what users want.
/// Frames of one burst stay together and in order.
pub fn open_shared_writer(
    port: &str,
    path: &Path,
    queues: usize,
) -> Result<Vec<Box<dyn TxQueue>>, PortError> {
    if queues == 0 {
        return Err(PortError::Config {
            port: port.to_string(),
            detail: "a pcap writer needs at least one transmit queue".to_string(),
        });
    }
    let shared = Arc::new(Mutex::new(open_writer(port, path)?));
    Ok((0..queues)
        .map(|_| Box::new(SharedPcapTx { writer: Arc::clone(&shared) }) as Box<dyn TxQueue>)
        .collect())
}

impl PcapWriter {
    /// Replaces the timestamp source (tests pass a fixed clock). The clock is read once per
    /// burst: all frames of a burst carry the same timestamp.
    pub fn with_clock(mut self, clock: fn() -> Duration) -> PcapWriter {
        self.clock = clock;
        self
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Writes frames from the front of `pkts` until one fails; see [`TxQueue::tx_burst`].
    fn write_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        if self.failed {
            return 0;
        }
        let ts = (self.clock)();
        let ts_sec = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
        let mut sent = 0;
        for pkt in pkts.iter() {
            let frame = pkt.data();
            let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            let incl = frame.get(..SNAPLEN as usize).unwrap_or(frame);
            let mut rec = [0u8; 16];
            put_u32s(&mut rec, &[ts_sec, ts.subsec_micros(), incl.len() as u32, orig_len]);
            if let Err(e) = self.out.write_all(&rec).and_then(|()| self.out.write_all(incl)) {
                log::error!(
                    "port {}: {}: write failed: {e}; no more frames are recorded",
                    self.port,
                    self.path
                );
                self.failed = true;
                break;
            }
            sent += 1;
        }
        self.frames += sent as u64;
        pkts.drain(..sent).for_each(|b| pool.put(b));
        sent
    }

    /// Appends one record with its own timestamp: `data` is the frame's first bytes,
    /// `orig_len` its whole length (packet capture, which writes records a writer thread
    /// gathered from several cores).
    pub fn write_record(&mut self, ts: Duration, orig_len: u32, data: &[u8]) -> std::io::Result<()> {
        let incl = data.get(..SNAPLEN as usize).unwrap_or(data);
        let ts_sec = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
        let mut rec = [0u8; 16];
        put_u32s(&mut rec, &[ts_sec, ts.subsec_micros(), incl.len() as u32, orig_len]);
        self.out.write_all(&rec)?;
        self.out.write_all(incl)?;
        self.frames += 1;
        Ok(())
    }

    /// Writes out what is buffered.
    pub fn flush_file(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    fn flush_out(&mut self) {
        if self.failed {
            return;
        }
        if let Err(e) = self.out.flush() {
            log::error!("port {}: {}: flush failed: {e}", self.port, self.path);
            self.failed = true;
        }
    }
}

impl TxQueue for PcapWriter {
    /// Writes the frames; after a write error (disk full, ...) nothing more is accepted and the
    /// frames stay in `pkts`, for the caller to drop and count.
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        self.write_burst(pkts, pool)
    }

    fn flush(&mut self) {
        self.flush_out();
    }
}

/// One of several transmit queues sharing a [`PcapWriter`]; see [`open_shared_writer`].
#[derive(Debug)]
pub struct SharedPcapTx {
    writer: Arc<Mutex<PcapWriter>>,
}

impl TxQueue for SharedPcapTx {
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        // If another core panicked while writing, at worst one record is partial: keep
        // recording rather than take this core down too.
        let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        w.write_burst(pkts, pool)
    }

    fn flush(&mut self) {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).flush_out();
    }
}

/// Writes `vals` little-endian into consecutive 4-byte slots of `buf`.
fn put_u32s(buf: &mut [u8], vals: &[u32]) {
    for (dst, v) in buf.chunks_exact_mut(4).zip(vals) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}
