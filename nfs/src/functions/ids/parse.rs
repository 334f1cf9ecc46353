//! The rule language: a subset of Snort/Suricata syntax, one rule per line.
//!
//! ```text
//! action proto src_addr src_port -> dst_addr dst_port (option; option:value; ...)
//! ```
//!
//! - action: `alert`, `drop`, `pass`; proto: `tcp`, `udp`, `icmp`, `ip`;
//! - addresses and ports: see [`super::spec`]; direction `->` or `<>`;
//! - options: `msg`, `content` (text with `|hex|` parts and `\"` `\;` `\\` escapes), `nocase`,
//!   `offset`, `depth`, `distance`, `within`, `fast_pattern`, `flow` (`to_server`,
//!   `to_client`, `from_server`, `from_client`, `established`), `sid` (required), `rev`;
//!   `classtype`, `reference`, `metadata`, `priority` and `gid` are accepted and ignored.
//!   Other options are rejected or skipped (with a report) per [`UnknownOptions`].
//!
//! Blank lines and lines starting with `#` are ignored. Every error names
//! `source:line:column`.

use serde::Deserialize;

use super::content::Content;
use super::rule::{Action, FlowOpt, Origin, Proto, Rule};
use super::spec::{parse_addr, parse_port, Vars};

/// Informational options: accepted, not used for matching.
const IGNORED_OPTIONS: &[&str] = &["classtype", "reference", "metadata", "priority", "gid"];

/// What to do with an option the parser does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownOptions {
    /// Refuse the rule set (configuration error).
    #[default]
    Reject,
    /// Drop the option and keep the rule (which then matches more than written); each is
    /// logged and counted.
    Skip,
}

/// A rule that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub source: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: {}", self.source, self.line, self.column, self.message)
    }
}

/// An option dropped under [`UnknownOptions::Skip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub source: String,
    pub line: usize,
    pub column: usize,
    pub option: String,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: skipped unknown option `{}`", self.source, self.line, self.column, self.option)
    }
}

/// Parses every rule of `text`. `source` names it in messages (a path or `rules[3]`).
pub fn parse_rules(
    source: &str,
    text: &str,
    vars: &Vars,
    unknown: UnknownOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Rule>, ParseError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let mut p = LineParser { source, line: i + 1, text: line, vars, unknown, skipped };
        rules.push(p.rule()?);
    }
    Ok(rules)
}

struct LineParser<'a> {
    source: &'a str,
    line: usize,
    text: &'a str,
    vars: &'a Vars,
    unknown: UnknownOptions,
    skipped: &'a mut Vec<Skipped>,
}

impl LineParser<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            source: self.source.to_string(),
            line: self.line,
            column: at + 1,
            message: message.into(),
        }
    }

    fn rule(&mut self) -> Result<Rule, ParseError> {
        let text = self.text;
        let open =
            text.find('(').ok_or_else(|| self.err(text.len(), "expected `(` starting the rule options"))?;
        let header = header_tokens(text.get(..open).unwrap_or(""));
        let names = [
            "action",
            "protocol",
            "source address",
            "source port",
            "direction",
            "destination address",
            "destination port",
        ];
        if header.len() != names.len() {
            let at = header.get(names.len()).map_or(open, |t| t.0);
            let missing = names.get(header.len()).copied().unwrap_or("`(`");
            return Err(self.err(
                at,
                format!(
                    "expected 7 header fields before `(`, got {} (next expected: {missing})",
                    header.len()
                ),
            ));
        }
        let field = |i: usize| header.get(i).copied().unwrap_or((0, ""));
        let (at, a) = field(0);
        let action = match a {
            "alert" => Action::Alert,
            "drop" => Action::Drop,
            "pass" => Action::Pass,
            other => {
                return Err(self.err(at, format!("expected an action (alert, drop, pass), got `{other}`")))
            }
        };
        let (at, p) = field(1);
        let proto = match p.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            "icmp" => Proto::Icmp,
            "ip" => Proto::Ip,
            _ => return Err(self.err(at, format!("expected a protocol (tcp, udp, icmp, ip), got `{p}`"))),
        };
        let addr = |i: usize| {
            let (at, t) = field(i);
            parse_addr(t, self.vars).map_err(|m| self.err(at, m))
        };
        let port = |i: usize| {
            let (at, t) = field(i);
            parse_port(t, self.vars).map_err(|m| self.err(at, m))
        };
        let (src, sport, dst, dport) = (addr(2)?, port(3)?, addr(5)?, port(6)?);
        let (at, d) = field(4);
        let bidirectional = match d {
            "->" => false,
            "<>" => true,
            other => return Err(self.err(at, format!("expected a direction `->` or `<>`, got `{other}`"))),
        };
        let rest = text.get(open + 1..).unwrap_or("");
        let close = rest.trim_end().strip_suffix(')').map(str::len).ok_or_else(|| {
            self.err(text.trim_end().len(), "expected `)` closing the rule options at the end of the line")
        })?;
        let body = rest.get(..close).unwrap_or("");
        let mut rule = Rule {
            action,
            proto,
            src,
            sport,
            dst,
            dport,
            bidirectional,
            msg: String::new(),
            contents: Vec::new(),
            fast: None,
            flow: FlowOpt::default(),
            sid: 0,
            rev: 1,
            origin: Origin { source: self.source.to_string(), line: self.line },
        };
        let mut sid_seen = false;
        for (at, name, value) in split_options(body).map_err(|(at, m)| self.err(open + 1 + at, m))? {
            let at = open + 1 + at;
            self.option(&mut rule, at, name, value, &mut sid_seen)?;
        }
        if !sid_seen {
            return Err(self.err(open, "the rule has no `sid` option (every rule needs a unique sid)"));
        }
        rule.fast = fast_pattern(&rule.contents);
        Ok(rule)
    }

    fn option(
        &mut self,
        rule: &mut Rule,
        at: usize,
        name: &str,
        value: Option<&str>,
        sid_seen: &mut bool,
    ) -> Result<(), ParseError> {
        let value = value.map(str::trim);
        let need =
            || value.ok_or_else(|| self.err(at, format!("option `{name}` needs a value (`{name}:...;`)")));
        let flag = || match value {
            None => Ok(()),
            Some(_) => Err(self.err(at, format!("option `{name}` takes no value"))),
        };
        let int = || -> Result<i64, ParseError> {
            let v = need()?;
            v.parse::<i64>().map_err(|_| self.err(at, format!("option `{name}` expects a number, got `{v}`")))
        };
        let last = rule.contents.len().checked_sub(1);
        let modifier = |last: Option<usize>| {
            last.ok_or_else(|| self.err(at, format!("`{name}` must follow a `content` option")))
        };
        match name {
            "msg" => rule.msg = unquote(need()?).map_err(|m| self.err(at, m))?,
            "content" => {
                let v = need()?;
                if v.starts_with('!') {
                    return Err(self.err(at, "negated content (`content:!\"...\"`) is not supported"));
                }
                let bytes = decode_content(v).map_err(|m| self.err(at, m))?;
                rule.contents.push(Content { bytes, ..Content::default() });
            }
            "nocase" | "fast_pattern" => {
                flag()?;
                let i = modifier(last)?;
                if let Some(c) = rule.contents.get_mut(i) {
                    if name == "nocase" {
                        c.nocase = true;
                    } else {
                        c.fast_pattern = true;
                    }
                }
            }
            "offset" | "depth" | "distance" | "within" => {
                let n = int()?;
                let i = modifier(last)?;
                let Some(c) = rule.contents.get_mut(i) else { return Ok(()) };
                let unsigned = u32::try_from(n)
                    .map_err(|_| self.err(at, format!("`{name}` must be from 0 to 4294967295, got {n}")));
                match name {
                    "offset" => c.offset = Some(unsigned?),
                    "depth" => c.depth = Some(unsigned?),
                    "within" => c.within = Some(unsigned?),
                    _ => {
                        c.distance = Some(
                            i32::try_from(n)
                                .map_err(|_| self.err(at, format!("`distance` out of range: {n}")))?,
                        )
                    }
                }
                let len = c.bytes.len() as u64;
                let short = |x: Option<u32>| x.is_some_and(|x| u64::from(x) < len);
                let (mixed, short_depth, short_within) = (
                    (c.offset.is_some() || c.depth.is_some()) && c.relative(),
                    short(c.depth),
                    short(c.within),
                );
                if mixed {
                    return Err(self.err(at, "a content cannot mix absolute (offset, depth) and relative (distance, within) modifiers"));
                }
                if short_depth || short_within {
                    return Err(self.err(
                        at,
                        format!("`{name}` is shorter than the content ({len} bytes): it could never match"),
                    ));
                }
            }
            "flow" => {
                for item in need()?.split(',') {
                    match item.trim() {
                        "established" => rule.flow.established = true,
                        "to_server" | "from_client" => rule.flow.to_server = Some(true),
                        "to_client" | "from_server" => rule.flow.to_server = Some(false),
                        other => {
                            return Err(self.err(at, format!(
                                "unsupported flow keyword `{other}` (supported: to_server, to_client, from_server, from_client, established)"
                            )))
                        }
                    }
                }
            }
            "sid" | "rev" => {
                let n = int()?;
                let n = u32::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| self.err(at, format!("`{name}` must be from 1 to 4294967295, got {n}")))?;
                if name == "sid" {
                    rule.sid = n;
                    *sid_seen = true;
                } else {
                    rule.rev = n;
                }
            }
            n if IGNORED_OPTIONS.contains(&n) => {}
            other => match self.unknown {
                UnknownOptions::Reject => {
                    return Err(self.err(
                        at,
                        format!("unknown option `{other}` (set unknown_options = \"skip\" to ignore it)"),
                    ))
                }
                UnknownOptions::Skip => self.skipped.push(Skipped {
                    source: self.source.to_string(),
                    line: self.line,
                    column: at + 1,
                    option: other.to_string(),
                }),
            },
        }
        Ok(())
    }
}

/// Header tokens with their byte offsets: split at whitespace outside brackets.
fn header_tokens(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let (mut level, mut start) = (0usize, None::<usize>);
    for (i, c) in s.char_indices() {
        match c {
            '[' => level += 1,
            ']' => level = level.saturating_sub(1),
            _ => {}
        }
        if c.is_whitespace() && level == 0 {
            if let Some(st) = start.take() {
                out.push((st, s.get(st..i).unwrap_or("")));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push((st, s.get(st..).unwrap_or("")));
    }
    out
}

type Opt<'a> = (usize, &'a str, Option<&'a str>);

/// Splits `name:value; name; ...` at semicolons outside quotes, honouring `\` escapes.
fn split_options(body: &str) -> Result<Vec<Opt<'_>>, (usize, String)> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0usize, false, false);
    fn push<'b>(
        body: &'b str,
        from: usize,
        to: usize,
        out: &mut Vec<Opt<'b>>,
    ) -> Result<(), (usize, String)> {
        let raw = body.get(from..to).unwrap_or("");
        let lead = raw.len() - raw.trim_start().len();
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(());
        }
        let at = from + lead;
        let (name, value) = match raw.split_once(':') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (raw, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err((at, format!("expected an option name, got `{name}`")));
        }
        out.push((at, name, value));
        Ok(())
    }
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                push(body, start, i, &mut out)?;
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err((start, "unterminated quoted string".to_string()));
    }
    if !body.get(start..).unwrap_or("").trim().is_empty() {
        return Err((start, "expected `;` after the last option".to_string()));
    }
    Ok(out)
}

/// `"text"` with `\"`, `\\`, `\;`, `\:` escapes.
fn unquote(v: &str) -> Result<String, String> {
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| format!("expected a quoted string, got `{v}`"))?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('"' | '\\' | ';' | ':')) => out.push(e),
                other => {
                    return Err(format!(
                        "unknown escape `\\{}` in `{v}`",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A content string: text, `|41 42|` hex parts, escapes.
fn decode_content(v: &str) -> Result<Vec<u8>, String> {
    let inner = unquote(v)?;
    let mut out = Vec::with_capacity(inner.len());
    let mut parts = inner.split('|');
    let mut hex = false;
    let mut n = 0usize;
    for part in parts.by_ref() {
        n += 1;
        if hex {
            let digits: String = part.chars().filter(|c| !c.is_whitespace()).collect();
            if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("bad hex `|{part}|` in content (expected pairs of hex digits)"));
            }
            for pair in digits.as_bytes().chunks(2) {
                let s = std::str::from_utf8(pair).unwrap_or("");
                out.push(u8::from_str_radix(s, 16).map_err(|_| format!("bad hex byte `{s}`"))?);
            }
        } else {
            out.extend_from_slice(part.as_bytes());
        }
        hex = !hex;
    }
    if n.is_multiple_of(2) {
        return Err(format!("unbalanced `|` in content {v}"));
    }
    if out.is_empty() {
        return Err("empty content".to_string());
    }
    Ok(out)
}

/// The content marked `fast_pattern`, else the longest (the first of equals).
fn fast_pattern(contents: &[Content]) -> Option<usize> {
    if let Some(i) = contents.iter().position(|c| c.fast_pattern) {
        return Some(i);
    }
    let mut best: Option<(usize, usize)> = None;
    for (i, c) in contents.iter().enumerate() {
        if best.is_none_or(|(_, l)| c.bytes.len() > l) {
            best = Some((i, c.bytes.len()));
        }
    }
    best.map(|(i, _)| i)
}
