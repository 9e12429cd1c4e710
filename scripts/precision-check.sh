#!/usr/bin/env bash
# bf16 against f32 over whole training recipes, same seed and data: the final validation loss of
# `--precision bf16` within 1% of f32's. baby-gpt over its full recipe (2000 steps, the char corpus)
# also runs in README command two (tests/python/test_low_precision.py); this script adds ds-tiny over
# the demo's steps (README command one: 1500 steps, BPE 1024), which takes too long for CI.
#
#   scripts/precision-check.sh [--models baby-gpt,ds-tiny] [--out DIR]
#
# Prints, per model, the two final validation losses, their relative gap and the wall time of each
# run; exits 1 when a gap is over 1%.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
MODELS="baby-gpt,ds-tiny"
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) MODELS="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    -h|--help) sed -n '2,11p' "$0"; exit 0;;
    *) echo "precision-check.sh: unknown argument $1" >&2; exit 2;;
  esac
done
OUT="${OUT:-$ROOT/runs/precision-check-$(date +%Y%m%d-%H%M%S)}"
[[ -x "$TANDEM" ]] || { echo "precision-check.sh: $TANDEM missing (scripts/setup.sh builds it)" >&2; exit 1; }
mkdir -p "$OUT"
echo "[precision] CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); load $(cut -d' ' -f1-3 /proc/loadavg); out $OUT"

final_val() { grep -o '"val_loss":[0-9.eE+-]*' "$1/metrics.jsonl" | tail -1 | cut -d: -f2; }
status=0
IFS=, read -ra list <<< "$MODELS"
for model in "${list[@]}"; do
  case "$model" in
    baby-gpt) tok=char;;
    ds-tiny) tok=bpe:1024;;
    *) echo "precision-check.sh: unknown model $model (baby-gpt, ds-tiny)" >&2; exit 2;;
  esac
  data="$OUT/data-${tok/:/}"
  [[ -d "$data" ]] || "$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer "$tok" --out "$data" > /dev/null
  declare -A val wall
  for p in f32 bf16; do
    t0=$SECONDS
    "$TANDEM" train --config "$model" --data "$data" --out "$OUT/$model-$p" --precision "$p" > "$OUT/$model-$p.log" 2>&1 \
      || { echo "precision-check.sh: $model $p failed (log $OUT/$model-$p.log)" >&2; tail -5 "$OUT/$model-$p.log" >&2; exit 1; }
    wall[$p]=$((SECONDS - t0))
    val[$p]=$(final_val "$OUT/$model-$p")
  done
  gap=$(awk -v a="${val[f32]}" -v b="${val[bf16]}" 'BEGIN { d = (b - a) / a; printf "%.4f", (d < 0 ? -d : d) * 100 }')
  verdict=$(awk -v g="$gap" 'BEGIN { print (g <= 1.0 ? "PASS" : "FAIL") }')
  [[ "$verdict" == PASS ]] || status=1
  printf '[precision] %-8s final val loss: f32 %s (%ss), bf16 %s (%ss): gap %s%% (bound 1%%) %s\n' \
    "$model" "${val[f32]}" "${wall[f32]}" "${val[bf16]}" "${wall[bf16]}" "$gap" "$verdict"
done
exit $status
