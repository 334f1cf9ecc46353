#!/usr/bin/env bash
# nflet's test suite: installs what it needs on Debian 12 (as root), then runs formatting,
# lint and every test, unit and end-to-end. Usage: ./tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# iproute2/ethtool: network namespaces for the end-to-end tests; the rest builds the DPDK
# ports (DPDK 22.11 static libraries, bindgen's libclang, EAL's system libraries).
need_pkgs=()
# qemu-system-x86/ovmf: the boot tests (images/build.sh installs what the images need).
# busybox-static/linux-image-cloud-amd64: the Linux IPsec peer guest (images/peer/build.sh;
# the live ESP test also pings with the host's busybox);
# tcpdump: the IPsec tests capture ESP on the host bridge; nftables: the live ESP test marks
# CE on the bridge as a congested router would; chromium: the status page test
# renders the management endpoint's page headless.
# python3-scapy: the ESP interop peer (Debian's scapy 2.5 has AES-GCM ESP through
# python3-cryptography; tests/tests/esp_scapy.rs runs it with /usr/bin/python3);
# dnsmasq-base: the DHCP server of the management NIC's DHCP client test;
# linux-source-6.1 make flex bison bc libelf-dev: the specialised kernel (images/kernel/).
for p in iproute2 ethtool gcc libc6-dev pkg-config libdpdk-dev libclang-dev libnuma-dev libbsd-dev libmd-dev \
    qemu-system-x86 ovmf python3 python3-dpkt busybox-static linux-image-cloud-amd64 tcpdump chromium \
    python3-scapy dnsmasq-base nftables linux-source-6.1 make flex bison bc libelf-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run.sh: missing Debian packages: ${need_pkgs[*]} (install them, or run as root)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "run.sh: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
fi

# 2 MiB hugepages for DPDK's packet buffers and the state arenas (1 GiB: two DPDK processes
# run side by side in the memif test).
if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/nr_hugepages ]; then
    cur=$(cat /proc/sys/vm/nr_hugepages)
    [ "$cur" -ge 512 ] || echo 512 > /proc/sys/vm/nr_hugepages || true
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== cargo check without DPDK (development machines without libdpdk-dev)"
cargo check -p nflet
echo "== cargo static (the release appliance: one statically linked executable)"
cargo static
echo "== images/build.sh (initramfs, UKI, GPT disk; the boot tests boot them in QEMU)"
./images/build.sh
echo "== images/build.sh --specialised (the same on the specialised kernel, built from Debian's linux-source)"
./images/build.sh --specialised
echo "== images/peer/build.sh (the Linux IPsec peer guest the xfrm_peer tests boot)"
./images/peer/build.sh
echo "== cargo build (the end-to-end tests run the nflet and peer binaries)"
cargo build --workspace --bins --all-features
echo "== cargo test"
# One test at a time: the end-to-end tests (namespaces, two DPDK processes, QEMU guests) load
# both cores themselves.
cargo test --workspace --all-features -- --test-threads=1
