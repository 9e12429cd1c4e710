#!/usr/bin/env bash
# The machine's sgemm ceiling in GFLOP/s: a 2048^3 GEMM with OpenBLAS and with tandem's sgemm
# (build/tandem_bench_gemm, "peak square"), about 1 s each, the faster of the two printed on stdout.
# The training benchmarks use it as their roofline.
#
#   bench/sgemm_ceiling.sh BENCH_GEMM_BINARY THREADS LOG
#
# Runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, like the benchmarks themselves.
set -euo pipefail
BIN="$1" THREADS="$2" LOG="$3"
[[ -x "$BIN" ]] || { echo "sgemm_ceiling.sh: $BIN missing (build target tandem_bench_gemm)" >&2; exit 1; }
OMP_NUM_THREADS="$THREADS" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$BIN" --filter "peak square" --seconds 1 > "$LOG"
awk -F'|' '/^peak square/ { split($2, a, " "); split($3, b, " "); print (a[2] > b[2] ? a[2] : b[2]); found = 1 }
           END { if (!found) { print "sgemm_ceiling.sh: no result in " FILENAME > "/dev/stderr"; exit 1 } }' "$LOG"
