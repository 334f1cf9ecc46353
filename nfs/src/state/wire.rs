//! The byte format of per-flow state moving between instances (scale-out migration).
//!
//! Every NF writes its own record with a [`Writer`] and reads it back with a [`Reader`]: all
//! integers big-endian, every record starting with the NF kind's tag and a version byte the NF checks, and ending with
//! a check value ([`Writer::seal`], [`Reader::sealed`]) so a damaged record is refused. A
//! [`Reader`] is bounded by its slice: each read either returns a value from inside it or
//! fails with [`ImportError::Malformed`] naming what was being read, so format code is a
//! short sequence of `?`s and cannot panic or read past the input, whatever bytes arrive.
//!
//! Times never travel as absolute values (the instances' clocks differ): a deadline is sent
//! as the time left until it ([`Writer::remaining`]) and rebuilt on the importer's clock
//! ([`Reader::deadline`]).

use crate::nf::ImportError;

/// The kind tags that open every NF's record, so a record of one kind is never read as
/// another's.
pub mod tag {
    pub const NAT: u8 = 1;
    pub const FIREWALL: u8 = 2;
    pub const POLICER: u8 = 3;
    pub const IDS: u8 = 4;
    pub const LB: u8 = 5;
    pub const WHITELIST: u8 = 6;
    pub const MONITOR: u8 = 7;
}
use crate::time::Nanos;

/// FNV-1a over `bytes`: every single-byte change alters it, so a damaged record is refused
/// rather than installed with a wrong field.
fn check(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

/// Appends big-endian fields to a record.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Writer<'a> {
    /// A record appended to `out` from its current end.
    pub fn new(out: &'a mut Vec<u8>) -> Writer<'a> {
        let start = out.len();
        Writer { out, start }
    }

    /// Ends the record with a check value over it ([`Reader::sealed`] verifies it).
    pub fn seal(self) {
        let c = check(self.out.get(self.start..).unwrap_or_default());
        self.out.extend_from_slice(&c.to_be_bytes());
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }

    /// The record header: the NF kind's tag ([`tag`]) and the format version.
    pub fn header(&mut self, tag: u8, version: u8) -> &mut Self {
        self.u8(tag).u8(version)
    }

    /// The time left from `now` until absolute time `deadline` (0 when already past).
    pub fn remaining(&mut self, deadline: Nanos, now: Nanos) -> &mut Self {
        self.u64(deadline.saturating_sub(now).0)
    }

    /// The time elapsed from absolute time `then` until `now` (0 when `then` is later).
    pub fn age(&mut self, then: Nanos, now: Nanos) -> &mut Self {
        self.u64(now.saturating_sub(then).0)
    }
}

/// Reads big-endian fields from a record; every read is bounded by the input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    /// A reader over a record written with [`Writer::seal`], once its check value matches.
    pub fn sealed(bytes: &'a [u8]) -> Result<Reader<'a>, ImportError> {
        let at = bytes.len().checked_sub(4).ok_or(ImportError::Malformed("check value"))?;
        let (body, c) = bytes.split_at(at);
        let c: [u8; 4] = c.try_into().map_err(|_| ImportError::Malformed("check value"))?;
        if u32::from_be_bytes(c) != check(body) {
            return Err(ImportError::Malformed("check value (damaged record)"));
        }
        Ok(Reader { rest: body })
    }

    /// The next `n` bytes; `what` names the field in the error.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ImportError> {
        if self.rest.len() < n {
            return Err(ImportError::Malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ImportError> {
        self.take(N, what)?.try_into().map_err(|_| ImportError::Malformed(what))
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ImportError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, ImportError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, ImportError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, ImportError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A time left (see [`Writer::remaining`]) as an absolute deadline on this clock.
    pub fn deadline(&mut self, now: Nanos, what: &'static str) -> Result<Nanos, ImportError> {
        Ok(now.saturating_add(Nanos(self.u64(what)?)))
    }

    /// An age (see [`Writer::age`]) as an absolute time on this clock.
    pub fn since(&mut self, now: Nanos, what: &'static str) -> Result<Nanos, ImportError> {
        Ok(now.saturating_sub(Nanos(self.u64(what)?)))
    }

    /// The record's version byte, which must be `want`.
    pub fn version(&mut self, want: u8) -> Result<(), ImportError> {
        match self.u8("version")? {
            v if v == want => Ok(()),
            v => Err(ImportError::Version { got: v, want }),
        }
    }

    /// The record header written by [`Writer::header`]: tag `tag`, version `version`.
    pub fn header(&mut self, tag: u8, version: u8) -> Result<(), ImportError> {
        match self.u8("kind tag")? {
            t if t == tag => self.version(version),
            t => Err(ImportError::WrongKind { got: t, want: tag }),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Succeeds only when the whole input was read (trailing bytes mean a foreign format).
    pub fn finish(&self) -> Result<(), ImportError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ImportError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_fails() {
        let mut buf = Vec::new();
        Writer::new(&mut buf)
            .u8(1)
            .u8(7)
            .u16(0xbeef)
            .u32(0xdead_beef)
            .u64(42)
            .bytes(&[9, 9])
            .remaining(Nanos(150), Nanos(100));
        let read = |b: &[u8]| -> Result<_, ImportError> {
            let mut r = Reader::new(b);
            r.version(1)?;
            let v = (r.u8("a")?, r.u16("b")?, r.u32("c")?, r.u64("d")?, r.array::<2>("e")?);
            let d = r.deadline(Nanos(1000), "f")?;
            r.finish()?;
            Ok((v, d))
        };
        assert_eq!(read(&buf).unwrap(), ((7, 0xbeef, 0xdead_beef, 42, [9, 9]), Nanos(1050)));
        for n in 0..buf.len() {
            assert!(matches!(read(&buf[..n]), Err(ImportError::Malformed(_))), "len {n}");
        }
        let mut long = buf.clone();
        long.push(0);
        assert_eq!(read(&long).unwrap_err(), ImportError::Malformed("trailing bytes"));
        buf[0] = 2;
        assert_eq!(read(&buf).unwrap_err(), ImportError::Version { got: 2, want: 1 });
    }

    #[test]
    fn sealed_records_refuse_every_single_byte_change() {
        let mut buf = vec![0xaa];
        let mut w = Writer::new(&mut buf);
        w.header(tag::NAT, 1).u32(7).u64(u64::MAX);
        w.seal();
        let body = &buf[1..];
        let mut r = Reader::sealed(body).unwrap();
        r.header(tag::NAT, 1).unwrap();
        assert_eq!((r.u32("a").unwrap(), r.u64("b").unwrap()), (7, u64::MAX));
        r.finish().unwrap();
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut bad = body.to_vec();
                bad[i] ^= 1 << bit;
                assert!(Reader::sealed(&bad).is_err(), "byte {i} bit {bit}");
            }
        }
        for n in 0..body.len() {
            assert!(Reader::sealed(&body[..n]).is_err(), "len {n}");
        }
        let mut r = Reader::sealed(body).unwrap();
        assert_eq!(
            r.header(tag::FIREWALL, 1).unwrap_err(),
            ImportError::WrongKind { got: tag::NAT, want: tag::FIREWALL }
        );
    }

    #[test]
    fn times_are_relative() {
        let mut buf = Vec::new();
        Writer::new(&mut buf).remaining(Nanos(5), Nanos(10)).age(Nanos(4), Nanos(10));
        let mut r = Reader::new(&buf);
        assert_eq!(r.deadline(Nanos(1_000), "d").unwrap(), Nanos(1_000));
        assert_eq!(r.since(Nanos(1_000), "a").unwrap(), Nanos(994));
    }
}
