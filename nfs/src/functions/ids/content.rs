//! `content` matches with their modifiers, evaluated on one packet's payload.
//!
//! Semantics follow Snort: an absolute content (`offset`, `depth`, or neither) is searched in
//! `[offset, offset + depth)` of the payload; a relative content (`distance`, `within`) in
//! `[end + distance, end + distance + within)`, where `end` is where the previous content of
//! the rule matched (0 before the first). When a relative content fails, earlier contents are
//! retried at their next occurrence (bounded by [`SEARCH_BUDGET`] occurrences per rule and
//! packet, so no payload can make the search explode).
//!
//! The fast pattern may instead be *pinned* where the flow's automaton found it, possibly
//! starting in an earlier packet of the flow (a negative start); see the module doc of
//! [`crate::functions::ids`] for how that decides cross-packet matches.

/// Occurrences tried per rule evaluation before giving up (a "no match").
pub const SEARCH_BUDGET: u32 = 1024;

/// One `content` option and its modifiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Content {
    pub bytes: Vec<u8>,
    pub nocase: bool,
    pub offset: Option<u32>,
    pub depth: Option<u32>,
    pub distance: Option<i32>,
    pub within: Option<u32>,
    /// Chosen with the `fast_pattern` option.
    pub fast_pattern: bool,
}

impl Content {
    pub fn relative(&self) -> bool {
        self.distance.is_some() || self.within.is_some()
    }

    /// The window `[lo, hi)` this content must lie in, before clamping to the payload
    /// (`hi = None`: up to the end), given the end of the previous content's match.
    fn window(&self, prev_end: i64) -> (i64, Option<i64>) {
        if self.relative() {
            let lo = prev_end + i64::from(self.distance.unwrap_or(0));
            (lo, self.within.map(|w| lo + i64::from(w)))
        } else {
            let lo = i64::from(self.offset.unwrap_or(0));
            (lo, self.depth.map(|d| lo + i64::from(d)))
        }
    }

    /// True if the pattern equals `hay` (same length), honouring `nocase`.
    #[inline]
    fn eq(&self, pat: &[u8], hay: &[u8]) -> bool {
        if self.nocase {
            pat.eq_ignore_ascii_case(hay)
        } else {
            pat == hay
        }
    }
}

/// Where the fast pattern was found: content index and start offset in the payload
/// (negative when the match began in an earlier packet of the flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned {
    pub content: usize,
    pub start: i64,
}

/// True if all `contents` match `payload` (with `pinned` fixing one of them in place).
pub fn matches(contents: &[Content], payload: &[u8], pinned: Option<Pinned>) -> bool {
    let mut budget = SEARCH_BUDGET;
    step(contents, 0, 0, payload, pinned, &mut budget)
}

fn step(
    contents: &[Content],
    i: usize,
    prev_end: i64,
    payload: &[u8],
    pinned: Option<Pinned>,
    budget: &mut u32,
) -> bool {
    let Some(c) = contents.get(i) else { return true };
    let len = c.bytes.len() as i64;
    let (lo, hi) = c.window(prev_end);
    if let Some(p) = pinned.filter(|p| p.content == i) {
        return pinned_fits(c, p.start, lo, hi, payload)
            && step(contents, i + 1, p.start + len, payload, pinned, budget);
    }
    let plen = payload.len() as i64;
    let lo = lo.clamp(0, plen);
    let hi = hi.unwrap_or(plen).clamp(lo, plen);
    let (Ok(lo), Ok(hi)) = (usize::try_from(lo), usize::try_from(hi)) else { return false };
    let Some(window) = payload.get(lo..hi) else { return false };
    let Some(first) = c.bytes.first().copied() else { return false };
    let n = c.bytes.len();
    let mut at = 0usize;
    while at + n <= window.len() {
        let Some(rest) = window.get(at..) else { return false };
        // Jump to the next position whose first byte can start the pattern.
        let skip = if c.nocase {
            rest.iter().position(|b| b.eq_ignore_ascii_case(&first))
        } else {
            rest.iter().position(|b| *b == first)
        };
        let Some(skip) = skip else { return false };
        at += skip;
        match window.get(at..at + n) {
            Some(hay) if c.eq(&c.bytes, hay) => {
                if *budget == 0 {
                    return false;
                }
                *budget -= 1;
                let end = (lo + at + n) as i64;
                if step(contents, i + 1, end, payload, pinned, budget) {
                    return true;
                }
            }
            Some(_) => {}
            None => return false,
        }
        at += 1;
    }
    false
}

/// Checks a pinned occurrence against its window and verifies the part inside this payload
/// (the automaton matched it ASCII-case-insensitively; bytes of earlier packets are gone).
fn pinned_fits(c: &Content, start: i64, lo: i64, hi: Option<i64>, payload: &[u8]) -> bool {
    let len = c.bytes.len() as i64;
    let unpositioned = !c.relative() && c.offset.is_none() && c.depth.is_none();
    if !unpositioned && (start < lo || hi.is_some_and(|h| start + len > h)) {
        return false;
    }
    let skip = usize::try_from(-start.min(0)).unwrap_or(usize::MAX);
    let (Ok(from), Ok(to)) = (usize::try_from(start.max(0)), usize::try_from(start + len)) else {
        return false;
    };
    match (c.bytes.get(skip..), payload.get(from..to)) {
        (Some(pat), Some(hay)) => c.eq(pat, hay),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: &str) -> Content {
        Content { bytes: bytes.as_bytes().to_vec(), ..Content::default() }
    }

    #[test]
    fn modifiers_table() {
        let nocase = |s: &str| Content { nocase: true, ..c(s) };
        let off = |s: &str, o: u32| Content { offset: Some(o), ..c(s) };
        let depth = |s: &str, d: u32| Content { depth: Some(d), ..c(s) };
        let od = |s: &str, o: u32, d: u32| Content { offset: Some(o), depth: Some(d), ..c(s) };
        let dist = |s: &str, d: i32| Content { distance: Some(d), ..c(s) };
        let within = |s: &str, w: u32| Content { within: Some(w), ..c(s) };
        let dw = |s: &str, d: i32, w: u32| Content { distance: Some(d), within: Some(w), ..c(s) };
        let payload = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\n";
        let cases: Vec<(&str, Vec<Content>, bool)> = vec![
            ("plain", vec![c("Host")], true),
            ("absent", vec![c("POST")], false),
            ("case differs", vec![c("host")], false),
            ("nocase", vec![nocase("host")], true),
            ("offset ok", vec![off("index", 5)], true),
            ("offset past", vec![off("index", 6)], false),
            ("depth ok", vec![depth("GET", 3)], true),
            ("depth short", vec![depth("index", 9)], false),
            ("depth exact end", vec![depth("index", 10)], true),
            ("offset+depth", vec![od("index", 4, 6)], true),
            ("offset+depth short", vec![od("index", 4, 5)], false),
            ("relative order", vec![c("GET"), dist("HTTP", 0)], true),
            ("relative wrong order", vec![c("HTTP"), dist("GET", 0)], false),
            ("within ok", vec![c("GET"), within(" /", 2)], true),
            ("within too far", vec![c("GET"), within("index", 5)], false),
            ("within just", vec![c("GET"), within("/index", 7)], true),
            ("distance skips", vec![c("GET"), dw("index", 2, 5)], true),
            ("distance too big", vec![c("GET"), dw("index", 3, 20)], false),
            ("negative distance", vec![c("html"), dw("index", -10, 10)], true),
            // The second "1" after "HTTP/1." needs backtracking past the first "1".
            ("backtracking", vec![c("1"), within("\r\nHost", 6)], true),
            ("absolute after relative", vec![c("Host"), c("GET")], true),
            ("empty payload part", vec![c("example.com"), dist("Host", 0)], false),
        ];
        for (name, contents, want) in cases {
            assert_eq!(matches(&contents, payload, None), want, "{name}");
        }
    }

    #[test]
    fn pinned_occurrences() {
        let payload = b"tail of the pattern, then more";
        // "xxtail" began two bytes before this payload.
        let cases: &[(Vec<Content>, Pinned, bool)] = &[
            (vec![c("xxtail")], Pinned { content: 0, start: -2 }, true),
            // The part in this payload must really be there.
            (vec![c("xxtaik")], Pinned { content: 0, start: -2 }, false),
            // A positioned fast pattern cannot start before the payload.
            (vec![Content { depth: Some(10), ..c("xxtail") }], Pinned { content: 0, start: -2 }, false),
            // Relative contents follow the pinned one.
            (
                vec![c("xxtail"), Content { within: Some(6), ..c(" of") }],
                Pinned { content: 0, start: -2 },
                true,
            ),
            (
                vec![c("xxtail"), Content { within: Some(2), ..c("then") }],
                Pinned { content: 0, start: -2 },
                false,
            ),
            // A content before a relative pinned one would have to be in an earlier packet.
            (
                vec![c("tail"), Content { distance: Some(0), ..c("xxtail") }],
                Pinned { content: 1, start: -2 },
                false,
            ),
        ];
        for (i, (contents, pin, want)) in cases.iter().enumerate() {
            assert_eq!(matches(contents, payload, Some(*pin)), *want, "case {i}");
        }
    }

    #[test]
    fn search_is_bounded() {
        // 4000 'a's: "a" then "b" within 1 fails at every one; the budget stops the search.
        let payload = vec![b'a'; 4000];
        let contents = vec![c("a"), Content { within: Some(1), ..c("b") }];
        assert!(!matches(&contents, &payload, None));
    }
}
