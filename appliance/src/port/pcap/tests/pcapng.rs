//! pcapng files built block by block (draft-ietf-opsawg-pcapng), and classic pcap variants
//! the writer does not produce.

use std::time::Duration;

use super::super::{count_frames, open_reader};
use super::support::*;
use crate::port::{BufPool, RxQueue};

fn pad4(v: &mut Vec<u8>) {
    while v.len() & 3 != 0 {
        v.push(0);
    }
}

pub fn ng_block(block_type: u32, body: &[u8]) -> Vec<u8> {
    let mut padded = body.to_vec();
    pad4(&mut padded);
    let len = (12 + padded.len()) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(&block_type.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&padded);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

pub fn ng_option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(&code.to_le_bytes());
    o.extend_from_slice(&(value.len() as u16).to_le_bytes());
    o.extend_from_slice(value);
    pad4(&mut o);
    o
}

pub fn shb() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&0x1a2b_3c4d_u32.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
    ng_block(0x0a0d_0d0a, &body)
}

/// Interface Description Block; `tsresol` adds an if_tsresol option (code 9).
pub fn idb(linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&linktype.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // snaplen: unlimited
    if let Some(r) = tsresol {
        body.extend(ng_option(9, &[r]));
        body.extend(ng_option(0, &[])); // opt_endofopt
    }
    ng_block(1, &body)
}

/// Enhanced Packet Block.
pub fn epb(if_id: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for v in [if_id, (ts >> 32) as u32, ts as u32, data.len() as u32, data.len() as u32] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    body.extend_from_slice(data);
    ng_block(6, &body)
}

/// Simple Packet Block.
pub fn spb(data: &[u8]) -> Vec<u8> {
    let mut body = (data.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(data);
    ng_block(3, &body)
}

/// Two sections: the first with a nanosecond Ethernet interface and a non-Ethernet one, the
/// second with a default (microsecond) interface; plus blocks nflet ignores.
pub fn sample_pcapng() -> (Vec<u8>, Vec<Vec<u8>>, Vec<Duration>) {
    let f: Vec<Vec<u8>> = (0..5u8).map(|i| frame(i, 60 + usize::from(i) * 7)).collect();
    let mut file = shb();
    file.extend(idb(1, Some(9)));
    file.extend(idb(113, None)); // LINUX_SLL: its packets are skipped
    file.extend(epb(0, 1_700_000_000_987_654_321, &f[0]));
    file.extend(epb(1, 5, b"not ethernet"));
    file.extend(ng_block(4, &[0, 0, 0, 0])); // Name Resolution Block, empty
    file.extend(epb(0, 1_700_000_001_000_000_000, &f[1]));
    file.extend(shb());
    file.extend(idb(1, None));
    file.extend(epb(0, 1_700_000_002_500_000, &f[2]));
    file.extend(spb(&f[3]));
    file.extend(ng_block(0x0000_0bad, &[1, 2, 3])); // custom/unknown block
    file.extend(epb(0, 3, &f[4]));
    let ts = vec![
        Duration::new(1_700_000_000, 987_654_321),
        Duration::new(1_700_000_001, 0),
        Duration::new(1_700_000_002, 500_000_000),
        Duration::ZERO,
        Duration::from_micros(3),
    ];
    (file, f, ts)
}

#[test]
fn reads_pcapng_sections_interfaces_and_timestamps() {
    let (bytes, frames, stamps) = sample_pcapng();
    let file = TempFile::with_bytes("sample.pcapng", &bytes);
    let mut pool = BufPool::new(4, 2048);
    let mut r = open_reader("ng", file.path()).unwrap();
    let (got, got_ts) = read_all(&mut r, &mut pool, 2);
    assert_eq!(got, frames);
    assert_eq!(got_ts, stamps);
    assert_eq!((r.skipped_non_ethernet(), r.oversize(), r.lost()), (1, 0, 1));
    assert_eq!(r.error(), None);
    assert_eq!(r.bytes_read(), bytes.len() as u64);
    assert_eq!(count_frames(file.path()).unwrap(), 6);
}

#[test]
fn reads_big_endian_nanosecond_pcap() {
    let mut bytes = Vec::new();
    for v in [0xa1b2_3c4d_u32, 0x0002_0004, 0, 0, 65535, 1] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    let f = frame(9, 42);
    for v in [1_600_000_000u32, 999_999_999, 42, 42] {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes.extend_from_slice(&f);
    let file = TempFile::with_bytes("be-nanos.pcap", &bytes);
    let mut pool = BufPool::new(4, 2048);
    let (got, ts) = read_all(&mut open_reader("be", file.path()).unwrap(), &mut pool, 8);
    assert_eq!(got, vec![f]);
    assert_eq!(ts, vec![Duration::new(1_600_000_000, 999_999_999)]);
}
