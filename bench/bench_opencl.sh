#!/usr/bin/env bash
# Training throughput of the OpenCL backend against the CPU backend: the same recipe, data and
# seed, one backend after the other in a single run. See bench/README.md.
#
#   bench/bench_opencl.sh [--steps N] [--ds-steps M] [--skip K] [--out DIR]
#
#   --steps N     baby-gpt steps per backend (default 200)
#   --ds-steps M  ds-tiny steps per backend (default 40; 0 leaves ds-tiny out)
#   --skip K      first steps left out of the timing (default 10: kernel compilation, warm-up)
#   --out DIR     where data, runs and logs go (default runs/bench-opencl-<timestamp>)
# Environment: TANDEM_BIN (default build/tandem).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
STEPS=200
DS_STEPS=40
SKIP=10
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2;;
    --ds-steps) DS_STEPS="$2"; shift 2;;
    --skip) SKIP="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    -h|--help) sed -n '2,12p' "$0"; exit 0;;
    *) echo "bench_opencl.sh: unknown argument $1" >&2; exit 2;;
  esac
done
OUT="${OUT:-$ROOT/runs/bench-opencl-$(date +%Y%m%d-%H%M%S)}"
[[ -x "$TANDEM" ]] || { echo "bench_opencl.sh: tandem binary not found at $TANDEM (build it or set TANDEM_BIN)" >&2; exit 1; }
"$TANDEM" backends | grep -A1 '^opencl' | grep -q 'device 0: ' ||
  { echo "bench_opencl.sh: this tandem has no usable OpenCL device (tandem backends)" >&2; exit 1; }
(( SKIP < STEPS )) || { echo "bench_opencl.sh: --skip must be < --steps" >&2; exit 2; }

mkdir -p "$OUT"
say() { printf '[bench] %s\n' "$*"; }
run() {  # run LOG cmd...: stdout+stderr to LOG, stop with its tail on failure
  local log="$1"; shift
  "$@" > "$log" 2>&1 || { echo "bench_opencl.sh: command failed (log $log):" >&2; tail -20 "$log" >&2; exit 1; }
}

say "output: $OUT"
say "tandem: $TANDEM"
say "opencl device: $("$TANDEM" backends | grep -A1 '^opencl' | sed -n 's/^ *device 0: //p')"
say "preparing data from data/tinyshakespeare.txt (char for baby-gpt, bpe:1024 for ds-tiny)"
run "$OUT/prepare-char.log" "$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$OUT/char"
[[ $DS_STEPS -gt 0 ]] &&
  run "$OUT/prepare-bpe.log" "$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer bpe:1024 --out "$OUT/bpe"

ROWS=()
bench() {  # bench CONFIG DATA STEPS
  local config="$1" data="$2" steps="$3" skip=$SKIP
  (( skip < steps )) || skip=$(( steps / 4 ))
  for backend in cpu opencl; do
    say "$config, $steps steps: $backend"
    run "$OUT/$config-$backend.log" "$TANDEM" train --config "$config" --data "$OUT/$data" --out "$OUT/$config-$backend" \
      --steps "$steps" --seed 1337 --backend "$backend" --set eval_interval=100000 --set eval_steps=1
    ROWS+=("$config $backend $skip $OUT/$config-$backend/metrics.jsonl")
  done
}
bench baby-gpt char "$STEPS"
[[ $DS_STEPS -gt 0 ]] && bench ds-tiny bpe "$DS_STEPS"

# tokens/s: total tokens / total step time of the steps after the skipped ones (every step has the
# same tokens), and the median per-step rate (robust to a few steps slowed by other load).
python3 - "${ROWS[@]}" <<'EOF'
import json, statistics, sys
rows, base = [], {}
for spec in sys.argv[1:]:
    config, backend, skip, path = spec.split(" ", 3)
    steps = [r for r in map(json.loads, open(path)) if "step_ms" in r and "event" not in r]
    timed = steps[int(skip):]
    tokens = sum(r["tokens_per_s"] * r["step_ms"] / 1e3 for r in timed)
    secs = sum(r["step_ms"] for r in timed) / 1e3
    agg, med = tokens / secs, statistics.median(r["tokens_per_s"] for r in timed)
    base.setdefault(config, (agg, med))
    rows.append((config, backend, len(timed), agg, med, agg / base[config][0], steps[-1]["loss"]))
print(f"\n{'config':10} {'backend':8} {'steps':>6} {'tokens/s':>10} {'median':>10} {'vs cpu':>7} {'final loss':>11}")
for config, backend, n, agg, med, ratio, loss in rows:
    print(f"{config:10} {backend:8} {n:6d} {agg:10.0f} {med:10.0f} {ratio:6.2f}x {loss:11.4f}")
EOF
