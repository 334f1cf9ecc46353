#!/usr/bin/env bash
# What an idle scale-out worker and output logger cost: CPU (utime + stime from /proc) and
# voluntary context switches (wake-ups) of one `nflet worker` and one `nflet logger` with
# nothing to do, over a few seconds. No director runs: they only send hellos and nap.
# Usage: appliance/benches/idle.sh [nflet binary] [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/nflet}
secs=${2:-5}
[ -x "$bin" ] || { echo "no $bin: build it first (cargo build --release -p nflet)" >&2; exit 1; }
dir=$(mktemp -d /tmp/nflet-idle-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
base=$((47000 + RANDOM % 1000 * 4))
# The NAT example with a `[scale]` table: two workers, each with an output logger.
{ cat examples/offline-nat.toml; cat <<CFG; } > "$dir/idle.toml"

[scale]
director = "127.0.0.1:$base"
workers = ["127.0.0.1:$((base + 1))", "127.0.0.1:$((base + 2))"]
loggers = ["127.0.0.1:$((base + 3))", "127.0.0.1:$((base + 4))"]
key = "idle benchmark key, not a secret"
initial_workers = 2
heartbeat_ms = 20
failure_timeout_ms = 100
CFG
"$bin" worker --config "$dir/idle.toml" --id 0 > "$dir/worker.out" 2>&1 &
worker=$!
"$bin" logger --config "$dir/idle.toml" --id 0 > "$dir/logger.out" 2>&1 &
logger=$!
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wakeups() { awk '/^voluntary_ctxt_switches/ {print $2}' "/proc/$1/status"; }
w0=$(ticks $worker); l0=$(ticks $logger); ww0=$(wakeups $worker); lw0=$(wakeups $logger)
sleep "$secs"
w1=$(ticks $worker); l1=$(ticks $logger); ww1=$(wakeups $worker); lw1=$(wakeups $logger)
hz=$(getconf CLK_TCK)
row() { # name, ticks, wake-ups
  awk -v n="$1" -v t="$2" -v w="$3" -v s="$secs" -v hz="$hz" \
    'BEGIN { printf "| %s | %.1f %% of a core | %.0f wake-ups/s |\n", n, 100 * t / hz / s, w / s }'
}
echo "| idle instance | CPU | wake-ups |"
echo "|---|---|---|"
row worker $((w1 - w0)) $((ww1 - ww0))
row logger $((l1 - l0)) $((lw1 - lw0))
