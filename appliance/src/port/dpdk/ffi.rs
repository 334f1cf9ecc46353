//! nflet's one safe wrapper over DPDK: every `unsafe` call into `dpdk-sys` is in this file.
//!
//! It owns three kinds of DPDK objects:
//! - the EAL, initialised once per process ([`eal_init`]);
//! - packet buffer pools ([`Mempool`]), which live as long as the process: mbufs from a pool
//!   may still be in flight anywhere in the dataplane when a port closes, so a pool is never
//!   freed, and one pool per NUMA socket is shared by every port on it;
//! - owned packet buffers ([`Mbuf`]): exactly one owner at a time, freed on drop, handed to
//!   the driver by [`tx_burst`] only for the buffers the driver accepted.
//!
//! Ports are identified by their DPDK port id; functions taking one check it against
//! `rte_eth_dev_is_valid_port` first, so an id that does not exist is an error, not UB.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use std::ptr::NonNull;

use dpdk_sys as sys;

/// A DPDK call failed: what was attempted and DPDK's reason (decoded from `rte_errno` or
/// the negative return code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpdkError {
    pub what: String,
    pub reason: String,
}

impl std::fmt::Display for DpdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

fn strerror(code: c_int) -> String {
    // SAFETY: rte_strerror accepts any error number and returns a pointer to a static or
    // per-thread string that stays valid until the next call on this thread; it is copied out
    // immediately.
    let s = unsafe { CStr::from_ptr(sys::rte_strerror(code.abs())) };
    format!("{} (errno {})", s.to_string_lossy(), code.abs())
}

fn rte_errno() -> c_int {
    // SAFETY: reads the calling thread's rte_errno; no preconditions.
    unsafe { sys::nflet_errno() }
}

/// Turns a DPDK return code (negative errno on failure) into a result.
fn check(what: impl FnOnce() -> String, rc: c_int) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(DpdkError { what: what(), reason: strerror(rc) })
    } else {
        Ok(())
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, DpdkError> {
    CString::new(s).map_err(|_| DpdkError { what: what.into(), reason: format!("`{s}` contains a NUL byte") })
}

/// The DPDK release nflet runs on, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::rte_version()) }.to_string_lossy().into_owned()
}

/// Initialises the EAL with `args` (without the program name). Call once per process; the
/// caller ([`super::eal`]) remembers the outcome.
pub fn eal_init(args: &[String]) -> Result<(), DpdkError> {
    let mut owned = vec![cstring("EAL arguments", "nflet")?];
    for a in args {
        owned.push(cstring("EAL arguments", a)?);
    }
    // EAL keeps pointers into argv (and may permute it): both stay alive for the process.
    let owned: &'static [CString] = Box::leak(owned.into_boxed_slice());
    let argv: &'static mut [*mut c_char] =
        Box::leak(owned.iter().map(|c| c.as_ptr().cast_mut()).collect::<Vec<_>>().into_boxed_slice());
    let argc = c_int::try_from(argv.len()).unwrap_or(c_int::MAX);
    // SAFETY: argv holds argc valid NUL-terminated strings that live for the rest of the
    // process; EAL is initialised at most once (the caller serialises and remembers it).
    let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
    if rc < 0 {
        return Err(DpdkError { what: "EAL initialisation".into(), reason: strerror(rte_errno()) });
    }
    Ok(())
}

/// Makes the calling thread known to DPDK (an lcore id of its own), so mempool operations
/// use a per-thread cache. Undone when the thread exits.
pub fn register_thread() {
    struct Registered;
    impl Drop for Registered {
        fn drop(&mut self) {
            // SAFETY: runs on the thread that registered, at its exit; unregistering a
            // thread DPDK did not register is a no-op.
            unsafe { sys::rte_thread_unregister() };
        }
    }
    thread_local! {
        static REGISTERED: std::cell::OnceCell<Registered> = const { std::cell::OnceCell::new() };
    }
    REGISTERED.with(|r| {
        r.get_or_init(|| {
            // SAFETY: the EAL is initialised (ports exist only after eal_init succeeded); a
            // failure (no free lcore id) leaves the thread unregistered, which DPDK supports
            // at the cost of the mempool cache.
            let _ = unsafe { sys::rte_thread_register() };
            Registered
        });
    });
}

/// A pool of packet buffers. Never freed (see the module doc); shared by all cores, which
/// DPDK mempools support.
#[derive(Debug, Clone, Copy)]
pub struct Mempool(NonNull<sys::rte_mempool>);

// SAFETY: a DPDK mempool is safe to use from several threads at once (its ring is MP/MC);
// the pointer stays valid for the process (pools are never freed).
unsafe impl Send for Mempool {}
// SAFETY: as above; all operations through a shared reference are thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `n` mbufs with `data_room` bytes each (headroom included) on
    /// NUMA `socket`.
    pub fn create(name: &str, n: u32, data_room: u16, socket: i32) -> Result<Mempool, DpdkError> {
        let cname = cstring("mbuf pool", name)?;
        let cache = 256.min(n / 16);
        // SAFETY: cname is a valid C string for the duration of the call; the EAL is
        // initialised; sizes are checked by DPDK, which fails with rte_errno set.
        let p = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket) };
        NonNull::new(p).map(Mempool).ok_or_else(|| DpdkError {
            what: format!("creating {n} packet buffers on NUMA socket {socket}"),
            reason: strerror(rte_errno()),
        })
    }

    /// A fresh single-segment buffer, or `None` when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool pointer is valid for the process.
        let m = unsafe { sys::nflet_pktmbuf_alloc(self.0.as_ptr()) };
        // SAFETY: a buffer just allocated is single-segment and owned by nobody else.
        NonNull::new(m).and_then(|m| unsafe { Mbuf::adopt(m) })
    }
}

/// One packet buffer, owned. Single-segment: the frame is one contiguous byte slice.
#[derive(Debug)]
pub struct Mbuf {
    m: NonNull<sys::rte_mbuf>,
    /// The frame's first byte (cached: the fast path reads it per NF).
    data: NonNull<u8>,
    len: u16,
    /// Bytes from `data` to the end of the buffer (frame plus tailroom).
    room: u16,
}

// SAFETY: an Mbuf is the only reference to its buffer; DPDK buffers may be freed or sent by
// any thread.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of `m`. Multi-segment buffers are freed and refused (`None`).
    ///
    /// # Safety
    /// `m` must be a valid mbuf that nothing else owns or will free.
    #[inline]
    unsafe fn adopt(m: NonNull<sys::rte_mbuf>) -> Option<Mbuf> {
        let p = m.as_ptr();
        // SAFETY: p is a valid mbuf (caller's contract); the accessors only read its header.
        let (segs, len, tail, data) = unsafe {
            (
                sys::nflet_mbuf_nb_segs(p),
                sys::nflet_mbuf_data_len(p),
                sys::nflet_mbuf_tailroom(p),
                sys::nflet_mbuf_data(p),
            )
        };
        let Some(data) = NonNull::new(data).filter(|_| segs == 1) else {
            // SAFETY: we own p and drop it here.
            unsafe { sys::nflet_pktmbuf_free(p) };
            return None;
        };
        Some(Mbuf { m, data, len, room: len.saturating_add(tail) })
    }

    /// The frame.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: data..data+len lies inside the buffer's data room (DPDK's data_len), which
        // this Mbuf owns exclusively for its lifetime.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), usize::from(self.len)) }
    }

    /// The frame, writable in place.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` guarantees the slice is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), usize::from(self.len)) }
    }

    /// The frame's bytes plus the tailroom after it, for filling before [`Mbuf::set_len`].
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        // SAFETY: data..data+room is the buffer's data room from the frame start to its end
        // (data_len + tailroom), owned exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), usize::from(self.room)) }
    }

    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn room(&self) -> usize {
        usize::from(self.room)
    }

    /// Sets the frame length (clamped to the room).
    #[inline]
    pub fn set_len(&mut self, len: usize) {
        let len = u16::try_from(len).unwrap_or(u16::MAX).min(self.room);
        if len != self.len {
            self.len = len;
            // SAFETY: the buffer is single-segment and owned; len ≤ data_len + tailroom.
            unsafe { sys::nflet_mbuf_set_len(self.m.as_ptr(), len) };
        }
    }

    /// The RSS hash the NIC computed, or 0.
    #[inline]
    pub fn rss(&self) -> u32 {
        // SAFETY: reads the header of an owned, valid mbuf.
        unsafe { sys::nflet_mbuf_rss(self.m.as_ptr()) }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the buffer; after this nothing refers to it.
        unsafe { sys::nflet_pktmbuf_free(self.m.as_ptr()) };
    }
}

/// Most buffers moved per driver call.
pub const MAX_BURST: usize = 64;

/// Receives up to `max` (≤ [`MAX_BURST`]) frames from `queue` of `port` into `out`. Returns
/// how many arrived and how many were refused for spanning several segments.
#[inline]
pub fn rx_burst(port: u16, queue: u16, out: &mut Vec<Mbuf>, max: usize) -> (usize, usize) {
    let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
    let n = u16::try_from(max.min(MAX_BURST)).unwrap_or(0);
    // SAFETY: raw has room for n pointers; port and queue were validated and set up when the
    // port started, and each queue is polled by one thread only (its owner core).
    let got = usize::from(unsafe { sys::nflet_rx_burst(port, queue, raw.as_mut_ptr(), n) });
    let mut refused = 0;
    for &p in raw.iter().take(got) {
        // SAFETY: the driver hands over ownership of each returned buffer.
        match NonNull::new(p).and_then(|p| unsafe { Mbuf::adopt(p) }) {
            Some(m) => out.push(m),
            None => refused += 1,
        }
    }
    (got - refused, refused)
}

/// Hands the buffers at the front of `bufs` to `queue` of `port`; the ones the driver took
/// are removed, the rest stay in `bufs` in order. Returns how many were sent.
#[inline]
pub fn tx_burst(port: u16, queue: u16, bufs: &mut Vec<Mbuf>) -> usize {
    let mut raw = [std::ptr::null_mut::<sys::rte_mbuf>(); MAX_BURST];
    let n = bufs.len().min(MAX_BURST);
    for (slot, b) in raw.iter_mut().zip(bufs.iter()) {
        *slot = b.m.as_ptr();
    }
    // SAFETY: raw holds n valid owned buffers; each transmit queue is used by one thread.
    let sent = usize::from(unsafe { sys::nflet_tx_burst(port, queue, raw.as_mut_ptr(), n as u16) });
    // The driver owns the first `sent` buffers now: forget them without freeing.
    bufs.drain(..sent.min(n)).for_each(std::mem::forget);
    sent
}

/// What a port offers, from `rte_eth_dev_info_get`.
#[derive(Debug, Clone)]
pub struct DevInfo {
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// RSS hash types the device supports (0: no RSS).
    pub rss_types: u64,
    pub rss_key_size: u8,
    pub rx_offloads: u64,
    pub socket: i32,
}

fn valid(port: u16) -> Result<(), DpdkError> {
    // SAFETY: only checks the id against DPDK's port table.
    if unsafe { sys::rte_eth_dev_is_valid_port(port) } == 1 {
        Ok(())
    } else {
        Err(DpdkError { what: format!("DPDK port {port}"), reason: "no such port".into() })
    }
}

/// Creates a virtual device (`net_memif0,role=server`): name before the first comma,
/// arguments after it.
pub fn vdev_create(spec: &str) -> Result<(), DpdkError> {
    let (name, args) = spec.split_once(',').unwrap_or((spec, ""));
    let (cname, cargs) = (cstring("virtual device", name)?, cstring("virtual device", args)?);
    // SAFETY: both strings are valid for the call; the EAL is initialised.
    let rc = unsafe { sys::rte_vdev_init(cname.as_ptr(), cargs.as_ptr()) };
    check(|| format!("creating virtual device `{spec}`"), rc)
}

/// Removes a virtual device created by [`vdev_create`].
pub fn vdev_remove(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: a valid C string; removing a device that does not exist returns an error,
        // which is ignored (this runs at teardown).
        let _ = unsafe { sys::rte_vdev_uninit(c.as_ptr()) };
    }
}

/// The port id of the device DPDK names `name` (PCI address or virtual device name).
pub fn port_by_name(name: &str) -> Option<u16> {
    let c = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: c is a valid C string and id a valid out-pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
    (rc == 0).then_some(id)
}

pub fn dev_info(port: u16) -> Result<DevInfo, DpdkError> {
    valid(port)?;
    let mut info = sys::rte_eth_dev_info::default();
    // SAFETY: valid port; info is a properly sized out-struct.
    let rc = unsafe { sys::rte_eth_dev_info_get(port, &mut info) };
    check(|| format!("reading the capabilities of DPDK port {port}"), rc)?;
    let driver = if info.driver_name.is_null() {
        String::from("?")
    } else {
        // SAFETY: driver_name points to the driver's static name string.
        unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
    };
    // SAFETY: valid port; reads its NUMA socket.
    let socket = unsafe { sys::rte_eth_dev_socket_id(port) };
    Ok(DevInfo {
        driver,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_types: info.flow_type_rss_offloads,
        rss_key_size: info.hash_key_size,
        rx_offloads: info.rx_offload_capa,
        socket,
    })
}

/// The RSS hash types nflet asks for (IPv4/IPv6 with TCP/UDP ports).
pub fn wanted_rss_types() -> u64 {
    // SAFETY: returns a constant.
    unsafe { sys::nflet_rss_hf() }
}

/// The receive offload flag asking the NIC to deliver its RSS hash in each buffer.
pub fn rx_offload_rss_hash() -> u64 {
    // SAFETY: returns a constant.
    unsafe { sys::nflet_rx_offload_rss_hash() }
}

/// Configures `port` with `rx`/`tx` queues; with `rss`, hashes flows with that key over the
/// given hash types.
pub fn configure(
    port: u16,
    rx: u16,
    tx: u16,
    rss: Option<(&mut [u8], u64)>,
    rx_offloads: u64,
) -> Result<(), DpdkError> {
    valid(port)?;
    let mut conf = sys::rte_eth_conf::default();
    conf.rxmode.offloads = rx_offloads;
    if let Some((key, types)) = rss {
        conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_key = key.as_mut_ptr();
        conf.rx_adv_conf.rss_conf.rss_key_len = u8::try_from(key.len()).unwrap_or(u8::MAX);
        conf.rx_adv_conf.rss_conf.rss_hf = types;
    }
    // SAFETY: valid port; conf (and the key it points to) outlive the call, which copies them.
    let rc = unsafe { sys::rte_eth_dev_configure(port, rx, tx, &conf) };
    check(|| format!("configuring DPDK port {port} with {rx} receive and {tx} transmit queues"), rc)
}

pub fn rx_queue_setup(port: u16, queue: u16, desc: u16, socket: i32, pool: Mempool) -> Result<(), DpdkError> {
    // SAFETY: the port is configured (configure succeeded); a null rxconf selects the
    // driver's defaults; the pool lives for the process.
    let rc = unsafe {
        sys::rte_eth_rx_queue_setup(port, queue, desc, socket as u32, std::ptr::null(), pool.0.as_ptr())
    };
    check(|| format!("setting up receive queue {queue} ({desc} descriptors) of DPDK port {port}"), rc)
}

pub fn tx_queue_setup(port: u16, queue: u16, desc: u16, socket: i32) -> Result<(), DpdkError> {
    // SAFETY: the port is configured; a null txconf selects the driver's defaults.
    let rc = unsafe { sys::rte_eth_tx_queue_setup(port, queue, desc, socket as u32, std::ptr::null()) };
    check(|| format!("setting up transmit queue {queue} ({desc} descriptors) of DPDK port {port}"), rc)
}

pub fn start(port: u16) -> Result<(), DpdkError> {
    // SAFETY: the port is configured and its queues set up.
    let rc = unsafe { sys::rte_eth_dev_start(port) };
    check(|| format!("starting DPDK port {port}"), rc)?;
    // Promiscuous mode: nflet is a bump in the wire or a gateway for many addresses. Not
    // every device supports it (virtual devices often are promiscuous anyway).
    // SAFETY: valid, started port.
    let _ = unsafe { sys::rte_eth_promiscuous_enable(port) };
    Ok(())
}

/// Stops and closes `port` (at teardown; errors are ignored, there is nothing left to do).
pub fn stop_and_close(port: u16) {
    if valid(port).is_ok() {
        // SAFETY: valid port; no queue of it is polled any more (the last queue is gone).
        unsafe {
            let _ = sys::rte_eth_dev_stop(port);
            let _ = sys::rte_eth_dev_close(port);
        }
    }
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

pub fn link(port: u16) -> Result<Link, DpdkError> {
    valid(port)?;
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid port; l is a proper out-struct.
    let rc = unsafe { sys::rte_eth_link_get_nowait(port, &mut l) };
    check(|| format!("reading the link of DPDK port {port}"), rc)?;
    Ok(Link { up: l.link_status() != 0, speed_mbps: l.link_speed, full_duplex: l.link_duplex() != 0 })
}

pub fn mac(port: u16) -> Result<[u8; 6], DpdkError> {
    valid(port)?;
    let mut a = sys::rte_ether_addr::default();
    // SAFETY: valid port; a is a proper out-struct.
    let rc = unsafe { sys::rte_eth_macaddr_get(port, &mut a) };
    check(|| format!("reading the MAC address of DPDK port {port}"), rc)?;
    Ok(a.addr_bytes)
}

/// Basic port counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    /// Frames the NIC dropped because the receive queues were full (nflet too slow).
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    /// Receive failures for lack of packet buffers.
    pub rx_nombuf: u64,
}

pub fn stats(port: u16) -> Result<Stats, DpdkError> {
    valid(port)?;
    let mut s = sys::rte_eth_stats::default();
    // SAFETY: valid port; s is a proper out-struct.
    let rc = unsafe { sys::rte_eth_stats_get(port, &mut s) };
    check(|| format!("reading the counters of DPDK port {port}"), rc)?;
    Ok(Stats {
        ipackets: s.ipackets,
        opackets: s.opackets,
        ibytes: s.ibytes,
        obytes: s.obytes,
        imissed: s.imissed,
        ierrors: s.ierrors,
        oerrors: s.oerrors,
        rx_nombuf: s.rx_nombuf,
    })
}

/// The driver's extended counters, by name.
pub fn xstats(port: u16) -> Result<Vec<(String, u64)>, DpdkError> {
    valid(port)?;
    // SAFETY: a null array with size 0 asks for the number of counters.
    let n = unsafe { sys::rte_eth_xstats_get_names(port, std::ptr::null_mut(), 0) };
    let what = || format!("reading the extended counters of DPDK port {port}");
    check(what, n)?;
    let n = usize::try_from(n).unwrap_or(0);
    let mut names = vec![sys::rte_eth_xstat_name::default(); n];
    let mut values = vec![sys::rte_eth_xstat::default(); n];
    let size = u32::try_from(n).unwrap_or(0);
    // SAFETY: both arrays hold `size` elements.
    let got = unsafe { sys::rte_eth_xstats_get_names(port, names.as_mut_ptr(), size) };
    check(what, got)?;
    // SAFETY: as above.
    let got = unsafe { sys::rte_eth_xstats_get(port, values.as_mut_ptr(), size) };
    check(what, got)?;
    Ok(values
        .iter()
        .filter_map(|v| {
            let name = names.get(usize::try_from(v.id).ok()?)?;
            // SAFETY: DPDK NUL-terminates names within the fixed-size array.
            let s = unsafe { CStr::from_ptr(name.name.as_ptr()) };
            Some((s.to_string_lossy().into_owned(), v.value))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_decode_errno() {
        assert!(strerror(-12).contains("errno 12"), "{}", strerror(-12));
        let e = check(|| "x".into(), -22).unwrap_err();
        assert_eq!(e.what, "x");
        assert!(e.reason.contains("22"));
        assert!(check(|| "x".into(), 0).is_ok());
    }

    #[test]
    fn version_is_the_pinned_release() {
        assert!(version().starts_with("DPDK 22.11"), "{}", version());
    }
}
