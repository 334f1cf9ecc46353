//! `ipsec` configuration: the serde shape of the `[[nf]]` table (security associations and
//! policies) and its validation into [`Settings`], the typed form the packet path reads.
//!
//! One `[[nf.sa]]` is a pair of Linux xfrm states between the same tunnel endpoints: the
//! outbound state (`src local dst remote spi outbound.spi`) and the inbound one (`src remote
//! dst local spi inbound.spi`), each with its `aead 'rfc4106(gcm(aes))' 0x<key><salt> 128`.

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::addr::{OneOrMany, PortRange, Prefix, ProtoMatch};
use crate::flow::{FAMILY_V4, FAMILY_V6};
use crate::ids::PortId;
use crate::nf::{InitCtx, NfError};

/// What a policy does with the packets it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Encrypt through the policy's SA.
    #[default]
    Protect,
    /// Pass in the clear.
    Bypass,
    /// Drop (`ipsec_discard`).
    Discard,
}

/// How the outer header's DF bit is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DfMode {
    /// An IPv4 inner packet's DF bit; set for IPv6 inner packets (routers never fragment IPv6).
    #[default]
    Copy,
    Set,
    Clear,
}

/// One direction of an SA as `ip xfrm state` gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// Security parameter index (`spi 0x...`); TOML accepts `0x1000` as an integer.
    pub spi: u32,
    /// AEAD key material as `ip xfrm` takes it: the AES key (16 or 32 bytes) followed by the
    /// 4-byte salt, in hex, with or without `0x`.
    pub key: String,
    /// ICV length in bits; only 128 (the `128` after the key in `ip xfrm`).
    #[serde(default = "default_icv_bits")]
    pub icv_bits: u32,
}

fn default_icv_bits() -> u32 {
    128
}

/// `[[nf.sa]]`: a pair of SAs between two tunnel endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaConfig {
    pub name: String,
    /// This appliance's tunnel endpoint (outer source when sending, outer destination when
    /// receiving).
    pub local: Ipv4Addr,
    /// The peer's tunnel endpoint.
    pub remote: Ipv4Addr,
    pub outbound: DirConfig,
    pub inbound: DirConfig,
    /// Anti-replay window in packets (`replay-window N`): 64 to 4096, a multiple of 64.
    #[serde(default = "default_window")]
    pub replay_window: u32,
    /// 64-bit extended sequence numbers (`flag esn`).
    #[serde(default)]
    pub esn: bool,
    /// Outbound packets after which `rekey_needed` is raised (default: 7/8 of the sequence
    /// space).
    #[serde(default)]
    pub soft_limit_packets: Option<u64>,
    /// Outer TTL.
    #[serde(default = "default_ttl")]
    pub ttl: u8,
    #[serde(default)]
    pub df: DfMode,
}

fn default_window() -> u32 {
    64
}

fn default_ttl() -> u8 {
    64
}

/// `[[nf.policy]]`: a selector over inner (cleartext) packets, written for the outbound
/// direction; inbound packets decrypted on its SA must match it with source and destination
/// (addresses and ports) swapped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub action: Action,
    /// SA name (required for `protect`).
    #[serde(default)]
    pub sa: Option<String>,
    /// Inner source prefix(es); default: any address of `dst`'s family (or both families).
    #[serde(default)]
    pub src: OneOrMany<Prefix>,
    #[serde(default)]
    pub dst: OneOrMany<Prefix>,
    #[serde(default)]
    pub proto: ProtoMatch,
    #[serde(default = "any_port")]
    pub sport: PortRange,
    #[serde(default = "any_port")]
    pub dport: PortRange,
}

fn any_port() -> PortRange {
    PortRange::ANY
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecConfig {
    /// Ports whose cleartext traffic is matched against the policies (default: every port).
    #[serde(default)]
    pub inside: OneOrMany<String>,
    /// Action for cleartext packets no policy selects.
    #[serde(default = "default_unmatched")]
    pub unmatched: Action,
    #[serde(default)]
    pub sa: Vec<SaConfig>,
    #[serde(default)]
    pub policy: Vec<PolicyConfig>,
    /// Decrement the inner packet's TTL (hop limit) before encapsulating it, as a router does
    /// (RFC 4301 §5.1.2.1); `false` for a bump in the wire that must not touch it.
    #[serde(default = "default_true")]
    pub decrement_ttl: bool,
}

fn default_true() -> bool {
    true
}

fn default_unmatched() -> Action {
    Action::Bypass
}

/// AES-GCM key length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLen {
    Aes128,
    Aes256,
}

/// One direction's validated parameters.
#[derive(Debug, Clone)]
pub struct DirParams {
    pub spi: u32,
    pub key: Vec<u8>,
    pub key_len: KeyLen,
    pub salt: [u8; 4],
}

/// A validated SA pair.
#[derive(Debug, Clone)]
pub struct SaParams {
    pub name: String,
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub out: DirParams,
    pub inb: DirParams,
    pub window: u32,
    pub esn: bool,
    pub soft_limit: u64,
    pub ttl: u8,
    pub df: DfMode,
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub action: Action,
    /// Index into [`Settings::sas`] (protect only).
    pub sa: Option<usize>,
    /// Empty means any address.
    pub src: Vec<Prefix>,
    pub dst: Vec<Prefix>,
    /// Families the policy applies to (from its prefixes; both when it has none).
    pub v4: bool,
    pub v6: bool,
    pub proto: ProtoMatch,
    pub sport: PortRange,
    pub dport: PortRange,
}

/// The immutable, validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub inside: Vec<PortId>,
    pub unmatched: Action,
    pub sas: Vec<SaParams>,
    pub policies: Vec<Policy>,
    pub decrement_ttl: bool,
}

fn param(key: impl Into<String>, detail: impl Into<String>) -> NfError {
    NfError::Param { key: key.into(), detail: detail.into() }
}

/// Parses `0x`-prefixed or bare hex.
fn hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect()
}

fn dir_params(key: &str, d: &DirConfig) -> Result<DirParams, NfError> {
    if d.spi < 256 {
        return Err(param(
            format!("{key}.spi"),
            format!("SPI {} is reserved (RFC 4303 §2.1: 1-255 are reserved, 0 is never sent)", d.spi),
        ));
    }
    if d.icv_bits != 128 {
        return Err(param(
            format!("{key}.icv_bits"),
            format!("only 128-bit ICVs are supported, not {}", d.icv_bits),
        ));
    }
    let bytes =
        hex(&d.key).ok_or_else(|| param(format!("{key}.key"), "expected hex digits (key then salt)"))?;
    let (key_len, n) = match bytes.len() {
        20 => (KeyLen::Aes128, 16),
        36 => (KeyLen::Aes256, 32),
        other => {
            return Err(param(
                format!("{key}.key"),
                format!(
                    "{other} bytes; expected a 16- or 32-byte AES key followed by the 4-byte salt (20 or 36 bytes, as in `ip xfrm ... aead 'rfc4106(gcm(aes))' 0x<key><salt> 128`)"
                ),
            ))
        }
    };
    let mut salt = [0u8; 4];
    salt.copy_from_slice(bytes.get(n..n + 4).unwrap_or(&[0; 4]));
    Ok(DirParams { spi: d.spi, key: bytes.get(..n).unwrap_or_default().to_vec(), key_len, salt })
}

impl Settings {
    pub fn from_config(c: &IpsecConfig, rt: &InitCtx<'_>) -> Result<Settings, NfError> {
        let inside = c
            .inside
            .clone()
            .into_vec()
            .iter()
            .map(|p| rt.port("inside", p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sas: Vec<SaParams> = Vec::new();
        for (i, s) in c.sa.iter().enumerate() {
            let key = format!("sa[{i}]");
            if sas.iter().any(|o| o.name == s.name) {
                return Err(param(format!("{key}.name"), format!("SA `{}` is defined twice", s.name)));
            }
            let out = dir_params(&format!("{key}.outbound"), &s.outbound)?;
            let inb = dir_params(&format!("{key}.inbound"), &s.inbound)?;
            if sas.iter().any(|o| o.inb.spi == inb.spi && o.local == s.local.octets()) {
                return Err(param(
                    format!("{key}.inbound.spi"),
                    format!("inbound SPI {:#x} is used by another SA with local {}", inb.spi, s.local),
                ));
            }
            if !(64..=4096).contains(&s.replay_window) || s.replay_window % 64 != 0 {
                return Err(param(
                    format!("{key}.replay_window"),
                    format!("{} packets; expected a multiple of 64 from 64 to 4096", s.replay_window),
                ));
            }
            let hard = if s.esn { u64::MAX } else { u64::from(u32::MAX) };
            let soft_limit = s.soft_limit_packets.unwrap_or(hard / 8 * 7);
            if soft_limit == 0 || soft_limit > hard {
                return Err(param(format!("{key}.soft_limit_packets"), format!("expected 1 to {hard}")));
            }
            if s.ttl == 0 {
                return Err(param(format!("{key}.ttl"), "the outer TTL must be at least 1"));
            }
            sas.push(SaParams {
                name: s.name.clone(),
                local: s.local.octets(),
                remote: s.remote.octets(),
                out,
                inb,
                window: s.replay_window,
                esn: s.esn,
                soft_limit,
                ttl: s.ttl,
                df: s.df,
            });
        }
        let mut policies = Vec::new();
        for (i, p) in c.policy.iter().enumerate() {
            let key = format!("policy[{i}]");
            let sa = match (p.action, &p.sa) {
                (Action::Protect, None) => {
                    return Err(param(format!("{key}.sa"), "a `protect` policy names its SA"))
                }
                (_, None) => None,
                (_, Some(name)) => Some(sas.iter().position(|s| &s.name == name).ok_or_else(|| {
                    param(format!("{key}.sa"), format!("no SA named `{name}` (define it in [[nf.sa]])"))
                })?),
            };
            let src = p.src.clone().into_vec();
            let dst = p.dst.clone().into_vec();
            let has = |f: u8| src.iter().chain(dst.iter()).any(|x| x.family == f);
            let (mut v4, mut v6) = (has(FAMILY_V4), has(FAMILY_V6));
            if v4 && v6 {
                return Err(param(
                    key,
                    "`src` and `dst` mix IPv4 and IPv6 prefixes; write one policy per family",
                ));
            }
            if !v4 && !v6 {
                (v4, v6) = (true, true);
            }
            policies.push(Policy {
                action: p.action,
                sa,
                src,
                dst,
                v4,
                v6,
                proto: p.proto,
                sport: p.sport,
                dport: p.dport,
            });
        }
        Ok(Settings { inside, unmatched: c.unmatched, sas, policies, decrement_ttl: c.decrement_ttl })
    }
}
