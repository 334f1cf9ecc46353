//! What travels between nflet instances in a scale-out deployment: data packets in VXLAN with
//! nflet's steering metadata ([`header`]), and authenticated, replay-protected state messages
//! ([`message`]). Both are plain UDP payloads, so instances can live on other hosts.
//!
//! Parsing never panics: every decoder checks lengths once and returns a typed error.

pub mod header;
pub mod message;
mod replay;

pub use header::{Direction, SteerHeader, HEADER_LEN, VXLAN_PORT};
pub use message::{is_state_message, Kind, Message, MessageError, Sealer, Verifier, DIRECTOR};
