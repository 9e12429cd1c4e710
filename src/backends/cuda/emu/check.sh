#!/usr/bin/env bash
# Runs the CUDA backend's kernels on the CPU (README.md here): mirrors the repository into
# $EMU_TREE (default /tmp/tandem-cuda-emu), builds tandem and emu_harness there with the emulator,
# then runs `tandem conform --backend cuda` (f32, bf16 and q8_0 rows), the harness's larger cases (with a bitwise
# determinism check) and its device-side error checks. Extra arguments go to conform.
# EMU_ASAN=1: AddressSanitizer on the kernels and the emulator (exact-size allocations, so
# out-of-bounds reads and writes are caught). EMU_ORDER=reverse: threads run in reverse order
# between barriers (exposes races that the forward order hides). About 6 min to build on 2 cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
TREE="${EMU_TREE:-/tmp/tandem-cuda-emu}"
python3 "$ROOT/src/backends/cuda/emu/mirror.py" "$ROOT" "$TREE"
launch=()  # ccache, where installed: paths inside the mirror hash as relative ones
if command -v ccache >/dev/null 2>&1; then
  launch=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  export CCACHE_BASEDIR="$TREE"
fi
cmake -S "$TREE" -B "$TREE/build" -DCMAKE_BUILD_TYPE=Release -DTANDEM_TESTS=OFF -DTANDEM_BENCH=OFF \
  -DTANDEM_EMU_SOURCE="$ROOT" -DEMU_ASAN="${EMU_ASAN:-0}" "${launch[@]}" >/dev/null
cmake --build "$TREE/build" -j"$(nproc)" --target tandem emu_harness
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:detect_stack_use_after_return=0}"
"$TREE/build/tandem" conform --backend cuda --dtype f32 "$@" | tail -3
"$TREE/build/tandem" conform --backend cuda --dtype bf16 "$@" | tail -2  # bf16 storage, cast kernel
"$TREE/build/tandem" conform --backend cuda --dtype q8_0 "$@" | tail -2  # q8_0 weights, dequantizing kernel
"$TREE/build/emu_harness" cuda | tail -1
"$TREE/build/emu_harness" cuda errors
