#!/usr/bin/env bash
# Boot the images under QEMU (TCG) with a stand-in /init (test/init.c) instead of nflet, three
# ways: -kernel/-initrd, the UKI from a virtual FAT drive under OVMF, and the GPT disk under OVMF.
# Each boot must print "hello from init", load every module of /etc/nflet/modules, and power off.
# Also checks that two builds of the same inputs are byte-identical.
# usage: images/test/boot-test.sh   (needs gcc, qemu-system-x86, ovmf; ~30 s)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for dep in gcc:gcc qemu-system-x86_64:qemu-system-x86; do
    command -v "${dep%%:*}" >/dev/null ||
        { echo "boot-test: missing ${dep#*:}; install with: sudo apt-get install ${dep#*:}" >&2; exit 1; }
done
ovmf=/usr/share/ovmf/OVMF.fd
[ -f "$ovmf" ] || { echo "boot-test: missing ovmf; install with: sudo apt-get install ovmf" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
gcc -static -O2 -o "$work/init" "$here/init.c"
printf '# baked-in test config\n' >"$work/nflet.toml"
build() { "$here/../build.sh" --init "$work/init" --config "$work/nflet.toml" --out "$1" | tail -n 4; }
build "$work/a" >"$work/a.sums"
touch "$work/init" "$work/nflet.toml"
build "$work/b" >"$work/b.sums"
if cmp -s "$work/a.sums" "$work/b.sums"; then
    echo "reproducible: two builds are byte-identical"
else
    diff "$work/a.sums" "$work/b.sums" >&2 || true
    echo "FAIL: two builds of the same inputs differ" >&2
    exit 1
fi

fails=0
boot() { # boot NAME QEMU-ARGS...: run QEMU, check the console log
    local name=$1 log=$work/$1.log start end
    shift
    start=$(date +%s%N)
    timeout 300 qemu-system-x86_64 -accel tcg -cpu max -m 512 -nographic -no-reboot -net none \
        "$@" >"$log" 2>&1 </dev/null || true
    end=$(date +%s%N)
    local up # the UKI's "quiet" hides the kernel's "Run /init" line; init prints its uptime
    up=$(grep -ao 'uptime at end of init: [0-9.]*' "$log" | grep -o '[0-9.]*$' || echo '?')
    if grep -aq 'hello from init' "$log" && grep -aq 'modules: [1-9][0-9]* loaded, 0 failed' "$log" &&
        grep -aq 'baked-in config: present' "$log" && grep -aq 'reboot: Power down' "$log"; then
        printf 'ok   %-7s init done at uptime %ss, QEMU %d ms wall\n' "$name" "$up" $(((end - start) / 1000000))
    else
        printf 'FAIL %-8s (console log follows)\n' "$name"
        tail -n 40 "$log"
        fails=$((fails + 1))
    fi
}
boot kernel -kernel "$work/a/vmlinuz" -initrd "$work/a/initramfs.cpio" -append "console=ttyS0 panic=-1"
mkdir -p "$work/vfat/EFI/BOOT"
cp "$work/a/nflet.efi" "$work/vfat/EFI/BOOT/BOOTX64.EFI"
boot uki -bios "$ovmf" -drive "file=fat:$work/vfat,format=raw,if=virtio,readonly=on"
boot gpt -bios "$ovmf" -drive "file=$work/a/nflet.img,format=raw,if=virtio,snapshot=on"
[ "$fails" -eq 0 ] && echo "3 passed, 0 failed" || { echo "$((3 - fails)) passed, $fails failed"; exit 1; }
