#!/usr/bin/env bash
# README command two: set up (Debian packages, the Python reference environment in .venv), build,
# and run every test: the C++ suite (ctest) and the Python suite (pytest, against PyTorch,
# transformers, tokenizers and safetensors).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/python-env.sh

echo "[test] C++ tests"
ctest --test-dir build --output-on-failure -j2

echo "[test] Python tests"
TANDEM_BIN="$ROOT/build/tandem" .venv/bin/python -m pytest tests/python -q "$@"
