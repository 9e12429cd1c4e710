#!/usr/bin/env bash
# README command two: set up (Debian packages, the Python reference environment in .venv), build,
# and run every test: the C++ suite (ctest), the CUDA emulator check, the GPU-machine rehearsal,
# and the Python suite (pytest, against PyTorch, transformers, tokenizers and safetensors).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/python-env.sh

echo "[test] C++ tests"
ctest --test-dir build --output-on-failure -j2

# The CUDA kernels on the CPU emulator (about 7 min on 2 cores), and the GPU machine's build from
# the .device bundle with this machine's copies of those packages hidden (about 6 min).
echo "[test] CUDA backend on the CPU emulator (src/backends/cuda/emu/check.sh)"
src/backends/cuda/emu/check.sh
echo "[test] GPU-machine rehearsal (scripts/device-bundle.sh, scripts/gpu-check.sh --rehearse)"
scripts/device-bundle.sh
scripts/gpu-check.sh --rehearse

echo "[test] Python tests"
# -rs: every skip prints its reason; with CI=true, a skip of OpenCL or MPI coverage fails
# (tests/python/conftest.py).
TANDEM_BIN="$ROOT/build/tandem" .venv/bin/python -m pytest tests/python -q -rs "$@"
