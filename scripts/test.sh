#!/usr/bin/env bash
# README command two: set up (Debian packages, the Python reference environment in .venv), build,
# and run every test: the C++ suite (ctest), the CUDA emulator check, the GPU-machine rehearsal,
# and the Python suite (pytest, against PyTorch, transformers, tokenizers and safetensors).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
scripts/python-env.sh
# --sanitize: the whole of tandem built with ASan + UBSan, its C++ tests and the Python tests of
# parsing, checkpoints, resume and serving (scripts/test-sanitize.sh), instead of the run below.
if [[ "${1:-}" == "--sanitize" ]]; then shift; exec scripts/test-sanitize.sh "$@"; fi

echo "[test] C++ tests"
ctest --test-dir build --output-on-failure -j2

# The CUDA kernels on the CPU emulator (about 7 min on 2 cores), and the GPU machine's build from
# the .device bundle with this machine's copies of those packages hidden (about 6 min).
echo "[test] CUDA backend on the CPU emulator (src/backends/cuda/emu/check.sh)"
src/backends/cuda/emu/check.sh
echo "[test] GPU-machine rehearsal (scripts/device-bundle.sh, scripts/gpu-check.sh --rehearse)"
scripts/device-bundle.sh
scripts/gpu-check.sh --rehearse

echo "[test] ASan + UBSan on the input-handling code: fuzz corpus replays, parsing/checkpoint/resume/serving tests"
scripts/test-sanitize.sh --ci

echo "[test] Python tests"
# -rs: every skip prints its reason; with CI=true, a skip of OpenCL or MPI coverage fails
# (tests/python/conftest.py).
TANDEM_BIN="$ROOT/build/tandem" .venv/bin/python -m pytest tests/python -q -rs "$@"
