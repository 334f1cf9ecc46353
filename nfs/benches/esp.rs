//! ESP encryption and decryption cost per packet, through the `ipsec` NF's burst path (the
//! code the dataplane runs), for AES-GCM-128 and -256 and inner packets of 64, 512 and 1400
//! bytes. `cargo bench -p nflet-nfs --bench esp` (optionally `-- <seconds per case>`).
//!
//! Encryption: bursts of 32 cleartext UDP frames, refilled before each timed burst.
//! Decryption: bursts of 32 distinct ESP frames made by the same NF's peer; each round of
//! 8192 packets uses a fresh receiver (a new replay window), built outside the timing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nflet_nfs::functions::ipsec::{Cipher, Ipsec, IpsecConfig, KeyLen};
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Burst, Ctx, InitCtx, NetworkFunction, SharedRegistry, Verdict};
use nflet_nfs::packet::{parse, Meta, ParsePolicy};
use nflet_nfs::state::{Arena, Backing};
use nflet_nfs::time::Nanos;

const BURST: usize = 32;
const ROUND: usize = 8192;

fn config(key: &str, a_side: bool) -> String {
    let (local, remote, me, peer) =
        if a_side { ("192.0.2.1", "198.51.100.2", 1, 2) } else { ("198.51.100.2", "192.0.2.1", 2, 1) };
    format!(
        "[[sa]]\nname = \"ab\"\nlocal = \"{local}\"\nremote = \"{remote}\"\noutbound = {{ spi = 0x1001, key = \"{key}\" }}\ninbound = {{ spi = 0x1001, key = \"{key}\" }}\n\n[[policy]]\nsrc = \"10.{me}.0.0/16\"\ndst = \"10.{peer}.0.0/16\"\nsa = \"ab\"\n"
    )
}

fn build(cfg: &str) -> Ipsec {
    let cfg: IpsecConfig = match toml::from_str(cfg) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let mut arena = Arena::new(CoreId(0), 1 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string()];
    let mut rt = InitCtx {
        instance: nflet_nfs::ids::Instance::default(),
        name: "bench",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    match Ipsec::init(&cfg, &mut rt) {
        Ok(nf) => nf,
        Err(e) => panic!("{e}"),
    }
}

/// An Ethernet frame holding a UDP/IPv4 packet of `ip_len` bytes from 10.1/16 to 10.2/16.
fn cleartext(ip_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 14 + ip_len];
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 1, 0, 5]);
    ip[16..20].copy_from_slice(&[10, 2, 0, 9]);
    let mut sum = 0u32;
    for c in ip[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip[20..22].copy_from_slice(&4000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&53u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
    f
}

fn meta(f: &[u8]) -> Meta {
    match parse(f, PortId(0), &ParsePolicy::default()) {
        Ok(m) => m,
        Err(e) => panic!("bench frame does not parse: {e}"),
    }
}

/// Runs `frames` through `nf` in bursts; returns the nanoseconds spent in `process`.
fn timed(nf: &mut Ipsec, frames: &mut [Vec<u8>], metas: &mut [Meta]) -> Duration {
    let ctx = Ctx { now: Nanos(0), core: CoreId(0) };
    let active: Vec<u16> = (0..BURST as u16).collect();
    let mut verdicts = [Verdict::Continue; BURST];
    let mut spent = Duration::ZERO;
    for (fs, ms) in frames.chunks_mut(BURST).zip(metas.chunks_mut(BURST)) {
        let n = fs.len();
        let t = Instant::now();
        let mut burst = Burst { frames: fs, metas: ms, verdicts: &mut verdicts[..n], active: &active[..n] };
        nf.process(&ctx, &mut burst);
        spent += t.elapsed();
        assert!(verdicts[..n].iter().all(|v| *v == Verdict::Continue), "{:?}", verdicts[0]);
        black_box(&fs[0]);
    }
    spent
}

/// The cipher alone: in-place detached seal of `len` bytes, nanoseconds per call.
fn raw_seal(name: &str, key: &[u8], len: usize, secs: f64) {
    let len_kind = if key.len() == 16 { KeyLen::Aes128 } else { KeyLen::Aes256 };
    let Some(c) = Cipher::new(len_kind, key) else { panic!("key") };
    let mut buf = vec![0u8; len];
    let (mut n, t) = (0u64, Instant::now());
    while t.elapsed().as_secs_f64() < secs {
        for i in 0..1024u64 {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(n + i).to_be_bytes());
            black_box(c.seal(&nonce, &[0u8; 8], &mut buf).ok());
        }
        n += 1024;
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("raw {name} seal {len} B: {ns:.0} ns ({:.2} Gbps)", len as f64 * 8.0 / ns);
}

fn main() {
    let secs: f64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1.0);
    for len in [64usize, 1400] {
        raw_seal("AES-GCM-128", &[7u8; 16], len, secs / 2.0);
        raw_seal("AES-GCM-256", &[7u8; 32], len, secs / 2.0);
    }
    let keys = [
        ("AES-GCM-128", "0x000102030405060708090a0b0c0d0e0fc0ffee01"),
        ("AES-GCM-256", "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc0ffee03"),
    ];
    println!("| cipher | inner size | encrypt ns/pkt | encrypt Gbps | decrypt ns/pkt | decrypt Gbps |");
    println!("|---|---|---|---|---|---|");
    for (name, key) in keys {
        for size in [64usize, 512, 1400] {
            let clear = cleartext(size);
            let clear_meta = meta(&clear);
            // Encryption.
            let mut enc = build(&config(key, true));
            let (mut n, mut spent) = (0u64, Duration::ZERO);
            let mut frames: Vec<Vec<u8>> = (0..ROUND).map(|_| Vec::with_capacity(2048)).collect();
            let mut metas = vec![clear_meta; ROUND];
            while spent.as_secs_f64() < secs {
                for f in frames.iter_mut() {
                    f.clear();
                    f.extend_from_slice(&clear);
                }
                metas.fill(clear_meta);
                spent += timed(&mut enc, &mut frames, &mut metas);
                n += ROUND as u64;
            }
            let enc_ns = spent.as_nanos() as f64 / n as f64;
            // Decryption: ESP frames from a fresh sender, one round's worth.
            let mut sender = build(&config(key, true));
            let mut esp: Vec<Vec<u8>> = vec![clear.clone(); ROUND];
            let mut esp_metas = vec![clear_meta; ROUND];
            timed(&mut sender, &mut esp, &mut esp_metas);
            let (mut n, mut spent) = (0u64, Duration::ZERO);
            while spent.as_secs_f64() < secs {
                let mut dec = build(&config(key, false));
                let mut frames = esp.clone();
                let mut metas = esp_metas.clone();
                spent += timed(&mut dec, &mut frames, &mut metas);
                n += ROUND as u64;
            }
            let dec_ns = spent.as_nanos() as f64 / n as f64;
            let gbps = |ns: f64| size as f64 * 8.0 / ns;
            println!(
                "| {name} | {size} B | {enc_ns:.0} | {:.2} | {dec_ns:.0} | {:.2} |",
                gbps(enc_ns),
                gbps(dec_ns)
            );
        }
    }
}
