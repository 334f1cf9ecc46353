//! ESP tunnel mode with AES-GCM (RFC 4303, RFC 4106): encapsulation and decapsulation of one
//! frame, in place.
//!
//! Outbound, `[L2][inner IP]` becomes `[L2][outer IPv4][SPI|seq][IV][inner IP|pad|pad len|next
//! header]*[ICV]` (`*` = encrypted); inbound, the reverse. The IV is the 64-bit sequence number
//! (RFC 4106 §3.1 permits any value that never repeats under a key, and the sequence number
//! never repeats on an SA: see [`OutSa`]), so a nonce (salt ‖ IV) is never used twice.
//! Encryption and decryption are in place and detached (the ICV is written or read beside
//! the ciphertext): nothing is allocated per packet.

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::config::{DfMode, DirParams, KeyLen, SaParams};
use super::replay::{Refused, Window};
use crate::drop::DropReason;
use crate::frame::Frame;
use crate::nf::NfError;
use crate::packet::checksum;
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::ipv6::Ipv6Packet;
use crate::packet::Meta;

/// Outer IPv4 header, ESP header (SPI, sequence number) and IV.
pub const OUTER_IP: usize = 20;
pub const ESP_HDR: usize = 8;
pub const IV_LEN: usize = 8;
pub const ICV_LEN: usize = 16;
/// Bytes in front of the inner packet.
pub const HEAD: usize = OUTER_IP + ESP_HDR + IV_LEN;
/// Next header values of the payload (RFC 4303 §2.6).
pub const NH_IPV4: u8 = 4;
pub const NH_IPV6: u8 = 41;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// An AES-GCM key, expanded once per SA (ring: AES-NI and CLMUL/AVX code picked at run time,
/// constant-time; the nonce is ours to keep unique, which the sequence number does).
pub struct Cipher {
    key: LessSafeKey,
    len: KeyLen,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.len {
            KeyLen::Aes128 => "AES-128-GCM",
            KeyLen::Aes256 => "AES-256-GCM",
        })
    }
}

/// The ICV did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadIcv;

impl Cipher {
    pub fn new(len: KeyLen, key: &[u8]) -> Option<Cipher> {
        let alg = match len {
            KeyLen::Aes128 => &AES_128_GCM,
            KeyLen::Aes256 => &AES_256_GCM,
        };
        Some(Cipher { key: LessSafeKey::new(UnboundKey::new(alg, key).ok()?), len })
    }

    /// Encrypts `buf` in place and returns the ICV.
    #[inline]
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> Result<[u8; ICV_LEN], BadIcv> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .map_err(|_| BadIcv)?;
        let mut icv = [0u8; ICV_LEN];
        icv.copy_from_slice(tag.as_ref());
        Ok(icv)
    }

    /// Verifies `icv` and decrypts `buf` in place. On failure `buf`'s contents are
    /// unspecified: the caller drops the packet.
    #[inline]
    pub fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        icv: &[u8; ICV_LEN],
    ) -> Result<(), BadIcv> {
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*icv),
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| BadIcv)
    }
}

fn cipher(what: &str, d: &DirParams) -> Result<Cipher, NfError> {
    Cipher::new(d.key_len, &d.key)
        .ok_or_else(|| NfError::Param { key: what.to_string(), detail: "bad AES-GCM key length".into() })
}

/// AAD (RFC 4106 §5): SPI ‖ sequence number, with ESN SPI ‖ high 32 bits ‖ low 32 bits.
#[inline]
fn aad(spi: u32, seq: u64, esn: bool, out: &mut [u8; 12]) -> usize {
    out[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        out[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        out[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
        12
    } else {
        out[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        8
    }
}

#[inline]
fn nonce(salt: [u8; 4], iv: [u8; 8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&salt);
    n[4..].copy_from_slice(&iv);
    n
}

/// The sending half of an SA, owned by one core.
#[derive(Debug)]
pub struct OutSa {
    cipher: Cipher,
    spi: u32,
    salt: [u8; 4],
    esn: bool,
    /// Packets sent; the next sequence number is `sent + 1`.
    pub(super) sent: u64,
    /// The last sequence number this SA may send: 2^32 − 1, or 2^64 − 1 with ESN
    /// (RFC 4303 §3.3.3: the counter never cycles; the SA must be rekeyed).
    max: u64,
    soft_limit: u64,
    /// Set once `soft_limit` packets have been sent.
    pub rekey_needed: bool,
    local: [u8; 4],
    remote: [u8; 4],
    ttl: u8,
    df: DfMode,
}

impl OutSa {
    pub fn new(p: &SaParams) -> Result<OutSa, NfError> {
        Ok(OutSa {
            cipher: cipher("outbound.key", &p.out)?,
            spi: p.out.spi,
            salt: p.out.salt,
            esn: p.esn,
            sent: 0,
            max: if p.esn { u64::MAX } else { u64::from(u32::MAX) },
            soft_limit: p.soft_limit,
            rekey_needed: false,
            local: p.local,
            remote: p.remote,
            ttl: p.ttl,
            df: p.df,
        })
    }

    /// Encapsulates the IP packet of `frame` (at `meta.l3 .. meta.l3_end`) in ESP, first
    /// decrementing its TTL when `decrement_ttl` (RFC 4301 §5.1.2.1: the gateway forwards the
    /// inner packet; Linux routes, then xfrm encapsulates; a TTL that would reach 0 is
    /// `ttl_expired`). Returns whether this packet crossed the soft limit. On error the frame
    /// is unchanged.
    pub fn encapsulate<F: Frame>(
        &mut self,
        frame: &mut F,
        meta: &mut Meta,
        decrement_ttl: bool,
    ) -> Result<bool, DropReason> {
        if self.sent >= self.max {
            return Err(DropReason::IpsecSeqOverflow);
        }
        let l3 = usize::from(meta.l3);
        let inner_len = usize::from(meta.ip_len());
        let pad = (4 - (inner_len + 2) % 4) % 4;
        let plain_len = inner_len + pad + 2;
        let outer_len = HEAD + plain_len + ICV_LEN;
        let new_len = l3 + outer_len;
        if outer_len > usize::from(u16::MAX) || new_len > frame.room() || l3 < 2 {
            return Err(DropReason::IpsecNoRoom);
        }
        if decrement_ttl {
            crate::packet::rewrite::decrement_ttl(frame.as_mut(), meta)?;
        }
        // The inner header's DSCP/ECN and DF, read before the packet moves.
        let (tos, inner_df, nh) = {
            let b = frame.as_ref();
            let b0 = b.get(l3).copied().unwrap_or(0);
            let b1 = b.get(l3 + 1).copied().unwrap_or(0);
            if b0 >> 4 == 6 {
                ((b0 << 4) | (b1 >> 4), true, NH_IPV6)
            } else {
                (b1, b.get(l3 + 6).is_some_and(|f| f & 0x40 != 0), NH_IPV4)
            }
        };
        let seq = self.sent + 1;
        // Ethernet padding after the datagram goes; then the gap for the headers.
        frame.set_frame_len(l3 + inner_len).map_err(|_| DropReason::IpsecNoRoom)?;
        frame.insert_gap(l3, HEAD).map_err(|_| DropReason::IpsecNoRoom)?;
        frame.set_frame_len(new_len).map_err(|_| DropReason::IpsecNoRoom)?;
        let buf = frame.as_mut();
        if let Some(et) = buf.get_mut(l3 - 2..l3) {
            et.copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        }
        let pkt = buf.get_mut(l3..new_len).ok_or(DropReason::IpsecNoRoom)?;
        let (hdr, rest) = pkt.split_at_mut(HEAD);
        let (plain, icv) = rest.split_at_mut(plain_len);
        // RFC 4303 §2.4: padding bytes 1, 2, 3, ...; then pad length and next header.
        let tail = plain.get_mut(inner_len..).ok_or(DropReason::IpsecNoRoom)?;
        for (i, b) in tail.iter_mut().take(pad).enumerate() {
            *b = i as u8 + 1;
        }
        if let [.., pl, n] = tail {
            *pl = pad as u8;
            *n = nh;
        }
        let df = match self.df {
            DfMode::Copy => inner_df,
            DfMode::Set => true,
            DfMode::Clear => false,
        };
        // Outer IPv4 header: DSCP and ECN copied from the inner header (RFC 4301 §5.1.2.1,
        // RFC 6040 normal mode), identification from the sequence number.
        hdr[0] = 0x45;
        hdr[1] = tos;
        hdr[2..4].copy_from_slice(&(outer_len as u16).to_be_bytes());
        hdr[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
        hdr[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
        hdr[8] = self.ttl;
        hdr[9] = 50;
        hdr[10..12].copy_from_slice(&[0, 0]);
        hdr[12..16].copy_from_slice(&self.local);
        hdr[16..20].copy_from_slice(&self.remote);
        let c = checksum::checksum(&hdr[..OUTER_IP]);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        hdr[20..24].copy_from_slice(&self.spi.to_be_bytes());
        hdr[24..28].copy_from_slice(&(seq as u32).to_be_bytes());
        let iv = seq.to_be_bytes();
        hdr[28..36].copy_from_slice(&iv);
        let mut a = [0u8; 12];
        let alen = aad(self.spi, seq, self.esn, &mut a);
        let tag = self
            .cipher
            .seal(&nonce(self.salt, iv), a.get(..alen).unwrap_or_default(), plain)
            .map_err(|_| DropReason::IpsecNoRoom)?;
        icv.copy_from_slice(&tag);
        self.sent = seq;
        let crossed = seq >= self.soft_limit && !self.rekey_needed;
        self.rekey_needed |= crossed;
        Ok(crossed)
    }
}

/// The receiving half of an SA, owned by one core.
#[derive(Debug)]
pub struct InSa {
    cipher: Cipher,
    spi: u32,
    salt: [u8; 4],
    esn: bool,
    pub(super) window: Window,
}

impl InSa {
    pub fn new(p: &SaParams) -> Result<InSa, NfError> {
        Ok(InSa {
            cipher: cipher("inbound.key", &p.inb)?,
            spi: p.inb.spi,
            salt: p.inb.salt,
            esn: p.esn,
            window: Window::new(p.window, p.esn),
        })
    }

    /// Verifies, decrypts and strips the ESP packet of `frame` (ESP header at `meta.l4`),
    /// leaving the L2 header followed by the inner packet, with the ethertype set for it.
    /// Returns the inner packet's ethertype.
    pub fn decapsulate<F: Frame>(&mut self, frame: &mut F, meta: &Meta) -> Result<u16, DropReason> {
        let l3 = usize::from(meta.l3);
        let l4 = usize::from(meta.l4);
        let end = usize::from(meta.l3_end);
        let esp = frame.as_ref().get(l4..end).ok_or(DropReason::IpsecTruncated)?;
        // At least the headers, the ICV, and the pad length and next header bytes.
        if esp.len() < ESP_HDR + IV_LEN + 2 + ICV_LEN || l3 < 2 {
            return Err(DropReason::IpsecTruncated);
        }
        // The outer header's ECN field, for the inner packet (RFC 6040 §4.2). The outer header
        // is not covered by the ICV: a router on the path may have marked it CE.
        let outer_ecn = frame.as_ref().get(l3 + 1).map_or(0, |tos| tos & 3);
        let seql = u32::from_be_bytes([esp[4], esp[5], esp[6], esp[7]]);
        let mut iv = [0u8; 8];
        iv.copy_from_slice(&esp[8..16]);
        let seq = self.window.infer(seql).ok_or(DropReason::IpsecTooOld)?;
        self.window.check(seq).map_err(|r| match r {
            Refused::Replayed => DropReason::IpsecReplayed,
            Refused::TooOld => DropReason::IpsecTooOld,
        })?;
        let mut a = [0u8; 12];
        let alen = aad(self.spi, seq, self.esn, &mut a);
        let ct_len = esp.len() - ESP_HDR - IV_LEN - ICV_LEN;
        let mut icv = [0u8; ICV_LEN];
        icv.copy_from_slice(&esp[esp.len() - ICV_LEN..]);
        let ct_start = l4 + ESP_HDR + IV_LEN;
        let ct = frame.as_mut().get_mut(ct_start..ct_start + ct_len).ok_or(DropReason::IpsecTruncated)?;
        self.cipher
            .open(&nonce(self.salt, iv), a.get(..alen).unwrap_or_default(), ct, &icv)
            .map_err(|_| DropReason::IpsecBadIcv)?;
        // RFC 4303 §3.4.3: the window moves only once the ICV verified.
        self.window.accept(seq);
        let (pad_len, nh) = match ct {
            [.., p, n] => (usize::from(*p), *n),
            _ => return Err(DropReason::IpsecTruncated),
        };
        let inner_len = ct_len.checked_sub(pad_len + 2).ok_or(DropReason::IpsecBadPadding)?;
        let pad = ct.get(inner_len..inner_len + pad_len).ok_or(DropReason::IpsecBadPadding)?;
        // RFC 4303 §2.4: the receiver checks the default padding 1, 2, 3, ...
        if pad.iter().enumerate().any(|(i, b)| usize::from(*b) != i + 1) {
            return Err(DropReason::IpsecBadPadding);
        }
        let ethertype = match nh {
            NH_IPV4 => ETHERTYPE_IPV4,
            NH_IPV6 => ETHERTYPE_IPV6,
            // Dummy packets (59, RFC 4303 §2.6) and anything that is not a tunnelled IP packet.
            _ => return Err(DropReason::IpsecBadInner),
        };
        frame.set_frame_len(ct_start + inner_len).map_err(|_| DropReason::IpsecTruncated)?;
        frame.remove_range(l3, ct_start - l3);
        if let Some(et) = frame.as_mut().get_mut(l3 - 2..l3) {
            et.copy_from_slice(&ethertype.to_be_bytes());
        }
        // A malformed inner header is left as it is: re-parsing refuses it (`ipsec_bad_inner`).
        let inner = frame.as_mut().get_mut(l3..).unwrap_or_default();
        if ethertype == ETHERTYPE_IPV4 {
            if let Ok(mut ip) = Ipv4Packet::new_checked(inner) {
                let ecn = decap_ecn(ip.ecn(), outer_ecn)?;
                if ecn != ip.ecn() {
                    ip.set_ecn(ecn);
                }
            }
        } else if let Ok(mut ip) = Ipv6Packet::new_checked(inner) {
            let ecn = decap_ecn(ip.ecn(), outer_ecn)?;
            if ecn != ip.ecn() {
                ip.set_ecn(ecn);
            }
        }
        Ok(ethertype)
    }
}

/// ECN codepoints (RFC 3168 §5).
const NOT_ECT: u8 = 0;
const ECT1: u8 = 1;
const ECT0: u8 = 2;
const CE: u8 = 3;

/// The ECN field of a decapsulated packet from its inner and outer ones (RFC 6040 §4.2,
/// Figure 4, as Linux's `INET_ECN_decapsulate` does): a CE mark on the outer header is passed
/// on to an ECN-capable inner packet, and is a drop over a Not-ECT one (its sender would never
/// learn of the congestion); outer ECT(1) over inner ECT(0) gives ECT(1).
pub fn decap_ecn(inner: u8, outer: u8) -> Result<u8, DropReason> {
    match (inner & 3, outer & 3) {
        (NOT_ECT, CE) => Err(DropReason::IpsecCeNotEct),
        (NOT_ECT, _) => Ok(NOT_ECT),
        (CE, _) | (_, CE) => Ok(CE),
        (ECT0, ECT1) => Ok(ECT1),
        (i, _) => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// GCM specification (McGrew & Viega) test cases 4 (AES-128) and 16 (AES-256): the
    /// AES-GCM the ESP code calls, with a 12-byte nonce, AAD, and a detached 16-byte tag.
    #[test]
    fn gcm_known_answers() {
        let p = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
        let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let nonce: [u8; 12] = h("cafebabefacedbaddecaf888").try_into().unwrap();
        let k = "feffe9928665731c6d6a8f9467308308";
        let cases = [
            (KeyLen::Aes128, h(k), "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091", "5bc94fbc3221a5db94fae95ae7121a47"),
            (KeyLen::Aes256, h(&format!("{k}{k}")), "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662", "76fc6ece0f4e1768cddf8853bb2d551b"),
        ];
        for (len, key, ct, tag) in cases {
            let c = Cipher::new(len, &key).unwrap();
            let mut buf = p.clone();
            let t = c.seal(&nonce, &aad, &mut buf).unwrap();
            assert_eq!(buf, h(ct), "{len:?} ciphertext");
            assert_eq!(t.to_vec(), h(tag), "{len:?} tag");
            c.open(&nonce, &aad, &mut buf, &t).unwrap();
            assert_eq!(buf, p);
            let mut bad = t;
            bad[0] ^= 1;
            let mut buf2 = h(ct);
            assert_eq!(c.open(&nonce, &aad, &mut buf2, &bad), Err(BadIcv));
        }
        assert!(Cipher::new(KeyLen::Aes128, &[0; 15]).is_none());
    }
}
