#!/usr/bin/env bash
# Issue 15 acceptance: sends every request of the held-out test part of
# tests/data/requests.jsonl as `auto` to the real daemon (full profile, the
# default embedded model) and prints, per request, the specialist, the
# content route and confidence, the tier, how the arbiter's loop ended and
# the end-to-end time; then the counts per category and the time
# percentiles. Fails unless every request gets a specialist's answer.
# ARBITER_EVAL=sample runs the 10-request sample (one per category) that
# the test command runs too. ARBITER_DEADLINE_MS is each request's deadline
# (default here 60000; the test command's sample uses 25000): an answer the
# deadline cuts short comes back `partial` and is counted apart.
set -euo pipefail
cd "$(dirname "$0")/.."
ARBITER_EVAL="${ARBITER_EVAL:-all}" ARBITER_DEADLINE_MS="${ARBITER_DEADLINE_MS:-60000}" cargo nextest run --test integration --no-capture --run-ignored all \
    -E 'test(auto_with_the_default_model_gives_a_specialists_answer)' "$@"
