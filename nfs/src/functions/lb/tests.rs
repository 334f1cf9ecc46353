//! Load balancer tests: distribution, stickiness, minimal disruption, drain, DNAT both ways
//! with checksums checked by etherparse, expiry on a virtual clock, full table, config errors.

use std::net::SocketAddrV4;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

use super::{BackendCounters, BackendId, BackendState, Counters, Lb, LbConfig, VipId};
use crate::drop::DropReason;
use crate::flow::{v4, FlowKey, FAMILY_V4};
use crate::ids::{CoreId, PortId};
use crate::nf::{Ctx, InitCtx, NetworkFunction, NfError, Report, SharedRegistry, Verdict};
use crate::packet::{parse, ParsePolicy};
use crate::state::{Arena, Backing};
use crate::testutil::{build, tcp4, udp4};
use crate::time::Nanos;

const VIP: [u8; 4] = [192, 0, 2, 10];

/// One TCP VIP on port 80 and one UDP VIP on port 53, three backends each.
fn cfg(weights: [u32; 3], extra: &str) -> String {
    let mut t = format!("flows = 200000\nidle_timeout = 10\n{extra}\n");
    for (proto, port, bport) in [("tcp", 80, 8080), ("udp", 53, 5353)] {
        t += &format!("[[vip]]\nname = \"{proto}\"\naddr = \"192.0.2.10:{port}\"\nproto = \"{proto}\"\n");
        for (i, w) in weights.iter().enumerate() {
            t += &format!("[[vip.backend]]\naddr = \"10.1.0.{}:{bport}\"\nweight = {w}\n", i + 1);
        }
    }
    t
}

/// Runs `frame` through `lb` as arriving on port `ingress`; returns the verdict and the frame
/// as it leaves.
fn send(lb: &mut Lb, now: Nanos, ingress: u16, frame: &[u8]) -> (Verdict, Vec<u8>) {
    let mut f = frame.to_vec();
    let mut meta = parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap();
    let v = lb.process_packet(&Ctx { now, core: CoreId(0) }, &mut f, &mut meta);
    // The metadata follows the rewrite, as the next NF of the chain needs.
    assert_eq!(meta, parse(&f, PortId(ingress), &ParsePolicy::default()).unwrap());
    (v, f)
}

/// Client `i` of many distinct flows (65 k clients × 64 ports).
fn client(i: u32) -> ([u8; 4], u16) {
    let [_, a, b, c] = i.to_be_bytes();
    ([10, 100 ^ a, b, c], 20_000 + (i >> 16) as u16)
}

/// The backend (index in its VIP's list) a forwarded frame went to, from its destination.
fn dest(frame: &[u8]) -> ([u8; 4], u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not ipv4") };
    let port = match &p.transport {
        Some(TransportSlice::Udp(u)) => u.destination_port(),
        Some(TransportSlice::Tcp(t)) => t.destination_port(),
        _ => panic!("no transport"),
    };
    (ip.header().destination(), port)
}

fn source(frame: &[u8]) -> ([u8; 4], u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not ipv4") };
    let port = match &p.transport {
        Some(TransportSlice::Udp(u)) => u.source_port(),
        Some(TransportSlice::Tcp(t)) => t.source_port(),
        _ => panic!("no transport"),
    };
    (ip.header().source(), port)
}

/// Asserts that the IPv4 header and TCP/UDP checksums of `frame` are right.
fn assert_checksums(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else { panic!("not ipv4") };
    let h = ip.header();
    assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
    let (s, d) = (h.source(), h.destination());
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => assert_eq!(t.calc_checksum_ipv4(s, d).ok(), Some(t.checksum())),
        Some(TransportSlice::Udp(u)) => {
            assert_ne!(u.checksum(), 0);
            let c = u.to_header().calc_checksum_ipv4_raw(s, d, u.payload());
            assert_eq!(c.ok(), Some(u.checksum()));
        }
        _ => panic!("no transport"),
    }
}

fn backend(i: u8, port: u16) -> ([u8; 4], u16) {
    ([10, 1, 0, i], port)
}

fn sa(a: ([u8; 4], u16)) -> SocketAddrV4 {
    SocketAddrV4::new(a.0.into(), a.1)
}

/// The client→VIP flow key of UDP client `i`.
fn udp_key(i: u32) -> FlowKey {
    let (c, p) = client(i);
    FlowKey::new(FAMILY_V4, 17, v4(c), p, v4(VIP), 53).0
}

fn udp_flow(i: u32) -> Vec<u8> {
    let (c, p) = client(i);
    udp4(c, p, VIP, 53, b"query")
}

fn counters(lb: &Lb) -> Vec<(&'static str, u64)> {
    let mut r = Report::default();
    lb.report(&mut r);
    r.counters
}

#[test]
fn distribution_follows_weights_within_5_percent() {
    let mut lb: Lb = build(&cfg([1, 2, 3], ""));
    let n = 100_000u32;
    let mut seen = [0u32; 3];
    for i in 0..n {
        let (v, out) = send(&mut lb, Nanos(0), 0, &udp_flow(i));
        assert_eq!(v, Verdict::Continue);
        let (addr, port) = dest(&out);
        assert_eq!(port, 5353);
        seen[usize::from(addr[3] - 1)] += 1;
    }
    for (i, w) in [1.0, 2.0, 3.0].iter().enumerate() {
        let want = f64::from(n) * w / 6.0;
        let err = (f64::from(seen[i]) - want).abs() / want;
        assert!(err < 0.05, "backend {i}: {} flows, want {want:.0} ± 5 %", seen[i]);
        // UDP backends are ids 3..6 (after the TCP VIP's three).
        let k = lb.backend_counters(BackendId(3 + i as u16));
        assert_eq!(k.new_flows, u64::from(seen[i]));
        assert_eq!(k.packets, u64::from(seen[i]));
        assert_eq!(k.bytes, u64::from(seen[i]) * 33); // 20 IP + 8 UDP + 5 payload
    }
    let c = lb.counters();
    assert_eq!(c, Counters { forwarded: u64::from(n), new_flows: u64::from(n), ..Counters::default() });
    assert_eq!(lb.flows(Nanos(0)), n as usize);
}

#[test]
fn flows_stay_on_their_backend_after_rebuilds() {
    let mut lb: Lb = build(&cfg([1, 1, 1], ""));
    let n = 3000u32;
    let first: Vec<_> = (0..n).map(|i| dest(&send(&mut lb, Nanos(0), 0, &udp_flow(i)).1)).collect();
    let before = lb.table(VipId(1)).unwrap().clone();
    // Each operation rebuilds the UDP VIP's Maglev table.
    let ops: &[(u8, Option<bool>)] = &[(1, Some(true)), (2, Some(true)), (1, Some(false)), (3, None)];
    for (step, (b, op)) in ops.iter().enumerate() {
        let addr = sa(backend(*b, 5353));
        match op {
            Some(d) => assert_eq!(lb.set_draining(addr, *d), Ok(1)),
            None => assert_eq!(lb.remove_backend(addr), Ok(1)),
        }
        let table = lb.table(VipId(1)).unwrap();
        let remapped =
            (0..n).filter(|i| before.lookup(udp_key(*i).hash()) != table.lookup(udp_key(*i).hash()));
        assert!(remapped.count() > 0, "step {step}: the rebuild changed nothing, the test proves nothing");
        let removed = op.is_none();
        let mut moved = 0;
        for i in 0..n {
            let now = Nanos::from_secs(step as u64 + 1);
            let got = dest(&send(&mut lb, now, 0, &udp_flow(i)).1);
            if removed && first[i as usize] == backend(*b, 5353) {
                assert_ne!(got, first[i as usize], "flow {i} stayed on a removed backend");
                moved += 1;
            } else {
                assert_eq!(got, first[i as usize], "step {step}: flow {i} moved");
            }
        }
        if removed {
            assert_eq!(lb.counters().rescheduled, moved);
        }
    }
}

#[test]
fn removing_one_backend_disrupts_almost_no_other_flow() {
    let mut t = "[[vip]]\naddr = \"192.0.2.10:53\"\nproto = \"udp\"\n".to_string();
    for i in 1..=10 {
        t += &format!("[[vip.backend]]\naddr = \"10.1.0.{i}:53\"\n");
    }
    let mut lb: Lb = build(&t);
    let hashes: Vec<u32> = (0..100_000).map(|i| udp_key(i).hash()).collect();
    let before: Vec<_> = hashes.iter().map(|h| lb.table(VipId(0)).unwrap().lookup(*h)).collect();
    assert_eq!(lb.remove_backend(sa(backend(4, 53))), Ok(1));
    let table = lb.table(VipId(0)).unwrap();
    let (mut others, mut others_moved) = (0u32, 0u32);
    for (h, old) in hashes.iter().zip(&before) {
        let new = table.lookup(*h);
        assert_ne!(new, Some(3), "the removed backend is still in the table");
        if *old != Some(3) {
            others += 1;
            others_moved += u32::from(new != *old);
        }
    }
    let frac = f64::from(others_moved) / f64::from(others);
    assert!(frac < 0.01, "{others_moved} of {others} flows of other backends moved ({frac:.4})");
    assert_eq!(lb.backend_state(BackendId(3)), Some(BackendState::Removed));
    // Removing it again is refused; an unknown backend too.
    assert!(lb.remove_backend(sa(backend(4, 53))).is_err());
    assert!(lb.set_draining(sa(backend(99, 53)), true).is_err());
}

#[test]
fn draining_keeps_flows_and_takes_no_new_ones() {
    let mut lb: Lb = build(&cfg([1, 1, 1], ""));
    let old: Vec<_> = (0..3000).map(|i| dest(&send(&mut lb, Nanos(0), 0, &udp_flow(i)).1)).collect();
    let drained = backend(2, 5353);
    let on_drained = old.iter().filter(|d| **d == drained).count() as u64;
    assert!(on_drained > 500);
    assert_eq!(lb.set_draining(sa(drained), true), Ok(1));
    let before = lb.backend_counters(BackendId(4));
    for (i, d) in old.iter().enumerate() {
        assert_eq!(dest(&send(&mut lb, Nanos(1), 0, &udp_flow(i as u32)).1), *d);
    }
    for i in 3000..13_000 {
        assert_ne!(dest(&send(&mut lb, Nanos(1), 0, &udp_flow(i)).1), drained);
    }
    let after = lb.backend_counters(BackendId(4));
    assert_eq!(
        after,
        BackendCounters {
            new_flows: before.new_flows,
            packets: before.packets + on_drained,
            bytes: before.bytes + on_drained * 33
        }
    );
    // Draining every backend leaves new flows nowhere to go: a counted drop.
    for b in [1, 3] {
        assert_eq!(lb.set_draining(sa(backend(b, 5353)), true), Ok(1));
    }
    let (v, _) = send(&mut lb, Nanos(1), 0, &udp_flow(50_000));
    assert_eq!(v, Verdict::Drop(DropReason::LbNoBackend));
    assert_eq!(lb.counters().no_backend, 1);
    // Existing flows still flow.
    assert_eq!(send(&mut lb, Nanos(1), 0, &udp_flow(0)).0, Verdict::Continue);

    // `drain = true` in the configuration: never picked from the start.
    let mut lb: Lb = build(&cfg([1, 1, 1], "").replacen("weight = 1\n", "weight = 1\ndrain = true\n", 1));
    assert_eq!(lb.backend_state(BackendId(0)), Some(BackendState::Draining));
    for i in 0..3000u32 {
        let (c, p) = client(i);
        let (v, out) = send(&mut lb, Nanos(0), 0, &tcp4(c, p, VIP, 80, 0x02));
        assert_eq!(v, Verdict::Continue);
        assert_ne!(dest(&out), backend(1, 8080));
    }
}

/// Builds the backend's reply to a forwarded frame.
type ReplyOf = fn(&[u8]) -> Vec<u8>;

#[test]
fn dnat_both_ways_with_valid_checksums_and_exact_counters() {
    let client_ep = ([198, 51, 100, 7], 40_000u16);
    let frames: [(&str, Vec<u8>, ReplyOf); 2] = [
        ("tcp", tcp4(client_ep.0, client_ep.1, VIP, 80, 0x02), |f| {
            let (d, p) = dest(f);
            tcp4(d, p, [198, 51, 100, 7], 40_000, 0x12)
        }),
        ("udp", udp4(client_ep.0, client_ep.1, VIP, 53, b"query"), |f| {
            let (d, p) = dest(f);
            udp4(d, p, [198, 51, 100, 7], 40_000, b"answer")
        }),
    ];
    for (name, frame, reply_of) in frames {
        let mut lb: Lb = build(&cfg([1, 1, 1], ""));
        let (v, out) = send(&mut lb, Nanos(0), 0, &frame);
        assert_eq!(v, Verdict::Continue, "{name}");
        assert_checksums(&out);
        let (baddr, bport) = dest(&out);
        assert_eq!(&baddr[..3], &[10, 1, 0], "{name}");
        assert_eq!(bport, if name == "tcp" { 8080 } else { 5353 });
        assert_eq!(source(&out), client_ep, "{name}: the client address is kept");
        // Only the addresses, ports and checksums changed.
        let diff = frame.iter().zip(&out).filter(|(a, b)| a != b).count();
        assert!(diff <= 10, "{name}: {diff} bytes changed");

        let reply = reply_of(&out);
        let (v, back) = send(&mut lb, Nanos(1), 1, &reply);
        assert_eq!(v, Verdict::Continue);
        assert_checksums(&back);
        let vport = if name == "tcp" { 80 } else { 53 };
        assert_eq!(source(&back), (VIP, vport), "{name}: the client sees the VIP");
        assert_eq!(dest(&back), client_ep);

        // The backend talking to someone it was not balanced to: untouched.
        let stray = if name == "tcp" {
            tcp4(baddr, bport, [203, 0, 113, 1], 999, 0x12)
        } else {
            udp4(baddr, bport, [203, 0, 113, 1], 999, b"x")
        };
        assert_eq!(send(&mut lb, Nanos(1), 1, &stray), (Verdict::Continue, stray.clone()));
        // Traffic for no VIP: untouched.
        let other = udp4([10, 0, 0, 1], 1, [10, 0, 0, 2], 53, b"x");
        assert_eq!(send(&mut lb, Nanos(1), 0, &other), (Verdict::Continue, other.clone()));

        assert_eq!(
            lb.counters(),
            Counters {
                forwarded: 1,
                new_flows: 1,
                replies: 1,
                replies_unmatched: 1,
                passed: 1,
                ..Counters::default()
            },
            "{name}"
        );
        let b = BackendId(u16::from(baddr[3] - 1) + if name == "tcp" { 0 } else { 3 });
        let k = lb.backend_counters(b);
        assert_eq!((k.new_flows, k.packets), (1, 2), "{name}");
        assert_eq!(k.bytes, (frame.len() - 14 + reply.len() - 14) as u64, "{name}");
        let names = counters(&lb);
        let per = |what: &str| {
            let n = format!("backend.{name}.{}:{bport}.{what}", std::net::Ipv4Addr::from(baddr));
            names.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
        };
        assert_eq!((per("new_flows"), per("packets")), (Some(1), Some(2)), "{name}");
    }
}

#[test]
fn stateless_replies_translate_without_flow_state() {
    let mut lb: Lb = build(&cfg([1, 1, 1], "stateless_replies = true"));
    // A reply whose flow lives on another core (never seen here).
    let reply = udp4([10, 1, 0, 2], 5353, [198, 51, 100, 7], 40_000, b"answer");
    let (v, back) = send(&mut lb, Nanos(0), 1, &reply);
    assert_eq!(v, Verdict::Continue);
    assert_checksums(&back);
    assert_eq!(source(&back), (VIP, 53));
    assert_eq!(lb.counters(), Counters { replies_stateless: 1, ..Counters::default() });
}

#[test]
fn idle_flows_expire_on_the_virtual_clock() {
    let mut lb: Lb = build(&cfg([1, 1, 1], "").replace("flows = 200000", "flows = 1000"));
    let f = udp_flow(7);
    let first = dest(&send(&mut lb, Nanos(0), 0, &f).1);
    assert_eq!(lb.set_draining(sa(first), true), Ok(1));
    // (time, still on the drained backend?): every packet pushes the expiry 10 s on.
    let steps = [(9_000, true), (18_999, true), (28_998, true), (38_998, false), (40_000, false)];
    for (ms, sticky) in steps {
        let got = dest(&send(&mut lb, Nanos::from_millis(ms), 0, &f).1);
        assert_eq!(got == first, sticky, "at {ms} ms");
    }
    assert_eq!(lb.counters().new_flows, 2);
    // The sweep (64 slots per call, 2048 slots) reclaims the idle flow.
    let late = Nanos::from_secs(60);
    for _ in 0..32 {
        lb.housekeeping(&Ctx { now: late, core: CoreId(0) });
    }
    assert_eq!(lb.flows(late), 0);
    let mut r = Report::default();
    lb.report(&mut r);
    let (_, _, t) = r.tables.iter().find(|(n, _, _)| n == "flows").unwrap();
    assert_eq!((t.len, t.inserts, t.expired), (0, 2, 2));
}

#[test]
fn full_table_is_a_counted_drop() {
    for (policy, fifth, evicted) in
        [("refuse", Verdict::Drop(DropReason::TableFull), 0), ("evict_lru", Verdict::Continue, 1)]
    {
        let extra = format!("full_policy = \"{policy}\"");
        let mut lb: Lb = build(&cfg([1, 1, 1], &extra).replace("flows = 200000", "flows = 4"));
        for i in 0..4 {
            assert_eq!(send(&mut lb, Nanos(i.into()), 0, &udp_flow(i)).0, Verdict::Continue);
        }
        assert_eq!(send(&mut lb, Nanos(9), 0, &udp_flow(4)).0, fifth, "{policy}");
        // Known flows keep flowing (the 4th is the newest, never the eviction victim).
        assert_eq!(send(&mut lb, Nanos(10), 0, &udp_flow(3)).0, Verdict::Continue);
        let refused = u64::from(evicted == 0);
        let c = lb.counters();
        assert_eq!((c.table_full, c.new_flows, c.forwarded), (refused, 5 - refused, 6 - refused), "{policy}");
        let mut r = Report::default();
        lb.report(&mut r);
        let (_, _, t) = r.tables.iter().find(|(n, _, _)| n == "flows").unwrap();
        assert_eq!((t.len, t.capacity, t.refused, t.evicted), (4, 4, refused, evicted), "{policy}");
    }
}

#[test]
fn fragments_to_a_vip_are_dropped() {
    let mut lb: Lb = build(&cfg([1, 1, 1], ""));
    let mut f = udp_flow(1);
    // More-fragments flag, then the IPv4 header checksum again.
    f[20] |= 0x20;
    f[24..26].copy_from_slice(&[0, 0]);
    let sum = f[14..34].chunks(2).fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
    let sum = (sum & 0xffff) + (sum >> 16);
    f[24..26].copy_from_slice(&(!(sum as u16 + (sum >> 16) as u16)).to_be_bytes());
    assert_eq!(send(&mut lb, Nanos(0), 0, &f).0, Verdict::Drop(DropReason::Fragment));
    assert_eq!(lb.counters(), Counters { fragments: 1, ..Counters::default() });
}

fn init(toml_text: &str) -> Result<Lb, NfError> {
    init_on(toml_text, 1)
}

/// One core's instance of a dataplane with `cores` cores.
fn init_on(toml_text: &str, cores: usize) -> Result<Lb, NfError> {
    let cfg: LbConfig = toml::from_str(toml_text).unwrap();
    let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string()];
    let mut rt = InitCtx {
        instance: crate::ids::Instance::default(),
        name: "t",
        core: CoreId(0),
        cores,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    Lb::init(&cfg, &mut rt)
}

#[test]
fn bad_configs_name_the_key() {
    let ok = cfg([1, 1, 1], "");
    assert!(init(&ok).is_ok());
    let cases: &[(String, &str)] = &[
        (cfg([1, 1, 1], "mode = \"encap\""), "encap_source"),
        (encap_cfg("encap_source = \"10.1.0.\""), "encap_source"),
        (encap_cfg("encap_source = \"10.1.0.254\"\nencap_ttl = 0"), "encap_ttl"),
        (encap_cfg("encap_source = \"10.1.0.254\"\nencap_mtu = 500"), "encap_mtu"),
        (
            encap_cfg("encap_source = \"10.1.0.254\"").replace("10.1.0.2:80", "10.1.0.2:8080"),
            "vip[0].backend[1].addr",
        ),
        (cfg([1, 1, 1], "table_size = 65536"), "table_size"),
        (cfg([1, 1, 1], "table_size = 251"), "table_size"),
        (cfg([1, 0, 1], ""), "vip[0].backend[1].weight"),
        (ok.replace("proto = \"udp\"", "proto = \"icmp\""), "vip[1].proto"),
        (ok.replace("192.0.2.10:53", "192.0.2.10:80").replace("\"udp\"", "\"tcp\""), "vip[1].addr"),
        (ok.replace("10.1.0.2:8080", "10.1.0.1:8080"), "vip[0].backend[1].addr"),
        (ok.replace("10.1.0.3:8080", "10.1.0.3"), "vip[0].backend[2].addr"),
        (ok.replace("flows = 200000", "flows = 0"), "flows"),
        (ok.replace("name = \"udp\"", "name = \"tcp\""), "vip[1].name"),
        (ok.replace("idle_timeout = 10", "idle_timeout = 0"), "idle_timeout"),
    ];
    for (text, key) in cases {
        match init(text) {
            Err(NfError::Param { key: k, detail }) => {
                assert_eq!(k, *key, "{detail}");
                assert!(!detail.is_empty());
            }
            other => panic!("{key}: expected a parameter error, got {other:?}"),
        }
    }
    assert!(toml::from_str::<LbConfig>(&format!("{ok}\nbogus = 1")).is_err(), "unknown keys are refused");
}

/// One TCP VIP 192.0.2.10:80 in `encap` mode, backends 10.1.0.1–3 (the second written with
/// the VIP's port, which is allowed).
fn encap_cfg(extra: &str) -> String {
    let mut t = format!(
        "mode = \"encap\"\nflows = 1000\n{extra}\n[[vip]]\naddr = \"192.0.2.10:80\"\nproto = \"tcp\"\n"
    );
    for b in ["10.1.0.1", "10.1.0.2:80", "10.1.0.3"] {
        t += &format!("[[vip.backend]]\naddr = \"{b}\"\n");
    }
    t
}

/// Runs `frames` through `lb` as one burst on the growing path the dataplane uses.
fn burst(lb: &mut Lb, frames: &mut [Vec<u8>]) -> (Vec<Verdict>, Vec<crate::packet::Meta>) {
    let mut metas: Vec<_> =
        frames.iter().map(|f| parse(f, PortId(0), &ParsePolicy::default()).unwrap()).collect();
    let mut verdicts = vec![Verdict::Continue; frames.len()];
    let active: Vec<u16> = (0..frames.len() as u16).collect();
    let mut b = crate::nf::Burst { frames, metas: &mut metas, verdicts: &mut verdicts, active: &active };
    lb.process(&Ctx { now: Nanos::from_secs(1), core: CoreId(0) }, &mut b);
    (verdicts, metas)
}

#[test]
fn encap_puts_the_untouched_packet_in_an_outer_header_to_its_backend() {
    let mut lb = init(&encap_cfg("encap_source = \"10.1.0.254\"\nencap_ttl = 17")).unwrap();
    let mut first = tcp4([10, 9, 0, 1], 40_000, VIP, 80, 0x02);
    // DSCP 46 + ECT(0), and DF, must show on the outer header.
    first[15] = 0xba;
    first[20] |= 0x40;
    first[24..26].copy_from_slice(&[0, 0]);
    let c = crate::packet::checksum::checksum(&first[14..34]).to_be_bytes();
    first[24..26].copy_from_slice(&c);
    let inner = first[14..].to_vec();
    let mut frames = vec![
        first.clone(),
        tcp4([10, 9, 0, 1], 40_000, VIP, 80, 0x10),
        tcp4([10, 9, 0, 2], 1, [10, 0, 0, 9], 80, 0x10),
    ];
    let untouched = frames[2].clone();
    let (verdicts, metas) = burst(&mut lb, &mut frames);
    assert_eq!(verdicts, vec![Verdict::Continue; 3]);
    let f = &frames[0];
    assert_eq!(f.len(), first.len() + 20);
    assert_eq!(f[..14], first[..14], "Ethernet header kept");
    let outer = &f[14..34];
    let backend = [outer[16], outer[17], outer[18], outer[19]];
    assert!([[10, 1, 0, 1], [10, 1, 0, 2], [10, 1, 0, 3]].contains(&backend), "{backend:?}");
    assert_eq!(outer[0], 0x45);
    assert_eq!(outer[1], 0xba, "TOS (DSCP and ECN) copied");
    assert_eq!(u16::from_be_bytes([outer[2], outer[3]]) as usize, inner.len() + 20);
    assert_eq!(outer[6] & 0xe0, 0x40, "DF copied, no MF");
    assert_eq!((outer[8], outer[9]), (17, 4), "TTL and IP-in-IP");
    assert_eq!(outer[12..16], [10, 1, 0, 254]);
    assert_eq!(crate::packet::checksum::checksum(outer), 0, "outer header checksum");
    assert_eq!(f[34..], inner[..], "inner packet byte for byte");
    // The metadata describes the outer packet for the next NF.
    assert_eq!(metas[0], parse(f, PortId(0), &ParsePolicy::default()).unwrap());
    assert_eq!(u8::from(metas[0].proto), 4);
    // The connection's next packet goes to the same backend; other traffic passes untouched.
    assert_eq!(frames[1][30..34], backend);
    assert_ne!(frames[1][18..20], frames[0][18..20], "a new identification per outer header");
    assert_eq!(frames[2], untouched);
    let c = lb.counters();
    assert_eq!((c.encapsulated, c.forwarded, c.new_flows, c.passed, c.replies), (2, 2, 1, 1, 0));
}

#[test]
fn encap_mtu_and_room_are_counted_drops() {
    let mut lb = init(&encap_cfg("encap_source = \"10.1.0.254\"\nencap_mtu = 1000")).unwrap();
    // Inner IPv4 packets of 980 bytes (fits exactly) and 981 bytes (one too many).
    let fits = tcp_to_vip(980);
    let big = tcp_to_vip(981);
    let mut frames = vec![fits, big];
    let (verdicts, _) = burst(&mut lb, &mut frames);
    assert_eq!(verdicts, vec![Verdict::Continue, Verdict::Drop(DropReason::LbEncapTooBig)]);
    assert_eq!(frames[0].len(), 14 + 1000);
    // A plain slice cannot grow: the per-packet entry point drops, counted by reason.
    let (v, _) = send(&mut lb, Nanos::from_secs(1), 0, &tcp4([10, 9, 0, 1], 40_000, VIP, 80, 0x02));
    assert_eq!(v, Verdict::Drop(DropReason::LbNoRoom));
}

/// A TCP segment to the VIP whose IPv4 packet is `ip_len` bytes long.
fn tcp_to_vip(ip_len: usize) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([10, 9, 0, 3], VIP, 64)
        .tcp(4000, 80, 1, 1000);
    let mut out = Vec::new();
    b.write(&mut out, &vec![7u8; ip_len - 40]).unwrap();
    out
}

#[test]
fn both_directions_of_a_connection_steer_to_one_core() {
    let mut lb = init_on(&cfg([1, 1, 1], ""), 4).unwrap();
    let mut used = [0u32; 4];
    for i in 0..2000u32 {
        let (c, cport) = client(i);
        let (_, fwd) = send(&mut lb, Nanos::from_secs(1), 0, &tcp4(c, cport, VIP, 80, 0x02));
        let (b, bport) = dest(&fwd);
        let to_vip = tcp4(c, cport, VIP, 80, 0x10);
        let reply = tcp4(b, bport, c, cport, 0x12);
        let steer = |f: &[u8]| lb.steer(&parse(f, PortId(1), &ParsePolicy::default()).unwrap(), f);
        let core = steer(&to_vip).expect("a packet to a VIP is steered");
        assert_eq!(steer(&reply), Some(core), "flow {i}: the reply from {b:?}:{bport} goes elsewhere");
        used[usize::from(core.0)] += 1;
    }
    assert!(used.iter().all(|&n| n > 350), "flows spread over the cores: {used:?}");
    // Neither VIP nor backend traffic, one core, or encap mode's (absent) replies: no opinion.
    let other = tcp4([10, 9, 9, 9], 1, [10, 8, 8, 8], 2, 0x02);
    assert_eq!(lb.steer(&parse(&other, PortId(0), &ParsePolicy::default()).unwrap(), &other), None);
    let one = init(&cfg([1, 1, 1], "")).unwrap();
    let syn = tcp4([10, 9, 0, 1], 1, VIP, 80, 0x02);
    assert_eq!(one.steer(&parse(&syn, PortId(0), &ParsePolicy::default()).unwrap(), &syn), None);
    let encap = init_on(&encap_cfg("encap_source = \"10.1.0.254\""), 4).unwrap();
    let from_backend = tcp4([10, 1, 0, 1], 80, [10, 9, 0, 1], 1, 0x12);
    let m = parse(&from_backend, PortId(1), &ParsePolicy::default()).unwrap();
    assert_eq!(encap.steer(&m, &from_backend), None);
    assert!(encap.steer(&parse(&syn, PortId(0), &ParsePolicy::default()).unwrap(), &syn).is_some());
}
