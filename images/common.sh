# Shared by images/build.sh and images/peer/build.sh (sourced, not run). Both define `log` and
# `die` before sourcing this file.

# Installs the Debian packages in the array `missing` (as root, with apt-get), or dies with the
# command that would.
install_missing() {
    [ ${#missing[@]} -gt 0 ] || return 0
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        log "installing missing Debian packages: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 || {
            apt-get update -q >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
        } || die "could not install ${missing[*]}"
    else
        die "missing Debian package(s): ${missing[*]}; install with: sudo apt-get install ${missing[*]}"
    fi
}

# Sets `kver` (when empty: the newest *-cloud-amd64 under /lib/modules), `vmlinuz` and `moddir`.
find_kernel() {
    if [ -z "$kver" ]; then
        kver=$(find /lib/modules -mindepth 1 -maxdepth 1 -name '*-cloud-amd64' -printf '%f\n' |
            sort -V | tail -n 1)
        [ -n "$kver" ] || die "no /lib/modules/*-cloud-amd64; install with: sudo apt-get install linux-image-cloud-amd64"
    fi
    vmlinuz=/boot/vmlinuz-$kver
    moddir=/lib/modules/$kver
    [ -f "$vmlinuz" ] || die "$vmlinuz not found (kernel $kver); install with: sudo apt-get install linux-image-$kver"
    [ -f "$moddir/modules.dep" ] || die "$moddir/modules.dep not found; reinstall linux-image-$kver"
}

# Resolves the kernel modules in the array `wanted` (names, - or _ alike) against $moddir: sets
# `order` (module paths relative to $moddir, dependencies first, each once) and `builtin`
# (wanted modules built into the kernel).
resolve_modules() {
    declare -gA dep_of=() path_of=() state=()
    local line mod name want key
    while IFS= read -r line; do
        mod=${line%%:*}
        name=${mod##*/}; name=${name%%.ko*}; name=${name//-/_}
        path_of[$name]=$mod
        dep_of[$mod]=${line#*:}
    done <"$moddir/modules.dep"
    order=()
    builtin=()
    for want in "${wanted[@]}"; do
        key=${want//-/_}
        if [ -n "${path_of[$key]:-}" ]; then
            visit_module "${path_of[$key]}"
        elif grep -qE "/${want//[-_]/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
            builtin+=("$want")
        else
            die "module $want is neither a module nor built into kernel $kver"
        fi
    done
}

visit_module() { # depth-first, dependencies first; modules.dep lists each module's full closure
    local mod=$1 d
    [ "${state[$mod]:-}" = done ] && return
    [ "${state[$mod]:-}" = busy ] && die "dependency cycle at $mod in $moddir/modules.dep"
    state[$mod]=busy
    for d in ${dep_of[$mod]}; do
        [ -n "${dep_of[$d]+x}" ] || die "$mod needs $d, which is not in $moddir/modules.dep"
        visit_module "$d"
    done
    state[$mod]=done
    order+=("$mod")
}
