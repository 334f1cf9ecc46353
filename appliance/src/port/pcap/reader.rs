//! Replaying a pcap or pcapng file as a receive queue.
//!
//! The file is streamed through pcap-parser's circular buffer (`create_reader`, then
//! `next` / `consume` / `refill`), so memory stays constant however long the capture is.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use pcap_parser::traits::{PcapNGPacketBlock, PcapReaderIterator};
use pcap_parser::{create_reader, Block, Linktype, PcapBlockOwned, PcapError};

use crate::port::{BufPool, PktBuf, PortError, RxQueue, RxStatus};

/// Initial size of the read buffer: many records per `read(2)`. It doubles when a record does
/// not fit (jumbo or GSO frames; libpcap's largest snaplen is 256 KiB).
const READ_BUFFER: usize = 64 << 10;
/// A record that does not fit in this much memory is taken as corruption.
const MAX_READ_BUFFER: usize = 64 << 20;

/// pcapng's default timestamp resolution (if_tsresol absent): microseconds.
const MICROS: u64 = 1_000_000;

/// One pcapng interface (Interface Description Block) of the current section.
#[derive(Debug, Clone, Copy)]
struct Iface {
    ethernet: bool,
    /// Timestamp units per second (`if_tsresol`).
    units_per_sec: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: i64,
}

/// A receive queue that replays a capture file; see the [module docs](super).
pub struct PcapReader {
    port: String,
    path: String,
    reader: Box<dyn PcapReaderIterator + Send>,
    buffer_size: usize,
    /// Classic pcap: the timestamp fraction is in nanoseconds (else microseconds).
    legacy_nanos: bool,
    /// pcapng: the interfaces of the current section, indexed by interface id.
    ifaces: Vec<Iface>,
    /// Capture time of each frame appended by the last `rx_burst`, in the same order.
    timestamps: Vec<Duration>,
    total_bytes: Option<u64>,
    frames: u64,
    counts: Counts,
    done: bool,
    error: Option<String>,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("port", &self.port)
            .field("path", &self.path)
            .field("frames", &self.frames)
            .field("bytes_read", &self.bytes_read())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Opens `path` for replay as the receive queue of port `port`. Fails when the file cannot be
/// read, is neither pcap nor pcapng, or its (first) link type is not Ethernet.
pub fn open_reader(port: &str, path: &Path) -> Result<PcapReader, PortError> {
    let path_str = path.display().to_string();
    let file = File::open(path).map_err(|source| PortError::Io {
        port: port.to_string(),
        path: path_str.clone(),
        source,
    })?;
    let total_bytes = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    let capture_err =
        |detail: String| PortError::Capture { port: port.to_string(), path: path_str.clone(), detail };
    let reader = create_reader(READ_BUFFER, file).map_err(|e| {
        capture_err(match e {
            PcapError::Eof => "the file is empty".to_string(),
            PcapError::HeaderNotRecognized => {
                "unknown magic number (expected a pcap or pcapng header)".to_string()
            }
            PcapError::Incomplete(_) | PcapError::UnexpectedEof => {
                "the file is too short to hold a capture header".to_string()
            }
            other => other.to_string(),
        })
    })?;
    let mut r = PcapReader {
        port: port.to_string(),
        path: path_str.clone(),
        reader,
        buffer_size: READ_BUFFER,
        legacy_nanos: false,
        ifaces: Vec::with_capacity(4),
        timestamps: Vec::with_capacity(64),
        total_bytes,
        frames: 0,
        counts: Counts::default(),
        done: false,
        error: None,
    };
    r.read_preamble().map_err(capture_err)?;
    Ok(r)
}

/// Counts the frames (packet records) of a capture, for a progress bar. Reads the whole file;
/// [`PcapReader::bytes_read`] and [`PcapReader::total_bytes`] are the cheap alternative.
pub fn count_frames(path: &Path) -> Result<u64, PortError> {
    let mut r = open_reader("count", path)?;
    // Zero-capacity buffers: every non-empty frame is "too long", so nothing is copied.
    let mut pool = BufPool::new(1, 0);
    let mut out = Vec::with_capacity(1);
    let mut records = 0u64;
    while !r.done {
        match r.step(&mut pool, &mut out) {
            Step::Frame | Step::Skipped => records += 1,
            Step::Meta | Step::End | Step::NoBuffer => {}
        }
        out.drain(..).for_each(|b| pool.put(b));
        r.timestamps.clear();
    }
    match r.error {
        Some(detail) => Err(PortError::Capture { port: r.port, path: r.path, detail }),
        None => Ok(records),
    }
}

#[derive(Debug, Default)]
struct Counts {
    oversize: u64,
    skipped: u64,
}

/// Where a parsed packet record goes: the fields of [`PcapReader`] other than the parser.
struct Sink<'a> {
    pool: &'a mut BufPool,
    out: &'a mut Vec<PktBuf>,
    timestamps: &'a mut Vec<Duration>,
    counts: &'a mut Counts,
}

impl Sink<'_> {
    fn deliver(self, data: &[u8], ts: Duration, ethernet: bool) -> Step {
        if !ethernet {
            self.counts.skipped += 1;
            return Step::Skipped;
        }
        let Some(mut buf) = self.pool.get() else {
            return Step::NoBuffer;
        };
        if buf.fill(data) {
            self.out.push(buf);
            self.timestamps.push(ts);
            Step::Frame
        } else {
            self.pool.put(buf);
            self.counts.oversize += 1;
            Step::Skipped
        }
    }
}

/// What one parse step did.
enum Step {
    /// A frame was appended.
    Frame,
    /// A packet record was dropped (too long, not Ethernet).
    Skipped,
    /// A non-packet block was consumed, or more input was read.
    Meta,
    /// The pool is empty; the record stays for the next poll.
    NoBuffer,
    /// End of input (or of readable input).
    End,
}

impl PcapReader {
    /// Capture timestamps (since the Unix epoch) of the frames appended by the last
    /// `rx_burst`, index for index. Records without a timestamp (pcapng Simple Packet
    /// Blocks) read as zero.
    pub fn last_timestamps(&self) -> &[Duration] {
        &self.timestamps
    }

    /// Bytes of the file consumed so far (for progress reporting).
    pub fn bytes_read(&self) -> u64 {
        self.reader.consumed() as u64
    }

    /// Size of the file, when it is a regular file.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// Frames delivered so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Frames skipped because they were longer than the pool's buffers.
    pub fn oversize(&self) -> u64 {
        self.counts.oversize
    }

    /// Packets skipped because their pcapng interface is not Ethernet.
    pub fn skipped_non_ethernet(&self) -> u64 {
        self.counts.skipped
    }

    /// Why replay stopped before the end of the file (truncated or corrupt capture).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Reads the file header (and for pcapng the first interface), checking the link type.
    fn read_preamble(&mut self) -> Result<(), String> {
        loop {
            let at = self.reader.consumed();
            let (len, block) = match self.reader.next() {
                Ok(v) => v,
                Err(PcapError::Incomplete(_)) => {
                    self.refill()?;
                    continue;
                }
                // A pcapng section without interfaces: a valid, empty capture.
                Err(PcapError::Eof) => return Ok(()),
                Err(e) => return Err(describe(&e, at)),
            };
            match block {
                PcapBlockOwned::LegacyHeader(h) => {
                    check_ethernet(h.network)?;
                    self.legacy_nanos = h.is_nanosecond_precision();
                    self.reader.consume(len);
                    return Ok(());
                }
                PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                    check_ethernet(idb.linktype)?;
                    self.ifaces.push(iface(idb.linktype, idb.if_tsresol, idb.if_tsoffset));
                    self.reader.consume(len);
                    return Ok(());
                }
                PcapBlockOwned::NG(b) if b.is_data_block() => {
                    return Err("a packet block comes before any interface description block".to_string())
                }
                PcapBlockOwned::NG(_) | PcapBlockOwned::Legacy(_) => self.reader.consume(len),
            }
        }
    }

    /// Parses one block: delivers a frame, skips a record or consumes metadata.
    fn step(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>) -> Step {
        let (len, step) = {
            let (len, block) = match self.reader.next() {
                Ok(v) => v,
                Err(e) => {
                    let e = e.to_owned_vec();
                    return self.on_error(e);
                }
            };
            // `block` borrows the read buffer: only fields other than `reader` are touched
            // until it is dropped at the end of this scope.
            let sink = Sink { pool, out, timestamps: &mut self.timestamps, counts: &mut self.counts };
            let step = match block {
                PcapBlockOwned::Legacy(b) => {
                    let frac = if self.legacy_nanos { b.ts_usec } else { b.ts_usec.saturating_mul(1000) };
                    let ts = Duration::from_secs(u64::from(b.ts_sec)) + nanos(frac);
                    sink.deliver(b.data, ts, true)
                }
                PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => match self.ifaces.get(epb.if_id as usize) {
                    Some(i) => {
                        let ts = ng_timestamp(i, epb.ts_high, epb.ts_low);
                        sink.deliver(epb.packet_data(), ts, i.ethernet)
                    }
                    None => sink.deliver(&[], Duration::ZERO, false),
                },
                PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                    let ethernet = self.ifaces.first().is_some_and(|i| i.ethernet);
                    sink.deliver(spb.packet_data(), Duration::ZERO, ethernet)
                }
                PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                    // A new section starts: its interfaces are numbered from zero again.
                    self.ifaces.clear();
                    Step::Meta
                }
                PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                    if idb.linktype != Linktype::ETHERNET {
                        log::warn!(
                            "port {}: {}: interface {} has link type {}; its packets are skipped",
                            self.port,
                            self.path,
                            self.ifaces.len(),
                            idb.linktype
                        );
                    }
                    self.ifaces.push(iface(idb.linktype, idb.if_tsresol, idb.if_tsoffset));
                    Step::Meta
                }
                PcapBlockOwned::NG(_) | PcapBlockOwned::LegacyHeader(_) => Step::Meta,
            };
            (len, step)
        };
        if !matches!(step, Step::NoBuffer) {
            self.reader.consume(len);
        }
        step
    }

    fn on_error(&mut self, e: PcapError<&'static [u8]>) -> Step {
        let result = match e {
            PcapError::Eof => Ok(Step::End),
            PcapError::Incomplete(_) => self.refill().map(|()| Step::Meta),
            PcapError::BufferTooSmall if self.rest_is_buffered() => {
                Err(describe(&PcapError::UnexpectedEof, self.reader.consumed()))
            }
            PcapError::BufferTooSmall => self.grow().map(|()| Step::Meta),
            PcapError::UnexpectedEof if self.reader.data().is_empty() => Ok(Step::End),
            other => Err(describe(&other, self.reader.consumed())),
        };
        match result {
            Ok(Step::End) => {
                self.done = true;
                Step::End
            }
            Ok(step) => step,
            Err(detail) => {
                log::warn!("port {}: {}: {detail}; replay stops here", self.port, self.path);
                self.error = Some(detail);
                self.done = true;
                Step::End
            }
        }
    }

    /// Reads more of the file; a full buffer that still holds no complete record grows.
    fn refill(&mut self) -> Result<(), String> {
        let (before, at) = (self.reader.data().len(), self.reader.consumed());
        self.reader.refill().map_err(|e| describe(&e, at))?;
        if self.reader.data().len() == before && !self.reader.reader_exhausted() {
            self.grow()?;
        }
        Ok(())
    }

    /// The buffer already holds the rest of the file: a record that does not fit in it
    /// cannot be completed by reading (or growing) further.
    fn rest_is_buffered(&self) -> bool {
        let buffered = self.reader.data().len() as u64;
        self.reader.reader_exhausted() || self.total_bytes.is_some_and(|t| t <= self.bytes_read() + buffered)
    }

    fn grow(&mut self) -> Result<(), String> {
        let new_size = self.buffer_size.saturating_mul(2);
        if new_size > MAX_READ_BUFFER || !self.reader.grow(new_size) {
            return Err(format!(
                "a record at byte {} is larger than {} MiB (corrupt length field?)",
                self.reader.consumed(),
                MAX_READ_BUFFER >> 20
            ));
        }
        self.buffer_size = new_size;
        Ok(())
    }
}

impl RxQueue for PcapReader {
    fn rx_burst(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus {
        self.timestamps.clear();
        if self.done {
            return RxStatus::Exhausted;
        }
        let mut n = 0;
        while n < max {
            match self.step(pool, out) {
                Step::Frame => n += 1,
                Step::Skipped | Step::Meta => {}
                Step::NoBuffer => break,
                Step::End if n == 0 => return RxStatus::Exhausted,
                Step::End => break,
            }
        }
        self.frames += n as u64;
        RxStatus::Received(n)
    }

    /// Frames that could not be delivered: longer than the buffers, or not Ethernet.
    fn lost(&self) -> u64 {
        self.counts.oversize + self.counts.skipped
    }
}

fn check_ethernet(lt: Linktype) -> Result<(), String> {
    if lt == Linktype::ETHERNET {
        Ok(())
    } else {
        Err(format!(
            "link type {lt} ({}) is not supported; nflet replays Ethernet captures only \
             (LINKTYPE_ETHERNET, 1)",
            lt.0
        ))
    }
}

fn iface(lt: Linktype, tsresol: u8, offset_secs: i64) -> Iface {
    Iface { ethernet: lt == Linktype::ETHERNET, units_per_sec: ts_units_per_sec(tsresol), offset_secs }
}

/// Decodes pcapng `if_tsresol`: 10^-n seconds, or 2^-n when the top bit is set. Resolutions
/// that do not fit a u64 fall back to the default (microseconds).
fn ts_units_per_sec(tsresol: u8) -> u64 {
    let exp = u32::from(tsresol & 0x7f);
    let units = if tsresol & 0x80 == 0 { 10u64.checked_pow(exp) } else { 1u64.checked_shl(exp) };
    units.unwrap_or(MICROS)
}

fn ng_timestamp(i: &Iface, high: u32, low: u32) -> Duration {
    let ts = (u64::from(high) << 32) | u64::from(low);
    let secs = (ts / i.units_per_sec).saturating_add_signed(i.offset_secs);
    let frac = u128::from(ts % i.units_per_sec) * 1_000_000_000 / u128::from(i.units_per_sec);
    // frac < 1e9, so the conversion cannot fail.
    Duration::new(secs, u32::try_from(frac).unwrap_or(0))
}

fn nanos(n: u32) -> Duration {
    Duration::from_nanos(u64::from(n))
}

fn describe(e: &PcapError<&[u8]>, at: usize) -> String {
    match e {
        PcapError::UnexpectedEof | PcapError::Incomplete(_) => {
            format!("the file ends inside the record at byte {at} (truncated capture or corrupt length)")
        }
        PcapError::ReadError => format!("read error at byte {at}"),
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("corrupt record at byte {at} ({kind:?})")
        }
        other => format!("{other} at byte {at}"),
    }
}
