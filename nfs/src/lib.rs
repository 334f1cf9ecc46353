#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
//! nflet's network functions and everything they need, with no I/O: packet views and the
//! ingress parser, the NF programming model (verdicts, bursts, state tables with declared
//! scope and consistency), chains, and the network functions themselves.
//!
//! Nothing in this crate touches a NIC, a file or the system clock, so every NF is tested
//! with plain byte buffers and a virtual clock.

pub mod addr;
pub mod chain;
pub mod drop;
pub mod flow;
pub mod frame;
pub mod functions;
pub mod ids;
pub mod migration;
pub mod nf;
pub mod packet;
pub mod rng;
pub mod state;
pub mod time;

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod migration_tests;

#[cfg(test)]
pub(crate) mod testutil;
