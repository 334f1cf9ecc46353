//! The management NIC: a NIC left on its kernel driver (virtio_net in QEMU) that carries the
//! appliance's management endpoint, while the data NICs belong to DPDK.
//!
//! As PID 1 nobody else configures the kernel's network stack, so [`configure`] does what
//! `ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add
//! default via 10.0.2.2` would: rtnetlink requests on a blocking socket, each acknowledged
//! by the kernel before the next (`netlink-packet-route` builds the messages, `netlink-sys`
//! owns the socket, so this module needs no `unsafe`). The address is static or leased by
//! DHCP ([`dhcp`](crate::dhcp)), renewed in the background for as long as the appliance runs.
//! Only PID 1 calls it: nflet run on a host never touches the host's network.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What to configure on the management NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The kernel's name for the NIC (`eth0`).
    pub name: String,
    /// Static IPv4 address and prefix length; `None`: only bring the link up.
    pub address: Option<(Ipv4Addr, u8)>,
    /// Default route via this address.
    pub gateway: Option<Ipv4Addr>,
    /// Lease the address (and the default route) by DHCP instead.
    pub dhcp: bool,
}

/// How long the first DHCP lease may take before the appliance runs without the NIC.
const DHCP_TIMEOUT: Duration = Duration::from_secs(30);

/// A step of the configuration that failed, with the kernel's reason.
#[derive(Debug)]
pub struct MgmtError {
    /// What was being done (`adding 10.0.2.15/24 to eth0`).
    pub step: String,
    pub reason: String,
}

impl std::fmt::Display for MgmtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "management NIC: {}: {}", self.step, self.reason)
    }
}

impl std::error::Error for MgmtError {}

/// How long to wait for the NIC to appear (its driver probes it while its module loads, so
/// normally it is there already).
const APPEAR: Duration = Duration::from_secs(3);

/// Brings `lo` and the NIC up, sets its address and the default route; logs each step.
pub fn configure(nic: &Interface) -> Result<(), MgmtError> {
    let fail = |step: &str| {
        let step = step.to_string();
        move |reason: String| MgmtError { step, reason }
    };
    let mut nl = Rtnl::open().map_err(fail("opening a netlink socket"))?;
    let lo = ifindex("lo").map_err(fail("finding lo"))?;
    nl.request(link_up(lo)).map_err(fail("bringing lo up"))?;
    let index = wait_for(&nic.name, APPEAR).map_err(fail(&format!("finding {}", nic.name)))?;
    nl.request(link_up(index)).map_err(fail(&format!("bringing {} up", nic.name)))?;
    log::info!("boot: management NIC {} (ifindex {index}) is up", nic.name);
    if let Some((addr, len)) = nic.address {
        nl.request(add_address(index, addr, len))
            .map_err(fail(&format!("adding {addr}/{len} to {}", nic.name)))?;
        log::info!("boot: management NIC {}: address {addr}/{len}", nic.name);
    }
    if let Some(gw) = nic.gateway {
        nl.request(default_route(index, gw))
            .map_err(fail(&format!("adding the default route via {gw} on {}", nic.name)))?;
        log::info!("boot: management NIC {}: default route via {gw}", nic.name);
    }
    if nic.dhcp {
        let mac = mac_of(&nic.name).map_err(fail(&format!("reading the MAC address of {}", nic.name)))?;
        let mut client =
            crate::dhcp::Client::open(&nic.name, mac).map_err(fail("opening the DHCP socket"))?;
        let lease =
            client.acquire(DHCP_TIMEOUT).map_err(fail(&format!("leasing an address for {}", nic.name)))?;
        apply_lease(&mut nl, index, &nic.name, &lease).map_err(fail("applying the DHCP lease"))?;
        let name = nic.name.clone();
        let spawned = std::thread::Builder::new()
            .name("nflet-dhcp".into())
            .spawn(move || keep_lease(client, nl, index, &name, lease));
        if let Err(e) = spawned {
            log::error!("boot: cannot start the DHCP renewal thread ({e}); the lease will not be renewed");
        }
    }
    Ok(())
}

fn apply_lease(nl: &mut Rtnl, index: u32, name: &str, l: &crate::dhcp::Lease) -> Result<(), String> {
    nl.request(add_address(index, l.address, l.prefix_len))?;
    if let Some(gw) = l.router {
        nl.request(default_route(index, gw))?;
    }
    log::info!(
        "boot: management NIC {name}: DHCP lease {}/{} router {} from {} for {} s",
        l.address,
        l.prefix_len,
        l.router.map_or_else(|| "none".to_string(), |r| r.to_string()),
        l.server,
        l.lease.as_secs()
    );
    Ok(())
}

/// Renews at T1 (unicast), rebinds at T2 (broadcast), starts over when the lease ran out.
fn keep_lease(
    mut client: crate::dhcp::Client,
    mut nl: Rtnl,
    index: u32,
    name: &str,
    mut lease: crate::dhcp::Lease,
) {
    let mut granted = Instant::now();
    loop {
        let since = granted.elapsed();
        let (rebinding, next) = if since < lease.renew {
            (false, lease.renew - since)
        } else if since < lease.rebind {
            (false, Duration::ZERO)
        } else {
            (true, Duration::ZERO)
        };
        std::thread::sleep(next.max(Duration::from_secs(1)));
        let renewed = if granted.elapsed() >= lease.lease {
            log::warn!(
                "boot: management NIC {name}: the DHCP lease of {} ran out; leasing again",
                lease.address
            );
            client.acquire(DHCP_TIMEOUT).map(Some)
        } else {
            client.renew(&lease, rebinding, Duration::from_secs(5))
        };
        match renewed {
            Ok(Some(l)) => {
                if l.address != lease.address || l.router != lease.router {
                    if let Err(e) = apply_lease(&mut nl, index, name, &l) {
                        log::error!("boot: management NIC {name}: applying the renewed lease: {e}");
                    }
                } else {
                    log::info!(
                        "boot: management NIC {name}: DHCP lease of {} renewed for {} s",
                        l.address,
                        l.lease.as_secs()
                    );
                }
                lease = l;
                granted = Instant::now();
            }
            Ok(None) => std::thread::sleep(Duration::from_secs(5)),
            Err(e) => {
                log::warn!("boot: management NIC {name}: DHCP: {e}");
                std::thread::sleep(Duration::from_secs(5));
            }
        }
    }
}

/// The NIC's hardware address, from sysfs.
fn mac_of(name: &str) -> Result<[u8; 6], String> {
    let text = std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("address"))
        .map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = text.trim().split(':').filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    bytes.try_into().map_err(|_| format!("unexpected address `{}`", text.trim()))
}

/// The interface index of `name`, from sysfs.
fn ifindex(name: &str) -> Result<u32, String> {
    let path = Path::new("/sys/class/net").join(name).join("ifindex");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| format!("{}: `{}`: {e}", path.display(), text.trim())),
        Err(e) => {
            let present: Vec<String> = std::fs::read_dir("/sys/class/net")
                .map(|d| {
                    d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
                })
                .unwrap_or_default();
            Err(format!(
                "no such interface ({e}); the kernel has: {} — set `[management] iface` to one of them",
                present.join(", ")
            ))
        }
    }
}

fn wait_for(name: &str, timeout: Duration) -> Result<u32, String> {
    let start = Instant::now();
    loop {
        match ifindex(name) {
            Ok(i) => return Ok(i),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `ip link set dev <index> up`.
fn link_up(index: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    RouteNetlinkMessage::SetLink(m)
}

/// `ip addr replace <addr>/<len> brd + dev <index>`.
fn add_address(index: u32, addr: Ipv4Addr, len: u8) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = len;
    m.header.scope = AddressScope::Universe;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    m.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
    if len < 31 {
        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        m.attributes.push(AddressAttribute::Broadcast(Ipv4Addr::from(u32::from(addr) | host)));
    }
    RouteNetlinkMessage::NewAddress(m)
}

/// `ip route replace default via <gw> dev <index>`.
fn default_route(index: u32, gw: Ipv4Addr) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m.header.destination_prefix_length = 0;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Static;
    m.header.scope = RouteScope::Universe;
    m.header.kind = RouteType::Unicast;
    m.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    m.attributes.push(RouteAttribute::Oif(index));
    RouteNetlinkMessage::NewRoute(m)
}

/// A blocking rtnetlink socket that sends one request at a time and waits for its ACK.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> Result<Rtnl, String> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| e.to_string())?;
        socket.bind_auto().map_err(|e| format!("bind: {e}"))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| format!("connect: {e}"))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends `msg` (create-or-replace) and waits for the kernel's answer.
    fn request(&mut self, msg: RouteNetlinkMessage) -> Result<(), String> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = encode(msg, self.seq);
        self.socket.send(&bytes, 0).map_err(|e| format!("sending the request: {e}"))?;
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            let n = self.socket.recv(&mut buf, 0).map_err(|e| format!("reading the answer: {e}"))?;
            let mut at = 0;
            while at < n.min(buf.len()) {
                let rest = buf.get(at..).unwrap_or_default();
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| format!("unreadable answer from the kernel: {e}"))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(e) = reply.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(std::io::Error::from_raw_os_error(-code.get()).to_string()),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                at += len.next_multiple_of(4);
            }
        }
    }
}

/// The request's bytes: `msg` with REQUEST|ACK|CREATE|REPLACE and sequence number `seq`.
fn encode(msg: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    header.sequence_number = seq;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    m.finalize();
    let mut bytes = vec![0; m.buffer_len()];
    m.serialize(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The requests decode back to what `ip` would send.
    #[test]
    fn requests_round_trip() {
        let bytes = encode(add_address(2, Ipv4Addr::new(10, 0, 2, 15), 24), 7);
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        assert_eq!(m.header.sequence_number, 7);
        assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE);
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) = m.payload else {
            panic!("not RTM_NEWADDR: {:?}", m.payload)
        };
        assert_eq!((a.header.index, a.header.prefix_len), (2, 24));
        assert!(a.attributes.contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 0, 2, 255))));
        assert!(a.attributes.contains(&AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(10, 0, 2, 15)))));

        let bytes = encode(default_route(2, Ipv4Addr::new(10, 0, 2, 2)), 8);
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) = m.payload else {
            panic!("not RTM_NEWROUTE")
        };
        assert_eq!(r.header.destination_prefix_length, 0);
        assert_eq!(r.header.table, RouteHeader::RT_TABLE_MAIN);
        assert!(r
            .attributes
            .contains(&RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 2, 2)))));
        assert!(r.attributes.contains(&RouteAttribute::Oif(2)));

        let bytes = encode(link_up(1), 9);
        let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes).unwrap();
        let NetlinkPayload::InnerMessage(RouteNetlinkMessage::SetLink(l)) = m.payload else {
            panic!("not RTM_SETLINK")
        };
        assert_eq!((l.header.index, l.header.flags, l.header.change_mask), (1, LinkFlags::Up, LinkFlags::Up));
    }

    #[test]
    fn a_missing_interface_lists_the_present_ones() {
        let e = ifindex("nflet-none0").unwrap_err();
        assert!(e.contains("no such interface") && e.contains("lo"), "{e}");
    }

    /// The real thing, in a network namespace of a thread of its own (root only; skipped
    /// otherwise): `lo` gets an address and a default route, as the management NIC would.
    #[test]
    fn configures_an_interface_in_a_fresh_network_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let out = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // sysfs shows the namespace it was mounted in: read lo's index from rtnetlink's
            // point of view instead (lo is always 1 in a new namespace).
            let mut nl = Rtnl::open().unwrap();
            nl.request(link_up(1)).unwrap();
            nl.request(add_address(1, Ipv4Addr::new(10, 99, 0, 5), 24)).unwrap();
            nl.request(default_route(1, Ipv4Addr::new(10, 99, 0, 1))).unwrap();
            // Again: replacing is not an error (a re-run must not fail).
            nl.request(add_address(1, Ipv4Addr::new(10, 99, 0, 5), 24)).unwrap();
            let err = nl.request(link_up(999)).unwrap_err();
            let route = std::fs::read_to_string("/proc/thread-self/net/route").unwrap();
            let trie = std::fs::read_to_string("/proc/thread-self/net/fib_trie").unwrap();
            (err, route, trie)
        })
        .join()
        .unwrap();
        let (err, route, trie) = out;
        assert!(err.contains("No such device"), "{err}");
        // Default route (destination 0) via 10.99.0.1 (little-endian hex 0100630A).
        assert!(
            route.lines().any(|l| l.split_whitespace().take(3).eq(["lo", "00000000", "0100630A"])),
            "{route}"
        );
        assert!(trie.contains("10.99.0.5"), "{trie}");
    }
}
