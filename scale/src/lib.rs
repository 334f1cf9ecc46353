#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! Scale-out for nflet: the director's decisions and the worker-side state rules, with no I/O.
//!
//! The design follows SNF (Singhvi, Khalid, Akella, Banerjee, "SNF: Serverless Network
//! Functions", 2020), §3–§5:
//! a director splits each flow into *flowlets* (§4.1, Pseudocode 1), estimates each new
//! flowlet's demand, packs it onto the active workers in ID order with a state-aware score
//! (§4.2, §5.2.2), asks for a worker to be launched before all are saturated and retires
//! workers that stayed idle, chooses where a flow's state is pushed proactively once the flow
//! has been idle for half the flowlet timeout (§5.2.1, Pseudocode 2) and tags every packet with
//! a per-flow logical clock so that no worker updates stale state (§5.3).
//!
//! Everything here is a pure function of its inputs and of the time passed in: the director
//! returns [`director::Steer`] values and [`director::Decision`]s and performs none of them. The
//! packet plumbing (VXLAN steering, state pull/push between workers, the launcher) builds on
//! this crate.

pub mod assign;
pub mod clock;
pub mod config;
pub mod decision;
pub mod demand;
pub mod director;
pub mod eval;
pub mod flowlet;
pub mod load;
pub mod replicate;
pub mod scaling;
pub mod units;
pub mod wire;
