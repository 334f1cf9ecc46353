//! The little HTTP/1.1 the endpoint speaks: one request per connection, `GET` and `POST`,
//! the request head only (no bodies), every response closing its connection.

/// Largest request head read; longer ones get 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: format!("{body}\n") }
    }

    /// Status line, headers and body, closing the connection.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            201 => "Created",
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            504 => "Gateway Timeout",
            _ => "Error",
        };
        let allow = if self.status == 405 { "Allow: GET, POST\r\n" } else { "" };
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{}",
            self.status,
            self.content_type,
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// The bearer token of a request head, if any.
pub fn bearer(head: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(head).ok()?;
    text.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let value = value.trim();
        name.trim().eq_ignore_ascii_case("authorization").then(|| value.strip_prefix("Bearer "))?
    })
}

/// The query string of a request head (after `?`, before `#`), empty when there is none.
pub fn query(head: &[u8]) -> &str {
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(first).unwrap_or_default();
    let target = line.split(' ').nth(1).unwrap_or_default();
    let q = target.split_once('?').map_or("", |(_, q)| q);
    q.split('#').next().unwrap_or_default()
}

/// The method and path of a `GET` or `POST` request head (query string removed), or the error
/// response.
pub fn parse_request(head: &[u8]) -> Result<(&str, &str), Response> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n");
    if end.is_none() && head.len() >= MAX_HEAD {
        return Err(Response::text(431, "request head too large"));
    }
    let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(first).map_err(|_| Response::text(400, "request line is not UTF-8"))?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "expected `GET /path HTTP/1.1`"));
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Err(Response::text(400, "expected `GET /path HTTP/1.1`"));
    }
    if method != "GET" && method != "POST" {
        return Err(Response::text(405, "only GET and POST are supported"));
    }
    Ok((method, target.split(['?', '#']).next().unwrap_or(target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed() {
        type Parsed<'a> = Result<(&'a str, &'a str), u16>;
        let cases: &[(&str, Parsed<'_>)] = &[
            ("GET /status HTTP/1.1\r\nHost: x\r\n\r\n", Ok(("GET", "/status"))),
            ("GET /metrics?x=1 HTTP/1.0\r\n\r\n", Ok(("GET", "/metrics"))),
            ("GET / HTTP/1.1\r\n\r\n", Ok(("GET", "/"))),
            ("POST /shutdown HTTP/1.1\r\n\r\n", Ok(("POST", "/shutdown"))),
            ("DELETE /status HTTP/1.1\r\n\r\n", Err(405)),
            ("GET /status\r\n\r\n", Err(400)),
            ("GET status HTTP/1.1\r\n\r\n", Err(400)),
            ("GET /a b HTTP/1.1\r\n\r\n", Err(400)),
            ("SSH-2.0-OpenSSH\r\n\r\n", Err(400)),
            ("", Err(400)),
        ];
        for (head, want) in cases {
            let got = parse_request(head.as_bytes()).map_err(|r| r.status);
            assert_eq!(&got, want, "{head:?}");
        }
        let long = vec![b'a'; MAX_HEAD];
        assert_eq!(parse_request(&long).map_err(|r| r.status), Err(431));
    }

    #[test]
    fn responses_close_the_connection_and_count_their_body() {
        let r = Response::text(404, "not found");
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n\
             Connection: close\r\n\r\nnot found\n"
        );
        assert_eq!(query(b"POST /capture?point=rx:a&port=53#x HTTP/1.1\r\n\r\n"), "point=rx:a&port=53");
        assert_eq!(query(b"GET /capture HTTP/1.1\r\n\r\n"), "");
        let text = String::from_utf8(Response::text(405, "x").to_bytes()).unwrap();
        assert!(text.contains("\r\nAllow: GET, POST\r\n"), "{text}");
    }
}
