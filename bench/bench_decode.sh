#!/usr/bin/env bash
# Single-stream decode of a gpt2-124m-shaped model in f32, bf16 and q8_0 weights: `tandem generate
# --weights W` against llama.cpp on the GGUF that `tandem export --format gguf --dtype W` writes
# (the same weights in the same format), alternating rounds, in one run; each format's weight-read
# roofline from the read rate measured in the same run. See bench/README.md.
#
#   bench/bench_decode.sh [--tokens N] [--rounds R] [--weights f32,bf16,q8_0] [--out DIR]
#
#   --tokens N   tokens per decode (default 128)
#   --rounds R   rounds; each runs every format, tandem then llama.cpp (default 3)
#   --weights L  the formats, comma-separated (default f32,bf16,q8_0)
#   --out DIR    where the model, the GGUFs and logs go (default runs/bench-decode-<timestamp>)
# Environment: TANDEM_BIN (default build/tandem), PYTHON (default .venv/bin/python, with
#   transformers and llama-cpp-python: scripts/llama-wheel.sh), OMP_NUM_THREADS (both sides, default 2).
# Both sides run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, one after the other.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TOKENS=128
ROUNDS=3
WEIGHTS=f32,bf16,q8_0
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tokens) TOKENS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --weights) WEIGHTS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench_decode.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
for w in ${WEIGHTS//,/ }; do
  [[ $w == f32 || $w == bf16 || $w == q8_0 ]] || { echo "bench_decode.sh: --weights: '$w' is not f32, bf16 or q8_0" >&2; exit 2; }
done
OUT="${OUT:-runs/bench-decode-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
[[ -x "$TANDEM" ]] || { echo "bench_decode.sh: $TANDEM not found: build it first" >&2; exit 1; }
"$PY" -c "import llama_cpp" 2>/dev/null || { echo "bench_decode.sh: llama-cpp-python is not in $PY's environment: run scripts/llama-wheel.sh" >&2; exit 1; }
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
echo "[bench] CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); load average $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; $OMP_NUM_THREADS threads per side"

# The model (bench/common.sh, as bench_serve.sh's); every format is made from this one f32 checkpoint.
source bench/common.sh
make_gpt2_124m "$OUT"
for w in ${WEIGHTS//,/ }; do
  [[ -f "$OUT/gpt2-$w.gguf" ]] || "$TANDEM" export --model "$OUT/export" --format gguf --dtype "$w" --out "$OUT/gpt2-$w.gguf" >/dev/null
done

# The read rate: bench_gemv.sh's read-only pass over the 494 MB of f32 decode weights, this run.
bench/bench_gemv.sh 1 10 > "$OUT/gemv.log"
READ_GBS=$(sed -n 's/.*read only *median .*( *\([0-9.]*\) GB\/s), best.*/\1/p' "$OUT/gemv.log")
[[ -n "$READ_GBS" ]] || { echo "bench_decode.sh: no read rate in $OUT/gemv.log" >&2; exit 1; }

env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/decode_bench.py "$TANDEM" "$OUT" "$TOKENS" "$ROUNDS" "$WEIGHTS" "$READ_GBS"
