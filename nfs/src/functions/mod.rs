//! The network functions compiled into nflet, and the registry that builds them by kind.
//!
//! Adding an NF: implement [`NetworkFunction`] in a module here and add one line to the
//! `registry!` invocation below. Dispatch is a `match` per burst, not a virtual call per packet.

pub mod counter;
pub mod ddos;
pub mod firewall;
pub mod gateway;
pub mod ids;
pub mod ipsec;
pub mod lb;
#[cfg(test)]
mod migrate_tests;
pub mod monitor;
#[cfg(test)]
mod monitor_tests;
pub mod nat;
pub mod policer;
pub mod whitelist;

use crate::flow::FlowKey;
use crate::frame::Frame;
use crate::ids::CoreId;
use crate::nf::{Burst, Ctx, ImportError, InitCtx, NetworkFunction, NfError, Report};
use crate::packet::Meta;

macro_rules! registry {
    ($($variant:ident => $ty:ty,)*) => {
        /// The parsed configuration of an NF of any compiled-in kind.
        #[derive(Debug)]
        pub enum AnyConfig {
            $($variant(<$ty as NetworkFunction>::Config),)*
        }

        /// An NF instance of any compiled-in kind.
        ///
        /// One value per NF per core, dispatched once per burst: the size difference between
        /// variants costs nothing worth boxing for.
        #[derive(Debug)]
        #[allow(clippy::large_enum_variant)]
        pub enum AnyNf {
            $($variant($ty),)*
        }

        /// The `kind` names of all compiled-in NFs.
        pub const KINDS: &[&str] = &[$(<$ty as NetworkFunction>::KIND,)*];

        impl AnyConfig {
            /// Parses the parameters of an NF of `kind`.
            pub fn parse<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                params: D,
            ) -> Result<AnyConfig, NfError> {
                $(
                    if kind == <$ty as NetworkFunction>::KIND {
                        let c = <<$ty as NetworkFunction>::Config as serde::Deserialize>::deserialize(params)
                            .map_err(|e| NfError::Parse(e.to_string()))?;
                        return Ok(AnyConfig::$variant(c));
                    }
                )*
                Err(NfError::UnknownKind { kind: kind.to_string(), known: KINDS })
            }
        }

        impl AnyNf {
            /// Builds the NF for one core.
            pub fn init(config: &AnyConfig, rt: &mut InitCtx<'_>) -> Result<AnyNf, NfError> {
                match config {
                    $(AnyConfig::$variant(c) => Ok(AnyNf::$variant(<$ty>::init(c, rt)?)),)*
                }
            }

            pub fn kind(&self) -> &'static str {
                match self {
                    $(AnyNf::$variant(_) => <$ty as NetworkFunction>::KIND,)*
                }
            }

            #[inline]
            pub fn process<F: Frame>(&mut self, ctx: &Ctx, burst: &mut Burst<'_, F>) {
                match self {
                    $(AnyNf::$variant(nf) => nf.process(ctx, burst),)*
                }
            }

            /// Whether this NF steers frames at ingress ([`NetworkFunction::STEERS`]).
            pub fn steers(&self) -> bool {
                match self {
                    $(AnyNf::$variant(_) => <$ty as NetworkFunction>::STEERS,)*
                }
            }

            #[inline]
            pub fn steer(&self, meta: &Meta, frame: &[u8]) -> Option<CoreId> {
                match self {
                    $(AnyNf::$variant(nf) => nf.steer(meta, frame),)*
                }
            }

            /// See [`NetworkFunction::after_init`].
            pub fn after_init(&mut self) {
                match self {
                    $(AnyNf::$variant(nf) => nf.after_init(),)*
                }
            }

            pub fn housekeeping(&mut self, ctx: &Ctx) {
                match self {
                    $(AnyNf::$variant(nf) => nf.housekeeping(ctx),)*
                }
            }

            pub fn report(&self, out: &mut Report) {
                match self {
                    $(AnyNf::$variant(nf) => nf.report(out),)*
                }
            }

            /// Whether this NF migrates per-flow state ([`NetworkFunction::MIGRATES`]).
            pub fn migrates(&self) -> bool {
                match self {
                    $(AnyNf::$variant(_) => <$ty as NetworkFunction>::MIGRATES,)*
                }
            }

            /// Whether this NF keeps per-flow state ([`NetworkFunction::FLOW_STATE`]).
            pub fn keeps_flow_state(&self) -> bool {
                match self {
                    $(AnyNf::$variant(_) => <$ty as NetworkFunction>::FLOW_STATE,)*
                }
            }

            /// See [`NetworkFunction::export_flow`].
            pub fn export_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
                match self {
                    $(AnyNf::$variant(nf) => nf.export_flow(flow, ctx, out),)*
                }
            }

            /// See [`NetworkFunction::copy_flow`].
            pub fn copy_flow(&mut self, flow: &FlowKey, ctx: &Ctx, out: &mut Vec<u8>) -> bool {
                match self {
                    $(AnyNf::$variant(nf) => nf.copy_flow(flow, ctx, out),)*
                }
            }

            /// See [`NetworkFunction::flow_after`].
            pub fn flow_after(&self, flow: &FlowKey, now: crate::time::Nanos) -> FlowKey {
                match self {
                    $(AnyNf::$variant(nf) => nf.flow_after(flow, now),)*
                }
            }

            /// See [`NetworkFunction::import_flow`].
            pub fn import_flow(&mut self, flow: &FlowKey, ctx: &Ctx, bytes: &[u8]) -> Result<(), ImportError> {
                match self {
                    $(AnyNf::$variant(nf) => nf.import_flow(flow, ctx, bytes),)*
                }
            }
        }
    };
}

registry! {
    Counter => counter::Counter,
    Ddos => ddos::Ddos,
    Firewall => firewall::Firewall,
    Gateway => gateway::Gateway,
    Ids => ids::Ids,
    Ipsec => ipsec::Ipsec,
    Monitor => monitor::Monitor,
    Lb => lb::Lb,
    Nat => nat::Nat,
    Policer => policer::Policer,
    UdpWhitelist => whitelist::Whitelist,
}
