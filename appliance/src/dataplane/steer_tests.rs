//! NAT on two cores in one process: replies that arrive on the core not holding their mapping
//! are moved, before any chain runs, to the core owning their public port, even from ports
//! that spread flows themselves (RSS-like queues, where hash steering is off).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use nflet_nfs::ids::PortId;
use nflet_nfs::packet::{parse, IpProtocol, ParsePolicy};

use super::two_cores::{self, Outputs, Script};
use super::*;

const FLOWS: usize = 200;
const REMOTE: [u8; 4] = [198, 51, 100, 1];
const PUBLIC: [u8; 4] = [203, 0, 113, 1];

/// Flow `i`: UDP from a distinct inside endpoint, every fourth one an ICMP echo.
fn outbound(i: usize) -> Vec<u8> {
    let src = [192, 168, 1, 10 + (i % 100) as u8];
    let b = PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4(src, REMOTE, 64);
    let mut v = Vec::new();
    if i.is_multiple_of(4) {
        b.icmpv4_echo_request(1000 + i as u16, 1).write(&mut v, b"ping").unwrap();
    } else {
        b.udp(20_000 + i as u16, 53).write(&mut v, b"query").unwrap();
    }
    v
}

/// (protocol, source, source port, destination, destination port) of a frame.
fn tuple(frame: &[u8]) -> (IpProtocol, [u8; 4], u16, [u8; 4], u16) {
    let m = parse(frame, PortId(0), &ParsePolicy::default()).unwrap();
    let a4 = |a: [u8; 16]| [a[0], a[1], a[2], a[3]];
    (m.proto, a4(m.src), m.sport, a4(m.dst), m.dport)
}

/// The remote's answer to a translated frame.
fn reply(frame: &[u8]) -> Vec<u8> {
    let (proto, src, sport, dst, dport) = tuple(frame);
    let b = PacketBuilder::ethernet2([4; 6], [2; 6]).ipv4(dst, src, 64);
    let mut v = Vec::new();
    match proto {
        IpProtocol::Icmp => b.icmpv4_echo_reply(sport, 1).write(&mut v, b"pong").unwrap(),
        _ => b.udp(dport, sport).write(&mut v, b"answer").unwrap(),
    }
    v
}

#[test]
fn nat_replies_arriving_on_the_wrong_core_are_steered_to_their_mapping() {
    let text = r#"
[appliance]
cores = 2
[[port]]
name = "lan"
kind = "sink"
[[port]]
name = "wan"
kind = "sink"
[[nf]]
name = "nat"
kind = "nat"
inside = "lan"
public = "203.0.113.1"
mappings = 4096
[[chain]]
name = "out"
ingress = ["lan"]
steps = ["nat"]
output = "wan"
[[chain]]
name = "in"
ingress = ["wan"]
steps = ["nat"]
output = "lan"
"#;
    let config = Config::parse("nat2.toml", text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (stats, out) = two_cores::run(&config, |c, out| {
        // Core c's inside hosts send the flows i with i % 2 == c, so core c holds their
        // mappings; the replies to them all arrive on the other core's wan queue.
        let lan = Script::frames((c..FLOWS).step_by(2).map(outbound));
        let from_other = Arc::clone(&out.wan_tx[1 - c]);
        let wan = Script::later(Box::new(move || {
            let sent = from_other.lock().unwrap();
            (sent.len() >= FLOWS / 2 || Instant::now() > deadline)
                .then(|| sent.iter().map(|f| reply(f)).collect())
        }));
        (lan, wan)
    });
    let Outputs { lan_tx, wan_tx, publish } = out;

    let half = (FLOWS / 2) as u64;
    for (c, st) in stats.iter().enumerate() {
        assert_eq!(st.drops.total(), 0, "core {c}: {:?}", st.drops.nonzero().collect::<Vec<_>>());
        // Every reply this core received belonged to the other core's mappings.
        assert_eq!((st.steered_out, st.steered_by_nf, st.steered_in), (half, half, half), "core {c}");
        assert_eq!(st.rx[0].packets + st.rx[1].packets, 2 * half, "core {c}");
        let snap = publish[c].lock().clone();
        let (_, _, _, report) = snap.nfs.iter().find(|n| n.0 == "nat").unwrap();
        // (Port preservation, and so how many ports were picked ahead of their burst,
        // depends on which half of the pool each core's share got.)
        let nonzero: Vec<(&str, u64)> = report
            .counters
            .iter()
            .copied()
            .filter(|(k, v)| *v != 0 && *k != "preserved_ports" && *k != "ports_picked_ahead")
            .collect();
        assert_eq!(
            nonzero,
            [("outbound", half), ("inbound", half), ("new_mappings", half)],
            "core {c}: every mapping made and every reply translated here"
        );
        // The translated replies leave from the core that holds their mapping, back to the
        // inside endpoint that opened the flow.
        let want: HashSet<_> = (c..FLOWS)
            .step_by(2)
            .map(|i| {
                let (p, src, sport, dst, dport) = tuple(&outbound(i));
                let (rsport, rdport) = if p == IpProtocol::Icmp { (sport, sport) } else { (dport, sport) };
                (p, dst, rsport, src, rdport)
            })
            .collect();
        let got: HashSet<_> = lan_tx[c].lock().unwrap().iter().map(|f| tuple(f)).collect();
        assert_eq!(lan_tx[c].lock().unwrap().len(), FLOWS / 2, "core {c}");
        assert_eq!(got, want, "core {c}");
        for f in wan_tx[c].lock().unwrap().iter() {
            assert_eq!(tuple(f).1, PUBLIC, "translated outbound");
        }
    }
}
