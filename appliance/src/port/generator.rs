//! The in-memory traffic generator: a receive-only port that synthesises frames.
//!
//! Flows are numbered `0..flows`; flow `i` always gets the same addresses and ports, so the
//! chain sees a stable flow population (uniform, or heavy-tailed with popularity ~ 1/rank).
//! Frames are Ethernet/IPv4/UDP or TCP (a SYN first, then ACKs, so stateful firewalls accept
//! them) with valid checksums, fixed-size or IMIX (7:4:1 of 64, 594 and 1518 bytes), paced to
//! a rate or as fast as the core can go, for a count or forever. Each core polls its own
//! generator with its own seed, so generators never share anything.
//!
//! With a probe ([`Generator::with_probe`], `probe = true`), every frame carries a
//! [`Probe`] at the start of its payload: the session, the port, the flow as stream, the
//! flow's own sequence number and the session-clock time of the burst that made it (read once
//! per burst), all under the L4 checksum. Frames grow to fit it (74 bytes for UDP, 86 for
//! TCP), and the session's halt flag ends the generator as if its count were reached.

use std::time::Instant;

use nflet_nfs::addr::Prefix;
use nflet_nfs::flow::{v4, FlowKey, FAMILY_V4};
use nflet_nfs::packet::checksum;
use nflet_nfs::packet::IpProtocol;
use nflet_nfs::rng::Rng;

use super::{BufPool, PktBuf, RxQueue, RxStatus};
use crate::config::raw::{RawGenProto, RawGenerator, RawPopularity, RawSize};
use crate::traffic::probe::{Probe, PROBE_LEN};
use crate::traffic::{ProbeSession, Sender};

const IMIX: [u16; 12] = [64, 64, 64, 64, 64, 64, 64, 594, 594, 594, 594, 1518];
const ETH: usize = 14;
const IP: usize = 20;

/// A generator receive queue.
#[derive(Debug)]
pub struct Generator {
    cfg: RawGenerator,
    rng: Rng,
    sent: u64,
    started: Vec<u64>,
    begin: Option<Instant>,
    src_space: u32,
    dst_space: u32,
    /// With several cores: the flows whose symmetric hash belongs to this core, so the
    /// generator behaves like a NIC queue fed by symmetric RSS.
    owned: Option<Vec<u32>>,
    probe: Option<Probing>,
}

/// A generator's probe state.
#[derive(Debug)]
struct Probing {
    sender: Sender,
    port: u16,
    /// Next sequence number of each flow.
    next_seq: Vec<u64>,
    /// Session time of the current burst.
    now_ns: u64,
}

impl Generator {
    /// A generator for core `core` of `cores`: it sends only the flows that steering would
    /// give that core, as a NIC with symmetric RSS would.
    pub fn new(cfg: &RawGenerator, core: usize, cores: usize) -> Generator {
        let space = |p: &Prefix| if p.len >= 32 { 1 } else { 1u32 << (32 - u32::from(p.len)).min(31) };
        let mut g = Generator {
            rng: Rng::new(cfg.seed.wrapping_add(core as u64 * 0x1000_0001)),
            sent: 0,
            started: vec![0; (cfg.flows as usize).div_ceil(64)],
            begin: None,
            src_space: space(&cfg.src),
            dst_space: space(&cfg.dst),
            cfg: cfg.clone(),
            owned: None,
            probe: None,
        };
        if cores > 1 {
            let owned: Vec<u32> = (0..g.cfg.flows)
                .filter(|f| nflet_nfs::flow::core_for(g.flow_key(*f).hash(), cores) == core)
                .collect();
            g.owned = Some(owned);
        }
        g
    }

    /// Makes every frame carry a probe of `session`, naming generator port `port`.
    pub fn with_probe(mut self, session: ProbeSession, port: u16) -> Generator {
        let next_seq = vec![0; self.cfg.flows as usize];
        self.probe = Some(Probing { sender: Sender::new(session), port, next_seq, now_ns: 0 });
        self
    }

    /// The flow key of flow `flow` (as the parser will compute it).
    pub fn flow_key(&self, flow: u32) -> FlowKey {
        let (tcp, src, dst, sport, dport) = self.endpoints(flow);
        FlowKey::new(FAMILY_V4, if tcp { 6 } else { 17 }, v4(src), sport, v4(dst), dport).0
    }

    fn endpoints(&self, flow: u32) -> (bool, [u8; 4], [u8; 4], u16, u16) {
        let tcp = match self.cfg.proto {
            RawGenProto::Udp => false,
            RawGenProto::Tcp => true,
            RawGenProto::Mix => flow % 2 == 1,
        };
        let src = self.addr(&self.cfg.src, flow % self.src_space);
        let dst = self.addr(&self.cfg.dst, flow.wrapping_mul(2_654_435_761) % self.dst_space);
        let sport = 1024 + ((flow / self.src_space) % 64_000) as u16;
        let dport = if tcp { 80 } else { 5000 + (flow % 1000) as u16 };
        (tcp, src, dst, sport, dport)
    }

    fn pick_flow(&mut self) -> u32 {
        if self.cfg.setup_pass {
            let n = self.owned.as_ref().map_or(u64::from(self.cfg.flows), |o| o.len() as u64);
            if self.sent < n {
                let i = self.sent as usize;
                return self.owned.as_ref().map_or(i as u32, |o| o.get(i).copied().unwrap_or(0));
            }
        }
        let n = self.owned.as_ref().map_or(u64::from(self.cfg.flows), |o| o.len() as u64).max(1);
        let i = match self.cfg.flow_popularity {
            RawPopularity::Uniform => self.rng.below(n),
            // Log-uniform rank: P(rank) ~ 1/rank, a Zipf(1)-like heavy tail.
            RawPopularity::HeavyTailed => {
                ((n as f64 + 1.0).powf(self.rng.unit()) as u64).saturating_sub(1).min(n - 1)
            }
        };
        let i = u32::try_from(i).unwrap_or(0);
        match &self.owned {
            Some(o) => o.get(i as usize).copied().unwrap_or(0),
            None => i,
        }
    }

    fn size(&mut self) -> usize {
        match self.cfg.size {
            RawSize::Bytes(n) => usize::from(n),
            RawSize::Named(_) => {
                usize::from(IMIX.get(self.rng.below(IMIX.len() as u64) as usize).copied().unwrap_or(64))
            }
        }
    }

    /// Writes flow `flow`'s next frame of `size` bytes into `buf`; false if it does not fit.
    pub fn write_frame(&mut self, flow: u32, size: usize, buf: &mut PktBuf) -> bool {
        let (tcp, src, dst, sport, dport) = self.endpoints(flow);
        let l4 = if tcp { 20 } else { 8 };
        let probe_len = if self.probe.is_some() { PROBE_LEN } else { 0 };
        let size = size.max(ETH + IP + l4 + probe_len);
        let Some(f) = buf.storage_mut().get_mut(..size) else { return false };
        f.fill(0);
        // Ethernet: locally administered MACs.
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip_len = (size - ETH) as u16;
        let ip = &mut f[ETH..ETH + IP];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
        ip[4..6].copy_from_slice(&(self.sent as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = 64;
        ip[9] = if tcp { 6 } else { 17 };
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let seg_len = ip_len - IP as u16;
        let seg = &mut f[ETH + IP..size];
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&dport.to_be_bytes());
        let proto = if tcp {
            let first = self.first_packet(flow);
            seg[4..8].copy_from_slice(&1u32.to_be_bytes());
            seg[12] = 5 << 4;
            seg[13] = if first { 0x02 } else { 0x10 };
            seg[14..16].copy_from_slice(&65535u16.to_be_bytes());
            IpProtocol::Tcp
        } else {
            seg[4..6].copy_from_slice(&seg_len.to_be_bytes());
            IpProtocol::Udp
        };
        if let Some(p) = &mut self.probe {
            let Some(seq) = p.next_seq.get_mut(flow as usize) else { return false };
            let session = p.sender.session().id;
            let probe = Probe { session, port: p.port, stream: flow, seq: *seq, tx_ns: p.now_ns };
            if !seg.get_mut(l4..).is_some_and(|payload| probe.write(payload)) {
                return false;
            }
            *seq += 1;
        }
        let sum = checksum::add(checksum::pseudo_v4(src, dst, proto, seg_len), checksum::sum(seg));
        let off = if tcp { 16 } else { 6 };
        seg[off..off + 2].copy_from_slice(&checksum::nonzero(!sum).to_be_bytes());
        buf.set_len(size);
        true
    }

    fn addr(&self, p: &Prefix, host: u32) -> [u8; 4] {
        let base = u32::from_be_bytes([p.addr[0], p.addr[1], p.addr[2], p.addr[3]]);
        (base | host).to_be_bytes()
    }

    fn first_packet(&mut self, flow: u32) -> bool {
        let (w, b) = ((flow / 64) as usize, flow % 64);
        match self.started.get_mut(w) {
            Some(word) if *word & (1 << b) == 0 => {
                *word |= 1 << b;
                true
            }
            _ => false,
        }
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl RxQueue for Generator {
    fn steered(&self) -> bool {
        self.owned.is_some()
    }

    fn rx_burst(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus {
        let mut n = max as u64;
        if let Some(p) = &mut self.probe {
            if p.sender.halted() {
                p.sender.finish();
                return RxStatus::Exhausted;
            }
            p.now_ns = p.sender.session().now_ns();
        }
        if self.cfg.count > 0 {
            if self.sent >= self.cfg.count {
                if let Some(p) = &mut self.probe {
                    p.sender.finish();
                }
                return RxStatus::Exhausted;
            }
            n = n.min(self.cfg.count - self.sent);
        }
        if self.cfg.rate_pps > 0 {
            let begin = *self.begin.get_or_insert_with(Instant::now);
            let due = (begin.elapsed().as_secs_f64() * self.cfg.rate_pps as f64) as u64;
            n = n.min(due.saturating_sub(self.sent));
        }
        let mut made = 0;
        for _ in 0..n {
            let Some(mut buf) = pool.get() else { break };
            let flow = self.pick_flow();
            let size = self.size();
            if self.write_frame(flow, size, &mut buf) {
                out.push(buf);
                made += 1;
                self.sent += 1;
            } else {
                pool.put(buf);
            }
        }
        if let Some(p) = &self.probe {
            p.sender.sent(made as u64);
        }
        RxStatus::Received(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nflet_nfs::ids::PortId;
    use nflet_nfs::packet::{parse, IpProtocol, ParsePolicy};
    use std::collections::HashSet;

    fn gen(toml_text: &str) -> Generator {
        let cfg: RawGenerator = toml::from_str(toml_text).unwrap();
        Generator::new(&cfg, 0, 1)
    }

    #[test]
    fn frames_parse_with_valid_checksums_and_stable_flows() {
        for proto in ["udp", "tcp", "mix"] {
            let mut g = gen(&format!("flows = 100\ncount = 2000\nproto = \"{proto}\""));
            let mut pool = BufPool::new(4096, 2048);
            let mut out = Vec::new();
            while g.rx_burst(&mut pool, &mut out, 32) != RxStatus::Exhausted {}
            assert_eq!(out.len(), 2000);
            let mut keys = HashSet::new();
            for b in &out {
                let m = parse(b.data(), PortId(0), &ParsePolicy::default()).unwrap();
                keys.insert(m.key);
                let pkt = etherparse::SlicedPacket::from_ethernet(b.data()).unwrap();
                let Some(etherparse::NetSlice::Ipv4(ip)) = pkt.net else { panic!("not ipv4") };
                match pkt.transport {
                    Some(etherparse::TransportSlice::Udp(u)) => {
                        assert_eq!(m.proto, IpProtocol::Udp);
                        let want =
                            u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap();
                        assert_eq!(u.checksum(), want);
                    }
                    Some(etherparse::TransportSlice::Tcp(t)) => {
                        assert_eq!(m.proto, IpProtocol::Tcp);
                        let want =
                            t.to_header().calc_checksum_ipv4(&ip.header().to_header(), t.payload()).unwrap();
                        assert_eq!(t.checksum(), want);
                    }
                    other => panic!("unexpected transport {other:?}"),
                }
            }
            assert_eq!(keys.len(), 100, "{proto}: every flow appears, no extra ones");
        }
    }

    #[test]
    fn tcp_flows_open_with_one_syn() {
        let mut g = gen("flows = 10\ncount = 500\nproto = \"tcp\"");
        let mut pool = BufPool::new(1024, 2048);
        let mut out = Vec::new();
        while g.rx_burst(&mut pool, &mut out, 64) != RxStatus::Exhausted {}
        let syns = out
            .iter()
            .filter(|b| parse(b.data(), PortId(0), &ParsePolicy::default()).unwrap().tcp_flags.syn())
            .count();
        assert_eq!(syns, 10);
    }

    #[test]
    fn imix_mixes_sizes_seven_four_one() {
        let mut g = gen("flows = 10\ncount = 12000\nsize = \"imix\"");
        let mut pool = BufPool::new(16384, 2048);
        let mut out = Vec::new();
        while g.rx_burst(&mut pool, &mut out, 256) != RxStatus::Exhausted {}
        let count = |n: usize| out.iter().filter(|b| b.len() == n).count() as f64 / 1000.0;
        assert!(
            (count(64) - 7.0).abs() < 0.5
                && (count(594) - 4.0).abs() < 0.5
                && (count(1518) - 1.0).abs() < 0.3
        );
    }

    #[test]
    fn heavy_tailed_popularity_favours_low_ranks() {
        let mut g = gen("flows = 10000\nflow_popularity = \"heavy_tailed\"");
        let picks: Vec<u32> = (0..100_000).map(|_| g.pick_flow()).collect();
        let top100 = picks.iter().filter(|i| **i < 100).count();
        // Log-uniform ranks: P(rank < 100) = ln(101)/ln(10001) ≈ 0.5.
        assert!((45_000..55_000).contains(&top100), "{top100}");
        assert!(picks.iter().all(|i| *i < 10_000));
    }

    #[test]
    fn cores_split_flows_like_symmetric_rss() {
        let cfg: RawGenerator = toml::from_str("flows = 1000").unwrap();
        let a = Generator::new(&cfg, 0, 2);
        let b = Generator::new(&cfg, 1, 2);
        let (oa, ob) = (a.owned.clone().unwrap(), b.owned.clone().unwrap());
        assert_eq!(oa.len() + ob.len(), 1000);
        assert!(oa.len() > 400 && ob.len() > 400);
        assert!(oa.iter().all(|f| !ob.contains(f)));
        assert!(a.steered() && b.steered());
    }

    #[test]
    fn rate_limits_frames() {
        let mut g = gen("flows = 1\nrate_pps = 1000");
        let mut pool = BufPool::new(64, 2048);
        let mut out = Vec::new();
        assert_eq!(g.rx_burst(&mut pool, &mut out, 32), RxStatus::Received(0));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let RxStatus::Received(n) = g.rx_burst(&mut pool, &mut out, 64) else { panic!() };
        assert!((10..=64).contains(&n), "{n}");
    }
}
