//! The management endpoint: a small HTTP/1.1 server on the management NIC that reports what
//! the appliance is doing.
//!
//! - `GET /status`: JSON — version, uptime, cores, per-port rx/tx/lost, per-chain packets and
//!   drops, drops by reason;
//! - `GET /metrics`: the same counters in the Prometheus text format (`nflet_port_rx_packets_total
//!   {port="..."}`, `nflet_drops_total{reason="..."}`, ...).
//!
//! Every response closes its connection (`Connection: close`); one thread serves one request
//! at a time, with short socket timeouts so a stalled client cannot hold it. The counters come
//! from the dataplane's merged snapshots, which the run loop's main thread hands to
//! [`Live::update`] about ten times a second (the `progress` hook of
//! [`RunOptions`](crate::dataplane::RunOptions)); the per-core fast path is not involved.
//!
//! Where it listens ([`bind_address`]): on the `[management] address` when one is configured;
//! otherwise on all addresses as PID 1 (the VM's kernel sees only `lo` and the management NIC)
//! and on 127.0.0.1 under `nflet run`, so a host's other networks never see it by default.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nflet_nfs::drop::{DropCounters, DropReason};

use crate::config::{Config, Management};
use crate::dataplane::Summary;

/// The latest counters, shared between the run loop (writer) and the endpoint (reader).
#[derive(Debug)]
pub struct Live {
    started: Instant,
    cores: usize,
    view: Mutex<View>,
}

/// What the endpoint renders: the merged totals of every core.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub uptime_s: f64,
    pub cores: usize,
    pub ports: Vec<PortView>,
    pub chains: Vec<ChainView>,
    pub drops: DropCounters,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortView {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainView {
    pub name: String,
    pub packets: u64,
    pub dropped: u64,
}

impl Live {
    /// Zero counters for the ports and chains of `config`.
    pub fn new(config: &Config) -> Live {
        let view = View {
            uptime_s: 0.0,
            cores: config.settings.cores,
            ports: config
                .port_names()
                .into_iter()
                .map(|name| PortView { name, ..PortView::default() })
                .collect(),
            chains: config
                .chains
                .iter()
                .map(|c| ChainView { name: c.name.clone(), ..ChainView::default() })
                .collect(),
            drops: DropCounters::default(),
        };
        Live { started: Instant::now(), cores: config.settings.cores, view: Mutex::new(view) }
    }

    /// Takes the run loop's latest merged counters.
    pub fn update(&self, s: &Summary) {
        let t = &s.total;
        let ports = s
            .port_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let rx = t.rx.get(i).copied().unwrap_or_default();
                let tx = t.tx.get(i).copied().unwrap_or_default();
                PortView {
                    name: name.clone(),
                    rx_packets: rx.packets,
                    rx_bytes: rx.bytes,
                    tx_packets: tx.packets,
                    tx_bytes: tx.bytes,
                    lost: t.port_lost.get(i).copied().unwrap_or(0),
                }
            })
            .collect();
        let chains = s
            .chain_names
            .iter()
            .zip(&s.chains)
            .map(|(name, c)| ChainView { name: name.clone(), packets: c.packets, dropped: c.dropped })
            .collect();
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.ports = ports;
        v.chains = chains;
        v.drops = t.drops;
    }

    /// The counters now, with the uptime.
    pub fn view(&self) -> View {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.uptime_s = self.started.elapsed().as_secs_f64();
        v.cores = self.cores;
        v
    }
}

/// Where the endpoint listens (see the module doc).
pub fn bind_address(m: &Management, pid1: bool) -> IpAddr {
    match m.address {
        Some((addr, _)) => IpAddr::V4(addr),
        None if pid1 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// Starts the endpoint when `[management] listen` asks for one; returns the counters to feed
/// and the address it listens on. A port that cannot be bound is logged and the appliance runs
/// without the endpoint.
pub fn serve(config: &Config, pid1: bool, stop: Arc<AtomicBool>) -> Option<(Arc<Live>, SocketAddr)> {
    let m = config.management.as_ref()?;
    let port = m.listen?;
    let addr = SocketAddr::new(bind_address(m, pid1), port);
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            log::error!(
                "management endpoint: cannot listen on {addr}: {e}; change `[management] listen` \
                 (or `address`), running without the endpoint"
            );
            return None;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let live = Arc::new(Live::new(config));
    let shared = Arc::clone(&live);
    let control = Control { token: m.token.clone(), stop };
    let spawned = std::thread::Builder::new().name("nflet-mgmt".into()).spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => {
                    if let Err(e) = answer(stream, &shared, &control) {
                        log::debug!("management endpoint: {e}");
                    }
                }
                Err(e) => log::warn!("management endpoint: accept: {e}"),
            }
        }
    });
    if let Err(e) = spawned {
        log::error!("management endpoint: cannot start its thread: {e}; running without it");
        return None;
    }
    log::info!("management endpoint on http://{bound}/ (/status, /metrics, POST /shutdown)");
    Some((live, bound))
}

/// Largest request head read; longer ones get 431.
const MAX_HEAD: usize = 8 * 1024;

/// What state-changing requests may do, and the token they need.
struct Control {
    token: Option<String>,
    stop: Arc<AtomicBool>,
}

/// Reads one request from `stream` and writes the answer.
fn answer(mut stream: TcpStream, live: &Live, control: &Control) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let response = match parse_request(&head) {
        Ok(("GET", path)) => route(path, live),
        Ok((_, "/shutdown")) => shutdown(&head, control),
        Ok(_) => Response::text(405, "only GET (and POST /shutdown) are supported"),
        Err(r) => r,
    };
    stream.write_all(&response.to_bytes())?;
    stream.flush()
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: format!("{body}\n") }
    }

    /// Status line, headers and body, closing the connection.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
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

/// `POST /shutdown` with `Authorization: Bearer <token>`: stops the appliance cleanly (as
/// SIGTERM does; as PID 1 it then powers off).
fn shutdown(head: &[u8], control: &Control) -> Response {
    let Some(token) = &control.token else {
        return Response::text(403, "no `[management] token` is configured: state changes are disabled");
    };
    if bearer(head) != Some(token.as_str()) {
        return Response::text(401, "expected `Authorization: Bearer <[management] token>`");
    }
    log::info!("management endpoint: shutdown requested");
    control.stop.store(true, Ordering::Relaxed);
    Response::text(202, "stopping")
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
        return Err(Response::text(405, "only GET (and POST /shutdown) are supported"));
    }
    Ok((method, target.split(['?', '#']).next().unwrap_or(target)))
}

/// The response for `path`.
pub fn route(path: &str, live: &Live) -> Response {
    match path {
        "/status" => {
            Response { status: 200, content_type: "application/json", body: status_json(&live.view()) }
        }
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics(&live.view()),
        },
        _ => Response::text(404, "not found; try /status or /metrics"),
    }
}

/// `/status`.
pub fn status_json(v: &View) -> String {
    let ports: Vec<serde_json::Value> = v
        .ports
        .iter()
        .map(
            |p| serde_json::json!({ "name": p.name, "rx": p.rx_packets, "tx": p.tx_packets, "lost": p.lost }),
        )
        .collect();
    let chains: Vec<serde_json::Value> = v
        .chains
        .iter()
        .map(|c| serde_json::json!({ "name": c.name, "packets": c.packets, "dropped": c.dropped }))
        .collect();
    let drops: serde_json::Map<String, serde_json::Value> =
        v.drops.nonzero().map(|(r, n)| (r.name().to_string(), n.into())).collect();
    let doc = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (v.uptime_s * 1000.0).round() / 1000.0,
        "cores": v.cores,
        "ports": ports,
        "chains": chains,
        "drops": drops,
    });
    format!("{doc}\n")
}

/// `/metrics`: the Prometheus text exposition format.
pub fn metrics(v: &View) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
    };
    let label = |key: &str, value: &str| format!("{{{key}=\"{}\"}}", escape_label(value));
    family(
        "nflet_uptime_seconds",
        "gauge",
        "Seconds since the appliance started.",
        vec![(String::new(), format!("{:.3}", v.uptime_s))],
    );
    family("nflet_cores", "gauge", "Dataplane worker cores.", vec![(String::new(), v.cores.to_string())]);
    let per_port = |f: fn(&PortView) -> u64| -> Vec<(String, String)> {
        v.ports.iter().map(|p| (label("port", &p.name), f(p).to_string())).collect()
    };
    family(
        "nflet_port_rx_packets_total",
        "counter",
        "Frames received on the port.",
        per_port(|p| p.rx_packets),
    );
    family("nflet_port_rx_bytes_total", "counter", "Bytes received on the port.", per_port(|p| p.rx_bytes));
    family(
        "nflet_port_tx_packets_total",
        "counter",
        "Frames transmitted on the port.",
        per_port(|p| p.tx_packets),
    );
    family(
        "nflet_port_tx_bytes_total",
        "counter",
        "Bytes transmitted on the port.",
        per_port(|p| p.tx_bytes),
    );
    family(
        "nflet_port_lost_total",
        "counter",
        "Frames the port lost before nflet saw them.",
        per_port(|p| p.lost),
    );
    let per_chain = |f: fn(&ChainView) -> u64| -> Vec<(String, String)> {
        v.chains.iter().map(|c| (label("chain", &c.name), f(c).to_string())).collect()
    };
    family(
        "nflet_chain_packets_total",
        "counter",
        "Packets that entered the chain.",
        per_chain(|c| c.packets),
    );
    family("nflet_chain_dropped_total", "counter", "Packets the chain dropped.", per_chain(|c| c.dropped));
    family(
        "nflet_drops_total",
        "counter",
        "Packets dropped, by reason.",
        DropReason::ALL.iter().map(|r| (label("reason", r.name()), v.drops.get(*r).to_string())).collect(),
    );
    out
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{run, RunOptions};

    fn view() -> View {
        let mut drops = DropCounters::default();
        drops.count(DropReason::Truncated);
        View {
            uptime_s: 1.5,
            cores: 2,
            ports: vec![PortView {
                name: "in\"side".into(),
                rx_packets: 5,
                rx_bytes: 300,
                tx_packets: 4,
                tx_bytes: 240,
                lost: 1,
            }],
            chains: vec![ChainView { name: "out".into(), packets: 5, dropped: 1 }],
            drops,
        }
    }

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
        let text = String::from_utf8(Response::text(405, "x").to_bytes()).unwrap();
        assert!(text.contains("\r\nAllow: GET, POST\r\n"), "{text}");
    }

    #[test]
    fn shutdown_needs_the_token() {
        let stop = Arc::new(AtomicBool::new(false));
        let head = |auth: &str| format!("POST /shutdown HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n");
        let none = Control { token: None, stop: Arc::clone(&stop) };
        assert_eq!(shutdown(head("Authorization: Bearer anything-at-all").as_bytes(), &none).status, 403);
        let c = Control { token: Some("0123456789abcdef".into()), stop: Arc::clone(&stop) };
        for wrong in ["", "Authorization: Bearer 0123456789abcdeX", "Authorization: Basic 0123456789abcdef"] {
            assert_eq!(shutdown(head(wrong).as_bytes(), &c).status, 401, "{wrong}");
        }
        assert!(!stop.load(Ordering::Relaxed));
        assert_eq!(shutdown(head("authorization: Bearer 0123456789abcdef").as_bytes(), &c).status, 202);
        assert!(stop.load(Ordering::Relaxed));
    }

    #[test]
    fn status_is_json_with_ports_and_chains() {
        let doc: serde_json::Value = serde_json::from_str(&status_json(&view())).unwrap();
        assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["uptime_s"], 1.5);
        assert_eq!(doc["cores"], 2);
        assert_eq!(doc["ports"], serde_json::json!([{ "name": "in\"side", "rx": 5, "tx": 4, "lost": 1 }]));
        assert_eq!(doc["chains"], serde_json::json!([{ "name": "out", "packets": 5, "dropped": 1 }]));
        assert_eq!(doc["drops"], serde_json::json!({ "truncated": 1 }));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let m = metrics(&view());
        for line in [
            "# TYPE nflet_port_rx_packets_total counter",
            "nflet_port_rx_packets_total{port=\"in\\\"side\"} 5",
            "nflet_port_tx_bytes_total{port=\"in\\\"side\"} 240",
            "nflet_port_lost_total{port=\"in\\\"side\"} 1",
            "nflet_chain_dropped_total{chain=\"out\"} 1",
            "nflet_drops_total{reason=\"truncated\"} 1",
            "nflet_drops_total{reason=\"unknown_ethertype\"} 0",
            "nflet_uptime_seconds 1.500",
            "nflet_cores 2",
        ] {
            assert!(m.lines().any(|l| l == line), "missing `{line}` in:\n{m}");
        }
        // Every sample line: name{labels} value, value numeric.
        for l in m.lines().filter(|l| !l.starts_with('#')) {
            let value = l.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{l}");
        }
        assert_eq!(escape_label("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn binds_to_the_configured_address_else_loopback_or_all() {
        let mut m = Management {
            iface: "eth0".into(),
            address: None,
            gateway: None,
            listen: Some(8080),
            token: None,
        };
        assert_eq!(bind_address(&m, false), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(bind_address(&m, true), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        m.address = Some((Ipv4Addr::new(10, 0, 2, 15), 24));
        assert_eq!(bind_address(&m, true), IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)));
    }

    fn get(addr: SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: nflet\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }

    /// `nflet run` on the embedded default with `[management] listen`: the endpoint answers
    /// while the generator runs, with counters that move.
    #[test]
    fn the_endpoint_answers_during_a_run() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let text = format!(
            "{}\n[management]\nlisten = {port}\n",
            crate::config::EMBEDDED_DEFAULT.replace("rate_pps = 1000000", "rate_pps = 20000")
        );
        let cfg = Config::parse("t.toml", &text).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (live, addr) = serve(&cfg, false, Arc::clone(&stop)).unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
        let feed = |s: &Summary| live.update(s);
        std::thread::scope(|scope| {
            let runner = scope.spawn(|| {
                let opts = RunOptions { progress: Some(&feed), ..RunOptions::default() };
                run(&cfg, &opts, Arc::clone(&stop))
            });
            let start = Instant::now();
            let status = loop {
                if runner.is_finished() {
                    panic!("the run ended early: {:?}", runner.join().map(|r| r.map(|_| ())));
                }
                let (head, body) = get(addr, "/status");
                assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
                assert!(head.contains("Content-Type: application/json"), "{head}");
                assert!(head.contains("Connection: close"), "{head}");
                let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
                if doc["ports"][0]["rx"].as_u64().unwrap_or(0) > 0
                    || start.elapsed() > Duration::from_secs(20)
                {
                    break doc;
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            assert_eq!(status["ports"][0]["name"], "gen");
            assert_eq!(status["ports"][1]["name"], "sink");
            assert!(status["ports"][0]["rx"].as_u64().unwrap() > 0, "{status}");
            assert_eq!(status["chains"][0]["name"], "main");
            assert_eq!(status["cores"], 1);
            let (head, body) = get(addr, "/metrics");
            assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
            let rx = body
                .lines()
                .find_map(|l| l.strip_prefix("nflet_port_rx_packets_total{port=\"gen\"} "))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no gen rx in:\n{body}"));
            assert!(rx > 0, "{body}");
            assert!(body.contains("nflet_chain_packets_total{chain=\"main\"} "), "{body}");
            let (head, _) = get(addr, "/nope");
            assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{head}");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let summary = runner.join().unwrap().unwrap();
            assert!(summary.total.rx_total().packets >= rx);
        });
    }
}
