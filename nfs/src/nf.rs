//! The NF programming model.
//!
//! A network function is a Rust type implementing [`NetworkFunction`]: it is built once per
//! core from its configuration ([`NetworkFunction::init`]), creating its state through the
//! [`InitCtx`] with a declared scope, and then sees bursts of packets
//! ([`NetworkFunction::process`], or one packet at a time through
//! [`NetworkFunction::process_packet`] and the default burst wrapper). For every packet it
//! returns a [`Verdict`]. NFs see bytes and parsed metadata, never a NIC buffer type, so each
//! one is tested with plain `Vec<u8>` frames and a virtual clock.

use crate::frame::Frame;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use crate::drop::DropReason;
use crate::flow::FlowKey;
use crate::ids::{CoreId, Instance, Label, PortId};
use crate::packet::Meta;
use crate::state::{Arena, StateDecl, StateError, TableStats};
use crate::time::Nanos;

/// What happens to a packet after an NF has seen it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verdict {
    /// Go on to the next step of the chain.
    #[default]
    Continue,
    /// Go on, tagged with a label for the next `distribute` step.
    Label(Label),
    /// Leave the chain now and transmit on this port.
    Out(PortId),
    /// Drop, counted under this reason.
    Drop(DropReason),
}

/// Per-burst context: the time and the core. Passed in, so NFs never read a clock themselves.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now: Nanos,
    pub core: CoreId,
}

/// A burst as an NF sees it: the frames, their metadata and verdicts, and the indices of the
/// packets this NF must process (those still active at its position in the chain).
#[derive(Debug)]
pub struct Burst<'a, F> {
    pub frames: &'a mut [F],
    pub metas: &'a mut [Meta],
    pub verdicts: &'a mut [Verdict],
    pub active: &'a [u16],
}

impl<F: Frame> Burst<'_, F> {
    /// Calls `f` on every active packet and records its verdict.
    #[inline]
    pub fn for_each(&mut self, mut f: impl FnMut(&mut [u8], &mut Meta) -> Verdict) {
        for &i in self.active {
            let i = usize::from(i);
            if let (Some(frame), Some(meta), Some(v)) =
                (self.frames.get_mut(i), self.metas.get_mut(i), self.verdicts.get_mut(i))
            {
                *v = f(frame.as_mut(), meta);
            }
        }
    }
}

/// An error building an NF from its configuration.
#[derive(Debug)]
pub enum NfError {
    /// A parameter is invalid; `key` is its path inside the NF's table.
    Param { key: String, detail: String },
    /// The parameters do not deserialize (message from the config parser).
    Parse(String),
    /// State could not be created.
    State(StateError),
    /// No NF of this kind is compiled in.
    UnknownKind { kind: String, known: &'static [&'static str] },
}

impl std::fmt::Display for NfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NfError::Param { key, detail } => write!(f, "`{key}`: {detail}"),
            NfError::Parse(msg) => f.write_str(msg),
            NfError::State(e) => write!(f, "{e}"),
            NfError::UnknownKind { kind, known } => {
                write!(f, "unknown NF kind `{kind}`; compiled-in kinds: {}", known.join(", "))
            }
        }
    }
}

impl std::error::Error for NfError {}

impl From<StateError> for NfError {
    fn from(e: StateError) -> Self {
        NfError::State(e)
    }
}

/// Why per-flow state could not be imported ([`NetworkFunction::import_flow`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportError {
    /// The bytes do not parse: too short, trailing bytes, or a value out of range; names the
    /// field.
    Malformed(&'static str),
    /// This NF kind does not migrate per-flow state.
    Unsupported,
    /// A table has no room for the state.
    Full,
    /// The record was written by another NF kind (its tag is `got`).
    WrongKind { got: u8, want: u8 },
    /// The record's format version is not the one this build reads.
    Version { got: u8, want: u8 },
    /// The state refers to configuration this instance does not have (a pool address, a
    /// rule, a backend): the exporter ran another configuration.
    Config(&'static str),
    /// Pipeline: no chain with this index.
    NoChain(usize),
    /// Pipeline: a record for an NF index that is not a step of the chain.
    NotInChain(u16),
    /// Pipeline: a record for an NF (of this kind) that does not migrate per-flow state.
    NotMigrating(&'static str),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Malformed(what) => write!(f, "malformed flow state: bad or missing {what}"),
            ImportError::Unsupported => f.write_str("this NF does not migrate per-flow state"),
            ImportError::Full => f.write_str("no room for the flow's state (table full)"),
            ImportError::WrongKind { got, want } => {
                write!(f, "flow state of another NF kind (tag {got}, expected {want})")
            }
            ImportError::Version { got, want } => {
                write!(f, "flow state format version {got}, this build reads version {want}")
            }
            ImportError::Config(what) => {
                write!(f, "flow state does not fit this instance's configuration ({what})")
            }
            ImportError::NoChain(c) => write!(f, "no chain {c} in the pipeline"),
            ImportError::NotInChain(n) => write!(f, "flow state for NF {n}, which is not in the chain"),
            ImportError::NotMigrating(kind) => {
                write!(f, "flow state for a `{kind}` NF, which does not migrate per-flow state")
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// A network function.
pub trait NetworkFunction: Send + Sized + 'static {
    /// The name used for `kind = "..."` in the configuration.
    const KIND: &'static str;
    /// Parameters from the NF's configuration table.
    type Config: serde::de::DeserializeOwned;

    /// Builds the NF for one core. Called on every core, in core order, before traffic flows.
    fn init(config: &Self::Config, rt: &mut InitCtx<'_>) -> Result<Self, NfError>;

    /// Processes one packet. NFs that gain from seeing the whole burst override
    /// [`NetworkFunction::process`] instead.
    fn process_packet(&mut self, ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict;

    /// Processes the active packets of a burst.
    #[inline]
    fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
        burst.for_each(|frame, meta| self.process_packet(ctx, frame, meta));
    }

    /// Ingress steering: the core that must run this frame's chain because it holds the state
    /// the frame needs (the NAT: the core owning the public port a reply is addressed to).
    ///
    /// On a multi-core appliance the dataplane calls it on the receiving core, after parsing
    /// and before any chain runs, for every frame entering a chain that holds an NF with
    /// [`NetworkFunction::STEERS`], whatever the port's own flow spreading (RSS or kernel
    /// fanout cannot know where NF state lives); another core's answer moves the frame to that
    /// core, where the whole chain then runs. `None` leaves the frame to the port's ordinary
    /// steering. It runs for every such frame, on any core, with shared access: keep it a few
    /// loads, with an early out for frames it has no opinion on.
    #[inline]
    fn steer(&self, _meta: &Meta, _frame: &[u8]) -> Option<CoreId> {
        None
    }

    /// True when [`NetworkFunction::steer`] may return a core (so chains without such an NF
    /// pay nothing for steering).
    const STEERS: bool = false;

    /// Called once on every instance after the instances of *every* core exist, before
    /// traffic flows: the moment to make global state agree with per-flow state re-attached
    /// from a state directory (hitless restart; the NAT takes the public ports of restored
    /// mappings out of its pool and records their owning core).
    fn after_init(&mut self) {}

    /// Burst-boundary duties: sweeping idle entries, merging eventual state. Keep it short.
    fn housekeeping(&mut self, _ctx: &Ctx) {}

    /// Counters and table statistics for metrics and summaries.
    fn report(&self, _out: &mut Report) {}

    /// Appends this NF's state for `flow` to `out` in its own format; returns false
    /// (appending nothing) when it holds no state for the flow.
    ///
    /// `flow` is the director's key: the direction-normalised 5-tuple of the packets as they
    /// *enter* the chain (for a NAT'd outbound connection the inside tuple, for a
    /// port-forwarded inbound one the public tuple). `&mut self`: an NF may mark the state as
    /// moved away (the NAT keeps a moved mapping's port reserved); a runtime abandoning the
    /// move imports the same bytes back here, which makes the state live again. Deadlines
    /// travel as time left, never as absolute times (`state::wire`).
    fn export_flow(&mut self, _flow: &FlowKey, _ctx: &Ctx, _out: &mut Vec<u8>) -> bool {
        false
    }

    /// [`NetworkFunction::export_flow`] for a *copy*: the same bytes, but the state stays live
    /// here (a proactive replica, an output logger's record) and is not marked moved. The
    /// default exports; an NF whose export marks its state overrides it (the NAT).
    fn copy_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
        self.export_flow(flow, ctx, out)
    }

    /// Installs state exported by [`NetworkFunction::export_flow`] of the same NF kind and
    /// configuration on another instance, replacing what this instance holds for the flow.
    /// Never panics on any input; on `Err` this instance's state is unchanged.
    fn import_flow(&mut self, _flow: &FlowKey, _ctx: &Ctx, _bytes: &[u8]) -> Result<(), ImportError> {
        Err(ImportError::Unsupported)
    }

    /// The key `flow`'s packets carry once this NF has rewritten them (the NAT: the inside
    /// endpoint replaced by its public one, or the other way round; `lb`: the VIP by the
    /// flow's backend), from the state it holds at `now`. The pipeline hands each NF of a
    /// chain the key as rewritten by the NFs before it, so an NF placed after a NAT finds its
    /// state by the translated flow. Default: unchanged.
    fn flow_after(&self, flow: &FlowKey, _now: crate::time::Nanos) -> FlowKey {
        *flow
    }

    /// True when the NF keeps per-flow state and implements export/import.
    const MIGRATES: bool = false;

    /// True when the NF keeps per-flow state a flow's packets depend on (so a chain holding
    /// it can only be scaled out if it also [`MIGRATES`](NetworkFunction::MIGRATES)).
    const FLOW_STATE: bool = false;
}

/// What an NF reports about itself.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub counters: Vec<(&'static str, u64)>,
    pub tables: Vec<(String, StateDecl, TableStats)>,
}

impl Report {
    pub fn counter(&mut self, name: &'static str, value: u64) {
        self.counters.push((name, value));
    }

    pub fn table(&mut self, name: &str, decl: StateDecl, stats: TableStats) {
        self.tables.push((name.to_string(), decl, stats));
    }
}

/// Objects shared by the instances of one NF across cores, created once.
#[derive(Debug, Default)]
pub struct SharedRegistry {
    items: HashMap<String, Box<dyn Any + Send>>,
}

/// What an NF may use while it is built on a core.
#[derive(Debug)]
pub struct InitCtx<'a> {
    /// Name of the NF instance in the configuration.
    pub name: &'a str,
    pub core: CoreId,
    /// Number of cores the appliance runs on.
    pub cores: usize,
    /// Port names in configuration order (index = `PortId`), to resolve names in NF params.
    pub ports: &'a [String],
    pub arena: &'a mut Arena,
    pub shared: &'a mut SharedRegistry,
    /// This appliance's share of a scaled-out deployment ([`Instance::default`] alone).
    pub instance: Instance,
}

impl InitCtx<'_> {
    /// Resolves a port name from the NF's parameters.
    pub fn port(&self, key: &str, name: &str) -> Result<PortId, NfError> {
        self.ports.iter().position(|p| p == name).and_then(|i| u16::try_from(i).ok()).map(PortId).ok_or_else(
            || NfError::Param {
                key: key.to_string(),
                detail: format!("no port named `{name}`; ports are: {}", self.ports.join(", ")),
            },
        )
    }

    /// Global read-only state: built once (on the first core) and shared immutably. (Also the
    /// home of state whose only writes are atomic and rare, like an
    /// [`OwnerMap`](crate::state::OwnerMap).)
    pub fn global_read<T: Send + Sync + 'static>(
        &mut self,
        key: &str,
        build: impl FnOnce() -> Result<T, NfError>,
    ) -> Result<Arc<T>, NfError> {
        let full = format!("{}/{key}", self.name);
        if let Some(v) = self.shared.items.get(&full).and_then(|b| b.downcast_ref::<Arc<T>>()) {
            return Ok(Arc::clone(v));
        }
        let v = Arc::new(build()?);
        self.shared.items.insert(full, Box::new(Arc::clone(&v)));
        Ok(v)
    }

    /// Global write state: `split(cores)` runs once and returns one handle per core (a
    /// [`Release`](crate::state::Release) share or an [`Eventual`](crate::state::Eventual)
    /// delta); each core takes its own.
    pub fn per_core<T: Send + 'static>(
        &mut self,
        key: &str,
        split: impl FnOnce(usize) -> Result<Vec<T>, NfError>,
    ) -> Result<T, NfError> {
        let full = format!("{}/{key}", self.name);
        if !self.shared.items.contains_key(&full) {
            let handles: Vec<Option<T>> = split(self.cores)?.into_iter().map(Some).collect();
            self.shared.items.insert(full.clone(), Box::new(handles));
        }
        self.shared
            .items
            .get_mut(&full)
            .and_then(|b| b.downcast_mut::<Vec<Option<T>>>())
            .and_then(|v| v.get_mut(usize::from(self.core.0)))
            .and_then(Option::take)
            .ok_or_else(|| NfError::Param {
                key: key.to_string(),
                detail: format!("no per-core handle for {}", self.core),
            })
    }
}
