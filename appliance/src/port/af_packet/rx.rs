//! The receive queue: one socket with a TPACKET_V3 ring, polled without blocking.
//!
//! The ring is `blocks` blocks of `block_size` bytes. The kernel fills a block with packets
//! (each a `tpacket3_hdr` followed by the frame, chained by `tp_next_offset`), then hands the
//! whole block over by setting `TP_STATUS_USER` in its header: when the block is full, or when
//! the retire timer (`rx_block_timeout`) fires on a partly filled one. nflet walks the block,
//! copying frames into pool buffers, and gives it back with `TP_STATUS_KERNEL` after its last
//! packet. A burst may stop in the middle of a block; the position is kept.

use std::cell::Cell;

use super::csum;
use super::sys::{off, PacketSocket, RingMap};
use crate::port::{BufPool, PktBuf, RxQueue, RxStatus};

/// `lost()` reads the kernel's statistics at least once per this many calls.
const LOST_REFRESH: u32 = 64;

/// Counters of one receive queue, beyond what [`RxQueue::lost`] sums up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxStats {
    /// Frames delivered.
    pub frames: u64,
    /// Frames longer than the pool's buffers (or truncated by the ring): dropped.
    pub oversize: u64,
    /// Frames whose TCP/UDP checksum the kernel left partial and nflet completed.
    pub csum_completed: u64,
    /// Frames with a partial checksum nflet could not complete (passed on unchanged).
    pub csum_partial_left: u64,
    /// Packets dropped because a block header was inconsistent (never seen in practice).
    pub ring_errors: u64,
}

/// Where the reader stands in the ring.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// The block being read (or polled, when `remaining == 0`).
    block: usize,
    /// Ring offset of the next packet header in that block.
    pkt: usize,
    /// Packets of the block not yet read; 0 when no block is held.
    remaining: u32,
}

/// A receive queue on one AF_PACKET socket with a TPACKET_V3 ring (walked as this file's
/// module doc describes).
#[derive(Debug)]
pub struct AfPacketRx {
    sock: PacketSocket,
    ring: RingMap,
    block_size: usize,
    blocks: usize,
    at: Cursor,
    steered: bool,
    complete_checksums: bool,
    stats: RxStats,
    /// Kernel drops read so far (PACKET_STATISTICS resets on every read).
    kernel_drops: Cell<u64>,
    /// A block came back flagged `TP_STATUS_LOSING`: the kernel has drops to report.
    losing: Cell<bool>,
    /// Calls of `lost()` left before the statistics are read even without that flag.
    refresh_in: Cell<u32>,
}

impl AfPacketRx {
    pub(super) fn new(
        sock: PacketSocket,
        ring: RingMap,
        block_size: usize,
        steered: bool,
        complete_checksums: bool,
    ) -> AfPacketRx {
        let blocks = ring.len() / block_size.max(1);
        AfPacketRx {
            sock,
            ring,
            block_size,
            blocks,
            at: Cursor { block: 0, pkt: 0, remaining: 0 },
            steered,
            complete_checksums,
            stats: RxStats::default(),
            kernel_drops: Cell::new(0),
            losing: Cell::new(false),
            refresh_in: Cell::new(LOST_REFRESH),
        }
    }

    pub fn stats(&self) -> RxStats {
        self.stats
    }

    /// Frames the kernel dropped because the ring was full (one getsockopt).
    pub fn kernel_drops(&self) -> u64 {
        self.losing.set(false);
        if let Ok((_, drops)) = self.sock.take_stats() {
            self.kernel_drops.set(self.kernel_drops.get() + u64::from(drops));
        }
        self.kernel_drops.get()
    }

    fn block_base(&self) -> usize {
        self.at.block * self.block_size
    }

    /// Takes the current block if the kernel has handed it over. Empty blocks are returned
    /// at once.
    fn open_block(&mut self) -> bool {
        for _ in 0..self.blocks {
            let base = self.block_base();
            let status = self.ring.load_status(base + off::BLOCK_STATUS).unwrap_or(0);
            if status & libc::TP_STATUS_USER == 0 {
                return false;
            }
            if status & libc::TP_STATUS_LOSING != 0 {
                self.losing.set(true);
            }
            let num = self.ring.read_u32(base + off::BLOCK_NUM_PKTS).unwrap_or(0);
            let first = self.ring.read_u32(base + off::BLOCK_FIRST_PKT).unwrap_or(0) as usize;
            if num > 0 && (off::BLOCK_FIRST_PKT..self.block_size).contains(&first) {
                self.at.pkt = base + first;
                self.at.remaining = num;
                return true;
            }
            self.stats.ring_errors += u64::from(num);
            self.release_block();
        }
        false
    }

    /// Gives the current block back to the kernel and moves to the next one.
    fn release_block(&mut self) {
        let base = self.block_base();
        // The offset is inside the ring and aligned by construction; a None cannot happen.
        let _ = self.ring.store_status(base + off::BLOCK_STATUS, libc::TP_STATUS_KERNEL);
        self.at.remaining = 0;
        self.at.block = (self.at.block + 1) % self.blocks.max(1);
    }

    /// Moves past the current packet; releases the block after its last one.
    fn advance(&mut self) {
        self.at.remaining -= 1;
        if self.at.remaining == 0 {
            self.release_block();
            return;
        }
        let next = self.ring.read_u32(self.at.pkt + off::T3_NEXT_OFFSET).unwrap_or(0) as usize;
        let block_end = self.block_base() + self.block_size;
        if next == 0 || self.at.pkt + next >= block_end {
            self.stats.ring_errors += u64::from(self.at.remaining);
            self.release_block();
        } else {
            self.at.pkt += next;
        }
    }

    /// Copies the current packet into `buf`; false when it cannot be delivered.
    fn copy_packet(&mut self, buf: &mut PktBuf) -> bool {
        let p = self.at.pkt;
        let r = &self.ring;
        let (Some(snaplen), Some(len), Some(status), Some(mac)) = (
            r.read_u32(p + off::T3_SNAPLEN),
            r.read_u32(p + off::T3_LEN),
            r.read_u32(p + off::T3_STATUS),
            r.read_u16(p + off::T3_MAC),
        ) else {
            self.stats.ring_errors += 1;
            return false;
        };
        let (snaplen, start) = (snaplen as usize, p + usize::from(mac));
        // The kernel strips a VLAN tag into the header (hardware or software untagging);
        // put it back where it was, as libpcap does, so the frame is the one on the wire.
        let vlan = if status & libc::TP_STATUS_VLAN_VALID != 0 && snaplen >= 12 {
            let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                r.read_u16(p + off::T3_VLAN_TPID).unwrap_or(0x8100)
            } else {
                0x8100
            };
            let tci = r.read_u32(p + off::T3_VLAN_TCI).unwrap_or(0) as u16;
            Some((tpid, tci))
        } else {
            None
        };
        let total = snaplen + if vlan.is_some() { 4 } else { 0 };
        let Some(dst) = buf.storage_mut().get_mut(..total).filter(|_| snaplen >= len as usize) else {
            self.stats.oversize += 1;
            return false;
        };
        let copied = match (vlan, dst.split_at_mut_checked(12)) {
            (Some((tpid, tci)), Some((macs, rest))) => {
                let (tag, payload) = rest.split_at_mut(4);
                tag[..2].copy_from_slice(&tpid.to_be_bytes());
                tag[2..].copy_from_slice(&tci.to_be_bytes());
                r.copy_out(start, macs).and_then(|()| r.copy_out(start + 12, payload))
            }
            _ => r.copy_out(start, dst),
        };
        if copied.is_none() {
            self.stats.ring_errors += 1;
            return false;
        }
        buf.set_len(total);
        if status & libc::TP_STATUS_CSUMNOTREADY != 0 && self.complete_checksums {
            if csum::complete_partial(buf.data_mut()) {
                self.stats.csum_completed += 1;
            } else {
                self.stats.csum_partial_left += 1;
            }
        }
        true
    }
}

impl RxQueue for AfPacketRx {
    fn rx_burst(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus {
        let mut n = 0;
        while n < max {
            if self.at.remaining == 0 && !self.open_block() {
                break;
            }
            let Some(mut buf) = pool.get() else {
                break;
            };
            if self.copy_packet(&mut buf) {
                out.push(buf);
                n += 1;
            } else {
                pool.put(buf);
            }
            self.advance();
        }
        self.stats.frames += n as u64;
        RxStatus::Received(n)
    }

    fn steered(&self) -> bool {
        self.steered
    }

    /// Ring overruns reported by the kernel (PACKET_STATISTICS `tp_drops`) plus frames too
    /// long for the buffers and ring inconsistencies.
    ///
    /// Cheap enough to call after every burst: the kernel flags the blocks it closes while it
    /// has unreported drops (`TP_STATUS_LOSING`), so the statistics syscall is made only then,
    /// and every 64th call in case no block was closed since the drops.
    fn lost(&self) -> u64 {
        let refresh_in = self.refresh_in.get().saturating_sub(1);
        let drops = if self.losing.get() || refresh_in == 0 {
            self.refresh_in.set(LOST_REFRESH);
            self.kernel_drops()
        } else {
            self.refresh_in.set(refresh_in);
            self.kernel_drops.get()
        };
        drops + self.stats.oversize + self.stats.ring_errors
    }
}
