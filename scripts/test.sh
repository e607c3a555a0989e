#!/usr/bin/env bash
# The test command: set-up, formatting, lints, every test (unit,
# integration against the real daemon, doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --check
hadolint Dockerfile
cargo clippy --all-targets -- -D warnings
cargo clippy --no-default-features --lib --bins -- -D warnings   # the lean build without llama.cpp
cargo nextest run --no-fail-fast
cargo test --doc --quiet
