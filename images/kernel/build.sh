#!/usr/bin/env bash
# Build the specialised nflet kernel from Debian's linux-source: `make allnoconfig` with
# images/kernel/nflet.config applied, so only what the appliance uses is there, built in
# (no modules). The result is cached: a second run with the same source, configuration and
# SOURCE_DATE_EPOCH only checks it.
#   target/kernel/linux-source-<ver>/arch/x86/boot/bzImage   the kernel
#   target/kernel/linux-source-<ver>/modules.builtin         what is built in
# Prints the build directory on stdout (the last line). Run as root, it apt-get installs
# what it is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "images/kernel/build.sh: error: $*" >&2; exit 1; }
log() { echo "images/kernel/build.sh: $*" >&2; }
# shellcheck source=images/common.sh
. "$here/../common.sh"

series=6.1
fragment=$here/nflet.config
work=${NFLET_KERNEL_DIR:-$repo/target/kernel}

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_cmd gcc gcc
need_cmd make make
need_cmd flex flex
need_cmd bison bison
need_cmd bc bc
need_cmd xz xz-utils
need_cmd perl perl
[ -f /usr/include/libelf.h ] || missing+=(libelf-dev)
tarball=/usr/src/linux-source-$series.tar.xz
[ -f "$tarball" ] || missing+=("linux-source-$series")
install_missing

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>&1) ||
        die "cannot read the commit time of HEAD (git: ${SOURCE_DATE_EPOCH%%$'\n'*}); set SOURCE_DATE_EPOCH"
fi
export SOURCE_DATE_EPOCH LC_ALL=C TZ=UTC
# What `uname -v` and /proc/version say, fixed so the bytes only depend on the inputs.
export KBUILD_BUILD_TIMESTAMP="@$SOURCE_DATE_EPOCH" KBUILD_BUILD_USER=nflet KBUILD_BUILD_HOST=nflet
export KBUILD_BUILD_VERSION=1

src=$work/linux-source-$series
stamp=$work/.source-$(stat -c %s-%Y "$tarball")
mkdir -p "$work"
if [ ! -f "$stamp" ] || [ ! -f "$src/Makefile" ]; then
    log "unpacking $tarball"
    rm -rf "$src" "$work"/.source-*
    tar -C "$work" -xf "$tarball"
    touch "$stamp"
fi

cd "$src"
# Configure into a scratch file and only replace .config when it changed, so that make's
# dependency tracking does not rebuild an unchanged kernel.
make -s allnoconfig KCONFIG_ALLCONFIG="$fragment" KCONFIG_CONFIG=.config.new >/dev/null
# Every option the fragment sets must have survived Kconfig's dependency resolution; a
# missing one means a dependency is not named in the fragment.
lost=()
while IFS= read -r line; do
    case "$line" in CONFIG_*=*) grep -qxF "$line" .config.new || lost+=("$line") ;; esac
done <"$fragment"
[ ${#lost[@]} -eq 0 ] || die "Kconfig dropped ${lost[*]} (a dependency is missing from $fragment)"
if cmp -s .config.new .config; then rm .config.new; else mv .config.new .config; fi

log "building the kernel ($(nproc) jobs)"
make -s -j"$(nproc)" bzImage >&2
release=$(cat include/config/kernel.release)
log "kernel $release: arch/x86/boot/bzImage $(stat -c %s arch/x86/boot/bzImage) bytes"
echo "$src"
