#!/usr/bin/env bash
# Serving throughput of `tandem serve` on a gpt2-124m-shaped model (random weights: speed does not
# depend on them), side by side with llama.cpp on the same weights. See bench/README.md.
#
#   bench/bench_serve.sh [--tokens N] [--prompt-len P] [--streams S] [--rounds R] [--no-llama] [--no-batch] [--out DIR]
#
#   --tokens N      tokens per decode request (default 128)
#   --prompt-len P  prompt tokens for the prefill measurement (default 512)
#   --streams S     concurrent streams for the batched measurement (default 8)
#   --rounds R      single-stream rounds, tandem then llama.cpp in each; medians reported (default 3)
#   --no-llama      tandem alone (no llama-cpp-python needed)
#   --no-batch      skip the S-streams-vs-1 measurement
#   --out DIR       where the model, the GGUF and logs go (default runs/bench-serve-<timestamp>)
# Environment: TANDEM_BIN (default build/tandem), PYTHON (default .venv/bin/python: transformers
#   writes the random model, gguf writes the GGUF, llama-cpp-python runs it), OMP_NUM_THREADS
#   (threads of both sides, default 2).
# Both sides run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (the benchmark's own choice;
# tests keep them) and the same thread count, one after the other, never at the same time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TOKENS=128
PROMPT_LEN=512
STREAMS=8
ROUNDS=3
LLAMA=1
BATCH=1
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tokens) TOKENS="$2"; shift 2 ;;
    --prompt-len) PROMPT_LEN="$2"; shift 2 ;;
    --streams) STREAMS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --no-llama) LLAMA=0; shift ;;
    --no-batch) BATCH=0; shift ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench_serve.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-runs/bench-serve-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
[[ -x "$TANDEM" ]] || { echo "bench_serve.sh: $TANDEM not found: build it first" >&2; exit 1; }
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# 1. The model (bench/common.sh): both sides load OUT/export (llama.cpp through the GGUF made from it).
source bench/common.sh
make_gpt2_124m "$OUT"

# 2. llama.cpp: llama-cpp-python in the venv (built once for this CPU by scripts/llama-wheel.sh,
#    then installed from its cached wheel), and the same weights as an f32 GGUF.
if [[ $LLAMA == 1 ]]; then
  if ! "$PY" -c "import llama_cpp" 2>/dev/null; then
    echo "bench_serve.sh: llama-cpp-python is not in $("$PY" -c 'import sys; print(sys.prefix)'): installing it with"
    echo "  scripts/llama-wheel.sh (from PyPI; the first time it compiles llama.cpp for this CPU: 33 min on 2 busy cores;"
    echo "  later runs install the cached wheel in seconds). --no-llama skips the comparison."
    TANDEM_VENV="$("$PY" -c 'import sys; print(sys.prefix)')" scripts/llama-wheel.sh
  fi
  [[ -f "$OUT/gpt2-f32.gguf" ]] || "$PY" bench/gpt2_to_gguf.py "$OUT/export" "$OUT/gpt2-f32.gguf"
fi

# 3. The decode roofline: one decode step reads every weight once, so no engine decodes faster than
#    the machine reads those 494 MB. bench_gemv.sh times exactly that read (a vectorised sum over
#    the same weight shapes, all threads) in this run, beside the skinny GEMM.
bench/bench_gemv.sh 1 10 > "$OUT/gemv.log"
DECODE_READ_MS=$(awk '/read only/ { print $4 }' "$OUT/gemv.log")
[[ -n "$DECODE_READ_MS" ]] || { echo "bench_serve.sh: no read-only time in $OUT/gemv.log" >&2; exit 1; }
export DECODE_READ_MS

# 4. Measure: the same-model check, single-stream rounds (tandem serve, then llama.cpp), then
#    S concurrent streams against 1 (bench/serve_bench.py).
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$PY" bench/serve_bench.py "$TANDEM" "$OUT" "$TOKENS" "$PROMPT_LEN" \
  "$STREAMS" "$ROUNDS" "$LLAMA" "$BATCH"
