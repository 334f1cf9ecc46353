//! What the director answers: where a packet goes and what a new flowlet's state needs, the
//! decisions a tick returns for the caller to carry out, and the director's counters.

use nflet_nfs::flow::FlowKey;

use crate::flowlet::{FlowletStart, FlowletStats};
use crate::replicate::Replicas;
use crate::scaling::ScaleDecision;
use crate::units::{LogicalClock, Rate, WorkerId};

/// Where the worker assigned a new flowlet gets the flow's state from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// The flow's first flowlet: the state starts empty.
    Fresh,
    /// The worker processed the previous flowlet: the state is local.
    Local,
    /// The state was pushed to the worker proactively by `from`; it checks the clock rule and
    /// pulls only if lingering packets made the copy stale.
    Replica { from: WorkerId },
    /// The state must be pulled from `from`, the previous owner, before processing.
    Pull { from: WorkerId },
    /// The previous owner `failed`: the state is recovered from its output logger (SNF §6),
    /// which holds a copy as of the last packet the failed worker emitted.
    Recover { failed: WorkerId },
}

impl StateSource {
    /// The worker the state comes from when it has to move.
    pub fn moves_from(self) -> Option<WorkerId> {
        match self {
            StateSource::Replica { from } | StateSource::Pull { from } => Some(from),
            StateSource::Recover { failed } => Some(failed),
            StateSource::Fresh | StateSource::Local => None,
        }
    }
}

/// The decision taken at the first packet of a flowlet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowletAssignment {
    pub reason: FlowletStart,
    pub state: StateSource,
    /// The demand the flowlet was packed with.
    pub demand: Rate,
    /// No worker had room for it.
    pub overflow: bool,
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Steer {
    /// A tracked flow's packet: its worker, its logical clock (the state metadata the packet
    /// carries), and the assignment when the packet starts a flowlet (its clock is the
    /// flowlet's logical clock).
    ///
    /// Every packet also carries its flowlet's identity (`flowlet`: the clock of its first
    /// packet) and where the flowlet's state came from, so a worker that sees a later packet
    /// of a moved flowlet first (reordering) still knows to fetch the state.
    Flow {
        worker: WorkerId,
        clock: LogicalClock,
        start: Option<FlowletAssignment>,
        flowlet: LogicalClock,
        source: StateSource,
    },
    /// The flow table is full: steered by flow hash over the active workers, no state moves.
    Untracked { worker: WorkerId },
    /// No active worker (cannot happen with a validated config; counted).
    NoWorker,
}

impl Steer {
    pub fn worker(&self) -> Option<WorkerId> {
        match *self {
            Steer::Flow { worker, .. } | Steer::Untracked { worker } => Some(worker),
            Steer::NoWorker => None,
        }
    }
}

/// A flow's state is to be pushed proactively (SNF §5.2.1) from its owner to these workers,
/// tagged with the clock of the flow's last packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub flow: FlowKey,
    pub from: WorkerId,
    pub to: Replicas,
    pub clock: LogicalClock,
}

/// What [`crate::director::Director::tick`] asks the caller to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Scale(ScaleDecision),
    Replicate(Replication),
}

/// Running totals; a test asserts exact deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct DirectorCounters {
    pub packets: u64,
    pub flowlets: u64,
    pub new_flows: u64,
    pub idle_starts: u64,
    pub size_starts: u64,
    pub realloc_starts: u64,
    pub failover_starts: u64,
    pub state_local: u64,
    pub state_replica: u64,
    pub state_pull: u64,
    pub state_recover: u64,
    pub overflows: u64,
    pub untracked: u64,
    pub no_worker: u64,
    pub replications: u64,
    pub launches: u64,
    pub retirements: u64,
    /// Workers that started draining (`drain_utilisation`); each ends retired or taken back.
    pub drains: u64,
    pub failures: u64,
}

/// A read-only view of a tracked flow (tests, management).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowView {
    pub owner: WorkerId,
    pub clock: LogicalClock,
    pub flowlet: FlowletStats,
    pub flowlet_active: bool,
    pub demand: Rate,
    /// Replication targets holding the flow's current state.
    pub replicas: Option<Replicas>,
}
