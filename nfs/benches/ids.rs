//! IDS throughput: 1400-byte TCP packets with text payloads through the `ids` NF with 100,
//! 1 k and 10 k generated content rules (random strings; none occurs in the text), and the
//! time to parse and compile each rule set.
//!
//! `cargo bench -p nflet-nfs --bench ids` (optionally `-- PACKETS`). It measures the NF alone
//! (frames parsed beforehand), one core, 1000 flows visited round robin, one packet at a time
//! and in bursts of 32 (packets of 32 different flows, scanned four at a time).

use std::time::Instant;

use etherparse::PacketBuilder;
use nflet_nfs::functions::ids::{Ids, IdsConfig};
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Burst, Ctx, InitCtx, NetworkFunction, SharedRegistry, Verdict};
use nflet_nfs::packet::{parse, Meta, ParsePolicy};
use nflet_nfs::state::{Arena, Backing};
use nflet_nfs::time::Nanos;

const FRAME: usize = 1400;
const FLOWS: u16 = 1000;
const BURST: usize = 32;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "the",
    "network",
    "function",
    "packet",
    "server",
    "client",
    "download",
    "mirror",
    "release",
    "version",
    "ethernet",
    "protocol",
    "analysis",
    "capture",
    "window",
    "support",
    "document",
    "available",
    "security",
    "href=\"http://www.example.org/pub/",
    "<a",
    "</a>",
    "<td>",
    "</td>",
    "<div class=\"menu\">",
    "\r\n",
    "Content-Type: text/html",
    "Accept-Encoding: gzip",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "with",
    "on",
    "User-Agent: Mozilla/5.0",
    "GET",
    "HTTP/1.1",
    "200",
    "OK",
    "Host:",
    "index.html",
    "images",
    "style",
    "script",
    "function()",
    "return",
    "var",
];

/// Text that reads like HTTP and HTML: words from [`WORDS`] separated by spaces.
fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        out.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// `n` rules with random 8–20 byte contents over letters, digits and `/._-`.
fn rules(n: usize) -> String {
    let mut rng = Rng(0x1d5_1d5);
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789/._-";
    let mut out = String::new();
    for i in 0..n {
        let len = 8 + rng.below(13);
        let pat: String = (0..len).map(|_| alphabet[rng.below(alphabet.len())] as char).collect();
        out.push_str(&format!(
            "alert tcp any any -> any any (msg:\"generated {i}\"; content:\"{pat}\"; sid:{};)\n",
            1_000_000 + i
        ));
    }
    out
}

fn frames() -> Result<Vec<(Vec<u8>, Meta)>, String> {
    let mut rng = Rng(42);
    (0..FLOWS)
        .map(|f| {
            let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, (f >> 8) as u8, f as u8], [192, 0, 2, 1], 64)
                .tcp(10_000 + f, 80, 1, 65535)
                .ack(1);
            let payload = text(&mut rng, FRAME - b.size(0));
            let mut out = Vec::with_capacity(FRAME);
            b.write(&mut out, &payload).map_err(|e| format!("frame: {e}"))?;
            let meta = parse(&out, PortId(0), &ParsePolicy::default()).map_err(|e| format!("parse: {e}"))?;
            Ok((out, meta))
        })
        .collect()
}

fn main() -> Result<(), String> {
    let packets: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(300_000);
    let (mut frames, mut metas): (Vec<Vec<u8>>, Vec<Meta>) = frames()?.into_iter().unzip();
    println!("ids bench: {FRAME}-byte TCP frames, text payload, {FLOWS} flows, {packets} packets, one core");
    for (n, kind) in [(100, "auto"), (1_000, "auto"), (1_000, "nfa"), (10_000, "auto"), (10_000, "nfa")] {
        let mut cfg: IdsConfig =
            toml::from_str(&format!("automaton = \"{kind}\"\nrules_file = \"generated\"\nflows = 4096"))
                .map_err(|e| format!("config: {e}"))?;
        cfg.rules_file_text = Some(rules(n));
        let t = Instant::now();
        let set = cfg.build().map_err(|e| format!("rule set: {e}"))?;
        let load = t.elapsed();
        let (automaton, memory) = (set.automaton_name(), set.memory());
        drop(set);
        let mut arena = Arena::new(CoreId(0), 64 << 20, Backing::Normal);
        let mut shared = SharedRegistry::default();
        let ports = ["in".to_string()];
        let mut rt = InitCtx {
            instance: nflet_nfs::ids::Instance::default(),
            name: "ids",
            core: CoreId(0),
            cores: 1,
            ports: &ports,
            arena: &mut arena,
            shared: &mut shared,
        };
        let mut ids = Ids::init(&cfg, &mut rt).map_err(|e| format!("init: {e}"))?;
        let ctx = Ctx { now: Nanos(1), core: CoreId(0) };
        let mut alerts = 0u64;
        // One packet at a time.
        let mut one = |count: u64, ids: &mut Ids| {
            for i in 0..count {
                let k = (i % u64::from(FLOWS)) as usize;
                if ids.process_packet(&ctx, &mut frames[k], &mut metas[k]) != Verdict::Continue {
                    alerts += 1;
                }
            }
        };
        one(u64::from(FLOWS) * 4, &mut ids); // flows created, caches warm
        let t = Instant::now();
        one(packets, &mut ids);
        let ns_one = t.elapsed().as_nanos() as f64 / packets as f64;
        // Bursts of 32 consecutive packets (32 different flows), as the dataplane hands them.
        let active: Vec<u16> = (0..BURST as u16).collect();
        let mut verdicts = vec![Verdict::Continue; BURST];
        let bursts = packets / BURST as u64;
        let t = Instant::now();
        for b in 0..bursts {
            let at = (b as usize * BURST) % (usize::from(FLOWS) - BURST);
            let mut burst = Burst {
                frames: &mut frames[at..at + BURST],
                metas: &mut metas[at..at + BURST],
                verdicts: &mut verdicts,
                active: &active,
            };
            ids.process(&ctx, &mut burst);
        }
        let ns = t.elapsed().as_nanos() as f64 / (bursts * BURST as u64) as f64;
        let gbps = (FRAME * 8) as f64 / ns;
        let report = {
            let mut r = nflet_nfs::nf::Report::default();
            ids.report(&mut r);
            r.counters.iter().find(|(k, _)| *k == "alerts").map_or(0, |(_, v)| *v)
        };
        println!(
            "  {n:>6} rules  {automaton:<14} {:>6.1} MiB  load {:>7.1} ms | one by one {ns_one:>7.1} ns/pkt {:>5.2} Gbps | bursts {ns:>7.1} ns/pkt {gbps:>5.2} Gbps/core ({:.2} ns/byte) | alerts {report}",
            memory as f64 / (1 << 20) as f64,
            load.as_secs_f64() * 1e3,
            (FRAME * 8) as f64 / ns_one,
            ns / FRAME as f64
        );
        std::hint::black_box(alerts);
    }
    Ok(())
}
