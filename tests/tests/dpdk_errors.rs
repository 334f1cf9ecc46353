//! DPDK ports that cannot work are reported with what to do, and nflet exits with an error
//! instead of running without them.
#![cfg(feature = "dpdk")]

use std::process::Command;

use nflet_tests::{binary, is_root};

/// Runs nflet on a config with one DPDK port `device`; returns its stderr (it must fail).
fn fails_with(device: &str, tag: &str) -> String {
    let path = std::env::temp_dir().join(format!("nflet-dpdk-err-{tag}-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            r#"
[dpdk]
hugepages = false
mbufs = 2047

[[port]]
name = "gen"
kind = "generator"
count = 10

[[port]]
name = "wan"
kind = "dpdk"
device = "{device}"

[[chain]]
name = "c"
ingress = ["gen"]
steps = []
output = "wan"
"#
        ),
    )
    .expect("config");
    let out = Command::new(binary("nflet"))
        .args(["run", "-q", "--duration", "2", "-c"])
        .arg(&path)
        .output()
        .expect("nflet");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "nflet must refuse to run without its port:\n{stderr}");
    stderr
}

#[test]
fn missing_pci_device_is_named_with_the_fix() {
    assert!(is_root(), "DPDK needs root");
    let e = fails_with("0000:00:1f.7", "pci");
    assert!(e.contains("port wan") && e.contains("no PCI device 0000:00:1f.7") && e.contains("lspci"), "{e}");
}

#[test]
fn unknown_virtual_device_is_reported() {
    assert!(is_root(), "DPDK needs root");
    let e = fails_with("net_nosuchdriver0", "vdev");
    assert!(e.contains("port wan") && e.contains("creating virtual device `net_nosuchdriver0`"), "{e}");
}

#[test]
fn a_port_that_cannot_start_is_not_skipped() {
    assert!(is_root(), "DPDK needs root");
    // A memif client whose server socket does not exist cannot connect.
    let e = fails_with("net_memif_x,role=client,socket=/nonexistent/memif.sock", "start");
    assert!(e.contains("port wan") && e.contains("net_memif_x"), "{e}");
}

#[test]
fn bad_dpdk_settings_are_config_errors() {
    let path = std::env::temp_dir().join(format!("nflet-dpdk-cfg-{}.toml", std::process::id()));
    std::fs::write(&path, "[dpdk]\nmbufs = 10\n\n[[port]]\nname = \"p\"\nkind = \"dpdk\"\ndevice = \"net_null0\"\nrx_desc = 100\n")
        .expect("config");
    let out = Command::new(binary("nflet")).arg("check").arg("-c").arg(&path).output().expect("nflet");
    let _ = std::fs::remove_file(&path);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(e.contains("rx_desc") && e.contains("power of two"), "{e}");
}
