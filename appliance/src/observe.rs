//! What watches a running appliance from outside the fast path: the management endpoint's
//! live counters and the usage ledger. Both are fed the merged counters the run loop's main
//! thread gathers about ten times a second.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::billing::Ledger;
use crate::config::Config;
use crate::dataplane::Summary;
use crate::mgmt::Live;

#[derive(Debug)]
pub struct Observers {
    /// The endpoint's counters and where it listens, when it runs.
    pub endpoint: Option<(Arc<Live>, SocketAddr)>,
    ledger: Option<Mutex<Ledger>>,
}

impl Observers {
    /// Starts the endpoint and the ledger that `config` asks for. `pid1`: see
    /// [`bind_address`](crate::mgmt::bind_address); `stop` is raised by `POST /shutdown`.
    pub fn start(config: &Config, pid1: bool, stop: Arc<AtomicBool>) -> Result<Observers, String> {
        let ledger = match &config.billing {
            Some(b) => Some(Mutex::new(Ledger::new(b, config)?)),
            None => None,
        };
        Ok(Observers { endpoint: crate::mgmt::serve(config, pid1, stop), ledger })
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
