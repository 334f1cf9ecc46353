//! Fuzzes the ingress parser and the in-place rewrites.
//!
//! The first input byte picks the parse policy, the rest is the frame. Oracles: `parse` never
//! panics; an accepted frame's `Meta` keeps its offset invariants; every rewrite applied to it
//! either succeeds or is refused without panicking; and the rewritten frame parses to exactly
//! the `Meta` the rewrites kept up to date. A crash found here becomes a regression test in
//! `nfs/src/packet/parse/tests.rs` or `rewrite/tests.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nflet_nfs::ids::PortId;
use nflet_nfs::packet::{parse, rewrite, FragmentPolicy, Meta, ParsePolicy};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, frame)) = data.split_first() else {
        return;
    };
    let policy = ParsePolicy {
        fragments: match knobs & 3 {
            0 => FragmentPolicy::Allow,
            1 => FragmentPolicy::DropNonFirst,
            _ => FragmentPolicy::DropAll,
        },
        verify_ipv4_checksum: knobs & 4 != 0,
    };
    let Ok(mut meta) = parse(frame, PortId(0), &policy) else {
        return;
    };
    check_invariants(frame, &meta);

    let mut buf = frame.to_vec();
    let seed = (u16::from(knobs) << 8) | u16::from(frame.len() as u8);
    // Refusals (wrong family, TTL about to expire) are fine; panics are not.
    let _ = rewrite::set_ipv4_src(&mut buf, &mut meta, [10, 0, 0, knobs]);
    let _ = rewrite::set_ipv4_dst(&mut buf, &mut meta, [192, 0, 2, knobs]);
    let _ = rewrite::set_ipv6_src(&mut buf, &mut meta, [knobs; 16]);
    let _ = rewrite::set_ipv6_dst(&mut buf, &mut meta, [!knobs; 16]);
    let _ = rewrite::set_src_port(&mut buf, &mut meta, seed);
    let _ = rewrite::set_dst_port(&mut buf, &mut meta, !seed);
    let _ = rewrite::set_icmp_echo_id(&mut buf, &mut meta, seed);
    let _ = rewrite::decrement_ttl(&mut buf, &mut meta);
    let _ = rewrite::set_dscp(&mut buf, &meta, knobs);

    assert_eq!(buf.len(), frame.len());
    assert_eq!(
        parse(&buf, PortId(0), &policy),
        Ok(meta),
        "rewrites left meta stale"
    );
});

fn check_invariants(frame: &[u8], m: &Meta) {
    assert!(m.l3 <= m.l4 && m.l4 <= m.payload && m.payload <= m.l3_end);
    assert!(usize::from(m.l3_end) <= frame.len());
    assert!(m.vlan_count <= 2);
}
