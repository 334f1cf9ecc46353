//! The `ipsec` NF built on its own, one core, from a TOML table: the ESP interop tests drive
//! it directly with the frames their peers made.

use nflet_nfs::functions::ipsec::{Ipsec, IpsecConfig};
use nflet_nfs::ids::CoreId;
use nflet_nfs::nf::{InitCtx, NetworkFunction, SharedRegistry};
use nflet_nfs::state::{Arena, Backing};

/// An `ipsec` instance named `vpn` with ports `inside` and `outside`.
pub fn build(cfg: &str) -> Ipsec {
    let cfg: IpsecConfig = toml::from_str(cfg).unwrap();
    let mut arena = Arena::new(CoreId(0), 1 << 20, Backing::Normal);
    let mut shared = SharedRegistry::default();
    let ports = ["inside".to_string(), "outside".to_string()];
    let mut rt = InitCtx {
        instance: nflet_nfs::ids::Instance::default(),
        name: "vpn",
        core: CoreId(0),
        cores: 1,
        ports: &ports,
        arena: &mut arena,
        shared: &mut shared,
    };
    Ipsec::init(&cfg, &mut rt).unwrap()
}
