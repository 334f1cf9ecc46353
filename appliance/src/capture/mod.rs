//! Packet capture from a running appliance into a pcap file, started and stopped from the
//! management endpoint (`POST /capture`, see [`http`]).
//!
//! A capture has points (a port's received or transmitted frames, a chain's input), a filter
//! (protocol, host or prefix, port) and limits (frames, seconds, frames per second). What it
//! promises:
//!
//! - **The dataplane never waits for it.** Each core owns a [`Tap`]. With no capture running,
//!   a tap costs one relaxed atomic load per loop iteration. While one runs, a core copies the
//!   first `snaplen` bytes of each matching frame into a buffer taken from its own free list
//!   and pushes it onto its own bounded lock-free queue (1024 frames, fewer when `snaplen`
//!   times cores would preallocate over 32 MiB); no lock and no allocation on the
//!   packet path. An empty free list, a full queue or the rate limit make the frame a counted
//!   skip (`capture_skipped`), never a stall.
//! - **The rate limit is per core**: each core's [`TokenBucket`](rate::TokenBucket) passes
//!   `rate / cores` (rounded up) frames per second on the dataplane's monotonic clock.
//! - **One writer thread per capture** drains the queues every few milliseconds, orders each
//!   batch by capture time, writes the records with wall-clock timestamps of when the core saw
//!   the frame, and closes the file when `count` frames are written, `seconds` have passed, or
//!   the capture is stopped. Frames captured after the count was reached are discarded.

pub mod filter;
pub mod http;
pub mod rate;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use nflet_nfs::ids::PortId;
use nflet_nfs::time::Nanos;

use self::filter::Spec;
use self::rate::TokenBucket;
use crate::config::Config;
use crate::port::pcap::open_writer;
use crate::port::PktBuf;

/// Frames a core can have in flight to the writer, at most and at least.
const QUEUE_DEPTH: usize = 1024;
const MIN_QUEUE_DEPTH: usize = 64;
/// Buffer memory a capture may preallocate over all cores (large snaplens on many cores get
/// shallower queues).
const BUFFER_BUDGET: usize = 32 << 20;
/// How often the writer drains the queues.
const DRAIN_EVERY: Duration = Duration::from_millis(10);
/// Where captures go without `[management] capture_dir`.
pub const DEFAULT_DIR: &str = "/tmp/nflet-captures";

/// One captured frame on its way to the writer.
#[derive(Debug)]
struct Record {
    /// Wall-clock time the core saw the frame, nanoseconds since the Unix epoch.
    wall_ns: u64,
    orig_len: u32,
    /// The first `snaplen` bytes; a buffer from the core's free list.
    data: Vec<u8>,
}

/// A core's queues: records to the writer, empty buffers back. Aligned so that no two
/// cores' slots share a cache line.
#[derive(Debug)]
#[repr(align(128))]
struct Slot {
    full: ArrayQueue<Record>,
    free: ArrayQueue<Vec<u8>>,
    skipped: AtomicU64,
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Count,
    Duration,
    Stopped,
    WriteError,
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::Count => "count",
            End::Duration => "duration",
            End::Stopped => "stopped",
            End::WriteError => "write_error",
        }
    }
}

/// One capture, shared by the cores (reading), the writer and the endpoint.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub spec: Spec,
    /// File name inside the capture directory.
    pub file: String,
    pub path: PathBuf,
    slots: Vec<Slot>,
    stop: AtomicBool,
    written: AtomicU64,
    ended: Mutex<Option<End>>,
    started: Instant,
}

/// What `GET /capture` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: u64,
    pub file: String,
    pub point: String,
    pub filter: String,
    pub written: u64,
    pub skipped: u64,
    /// `None` while running.
    pub ended: Option<End>,
    pub elapsed_ms: u64,
}

impl Session {
    pub fn report(&self) -> Report {
        Report {
            id: self.id,
            file: self.file.clone(),
            point: self.spec.point_text.clone(),
            filter: self.spec.filter_text.clone(),
            written: self.written.load(Ordering::Relaxed),
            skipped: self.slots.iter().map(|s| s.skipped.load(Ordering::Relaxed)).sum(),
            ended: *self.ended.lock().unwrap_or_else(PoisonError::into_inner),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
        }
    }
}

/// Why a capture could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// A capture is running already.
    Busy(u64),
    /// The file could not be created.
    Io(String),
}

/// The capture state of one appliance: at most one capture at a time.
#[derive(Debug)]
pub struct Hub {
    /// Raised while a capture runs: the only thing cores read when none does.
    active: AtomicBool,
    /// Bumped at each start; a core that sees a new value fetches the session.
    generation: AtomicU64,
    current: Mutex<Option<Arc<Session>>>,
    pub ports: Vec<String>,
    /// The running chains' names; a live reload may change them.
    chains: Mutex<Vec<String>>,
    cores: usize,
    pub dir: PathBuf,
}

impl Hub {
    pub fn new(config: &Config) -> Hub {
        let dir =
            config.management.as_ref().map_or_else(|| PathBuf::from(DEFAULT_DIR), |m| m.capture_dir.clone());
        Hub {
            active: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            current: Mutex::new(None),
            ports: config.port_names(),
            chains: Mutex::new(config.chains.iter().map(|c| c.name.clone()).collect()),
            cores: config.settings.cores.max(1),
            dir,
        }
    }

    /// The running chains' names (a capture's `chain:NAME` points are resolved against them).
    pub fn chains(&self) -> Vec<String> {
        self.chains.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The run loop's chain names, about ten times a second. After a live reload changed
    /// them, a running capture with chain points is stopped: its chain numbers would now
    /// name other chains.
    pub fn follow_chains(&self, names: &[String]) {
        let mut chains = self.chains.lock().unwrap_or_else(PoisonError::into_inner);
        if chains.as_slice() == names {
            return;
        }
        *chains = names.to_vec();
        drop(chains);
        if let Some(s) = self.session().filter(|s| s.spec.points.chains.iter().any(|c| *c)) {
            if self.stop() {
                log::warn!("capture {}: stopped, the chains changed (live reload); start it again", s.id);
            }
        }
    }

    /// The running or last capture.
    pub fn session(&self) -> Option<Arc<Session>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Starts a capture: creates its file and its writer thread, then turns the taps on.
    pub fn start(self: &Arc<Self>, spec: Spec) -> Result<Arc<Session>, StartError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) =
            current.as_ref().filter(|s| s.ended.lock().unwrap_or_else(PoisonError::into_inner).is_none())
        {
            return Err(StartError::Busy(s.id));
        }
        let id = self.generation.load(Ordering::Relaxed) + 1;
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            StartError::Io(format!(
                "cannot create the capture directory {}: {e}; set `[management] capture_dir` to a writable directory",
                self.dir.display()
            ))
        })?;
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let file = format!("capture-{secs}-{id}.pcap");
        let path = self.dir.join(&file);
        let out = open_writer("capture", &path).map_err(|e| StartError::Io(e.to_string()))?;
        let depth = queue_depth(spec.snaplen, self.cores);
        let slots = (0..self.cores)
            .map(|_| {
                let free = ArrayQueue::new(depth);
                for _ in 0..depth {
                    let _ = free.push(Vec::with_capacity(spec.snaplen));
                }
                Slot { full: ArrayQueue::new(depth), free, skipped: AtomicU64::new(0) }
            })
            .collect();
        let session = Arc::new(Session {
            id,
            spec,
            file,
            path,
            slots,
            stop: AtomicBool::new(false),
            written: AtomicU64::new(0),
            ended: Mutex::new(None),
            started: Instant::now(),
        });
        let (hub, s) = (Arc::clone(self), Arc::clone(&session));
        std::thread::Builder::new()
            .name("nflet-capture".into())
            .spawn(move || drain(&hub, &s, out))
            .map_err(|e| StartError::Io(format!("cannot start the capture writer thread: {e}")))?;
        *current = Some(Arc::clone(&session));
        self.generation.store(id, Ordering::Release);
        self.active.store(true, Ordering::Release);
        log::info!(
            "capture {id}: {} ({}) at {} to {}",
            session.spec.filter_text,
            session.spec.point_text,
            session.spec.count,
            session.path.display()
        );
        Ok(session)
    }

    /// Asks the running capture to end; its writer closes the file. False when none runs.
    pub fn stop(&self) -> bool {
        match self.session() {
            Some(s) if s.ended.lock().unwrap_or_else(PoisonError::into_inner).is_none() => {
                s.stop.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// Frames per core queue: [`QUEUE_DEPTH`], less when the buffers would exceed
/// [`BUFFER_BUDGET`], never under [`MIN_QUEUE_DEPTH`].
fn queue_depth(snaplen: usize, cores: usize) -> usize {
    (BUFFER_BUDGET / snaplen.max(1) / cores.max(1)).clamp(MIN_QUEUE_DEPTH, QUEUE_DEPTH)
}

/// The writer thread of one capture (module doc).
fn drain(hub: &Hub, s: &Session, mut out: crate::port::pcap::PcapWriter) {
    let deadline = s.started + Duration::from_secs(s.spec.seconds);
    let mut batch: Vec<(usize, Record)> = Vec::with_capacity(QUEUE_DEPTH);
    let mut written = 0u64;
    let end = loop {
        let stopping = s.stop.load(Ordering::Relaxed);
        let timed_out = Instant::now() >= deadline;
        for (core, slot) in s.slots.iter().enumerate() {
            while let Some(r) = slot.full.pop() {
                batch.push((core, r));
            }
        }
        batch.sort_by_key(|(_, r)| r.wall_ns);
        let mut failed = false;
        for (core, r) in batch.drain(..) {
            if written < s.spec.count && !failed {
                let ts = Duration::from_nanos(r.wall_ns);
                match out.write_record(ts, r.orig_len, &r.data) {
                    Ok(()) => written += 1,
                    Err(e) => {
                        log::error!("capture {}: {}: write failed: {e}", s.id, s.path.display());
                        failed = true;
                    }
                }
            }
            if let Some(slot) = s.slots.get(core) {
                let _ = slot.free.push(r.data);
            }
        }
        s.written.store(written, Ordering::Relaxed);
        // Flushed as it goes: the file is readable while the capture runs, and complete up to
        // the last batch if the appliance stops before the capture ends.
        if !failed && written > 0 {
            if let Err(e) = out.flush_file() {
                log::error!("capture {}: {}: write failed: {e}", s.id, s.path.display());
                failed = true;
            }
        }
        if failed {
            break End::WriteError;
        }
        if written >= s.spec.count {
            break End::Count;
        }
        if stopping {
            break End::Stopped;
        }
        if timed_out {
            break End::Duration;
        }
        std::thread::sleep(DRAIN_EVERY);
    };
    hub.active.store(false, Ordering::Release);
    let end = match out.flush_file() {
        Ok(()) => end,
        Err(e) => {
            log::error!("capture {}: {}: flush failed: {e}", s.id, s.path.display());
            End::WriteError
        }
    };
    drop(out);
    *s.ended.lock().unwrap_or_else(PoisonError::into_inner) = Some(end);
    log::info!("capture {}: ended ({}), {written} frame(s) in {}", s.id, end.name(), s.path.display());
}

/// A core's view of the capture (module doc): owned by the core, read on its packet path.
#[derive(Debug, Default)]
pub struct Tap {
    hub: Option<Arc<Hub>>,
    core: usize,
    /// The generation whose session is held.
    seen: u64,
    session: Option<Arc<Session>>,
    bucket: Option<TokenBucket>,
    now: Nanos,
    /// Wall-clock nanoseconds at monotonic zero, taken when the session was picked up.
    wall_at_zero: u64,
}

impl Tap {
    /// A tap that never captures (no endpoint).
    pub fn off() -> Tap {
        Tap::default()
    }

    pub fn new(hub: Arc<Hub>, core: usize) -> Tap {
        Tap { hub: Some(hub), core, ..Tap::default() }
    }

    /// Once per loop iteration: notes the time and picks up a capture that started or ended.
    #[inline]
    pub fn poll(&mut self, now: Nanos) {
        let Some(hub) = &self.hub else { return };
        if !hub.active.load(Ordering::Relaxed) {
            if self.session.is_some() {
                self.session = None;
            }
            return;
        }
        self.now = now;
        let generation = hub.generation.load(Ordering::Acquire);
        if generation != self.seen {
            self.seen = generation;
            self.session = hub.session();
            let rate = self.session.as_ref().and_then(|s| s.spec.rate);
            let cores = hub.cores.max(1) as u64;
            self.bucket = rate.map(|r| TokenBucket::new(r.div_ceil(cores), now));
            let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
            self.wall_at_zero = wall.saturating_sub(now.0);
        }
    }

    /// Frames received on `port`.
    #[inline]
    pub fn rx(&mut self, port: PortId, frames: &[PktBuf]) {
        if let Some(s) = self.session.take() {
            if s.spec.points.rx.get(usize::from(port.0)).copied().unwrap_or(false) {
                frames.iter().for_each(|f| self.take(&s, f.data()));
            }
            self.session = Some(s);
        }
    }

    /// Frames about to be transmitted on port `port`.
    #[inline]
    pub fn tx(&mut self, port: usize, frames: &[PktBuf]) {
        if let Some(s) = self.session.take() {
            if s.spec.points.tx.get(port).copied().unwrap_or(false) {
                frames.iter().for_each(|f| self.take(&s, f.data()));
            }
            self.session = Some(s);
        }
    }

    /// The frames at `active` of `frames`, about to enter chain `chain`.
    #[inline]
    pub fn chain(&mut self, chain: usize, frames: &[PktBuf], active: &[u16]) {
        if let Some(s) = self.session.take() {
            if s.spec.points.chains.get(chain).copied().unwrap_or(false) {
                for f in active.iter().filter_map(|&i| frames.get(usize::from(i))) {
                    self.take(&s, f.data());
                }
            }
            self.session = Some(s);
        }
    }

    fn take(&mut self, s: &Session, frame: &[u8]) {
        if !s.spec.filter.matches(frame) {
            return;
        }
        let Some(slot) = s.slots.get(self.core) else { return };
        let allowed = self.bucket.as_mut().is_none_or(|b| b.allow(self.now));
        let buf = if allowed { slot.free.pop() } else { None };
        let Some(mut data) = buf else {
            slot.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        data.clear();
        // The buffer was allocated with `snaplen` capacity: no allocation here.
        data.extend_from_slice(frame.get(..s.spec.snaplen).unwrap_or(frame));
        let record = Record {
            wall_ns: self.wall_at_zero.saturating_add(self.now.0),
            orig_len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            data,
        };
        if let Err(r) = slot.full.push(record) {
            slot.skipped.fetch_add(1, Ordering::Relaxed);
            let _ = slot.free.push(r.data);
        }
    }
}

#[cfg(test)]
mod tests;
