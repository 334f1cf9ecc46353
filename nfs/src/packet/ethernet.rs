//! Ethernet II frames and 802.1Q / 802.1ad VLAN tags.
//!
//! [`EthernetFrame::new_checked`] and [`VlanTag::new_checked`] validate the buffer length once;
//! no accessor or setter can panic afterwards. `new_unchecked` views over short buffers panic
//! on access.

use super::meta::enum_with_unknown;
use super::{get_array, get_u16, set_u16};
use crate::drop::DropReason;

enum_with_unknown! {
    /// EtherType values nflet understands (IEEE 802.3 / IANA).
    pub enum EtherType(u16) {
        Ipv4 = 0x0800,
        Arp = 0x0806,
        Vlan = 0x8100,
        QinQ = 0x88a8,
        Ipv6 = 0x86dd,
    }
}

impl EtherType {
    /// True for the tag protocol identifiers of 802.1Q (0x8100) and 802.1ad (0x88a8).
    #[inline]
    pub fn is_vlan(self) -> bool {
        matches!(self, EtherType::Vlan | EtherType::QinQ)
    }
}

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
    // VLAN tag, relative to the tag (which starts where the outer ethertype's payload does).
    pub const TCI: usize = 0;
    pub const INNER_ETHERTYPE: usize = 2;
    pub const TAG_PAYLOAD: usize = 4;
}

/// Length of the Ethernet II header (destination, source, ethertype).
pub const HEADER_LEN: usize = field::PAYLOAD;
/// Length of one VLAN tag after the tag protocol identifier: TCI and the next ethertype.
pub const VLAN_TAG_LEN: usize = field::TAG_PAYLOAD;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`HEADER_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps a buffer of at least [`HEADER_LEN`] bytes, else `Truncated`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::DST)
    }

    #[inline]
    pub fn src(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), field::SRC)
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(get_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the ethertype (possibly VLAN tags, then the network header).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DST..field::DST + 6].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SRC..field::SRC + 6].copy_from_slice(&mac);
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE, t.into());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut().get_mut(field::PAYLOAD..).unwrap_or_default()
    }
}

/// A view of one VLAN tag: the 4 bytes after a 0x8100/0x88a8 tag protocol identifier, i.e.
/// the tag control information (PCP, DEI, VID) and the ethertype of what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checks; accessors panic if it is shorter than [`VLAN_TAG_LEN`].
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps a buffer of at least [`VLAN_TAG_LEN`] bytes, else `Truncated`.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        if buffer.as_ref().len() < VLAN_TAG_LEN {
            return Err(DropReason::Truncated);
        }
        Ok(VlanTag { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), field::TCI) >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::TCI) & 0x1000 != 0
    }

    /// VLAN identifier (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TCI) & 0x0fff
    }

    /// Ethertype of what follows the tag (another tag's TPID, or the network protocol).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(get_u16(self.buffer.as_ref(), field::INNER_ETHERTYPE))
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::TAG_PAYLOAD..).unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = get_u16(self.buffer.as_ref(), field::TCI);
        let tci = (tci & 0x1fff) | (u16::from(pcp & 0x7) << 13);
        set_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        let tci = get_u16(self.buffer.as_ref(), field::TCI);
        let tci = (tci & !0x1000) | if dei { 0x1000 } else { 0 };
        set_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the VLAN identifier; bits above the low 12 are ignored.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = get_u16(self.buffer.as_ref(), field::TCI);
        set_u16(self.buffer.as_mut(), field::TCI, (tci & 0xf000) | (vid & 0x0fff));
    }

    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        set_u16(self.buffer.as_mut(), field::INNER_ETHERTYPE, t.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::golden;

    #[test]
    fn golden_qinq_frame() -> Result<(), DropReason> {
        let eth = EthernetFrame::new_checked(golden::QINQ_IPV4_UDP)?;
        assert_eq!(eth.dst(), [0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);
        assert_eq!(eth.src(), [0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(eth.ethertype(), EtherType::QinQ);
        let outer = VlanTag::new_checked(eth.payload())?;
        assert_eq!((outer.pcp(), outer.dei(), outer.vid()), (0, false, 100));
        assert_eq!(outer.ethertype(), EtherType::Vlan);
        let inner = VlanTag::new_checked(outer.payload())?;
        assert_eq!((inner.pcp(), inner.dei(), inner.vid()), (3, false, 200));
        assert_eq!(inner.ethertype(), EtherType::Ipv4);
        assert_eq!(inner.payload().first(), Some(&0x45));
        Ok(())
    }

    #[test]
    fn setters_round_trip() -> Result<(), DropReason> {
        let mut buf = [0u8; 18];
        let mut eth = EthernetFrame::new_checked(&mut buf[..])?;
        eth.set_dst([1, 2, 3, 4, 5, 6]);
        eth.set_src([7, 8, 9, 10, 11, 12]);
        eth.set_ethertype(EtherType::Vlan);
        let mut tag = VlanTag::new_checked(eth.payload_mut())?;
        tag.set_vid(0xffff);
        tag.set_pcp(5);
        tag.set_dei(true);
        tag.set_ethertype(EtherType::Unknown(0x1234));
        assert_eq!((tag.vid(), tag.pcp(), tag.dei()), (0x0fff, 5, true));
        tag.set_vid(42);
        assert_eq!((tag.vid(), tag.pcp(), tag.dei()), (42, 5, true));
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x81, 0x00, 0xb0, 42, 0x12, 0x34]);
        Ok(())
    }

    #[test]
    fn short_buffers_are_truncated() {
        assert_eq!(EthernetFrame::new_checked(&[0u8; 13][..]), Err(DropReason::Truncated));
        assert_eq!(VlanTag::new_checked(&[0u8; 3][..]), Err(DropReason::Truncated));
        assert_eq!(EthernetFrame::new_checked(&[0u8; 14][..]).map(|e| e.payload().len()), Ok(0));
    }

    #[test]
    fn ethertype_round_trips() {
        for v in [0x0800u16, 0x0806, 0x8100, 0x88a8, 0x86dd, 0x9100, 0] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert!(EtherType::QinQ.is_vlan() && EtherType::Vlan.is_vlan());
        assert!(!EtherType::Ipv4.is_vlan());
    }
}
