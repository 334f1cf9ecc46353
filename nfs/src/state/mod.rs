//! State for network functions, with the scopes and consistency models of the papers
//! (Serpens §III-B/§III-C, SNF §3):
//!
//! | scope | access | consistency | type |
//! |---|---|---|---|
//! | per-flow | read/write | local to the core that owns the flow | [`FlowTable`] |
//! | global | read | immutable, built off the fast path, swapped between bursts | `Arc<T>` |
//! | global | write | **release**: split into per-core shares, rebalanced when one runs dry | [`Release`] |
//! | global | write | **eventual**: per-core deltas merged on a timer | [`Eventual`] |
//! | global | read (write on rebalance) | which core's share holds each unit, for steering | [`OwnerMap`] |
//!
//! Every per-flow table is carved from the core's [`Arena`]; nothing here is shared on the
//! per-packet path except through the explicit, rare synchronisation points of [`Release`]
//! (a core's share ran dry, or another core asked for help) and [`Eventual`] (the merge timer).

mod arena;
mod eventual;
pub mod migrate;
mod owners;
mod persist;
mod release;
mod table;
pub mod wire;

pub use arena::{Arena, Backing, Region, StateError};
pub use eventual::{Delta, Eventual};
pub use owners::OwnerMap;
pub use persist::{StateDir, LAYOUT_VERSION};
pub use release::{Release, Splittable};
pub use table::{
    Entry, FlowIdx, FlowTable, FullPolicy, SlotHeader, TableFull, TableSpec, TableStats, TableView,
};

#[cfg(test)]
mod persist_tests;
#[cfg(test)]
mod table_tests;

/// Scope and access an NF declares for a piece of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateDecl {
    PerFlow,
    GlobalRead,
    GlobalWriteRelease,
    GlobalWriteEventual,
}

impl StateDecl {
    pub fn name(self) -> &'static str {
        match self {
            StateDecl::PerFlow => "per_flow",
            StateDecl::GlobalRead => "global_read",
            StateDecl::GlobalWriteRelease => "global_write_release",
            StateDecl::GlobalWriteEventual => "global_write_eventual",
        }
    }
}
