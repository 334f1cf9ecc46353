//! The transmit queue: a socket of its own with a TPACKET_V2 TX ring.
//!
//! Why a ring and not `send()` per frame: a burst costs one syscall whatever its size (the
//! frames are copied into ring slots, flagged `TP_STATUS_SEND_REQUEST`, then one
//! `send(fd, NULL, 0, MSG_DONTWAIT)` makes the kernel transmit all of them). The kernel marks a
//! slot `TP_STATUS_AVAILABLE` again once the driver has released the frame; a slot that is not
//! available yet means the ring is full, and the rest of the burst stays with the caller.
//!
//! Why a separate socket: an RX ring wants TPACKET_V3, which a socket shares with its TX ring,
//! and a protocol-0 socket receives nothing, so transmitting never costs receive work.
//! `PACKET_LOSS` is set so that a frame the kernel refuses (longer than the MTU allows) is
//! dropped instead of stalling the ring.

use std::io;

use super::sys::{off, PacketSocket, RingMap};
use crate::port::{BufPool, PktBuf, TxQueue};

/// Counters of one transmit queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxStats {
    /// Frames queued into the ring.
    pub frames: u64,
    /// Frames longer than a ring slot: dropped (they could never be sent).
    pub oversize: u64,
    /// Transmit kicks that failed with something other than "try again".
    pub kick_errors: u64,
}

/// Geometry of a TX ring: blocks of `block_size` bytes, each holding `block_size / frame_size`
/// slots; `frames` slots in all, filling whole blocks.
#[derive(Debug, Clone, Copy)]
pub(super) struct TxGeometry {
    pub block_size: usize,
    pub frame_size: usize,
    pub frames: usize,
}

/// A transmit queue on one AF_PACKET socket with a TPACKET_V2 TX ring (see this file's
/// module doc).
#[derive(Debug)]
pub struct AfPacketTx {
    iface: String,
    sock: PacketSocket,
    ring: RingMap,
    geo: TxGeometry,
    frames_per_block: usize,
    /// Next slot to fill.
    head: usize,
    /// Frames are queued that the last kick may not have sent (it hit a full device queue).
    kick_pending: bool,
    stats: TxStats,
}

impl AfPacketTx {
    pub(super) fn new(iface: &str, sock: PacketSocket, ring: RingMap, geo: TxGeometry) -> AfPacketTx {
        AfPacketTx {
            iface: iface.to_string(),
            sock,
            ring,
            frames_per_block: (geo.block_size / geo.frame_size.max(1)).max(1),
            geo,
            head: 0,
            kick_pending: false,
            stats: TxStats::default(),
        }
    }

    pub fn stats(&self) -> TxStats {
        self.stats
    }

    /// Largest frame a slot holds.
    pub fn max_frame(&self) -> usize {
        self.geo.frame_size - off::T2_DATA
    }

    fn slot(&self, i: usize) -> usize {
        (i / self.frames_per_block) * self.geo.block_size + (i % self.frames_per_block) * self.geo.frame_size
    }

    /// Copies `frame` into the head slot and hands it to the kernel; false when the slot is
    /// still in use (ring full).
    fn queue(&mut self, frame: &[u8]) -> bool {
        let slot = self.slot(self.head);
        if self.ring.load_status(slot + off::T2_STATUS) != Some(libc::TP_STATUS_AVAILABLE) {
            return false;
        }
        let len = frame.len() as u32; // <= max_frame, checked by the caller
        let written = self
            .ring
            .copy_in(slot + off::T2_DATA, frame)
            .and_then(|()| self.ring.write_u32(slot + off::T2_LEN, len))
            .and_then(|()| self.ring.store_status(slot + off::T2_STATUS, libc::TP_STATUS_SEND_REQUEST));
        if written.is_none() {
            return false;
        }
        self.head = (self.head + 1) % self.geo.frames.max(1);
        true
    }

    fn kick(&mut self) {
        match self.sock.kick_tx() {
            Ok(()) => self.kick_pending = false,
            Err(e) if is_transient(&e) => self.kick_pending = true,
            Err(e) => {
                self.kick_pending = true;
                self.stats.kick_errors += 1;
                if self.stats.kick_errors.is_power_of_two() {
                    log::warn!(
                        "interface {}: transmit failed: {e} ({} times so far)",
                        self.iface,
                        self.stats.kick_errors
                    );
                }
            }
        }
    }
}

/// Errors after which the queued frames go out on a later kick.
fn is_transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR | libc::EBUSY))
}

impl TxQueue for AfPacketTx {
    /// Queues frames until the ring is full. A frame longer than a slot is dropped and counted
    /// (`TxStats::oversize`) rather than left at the front of `pkts`, where it would block the
    /// queue for good.
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>, pool: &mut BufPool) -> usize {
        let max_frame = self.max_frame();
        let (mut done, mut queued) = (0, 0);
        for pkt in pkts.iter() {
            if pkt.len() > max_frame {
                self.stats.oversize += 1;
            } else if self.queue(pkt.data()) {
                queued += 1;
            } else {
                break;
            }
            done += 1;
        }
        if queued > 0 || self.kick_pending {
            self.kick();
        }
        self.stats.frames += queued;
        pkts.drain(..done).for_each(|b| pool.put(b));
        done
    }

    fn flush(&mut self) {
        if self.kick_pending {
            self.kick();
        }
    }
}
