//! Capture-file ports: replay a pcap or pcapng file as a receive queue, record transmitted
//! frames into a classic pcap file.
//!
//! What this module promises:
//! - [`open_reader`] accepts classic pcap (either byte order, micro- or nanosecond
//!   timestamps) and pcapng (any number of sections and interfaces) with the Ethernet link
//!   type. A file whose first interface is not Ethernet is refused at open time, naming the
//!   link type; packets of later non-Ethernet pcapng interfaces are skipped and counted.
//! - Frames are delivered byte for byte as recorded (a frame captured with a short snaplen is
//!   delivered truncated, as the file holds it). Frames longer than the pool's buffers are
//!   skipped and counted in [`RxQueue::lost`](crate::port::RxQueue::lost).
//! - End of file is [`RxStatus::Exhausted`](crate::port::RxStatus::Exhausted). A file that is truncated or corrupt after a valid
//!   header also ends in `Exhausted` (never a panic); [`PcapReader::error`] says why, and the
//!   reason is logged once.
//! - [`open_writer`] writes classic little-endian microsecond pcap with the Ethernet link type;
//!   [`open_shared_writer`] lets several cores write one file.
//!
//! Per-packet work allocates nothing, with one exception outside nflet's control: pcap-parser
//! collects the options of a pcapng Enhanced Packet Block into a `Vec`, so EPBs that carry
//! options (comments, flags) cost one allocation each. A file is not a line-rate NIC.

mod reader;
mod writer;

#[cfg(test)]
mod tests;

pub use reader::{count_frames, open_reader, PcapReader};
pub use writer::{open_shared_writer, open_writer, system_clock, PcapWriter, SharedPcapTx};
