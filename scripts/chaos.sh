#!/usr/bin/env bash
# The chaos loop, big: runs the integration test
# chaos::chaos_loop_loses_and_duplicates_nothing (tests/integration/chaos.rs)
# against the real daemon binary with many tasks and faults: senders keep
# windows of tasks in flight while a seeded fault injector restarts agents,
# makes agents and the infrastructure (HybridRouter, ModelScheduler,
# BusDispatcher) panic and SIGKILLs the Executor's child process. It fails
# when any accepted task is never answered or answered twice, or when the
# daemon is not healthy afterwards. The last line of its output is the
# report: `chaos report: {"tasks", "faults", "answered", "ok", "errors",
# "lost", "duplicated", "seconds", "seed", ...}`.
#
# Usage: scripts/chaos.sh [TASKS [FAULTS [SEED]]]
#   or set CHAOS_TASKS, CHAOS_FAULTS, CHAOS_SEED (arguments win).
#   Defaults: 20000 tasks, 200 faults, a random seed (printed; pass it
#   again to replay the same faults).
#
# Takes about 25 s on a 2-core machine with the defaults (debug build, lean:
# --no-default-features, no llama.cpp), plus the build the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

export CHAOS_TASKS="${1:-${CHAOS_TASKS:-20000}}"
export CHAOS_FAULTS="${2:-${CHAOS_FAULTS:-200}}"
if [[ -n "${3:-}" ]]; then
    export CHAOS_SEED="$3"
fi

echo "chaos: ${CHAOS_TASKS} tasks, ${CHAOS_FAULTS} faults, seed ${CHAOS_SEED:-random}" >&2
exec cargo nextest run --no-default-features --no-capture \
    -E 'test(=chaos::chaos_loop_loses_and_duplicates_nothing)'
