#!/usr/bin/env bash
# Raw DPDK I/O ceiling vs nflet's fw→mon→nat chain, side by side on the same memif pair.
#
#   peer nflet (generator → memif a ... memif b → sink, CPU 1)
#        ⇅ shared memory
#   device under test on CPU 0: `dpdk-testpmd --forward-mode=io`, then nflet with
#   fw→mon→nat (and, for reference, nflet with an empty chain)
#
# Prints one markdown row per device: frames the peer got back per second and the ratio to
# testpmd. Needs root, hugepages, `dpdk-testpmd` (Debian package dpdk-dev) and the static
# release build (`cargo static`). Usage: appliance/benches/memif.sh [seconds] [flows]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
flows=${2:-10000}
bin=target/x86_64-unknown-linux-gnu/release/nflet
[ -x "$bin" ] || { echo "build the release appliance first: cargo static" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing: apt-get install dpdk-dev" >&2; exit 1; }
dir=$(mktemp -d /tmp/nflet-memif-bench.XXXXXX)
trap 'pkill -INT -f "$dir" 2>/dev/null || true; rm -rf "$dir"' EXIT

cat > "$dir/peer.toml" <<CFG
[appliance]
cores = 1
cpus = [1]
idle_sleep_us = 0
[dpdk]
link_wait_ms = 20000
[[port]]
name = "gen"
kind = "generator"
flows = $flows
size = 64
src = "10.0.0.0/16"
dst = "198.18.0.0/24"
[[port]]
name = "to_dut"
kind = "dpdk"
device = "net_memif_a,role=client,id=0,socket=$dir/in.sock"
[[port]]
name = "from_dut"
kind = "dpdk"
device = "net_memif_b,role=client,id=0,socket=$dir/out.sock"
[[port]]
name = "sink"
kind = "sink"
[[chain]]
name = "send"
ingress = ["gen"]
steps = []
output = "to_dut"
[[chain]]
name = "back"
ingress = ["from_dut"]
steps = []
output = "sink"
CFG

dut_config() { # $1: steps
    cat <<CFG
[appliance]
cores = 1
cpus = [0]
idle_sleep_us = 0
state_arena_mib = 1024
[dpdk]
link_wait_ms = 0
[[port]]
name = "inside"
kind = "dpdk"
device = "net_memif0,role=server,id=0,socket=$dir/in.sock"
[[port]]
name = "outside"
kind = "dpdk"
device = "net_memif1,role=server,id=0,socket=$dir/out.sock"
[[nf]]
name = "fw"
kind = "firewall"
default = "deny"
connections = $((flows * 2))
  [[nf.rule]]
  action = "allow"
  src = "10.0.0.0/8"
[[nf]]
name = "mon"
kind = "monitor"
flows = $((flows * 2))
[[nf]]
name = "nat"
kind = "nat"
inside = "inside"
public = ["203.0.113.1", "203.0.113.2"]
mappings = $((flows * 2))
[[chain]]
name = "out"
ingress = ["inside"]
steps = [$1]
output = "outside"
CFG
}

# Frames per second the peer received back, from its summary.
peer_rate() {
    "$bin" run -q -c "$dir/peer.toml" --duration "$secs" > "$dir/peer.out" 2> "$dir/peer.err"
    awk -v s="$secs" '/^  from_dut/ { printf "%.2f", $3 / s / 1e6 }' "$dir/peer.out"
}

echo "| device under test (1 core, 64 B, $flows flows) | Mpps back at the peer | vs testpmd |"
echo "|---|---:|---:|"
(sleep $((secs + 15)) | dpdk-testpmd --lcores "0@1,1@0" --in-memory --no-pci \
    --vdev "net_memif0,role=server,id=0,socket=$dir/in.sock" \
    --vdev "net_memif1,role=server,id=0,socket=$dir/out.sock" \
    -- --forward-mode=io --auto-start --no-lsc-interrupt > "$dir/testpmd.log" 2>&1) &
sleep 2
base=$(peer_rate)
pkill -INT -f "$dir/in.sock" || true
wait
echo "| dpdk-testpmd --forward-mode=io | $base | 1.00 |"
for steps in '' '"fw", "mon", "nat"'; do
    dut_config "$steps" > "$dir/dut.toml"
    "$bin" run -q -c "$dir/dut.toml" > "$dir/dut.out" 2> "$dir/dut.err" &
    dut=$!
    sleep 2
    rate=$(peer_rate)
    kill -TERM $dut; wait $dut || true
    name="nflet, chain [${steps//\"/}]"
    echo "| $name | $rate | $(awk -v a="$rate" -v b="$base" 'BEGIN { printf "%.2f", a / b }') |"
done
