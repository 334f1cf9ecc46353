//! Which chain a received frame enters: by ingress port, then by an optional classifier
//! (VLAN id, source or destination prefix) when several chains share a port.

use nflet_nfs::addr::Prefix;
use nflet_nfs::packet::Meta;

use crate::config::Config;

/// A chain's match on frames of its ingress ports; empty lists match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classifier {
    /// Outermost VLAN id (frames without a tag never match a non-empty list).
    pub vlans: Vec<u16>,
    pub src: Vec<Prefix>,
    pub dst: Vec<Prefix>,
}

impl Classifier {
    pub fn is_empty(&self) -> bool {
        self.vlans.is_empty() && self.src.is_empty() && self.dst.is_empty()
    }

    #[inline]
    pub fn matches(&self, m: &Meta) -> bool {
        let family = m.key.family;
        (self.vlans.is_empty() || (m.vlan_count > 0 && self.vlans.contains(&m.vlans[0])))
            && (self.src.is_empty() || self.src.iter().any(|p| p.contains(family, &m.src)))
            && (self.dst.is_empty() || self.dst.iter().any(|p| p.contains(family, &m.dst)))
    }
}

/// The chains of one port.
#[derive(Debug, Clone, Default)]
enum PortChains {
    #[default]
    None,
    /// One chain takes everything (the common case: no per-packet work).
    One(usize),
    /// Classified chains in configuration order, then the port's default chain if any.
    Classified(Vec<(Classifier, usize)>, Option<usize>),
}

/// Chain selection for every port.
#[derive(Debug, Clone, Default)]
pub struct ChainSelector {
    ports: Vec<PortChains>,
}

impl ChainSelector {
    pub fn new(config: &Config) -> ChainSelector {
        let ports = (0..config.ports.len())
            .map(|p| {
                let mut classified = Vec::new();
                let mut default = None;
                for (i, c) in config.chains.iter().enumerate() {
                    if !c.ingress.iter().any(|id| usize::from(id.0) == p) {
                        continue;
                    }
                    if c.classifier.is_empty() {
                        default = default.or(Some(i));
                    } else {
                        classified.push((c.classifier.clone(), i));
                    }
                }
                match (classified.is_empty(), default) {
                    (true, None) => PortChains::None,
                    (true, Some(i)) => PortChains::One(i),
                    (false, d) => PortChains::Classified(classified, d),
                }
            })
            .collect();
        ChainSelector { ports }
    }

    /// Every chain frames of port `port` may enter.
    pub fn chains_of(&self, port: usize) -> impl Iterator<Item = usize> + '_ {
        let (list, one): (&[(Classifier, usize)], Option<usize>) = match self.ports.get(port) {
            None | Some(PortChains::None) => (&[], None),
            Some(PortChains::One(c)) => (&[], Some(*c)),
            Some(PortChains::Classified(list, default)) => (list, *default),
        };
        list.iter().map(|(_, c)| *c).chain(one)
    }

    /// The chain for a parsed frame, or `None` (dropped as `no_chain`).
    #[inline]
    pub fn select(&self, m: &Meta) -> Option<usize> {
        match self.ports.get(usize::from(m.ingress.0))? {
            PortChains::None => None,
            PortChains::One(c) => Some(*c),
            PortChains::Classified(list, default) => {
                list.iter().find(|(cl, _)| cl.matches(m)).map(|(_, c)| *c).or(*default)
            }
        }
    }
}
