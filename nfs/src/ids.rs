//! Identifier and unit newtypes shared by the whole dataplane.

use serde::Deserialize;

/// A port of the appliance, in configuration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Deserialize)]
pub struct PortId(pub u16);

/// A worker core of the appliance (index into the configured core list, not the CPU number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct CoreId(pub u16);

/// A chain of network functions, in configuration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChainId(pub u16);

/// A branch label set by an NF verdict and consumed by a `distribute` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Label(pub u16);

/// This appliance's place among the instances of a scaled-out deployment: instance `id` of
/// `count` running the same configuration behind a director. Resources the instances must
/// not hand out twice (NAT public ports) are split by instance first, then by core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instance {
    pub id: u16,
    pub count: u16,
}

impl Default for Instance {
    /// A stand-alone appliance: instance 0 of 1.
    fn default() -> Self {
        Instance { id: 0, count: 1 }
    }
}

impl Instance {
    /// Instance `id` of `count`; `None` unless `id < count`.
    pub fn new(id: u16, count: u16) -> Option<Instance> {
        (id < count).then_some(Instance { id, count })
    }
}

/// Packets (a count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Packets(pub u64);

/// Bytes (a count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Bytes(pub u64);

impl std::fmt::Display for PortId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "port{}", self.0)
    }
}

impl std::fmt::Display for CoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "core{}", self.0)
    }
}
