//! The dataplane end to end in one process: software steering keeps both directions of a flow
//! on one core, and every frame is accounted for.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::*;
use crate::port::pcap::open_writer;
use crate::port::{BufPool, TxQueue};

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, dst, 64).udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, b"steer me").unwrap();
    v
}

#[test]
fn software_steering_keeps_both_directions_of_a_flow_on_one_core() {
    let dir = std::env::temp_dir().join(format!("nflet-steer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in.pcap");
    // 200 flows, each seen in both directions, interleaved.
    let flows = 200u16;
    let mut frames = Vec::new();
    for round in 0..3 {
        for f in 0..flows {
            let (a, b) = ([10, 0, (f >> 8) as u8, f as u8], [192, 0, 2, 1]);
            frames.push(if round % 2 == 0 { udp(a, 1000 + f, b, 53) } else { udp(b, 53, a, 1000 + f) });
        }
    }
    {
        let mut w = open_writer("in", &input).unwrap();
        let mut pool = BufPool::new(frames.len(), 2048);
        let mut bufs: Vec<_> = frames
            .iter()
            .map(|f| {
                let mut b = pool.get().unwrap();
                assert!(b.fill(f));
                b
            })
            .collect();
        assert_eq!(w.tx_burst(&mut bufs, &mut pool), frames.len());
        w.flush();
    }
    let text = format!(
        r#"
[appliance]
cores = 2
idle_sleep_us = 10
[[port]]
name = "in"
kind = "pcap"
read = "{}"
[[port]]
name = "out"
kind = "sink"
[[nf]]
name = "mon"
kind = "monitor"
flows = 4096
host_delta = 1024
[[chain]]
name = "c"
ingress = ["in"]
steps = ["mon"]
output = "out"
"#,
        input.display()
    );
    let config = Config::parse("steer.toml", &text).unwrap();
    let s = run(&config, &RunOptions::default(), Arc::new(AtomicBool::new(false))).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let total = frames.len() as u64;
    assert_eq!(s.total.rx_total().packets, total);
    assert_eq!(s.sinks[0].1, total, "every frame reaches the sink");
    assert!(s.total.steered_out > 0, "one reader core, two worker cores: frames must be steered");
    assert_eq!(s.total.steered_out, s.total.steered_in);
    // Each flow is tracked by exactly one core: the per-core flow tables add up to the flows.
    let per_core: Vec<u64> = s
        .nfs
        .iter()
        .map(|core| core.iter().find(|n| n.0 == "mon").map_or(0, |n| n.3.tables[0].2.len))
        .collect();
    assert_eq!(per_core.iter().sum::<u64>(), u64::from(flows), "{per_core:?}");
    assert!(per_core.iter().all(|n| *n > 0), "both cores work: {per_core:?}");
}
