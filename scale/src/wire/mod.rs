//! What travels between nflet instances in a scale-out deployment: data packets in VXLAN with
//! nflet's steering metadata ([`header`]), and authenticated, replay-protected state messages
//! ([`message`]). Both are plain UDP payloads, so instances can live on other hosts.
//!
//! Parsing never panics: every decoder checks lengths once and returns a typed error.

pub mod header;
pub mod message;
mod replay;

pub use header::{Direction, SteerHeader, HEADER_LEN, VXLAN_PORT};
pub use message::{
    answer_body, is_state_message, split_answer, Kind, Message, MessageError, Sealer, Verifier, DIRECTOR,
};

/// A 64-bit fingerprint (FNV-1a) of a deployment's configuration text. State messages carry
/// it, so instances built from different files refuse each other's state.
pub fn deployment_fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
