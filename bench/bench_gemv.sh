#!/usr/bin/env bash
# Decode-step matmuls of GPT-2 124M: OpenBLAS vs tandem's skinny GEMM (src/backends/cpu/gemv.h),
# side by side in one process. See bench/README.md.
#
#   bench/bench_gemv.sh [M] [steps]     M rows per matmul (1 = one sequence, default 1), steps per side (default 15)
#
# Compiles bench/bench_gemv.cpp with the kernel's source (no CMake build needed) into
# ${TMPDIR:-/tmp}, then runs it with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset and
# OMP_NUM_THREADS (default 2) threads for both.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${TMPDIR:-/tmp}/tandem_bench_gemv"
OB=/usr/lib/x86_64-linux-gnu/openblas-openmp
c++ -std=c++20 -O3 -march=native -fopenmp -I"$ROOT/src" -isystem /usr/include/x86_64-linux-gnu/openblas-openmp \
  "$ROOT/bench/bench_gemv.cpp" "$ROOT/src/backends/cpu/gemv.cpp" -L"$OB" -Wl,-rpath,"$OB" -lopenblas -o "$BIN"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" "$@"
