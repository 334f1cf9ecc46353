//! Completing the TCP/UDP checksums the kernel left partial.
//!
//! A frame sent by a local stack through a device with checksum offload (veth, tap) carries
//! CHECKSUM_PARTIAL: its L4 checksum field holds only the folded pseudo-header sum, and the
//! "hardware" was to finish the job. AF_PACKET flags such frames `TP_STATUS_CSUMNOTREADY`.
//! Forwarded as they are, the receiver drops them, so the RX path finishes the job instead,
//! like `skb_checksum_help`: sum the L4 segment (the field included) and store the complement.
//!
//! Handled: Ethernet with up to two VLAN tags, IPv4 (unfragmented) and IPv6 without
//! extension headers, TCP and UDP. Anything else is left untouched (and reported). The
//! function never panics on malformed input.

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Finishes a partial TCP/UDP checksum in place; false when the frame is not one this
/// function understands (it is then unchanged).
pub(super) fn complete_partial(frame: &mut [u8]) -> bool {
    let Some((l4, l4_len, proto)) = locate_l4(frame) else {
        return false;
    };
    let field = match proto {
        TCP => 16,
        UDP => 6,
        _ => return false,
    };
    let Some(end) = l4.checked_add(l4_len) else {
        return false;
    };
    let Some(segment) = frame.get(l4..end) else {
        return false;
    };
    if segment.len() < field + 2 {
        return false;
    }
    let mut csum = !fold(sum(segment));
    if proto == UDP && csum == 0 {
        csum = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    match frame.get_mut(l4 + field..l4 + field + 2) {
        Some(dst) => {
            dst.copy_from_slice(&csum.to_be_bytes());
            true
        }
        None => false,
    }
}

/// (L4 offset, L4 length from the IP header, IP protocol).
fn locate_l4(frame: &[u8]) -> Option<(usize, usize, u8)> {
    let mut l3 = 12;
    let mut ethertype = be16(frame, l3)?;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            l3 += 4;
            ethertype = be16(frame, l3)?;
        }
    }
    l3 += 2;
    match ethertype {
        0x0800 => {
            let ver_ihl = *frame.get(l3)?;
            let ihl = usize::from(ver_ihl & 0x0f) * 4;
            let total = usize::from(be16(frame, l3 + 2)?);
            let frag = be16(frame, l3 + 6)?;
            if ver_ihl >> 4 != 4 || ihl < 20 || total < ihl || frag & 0x3fff != 0 {
                return None;
            }
            Some((l3 + ihl, total - ihl, *frame.get(l3 + 9)?))
        }
        0x86dd => {
            if frame.get(l3)? >> 4 != 6 {
                return None;
            }
            let payload = usize::from(be16(frame, l3 + 4)?);
            Some((l3 + 40, payload, *frame.get(l3 + 6)?))
        }
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at.checked_add(1)?)?]))
}

/// One's-complement sum of `data` as big-endian 16-bit words (RFC 1071), not yet folded.
fn sum(data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    let mut s: u64 = words.by_ref().map(|w| u64::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    if let [last] = words.remainder() {
        s += u64::from(*last) << 8;
    }
    s
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const SRC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const DST: [u8; 6] = [2, 0, 0, 0, 0, 2];

    type Build = fn(&[u8]) -> Vec<u8>;

    fn v4_udp(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 53)
            .write(&mut v, p)
            .unwrap();
        v
    }
    fn v4_tcp(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .ipv4([192, 168, 1, 1], [8, 8, 8, 8], 64)
            .tcp(40000, 443, 0x01020304, 1000)
            .syn()
            .write(&mut v, p)
            .unwrap();
        v
    }
    fn v6_udp(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let (a, b) = ([0xfd; 16], [0xfe; 16]);
        PacketBuilder::ethernet2(SRC, DST).ipv6(a, b, 64).udp(5000, 6000).write(&mut v, p).unwrap();
        v
    }
    fn vlan_v4_tcp(p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(SRC, DST)
            .single_vlan(etherparse::VlanId::try_new(100).unwrap())
            .ipv4([10, 1, 1, 1], [10, 2, 2, 2], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut v, p)
            .unwrap();
        v
    }

    /// Replaces the L4 checksum with the folded pseudo-header sum, as CHECKSUM_PARTIAL does.
    fn make_partial(frame: &mut [u8]) {
        let (l4, len, proto) = locate_l4(frame).unwrap();
        let l3 = if frame[12] == 0x81 { 18 } else { 14 };
        let mut pseudo = Vec::new();
        if frame[l3] >> 4 == 4 {
            pseudo.extend_from_slice(&frame[l3 + 12..l3 + 20]);
        } else {
            pseudo.extend_from_slice(&frame[l3 + 8..l3 + 40]);
        }
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        let field = l4 + if proto == TCP { 16 } else { 6 };
        frame[field..field + 2].copy_from_slice(&fold(sum(&pseudo)).to_be_bytes());
    }

    #[test]
    fn completes_what_the_kernel_left_partial() {
        let cases: &[(&str, Build, &[u8])] = &[
            ("ipv4 udp", v4_udp, b"hello"),
            ("ipv4 udp even", v4_udp, b"hello!"),
            ("ipv4 tcp syn", v4_tcp, b""),
            ("ipv6 udp", v6_udp, b"some payload bytes"),
            ("vlan ipv4 tcp", vlan_v4_tcp, b"x"),
        ];
        for (name, b, payload) in cases {
            let good = b(payload);
            let mut frame = good.clone();
            make_partial(&mut frame);
            assert_ne!(frame, good, "{name}: partial differs");
            // Ethernet padding after the IP packet is not part of the checksum.
            frame.extend_from_slice(&[0xaa; 6]);
            assert!(complete_partial(&mut frame), "{name}");
            assert_eq!(frame[..good.len()], good[..], "{name}");
        }
    }

    #[test]
    fn leaves_what_it_does_not_understand() {
        let mut frag = v4_udp(b"fragment");
        frag[14 + 6] = 0x20; // more fragments
        let mut arp = v4_udp(b"x");
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let mut icmp = v4_udp(b"x");
        icmp[14 + 9] = 1;
        let mut long = v4_udp(b"x");
        long[14 + 2..14 + 4].copy_from_slice(&9000u16.to_be_bytes()); // IP length > frame
        for (name, mut f) in [("frag", frag), ("arp", arp), ("icmp", icmp), ("long", long)] {
            let before = f.clone();
            assert!(!complete_partial(&mut f), "{name}");
            assert_eq!(f, before, "{name}");
        }
        let whole = v6_udp(b"abc");
        for cut in 0..whole.len() {
            let mut f = whole[..cut].to_vec();
            complete_partial(&mut f); // must not panic
        }
    }
}
