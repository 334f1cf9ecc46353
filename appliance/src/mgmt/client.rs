//! The client side of the endpoint, for the commands that drive a running appliance
//! (`nflet top`, `nflet capture`): one request per connection, as the server speaks.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// What went wrong talking to the endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientError {
    /// No connection (the appliance is not running, or not listening there).
    Unreachable(String),
    /// Connected, but the answer was not HTTP.
    Protocol(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) | ClientError::Protocol(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ClientError {}

/// A response: status code and body.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
    }
}

/// Sends `method target` to the endpoint at `endpoint` (`host:port`), with the bearer token
/// when one is given.
pub fn request(
    endpoint: &str,
    method: &str,
    target: &str,
    token: Option<&str>,
) -> Result<Answer, ClientError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        ClientError::Unreachable(format!(
            "cannot reach the management endpoint at {endpoint}: {e}; is nflet running with \
             `[management] listen` on that port? (--endpoint HOST:PORT)"
        ))
    };
    let addr = endpoint
        .to_socket_addrs()
        .map_err(|e| unreachable(&e))?
        .next()
        .ok_or_else(|| unreachable(&"the name resolves to no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| unreachable(&e))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| unreachable(&e))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: {endpoint}\r\n{auth}Connection: close\r\n\r\n")
        .map_err(|e| unreachable(&e))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| unreachable(&e))?;
    parse_response(&raw).ok_or_else(|| {
        ClientError::Protocol(format!(
            "{endpoint} did not answer with HTTP: is it nflet's management endpoint?"
        ))
    })
}

/// Status and body of a raw response.
fn parse_response(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(raw.get(..end)?).ok()?;
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some(Answer { status, body: raw.get(end + 4..)?.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed() {
        let a = parse_response(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (201, &b"ok"[..]));
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_none());
        let e = request("127.0.0.1:1", "GET", "/status", None).unwrap_err();
        assert!(matches!(e, ClientError::Unreachable(ref m) if m.contains("127.0.0.1:1")), "{e}");
    }
}
