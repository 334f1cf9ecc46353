//! Raw bindings to DPDK 22.11 as shipped by Debian (`libdpdk-dev`), linked statically, and
//! a small C shim (`csrc/shim.c`) exporting DPDK's static-inline fast-path functions
//! (`nflet_rx_burst`, `nflet_tx_burst`, mbuf accessors, `rte_errno`).
//!
//! Nothing here is safe to call directly: nflet's `port::dpdk` module is the one safe wrapper
//! over these items and the only other place in the product with `unsafe` for DPDK.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
