//! Rule parser: each syntax element, errors with line:column, unknown options.

use super::content::Content;
use super::parse::{parse_rules, Skipped, UnknownOptions};
use super::rule::{Action, FlowOpt, Proto, Rule};
use super::spec::{AddrSpec, PortSpec, Vars};

fn vars() -> Vars {
    [("HOME_NET", "10.0.0.0/8"), ("EXTERNAL_NET", "!$HOME_NET"), ("HTTP_PORTS", "[80,8080]")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn one(text: &str) -> Rule {
    let mut skipped = Vec::new();
    let mut rules = parse_rules("t.rules", text, &vars(), UnknownOptions::Reject, &mut skipped).unwrap();
    assert_eq!(rules.len(), 1);
    rules.remove(0)
}

fn err(text: &str) -> String {
    let mut skipped = Vec::new();
    parse_rules("t.rules", text, &vars(), UnknownOptions::Reject, &mut skipped).unwrap_err().to_string()
}

fn content(bytes: &[u8]) -> Content {
    Content { bytes: bytes.to_vec(), ..Content::default() }
}

#[test]
fn header_elements() {
    let r = one(r#"drop udp $HOME_NET 1024: <> [1.2.3.4,5.6.7.0/24] !53 (msg:"x"; sid:9; rev:3;)"#);
    assert_eq!((r.action, r.proto, r.bidirectional, r.sid, r.rev), (Action::Drop, Proto::Udp, true, 9, 3));
    assert_eq!(r.sport, PortSpec::Range(1024, u16::MAX));
    assert_eq!(r.dport, PortSpec::Not(Box::new(PortSpec::Range(53, 53))));
    assert!(matches!(r.src, AddrSpec::Prefix(_)));
    assert!(matches!(&r.dst, AddrSpec::List { pos, neg } if pos.len() == 2 && neg.is_empty()));
    let cases: &[(&str, Action, Proto)] = &[
        ("alert tcp any any -> any any (sid:1;)", Action::Alert, Proto::Tcp),
        ("pass icmp any any -> any any (sid:1;)", Action::Pass, Proto::Icmp),
        ("alert ip any any -> any any (sid:1;)", Action::Alert, Proto::Ip),
        ("alert TCP any any -> any any (sid:1;)", Action::Alert, Proto::Tcp),
    ];
    for (text, a, p) in cases {
        let r = one(text);
        assert_eq!((r.action, r.proto, r.rev), (*a, *p, 1), "{text}");
    }
}

#[test]
fn options() {
    let r = one(
        r#"alert tcp any any -> any $HTTP_PORTS (msg:"say \"hi\"\; ok"; content:"GET "; depth:4; content:"|0d 0a|Host|3a| "; nocase; distance:0; within:200; content:"a\"b|41|"; offset:2; flow:established,to_server; classtype:web; sid:100; rev:2;)"#,
    );
    assert_eq!(r.msg, "say \"hi\"; ok");
    assert_eq!(
        r.contents,
        vec![
            Content { depth: Some(4), ..content(b"GET ") },
            Content { nocase: true, distance: Some(0), within: Some(200), ..content(b"\r\nHost: ") },
            Content { offset: Some(2), ..content(b"a\"bA") },
        ]
    );
    assert_eq!(r.fast, Some(1), "the longest content is the fast pattern");
    assert_eq!(r.flow, FlowOpt { established: true, to_server: Some(true) });
    assert_eq!(
        r.dport,
        PortSpec::List { pos: vec![PortSpec::Range(80, 80), PortSpec::Range(8080, 8080)], neg: vec![] }
    );
    let r = one(
        r#"alert tcp any any -> any any (content:"longer one"; content:"short"; fast_pattern; flow:from_server; sid:1;)"#,
    );
    assert_eq!(r.fast, Some(1));
    assert_eq!(r.flow, FlowOpt { established: false, to_server: Some(false) });
    assert_eq!(one("alert tcp any any -> any any (sid:1;)").fast, None);
}

#[test]
fn comments_and_blank_lines_are_skipped() {
    let text = "# a comment\n\n   \nalert tcp any any -> any any (sid:1;)\n  # indented comment\nalert udp any any -> any any (sid:2;)\n";
    let mut skipped = Vec::new();
    let rules = parse_rules("f", text, &vars(), UnknownOptions::Reject, &mut skipped).unwrap();
    assert_eq!(rules.iter().map(|r| (r.sid, r.origin.line)).collect::<Vec<_>>(), [(1, 4), (2, 6)]);
}

#[test]
fn errors_have_line_and_column() {
    let ok = "alert tcp any any -> any any (sid:1;)\n";
    let cases: &[(&str, &str)] = &[
        ("alrt tcp any any -> any any (sid:1;)", "t.rules:2:1: expected an action"),
        ("alert tcx any any -> any any (sid:1;)", "t.rules:2:7: expected a protocol"),
        ("alert tcp nowhere any -> any any (sid:1;)", "t.rules:2:11: expected an address"),
        ("alert tcp any 99999 -> any any (sid:1;)", "t.rules:2:15: expected a port"),
        ("alert tcp any any => any any (sid:1;)", "t.rules:2:19: expected a direction"),
        ("alert tcp any any -> $NOPE any (sid:1;)", "t.rules:2:22: undefined variable `$NOPE`"),
        ("alert tcp any any -> any (sid:1;)", "t.rules:2:26: expected 7 header fields"),
        ("alert tcp any any -> any any sid:1;", "t.rules:2:36: expected `(`"),
        ("alert tcp any any -> any any (sid:1;", "t.rules:2:37: expected `)`"),
        ("alert tcp any any -> any any (msg:\"x\";)", "t.rules:2:30: the rule has no `sid`"),
        ("alert tcp any any -> any any (sid:1; bogus:3;)", "t.rules:2:38: unknown option `bogus`"),
        ("alert tcp any any -> any any (nocase; sid:1;)", "t.rules:2:31: `nocase` must follow a `content`"),
        (
            "alert tcp any any -> any any (content:\"ab\"; depth:1; sid:1;)",
            "t.rules:2:45: `depth` is shorter than the content",
        ),
        (
            "alert tcp any any -> any any (content:\"ab\"; offset:1; within:5; sid:1;)",
            "t.rules:2:55: a content cannot mix absolute",
        ),
        ("alert tcp any any -> any any (content:\"|4g|\"; sid:1;)", "t.rules:2:31: bad hex"),
        ("alert tcp any any -> any any (content:\"|41\"; sid:1;)", "t.rules:2:31: unbalanced `|`"),
        ("alert tcp any any -> any any (content:\"\"; sid:1;)", "t.rules:2:31: empty content"),
        ("alert tcp any any -> any any (content:!\"x\"; sid:1;)", "t.rules:2:31: negated content"),
        ("alert tcp any any -> any any (msg:\"open; sid:1;)", "t.rules:2:31: unterminated quoted string"),
        ("alert tcp any any -> any any (sid:1; rev:x;)", "t.rules:2:38: option `rev` expects a number"),
        ("alert tcp any any -> any any (sid:0;)", "t.rules:2:31: `sid` must be from 1"),
        ("alert tcp any any -> any any (flow:stateless; sid:1;)", "t.rules:2:31: unsupported flow keyword"),
        ("alert tcp any any -> any any (sid:1; within:4;)", "t.rules:2:38: `within` must follow"),
        (
            "alert tcp any any -> any any (content:\"a\"; nocase:1; sid:1;)",
            "t.rules:2:44: option `nocase` takes no value",
        ),
        ("alert tcp any any -> any any (sid:1) ", "t.rules:2:31: expected `;` after the last option"),
    ];
    for (line, want) in cases {
        let e = err(&format!("{ok}{line}"));
        assert!(e.starts_with(want), "{line}\n  got:  {e}\n  want: {want}");
    }
}

#[test]
fn unknown_options_reject_or_skip() {
    let text = "alert tcp any any -> any any (pcre:\"/a/\"; content:\"x\"; sid:1;)\n\
                alert tcp any any -> any any (sid:2; http_uri; threshold: type limit;)\n";
    let mut skipped = Vec::new();
    let e = parse_rules("r", text, &vars(), UnknownOptions::Reject, &mut skipped).unwrap_err();
    assert_eq!(e.to_string(), "r:1:31: unknown option `pcre` (set unknown_options = \"skip\" to ignore it)");
    let rules = parse_rules("r", text, &vars(), UnknownOptions::Skip, &mut skipped).unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].contents, vec![content(b"x")]);
    let at = |line, column, option: &str| Skipped { source: "r".into(), line, column, option: option.into() };
    assert_eq!(skipped, vec![at(1, 31, "pcre"), at(2, 38, "http_uri"), at(2, 48, "threshold")]);
    assert_eq!(skipped[0].to_string(), "r:1:31: skipped unknown option `pcre`");
}

/// Every one-character edit of a full-featured rule either parses or is a located error;
/// rules that parse then match a payload without panicking.
#[test]
fn edited_rules_never_panic() {
    let base = r#"alert tcp [10.0.0.0/8,!10.1.1.1] 1024: <> $HOME_NET !80 (msg:"a\"b"; content:"GET |0d 0a|"; nocase; depth:20; content:"x"; distance:-2; within:9; flow:established,to_server; sid:7; rev:2;)"#;
    let specials = ['"', '|', ';', '\\', '(', ')', '[', ']', '!', ':', ',', ' ', '-', '0', '$'];
    let payload = b"GET \r\n x GET \r\nxx";
    let mut parsed = 0;
    for (i, _) in base.char_indices() {
        let mut edits = vec![format!("{}{}", &base[..i], &base[i + 1..])];
        edits.extend(specials.iter().map(|c| format!("{}{c}{}", &base[..i], &base[i..])));
        for text in edits {
            let mut skipped = Vec::new();
            match parse_rules("e", &text, &vars(), UnknownOptions::Skip, &mut skipped) {
                Ok(rules) => {
                    parsed += 1;
                    for r in &rules {
                        let _ = super::content::matches(&r.contents, payload, None);
                    }
                }
                Err(e) => assert!(e.to_string().starts_with("e:1:"), "{e}"),
            }
        }
    }
    assert!(parsed > 100, "{parsed}");
}
