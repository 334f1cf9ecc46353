//! The management endpoint: a small HTTP/1.1 server on the management NIC that reports what
//! the appliance is doing.
//!
//! - `GET /status`: JSON — version, uptime, cores, per-port rx/tx/lost, per-chain packets and
//!   drops, drops by reason;
//! - `GET /metrics`: the counters in the Prometheus text format, per port, chain (with its
//!   tenant and CPU time), core (busy time and ratio, a histogram of burst processing times),
//!   NF instance (packets, drops by reason, its own counters) and state table (occupancy,
//!   refusals, evictions, expiries);
//! - `POST /capture?...`, `POST /capture/stop`, `GET /capture`, `GET /capture/file`: packet
//!   capture to a pcap file (see [`crate::capture::http`]);
//! - `GET /`: a status page (HTML and a little JavaScript, nothing loaded from elsewhere) with
//!   live charts of throughput and drops per chain, drawn from `/status` once a second.
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

use nflet_nfs::drop::DropCounters;

pub mod client;
pub mod http;
pub mod render;

pub use self::http::{bearer, parse_request, query, Response, MAX_HEAD};
pub use self::render::{metrics, status_json};

use crate::capture::Hub;
use crate::config::{Config, Management};
use crate::dataplane::reload::ReloadRequests;
use crate::dataplane::stats::BurstHistogram;
use crate::dataplane::Summary;
use nflet_nfs::state::TableStats;

/// The status page served at `/`.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// The latest counters, shared between the run loop (writer) and the endpoint (reader).
#[derive(Debug)]
pub struct Live {
    started: Instant,
    cores: usize,
    /// Where each port's link state is read, when asked.
    links: Vec<crate::port::LinkSource>,
    view: Mutex<View>,
    /// Per core, the busy time at the start of the current busy-ratio window.
    window: Mutex<(Instant, Vec<u64>)>,
    /// Packet capture, driven from the endpoint and fed by the cores' taps.
    pub capture: Arc<Hub>,
}

/// How long the busy ratio is averaged over.
const BUSY_WINDOW: Duration = Duration::from_secs(1);

/// What the endpoint renders: the merged totals of every core, and each core's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub uptime_s: f64,
    pub cores: usize,
    pub ports: Vec<PortView>,
    pub chains: Vec<ChainView>,
    pub drops: DropCounters,
    pub per_core: Vec<CoreView>,
    pub nfs: Vec<NfView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortView {
    pub name: String,
    /// `up`, `down` or `virtual` ([`LinkSource::state`](crate::port::LinkSource::state)), read per request.
    pub link: &'static str,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub lost: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainView {
    pub name: String,
    pub tenant: String,
    pub packets: u64,
    pub bytes: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// CPU time spent inside the chain, all cores (what billing charges).
    pub cpu_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CoreView {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub busy_ns: u64,
    /// Share of the last second spent on bursts with packets (0..1).
    pub busy_ratio: f64,
    pub polls: u64,
    pub busy_polls: u64,
    pub steered_in: u64,
    pub steered_out: u64,
    pub bursts: BurstHistogram,
}

/// One NF instance on one core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NfView {
    pub name: String,
    pub kind: &'static str,
    pub core: usize,
    pub packets: u64,
    pub drops: DropCounters,
    /// The NF's own counters (NAT pool use, rule hits, ...).
    pub counters: Vec<(&'static str, u64)>,
    pub tables: Vec<(String, TableStats)>,
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
                .map(|c| ChainView { name: c.name.clone(), tenant: c.tenant.clone(), ..ChainView::default() })
                .collect(),
            ..View::default()
        };
        Live {
            started: Instant::now(),
            cores: config.settings.cores,
            links: config.ports.iter().map(|p| crate::port::LinkSource::of(&p.kind)).collect(),
            view: Mutex::new(view),
            window: Mutex::new((Instant::now(), Vec::new())),
            capture: Arc::new(Hub::new(config)),
        }
    }

    /// Takes the run loop's latest merged counters.
    pub fn update(&self, s: &Summary) {
        self.capture.follow_chains(&s.chain_names);
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
                    link: "",
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
            .enumerate()
            .map(|(i, (name, c))| ChainView {
                name: name.clone(),
                tenant: s.chain_tenants.get(i).cloned().unwrap_or_else(|| name.clone()),
                packets: c.packets,
                bytes: c.bytes,
                forwarded: c.forwarded,
                dropped: c.dropped,
                cpu_ns: t.chain_cpu_ns.get(i).copied().unwrap_or(0),
            })
            .collect();
        let ratios = self.busy_ratios(s);
        let per_core = s
            .cores
            .iter()
            .enumerate()
            .map(|(i, c)| CoreView {
                rx_packets: c.rx_total().packets,
                tx_packets: c.tx_total().packets,
                busy_ns: c.busy_ns,
                busy_ratio: ratios.get(i).copied().unwrap_or(0.0),
                polls: c.polls,
                busy_polls: c.busy_polls,
                steered_in: c.steered_in,
                steered_out: c.steered_out,
                bursts: c.bursts,
            })
            .collect();
        let nfs = s
            .nfs
            .iter()
            .enumerate()
            .flat_map(|(core, list)| {
                list.iter().map(move |(name, kind, stats, report)| NfView {
                    name: name.clone(),
                    kind,
                    core,
                    packets: stats.packets,
                    drops: stats.drops,
                    counters: report.counters.clone(),
                    tables: report.tables.iter().map(|(n, _, t)| (n.clone(), *t)).collect(),
                })
            })
            .collect();
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.ports = ports;
        v.chains = chains;
        v.drops = t.drops;
        v.per_core = per_core;
        v.nfs = nfs;
    }

    /// Each core's busy share over the window that just closed; the previous ratios while a
    /// window is still open.
    fn busy_ratios(&self, s: &Summary) -> Vec<f64> {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = w.0.elapsed();
        let busy: Vec<u64> = s.cores.iter().map(|c| c.busy_ns).collect();
        if w.1.is_empty() {
            *w = (Instant::now(), busy);
            return Vec::new();
        }
        if elapsed < BUSY_WINDOW {
            let v = self.view.lock().unwrap_or_else(|p| p.into_inner());
            return v.per_core.iter().map(|c| c.busy_ratio).collect();
        }
        let span = elapsed.as_nanos().max(1) as f64;
        let ratios = busy
            .iter()
            .zip(w.1.iter())
            .map(|(now, then)| (now.saturating_sub(*then) as f64 / span).min(1.0))
            .collect();
        *w = (Instant::now(), busy);
        ratios
    }

    /// The counters now, with the uptime.
    pub fn view(&self) -> View {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.uptime_s = self.started.elapsed().as_secs_f64();
        v.cores = self.cores;
        for (p, link) in v.ports.iter_mut().zip(&self.links) {
            p.link = link.state();
        }
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
pub fn serve(
    config: &Config,
    pid1: bool,
    stop: Arc<AtomicBool>,
    reload: Arc<ReloadRequests>,
) -> Option<(Arc<Live>, SocketAddr)> {
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
    let control = Control { token: m.token.clone(), stop, reload };
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
    log::info!("management endpoint on http://{bound}/ (/status, /metrics, /capture, POST /shutdown)");
    Some((live, bound))
}

/// What state-changing requests may do, and the token they need.
struct Control {
    token: Option<String>,
    stop: Arc<AtomicBool>,
    reload: Arc<ReloadRequests>,
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
        Ok(("GET", "/capture/file")) => match authorized(&head, control) {
            Err(r) => r,
            Ok(()) => match crate::capture::http::file(&live.capture) {
                Ok((file, name)) => return send_file(stream, file, &name),
                Err(r) => r,
            },
        },
        Ok(("GET", "/capture")) => crate::capture::http::state(&live.capture),
        Ok(("GET", path)) => route(path, live),
        Ok((_, "/shutdown")) => shutdown(&head, control),
        Ok((_, "/capture")) => match authorized(&head, control) {
            Err(r) => r,
            Ok(()) => crate::capture::http::start(&live.capture, query(&head)),
        },
        Ok((_, "/capture/stop")) => match authorized(&head, control) {
            Err(r) => r,
            Ok(()) => crate::capture::http::stop(&live.capture),
        },
        Ok((_, "/reload")) => reload(&head, control),
        Ok(_) => Response::text(405, "POST is for /shutdown, /reload, /capture and /capture/stop"),
        Err(r) => r,
    };
    stream.write_all(&response.to_bytes())?;
    stream.flush()
}

/// Streams a pcap file as the response body.
fn send_file(mut stream: TcpStream, mut file: std::fs::File, name: &str) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.tcpdump.pcap\r\nContent-Length: {len}\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\nConnection: close\r\n\r\n"
    )?;
    std::io::copy(&mut file, &mut stream)?;
    stream.flush()
}

/// `POST /shutdown` with `Authorization: Bearer <token>`: stops the appliance cleanly (as
/// SIGTERM does; as PID 1 it then powers off).
fn shutdown(head: &[u8], control: &Control) -> Response {
    if let Err(refused) = authorized(head, control) {
        return refused;
    }
    log::info!("management endpoint: shutdown requested");
    control.stop.store(true, Ordering::Relaxed);
    Response::text(202, "stopping")
}

/// `POST /reload` with the token: loads the configuration file again and applies it live
/// (see [`reload`](crate::dataplane::reload)); answers with what changed, or why nothing did.
fn reload(head: &[u8], control: &Control) -> Response {
    if let Err(refused) = authorized(head, control) {
        return refused;
    }
    log::info!("management endpoint: reload requested");
    match control.reload.request().recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(note)) => Response::text(200, &note),
        Ok(Err(e)) => Response::text(400, &format!("reload refused, the running configuration is kept: {e}")),
        Err(_) => Response::text(504, "the dataplane did not answer the reload request"),
    }
}

/// State changes need `Authorization: Bearer <[management] token>`.
fn authorized(head: &[u8], control: &Control) -> Result<(), Response> {
    let Some(token) = &control.token else {
        return Err(Response::text(403, "no `[management] token` is configured: state changes are disabled"));
    };
    if bearer(head) != Some(token.as_str()) {
        return Err(Response::text(401, "expected `Authorization: Bearer <[management] token>`"));
    }
    Ok(())
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
        "/" => {
            Response { status: 200, content_type: "text/html; charset=utf-8", body: STATUS_PAGE.to_string() }
        }
        _ => Response::text(404, "not found; try /, /status, /metrics or /capture"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::{run, RunOptions};

    #[test]
    fn shutdown_needs_the_token() {
        let stop = Arc::new(AtomicBool::new(false));
        let head = |auth: &str| format!("POST /shutdown HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n");
        let none = Control { token: None, stop: Arc::clone(&stop), reload: Arc::default() };
        assert_eq!(shutdown(head("Authorization: Bearer anything-at-all").as_bytes(), &none).status, 403);
        let c = Control {
            token: Some("0123456789abcdef".into()),
            stop: Arc::clone(&stop),
            reload: Arc::default(),
        };
        for wrong in ["", "Authorization: Bearer 0123456789abcdeX", "Authorization: Basic 0123456789abcdef"] {
            assert_eq!(shutdown(head(wrong).as_bytes(), &c).status, 401, "{wrong}");
        }
        assert!(!stop.load(Ordering::Relaxed));
        assert_eq!(shutdown(head("authorization: Bearer 0123456789abcdef").as_bytes(), &c).status, 202);
        assert!(stop.load(Ordering::Relaxed));
    }

    #[test]
    fn binds_to_the_configured_address_else_loopback_or_all() {
        let mut m = Management {
            iface: "eth0".into(),
            address: None,
            gateway: None,
            listen: Some(8080),
            token: None,
            capture_dir: crate::capture::DEFAULT_DIR.into(),
            dhcp: false,
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
        let (live, addr) = serve(&cfg, false, Arc::clone(&stop), Arc::default()).unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
        let feed = |s: &Summary| live.update(s);
        /// Stops the run however the test ends, so a failed assertion fails instead of hanging.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|scope| {
            let _stop = StopOnDrop(Arc::clone(&stop));
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
            assert_eq!(status["ports"][0]["link"], "virtual");
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
            let sample = |prefix: &str| -> f64 {
                body.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("no `{prefix}` in:\n{body}"))
            };
            assert!(sample("nflet_chain_packets_total{chain=\"main\",tenant=\"main\"}") > 0.0, "{body}");
            assert!(sample("nflet_chain_cpu_seconds_total{chain=\"main\",tenant=\"main\"}") > 0.0, "{body}");
            assert!(sample("nflet_core_rx_packets_total{core=\"0\"}") > 0.0, "{body}");
            assert!(sample("nflet_burst_duration_seconds_count{core=\"0\"}") > 0.0, "{body}");
            let ratio = sample("nflet_core_busy_ratio{core=\"0\"}");
            assert!((0.0..=1.0).contains(&ratio), "{body}");
            // The embedded default's firewall: per-instance packets and its connection table.
            assert!(body.lines().any(|l| l.starts_with("nflet_nf_packets_total{nf=")), "{body}");
            assert!(body.lines().any(|l| l.starts_with("nflet_table_capacity{nf=")), "{body}");
            let (head, _) = get(addr, "/nope");
            assert!(head.starts_with("HTTP/1.1 404 Not Found"), "{head}");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let summary = runner.join().unwrap().unwrap();
            assert!(summary.total.rx_total().packets >= rx);
        });
    }
}
