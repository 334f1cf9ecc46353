#!/usr/bin/env bash
# Build the Linux IPsec peer guest: a minimal initramfs for the Debian cloud kernel that the
# tests boot under QEMU to play the far end of an ESP tunnel (Linux xfrm, RFC 4303/4106):
#   images/out/peer-initramfs.cpio.gz  busybox (static), iproute2's `ip` with its shared
#                                      libraries, the xfrm/ESP/AES-GCM and virtio modules, /init
#   images/out/peer-vmlinuz            the kernel it boots with (QEMU -kernel)
# The host kernel may lack ESP and GCM; the guest's kernel has them as modules.
# No root, no loop devices: the archive is written by images/newc.py from a manifest, with
# the same SOURCE_DATE_EPOCH rules as images/build.sh. Run as root, it apt-get installs what
# it is missing (busybox-static, iproute2, linux-image-cloud-amd64).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
images=$(cd "$here/.." && pwd)
repo=$(cd "$images/.." && pwd)

die() { echo "images/peer/build.sh: error: $*" >&2; exit 1; }
log() { echo "images/peer/build.sh: $*" >&2; }
# shellcheck source=images/common.sh
. "$here/../common.sh"

usage() {
    cat <<USAGE
usage: images/peer/build.sh [--kernel KVER] [--out DIR]
  --kernel KVER  kernel version under /lib/modules (default: newest *-cloud-amd64)
  --out DIR      output directory (default: images/out)
USAGE
}

kver="" out="$images/out"
while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kver=${2:?--kernel needs a version}; shift 2 ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

# --- Host packages --------------------------------------------------------------------------
busybox=/bin/busybox
missing=()
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static) # /bin/busybox, no libs
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
compgen -G "/boot/vmlinuz-*-cloud-amd64" >/dev/null || [ -n "$kver" ] || missing+=(linux-image-cloud-amd64)
install_missing

find_kernel
ipbin=$(readlink -f "$(command -v ip)")

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null) ||
        die "cannot read the commit time of HEAD in $repo; set SOURCE_DATE_EPOCH"
fi
export SOURCE_DATE_EPOCH TZ=UTC LC_ALL=C

mkdir -p "$out"
work=$(mktemp -d "$out/.peer.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- Kernel modules ---------------------------------------------------------------------------
# ESP in tunnel mode with rfc4106(gcm(aes)): esp4 + xfrm_user (ip xfrm's netlink family); the
# AEAD is built from gcm + ctr + ghash, seqiv generates the IVs; aesni-intel provides the fast
# rfc4106 implementation (TCG's -cpu max has AES-NI and PCLMULQDQ). The guest has no modprobe,
# so the crypto API cannot load templates on demand: every piece is loaded by /init.
# seqiv draws its IV salt from the default RNG ("stdrng"): drbg, its hmac(sha512) and the
# jitter entropy source (without them every `ip xfrm state add` fails with "Kernel was unable
# to initialize cryptographic operations").
# dummy carries the inner (tunnelled) addresses; virtio for the NICs; ipip makes the guest a
# backend of the load balancer's encap mode (IP-in-IP, decapsulated on tunl0).
wanted=(virtio_pci virtio_net dummy xfrm_algo xfrm_user esp4 gf128mul ghash-generic
    ghash-clmulni-intel ctr gcm seqiv echainiv cryptd crypto_simd aesni-intel
    sha512_generic jitterentropy_rng drbg ipip)

resolve_modules

manifest=$work/manifest
modlist=$work/modules
: >"$modlist"
for d in bin sbin usr/sbin proc sys dev run etc root; do printf 'dir\t%s\t0755\n' "$d"; done >"$manifest"
printf 'dir\ttmp\t1777\n' >>"$manifest"
printf 'nod\tdev/console\t0600\tc\t5\t1\n' >>"$manifest"
printf 'nod\tdev/null\t0666\tc\t1\t3\n' >>"$manifest"
for mod in "${order[@]}"; do
    src=$moddir/$mod
    case "$mod" in # busybox insmod takes the plain .ko
        *.ko) dst=$mod ;;
        *.ko.xz) dst=${mod%.xz}; mkdir -p "$work/$(dirname "$dst")"; xz -dc "$src" >"$work/$dst"; src=$work/$dst ;;
        *.ko.zst) dst=${mod%.zst}; mkdir -p "$work/$(dirname "$dst")"; zstd -qdc "$src" >"$work/$dst"; src=$work/$dst ;;
        *.ko.gz) dst=${mod%.gz}; mkdir -p "$work/$(dirname "$dst")"; gzip -dc "$src" >"$work/$dst"; src=$work/$dst ;;
        *) die "unexpected module file name $mod" ;;
    esac
    printf 'file\tlib/modules/%s/%s\t0644\t%s\n' "$kver" "$dst" "$src" >>"$manifest"
    echo "/lib/modules/$kver/$dst" >>"$modlist"
done
printf 'file\tetc/modules\t0644\t%s\n' "$modlist" >>"$manifest"

# --- Programs ---------------------------------------------------------------------------------
# busybox is static; /init installs its applet links at boot (newc.py writes no symlinks).
# iproute2's `ip` (busybox's lacks `ip xfrm`) is dynamic: it goes in with the libraries ldd
# names, at the same paths, and the dynamic loader.
printf 'file\tbin/busybox\t0755\t%s\n' "$busybox" >>"$manifest"
printf 'file\tusr/sbin/ip\t0755\t%s\n' "$ipbin" >>"$manifest"
while read -r lib; do
    [ -n "$lib" ] || continue
    real=$(readlink -f "$lib")
    printf 'file\t%s\t0755\t%s\n' "${lib#/}" "$real" >>"$manifest"
done < <(ldd "$ipbin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)

cat >"$work/init" <<'INIT'
#!/bin/busybox sh
# nflet IPsec peer: mount the pseudo file systems, load the modules, bring the NICs up, and
# hand the serial console to a shell (the test harness drives it, one command at a time).
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 >/proc/sys/kernel/printk # keep kernel messages off the console the harness parses
while read -r m; do
    insmod "$m" || echo "peer-init: insmod $m failed"
done </etc/modules
/usr/sbin/ip link set lo up
for n in /sys/class/net/eth*; do
    [ -e "$n" ] && /usr/sbin/ip link set "${n##*/}" up
done
# busybox's shell runs its own applets before PATH: a function makes `ip` the real one.
echo 'ip() { /usr/sbin/ip "$@"; }' >/etc/shrc
export ENV=/etc/shrc
/usr/sbin/ip -V || echo "peer-init: iproute2's ip does not run"
echo "peer-init: ready"
exec setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'
INIT
printf 'file\tinit\t0755\t%s\n' "$work/init" >>"$manifest"

# --- Archive ----------------------------------------------------------------------------------
python3 "$images/newc.py" --mtime "$SOURCE_DATE_EPOCH" "$work/peer.cpio" <"$manifest"
gzip -9nc "$work/peer.cpio" >"$out/peer-initramfs.cpio.gz"
cp "$vmlinuz" "$out/peer-vmlinuz"
touch -d "@$SOURCE_DATE_EPOCH" "$out/peer-initramfs.cpio.gz" "$out/peer-vmlinuz"

{
    echo "kernel $kver; SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
    echo "modules (load order, /etc/modules):"
    sed 's/^/  /' "$modlist"
    [ ${#builtin[@]} -eq 0 ] || echo "built into the kernel: ${builtin[*]}"
}
cd "$out"
for f in peer-vmlinuz peer-initramfs.cpio.gz; do
    printf '%-23s %10s bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done
