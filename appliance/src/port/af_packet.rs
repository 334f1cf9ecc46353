//! Linux interfaces as ports, through AF_PACKET sockets with memory-mapped rings.
//!
//! [`open`] gives each queue two sockets bound to the interface: a receive socket with a
//! TPACKET_V3 ring (`af_packet/rx.rs`) and a transmit socket with a TPACKET_V2 ring
//! (`af_packet/tx.rs`); `af_packet/setup.rs` creates them. All unsafe code (syscalls, the
//! shared ring memory) is in `af_packet/sys.rs`; the rest of the module is safe.
//!
//! What it promises:
//! - Receive and transmit never block and allocate nothing per packet; a burst costs no
//!   syscall on receive and one on transmit.
//! - Frames arrive as they were on the wire: a VLAN tag the kernel stripped into metadata is
//!   put back, and a TCP/UDP checksum left partial by a local sender's checksum offload is
//!   completed (`af_packet/csum.rs`, option `complete_checksums`).
//! - The receive queues see ingress traffic only, not nflet's own transmissions
//!   (`PACKET_IGNORE_OUTGOING`; with `qdisc_bypass` transmitted frames skip the taps anyway).
//! - With several queues, the receive sockets form one `PACKET_FANOUT_HASH` group: the kernel
//!   spreads flows by its symmetric flow hash, so both directions of a connection land on the
//!   same queue and [`RxQueue::steered`] is true. IP fragments
//!   hash on addresses only, so they may land on another queue than the unfragmented packets
//!   of their flow.
//! - Losses are counted, not hidden: ring overruns (`tp_drops`), frames longer than the
//!   buffers, ring inconsistencies; see [`AfPacketRx::stats`].
//!
//! Offloads: a local stack sending through a veth hands over TSO/GSO "superframes" up to
//! 64 KiB, which no buffer holds (counted as lost). Turn segmentation off on the sending
//! device: `ethtool -K <dev> tso off gso off`, or without ethtool (as on the test machines)
//! `ip link set dev <dev> gso_max_size 1500` (or `gso_max_segs 1`). veth does no GRO unless
//! NAPI is on (XDP attached, or `ethtool -K <dev> gro on`); where GRO runs, turn it off the
//! same way (`ethtool -K <dev> gro off`).
//!
//! Privileges: root, or CAP_NET_RAW (enough for the sockets, rings, fanout and promiscuous
//! mode).

mod csum;
mod rx;
mod setup;
mod sys;
mod tx;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use rx::{AfPacketRx, RxStats};
pub use tx::{AfPacketTx, TxStats};

use super::buf::DEFAULT_FRAME_CAPACITY;
use super::{OpenedPort, PortError, RxQueue, TxQueue};
use setup::{tx_geometry, Ctx};
use sys::PacketSocket;

/// Sizes and switches of an AF_PACKET port. `Default` suits a 1500-byte MTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// Bytes per receive ring block; a multiple of the page size. Default 256 KiB.
    pub rx_block_size: usize,
    /// Blocks per receive ring (per queue). Default 16, i.e. a 4 MiB ring.
    pub rx_blocks: usize,
    /// How long the kernel may hold a partly filled block before handing it over: the worst
    /// added latency at low rates. Millisecond granularity, at least 1 ms. Default 1 ms.
    pub rx_block_timeout: Duration,
    /// Slots per transmit ring (rounded up to fill whole blocks). Default 1024.
    pub tx_frames: usize,
    /// Largest frame a transmit slot holds; match the buffer pools' frame capacity.
    pub max_frame: usize,
    /// Receive frames addressed to other MACs too (`PACKET_MR_PROMISC`). Default on.
    pub promiscuous: bool,
    /// Transmit straight to the driver, skipping the qdisc (`PACKET_QDISC_BYPASS`): faster,
    /// but traffic shaping and taps (tcpdump on the interface) do not see nflet's frames.
    /// Default on.
    pub qdisc_bypass: bool,
    /// Complete TCP/UDP checksums a local sender left partial. Default on.
    pub complete_checksums: bool,
}

impl Default for AfPacketOptions {
    fn default() -> AfPacketOptions {
        AfPacketOptions {
            rx_block_size: 256 << 10,
            rx_blocks: 16,
            rx_block_timeout: Duration::from_millis(1),
            tx_frames: 1024,
            max_frame: DEFAULT_FRAME_CAPACITY,
            promiscuous: true,
            qdisc_bypass: true,
            complete_checksums: true,
        }
    }
}

/// Opens interface `iface` as port `port` with `queues` receive and transmit queues.
pub fn open(port: &str, iface: &str, queues: usize, opts: &AfPacketOptions) -> Result<OpenedPort, PortError> {
    let (rx, tx) = open_queues(port, iface, queues, opts)?;
    Ok(OpenedPort {
        name: port.to_string(),
        rx: rx.into_iter().map(|q| Box::new(q) as Box<dyn RxQueue>).collect(),
        tx: tx.into_iter().map(|q| Box::new(q) as Box<dyn TxQueue>).collect(),
    })
}

/// [`open`], keeping the concrete queue types (for their statistics).
pub fn open_queues(
    port: &str,
    iface: &str,
    queues: usize,
    opts: &AfPacketOptions,
) -> Result<(Vec<AfPacketRx>, Vec<AfPacketTx>), PortError> {
    let ctx = Ctx { port, iface };
    let page = sys::page_size();
    ctx.validate(queues, opts, page)?;
    let ifindex = sys::if_nametoindex(iface).map_err(|e| ctx.os("looking up the interface", e))?;
    let tx_geo = tx_geometry(opts, page);
    let mut rxs = Vec::with_capacity(queues);
    let mut txs = Vec::with_capacity(queues);
    let mut fanout_id = None;
    for q in 0..queues {
        // Protocol 0: no frame at all until `open_rx` binds it to the interface for every
        // protocol. Opened for every protocol, it would queue the frames of all interfaces
        // (loopback included) from socket(2) to bind(2).
        let sock = PacketSocket::open(0).map_err(|e| ctx.os("opening a packet socket", e))?;
        if q == 0 {
            ctx.check_link(&sock, opts)?;
        }
        rxs.push(ctx.open_rx(sock, ifindex, opts, queues > 1, &mut fanout_id)?);
        txs.push(ctx.open_tx(ifindex, opts, tx_geo)?);
    }
    Ok((rxs, txs))
}
