//! Opening the sockets of a port: checks, ring setup, the fanout group, and error messages
//! that say how to fix what went wrong.

use std::io;

use super::rx::AfPacketRx;
use super::sys::{self, PacketSocket};
use super::tx::{AfPacketTx, TxGeometry};
use super::AfPacketOptions;
use crate::port::PortError;

/// The most sockets one fanout group takes (`PACKET_FANOUT_MAX`).
const MAX_QUEUES: usize = 256;
/// Slot size of a V3 receive ring: only used by the kernel's size checks.
const RX_FRAME_SIZE: usize = 2048;
/// Transmit ring blocks are at least this big (fewer, larger allocations).
const TX_MIN_BLOCK: usize = 64 << 10;
pub(super) const ETH_P_ALL: u16 = 0x0003;

/// The port and interface an error is about.
#[derive(Clone, Copy)]
pub(super) struct Ctx<'a> {
    pub port: &'a str,
    pub iface: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, detail: String) -> PortError {
        PortError::Interface { port: self.port.to_string(), iface: self.iface.to_string(), detail }
    }

    /// Turns an OS error during `what` into a message that says how to fix it.
    pub(super) fn os(&self, what: &str, e: io::Error) -> PortError {
        self.err(os_detail(self.iface, what, &e))
    }

    pub(super) fn validate(&self, queues: usize, o: &AfPacketOptions, page: usize) -> Result<(), PortError> {
        let config = |detail: String| PortError::Config { port: self.port.to_string(), detail };
        if !(1..=MAX_QUEUES).contains(&queues) {
            return Err(config(format!("af_packet: {queues} queues; use 1 to {MAX_QUEUES}")));
        }
        if o.rx_block_size < RX_FRAME_SIZE || o.rx_block_size & (page - 1) != 0 {
            return Err(config(format!(
                "af_packet: rx_block_size {} must be a multiple of the page size ({page}) and \
                 at least {RX_FRAME_SIZE}",
                o.rx_block_size
            )));
        }
        let ring = o.rx_block_size.checked_mul(o.rx_blocks);
        if o.rx_blocks == 0 || ring.is_none_or(|r| r > u32::MAX as usize) {
            return Err(config(format!("af_packet: rx_blocks {} is out of range", o.rx_blocks)));
        }
        if o.tx_frames == 0 || o.max_frame < 14 || o.max_frame > (1 << 20) {
            return Err(config(format!(
                "af_packet: tx_frames {} / max_frame {} are out of range",
                o.tx_frames, o.max_frame
            )));
        }
        let bad_name = self.iface.is_empty()
            || self.iface.len() >= libc::IFNAMSIZ
            || self.iface.contains(['/', '\0'])
            || self.iface.contains(char::is_whitespace);
        if bad_name {
            return Err(self.err(format!(
                "not a valid interface name (1 to {} bytes, no '/' or spaces); check `ip link`",
                libc::IFNAMSIZ - 1
            )));
        }
        Ok(())
    }

    /// The interface must be up (a fanout group cannot form on a down interface, and nothing
    /// would flow); warns when its MTU lets through frames the buffers cannot hold.
    pub(super) fn check_link(&self, sock: &PacketSocket, opts: &AfPacketOptions) -> Result<(), PortError> {
        let flags = sock.iface_flags(self.iface).map_err(|e| self.os("reading the flags", e))?;
        if flags & libc::IFF_UP as u32 == 0 {
            return Err(
                self.err(format!("interface is down; bring it up with `ip link set dev {} up`", self.iface))
            );
        }
        if let Ok(mtu) = sock.iface_mtu(self.iface) {
            // Ethernet header plus one VLAN tag.
            if mtu as usize + 18 > opts.max_frame {
                log::warn!(
                    "port {}: interface {}: MTU {mtu} exceeds the {}-byte frame buffers; \
                     longer frames are dropped and counted as lost",
                    self.port,
                    self.iface,
                    opts.max_frame
                );
            }
        }
        Ok(())
    }

    pub(super) fn open_rx(
        &self,
        sock: PacketSocket,
        ifindex: u32,
        opts: &AfPacketOptions,
        fanout: bool,
        fanout_id: &mut Option<u16>,
    ) -> Result<AfPacketRx, PortError> {
        let os = |what: &'static str| move |e: io::Error| self.os(what, e);
        sock.set_int(libc::SOL_PACKET, libc::PACKET_VERSION, libc::tpacket_versions::TPACKET_V3 as i32)
            .map_err(os("selecting TPACKET_V3"))?;
        let timeout_ms = opts.rx_block_timeout.as_millis().clamp(1, u128::from(u32::MAX));
        let req = libc::tpacket_req3 {
            tp_block_size: opts.rx_block_size as u32,
            tp_block_nr: opts.rx_blocks as u32,
            tp_frame_size: RX_FRAME_SIZE as u32,
            tp_frame_nr: (opts.rx_block_size / RX_FRAME_SIZE * opts.rx_blocks) as u32,
            tp_retire_blk_tov: timeout_ms as u32,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        sock.set_rx_ring_v3(&req).map_err(os("creating the receive ring"))?;
        let ring =
            sock.map_ring(opts.rx_block_size * opts.rx_blocks).map_err(os("mapping the receive ring"))?;
        match sock.set_int(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1) {
            Ok(()) => {}
            // Linux < 4.20: with qdisc_bypass, nflet's frames skip the taps anyway.
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => log::warn!(
                "port {}: interface {}: no PACKET_IGNORE_OUTGOING in this kernel",
                self.port,
                self.iface
            ),
            Err(e) => return Err(self.os("setting PACKET_IGNORE_OUTGOING", e)),
        }
        if opts.promiscuous {
            sock.add_promisc(ifindex).map_err(os("enabling promiscuous mode"))?;
        }
        if fanout {
            // Until the socket has joined the group, it would receive every frame of the
            // interface: duplicates of what the group hands out. Drop those.
            sock.attach_drop_all().map_err(os("attaching the start-up filter"))?;
        }
        sock.bind(ifindex, ETH_P_ALL).map_err(os("binding to the interface"))?;
        if fanout {
            self.join_fanout(&sock, fanout_id)?;
            sock.detach_filter().map_err(os("detaching the start-up filter"))?;
        }
        Ok(AfPacketRx::new(sock, ring, opts.rx_block_size, fanout, opts.complete_checksums))
    }

    /// Creates the group with a kernel-chosen unique id (first socket), or joins it.
    fn join_fanout(&self, sock: &PacketSocket, id: &mut Option<u16>) -> Result<(), PortError> {
        let hash = libc::PACKET_FANOUT_HASH as i32;
        let ignore_outgoing = libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING as i32;
        let join = |flags: i32| {
            let (gid, flags) = match *id {
                Some(gid) => (i32::from(gid), flags),
                None => (0, flags | libc::PACKET_FANOUT_FLAG_UNIQUEID as i32),
            };
            sock.set_int(libc::SOL_PACKET, libc::PACKET_FANOUT, gid | ((hash | flags) << 16))
        };
        // The group, not the socket, decides whether outgoing frames are seen. The flag is
        // newer than Linux 6.1; older kernels refuse it (EINVAL), and then qdisc_bypass is
        // what keeps nflet's own transmissions out.
        if let Err(e) = join(ignore_outgoing) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(self.os("joining the fanout group", e));
            }
            join(0).map_err(|e| self.os("joining the fanout group", e))?;
            log::warn!(
                "port {}: interface {}: this kernel has no PACKET_FANOUT_FLAG_IGNORE_OUTGOING",
                self.port,
                self.iface
            );
        }
        if id.is_none() {
            let arg = sock
                .get_int(libc::SOL_PACKET, libc::PACKET_FANOUT)
                .map_err(|e| self.os("reading the fanout group id", e))?;
            *id = Some((arg & 0xffff) as u16);
        }
        Ok(())
    }

    pub(super) fn open_tx(
        &self,
        ifindex: u32,
        opts: &AfPacketOptions,
        geo: TxGeometry,
    ) -> Result<AfPacketTx, PortError> {
        let os = |what: &'static str| move |e: io::Error| self.os(what, e);
        let sock = PacketSocket::open(0).map_err(os("opening a packet socket"))?;
        sock.set_int(libc::SOL_PACKET, libc::PACKET_VERSION, libc::tpacket_versions::TPACKET_V2 as i32)
            .map_err(os("selecting TPACKET_V2"))?;
        sock.set_int(libc::SOL_PACKET, libc::PACKET_LOSS, 1).map_err(os("setting PACKET_LOSS"))?;
        if opts.qdisc_bypass {
            sock.set_int(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
                .map_err(os("setting PACKET_QDISC_BYPASS"))?;
        }
        let blocks = geo.frames / (geo.block_size / geo.frame_size);
        let req = libc::tpacket_req {
            tp_block_size: geo.block_size as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: geo.frame_size as u32,
            tp_frame_nr: geo.frames as u32,
        };
        sock.set_tx_ring(&req).map_err(os("creating the transmit ring"))?;
        let ring = sock.map_ring(geo.block_size * blocks).map_err(os("mapping the transmit ring"))?;
        sock.bind(ifindex, 0).map_err(os("binding to the interface"))?;
        Ok(AfPacketTx::new(self.iface, sock, ring, geo))
    }
}

/// Slot size: the V2 header plus the largest frame, 16-byte aligned (TPACKET_ALIGNMENT).
/// Blocks: whole pages, at least [`TX_MIN_BLOCK`]; the slot count fills whole blocks.
pub(super) fn tx_geometry(opts: &AfPacketOptions, page: usize) -> TxGeometry {
    let frame_size = (sys::off::T2_DATA + opts.max_frame).next_multiple_of(16);
    let block_size = frame_size.max(TX_MIN_BLOCK).next_multiple_of(page);
    let per_block = block_size / frame_size;
    let frames = opts.tx_frames.next_multiple_of(per_block);
    TxGeometry { block_size, frame_size, frames }
}

/// What went wrong and what to do about it, by errno.
pub(super) fn os_detail(iface: &str, what: &str, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENXIO) => "no such interface; check `ip link`".to_string(),
        Some(libc::EPERM | libc::EACCES) => format!(
            "{what}: permission denied; nflet needs root or CAP_NET_RAW \
             (`setcap cap_net_raw+ep <nflet binary>`)"
        ),
        Some(libc::ENETDOWN) => {
            format!("interface is down; bring it up with `ip link set dev {iface} up`")
        }
        Some(libc::ENOMEM | libc::ENOBUFS) => format!(
            "{what}: not enough memory for the ring ({e}); lower rx_blocks, rx_block_size or \
             tx_frames"
        ),
        Some(libc::EAFNOSUPPORT) => "this kernel has no AF_PACKET support (CONFIG_PACKET)".to_string(),
        _ => format!("{what}: {e}"),
    }
}
