//! Replaying a capture at a set rate and, for `nflet gen`, with probes: a wrapper around the
//! pcap reader.
//!
//! The replayed frames form one probe stream per port (stream 0, sequence = the frame's
//! number among the stamped ones). A frame is stamped when it is Ethernet (VLAN tags
//! allowed) + IPv4/IPv6 + TCP/UDP with at least 32 bytes of payload; the first 32 payload
//! bytes are overwritten and the L4 checksum recomputed. Other frames are replayed unchanged
//! and counted ([`Replay::unstamped`]); an analyzer counts them as frames without a probe.

use std::time::Instant;

use super::pcap::PcapReader;
use super::{BufPool, PktBuf, RxQueue, RxStatus};
use crate::traffic::probe::{stamp, Probe};
use crate::traffic::{ProbeSession, Sender};

/// A paced, optionally stamping, capture replay.
#[derive(Debug)]
pub struct Replay {
    reader: PcapReader,
    rate_pps: u64,
    begin: Option<Instant>,
    taken: u64,
    probe: Option<Stamping>,
}

#[derive(Debug)]
struct Stamping {
    sender: Sender,
    port: u16,
    next_seq: u64,
    unstamped: u64,
}

impl Replay {
    /// Replays `reader` at `rate_pps` (0: unpaced); with `probe`, stamps frames as generator
    /// port `port` of the session.
    pub fn new(reader: PcapReader, rate_pps: u64, probe: Option<(ProbeSession, u16)>) -> Replay {
        let probe = probe.map(|(session, port)| Stamping {
            sender: Sender::new(session),
            port,
            next_seq: 0,
            unstamped: 0,
        });
        Replay { reader, rate_pps, begin: None, taken: 0, probe }
    }

    /// Frames replayed without a probe (not TCP/UDP, or too short).
    pub fn unstamped(&self) -> u64 {
        self.probe.as_ref().map_or(0, |p| p.unstamped)
    }

    fn stamp_new(&mut self, fresh: &mut [PktBuf]) {
        let Some(p) = &mut self.probe else { return };
        let session = p.sender.session().id;
        let now = p.sender.session().now_ns();
        let mut stamped = 0u64;
        for b in fresh {
            let probe = Probe { session, port: p.port, stream: 0, seq: p.next_seq, tx_ns: now };
            match stamp(b.data_mut(), &probe) {
                Ok(()) => {
                    p.next_seq += 1;
                    stamped += 1;
                }
                Err(_) => p.unstamped += 1,
            }
        }
        p.sender.sent(stamped);
    }
}

impl RxQueue for Replay {
    fn rx_burst(&mut self, pool: &mut BufPool, out: &mut Vec<PktBuf>, max: usize) -> RxStatus {
        if let Some(p) = &mut self.probe {
            if p.sender.halted() {
                p.sender.finish();
                return RxStatus::Exhausted;
            }
        }
        let mut n = max;
        if self.rate_pps > 0 {
            let begin = *self.begin.get_or_insert_with(Instant::now);
            let due = (begin.elapsed().as_secs_f64() * self.rate_pps as f64) as u64;
            n = n.min(usize::try_from(due.saturating_sub(self.taken)).unwrap_or(usize::MAX));
            if n == 0 {
                return RxStatus::Received(0);
            }
        }
        let start = out.len();
        match self.reader.rx_burst(pool, out, n) {
            RxStatus::Exhausted => {
                if let Some(p) = &mut self.probe {
                    p.sender.finish();
                }
                RxStatus::Exhausted
            }
            RxStatus::Received(k) => {
                self.taken += k as u64;
                if let Some(fresh) = out.get_mut(start..) {
                    self.stamp_new(fresh);
                }
                RxStatus::Received(k)
            }
        }
    }

    fn lost(&self) -> u64 {
        self.reader.lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::pcap::{open_reader, open_writer};
    use crate::port::TxQueue;
    use crate::traffic::streams::ProbeStats;

    fn udp(payload: usize) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(7, 9);
        let mut v = Vec::new();
        b.write(&mut v, &vec![0xab; payload]).unwrap();
        v
    }

    #[test]
    fn replay_stamps_what_it_can_paces_and_ends() {
        let dir = std::env::temp_dir().join(format!("nflet-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.pcap");
        // 40 frames: every fourth one too short for a probe.
        let frames: Vec<Vec<u8>> = (0..40).map(|i| udp(if i % 4 == 3 { 10 } else { 100 })).collect();
        {
            let mut w = open_writer("in", &path).unwrap();
            let mut pool = BufPool::new(64, 2048);
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
        let session = ProbeSession::new();
        let mut r = Replay::new(open_reader("in", &path).unwrap(), 2000, Some((session.clone(), 5)));
        assert!(!session.senders_done());
        let mut pool = BufPool::new(64, 2048);
        let mut out = Vec::new();
        let started = Instant::now();
        while r.rx_burst(&mut pool, &mut out, 32) != RxStatus::Exhausted {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // 40 frames at 2000/s take at least 19.5 ms.
        assert!(started.elapsed() >= std::time::Duration::from_millis(19), "{:?}", started.elapsed());
        assert_eq!(out.len(), 40);
        assert_eq!((r.unstamped(), session.sent()), (10, 30));
        assert!(session.senders_done());
        let mut stats = ProbeStats::new(4);
        for b in &out {
            let pkt = etherparse::SlicedPacket::from_ethernet(b.data()).unwrap();
            let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) =
                (pkt.net, pkt.transport)
            else {
                panic!("not udp/ipv4")
            };
            let want = u.to_header().calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "checksum after stamping");
            stats.record(b.data(), session.id, session.now_ns());
        }
        let t = stats.sequence_totals();
        assert_eq!((stats.probes, stats.foreign, t.expected, t.received, t.reordered), (30, 10, 30, 30, 0));
        assert!(stats.streams.keys().all(|k| k.port == 5 && k.stream == 0));
    }
}
