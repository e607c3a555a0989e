#!/usr/bin/env bash
# What the token check costs on the bus (issue 18): two daemons of the same
# build on this machine, one with an API token (every task carries it and is
# checked), one without (open doors); `agentvisor bench bus` at window 64
# against each in alternating rounds (which side goes first alternates too),
# then the median tasks/s of both and the median of the per-round ratios.
#
#   scripts/bench_auth.sh            # release build without llama.cpp, 3 rounds of 20 000 tasks
#   ROUNDS=5 TASKS=50000 scripts/bench_auth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
TASKS=${TASKS:-20000}
BIN=${BIN:-}
if [ -z "$BIN" ]; then
  cargo build --release --no-default-features --bin agentvisor
  BIN="${CARGO_TARGET_DIR:-target}/release/agentvisor"
fi
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
cat > "$tmp/profile.yaml" <<'YAML'
profile: {name: bench-auth}
agent_selection:
  include_groups: [coordination_resource]
  include_agents: [UnifiedUtilsAgent]
YAML
token=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
start() { # name ingress events [env...]
  local name=$1 ingress=$2 events=$3; shift 3
  env -u AGENTVISOR_TOKEN "$@" "$BIN" run --profile "$tmp/profile.yaml" --data-dir "$tmp/$name" \
    --http-listen 127.0.0.1:0 --set "bus.ingress=$ingress" --set "bus.events=$events" --set log.level=warn \
    > "$tmp/$name.log" 2>&1 &
  pids+=($!)
}
open_ep=tcp://127.0.0.1:7461 locked_ep=tcp://127.0.0.1:7462
start open "$open_ep" tcp://127.0.0.1:7471
start locked "$locked_ep" tcp://127.0.0.1:7472 AGENTVISOR_TOKEN="$token"
for ep in "$open_ep" "$locked_ep"; do
  for _ in $(seq 100); do
    AGENTVISOR_TOKEN=$token "$BIN" send utils.echo ready --endpoint "$ep" --timeout 1 >/dev/null 2>&1 && break
    sleep 0.2
  done
done
run() { # endpoint [token]
  local ep=$1; shift
  env -u AGENTVISOR_TOKEN "$BIN" bench bus --endpoint "$ep" --tasks "$TASKS" --concurrency 64 --json "$@" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["errors"]==0, r; print(r["tasks_per_second"], r["p50_ms"], r["p99_ms"])'
}
printf '%-6s %-8s %12s %8s %8s\n' round side tasks/s p50_ms p99_ms
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then
    read -r a a50 a99 < <(run "$open_ep")
    read -r b b50 b99 < <(run "$locked_ep" --token "$token")
  else
    read -r b b50 b99 < <(run "$locked_ep" --token "$token")
    read -r a a50 a99 < <(run "$open_ep")
  fi
  printf '%-6s %-8s %12.0f %8.2f %8.2f\n' "$r" open "$a" "$a50" "$a99" "$r" token "$b" "$b50" "$b99"
  echo "$a $b" >> "$tmp/rates"
done
python3 - "$tmp/rates" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
open_, token = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
cost = statistics.median(1 - b / a for a, b in rows)
print(f"median tasks/s: open {open_:.0f}, with token {token:.0f}; median per-round cost of the check {100 * cost:.1f} %")
PY
