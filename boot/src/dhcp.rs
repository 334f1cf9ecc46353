//! A DHCPv4 client for the management NIC (RFC 2131, options from RFC 2132): discover, offer,
//! request, acknowledge; then renew at T1 (unicast to the server) and rebind at T2
//! (broadcast) for as long as the appliance runs.
//!
//! It speaks through an ordinary UDP socket on port 68 bound to the NIC (`SO_BINDTODEVICE`),
//! with the broadcast flag set in every request so that servers answer to the limited
//! broadcast address, which the kernel delivers to the socket before the NIC has an address.
//! Messages are built and parsed here with bounds-checked reads only; a malformed or foreign
//! reply (other transaction id, other hardware address) is ignored.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Fixed BOOTP header before the options: op..file, then the magic cookie.
const HEADER: usize = 236;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Unknown(u8),
}

impl From<u8> for Kind {
    fn from(v: u8) -> Kind {
        match v {
            1 => Kind::Discover,
            2 => Kind::Offer,
            3 => Kind::Request,
            4 => Kind::Decline,
            5 => Kind::Ack,
            6 => Kind::Nak,
            7 => Kind::Release,
            other => Kind::Unknown(other),
        }
    }
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Discover => 1,
            Kind::Offer => 2,
            Kind::Request => 3,
            Kind::Decline => 4,
            Kind::Ack => 5,
            Kind::Nak => 6,
            Kind::Release => 7,
            Kind::Unknown(v) => v,
        }
    }
}

/// A lease: what the server gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// Lease time; renewal (T1) and rebinding (T2) times default to 1/2 and 7/8 of it.
    pub lease: Duration,
    pub renew: Duration,
    pub rebind: Duration,
}

/// A parsed server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub server: Option<Ipv4Addr>,
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub lease_s: Option<u32>,
    pub t1_s: Option<u32>,
    pub t2_s: Option<u32>,
}

/// Builds a client message. `requested` and `server` go in options 50 and 54 (a request in
/// the selecting state); `ciaddr` is set when renewing.
pub fn message(
    kind: Kind,
    xid: u32,
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
) -> Vec<u8> {
    let mut m = vec![0u8; HEADER];
    m[0] = 1; // BOOTREQUEST
    m[1] = 1; // Ethernet
    m[2] = 6; // hardware address length
    m[4..8].copy_from_slice(&xid.to_be_bytes());
    m[10] = 0x80; // broadcast flag: answer to 255.255.255.255 (we may have no address yet)
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&mac);
    m.extend_from_slice(&MAGIC);
    m.extend_from_slice(&[53, 1, kind.code()]);
    // Client identifier: hardware type + MAC.
    m.extend_from_slice(&[61, 7, 1]);
    m.extend_from_slice(&mac);
    if let Some(a) = requested {
        m.extend_from_slice(&[50, 4]);
        m.extend_from_slice(&a.octets());
    }
    if let Some(s) = server {
        m.extend_from_slice(&[54, 4]);
        m.extend_from_slice(&s.octets());
    }
    // Parameters wanted: subnet mask, router, lease time, T1, T2.
    m.extend_from_slice(&[55, 5, 1, 3, 51, 58, 59]);
    m.push(255);
    // Some servers ignore requests shorter than a BOOTP message (300 bytes).
    if m.len() < 300 {
        m.resize(300, 0);
    }
    m
}

fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    let a: [u8; 4] = b.try_into().ok()?;
    Some(Ipv4Addr::from(a))
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// Parses a server reply; `None` when it is not a well-formed BOOTREPLY with a DHCP type.
pub fn parse(m: &[u8]) -> Option<Reply> {
    if m.first() != Some(&2) || m.get(236..240) != Some(&MAGIC[..]) {
        return None;
    }
    let mut r = Reply {
        kind: Kind::Unknown(0),
        xid: u32_of(m.get(4..8)?)?,
        yiaddr: ipv4(m.get(16..20)?)?,
        chaddr: m.get(28..34)?.try_into().ok()?,
        server: None,
        mask: None,
        router: None,
        lease_s: None,
        t1_s: None,
        t2_s: None,
    };
    let mut typed = false;
    let mut at = 240;
    while let Some(&code) = m.get(at) {
        match code {
            0 => {
                at += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = usize::from(*m.get(at + 1)?);
        let v = m.get(at + 2..at + 2 + len)?;
        match code {
            53 => {
                r.kind = Kind::from(*v.first()?);
                typed = true;
            }
            1 => r.mask = ipv4(v),
            3 => r.router = v.get(..4).and_then(ipv4),
            51 => r.lease_s = u32_of(v),
            54 => r.server = ipv4(v),
            58 => r.t1_s = u32_of(v),
            59 => r.t2_s = u32_of(v),
            _ => {}
        }
        at += 2 + len;
    }
    typed.then_some(r)
}

impl Reply {
    /// The lease an acknowledgement grants.
    pub fn lease(&self) -> Option<Lease> {
        let server = self.server?;
        let mask = self.mask.unwrap_or(Ipv4Addr::new(255, 255, 255, 0));
        let bits = u32::from(mask);
        // A subnet mask is contiguous ones; anything else is refused.
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return None;
        }
        let lease = self.lease_s.unwrap_or(3600).max(60);
        let renew = self.t1_s.unwrap_or(lease / 2).min(lease);
        let rebind = self.t2_s.unwrap_or(lease / 8 * 7).clamp(renew, lease);
        Some(Lease {
            address: self.yiaddr,
            prefix_len: bits.leading_ones() as u8,
            router: self.router,
            server,
            lease: Duration::from_secs(lease.into()),
            renew: Duration::from_secs(renew.into()),
            rebind: Duration::from_secs(rebind.into()),
        })
    }
}

/// A client for one NIC.
#[derive(Debug)]
pub struct Client {
    socket: UdpSocket,
    mac: [u8; 6],
    xid: u32,
}

impl Client {
    /// Opens port 68 on `iface` (whose hardware address is `mac`).
    pub fn open(iface: &str, mac: [u8; 6]) -> Result<Client, String> {
        let socket =
            UdpSocket::bind(("0.0.0.0", CLIENT_PORT)).map_err(|e| format!("binding UDP port 68: {e}"))?;
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::BindToDevice, &iface.into())
            .map_err(|e| format!("binding the DHCP socket to {iface}: {e}"))?;
        socket.set_broadcast(true).map_err(|e| format!("allowing broadcast: {e}"))?;
        // A transaction id that differs between boots and NICs.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let xid = seed ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
        Ok(Client { socket, mac, xid })
    }

    /// Discover → offer → request → ack, retrying with backoff until `timeout`.
    pub fn acquire(&mut self, timeout: Duration) -> Result<Lease, String> {
        let deadline = Instant::now() + timeout;
        let mut wait = Duration::from_millis(500);
        while Instant::now() < deadline {
            self.xid = self.xid.wrapping_add(1);
            let discover = message(Kind::Discover, self.xid, self.mac, Ipv4Addr::UNSPECIFIED, None, None);
            self.broadcast(&discover)?;
            if let Some(offer) = self.receive(Kind::Offer, wait)? {
                let request = message(
                    Kind::Request,
                    self.xid,
                    self.mac,
                    Ipv4Addr::UNSPECIFIED,
                    Some(offer.yiaddr),
                    offer.server,
                );
                self.broadcast(&request)?;
                match self.receive(Kind::Ack, wait.max(Duration::from_secs(1)))? {
                    Some(ack) => match ack.lease() {
                        Some(l) => return Ok(l),
                        None => log::warn!("dhcp: unusable acknowledgement {ack:?}; starting over"),
                    },
                    None => log::info!("dhcp: no acknowledgement from {:?}; starting over", offer.server),
                }
            }
            wait = (wait * 2).min(Duration::from_secs(4));
        }
        Err(format!("no DHCP server answered within {} s", timeout.as_secs()))
    }

    /// Renews `lease` (unicast to its server before T2, broadcast after); `None` when no
    /// server acknowledged within `timeout`.
    pub fn renew(
        &mut self,
        lease: &Lease,
        rebinding: bool,
        timeout: Duration,
    ) -> Result<Option<Lease>, String> {
        self.xid = self.xid.wrapping_add(1);
        let m = message(Kind::Request, self.xid, self.mac, lease.address, None, None);
        if rebinding {
            self.broadcast(&m)?;
        } else {
            self.socket
                .send_to(&m, SocketAddrV4::new(lease.server, SERVER_PORT))
                .map_err(|e| format!("sending a renewal to {}: {e}", lease.server))?;
        }
        Ok(self.receive(Kind::Ack, timeout)?.and_then(|a| a.lease()))
    }

    fn broadcast(&self, m: &[u8]) -> Result<(), String> {
        self.socket
            .send_to(m, SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT))
            .map(|_| ())
            .map_err(|e| format!("broadcasting a DHCP message: {e}"))
    }

    /// The next reply of `kind` to our transaction, within `wait`. A NAK ends the wait.
    fn receive(&self, kind: Kind, wait: Duration) -> Result<Option<Reply>, String> {
        let until = Instant::now() + wait;
        let mut buf = [0u8; 1500];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(format!("receiving DHCP replies: {e}")),
            };
            let Some(r) = buf.get(..n).and_then(parse) else { continue };
            if r.xid != self.xid || r.chaddr != self.mac {
                continue;
            }
            if r.kind == Kind::Nak {
                log::warn!("dhcp: the server refused (NAK)");
                return Ok(None);
            }
            if r.kind == kind {
                return Ok(Some(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn requests_carry_the_fields_servers_need() {
        let m = message(
            Kind::Request,
            0xdead_beef,
            MAC,
            Ipv4Addr::UNSPECIFIED,
            Some(Ipv4Addr::new(10, 0, 2, 15)),
            Some(Ipv4Addr::new(10, 0, 2, 2)),
        );
        assert_eq!(m.len(), 300);
        assert_eq!(&m[..4], &[1, 1, 6, 0]);
        assert_eq!(&m[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(m[10], 0x80, "broadcast flag");
        assert_eq!(&m[28..34], &MAC);
        assert_eq!(&m[236..240], &MAGIC);
        let opts = &m[240..];
        let expect: &[u8] = &[
            53, 1, 3, 61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2, 55,
            5, 1, 3, 51, 58, 59, 255,
        ];
        assert_eq!(&opts[..expect.len()], expect);
    }

    fn ack(opts: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER];
        m[0] = 2;
        m[4..8].copy_from_slice(&7u32.to_be_bytes());
        m[16..20].copy_from_slice(&[10, 0, 2, 15]);
        m[28..34].copy_from_slice(&MAC);
        m.extend_from_slice(&MAGIC);
        m.extend_from_slice(opts);
        m
    }

    #[test]
    fn acknowledgements_become_leases() {
        let m = ack(&[
            53, 1, 5, 0, 54, 4, 10, 0, 2, 2, 1, 4, 255, 255, 255, 0, 3, 8, 10, 0, 2, 2, 10, 0, 2, 3, 51, 4,
            0, 1, 81, 128, 255,
        ]);
        let r = parse(&m).unwrap();
        assert_eq!((r.kind, r.xid, r.chaddr), (Kind::Ack, 7, MAC));
        let l = r.lease().unwrap();
        assert_eq!(l.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(l.prefix_len, 24);
        assert_eq!(l.router, Some(Ipv4Addr::new(10, 0, 2, 2)), "first of two routers");
        assert_eq!(l.server, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(l.lease, Duration::from_secs(86_400));
        assert_eq!((l.renew, l.rebind), (Duration::from_secs(43_200), Duration::from_secs(75_600)));
    }

    #[test]
    fn malformed_or_foreign_replies_are_refused() {
        let good = ack(&[53, 1, 5, 54, 4, 10, 0, 2, 2, 255]);
        assert!(parse(&good).is_some());
        // Every truncation of the options, and of the header, parses to None or a reply
        // without panicking.
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        assert!(parse(&good[..200]).is_none(), "header cut short");
        let mut request = good.clone();
        request[0] = 1;
        assert!(parse(&request).is_none(), "not a reply");
        assert!(parse(&ack(&[54, 4, 10, 0, 2, 2, 255])).is_none(), "no message type");
        assert!(parse(&ack(&[53, 1, 5, 54, 9, 10])).is_none(), "option overrunning the end");
        let no_server = parse(&ack(&[53, 1, 5, 255])).unwrap();
        assert!(no_server.lease().is_none(), "no server identifier");
        let bad_mask = parse(&ack(&[53, 1, 5, 54, 4, 10, 0, 2, 2, 1, 4, 255, 0, 255, 0, 255])).unwrap();
        assert!(bad_mask.lease().is_none(), "non-contiguous mask");
    }
}
