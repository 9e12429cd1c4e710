#!/usr/bin/env bash
# Plugin ABI overhead: baby-gpt training through the loopback plugin (tandem's CPU kernels behind
# include/tandem/backend_abi.h) against the in-tree cpu backend, side by side in one run, in
# alternating rounds (cpu, loopback, cpu, loopback, ...): the tokens/s ratio per round and its
# median, then tokens per CPU-second with one thread (robust on a machine shared with other jobs).
# Then the example plugin (examples/backend-plugin, matmul/add/gelu on the plugin, the rest on the
# CPU fallback): its placement, copies per step and their share of the run time.
#
#   bench/bench_plugin.sh [--rounds R] [--steps S] [--example PATH.so] [--out DIR]
#
#   --rounds R   rounds per backend (default 3); --steps S  steps per round (default 200; the first
#                10 are excluded from the tokens/s median as warmup)
#   --example P  libtandem-backend-example.so built from examples/backend-plugin (optional)
# Environment: TANDEM_BIN (default build/tandem); the loopback plugin is build/plugins/.
# Both sides run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
LOOPBACK="$(dirname "$TANDEM")/plugins/libtandem-backend-loopback.so"
ROUNDS=3
STEPS=200
EXAMPLE=""
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2;;
    --steps) STEPS="$2"; shift 2;;
    --example) EXAMPLE="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    -h|--help) sed -n '2,16p' "$0"; exit 0;;
    *) echo "bench_plugin.sh: unknown argument $1" >&2; exit 2;;
  esac
done
THREADS=2
source bench/common.sh
OUT="${OUT:-$ROOT/runs/bench-plugin-$(date +%Y%m%d-%H%M%S)}"
[[ -x "$TANDEM" ]] || { echo "bench_plugin.sh: tandem binary not found at $TANDEM" >&2; exit 1; }
[[ -f "$LOOPBACK" ]] || { echo "bench_plugin.sh: $LOOPBACK missing (build target loopback)" >&2; exit 1; }
mkdir -p "$OUT"
say "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; tandem $TANDEM"
"$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$OUT/data" > "$OUT/prepare.log"

run() {  # run TAG BACKEND [ENV...]
  local tag="$1" backend="$2"; shift 2
  timed "$OUT/$tag.log" "${CLEAN[@]}" "$@" "$TANDEM" train --config baby-gpt --data "$OUT/data" --out "$OUT/$tag" \
    --steps "$STEPS" --backend "$backend" --set eval_interval=100000
}
# toks RUN STAT: tokens/s of a run after the warmup steps: STAT=median, or best (the fastest step:
# on a machine shared with other jobs, the step least disturbed by them).
toks() {
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"tokens_per_s"' in l]
v = [r["tokens_per_s"] for r in recs[10:] or recs]
print(f"{statistics.median(v) if sys.argv[2] == 'median' else max(v):.1f}")
PY
}
median_toks() { toks "$1" median; }
ratios=(); best_ratios=()
for r in $(seq 1 "$ROUNDS"); do
  run "cpu-r$r" cpu
  run "loopback-r$r" "plugin:$LOOPBACK"
  c=$(toks "$OUT/cpu-r$r/metrics.jsonl" median); l=$(toks "$OUT/loopback-r$r/metrics.jsonl" median)
  cb=$(toks "$OUT/cpu-r$r/metrics.jsonl" best); lb=$(toks "$OUT/loopback-r$r/metrics.jsonl" best)
  ratios+=("$(python3 -c "print(f'{$l / $c:.4f}')")"); best_ratios+=("$(python3 -c "print(f'{$lb / $cb:.4f}')")")
  say "round $r: median cpu $c tok/s, loopback $l tok/s, ratio ${ratios[-1]}; best step cpu $cb, loopback $lb, ratio ${best_ratios[-1]}"
done
med() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
say "loopback/cpu tokens/s, median over $ROUNDS rounds: $(med "${ratios[@]}") (rounds: ${ratios[*]})"
say "loopback/cpu best-step tokens/s, median over $ROUNDS rounds: $(med "${best_ratios[@]}") (rounds: ${best_ratios[*]})"
say "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs on the machine make the median noisy)"

# The same comparison in CPU time, which other jobs on the machine barely move: one OpenMP thread
# (no spinning workers), S steps per run, user+sys seconds of the whole process (start-up included,
# the same on both sides but the plugin's dlopen), alternating rounds.
cpu_s() {  # cpu_s TAG BACKEND: user+sys seconds of a one-thread training run
  "${CLEAN[@]}" OMP_NUM_THREADS=1 /usr/bin/time -f "%U %S" -o "$OUT/$1.time" "$TANDEM" train --config baby-gpt \
    --data "$OUT/data" --out "$OUT/$1" --steps "$STEPS" --set eval_interval=100000 --set eval_steps=1 \
    --backend "$2" > "$OUT/$1.log" 2>&1 || { echo "bench_plugin.sh: $1 failed (log $OUT/$1.log)" >&2; exit 1; }
  awk '{ printf "%.2f\n", $1 + $2 }' "$OUT/$1.time"
}
cpu_ratios=()
for r in $(seq 1 "$ROUNDS"); do
  c=$(cpu_s "cpu1t-r$r" cpu); l=$(cpu_s "loopback1t-r$r" "plugin:$LOOPBACK")
  cpu_ratios+=("$(python3 -c "print(f'{$c / $l:.4f}')")")
  say "round $r, one thread: cpu $c CPU-s, loopback $l CPU-s for $STEPS steps; loopback/cpu tokens per CPU-second ${cpu_ratios[-1]}"
done
say "loopback/cpu tokens per CPU-second (one thread), median over $ROUNDS rounds: $(med "${cpu_ratios[@]}") (rounds: ${cpu_ratios[*]})"

if [[ -n "$EXAMPLE" ]]; then
  run example "plugin:$EXAMPLE"
  say "example plugin: $(grep '^placement:' "$OUT/example.log")"
  say "example plugin: $(grep '^fallback copies:' "$OUT/example.log")"
  say "example plugin: $(median_toks "$OUT/example/metrics.jsonl") tok/s (cpu: $(median_toks "$OUT/cpu-r1/metrics.jsonl"))"
fi
