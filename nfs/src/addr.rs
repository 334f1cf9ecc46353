//! Typed configuration values for addresses: IP prefixes, port ranges and protocol names.
//!
//! They deserialize from strings and integers with messages that say what was expected, so a
//! bad value in a config file is reported with its file, line and key by the config loader.

use std::net::IpAddr;
use std::str::FromStr;

use serde::Deserialize;

use crate::flow::{FAMILY_V4, FAMILY_V6};

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a /32
/// (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Prefix {
    /// Network address with host bits cleared; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    pub len: u8,
    pub family: u8,
}

impl Prefix {
    /// True if `addr` (a 16-byte key address of family `family`) lies in the prefix.
    #[inline]
    pub fn contains(&self, family: u8, addr: &[u8; 16]) -> bool {
        if family != self.family {
            return false;
        }
        let full = usize::from(self.len / 8);
        let rem = self.len % 8;
        if addr.get(..full) != self.addr.get(..full) {
            return false;
        }
        if rem == 0 {
            return true;
        }
        let mask = 0xffu8 << (8 - rem);
        match (addr.get(full), self.addr.get(full)) {
            (Some(a), Some(p)) => a & mask == *p,
            _ => false,
        }
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = || format!("expected an IP prefix like 10.0.0.0/8 or 2001:db8::/32, got `{s}`");
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = a.trim().parse().map_err(|_| expected())?;
        let (family, max, bytes) = match ip {
            IpAddr::V4(v) => (FAMILY_V4, 32u8, crate::flow::v4(v.octets())),
            IpAddr::V6(v) => (FAMILY_V6, 128u8, v.octets()),
        };
        let len = match l {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("prefix length in `{s}` must be a number from 0 to {max}"))?,
            None => max,
        };
        let mut addr = [0u8; 16];
        for (i, b) in bytes.iter().enumerate() {
            let bits = usize::from(len).saturating_sub(i * 8).min(8);
            let mask = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
            if let Some(d) = addr.get_mut(i) {
                *d = b & mask;
            }
        }
        Ok(Prefix { addr, len, family })
    }
}

impl TryFrom<String> for Prefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// An inclusive port range: `80`, `"80"` or `"1024-65535"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "PortRangeRepr")]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortRangeRepr {
    Num(i64),
    Text(String),
}

impl PortRange {
    pub const ANY: PortRange = PortRange { lo: 0, hi: u16::MAX };

    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a port (0-65535) or a range like 1024-65535, got `{s}`");
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u16>(), b.trim().parse::<u16>()),
            None => (s.trim().parse::<u16>(), s.trim().parse::<u16>()),
        };
        match (lo, hi) {
            (Ok(lo), Ok(hi)) if lo <= hi => Ok(PortRange { lo, hi }),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<PortRangeRepr> for PortRange {
    type Error = String;
    fn try_from(r: PortRangeRepr) -> Result<Self, String> {
        match r {
            PortRangeRepr::Num(n) => u16::try_from(n)
                .map(|p| PortRange { lo: p, hi: p })
                .map_err(|_| format!("expected a port from 0 to 65535, got {n}")),
            PortRangeRepr::Text(s) => s.parse(),
        }
    }
}

/// A protocol match: `any`, `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(try_from = "ProtoRepr")]
pub struct ProtoMatch(pub Option<u8>);

#[derive(Deserialize)]
#[serde(untagged)]
enum ProtoRepr {
    Num(i64),
    Text(String),
}

impl TryFrom<ProtoRepr> for ProtoMatch {
    type Error = String;
    fn try_from(r: ProtoRepr) -> Result<Self, String> {
        match r {
            ProtoRepr::Num(n) => u8::try_from(n)
                .map(|p| ProtoMatch(Some(p)))
                .map_err(|_| format!("expected an IP protocol number from 0 to 255, got {n}")),
            ProtoRepr::Text(s) => match s.to_ascii_lowercase().as_str() {
                "any" | "all" => Ok(ProtoMatch(None)),
                "tcp" => Ok(ProtoMatch(Some(6))),
                "udp" => Ok(ProtoMatch(Some(17))),
                "icmp" => Ok(ProtoMatch(Some(1))),
                "icmpv6" => Ok(ProtoMatch(Some(58))),
                other => Err(format!(
                    "expected `any`, `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number, got `{other}`"
                )),
            },
        }
    }
}

/// One value or a list of values in a config file (`src = "10.0.0.0/8"` or `src = [..]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

// Hand-written rather than `#[serde(untagged)]`, which would replace the element's own error
// ("expected an IP prefix like ...") with "data did not match any variant".
impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{value, IntoDeserializer, SeqAccess, Visitor};
        use std::marker::PhantomData;

        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::deserialize(v.into_deserializer()).map(OneOrMany::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(value::SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T> OneOrMany<T> {
    /// True for an empty list (a single value is never empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, OneOrMany::Many(v) if v.is_empty())
    }

    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::v4;

    #[test]
    fn prefixes_parse_and_match() {
        let cases: &[(&str, [u8; 4], bool)] = &[
            ("10.0.0.0/8", [10, 200, 3, 4], true),
            ("10.0.0.0/8", [11, 0, 0, 1], false),
            ("192.168.1.0/25", [192, 168, 1, 127], true),
            ("192.168.1.0/25", [192, 168, 1, 128], false),
            ("192.168.1.77", [192, 168, 1, 77], true),
            ("192.168.1.77/32", [192, 168, 1, 78], false),
            ("0.0.0.0/0", [1, 2, 3, 4], true),
            ("10.1.2.3/8", [10, 9, 9, 9], true),
        ];
        for (p, a, want) in cases {
            let pfx: Prefix = p.parse().unwrap();
            assert_eq!(pfx.contains(FAMILY_V4, &v4(*a)), *want, "{p} vs {a:?}");
        }
        let p6: Prefix = "2001:db8::/32".parse().unwrap();
        let a6: std::net::Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        assert!(p6.contains(FAMILY_V6, &a6.octets()));
        assert!(!p6.contains(FAMILY_V4, &a6.octets()));
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        for bad in ["10.0.0/8", "10.0.0.0/33", "fish", "10.0.0.0/x"] {
            let e = bad.parse::<Prefix>().unwrap_err();
            assert!(e.contains(bad) || e.contains("0 to 32"), "{e}");
        }
        for bad in ["70000", "9-1", "a-b"] {
            assert!(bad.parse::<PortRange>().unwrap_err().contains("expected"));
        }
        assert_eq!("1024-65535".parse::<PortRange>().unwrap(), PortRange { lo: 1024, hi: 65535 });
    }
}
