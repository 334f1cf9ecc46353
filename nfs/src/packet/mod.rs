//! Zero-copy packet views and the ingress parser.
//!
//! Each protocol module offers a view `Xxx<T: AsRef<[u8]>>` over a buffer, with field offsets
//! in a private `mod field`, setters only when `T: AsMut<[u8]>`, and `new_checked`, which
//! validates every length the accessors rely on, so no accessor can panic afterwards. Views
//! never copy and never cast buffer memory to structs.
//!
//! [`parse`] walks a whole frame once at ingress and produces [`Meta`]: header offsets, the
//! 5-tuple, the direction-normalised flow key and its hash. Malformed frames become a
//! [`DropReason`](crate::drop::DropReason), never a panic.

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod meta;
pub mod parse;
pub mod rewrite;
pub mod tcp;
pub mod udp;

#[cfg(test)]
mod golden;

pub use meta::{Fragment, IpProtocol, L3Kind, Meta, TcpFlags};
pub use parse::{parse, FragmentPolicy, ParsePolicy};

// Big-endian field access for the views. Callers index at offsets their `new_checked` has
// validated, so these cannot fail on a checked view; on a `new_unchecked` view over a short
// buffer they panic, which is why `new_unchecked` says so.

#[inline(always)]
fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline(always)]
fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline(always)]
fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
fn get_array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}
