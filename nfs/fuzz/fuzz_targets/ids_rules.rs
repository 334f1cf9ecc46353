//! Fuzzes the IDS rule parser and matcher: the input, as text, is a rules file (unknown
//! options skipped); when it builds, the input bytes also go through the NF as the payload of
//! two UDP packets of one flow (so cross-packet matching runs too). Oracle: nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nflet_nfs::functions::ids::{AutomatonKind, Ids, IdsConfig, RuleSet, RuleSource, UnknownOptions};
use nflet_nfs::ids::{CoreId, PortId};
use nflet_nfs::nf::{Ctx, InitCtx, NetworkFunction, SharedRegistry};
use nflet_nfs::packet::{parse, ParsePolicy};
use nflet_nfs::state::{Arena, Backing};
use nflet_nfs::time::Nanos;

/// Ethernet + IPv4 (checksummed) + UDP 10.0.0.1:1000 → 10.0.0.2:80 carrying `payload`.
fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let total = (20 + 8 + payload.len()) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let mut sum: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&1000u16.to_be_bytes());
    f.extend_from_slice(&80u16.to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data).into_owned();
    let vars = [("HOME_NET".to_string(), "10.0.0.0/8".to_string())].into_iter().collect();
    let source = RuleSource { name: "fuzz.rules".into(), text: text.clone() };
    if RuleSet::build(&[source], &vars, UnknownOptions::Skip, AutomatonKind::Auto).is_err() {
        return;
    }
    let mut cfg: IdsConfig =
        toml::from_str("unknown_options = \"skip\"\nmode = \"ips\"\nflows = 16\nrules_file = \"fuzz.rules\"")
            .expect("fuzz config");
    cfg.rules_file_text = Some(text);
    cfg.vars = vars;
    let mut arena = Arena::new(CoreId(0), 16 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["in".to_string()];
    let mut rt = InitCtx {
        instance: nflet_nfs::ids::Instance::default(),
        name: "fuzz",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    let Ok(mut ids) = Ids::init(&cfg, &mut rt) else { return };
    let ctx = Ctx { now: Nanos(1), core: CoreId(0) };
    let half = data.len() / 2;
    for part in [&data[..half], &data[half..]] {
        let mut frame = udp_frame(&part[..part.len().min(1400)]);
        if let Ok(mut meta) = parse(&frame, PortId(0), &ParsePolicy::default()) {
            ids.process_packet(&ctx, &mut frame, &mut meta);
        }
    }
});
