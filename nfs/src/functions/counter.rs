//! `counter`: counts packets and bytes, optionally per IP protocol. The smallest useful NF and
//! the template for writing one. Its counts are per NF instance, not per flow: nothing moves
//! with a flow in a scale-out (the defaults of `export_flow`/`import_flow`).

use serde::Deserialize;

use crate::nf::{Ctx, InitCtx, NetworkFunction, NfError, Report, Verdict};
use crate::packet::{IpProtocol, Meta};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {}

#[derive(Debug, Default)]
pub struct Counter {
    packets: u64,
    bytes: u64,
    tcp: u64,
    udp: u64,
    icmp: u64,
    other: u64,
}

impl NetworkFunction for Counter {
    const KIND: &'static str = "counter";
    type Config = CounterConfig;

    fn init(_config: &CounterConfig, _rt: &mut InitCtx<'_>) -> Result<Self, NfError> {
        Ok(Counter::default())
    }

    #[inline]
    fn process_packet(&mut self, _ctx: &Ctx, frame: &mut [u8], meta: &mut Meta) -> Verdict {
        self.packets += 1;
        self.bytes += frame.len() as u64;
        match meta.proto {
            IpProtocol::Tcp => self.tcp += 1,
            IpProtocol::Udp => self.udp += 1,
            IpProtocol::Icmp | IpProtocol::Icmpv6 => self.icmp += 1,
            _ => self.other += 1,
        }
        Verdict::Continue
    }

    fn report(&self, out: &mut Report) {
        out.counter("packets", self.packets);
        out.counter("bytes", self.bytes);
        out.counter("tcp", self.tcp);
        out.counter("udp", self.udp);
        out.counter("icmp", self.icmp);
        out.counter("other", self.other);
    }
}
