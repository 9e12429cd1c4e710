# Shared by the training benchmarks (bench_train.sh, bench_deepseek.sh): sourced, not run.
# Expects TANDEM (the tandem binary) and THREADS to be set by the caller.

# Both sides of every benchmark run with OpenBLAS's CPU overrides unset (tests and CI keep them).
CLEAN=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
BENCH_NAME="$(basename "$0")"

say() { printf '[bench] %s\n' "$*"; }

# timed LOG cmd... : run, log stdout+stderr, print wall seconds to LOG.wall; stop on failure.
timed() {
  local log="$1"; shift
  local t0=$EPOCHREALTIME
  if ! "$@" > "$log" 2>&1; then
    echo "$BENCH_NAME: command failed (log $log):" >&2; tail -20 "$log" >&2; exit 1
  fi
  awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }' > "$log.wall"
}

# measure_sgemm_ceiling OUT : unless SGEMM_PEAK_GFLOPS is set, the machine's sgemm ceiling in
# GFLOP/s, the roofline of the training benchmarks: a 2048^3 GEMM with OpenBLAS and with tandem's
# sgemm (tandem_bench_gemm beside the tandem binary, "peak square"), ~1 s each, THREADS threads;
# the faster of the two. Exported as SGEMM_PEAK_GFLOPS; the run's output is OUT/sgemm-peak.log.
measure_sgemm_ceiling() {
  local log="$1/sgemm-peak.log" bin
  bin="$(dirname "$TANDEM")/tandem_bench_gemm"
  if [[ -z "${SGEMM_PEAK_GFLOPS:-}" ]]; then
    [[ -x "$bin" ]] || { echo "$BENCH_NAME: $bin missing (build target tandem_bench_gemm, or set SGEMM_PEAK_GFLOPS)" >&2; exit 1; }
    say "measuring the sgemm ceiling (2048^3 GEMM, OpenBLAS and tandem, about 1 s each)"
    OMP_NUM_THREADS="$THREADS" "${CLEAN[@]}" "$bin" --filter "peak square" --seconds 1 > "$log"
    SGEMM_PEAK_GFLOPS=$(awk -F'|' '/^peak square/ { split($2, a, " "); split($3, b, " "); print (a[2] > b[2] ? a[2] : b[2]) }' "$log")
    [[ -n "$SGEMM_PEAK_GFLOPS" ]] || { echo "$BENCH_NAME: no result in $log" >&2; exit 1; }
    say "sgemm ceiling: $SGEMM_PEAK_GFLOPS GFLOP/s ($(grep '^peak square' "$log"))"
    # the same run's bf16 GEMM (tandem's bgemm on the same 2048^3 operands rounded to bf16)
    BF16_PEAK_GFLOPS=$(awk -F'|' '/^peak square/ { split($5, c, " "); print c[2] }' "$log")
    say "bf16 GEMM ceiling: ${BF16_PEAK_GFLOPS:-n/a} GFLOP/s ($(grep '^bf16 GEMM' "$log"))"
  fi
  export SGEMM_PEAK_GFLOPS BF16_PEAK_GFLOPS
}

# make_gpt2_124m OUT : unless OUT/export holds it already, GPT-2 124M's shape (vocab 50257, context
# 1024) with transformers' random init and the Shakespeare character tokenizer (its ids are all <
# 50257; the lm_head still computes all 50257 logits, so the work per token is GPT-2 124M's),
# written by `tandem export` in tandem's checkpoint layout to OUT/export (speed does not depend on
# the weights). The decode benchmarks' model; expects TANDEM and PY, run from the repo root.
make_gpt2_124m() {
  local OUT="$1"
  if [[ ! -f "$OUT/export/model.safetensors" ]]; then
    "$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$OUT/data" >/dev/null
    "$PY" - "$OUT/model" <<'PYEOF'
import sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1], safe_serialization=True)
PYEOF
    cp "$OUT/data/tokenizer.json" "$OUT/model/tokenizer.json"
    "$TANDEM" export --model "$OUT/model" --format hf --out "$OUT/export" >/dev/null
  fi
}
