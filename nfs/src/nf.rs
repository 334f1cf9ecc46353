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
use crate::ids::{CoreId, Label, PortId};
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
