//! Configuration errors that point at the file, line and key and say what was expected.

use std::fmt;

/// Where in which file a configuration problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
}

/// A configuration error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub at: Location,
    /// Dotted key path, e.g. `nf[fw].rule[2].dport`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.at.file)?;
        if self.at.line > 0 {
            write!(f, ":{}", self.at.line)?;
            if self.at.column > 0 {
                write!(f, ":{}", self.at.column)?;
            }
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Maps byte offsets of a source text to lines and columns.
#[derive(Debug)]
pub struct SourceMap<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl SourceMap<'_> {
    pub fn at(&self, offset: usize) -> Location {
        let before = self.text.get(..offset.min(self.text.len())).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Location { file: self.file.to_string(), line, column }
    }

    /// Location of `key = ...` inside the byte range `span` (first occurrence), or of the span's
    /// start when the key does not appear.
    pub fn key_in(&self, span: std::ops::Range<usize>, key: &str) -> Location {
        let span = self.section(span);
        let body = self.text.get(span.clone()).unwrap_or("");
        let mut off = 0;
        for line in body.split_inclusive('\n') {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix(key) {
                if rest.trim_start().starts_with('=') {
                    return self.at(span.start + off + (line.len() - t.len()));
                }
            }
            off += line.len();
        }
        self.at(span.start)
    }

    /// Widens the span of a `[[port]]`/`[[nf]]`/`[[chain]]` element (whose span may cover
    /// only its header) to its whole section: up to the next top-level table header.
    fn section(&self, span: std::ops::Range<usize>) -> std::ops::Range<usize> {
        const TOP: [&str; 5] = ["[[port]]", "[[nf]]", "[[chain]]", "[appliance]", "[parse]"];
        let rest = self.text.get(span.start..).unwrap_or("");
        let mut off = 0;
        for (i, line) in rest.split_inclusive('\n').enumerate() {
            if i > 0 && TOP.iter().any(|h| line.trim_start().starts_with(h)) {
                return span.start..span.start + off;
            }
            off += line.len();
        }
        span.start..self.text.len()
    }

    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError { at: self.at(span.start), key: key.into(), message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let text = "a = 1\n\n  bc = 2\n";
        let m = SourceMap { file: "x.toml", text };
        assert_eq!(m.at(0), Location { file: "x.toml".into(), line: 1, column: 1 });
        assert_eq!(m.at(9), Location { file: "x.toml".into(), line: 3, column: 3 });
        assert_eq!(m.key_in(0..text.len(), "bc").line, 3);
        assert_eq!(m.key_in(0..text.len(), "zz").line, 1);
    }
}
