//! What the ingress parser learned about a frame.

use crate::flow::{Dir, FlowKey, FAMILY_V4, FAMILY_V6};
use crate::ids::PortId;

/// Network-layer kind of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3Kind {
    /// ARP: forwarded by transparent chains, ignored by IP functions.
    Arp,
    #[default]
    Ipv4,
    Ipv6,
}

macro_rules! enum_with_unknown {
    ($(#[$m:meta])* pub enum $name:ident($ty:ty) { $($variant:ident = $value:expr,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)*
            Unknown($ty),
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                match v {
                    $($value => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for $ty {
            fn from(v: $name) -> $ty {
                match v {
                    $($name::$variant => $value,)*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}
pub(crate) use enum_with_unknown;

enum_with_unknown! {
    /// IP protocol / IPv6 next-header numbers nflet understands.
    pub enum IpProtocol(u8) {
        HopByHop = 0,
        Icmp = 1,
        Tcp = 6,
        Udp = 17,
        Ipv6Route = 43,
        Ipv6Frag = 44,
        Esp = 50,
        Ah = 51,
        Icmpv6 = 58,
        Ipv6NoNext = 59,
        Ipv6Opts = 60,
    }
}

impl Default for IpProtocol {
    fn default() -> Self {
        IpProtocol::Unknown(255)
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fragment {
    /// Not fragmented.
    #[default]
    None,
    /// First fragment (offset 0, more fragments): carries the L4 header.
    First,
    /// A later fragment: no L4 header, ports are unknown (zero in the key).
    Later,
}

/// TCP flags as they appear in byte 13 of the TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// Parsed metadata of one frame. Offsets are from the start of the frame and were validated
/// by the parser: `l3 <= l4 <= payload <= l3_end <= frame length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Port the frame arrived on.
    pub ingress: PortId,
    /// VLAN ids outermost first (802.1ad/802.1Q), `vlan_count` of them valid.
    pub vlans: [u16; 2],
    pub vlan_count: u8,
    pub l3_kind: L3Kind,
    /// Offset of the network header.
    pub l3: u16,
    /// Offset of the transport header (for IPv6, after the extension-header chain).
    pub l4: u16,
    /// Offset of the transport payload (equals `l4` when there is no L4 header).
    pub payload: u16,
    /// End of the IP datagram (frames may carry Ethernet padding after it).
    pub l3_end: u16,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub proto: IpProtocol,
    /// Source and destination addresses; IPv4 uses the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Ports for TCP/UDP; for ICMP echo the identifier in both; zero otherwise.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: TcpFlags,
    pub ttl: u8,
    pub fragment: Fragment,
    /// Direction-normalised flow key and the direction of this packet.
    pub key: FlowKey,
    pub dir: Dir,
    /// Symmetric hash of `key`.
    pub hash: u32,
}

impl Meta {
    /// True for IPv4 or IPv6 frames.
    pub fn is_ip(&self) -> bool {
        matches!(self.l3_kind, L3Kind::Ipv4 | L3Kind::Ipv6)
    }

    /// Length of the IP datagram in bytes.
    pub fn ip_len(&self) -> u16 {
        self.l3_end.saturating_sub(self.l3)
    }

    /// Length of the transport payload in bytes.
    pub fn payload_len(&self) -> u16 {
        self.l3_end.saturating_sub(self.payload)
    }

    /// Recomputes `key`, `dir` and `hash` from the addresses, ports and protocol, after a
    /// rewrite changed one of them. ARP frames get the zero key.
    #[inline]
    pub fn refresh_key(&mut self) {
        let family = match self.l3_kind {
            L3Kind::Ipv4 => FAMILY_V4,
            L3Kind::Ipv6 => FAMILY_V6,
            L3Kind::Arp => {
                self.key = FlowKey::default();
                self.dir = Dir::default();
                self.hash = self.key.hash();
                return;
            }
        };
        let (key, dir) = FlowKey::new(family, self.proto.into(), self.src, self.sport, self.dst, self.dport);
        self.key = key;
        self.dir = dir;
        self.hash = key.hash();
    }
}
