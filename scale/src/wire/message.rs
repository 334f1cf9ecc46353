//! State messages between instances: pull requests, state copies, replication orders and
//! worker announcements, authenticated with HMAC-SHA256 under a key shared by the deployment
//! and protected against replay by per-sender sequence numbers.
//!
//! ```text
//!  0..4   magic "NFST"          26..34 logical clock (u64)
//!  4      version (1)           34..74 flow key (40 bytes)
//!  5      kind                  74..78 body length (u32)
//!  6..8   sender (u16)          78..   body
//!  8..16  sequence (u64)        last 32 bytes: HMAC-SHA256 of everything before
//!  16..24 deployment fingerprint
//!  24..26 chain (u16)
//! ```
//!
//! A receiver checks, in this order: length and framing, the MAC (constant time), the
//! deployment fingerprint (instances built from different configurations must not exchange
//! state), then the sender's replay window. The window moves only for messages whose MAC
//! verified, so forged traffic cannot push it. Senders start their sequence at their start
//! time in nanoseconds, so a restarted instance is not taken for a replayer. Whether a state
//! copy is *stale* is the logical-clock rule's business ([`crate::clock`]), applied by the
//! receiver after [`Verifier::open`].

use std::collections::HashMap;

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::ChainId;
use ring::hmac;

use super::replay::{Refused, ReplayWindow};
use crate::units::{LogicalClock, WorkerId};

const MAGIC: &[u8; 4] = b"NFST";
const VERSION: u8 = 1;
const FIXED: usize = 78;
const MAC_LEN: usize = 32;
/// The director's sender id (workers use their worker id).
pub const DIRECTOR: WorkerId = WorkerId(u16::MAX);

/// What a message asks or tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worker → previous owner: send me the flow's state (clock = the waiting packet's).
    PullRequest,
    /// Previous owner → puller: the flow's state, tagged with its clock. The body starts with
    /// the clock of the request answered ([`answer_body`]), so a late answer to an earlier
    /// request is never taken for the answer to a later one.
    State,
    /// Previous owner → puller: I hold no state for the flow (body: the request's clock).
    NoState,
    /// Owner → replica: a proactive copy of the flow's state (SNF §5.2.1).
    Push,
    /// Director → owner: push the flow's state to the workers listed in the body (u16 each).
    Replicate,
    /// Worker → director: I am up and serving (sent at start and as a heartbeat).
    Hello,
    /// Director → worker: stop serving and exit (retirement, shutdown).
    Stop,
    /// Worker → its output logger (SNF §6): a processed frame and the flow's state after it.
    /// The body is the frame's steering datagram (u32 length first), then the state. The
    /// logger stores the state, then releases the frame to the director.
    Logged,
    /// Director → worker: push the state of every flow you hold to your output logger (a
    /// replaced logger starts empty).
    Resync,
    /// Director → previous owner: the flow's next flowlet went to a worker holding a current
    /// replica, so the state moved away without a pull.
    Moved,
    /// Director → a flow's owner: the worker it pulls the flow's state from failed; pull it
    /// from the worker's output logger instead (or from the worker that last released a
    /// frame of the flow, if the failed one never did). Body: the failed worker's id and the
    /// id to pull from (u16 each).
    Recover,
    /// Director → worker, after the director restarted: list the flows whose state you hold.
    Inventory,
    /// Worker → director: one part of the answer to [`Kind::Inventory`]. Body: part and part
    /// count (u16 each), then per flow: its key, the clock of the state held, and the tuple an
    /// NF rewrote it to (all zero: none).
    Holding,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::PullRequest => 1,
            Kind::State => 2,
            Kind::NoState => 3,
            Kind::Push => 4,
            Kind::Replicate => 5,
            Kind::Hello => 6,
            Kind::Stop => 7,
            Kind::Logged => 8,
            Kind::Resync => 9,
            Kind::Moved => 10,
            Kind::Recover => 11,
            Kind::Inventory => 12,
            Kind::Holding => 13,
        }
    }

    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::PullRequest,
            2 => Kind::State,
            3 => Kind::NoState,
            4 => Kind::Push,
            5 => Kind::Replicate,
            6 => Kind::Hello,
            7 => Kind::Stop,
            8 => Kind::Logged,
            9 => Kind::Resync,
            10 => Kind::Moved,
            11 => Kind::Recover,
            12 => Kind::Inventory,
            13 => Kind::Holding,
            _ => return None,
        })
    }
}

/// A verified message; `body` borrows the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: Kind,
    pub sender: WorkerId,
    pub chain: ChainId,
    pub clock: LogicalClock,
    pub flow: FlowKey,
    pub body: &'a [u8],
}

/// Starts the body of a pull's answer: the clock of the request answered; the state follows.
pub fn answer_body(request: LogicalClock, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&request.0.to_be_bytes());
}

/// Splits a pull answer's body into the request's clock and the state (`None`: too short).
pub fn split_answer(body: &[u8]) -> Option<(LogicalClock, &[u8])> {
    let (clock, state) = body.split_first_chunk::<8>()?;
    Some((LogicalClock(u64::from_be_bytes(*clock)), state))
}

/// Why a datagram was not accepted as a state message (each is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    Short,
    BadMagic,
    BadVersion,
    BadKind,
    /// The body length disagrees with the datagram's length.
    BadLength,
    /// The MAC does not verify: forged, corrupted, or another deployment's key.
    BadMac,
    /// Authentic, but from an instance with another configuration.
    OtherDeployment,
    /// Authentic, but its sequence number was seen before.
    Replayed,
    /// Authentic, but older than the replay window.
    TooOld,
}

impl MessageError {
    pub const ALL: [MessageError; 9] = [
        MessageError::Short,
        MessageError::BadMagic,
        MessageError::BadVersion,
        MessageError::BadKind,
        MessageError::BadLength,
        MessageError::BadMac,
        MessageError::OtherDeployment,
        MessageError::Replayed,
        MessageError::TooOld,
    ];

    /// Counter name.
    pub fn name(self) -> &'static str {
        match self {
            MessageError::Short => "msg_short",
            MessageError::BadMagic => "msg_bad_magic",
            MessageError::BadVersion => "msg_bad_version",
            MessageError::BadKind => "msg_bad_kind",
            MessageError::BadLength => "msg_bad_length",
            MessageError::BadMac => "msg_forged",
            MessageError::OtherDeployment => "msg_other_deployment",
            MessageError::Replayed => "msg_replayed",
            MessageError::TooOld => "msg_too_old",
        }
    }

    pub fn index(self) -> usize {
        MessageError::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for MessageError {}

/// True when a datagram claims to be a state message (data packets start with VXLAN flags).
pub fn is_state_message(datagram: &[u8]) -> bool {
    datagram.get(..4) == Some(MAGIC.as_slice())
}

/// Builds this instance's messages.
#[derive(Debug)]
pub struct Sealer {
    key: hmac::Key,
    sender: WorkerId,
    deployment: u64,
    next_seq: u64,
}

impl Sealer {
    /// `first_seq`: the sender's start time in nanoseconds (module doc).
    pub fn new(secret: &[u8], sender: WorkerId, deployment: u64, first_seq: u64) -> Sealer {
        Sealer { key: hmac::Key::new(hmac::HMAC_SHA256, secret), sender, deployment, next_seq: first_seq }
    }

    /// Replaces `out` with a sealed message.
    pub fn seal(
        &mut self,
        kind: Kind,
        chain: ChainId,
        flow: &FlowKey,
        clock: LogicalClock,
        body: &[u8],
        out: &mut Vec<u8>,
    ) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        out.clear();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(kind.code());
        out.extend_from_slice(&self.sender.0.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&self.deployment.to_be_bytes());
        out.extend_from_slice(&chain.0.to_be_bytes());
        out.extend_from_slice(&clock.0.to_be_bytes());
        out.extend_from_slice(bytemuck::bytes_of(flow));
        out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(body);
        let tag = hmac::sign(&self.key, out);
        out.extend_from_slice(tag.as_ref());
    }
}

/// Checks received messages (module doc for the order of checks).
#[derive(Debug)]
pub struct Verifier {
    key: hmac::Key,
    deployment: u64,
    windows: HashMap<WorkerId, ReplayWindow>,
}

impl Verifier {
    pub fn new(secret: &[u8], deployment: u64) -> Verifier {
        Verifier { key: hmac::Key::new(hmac::HMAC_SHA256, secret), deployment, windows: HashMap::new() }
    }

    pub fn open<'a>(&mut self, datagram: &'a [u8]) -> Result<Message<'a>, MessageError> {
        if datagram.len() < FIXED + MAC_LEN {
            return Err(MessageError::Short);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
        let head = signed.get(..FIXED).ok_or(MessageError::Short)?;
        if &head[..4] != MAGIC {
            return Err(MessageError::BadMagic);
        }
        if head[4] != VERSION {
            return Err(MessageError::BadVersion);
        }
        let body_len = u32::from_be_bytes([head[74], head[75], head[76], head[77]]);
        let body = signed.get(FIXED..).ok_or(MessageError::Short)?;
        if usize::try_from(body_len).ok() != Some(body.len()) {
            return Err(MessageError::BadLength);
        }
        hmac::verify(&self.key, signed, tag).map_err(|_| MessageError::BadMac)?;
        let kind = Kind::from_code(head[5]).ok_or(MessageError::BadKind)?;
        let be64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(b)
        };
        if be64(16) != self.deployment {
            return Err(MessageError::OtherDeployment);
        }
        let sender = WorkerId(u16::from_be_bytes([head[6], head[7]]));
        let seq = be64(8);
        let window = self.windows.entry(sender).or_default();
        window.check(seq).map_err(|r| match r {
            Refused::Replayed => MessageError::Replayed,
            Refused::TooOld => MessageError::TooOld,
        })?;
        window.accept(seq);
        Ok(Message {
            kind,
            sender,
            chain: ChainId(u16::from_be_bytes([head[24], head[25]])),
            clock: LogicalClock(be64(26)),
            flow: bytemuck::pod_read_unaligned(&head[34..74]),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"deployment secret, 32 bytes long";

    fn sealed(sealer: &mut Sealer, kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sealer.seal(kind, ChainId(1), &FlowKey::default(), LogicalClock(42), body, &mut out);
        out
    }

    #[test]
    fn round_trip() {
        let mut s = Sealer::new(KEY, WorkerId(2), 7, 1_000);
        let mut v = Verifier::new(KEY, 7);
        let m = sealed(&mut s, Kind::State, b"state bytes");
        assert!(is_state_message(&m));
        let got = v.open(&m).unwrap();
        assert_eq!(
            (got.kind, got.sender, got.chain, got.clock),
            (Kind::State, WorkerId(2), ChainId(1), LogicalClock(42))
        );
        assert_eq!(got.body, b"state bytes");
    }

    #[test]
    fn forged_replayed_old_and_foreign_are_refused() {
        let mut s = Sealer::new(KEY, WorkerId(1), 7, 1_000);
        let mut v = Verifier::new(KEY, 7);
        let first = sealed(&mut s, Kind::Push, b"x");
        assert!(v.open(&first).is_ok());
        assert_eq!(v.open(&first), Err(MessageError::Replayed));
        // Every single-bit flip of an authentic, unseen message fails (MAC or framing).
        let fresh = sealed(&mut s, Kind::Push, b"abc");
        for i in 0..fresh.len() {
            for bit in 0..8 {
                let mut m = fresh.clone();
                m[i] ^= 1 << bit;
                assert!(v.open(&m).is_err(), "flip of byte {i} bit {bit} accepted");
            }
        }
        assert!(v.open(&fresh).is_ok(), "failed forgeries did not move the window");
        // Another key: forged.
        let mut other = Sealer::new(b"another key", WorkerId(1), 7, 5_000);
        assert_eq!(v.open(&sealed(&mut other, Kind::Push, b"")), Err(MessageError::BadMac));
        // Same key, other deployment.
        let mut foreign = Sealer::new(KEY, WorkerId(3), 8, 1);
        assert_eq!(v.open(&sealed(&mut foreign, Kind::Hello, b"")), Err(MessageError::OtherDeployment));
        // Far behind the window.
        let old: Vec<Vec<u8>> = (0..70).map(|_| sealed(&mut s, Kind::Hello, b"")).collect();
        assert!(v.open(&old[69]).is_ok());
        assert_eq!(v.open(&old[0]), Err(MessageError::TooOld));
        assert!(v.open(&old[10]).is_ok(), "inside the window, unseen");
    }

    #[test]
    fn truncations_never_verify() {
        let mut s = Sealer::new(KEY, WorkerId(1), 7, 1);
        let m = sealed(&mut s, Kind::State, &[9u8; 100]);
        let mut v = Verifier::new(KEY, 7);
        for n in 0..m.len() {
            assert!(v.open(&m[..n]).is_err());
        }
        assert!(v.open(&m).is_ok());
    }

    #[test]
    fn restarted_sender_is_accepted() {
        let mut v = Verifier::new(KEY, 7);
        let mut before = Sealer::new(KEY, WorkerId(4), 7, 1_000);
        assert!(v.open(&sealed(&mut before, Kind::Hello, b"")).is_ok());
        let mut after = Sealer::new(KEY, WorkerId(4), 7, 9_000);
        assert!(v.open(&sealed(&mut after, Kind::Hello, b"")).is_ok());
    }
}
