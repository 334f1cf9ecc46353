//! The inter-instance link: one non-blocking UDP socket per instance for data packets and
//! state messages alike (they are told apart by their first bytes).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use nflet_nfs::flow::FlowKey;
use nflet_nfs::ids::ChainId;
use nflet_scale::units::LogicalClock;
use nflet_scale::wire::{Kind, Sealer};

/// Socket buffers asked for; the kernel caps them at `net.core.{r,w}mem_max`.
const SOCKET_BUFFER: usize = 8 << 20;
/// The largest datagram: a jumbo inner frame plus the steering header.
pub const MAX_DATAGRAM: usize = 65_535;

/// Why the fabric could not be set up.
#[derive(Debug)]
pub struct FabricError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl std::fmt::Display for FabricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot bind the scale-out fabric to {}: {}", self.addr, self.source)?;
        if self.source.kind() == ErrorKind::AddrInUse {
            write!(f, " (another instance uses this address; check `[scale]` addresses and `ss -ulpn`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for FabricError {}

/// Deliberate impairment of what this instance sends (`[scale] impair_*`), for tests and
/// drills: the state protocol must converge over a link that loses, duplicates and reorders.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impair {
    /// Share of datagrams dropped.
    pub loss: f64,
    /// Share of datagrams sent twice.
    pub duplicate: f64,
    /// Share of datagrams held back and sent after the next one.
    pub reorder: f64,
}

impl Impair {
    pub fn is_off(&self) -> bool {
        self.loss <= 0.0 && self.duplicate <= 0.0 && self.reorder <= 0.0
    }
}

/// What the impairment did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ImpairCounters {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// This instance's end of the fabric.
#[derive(Debug)]
pub struct Fabric {
    socket: UdpSocket,
    buf: Vec<u8>,
    /// Datagrams the kernel refused to send (buffer full, peer unreachable).
    pub send_errors: u64,
    impair: Impair,
    rng: nflet_nfs::rng::Rng,
    held: Option<(Vec<u8>, SocketAddr)>,
    pub impaired: ImpairCounters,
    /// Scratch for sealed messages.
    msg: Vec<u8>,
}

/// A state message to seal and send ([`Fabric::send_message`]).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub kind: Kind,
    pub chain: ChainId,
    pub flow: &'a FlowKey,
    pub clock: LogicalClock,
    pub body: &'a [u8],
}

impl Fabric {
    pub fn bind(addr: SocketAddr) -> Result<Fabric, FabricError> {
        let err = |source| FabricError { addr, source };
        let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
        let s =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(err)?;
        // Best effort: a smaller buffer only means earlier drops under overload.
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.bind(&addr.into()).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        Ok(Fabric {
            socket: s.into(),
            buf: vec![0; MAX_DATAGRAM],
            send_errors: 0,
            impair: Impair::default(),
            rng: nflet_nfs::rng::Rng::new(u64::from(addr.port())),
            held: None,
            impaired: ImpairCounters::default(),
            msg: Vec::new(),
        })
    }

    /// [`Fabric::bind`], trying again for up to `patience` while the address is in use (a
    /// crashed predecessor's socket can outlive it briefly while its process is torn down).
    pub fn bind_patiently(addr: SocketAddr, patience: std::time::Duration) -> Result<Fabric, FabricError> {
        let until = std::time::Instant::now() + patience;
        loop {
            match Fabric::bind(addr) {
                Err(e) if e.source.kind() == ErrorKind::AddrInUse && std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Waits until a datagram is waiting or `timeout` passed.
    pub fn wait(&self, timeout: std::time::Duration) {
        use nix::poll::{ppoll, PollFd, PollFlags};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout = nix::sys::time::TimeSpec::from_duration(timeout);
        // An error (EINTR) only ends the wait early: the caller polls again anyway.
        let _ = ppoll(&mut fds, Some(timeout), None);
    }

    /// Copies the next waiting datagram into `out` (replacing it); false when none waits.
    pub fn recv_into(&mut self, out: &mut Vec<u8>) -> bool {
        let Some((d, _)) = self.recv() else { return false };
        out.clear();
        out.extend_from_slice(d);
        true
    }

    /// The next datagram, if one is waiting.
    pub fn recv(&mut self) -> Option<(&[u8], SocketAddr)> {
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) => self.buf.get(..n).map(|d| (d, from)),
            Err(_) => None,
        }
    }

    /// Impairs what this end sends from now on (seeded by the local port).
    pub fn impair(&mut self, impair: Impair) {
        self.impair = impair;
    }

    pub fn send(&mut self, datagram: &[u8], to: SocketAddr) {
        if self.impair.is_off() {
            return self.send_now(datagram, to);
        }
        if self.rng.unit() < self.impair.loss {
            self.impaired.dropped += 1;
            return;
        }
        if self.held.is_none() && self.rng.unit() < self.impair.reorder {
            self.impaired.reordered += 1;
            self.held = Some((datagram.to_vec(), to));
            return;
        }
        self.send_now(datagram, to);
        if self.rng.unit() < self.impair.duplicate {
            self.impaired.duplicated += 1;
            self.send_now(datagram, to);
        }
        self.flush();
    }

    /// Seals `m` with `sealer` and sends it to `to`; returns the message's length.
    pub fn send_message(&mut self, sealer: &mut Sealer, m: Outgoing<'_>, to: SocketAddr) -> usize {
        let mut msg = std::mem::take(&mut self.msg);
        sealer.seal(m.kind, m.chain, m.flow, m.clock, m.body, &mut msg);
        self.send(&msg, to);
        let n = msg.len();
        self.msg = msg;
        n
    }

    /// Sends a datagram held back for reordering (also called when the instance idles).
    pub fn flush(&mut self) {
        if let Some((d, to)) = self.held.take() {
            self.send_now(&d, to);
        }
    }

    fn send_now(&mut self, datagram: &[u8], to: SocketAddr) {
        if self.socket.send_to(datagram, to).is_err() {
            self.send_errors += 1;
        }
    }
}

/// Idling between polls: an instance busy-polls while datagrams come, and after a run of
/// empty polls waits up to `nap` between them (pushing out a datagram held for reordering
/// first) — in ppoll(2) on the fabric socket, so a datagram that arrives ends the wait at once
/// (a plain sleep left a pull request or answer lying for the rest of the nap and the timer
/// slack, ~0.1 ms per hop). An instance whose only input is the fabric socket may back off:
/// each nap of an idle spell twice the last, up to `longest` — an arrival still ends it, so
/// only the instance's own timers (hellos, retries) can run that much late, and an idle
/// instance stops costing a share of a core (one nap of 20–50 µs after another did).
#[derive(Debug)]
pub struct Idle {
    empty: u32,
    nap: Duration,
    longest: Duration,
    next: Duration,
}

/// Empty polls in a row before an instance starts sleeping between polls.
const EMPTY_POLLS_BEFORE_NAP: u32 = 64;

impl Idle {
    /// Naps of `nap`, for an instance that must also poll what the fabric's socket does not
    /// wake it for (the director's ports).
    pub fn new(nap: Duration) -> Idle {
        Idle::backing_off(nap, nap)
    }

    /// Naps from `first`, doubling up to `longest` while nothing arrives.
    pub fn backing_off(first: Duration, longest: Duration) -> Idle {
        Idle { empty: 0, nap: first, longest: longest.max(first), next: first }
    }

    /// Called after each poll with what it got; true on the first empty poll after work (the
    /// moment to flush what is buffered).
    pub fn after_poll(&mut self, got: usize, fabric: &mut Fabric) -> bool {
        let first = got == 0 && self.empty == 0;
        if got > 0 {
            self.polled(got);
            return false;
        }
        fabric.flush();
        if let Some(nap) = self.polled(got) {
            fabric.wait(nap);
        }
        first
    }

    /// Counts a poll; the nap to take after it, if any.
    fn polled(&mut self, got: usize) -> Option<Duration> {
        if got > 0 {
            self.empty = 0;
            self.next = self.nap;
            return None;
        }
        self.empty = self.empty.saturating_add(1);
        if self.empty <= EMPTY_POLLS_BEFORE_NAP {
            return None;
        }
        let nap = self.next;
        self.next = self.next.saturating_mul(2).min(self.longest);
        Some(nap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_spell_busy_polls_then_naps_longer_each_time_until_work_comes() {
        let us = Duration::from_micros;
        let mut idle = Idle::backing_off(us(50), us(1000));
        let naps = |idle: &mut Idle, polls: usize| -> Vec<Option<Duration>> {
            (0..polls).map(|_| idle.polled(0)).collect()
        };
        let spell = naps(&mut idle, EMPTY_POLLS_BEFORE_NAP as usize + 7);
        assert!(spell[..EMPTY_POLLS_BEFORE_NAP as usize].iter().all(Option::is_none), "busy polls first");
        let taken: Vec<_> = spell[EMPTY_POLLS_BEFORE_NAP as usize..].iter().flatten().copied().collect();
        assert_eq!(taken, [us(50), us(100), us(200), us(400), us(800), us(1000), us(1000)]);
        // Work ends the spell: the next one starts over.
        assert_eq!(idle.polled(3), None);
        let spell = naps(&mut idle, EMPTY_POLLS_BEFORE_NAP as usize + 2);
        assert_eq!(spell[EMPTY_POLLS_BEFORE_NAP as usize..], [Some(us(50)), Some(us(100))]);
        // Without back-off every nap is the first.
        let mut fixed = Idle::new(us(20));
        let spell = naps(&mut fixed, EMPTY_POLLS_BEFORE_NAP as usize + 3);
        assert_eq!(spell[EMPTY_POLLS_BEFORE_NAP as usize..], [Some(us(20)); 3]);
    }
}
