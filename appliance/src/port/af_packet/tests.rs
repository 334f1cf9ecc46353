//! Tests of the AF_PACKET port. Those on real interfaces (`harness`, `traffic`, `flows`)
//! create a network namespace of their own (`ip netns add nflet-<tag>-<pid>-<n>`) holding a
//! veth pair `va`/`vb`, run their body on a thread moved into that namespace, and delete the
//! namespace in a drop guard. They need root and fail (not skip) without it. The tests below
//! need neither.

mod flows;
mod harness;
mod traffic;

use std::io;

use super::setup::{os_detail, tx_geometry};
use super::*;
use harness::Netns;

fn iface_detail(e: PortError) -> String {
    match e {
        PortError::Interface { detail, .. } => detail,
        other => panic!("expected an interface error, got {other}"),
    }
}

#[test]
fn a_missing_interface_is_named_with_the_fix() {
    // No root needed: the name is looked up before any socket is opened.
    let e = open("p0", "nflet-nosuch0", 1, &AfPacketOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "port p0: interface nflet-nosuch0: no such interface; check `ip link`");
    for bad in ["", "much-too-long-name0", "a/b", "a b"] {
        let detail = iface_detail(open("p0", bad, 1, &AfPacketOptions::default()).unwrap_err());
        assert!(detail.contains("not a valid interface name"), "{bad:?}: {detail}");
    }
}

#[test]
fn a_down_interface_is_refused_with_the_fix() {
    let ns = Netns::new("down");
    ns.ip(&["link", "set", "vb", "down"]);
    ns.run(|| {
        let detail = iface_detail(open("p", "vb", 2, &AfPacketOptions::default()).unwrap_err());
        assert_eq!(detail, "interface is down; bring it up with `ip link set dev vb up`");
    });
}

#[test]
fn options_are_checked_before_anything_opens() {
    let page = sys::page_size();
    let cases = [
        (0, AfPacketOptions::default(), "0 queues"),
        (257, AfPacketOptions::default(), "257 queues"),
        (1, AfPacketOptions { rx_block_size: page + 1, ..Default::default() }, "multiple of the page"),
        (1, AfPacketOptions { rx_blocks: 0, ..Default::default() }, "rx_blocks"),
        (1, AfPacketOptions { tx_frames: 0, ..Default::default() }, "tx_frames"),
    ];
    for (queues, opts, want) in cases {
        match open("p", "lo", queues, &opts) {
            Err(PortError::Config { detail, .. }) => assert!(detail.contains(want), "{detail}"),
            other => panic!("{want}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn os_errors_say_what_to_do() {
    let cases = [
        (libc::ENODEV, "no such interface; check `ip link`"),
        (libc::EPERM, "opening a packet socket: permission denied; nflet needs root or CAP_NET_RAW"),
        (libc::EACCES, "needs root or CAP_NET_RAW"),
        (libc::ENETDOWN, "bring it up with `ip link set dev eth9 up`"),
        (libc::ENOMEM, "lower rx_blocks, rx_block_size or tx_frames"),
        (libc::EINVAL, "opening a packet socket: Invalid argument"),
    ];
    for (errno, want) in cases {
        let d = os_detail("eth9", "opening a packet socket", &io::Error::from_raw_os_error(errno));
        assert!(d.contains(want), "errno {errno}: {d}");
    }
}

#[test]
fn tx_geometry_fills_whole_blocks() {
    let g = tx_geometry(&AfPacketOptions::default(), 4096);
    assert_eq!((g.frame_size, g.block_size), (2080, 65536));
    assert_eq!(g.frames % (g.block_size / g.frame_size), 0);
    assert!(g.frames >= 1024);
    let g = tx_geometry(&AfPacketOptions { max_frame: 9000, tx_frames: 5, ..Default::default() }, 4096);
    assert_eq!((g.frame_size, g.block_size, g.frames), (9040, 65536, 7));
}
