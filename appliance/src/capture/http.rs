//! The capture requests of the management endpoint. The endpoint checks the bearer token of
//! the state-changing ones and of the file download before calling in here.
//!
//! - `POST /capture?point=rx:a&proto=udp&host=10.0.0.2&port=53&count=100&seconds=10&rate=1000`
//!   starts a capture: `201` with JSON naming the file, `400` saying what was wrong with the
//!   request, `409` while another capture runs;
//! - `POST /capture/stop` ends the running capture (`202`; `409` when none runs);
//! - `GET /capture`: JSON state of the running or last capture (`state` is `running`,
//!   `finished` or `none`; `written`, `capture_skipped`, `ended` = count, duration, stopped or
//!   write_error);
//! - `GET /capture/file`: the last finished capture's pcap file.

use std::sync::Arc;

use super::filter::Spec;
use super::{Hub, Report, StartError};
use crate::mgmt::Response;

fn json(status: u16, value: &serde_json::Value) -> Response {
    Response { status, content_type: "application/json", body: format!("{value}\n") }
}

fn report_json(r: Option<&Report>) -> serde_json::Value {
    match r {
        None => serde_json::json!({ "state": "none" }),
        Some(r) => serde_json::json!({
            "state": if r.ended.is_some() { "finished" } else { "running" },
            "id": r.id,
            "file": r.file,
            "point": r.point,
            "filter": r.filter,
            "written": r.written,
            "capture_skipped": r.skipped,
            "ended": r.ended.map(|e| e.name()),
            "elapsed_ms": r.elapsed_ms,
        }),
    }
}

/// `POST /capture?...`.
pub fn start(hub: &Arc<Hub>, query: &str) -> Response {
    let spec = match Spec::parse(query, &hub.ports, &hub.chains()) {
        Ok(s) => s,
        Err(e) => return Response::text(400, &e),
    };
    match hub.start(spec) {
        Ok(s) => json(201, &report_json(Some(&s.report()))),
        Err(StartError::Busy(id)) => Response::text(
            409,
            &format!("capture {id} is running; POST /capture/stop first (or wait for its limits)"),
        ),
        Err(StartError::Io(e)) => Response::text(500, &e),
    }
}

/// `POST /capture/stop`.
pub fn stop(hub: &Hub) -> Response {
    if hub.stop() {
        Response::text(202, "stopping")
    } else {
        Response::text(409, "no capture is running")
    }
}

/// `GET /capture`.
pub fn state(hub: &Hub) -> Response {
    json(200, &report_json(hub.session().map(|s| s.report()).as_ref()))
}

/// `GET /capture/file`: the finished capture's file and its name, or the error response.
pub fn file(hub: &Hub) -> Result<(std::fs::File, String), Response> {
    let Some(s) = hub.session() else {
        return Err(Response::text(404, "no capture has been taken; start one with POST /capture"));
    };
    if s.report().ended.is_none() {
        return Err(Response::text(409, "the capture is still running; POST /capture/stop or wait for it"));
    }
    std::fs::File::open(&s.path)
        .map(|f| (f, s.file.clone()))
        .map_err(|e| Response::text(404, &format!("{}: {e}", s.path.display())))
}
