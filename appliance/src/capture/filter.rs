//! What a capture takes: its points (where in the dataplane) and its filter (which frames),
//! parsed from the query string of `POST /capture`, and the filter's match on frame bytes.
//!
//! The filter reads the frame itself rather than the parser's `Meta`: frames are captured
//! where no `Meta` exists yet (received) or where NFs have rewritten them (transmitted).
//! Every read is bounds-checked (`get`), so a truncated or malformed frame simply does not
//! match a filter that needs the header it lacks.

use nflet_nfs::addr::Prefix;
use nflet_nfs::flow::{v4, FAMILY_V4, FAMILY_V6};

/// Frames captured per capture at most, and the default.
pub const MAX_COUNT: u64 = 1_000_000;
pub const DEFAULT_COUNT: u64 = 1000;
/// Capture duration at most, and the default (seconds).
pub const MAX_SECONDS: u64 = 3600;
pub const DEFAULT_SECONDS: u64 = 60;
/// Bytes kept of each frame: default and bounds.
pub const DEFAULT_SNAPLEN: usize = 256;
pub const MIN_SNAPLEN: usize = 64;
pub const MAX_SNAPLEN: usize = 9216;
/// Largest rate limit (frames per second).
pub const MAX_RATE: u64 = 10_000_000;

/// Transport protocol a filter asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    /// ICMP or ICMPv6.
    Icmp,
}

/// Which frames a capture takes. Absent parts match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub proto: Proto,
    /// Source or destination address in this prefix (a bare address is a /32 or /128).
    pub host: Option<Prefix>,
    /// TCP or UDP source or destination port.
    pub port: Option<u16>,
}

/// Where a capture takes frames: per port, received and transmitted; per chain, its input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Points {
    pub rx: Vec<bool>,
    pub tx: Vec<bool>,
    pub chains: Vec<bool>,
}

/// A validated capture request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub points: Points,
    /// The points as asked for (`rx:a,chain:main`), for reports.
    pub point_text: String,
    pub filter: Filter,
    /// The filter as asked for, for reports.
    pub filter_text: String,
    pub count: u64,
    pub seconds: u64,
    /// Frames per second over all cores; `None`: unlimited.
    pub rate: Option<u64>,
    pub snaplen: usize,
}

impl Filter {
    /// Every frame.
    pub const ANY: Filter = Filter { proto: Proto::Any, host: None, port: None };

    /// True when `frame` (Ethernet, up to two VLAN tags) passes the filter.
    pub fn matches(&self, frame: &[u8]) -> bool {
        if *self == Filter::ANY {
            return true;
        }
        let Some(h) = headers(frame) else { return false };
        let proto_ok = match self.proto {
            Proto::Any => true,
            Proto::Tcp => h.proto == 6,
            Proto::Udp => h.proto == 17,
            Proto::Icmp => {
                (h.family == FAMILY_V4 && h.proto == 1) || (h.family == FAMILY_V6 && h.proto == 58)
            }
        };
        let host_ok = self.host.is_none_or(|p| p.contains(h.family, &h.src) || p.contains(h.family, &h.dst));
        let port_ok = self.port.is_none_or(|p| h.ports.is_some_and(|(s, d)| s == p || d == p));
        proto_ok && host_ok && port_ok
    }
}

/// The IP header fields a filter looks at.
#[derive(Debug, PartialEq, Eq)]
struct Headers {
    family: u8,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    /// TCP/UDP ports, when the frame carries them (not in non-first fragments).
    ports: Option<(u16, u16)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn addr16(b: &[u8], at: usize) -> Option<[u8; 16]> {
    b.get(at..at + 16)?.try_into().ok()
}

fn addr4(b: &[u8], at: usize) -> Option<[u8; 16]> {
    Some(v4(b.get(at..at + 4)?.try_into().ok()?))
}

/// The IP headers of an Ethernet frame; `None` for non-IP or truncated frames.
fn headers(frame: &[u8]) -> Option<Headers> {
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            at += 4;
            ethertype = be16(frame, at)?;
        }
    }
    let l3 = at + 2;
    match ethertype {
        0x0800 => {
            let ihl = usize::from(*frame.get(l3)? & 0x0f) * 4;
            let proto = *frame.get(l3 + 9)?;
            let first_fragment = be16(frame, l3 + 6)? & 0x1fff == 0;
            let l4 = l3 + ihl;
            Some(Headers {
                family: FAMILY_V4,
                src: addr4(frame, l3 + 12)?,
                dst: addr4(frame, l3 + 16)?,
                proto,
                ports: ports(frame, proto, l4, first_fragment),
            })
        }
        0x86dd => {
            let src = addr16(frame, l3 + 8)?;
            let dst = addr16(frame, l3 + 24)?;
            let mut next = *frame.get(l3 + 6)?;
            let mut l4 = l3 + 40;
            let mut first_fragment = true;
            // Hop-by-hop, routing, fragment and destination options headers (RFC 8200 4.1).
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        let len = (usize::from(*frame.get(l4 + 1)?) + 1) * 8;
                        next = *frame.get(l4)?;
                        l4 += len;
                    }
                    44 => {
                        first_fragment = be16(frame, l4 + 2)? & 0xfff8 == 0;
                        next = *frame.get(l4)?;
                        l4 += 8;
                    }
                    _ => break,
                }
            }
            Some(Headers {
                family: FAMILY_V6,
                src,
                dst,
                proto: next,
                ports: ports(frame, next, l4, first_fragment),
            })
        }
        _ => None,
    }
}

fn ports(frame: &[u8], proto: u8, l4: usize, first_fragment: bool) -> Option<(u16, u16)> {
    if !first_fragment || !(proto == 6 || proto == 17) {
        return None;
    }
    Some((be16(frame, l4)?, be16(frame, l4 + 2)?))
}

/// `%XX` and `+` decoding of one query-string component.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let v = hex
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape in `{s}`"))?;
                out.push(v);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{s}` is not UTF-8 once decoded"))
}

fn number(key: &str, value: &str, min: u64, max: u64) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("`{key}`: expected a whole number from {min} to {max}, got `{value}`"))
}

impl Spec {
    /// Parses the query string of `POST /capture` against the appliance's port and chain
    /// names. The error says which parameter was wrong and what is accepted.
    pub fn parse(query: &str, ports: &[String], chains: &[String]) -> Result<Spec, String> {
        let mut seen: Vec<String> = Vec::new();
        let mut point = None;
        let mut filter = Filter::ANY;
        let mut filter_text = Vec::new();
        let mut count = DEFAULT_COUNT;
        let mut seconds = DEFAULT_SECONDS;
        let mut rate = None;
        let mut snaplen = DEFAULT_SNAPLEN;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (key, value) = (decode(k)?, decode(v)?);
            if seen.contains(&key) {
                return Err(format!("`{key}` is given twice"));
            }
            seen.push(key.clone());
            match key.as_str() {
                "point" => point = Some(value),
                "proto" => {
                    filter.proto = match value.as_str() {
                        "any" => Proto::Any,
                        "tcp" => Proto::Tcp,
                        "udp" => Proto::Udp,
                        "icmp" => Proto::Icmp,
                        _ => return Err(format!("`proto`: expected tcp, udp, icmp or any, got `{value}`")),
                    };
                    filter_text.push(format!("proto {value}"));
                }
                "host" => {
                    filter.host = Some(value.parse::<Prefix>().map_err(|e| format!("`host`: {e}"))?);
                    filter_text.push(format!("host {value}"));
                }
                "port" => {
                    filter.port = Some(number("port", &value, 0, 65535)? as u16);
                    filter_text.push(format!("port {value}"));
                }
                "count" => count = number("count", &value, 1, MAX_COUNT)?,
                "seconds" => seconds = number("seconds", &value, 1, MAX_SECONDS)?,
                "rate" => rate = Some(number("rate", &value, 1, MAX_RATE)?),
                "snaplen" => {
                    snaplen = number("snaplen", &value, MIN_SNAPLEN as u64, MAX_SNAPLEN as u64)? as usize
                }
                _ => {
                    return Err(format!(
                        "unknown parameter `{key}`; expected point, proto, host, port, count, seconds, rate, \
                         snaplen"
                    ))
                }
            }
        }
        let point_text = point.unwrap_or_else(|| "all".to_string());
        let points = parse_points(&point_text, ports, chains)?;
        let filter_text = if filter_text.is_empty() { "any".to_string() } else { filter_text.join(" and ") };
        Ok(Spec { points, point_text, filter, filter_text, count, seconds, rate, snaplen })
    }
}

/// `rx:<port>`, `tx:<port>`, `chain:<name>`, comma-separated; `all`: every port's received
/// frames (each frame entering the appliance once).
fn parse_points(text: &str, ports: &[String], chains: &[String]) -> Result<Points, String> {
    let mut p = Points {
        rx: vec![false; ports.len()],
        tx: vec![false; ports.len()],
        chains: vec![false; chains.len()],
    };
    let port = |name: &str| {
        ports
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| format!("`point`: no port named `{name}`; ports are: {}", ports.join(", ")))
    };
    for item in text.split(',').map(str::trim) {
        match item.split_once(':') {
            _ if item == "all" => p.rx.iter_mut().for_each(|x| *x = true),
            Some(("rx", name)) => {
                let i = port(name)?;
                if let Some(x) = p.rx.get_mut(i) {
                    *x = true;
                }
            }
            Some(("tx", name)) => {
                let i = port(name)?;
                if let Some(x) = p.tx.get_mut(i) {
                    *x = true;
                }
            }
            Some(("chain", name)) => {
                let i = chains.iter().position(|n| n == name).ok_or_else(|| {
                    format!("`point`: no chain named `{name}`; chains are: {}", chains.join(", "))
                })?;
                if let Some(x) = p.chains.get_mut(i) {
                    *x = true;
                }
            }
            _ => {
                return Err(format!(
                    "`point`: expected rx:<port>, tx:<port>, chain:<name> or all (comma-separated), got \
                     `{item}`"
                ))
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + UDP/TCP/ICMP, with an optional VLAN tag.
    fn v4_frame(
        vlan: bool,
        proto: u8,
        src: [u8; 4],
        dst: [u8; 4],
        sport: u16,
        dport: u16,
        frag: u16,
    ) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if vlan {
            f.extend([0x81, 0x00, 0x00, 0x64]);
        }
        f.extend([0x08, 0x00, 0x45, 0, 0, 28, 0, 0]);
        f.extend(frag.to_be_bytes());
        f.extend([64, proto, 0, 0]);
        f.extend(src);
        f.extend(dst);
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend([0, 8, 0, 0]);
        f
    }

    /// Ethernet + IPv6 (optionally with a hop-by-hop header) + L4.
    fn v6_frame(hbh: bool, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 16];
        f.push(if hbh { 0 } else { proto });
        f.push(64);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 1;
        let mut dst = src;
        dst[15] = 2;
        f.extend(src);
        f.extend(dst);
        if hbh {
            f.extend([proto, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend(sport.to_be_bytes());
        f.extend(dport.to_be_bytes());
        f.extend([0, 8, 0, 0]);
        f
    }

    fn filter(q: &str) -> Filter {
        let ports = vec!["a".to_string(), "b".to_string()];
        Spec::parse(q, &ports, &["main".to_string()]).unwrap().filter
    }

    #[test]
    fn filters_match_what_they_say() {
        let a = [10, 0, 0, 1];
        let b = [10, 0, 0, 2];
        let udp53 = v4_frame(false, 17, a, b, 40000, 53, 0);
        let udp53_frag = v4_frame(false, 17, a, b, 40000, 53, 0x0010);
        let tcp80 = v4_frame(true, 6, b, a, 80, 40000, 0);
        let icmp = v4_frame(false, 1, a, [192, 168, 1, 1], 0, 0, 0);
        let v6_udp = v6_frame(true, 17, 5353, 53);
        let v6_icmp = v6_frame(false, 58, 0, 0);
        let arp = {
            let mut f = vec![0xff; 12];
            f.extend([0x08, 0x06]);
            f.extend([0u8; 28]);
            f
        };
        let frames: [(&str, &[u8]); 7] = [
            ("udp53", &udp53),
            ("udp53_frag", &udp53_frag),
            ("tcp80", &tcp80),
            ("icmp", &icmp),
            ("v6_udp", &v6_udp),
            ("v6_icmp", &v6_icmp),
            ("arp", &arp),
        ];
        let cases: &[(&str, &[&str])] = &[
            ("", &["udp53", "udp53_frag", "tcp80", "icmp", "v6_udp", "v6_icmp", "arp"]),
            ("proto=any", &["udp53", "udp53_frag", "tcp80", "icmp", "v6_udp", "v6_icmp", "arp"]),
            ("proto=udp", &["udp53", "udp53_frag", "v6_udp"]),
            ("proto=tcp", &["tcp80"]),
            ("proto=icmp", &["icmp", "v6_icmp"]),
            ("port=53", &["udp53", "v6_udp"]),
            ("proto=udp&port=53", &["udp53", "v6_udp"]),
            ("proto=tcp&port=53", &[]),
            ("port=80", &["tcp80"]),
            ("port=40000", &["udp53", "tcp80"]),
            ("host=10.0.0.2", &["udp53", "udp53_frag", "tcp80"]),
            ("host=192.168.0.0/16", &["icmp"]),
            ("host=10.0.0.0/8&proto=icmp", &["icmp"]),
            ("host=2001:db8::2", &["v6_udp", "v6_icmp"]),
            ("host=2001:db8::%2F32&port=5353", &["v6_udp"]),
            ("host=10.0.0.3", &[]),
        ];
        for (q, want) in cases {
            let f = filter(q);
            let got: Vec<&str> = frames.iter().filter(|(_, fr)| f.matches(fr)).map(|(n, _)| *n).collect();
            assert_eq!(&got, want, "{q}");
        }
        // A frame cut before its ports does not match a port filter.
        for cut in 0..udp53.len() {
            assert_eq!(filter("port=53").matches(&udp53[..cut]), cut >= 38, "{cut}");
        }
    }

    #[test]
    fn requests_are_validated_with_what_was_wrong() {
        let ports = vec!["a".to_string(), "b".to_string()];
        let chains = vec!["main".to_string()];
        let ok = Spec::parse(
            "point=rx:a,tx:b,chain:main&proto=udp&count=5&seconds=2&rate=100&snaplen=128",
            &ports,
            &chains,
        )
        .unwrap();
        assert_eq!(ok.points, Points { rx: vec![true, false], tx: vec![false, true], chains: vec![true] });
        assert_eq!((ok.count, ok.seconds, ok.rate, ok.snaplen), (5, 2, Some(100), 128));
        assert_eq!(ok.filter_text, "proto udp");
        let all = Spec::parse("", &ports, &chains).unwrap();
        assert_eq!(all.points.rx, vec![true, true]);
        assert_eq!(
            (all.count, all.seconds, all.rate, all.snaplen),
            (DEFAULT_COUNT, DEFAULT_SECONDS, None, 256)
        );
        let bad: &[(&str, &str)] = &[
            ("proto=sctp", "`proto`: expected tcp, udp, icmp or any, got `sctp`"),
            ("host=10.0.0.300", "`host`: expected an IP prefix"),
            ("port=65536", "`port`: expected a whole number from 0 to 65535, got `65536`"),
            ("port=x", "`port`: expected a whole number"),
            ("count=0", "`count`: expected a whole number from 1 to 1000000"),
            ("seconds=99999", "`seconds`: expected a whole number from 1 to 3600"),
            ("rate=0", "`rate`: expected a whole number from 1"),
            ("snaplen=10", "`snaplen`: expected a whole number from 64 to 9216"),
            ("point=rx:c", "`point`: no port named `c`; ports are: a, b"),
            ("point=chain:x", "`point`: no chain named `x`; chains are: main"),
            ("point=a", "`point`: expected rx:<port>, tx:<port>, chain:<name> or all"),
            ("colour=red", "unknown parameter `colour`"),
            ("port=1&port=2", "`port` is given twice"),
            ("host=%zz", "bad percent-escape"),
        ];
        for (q, want) in bad {
            let err = Spec::parse(q, &ports, &chains).unwrap_err();
            assert!(err.starts_with(want), "{q}: {err}");
        }
    }
}
