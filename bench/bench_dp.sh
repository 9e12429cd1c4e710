#!/usr/bin/env bash
# Data parallelism on one machine: 2 MPI ranks x 1 thread vs 1 process x 2 threads, same global
# batch, side by side in one run. Prints tokens/s of both, the scaling efficiency (2-rank tokens/s
# over 1-process tokens/s: the cost of splitting the work into processes and moving gradients),
# and the bytes rank 0 sends through the collectives per step against the gradient size.
#
#   bench/bench_dp.sh [--steps N] [--skip K] [--batch B] [--config NAME] [--reduce fast|deterministic]
#                     [--zero 0|1] [--out DIR]
#
#   --steps N   training steps per side (default 6); the first --skip K (default 2) are warmup
#   --batch B   global batch rows (default 4), block 64; --config (default gpt2-124m, vocab 50257)
# Environment: TANDEM_BIN (default build/tandem). Both sides run under
# `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
STEPS=6; SKIP=2; BATCH=4; CONFIG=gpt2-124m; REDUCE=fast; ZERO=0; OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2;;
    --skip) SKIP="$2"; shift 2;;
    --batch) BATCH="$2"; shift 2;;
    --config) CONFIG="$2"; shift 2;;
    --reduce) REDUCE="$2"; shift 2;;
    --zero) ZERO="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    -h|--help) sed -n '2,13p' "$0"; exit 0;;
    *) echo "bench_dp.sh: unknown argument $1" >&2; exit 2;;
  esac
done
(( SKIP < STEPS )) || { echo "bench_dp.sh: --skip must be < --steps" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "bench_dp.sh: mpirun not found (scripts/setup.sh installs OpenMPI)" >&2; exit 1; }
[[ -x "$TANDEM" ]] || { echo "bench_dp.sh: tandem binary not found at $TANDEM" >&2; exit 1; }
OUT="${OUT:-$ROOT/runs/bench-dp-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
CLEAN=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
say() { printf '[bench-dp] %s\n' "$*"; }
SET=(--set batch_size="$BATCH" --set block_size=64 --set eval_interval=100000 --set eval_steps=1)
[[ "$CONFIG" == gpt2-124m ]] && SET+=(--set vocab_size=50257)
ARGS=(train --config "$CONFIG" --steps "$STEPS" --seed 1337 --reduce "$REDUCE" --zero "$ZERO" "${SET[@]}")

say "output: $OUT"
"${CLEAN[@]}" "$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$OUT/data" > "$OUT/prepare.log" 2>&1
say "$CONFIG, batch $BATCH x 64, $STEPS steps: 1 process x 2 threads"
"${CLEAN[@]}" OMP_NUM_THREADS=2 "$TANDEM" "${ARGS[@]}" --data "$OUT/data" --out "$OUT/one" > "$OUT/one.log" 2>&1 \
  || { tail -20 "$OUT/one.log" >&2; exit 1; }
say "$CONFIG, batch $BATCH x 64, $STEPS steps: 2 ranks x 1 thread (mpirun)"
"${CLEAN[@]}" mpirun --allow-run-as-root -np 2 --bind-to core -x OMP_NUM_THREADS=1 \
  "$TANDEM" "${ARGS[@]}" --data "$OUT/data" --out "$OUT/two" > "$OUT/two.log" 2>&1 \
  || { tail -20 "$OUT/two.log" >&2; exit 1; }

python3 - "$OUT" "$SKIP" <<'PYEOF'
import json, sys
out, skip = sys.argv[1], int(sys.argv[2])
def recs(d):
    return [json.loads(l) for l in open(f"{out}/{d}/metrics.jsonl") if l.strip()]
def tps(rs):
    steps = [r for r in rs if "tokens_per_s" in r and r["step"] > skip]
    return len(steps) / sum(1 / r["tokens_per_s"] for r in steps), steps
one, _ = tps(recs("one"))
two_recs = recs("two")
two, steps = tps(two_recs)
params = int(open(f"{out}/one.log").read().split(" parameters")[0].split(", ")[-1])
comm = sorted(r["comm_bytes"] for r in steps)[len(steps) // 2]
ev = next(r for r in two_recs if r.get("event") == "parallel")
print(f"\n{'':28}{'tokens/s':>12}{'s/step':>10}")
tok_step = steps[0]["tokens_per_s"] * steps[0]["step_ms"] / 1e3
print(f"{'1 process x 2 threads':28}{one:12.1f}{tok_step / one:10.3f}")
print(f"{'2 ranks x 1 thread':28}{two:12.1f}{tok_step / two:10.3f}   ({two / 2:.1f} tokens/s per rank)")
print(f"scaling efficiency (2 ranks / 1 process): {two / one:.2f}")
grad = 4 * params
print(f"collective bytes sent by rank 0 per step: {comm / 1e6:.1f} MB = {comm / grad:.2f} x the gradient "
      f"({grad / 1e6:.1f} MB, {params} parameters); reduce {ev['reduce']}, ZeRO-{ev['zero']}, "
      f"AdamW state per rank {[round(b / 1e6, 1) for b in ev['optimizer_state_bytes']]} MB")
PYEOF
