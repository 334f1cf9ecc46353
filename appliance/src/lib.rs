#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! The `nflet` appliance: configuration, ports, the per-core run-to-completion dataplane and
//! the command-line front end. Network functions themselves live in `nflet-nfs`.

pub mod bench;
pub mod billing;
pub mod capture;
pub mod config;
pub mod dataplane;
pub mod eval_pcap;
pub mod mgmt;
pub mod observe;
pub mod port;
pub mod report;
pub mod scaleout;
pub mod top;
pub mod traffic;
