//! Source-port classes of unsolicited inbound UDP, for per-protocol drop counters.
//!
//! Reflection/amplification attacks are named after the service the reflectors run (US-CERT
//! TA14-017A lists the usual ones), so an operator looking at the drop counters sees which
//! kind of reflector is aimed at the network. Everything else is `other`.

/// A reflector protocol, identified by the source port of the unsolicited datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReflectorClass {
    Chargen,
    Dns,
    Ntp,
    Snmp,
    Cldap,
    Ssdp,
    Memcached,
    Other,
}

impl ReflectorClass {
    /// Every class, in counter-index order.
    pub const ALL: [ReflectorClass; 8] = [
        ReflectorClass::Chargen,
        ReflectorClass::Dns,
        ReflectorClass::Ntp,
        ReflectorClass::Snmp,
        ReflectorClass::Cldap,
        ReflectorClass::Ssdp,
        ReflectorClass::Memcached,
        ReflectorClass::Other,
    ];

    /// The class of a datagram sent from `sport`.
    #[inline]
    pub fn of(sport: u16) -> ReflectorClass {
        match sport {
            19 => ReflectorClass::Chargen,
            53 => ReflectorClass::Dns,
            123 => ReflectorClass::Ntp,
            161 => ReflectorClass::Snmp,
            389 => ReflectorClass::Cldap,
            1900 => ReflectorClass::Ssdp,
            11211 => ReflectorClass::Memcached,
            _ => ReflectorClass::Other,
        }
    }

    /// Index into a `[u64; 8]` counter array.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The report counter name for drops of this class.
    pub fn counter_name(self) -> &'static str {
        match self {
            ReflectorClass::Chargen => "unsolicited_chargen",
            ReflectorClass::Dns => "unsolicited_dns",
            ReflectorClass::Ntp => "unsolicited_ntp",
            ReflectorClass::Snmp => "unsolicited_snmp",
            ReflectorClass::Cldap => "unsolicited_cldap",
            ReflectorClass::Ssdp => "unsolicited_ssdp",
            ReflectorClass::Memcached => "unsolicited_memcached",
            ReflectorClass::Other => "unsolicited_other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_map_to_classes_and_indices_are_dense() {
        let cases = [
            (19, ReflectorClass::Chargen),
            (53, ReflectorClass::Dns),
            (123, ReflectorClass::Ntp),
            (161, ReflectorClass::Snmp),
            (389, ReflectorClass::Cldap),
            (1900, ReflectorClass::Ssdp),
            (11211, ReflectorClass::Memcached),
            (0, ReflectorClass::Other),
            (54, ReflectorClass::Other),
            (65535, ReflectorClass::Other),
        ];
        for (port, class) in cases {
            assert_eq!(ReflectorClass::of(port), class, "port {port}");
        }
        for (i, c) in ReflectorClass::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
