#!/usr/bin/env bash
# nflet's test suite: installs what it needs on Debian 12 (as root), then runs formatting,
# lint and every test, unit and end-to-end. Usage: ./tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for p in iproute2 ethtool; do
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

# A few 2 MiB hugepages so state arenas exercise the hugepage path (they fall back to normal
# pages, with a warning, when none are reserved).
if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/nr_hugepages ]; then
    cur=$(cat /proc/sys/vm/nr_hugepages)
    [ "$cur" -ge 64 ] || echo 64 > /proc/sys/vm/nr_hugepages || true
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (the end-to-end tests run the nflet and peer binaries)"
cargo build --workspace --bins
echo "== cargo test"
cargo test --workspace -- --test-threads=2
