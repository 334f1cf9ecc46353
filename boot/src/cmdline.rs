//! `nflet.*` parameters on the kernel command line.
//!
//! | parameter | meaning | default |
//! |---|---|---|
//! | `nflet.on_error=poweroff\|halt\|reboot` | what PID 1 does after a fatal error (after printing it) | `halt` |
//! | `nflet.hugepages=N` | 2 MiB hugepages to reserve | a quarter of memory, at most 512 |
//! | `nflet.config=BASE64` | the configuration, base64-encoded TOML (the command line holds ~2 KiB) | — |
//! | `nflet.nic_driver=uio_pci_generic\|vfio-pci` | driver the data NICs are bound to | `uio_pci_generic` |
//! | `nflet.worker=N` | serve as worker N of the scale-out deployment the configuration describes | — |
//! | `nflet.logger=N` | serve as the output logger of worker N | — |
//! | `nflet.fabric_via=IPV4` | loopback addresses in `[scale]` are the host's, reached through this address (QEMU user networking: `10.0.2.2`) | — |

use base64::Engine as _;

/// What PID 1 does once the appliance has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Poweroff,
    Halt,
    Reboot,
}

/// The parsed kernel command line.
#[derive(Debug, Clone)]
pub struct Cmdline {
    pub raw: String,
    pub on_error: OnError,
    pub hugepages: Option<u64>,
    /// The decoded `nflet.config`, or why it could not be decoded.
    pub config: Option<Result<String, String>>,
    pub nic_driver: String,
    /// `nflet.worker`: the scale-out worker id this instance serves as.
    pub worker: Option<u16>,
    /// `nflet.logger`: serve as the output logger of this worker id.
    pub logger: Option<u16>,
    /// `nflet.fabric_via`: where the host's loopback addresses are reached from the guest.
    pub fabric_via: Option<std::net::Ipv4Addr>,
}

impl Cmdline {
    /// Reads /proc/cmdline (empty when it cannot be read).
    pub fn read() -> Cmdline {
        Cmdline::parse(std::fs::read_to_string("/proc/cmdline").unwrap_or_default().trim())
    }

    pub fn parse(raw: &str) -> Cmdline {
        let mut c = Cmdline {
            raw: raw.to_string(),
            on_error: OnError::Halt,
            hugepages: None,
            config: None,
            nic_driver: "uio_pci_generic".into(),
            worker: None,
            logger: None,
            fabric_via: None,
        };
        for word in raw.split_whitespace() {
            let Some((key, value)) = word.strip_prefix("nflet.").and_then(|w| w.split_once('=')) else {
                continue;
            };
            match key {
                "on_error" => match value {
                    "poweroff" => c.on_error = OnError::Poweroff,
                    "halt" => c.on_error = OnError::Halt,
                    "reboot" => c.on_error = OnError::Reboot,
                    other => log::warn!(
                        "boot: nflet.on_error={other}: expected poweroff, halt or reboot; using halt"
                    ),
                },
                "hugepages" => match value.parse() {
                    Ok(n) => c.hugepages = Some(n),
                    Err(_) => log::warn!("boot: nflet.hugepages={value}: expected a number of 2 MiB pages"),
                },
                "config" => {
                    c.config = Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(value)
                            .map_err(|e| format!("nflet.config is not valid base64: {e}"))
                            .and_then(|b| {
                                String::from_utf8(b)
                                    .map_err(|_| "nflet.config does not decode to UTF-8 text".to_string())
                            }),
                    )
                }
                "nic_driver" => c.nic_driver = value.to_string(),
                "worker" => match value.parse() {
                    Ok(n) => c.worker = Some(n),
                    Err(_) => log::warn!("boot: nflet.worker={value}: expected a worker id (0 to 65535)"),
                },
                "logger" => match value.parse() {
                    Ok(n) => c.logger = Some(n),
                    Err(_) => log::warn!("boot: nflet.logger={value}: expected a worker id (0 to 65535)"),
                },
                "fabric_via" => match value.parse() {
                    Ok(a) => c.fabric_via = Some(a),
                    Err(_) => log::warn!("boot: nflet.fabric_via={value}: expected an IPv4 address"),
                },
                other => log::warn!("boot: unknown kernel parameter nflet.{other} (ignored)"),
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_parsed_and_others_ignored() {
        let toml = "[appliance]\ncores = 1\n";
        let b64 = base64::engine::general_purpose::STANDARD.encode(toml);
        let c = Cmdline::parse(&format!(
            "console=ttyS0 panic=-1 nflet.on_error=poweroff nflet.hugepages=64 nflet.config={b64} nflet.nic_driver=vfio-pci quiet"
        ));
        assert_eq!(c.on_error, OnError::Poweroff);
        assert_eq!(c.hugepages, Some(64));
        assert_eq!(c.config, Some(Ok(toml.to_string())));
        assert_eq!(c.nic_driver, "vfio-pci");
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let c = Cmdline::parse("nflet.on_error=explode nflet.hugepages=lots nflet.config=@@@");
        assert_eq!(c.on_error, OnError::Halt);
        assert_eq!(c.hugepages, None);
        assert!(matches!(c.config, Some(Err(ref e)) if e.contains("base64")));
        assert_eq!(Cmdline::parse("").nic_driver, "uio_pci_generic");
    }
}
