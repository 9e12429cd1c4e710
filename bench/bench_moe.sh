#!/usr/bin/env bash
# A DeepSeekMoE layer's grouped GEMMs, ds-tiny and ds-small shapes, uniform / zipf / hot expert
# loads: tandem's grouped GEMM (f32 and bf16) against a loop of tandem sgemm calls, a loop of
# OpenBLAS calls (tandem_bench_moe) and PyTorch's per-expert loop (bench/torch_moe.py), one run,
# both sides with OpenBLAS's CPU overrides unset; the sgemm and bf16 ceilings measured in the same
# run; every side as GFLOP/s and % of the ceiling, and tandem over PyTorch beside the bound the
# ceiling implies (ceiling / PyTorch's GFLOP/s).
#
#   bench/bench_moe.sh [--seconds S] [--out DIR]
# Environment: TANDEM_BIN (default build/tandem; tandem_bench_moe beside it), PYTHON (default
#   .venv/bin/python), THREADS (default 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
SECONDS_PER=0.3
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_PER="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "bench_moe.sh: unknown argument $1" >&2; exit 2;;
  esac
done
OUT="${OUT:-$ROOT/runs/bench-moe-$(date +%Y%m%d-%H%M%S)}"
BIN="$(dirname "$TANDEM")/tandem_bench_moe"
[[ -x "$BIN" ]] || { echo "bench_moe.sh: $BIN missing (configure with -DTANDEM_BENCH=ON, build target tandem_bench_moe)" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "bench_moe.sh: $PY missing: run scripts/python-env.sh (or set PYTHON)" >&2; exit 1; }
mkdir -p "$OUT"
source bench/common.sh
say "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; $THREADS threads per side"
OMP_NUM_THREADS="$THREADS" "${CLEAN[@]}" "$BIN" --seconds "$SECONDS_PER" | tee "$OUT/tandem.log"
"${CLEAN[@]}" "$PY" bench/torch_moe.py --threads "$THREADS" --seconds "$SECONDS_PER" > "$OUT/torch.log"
say "tandem grouped GEMM vs PyTorch's per-expert loop (GFLOP/s; bound = sgemm ceiling / PyTorch)"
awk '
  /^sgemm ceiling/ { ceil = $4 }
  /^torch / && NF == 6 { t[$2 " " $3 " " $4 " " $5] = $6; next }
  FILENAME ~ /tandem.log$/ && $1 ~ /^ds-/ { key = $1 " " $2 " " $3 " " $4; g[key] = $9; order[++n] = key }
  END {
    printf "%-30s %9s %9s %8s %8s\n", "gemm", "tandem", "torch", "ratio", "bound"
    for (i = 1; i <= n; ++i) { k = order[i]; if (!(k in t)) continue
      printf "%-30s %9.1f %9.1f %7.2fx %7.2fx\n", k, g[k], t[k], g[k] / t[k], ceil / t[k]
      ls += log(g[k] / t[k]); ++c }
    if (c) printf "geometric mean over %d GEMMs: tandem grouped %.2fx PyTorch per-expert loop\n", c, exp(ls / c)
  }' "$OUT/torch.log" "$OUT/tandem.log" | tee "$OUT/summary.txt"
