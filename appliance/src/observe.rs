//! What watches and steers a running appliance from outside the fast path: the management
//! endpoint's live counters, the usage ledger, and live reload requests (SIGHUP and
//! `POST /reload`). The first two are fed the merged counters the run loop's main thread
//! gathers about ten times a second; the run loop polls the third.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::billing::Ledger;
use crate::config::Config;
use crate::dataplane::reload::ReloadRequests;
use crate::dataplane::Summary;
use crate::mgmt::Live;

#[derive(Debug)]
pub struct Observers {
    /// The endpoint's counters and where it listens, when it runs.
    pub endpoint: Option<(Arc<Live>, SocketAddr)>,
    ledger: Option<Mutex<Ledger>>,
    /// Live reload requests, for [`RunOptions::reload`](crate::dataplane::RunOptions).
    pub reload: Arc<ReloadRequests>,
}

impl Observers {
    /// Starts the endpoint and the ledger that `config` asks for. `pid1`: see
    /// [`bind_address`](crate::mgmt::bind_address); `stop` is raised by `POST /shutdown`.
    pub fn start(config: &Config, pid1: bool, stop: Arc<AtomicBool>) -> Result<Observers, String> {
        let ledger = match &config.billing {
            Some(b) => Some(Mutex::new(Ledger::new(b)?)),
            None => None,
        };
        let reload = Arc::new(ReloadRequests::default());
        if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload.signal)) {
            log::warn!("cannot install a SIGHUP handler ({e}); reload through the endpoint only");
        }
        let endpoint = crate::mgmt::serve(config, pid1, stop, Arc::clone(&reload));
        Ok(Observers { endpoint, ledger, reload })
    }

    /// Packet capture for the dataplane's taps, when the endpoint runs.
    pub fn capture(&self) -> Option<Arc<crate::capture::Hub>> {
        self.endpoint.as_ref().map(|(live, _)| Arc::clone(&live.capture))
    }

    /// True when something wants the counters during the run.
    pub fn any(&self) -> bool {
        self.endpoint.is_some() || self.ledger.is_some()
    }

    /// Hands over the latest counters.
    pub fn feed(&self, s: &Summary) {
        if let Some((live, _)) = &self.endpoint {
            live.update(s);
        }
        if let Some(l) = &self.ledger {
            l.lock().unwrap_or_else(|p| p.into_inner()).observe(s);
        }
    }

    /// The run is over: the final counters, and the last usage record.
    pub fn finish(&self, s: &Summary) {
        if let Some((live, _)) = &self.endpoint {
            live.update(s);
        }
        if let Some(l) = &self.ledger {
            l.lock().unwrap_or_else(|p| p.into_inner()).finish(s);
        }
    }
}
