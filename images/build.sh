#!/usr/bin/env bash
# Build the flashable nflet images from the static nflet binary and a Debian kernel package:
#   images/out/initramfs.cpio  newc archive: /init = nflet, kernel modules, /etc/nflet/modules
#                              (+ initramfs.cpio.gz, gzip'd, the one inside the UKI)
#   images/out/vmlinuz         the kernel, for `qemu -kernel vmlinuz -initrd initramfs.cpio`
#   images/out/nflet.efi       Unified Kernel Image (systemd EFI stub + cmdline + kernel + initrd)
#   images/out/nflet.img       raw GPT disk, one EFI system partition holding the UKI (UEFI
#                              boot) and SYSLINUX with the kernel and initramfs (BIOS boot)
# With --specialised, the same four from the specialised kernel (images/kernel/: everything
# built in, no modules) in images/out/specialised/.
# No root, no loop devices. Same inputs + same SOURCE_DATE_EPOCH -> same bytes; the epoch
# defaults to the commit time of HEAD. Run as root, it apt-get installs what it is missing.
set -euo pipefail

export PATH=$PATH:/usr/sbin:/sbin # mkfs.vfat and sgdisk live in sbin, not on a user's PATH
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

usage() {
    cat <<EOF
usage: images/build.sh [options]
  --config FILE      bake FILE into the initramfs as /etc/nflet/nflet.toml
  --cmdline "ARGS"   append ARGS to the UKI command line (default: $default_cmdline)
  --init PATH        use PATH as /init instead of nflet (e.g. a test program)
  --nflet PATH       the nflet binary (default: target/x86_64-unknown-linux-gnu/release/nflet)
  --kernel KVER      kernel version under /lib/modules (default: newest *-cloud-amd64)
  --specialised      build and use the specialised kernel (images/kernel/build.sh) instead
                     of Debian's; output in images/out/specialised unless --out says
  --no-strip         keep /init's debug info (default: strip --strip-debug, symbols kept)
  --out DIR          output directory (default: images/out)
EOF
}

die() { echo "images/build.sh: error: $*" >&2; exit 1; }
log() { echo "images/build.sh: $*" >&2; }
# shellcheck source=images/common.sh
. "$here/common.sh"

default_cmdline="console=ttyS0 panic=-1 quiet"
config="" extra_cmdline="" init="" strip=1 kver="" specialised=0
nflet="$repo/target/x86_64-unknown-linux-gnu/release/nflet"
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --config) config=${2:?--config needs a file}; shift 2 ;;
        --cmdline) extra_cmdline=${2?--cmdline needs an argument}; shift 2 ;;
        --init) init=${2:?--init needs a path}; shift 2 ;;
        --nflet) nflet=${2:?--nflet needs a path}; shift 2 ;;
        --kernel) kver=${2:?--kernel needs a version}; shift 2 ;;
        --specialised) specialised=1; shift ;;
        --no-strip) strip=0; shift ;;
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument '$1'" ;;
    esac
done

# --- Host packages --------------------------------------------------------------------------
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_cmd objcopy binutils
need_cmd objdump binutils
need_cmd strip binutils
need_cmd mkfs.vfat dosfstools
need_cmd mcopy mtools
need_cmd mmd mtools
need_cmd sgdisk gdisk
need_cmd syslinux syslinux
gptmbr=/usr/lib/syslinux/mbr/gptmbr.bin
[ -f "$gptmbr" ] || missing+=(syslinux-common)
need_cmd python3 python3
[ -f "$stub" ] || missing+=(systemd-boot-efi)
[ "$specialised" = 1 ] || compgen -G "/boot/vmlinuz-*-cloud-amd64" >/dev/null || [ -n "$kver" ] ||
    missing+=(linux-image-cloud-amd64)
install_missing

# --- Inputs -----------------------------------------------------------------------------------
if [ "$specialised" = 1 ]; then
    [ -z "$kver" ] || die "--kernel and --specialised exclude each other"
    tree=$("$here/kernel/build.sh" | tail -n 1)
    vmlinuz=$tree/arch/x86/boot/bzImage
    kver=$(cat "$tree/include/config/kernel.release")
    out=${out:-$here/out/specialised}
else
    find_kernel
    out=${out:-$here/out}
fi
if [ -z "$init" ]; then
    [ -f "$nflet" ] || die "$nflet not found; build it with: cargo static"
    init=$nflet
fi
[ -f "$init" ] || die "--init: $init not found"
[ -z "$config" ] || [ -f "$config" ] || die "--config: $config not found"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>&1) ||
        die "cannot read the commit time of HEAD in $repo (git: ${SOURCE_DATE_EPOCH%%$'\n'*});" \
            "set SOURCE_DATE_EPOCH (seconds since 1970) for a reproducible build"
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH='$SOURCE_DATE_EPOCH' is not a number"
export SOURCE_DATE_EPOCH TZ=UTC LC_ALL=C
version=$(git -C "$repo" describe --always --abbrev=12 2>/dev/null || echo unknown) # for .osrel

mkdir -p "$out"
work=$(mktemp -d "$out/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- Kernel modules ---------------------------------------------------------------------------
# What the appliance loads at boot: NIC drivers (virtio for QEMU; uio_pci_generic and vfio-pci to
# hand NICs to DPDK), the fw_cfg config channel, FAT for a config partition, virtio disks, and the
# ACPI power button. vfio_iommu_type1 is only a soft dependency of vfio, so it is named here.
# vfat's defaults in Debian's kernel are codepage 437, iocharset ascii (CONFIG_FAT_DEFAULT_*).
wanted=(virtio_pci virtio_net uio uio_pci_generic vfio-pci vfio_iommu_type1 qemu_fw_cfg
    vfat nls_cp437 nls_ascii virtio_blk button evdev)

if [ "$specialised" = 1 ]; then
    # Everything is built in: check that it is, and load nothing.
    order=() builtin=()
    for want in "${wanted[@]}"; do
        grep -qE "/${want//[-_]/[-_]}\.ko$" "$tree/modules.builtin" ||
            die "$want is not built into the specialised kernel: add its option to images/kernel/nflet.config"
        builtin+=("$want")
    done
else
    resolve_modules
fi

manifest=$work/manifest
modlist=$work/modules
: >"$modlist"
for d in proc sys dev run mnt etc/nflet; do printf 'dir\t%s\t0755\n' "$d"; done >"$manifest"
printf 'dir\ttmp\t1777\n' >>"$manifest"
printf 'nod\tdev/console\t0600\tc\t5\t1\n' >>"$manifest"
printf 'nod\tdev/null\t0666\tc\t1\t3\n' >>"$manifest"
for mod in "${order[@]}"; do
    src=$moddir/$mod
    case "$mod" in # the kernel's finit_module takes plain .ko only without MODULE_DECOMPRESS
        *.ko) dst=$mod ;;
        *.ko.xz) dst=${mod%.xz}; mkdir -p "$work/$(dirname "$dst")"; xz -dc "$src" >"$work/$dst"; src=$work/$dst ;;
        *.ko.zst) dst=${mod%.zst}; mkdir -p "$work/$(dirname "$dst")"; zstd -qdc "$src" >"$work/$dst"; src=$work/$dst ;;
        *.ko.gz) dst=${mod%.gz}; mkdir -p "$work/$(dirname "$dst")"; gzip -dc "$src" >"$work/$dst"; src=$work/$dst ;;
        *) die "unexpected module file name $mod" ;;
    esac
    printf 'file\tlib/modules/%s/%s\t0644\t%s\n' "$kver" "$dst" "$src" >>"$manifest"
    echo "/lib/modules/$kver/$dst" >>"$modlist"
done
[ ${#order[@]} -eq 0 ] || printf 'file\tetc/nflet/modules\t0644\t%s\n' "$modlist" >>"$manifest"
[ -z "$config" ] || printf 'file\tetc/nflet/nflet.toml\t0644\t%s\n' "$config" >>"$manifest"

if [ "$strip" = 1 ]; then
    strip --strip-debug -o "$work/init" "$init"
else
    cp "$init" "$work/init"
fi
printf 'file\tinit\t0755\t%s\n' "$work/init" >>"$manifest"

# --- 1. initramfs -----------------------------------------------------------------------------
python3 "$here/newc.py" --mtime "$SOURCE_DATE_EPOCH" "$out/initramfs.cpio" <"$manifest"
# The UKI carries the archive gzip'd (-n: no name or time in the header, so the bytes only
# depend on the input); the uncompressed one is for direct kernel boots, which start faster
# under TCG without the decompression.
gzip -9nc "$out/initramfs.cpio" >"$out/initramfs.cpio.gz"
cp "$vmlinuz" "$out/vmlinuz"
touch -d "@$SOURCE_DATE_EPOCH" "$out/vmlinuz" "$out/initramfs.cpio" "$out/initramfs.cpio.gz"

# --- 2. Unified Kernel Image ------------------------------------------------------------------
# The stub finds the kernel, initrd and command line in PE sections named .linux, .initrd and
# .cmdline. New sections go after the stub's last one, each at a page-aligned VMA (a multiple of
# the stub's SectionAlignment too) so that none overlaps the next.
cmdline=$default_cmdline${extra_cmdline:+ $extra_cmdline}
printf '%s' "$cmdline" >"$work/cmdline"
cat >"$work/osrel" <<EOF
NAME="nflet"
ID=nflet
VERSION_ID="$version"
PRETTY_NAME="nflet $version (Linux $kver)"
EOF
align=$(objdump -p "$stub" | awk '$1 == "SectionAlignment" { print $2 }')
align=$((16#$align)); [ "$align" -ge 4096 ] || align=4096
end=0
while read -r size vma; do
    e=$((16#$vma + 16#$size)); [ "$e" -le "$end" ] || end=$e
done < <(objdump -h "$stub" | awk '$1 ~ /^[0-9]+$/ && NF >= 7 { print $3, $4 }')
next=$(((end + align - 1) / align * align))
objcopy_args=()
for sec in osrel:"$work/osrel" cmdline:"$work/cmdline" linux:"$out/vmlinuz" initrd:"$out/initramfs.cpio.gz"; do
    name=.${sec%%:*} file=${sec#*:}
    objcopy_args+=(--add-section "$name=$file" --change-section-vma "$name=$(printf 0x%x "$next")")
    next=$(((next + $(stat -c %s "$file") + align - 1) / align * align))
done
objcopy "${objcopy_args[@]}" "$stub" "$out/nflet.efi"
python3 "$here/pe_stamp.py" "$out/nflet.efi" "$SOURCE_DATE_EPOCH" # objcopy stamps wall time
touch -d "@$SOURCE_DATE_EPOCH" "$out/nflet.efi"

# --- 3. GPT disk with an EFI system partition -------------------------------------------------
# The ESP is a FAT32 file system built in a file (mkfs.vfat -C) and filled with mtools, then
# copied into the partition's place in the disk file: no loop device, no mount, no root.
mib=$((1024 * 1024))
uki_size=$(stat -c %s "$out/nflet.efi")
# The UKI for UEFI firmware; the kernel and gzip'd initramfs again for SYSLINUX (BIOS).
bios_size=$(($(stat -c %s "$out/vmlinuz") + $(stat -c %s "$out/initramfs.cpio.gz")))
esp_mib=$(((uki_size + bios_size + 8 * mib + mib - 1) / mib)); [ "$esp_mib" -ge 64 ] || esp_mib=64
esp=$work/esp.img
mkfs.vfat -C -F 32 -n NFLET --invariant -i 4e464c54 -h 2048 "$esp" $((esp_mib * 1024)) >/dev/null
mkdir -p "$work/esp/EFI/BOOT"
cp "$out/nflet.efi" "$work/esp/EFI/BOOT/BOOTX64.EFI"
mkdir -p "$work/esp/syslinux"
cp "$out/vmlinuz" "$work/esp/vmlinuz"
cp "$out/initramfs.cpio.gz" "$work/esp/initrd.gz"
printf 'DEFAULT nflet\nPROMPT 0\nTIMEOUT 0\nLABEL nflet\n  LINUX /vmlinuz\n  INITRD /initrd.gz\n  APPEND %s\n' \
    "$cmdline" >"$work/esp/syslinux/syslinux.cfg"
find "$work/esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
export MTOOLS_SKIP_CHECK=1 MTOOLS_NO_VFAT=0
mcopy -i "$esp" -s -m -Q "$work/esp/EFI" "$work/esp/syslinux" "$work/esp/vmlinuz" "$work/esp/initrd.gz" ::/
# BIOS: SYSLINUX's loader into the FAT (through mtools, no mount), and below, GPT-aware MBR
# boot code plus the partition's "legacy BIOS bootable" attribute for it to find.
syslinux --install --directory /syslinux "$esp"
# GUIDs are fixed so the disk is reproducible; they are nflet's own, not random per build.
disk_guid=6e666c65-7400-4d00-8000-000000000001
esp_guid=6e666c65-7400-4d00-8000-000000000002
disk_mib=$((1 + esp_mib + 1)) # 1 MiB for the MBR + primary GPT, 1 MiB for the backup GPT
rm -f "$out/nflet.img"
truncate -s $((disk_mib * mib)) "$out/nflet.img"
sgdisk --clear --disk-guid="$disk_guid" \
    --new="1:2048:+${esp_mib}M" --typecode=1:ef00 --change-name=1:ESP \
    --partition-guid="1:$esp_guid" --attributes=1:set:2 "$out/nflet.img" >/dev/null
dd if="$gptmbr" of="$out/nflet.img" bs=440 count=1 conv=notrunc status=none
dd if="$esp" of="$out/nflet.img" bs=1M seek=1 conv=notrunc,sparse status=none
touch -d "@$SOURCE_DATE_EPOCH" "$out/nflet.img"

# --- Report -----------------------------------------------------------------------------------
{
    echo "kernel $kver; SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH; UKI cmdline: $cmdline"
    echo "modules (load order, /etc/nflet/modules):"
    sed 's/^/  /' "$modlist"
    [ ${#builtin[@]} -eq 0 ] || echo "built into the kernel: ${builtin[*]}"
}
cd "$out"
for f in vmlinuz initramfs.cpio initramfs.cpio.gz nflet.efi nflet.img; do
    printf '%-15s %10s bytes  sha256 %s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done
