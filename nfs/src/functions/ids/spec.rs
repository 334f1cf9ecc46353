//! Address and port specifications of rule headers: `any`, `$VAR`, lists `[a,b]`, negation
//! `!`, prefixes, and port ranges `80`, `1024:`, `:80`, `1:1023`.
//!
//! A list matches when at least one of its positive members matches (or it has none) and none
//! of its negated members does, as in Snort: `[10.0.0.0/8,!10.1.1.1]` is "in 10/8 but not
//! 10.1.1.1". Variables are expanded when the rule is parsed (from the NF's `vars` table), so
//! matching never looks a name up.

use std::collections::HashMap;

use crate::addr::Prefix;

/// How deep variables may refer to variables (`$EXTERNAL_NET = "!$HOME_NET"`).
const MAX_VAR_DEPTH: usize = 8;

/// A set of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrSpec {
    Any,
    Prefix(Prefix),
    Not(Box<AddrSpec>),
    List { pos: Vec<AddrSpec>, neg: Vec<AddrSpec> },
}

/// A set of ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    Any,
    Range(u16, u16),
    Not(Box<PortSpec>),
    List { pos: Vec<PortSpec>, neg: Vec<PortSpec> },
}

impl AddrSpec {
    /// True if `addr` (a 16-byte key address of `family`) is in the set.
    pub fn matches(&self, family: u8, addr: &[u8; 16]) -> bool {
        match self {
            AddrSpec::Any => true,
            AddrSpec::Prefix(p) => p.contains(family, addr),
            AddrSpec::Not(inner) => !inner.matches(family, addr),
            AddrSpec::List { pos, neg } => {
                (pos.is_empty() || pos.iter().any(|s| s.matches(family, addr)))
                    && !neg.iter().any(|s| s.matches(family, addr))
            }
        }
    }
}

impl PortSpec {
    /// True if `port` is in the set.
    pub fn matches(&self, port: u16) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Range(lo, hi) => *lo <= port && port <= *hi,
            PortSpec::Not(inner) => !inner.matches(port),
            PortSpec::List { pos, neg } => {
                (pos.is_empty() || pos.iter().any(|s| s.matches(port)))
                    && !neg.iter().any(|s| s.matches(port))
            }
        }
    }
}

/// Variables from the NF configuration, by name without the `$`.
pub type Vars = HashMap<String, String>;

/// Parses an address specification, expanding variables.
pub fn parse_addr(text: &str, vars: &Vars) -> Result<AddrSpec, String> {
    parse_spec(text, vars, 0, &|atom| {
        if atom.eq_ignore_ascii_case("any") {
            return Ok(AddrSpec::Any);
        }
        atom.parse::<Prefix>().map(AddrSpec::Prefix).map_err(|_| {
            format!("expected an address (`any`, `$VAR`, a prefix like 10.0.0.0/8, a list `[a,b]`, `!a`), got `{atom}`")
        })
    })
}

/// Parses a port specification, expanding variables.
pub fn parse_port(text: &str, vars: &Vars) -> Result<PortSpec, String> {
    parse_spec(text, vars, 0, &|atom| {
        if atom.eq_ignore_ascii_case("any") {
            return Ok(PortSpec::Any);
        }
        let bad = || {
            format!("expected a port (`any`, `$VAR`, 80, a range 1024:, :80 or 1:1023, a list `[a,b]`, `!a`), got `{atom}`")
        };
        let num = |s: &str| s.trim().parse::<u16>().map_err(|_| bad());
        let (lo, hi) = match atom.split_once(':') {
            Some(("", "")) => return Err(bad()),
            Some((lo, "")) => (num(lo)?, u16::MAX),
            Some(("", hi)) => (0, num(hi)?),
            Some((lo, hi)) => (num(lo)?, num(hi)?),
            None => (num(atom)?, num(atom)?),
        };
        if lo > hi {
            return Err(format!("port range `{atom}` is empty (the low end is above the high end)"));
        }
        Ok(PortSpec::Range(lo, hi))
    })
}

/// Shared by addresses and ports: the structure (`!`, `[..]`, `$VAR`) is the same, only the
/// atoms differ.
trait Spec: Sized {
    fn not(inner: Self) -> Self;
    fn list(pos: Vec<Self>, neg: Vec<Self>) -> Self;
    fn negated(self) -> Result<Self, Self>;
}

impl Spec for AddrSpec {
    fn not(inner: Self) -> Self {
        AddrSpec::Not(Box::new(inner))
    }
    fn list(pos: Vec<Self>, neg: Vec<Self>) -> Self {
        AddrSpec::List { pos, neg }
    }
    fn negated(self) -> Result<Self, Self> {
        match self {
            AddrSpec::Not(inner) => Ok(*inner),
            other => Err(other),
        }
    }
}

impl Spec for PortSpec {
    fn not(inner: Self) -> Self {
        PortSpec::Not(Box::new(inner))
    }
    fn list(pos: Vec<Self>, neg: Vec<Self>) -> Self {
        PortSpec::List { pos, neg }
    }
    fn negated(self) -> Result<Self, Self> {
        match self {
            PortSpec::Not(inner) => Ok(*inner),
            other => Err(other),
        }
    }
}

fn parse_spec<S: Spec>(
    text: &str,
    vars: &Vars,
    depth: usize,
    atom: &dyn Fn(&str) -> Result<S, String>,
) -> Result<S, String> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('!') {
        return Ok(S::not(parse_spec(rest, vars, depth, atom)?));
    }
    if let Some(inner) = t.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| format!("list `{t}` has no closing `]`"))?;
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for item in split_top_level(inner)? {
            if item.trim().is_empty() {
                return Err(format!("empty item in list `{t}`"));
            }
            match parse_spec(item, vars, depth, atom)?.negated() {
                Ok(n) => neg.push(n),
                Err(p) => pos.push(p),
            }
        }
        return Ok(S::list(pos, neg));
    }
    if let Some(name) = t.strip_prefix('$') {
        if depth >= MAX_VAR_DEPTH {
            return Err(format!("variable `${name}` nests deeper than {MAX_VAR_DEPTH} levels (a cycle?)"));
        }
        let value = vars.get(name).ok_or_else(|| {
            let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
            known.sort_unstable();
            format!("undefined variable `${name}`; define it under `vars` (defined: {})", known.join(", "))
        })?;
        return parse_spec(value, vars, depth + 1, atom);
    }
    atom(t)
}

/// Splits a list body at commas outside nested brackets.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut level, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '[' => level += 1,
            ']' => level = level.checked_sub(1).ok_or_else(|| format!("unbalanced `]` in `[{s}]`"))?,
            ',' if level == 0 => {
                out.push(s.get(start..i).unwrap_or(""));
                start = i + 1;
            }
            _ => {}
        }
    }
    if level != 0 {
        return Err(format!("unbalanced `[` in `[{s}]`"));
    }
    out.push(s.get(start..).unwrap_or(""));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{v4, FAMILY_V4};

    fn vars() -> Vars {
        [
            ("HOME_NET", "[10.0.0.0/8,192.168.0.0/16]"),
            ("EXTERNAL_NET", "!$HOME_NET"),
            ("HTTP_PORTS", "[80,8080]"),
            ("LOOP", "$LOOP"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn addresses() {
        let v = vars();
        let cases: &[(&str, [u8; 4], bool)] = &[
            ("any", [1, 2, 3, 4], true),
            ("10.0.0.0/8", [10, 9, 9, 9], true),
            ("10.0.0.0/8", [11, 0, 0, 1], false),
            ("1.2.3.4", [1, 2, 3, 4], true),
            ("!1.2.3.4", [1, 2, 3, 4], false),
            ("!1.2.3.4", [1, 2, 3, 5], true),
            ("[1.1.1.1,2.2.2.2]", [2, 2, 2, 2], true),
            ("[1.1.1.1,2.2.2.2]", [3, 3, 3, 3], false),
            ("[10.0.0.0/8,!10.1.1.1]", [10, 1, 1, 1], false),
            ("[10.0.0.0/8,!10.1.1.1]", [10, 1, 1, 2], true),
            ("[!10.1.1.1]", [8, 8, 8, 8], true),
            ("$HOME_NET", [192, 168, 3, 3], true),
            ("$HOME_NET", [8, 8, 8, 8], false),
            ("$EXTERNAL_NET", [8, 8, 8, 8], true),
            ("$EXTERNAL_NET", [10, 0, 0, 1], false),
            ("[$HOME_NET,!10.0.0.1]", [10, 0, 0, 1], false),
            ("[[1.1.1.1,2.2.2.2],3.3.3.3]", [2, 2, 2, 2], true),
        ];
        for (text, addr, want) in cases {
            let spec = parse_addr(text, &v).unwrap();
            assert_eq!(spec.matches(FAMILY_V4, &v4(*addr)), *want, "{text} vs {addr:?}");
        }
    }

    #[test]
    fn ports() {
        let v = vars();
        let cases: &[(&str, u16, bool)] = &[
            ("any", 1, true),
            ("80", 80, true),
            ("80", 81, false),
            ("1024:", 1024, true),
            ("1024:", 1023, false),
            (":80", 0, true),
            (":80", 81, false),
            ("1:1023", 1023, true),
            ("1:1023", 1024, false),
            ("!80", 80, false),
            ("!80", 443, true),
            ("[80,443]", 443, true),
            ("[1:1023,!80]", 80, false),
            ("[1:1023,!80]", 22, true),
            ("$HTTP_PORTS", 8080, true),
            ("!$HTTP_PORTS", 8080, false),
        ];
        for (text, port, want) in cases {
            assert_eq!(parse_port(text, &v).unwrap().matches(*port), *want, "{text} vs {port}");
        }
    }

    #[test]
    fn errors_say_what_was_expected() {
        let v = vars();
        let cases: &[(&str, bool, &str)] = &[
            ("10.0.0.0/33", true, "expected an address"),
            ("$NOPE", true, "undefined variable `$NOPE`"),
            ("$LOOP", true, "nests deeper"),
            ("[1.1.1.1", true, "no closing"),
            ("[1.1.1.1,]", true, "empty item"),
            ("http", false, "expected a port"),
            ("90:80", false, "is empty"),
            ("70000", false, "expected a port"),
            (":", false, "expected a port"),
        ];
        for (text, is_addr, want) in cases {
            let err = if *is_addr {
                parse_addr(text, &v).map(|_| ()).unwrap_err()
            } else {
                parse_port(text, &v).map(|_| ()).unwrap_err()
            };
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
