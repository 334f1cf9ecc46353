//! Builds the bindings to Debian's DPDK 22.11 and links it statically.
//!
//! DPDK is found through `pkg-config libdpdk` (Debian package `libdpdk-dev`); only the
//! include paths and the library directory are taken from it: `pkg-config --static --libs`
//! would pull every driver DPDK ships (and mlx5/ibverbs with them), so the libraries are
//! listed here. Poll-mode drivers register themselves from constructors, which the linker
//! drops unless their archives are linked whole.

use std::path::PathBuf;
use std::process::Command;

/// The DPDK release these bindings are written against.
const DPDK_YEAR: u32 = 22;
const DPDK_MONTH: u32 = 11;

/// Drivers compiled into nflet (whole-archive: they register from constructors).
const DRIVERS: &[&str] = &[
    "bus_pci",
    "bus_vdev",
    "mempool_ring",
    "net_virtio",
    "net_ixgbe",
    "net_i40e",
    "net_e1000",
    "net_af_packet",
    "net_memif",
    "net_ring",
    "net_null",
    "net_tap",
];

/// DPDK libraries the drivers and nflet need, in link order.
const LIBS: &[&str] = &[
    "gso",
    "ethdev",
    "security",
    "cryptodev",
    "net",
    "meter",
    "hash",
    "mbuf",
    "mempool",
    "rcu",
    "ring",
    "pci",
    "eal",
    "telemetry",
    "kvargs",
];

/// System libraries DPDK's EAL depends on (Debian: libnuma-dev, libbsd-dev, libmd-dev).
const SYSTEM: &[&str] = &["numa", "bsd", "md", "atomic", "pthread", "dl", "m"];

const HINT: &str = "install DPDK 22.11 development files: `apt-get install libdpdk-dev libclang-dev \
                    libnuma-dev libbsd-dev libmd-dev pkg-config` (Debian 12), or build nflet without \
                    the `dpdk` feature";

fn fail(msg: &str) -> ! {
    eprintln!("dpdk-sys: {msg}\ndpdk-sys: {HINT}");
    std::process::exit(1);
}

fn pkg_config(args: &[&str]) -> String {
    match Command::new("pkg-config").args(args).arg("libdpdk").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => fail(&format!(
            "`pkg-config {} libdpdk` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!("cannot run pkg-config: {e}")),
    }
}

/// Reads `#define NAME value` from the installed rte_build_config.h.
fn define(header: &str, name: &str) -> Option<u32> {
    header.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("#define") && w.next() == Some(name)).then(|| w.next()?.parse().ok()).flatten()
    })
}

fn main() {
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-changed=build.rs");
    let includes: Vec<PathBuf> = pkg_config(&["--cflags-only-I"])
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("-I"))
        .map(PathBuf::from)
        .collect();
    let libdir = pkg_config(&["--variable=libdir"]);

    // Pin the version: the shim and the wrapper follow 22.11's ABI.
    let config = includes
        .iter()
        .map(|d| d.join("rte_build_config.h"))
        .find(|p| p.exists())
        .unwrap_or_else(|| fail("rte_build_config.h not found in the libdpdk include paths"));
    let text = std::fs::read_to_string(&config)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", config.display())));
    match (define(&text, "RTE_VER_YEAR"), define(&text, "RTE_VER_MONTH")) {
        (Some(DPDK_YEAR), Some(DPDK_MONTH)) => {}
        (y, m) => fail(&format!(
            "{} says DPDK {}.{}; nflet's bindings need DPDK {DPDK_YEAR}.{DPDK_MONTH}",
            config.display(),
            y.map_or("?".into(), |v| v.to_string()),
            m.map_or("?".into(), |v| v.to_string()),
        )),
    }

    // Debian's DPDK is built for the corei7 baseline; inline functions must match it.
    let mut shim = cc::Build::new();
    shim.file("csrc/shim.c").flag("-march=corei7").flag("-include").flag("rte_config.h").warnings(true);
    for i in &includes {
        shim.include(i);
    }
    shim.compile("nflet_dpdk_shim");

    let mut b = bindgen::Builder::default()
        .header("csrc/wrapper.h")
        .clang_arg("-march=corei7")
        .clang_arg("-Icsrc")
        .allowlist_function("rte_(eal|eth|pktmbuf|mempool|lcore|socket|strerror|thread|vdev|version|dev_).*")
        .allowlist_function("nflet_.*")
        .allowlist_type("rte_eth_.*")
        .allowlist_var(
            "RTE_ETH_.*|RTE_MAX_.*|RTE_MBUF_DEFAULT_.*|RTE_PKTMBUF_HEADROOM|SOCKET_ID_ANY|LCORE_ID_ANY",
        )
        // Packed headers bindgen cannot lay out; nflet does not use them.
        .opaque_type("rte_arp_ipv4|rte_arp_hdr|rte_l2tpv2_combined_msg_hdr|rte_gtp_psc_generic_hdr")
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for i in &includes {
        b = b.clang_arg(format!("-I{}", i.display()));
    }
    let bindings =
        b.generate().unwrap_or_else(|e| fail(&format!("bindgen over the DPDK headers failed: {e}")));
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| fail("OUT_DIR not set")));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|e| fail(&format!("cannot write bindings: {e}")));

    println!("cargo:rustc-link-search=native={libdir}");
    for d in DRIVERS {
        println!("cargo:rustc-link-lib=static:+whole-archive,-bundle=rte_{d}");
    }
    for l in LIBS {
        println!("cargo:rustc-link-lib=static:-bundle=rte_{l}");
    }
    for s in SYSTEM {
        println!("cargo:rustc-link-lib={s}");
    }
}
