# Shared by images/build.sh and images/peer/build.sh (sourced, not run): resolves the kernel
# modules an image needs. Inputs: $moddir (/lib/modules/<kver>), $kver, the array `wanted`
# (module names, - or _ alike) and a `die` function. Outputs: `order` (module paths relative to
# $moddir, dependencies first, each once) and `builtin` (wanted modules built into the kernel).

declare -A dep_of=() path_of=() state=()
while IFS= read -r line; do
    mod=${line%%:*}
    name=${mod##*/}; name=${name%%.ko*}; name=${name//-/_}
    path_of[$name]=$mod
    dep_of[$mod]=${line#*:}
done <"$moddir/modules.dep"

order=()
visit() { # depth-first, dependencies first; modules.dep lists each module's full closure
    local mod=$1 d
    [ "${state[$mod]:-}" = done ] && return
    [ "${state[$mod]:-}" = busy ] && die "dependency cycle at $mod in $moddir/modules.dep"
    state[$mod]=busy
    for d in ${dep_of[$mod]}; do
        [ -n "${dep_of[$d]+x}" ] || die "$mod needs $d, which is not in $moddir/modules.dep"
        visit "$d"
    done
    state[$mod]=done
    order+=("$mod")
}
builtin=()
for want in "${wanted[@]}"; do
    key=${want//-/_}
    if [ -n "${path_of[$key]:-}" ]; then
        visit "${path_of[$key]}"
    elif grep -qE "/${want//[-_]/[-_]}\.ko$" "$moddir/modules.builtin" 2>/dev/null; then
        builtin+=("$want")
    else
        die "module $want is neither a module nor built into kernel $kver"
    fi
done
