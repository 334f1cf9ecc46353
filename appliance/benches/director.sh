#!/usr/bin/env bash
# The scale-out director's forwarding rate on one core, and its cost per new flowlet.
#
#   generator port → director (flowlet detection, demand, packing, VXLAN + metadata,
#   sendmsg to the flowlet's worker) → 3 worker addresses on loopback (bound UDP sockets
#   nobody reads: the kernel takes and drops the datagrams, so workers cost nothing here)
#
# Two runs side by side: 64-byte UDP over 64 flows (back-to-back packets: a new flowlet only
# every 15 KB, the size threshold) and over 1,000,000 flows (almost every packet a new flow
# and flowlet). Prints packets/s and ns/packet; the difference is the cost of a new flowlet
# (and a new flow table entry). Needs the release build (`cargo static`).
# Usage: appliance/benches/director.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
bin=target/x86_64-unknown-linux-gnu/release/nflet
[ -x "$bin" ] || { echo "build the release appliance first: cargo static" >&2; exit 1; }
dir=$(mktemp -d /tmp/nflet-director-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
base=$((46000 + RANDOM % 1000 * 4))
# Three silent "workers": bound sockets that never read.
python3 - "$base" "$secs" <<'PY' &
import socket, sys, time
base, secs = int(sys.argv[1]), float(sys.argv[2])
socks = []
for i in range(1, 4):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", base + i))
    socks.append(s)
time.sleep(2 * secs + 10)
PY
sleep 0.5
run() {
  local flows=$1
  cat > "$dir/d.toml" <<CFG
[appliance]
cpus = [0]
[[port]]
name = "gen"
kind = "generator"
flows = $flows
size = 64
proto = "udp"
[[port]]
name = "out"
kind = "sink"
[[chain]]
name = "c"
ingress = ["gen"]
steps = []
output = "out"
[scale]
director = "127.0.0.1:$base"
workers = ["127.0.0.1:$((base + 1))", "127.0.0.1:$((base + 2))", "127.0.0.1:$((base + 3))"]
key = "benchmark key, 32 bytes long...."
initial_workers = 3
launcher = "static"
capacity_mbps = 100000
replicas = 0
CFG
  taskset -c 0 "$bin" director -c "$dir/d.toml" -d "$secs" 2>/dev/null | tail -1 > "$dir/out.json"
  python3 - "$dir/out.json" "$secs" "$flows" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
n, secs = s["director"]["received"], float(sys.argv[2])
d = s["decisions"]
print(f"| {int(sys.argv[3]):>9} flows | {n / secs / 1e6:.2f} Mpps | {secs * 1e9 / max(n, 1):.0f} ns/pkt | "
      f"flowlets {d['flowlets']} ({d['flowlets'] / max(n, 1):.2f}/pkt) | new flows {d['new_flows']} |")
PY
}
echo "| trace | director rate | cost | flowlets | |"
echo "|---|---|---|---|---|"
run 64
run 1000000
