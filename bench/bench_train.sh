#!/usr/bin/env bash
# Training throughput: tandem vs the PyTorch reference (reference/torch_gpt.py), in one run,
# sequentially on the same data dir and machine. See bench/README.md.
#
#   bench/bench_train.sh [--steps N] [--big-steps M] [--big-skip K] [--skip-baby] [--skip-big]
#                        [--rounds R] [--round-steps S] [--out DIR]
#
#   --steps N      baby-gpt steps (default 2000 = the full recipe)
#   --big-steps M  gpt2-124m steps at batch 4 x block 64 (default 6); the first --big-skip K
#                  (default 2) are excluded from the timing as warmup
#   --rounds R     after the full runs, R more alternating short rounds per model (tandem, torch,
#                  tandem, ...; default 3, 0 = none): the ratio is taken per round and its median
#                  reported, so a slow spell of the machine hits one round, not one side
#   --round-steps S  baby-gpt steps per short round (default 300; gpt2-124m rounds use --big-steps)
#   --out DIR      where data, runs and logs go (default runs/bench-<timestamp>)
#   --precision P  f32 (default) or bf16 on both sides: tandem --set precision=bf16, torch under
#                  torch.autocast("cpu", dtype=torch.bfloat16) (fused AdamW on the f32 master)
# Environment: TANDEM_BIN (default build/tandem), PYTHON (default .venv/bin/python),
#   THREADS (torch threads, default 2), SGEMM_PEAK_GFLOPS (the sgemm ceiling; default: measured at
#   the start of the run with build/tandem_bench_gemm on a 2048^3 GEMM, the faster of OpenBLAS and
#   tandem).
# Both sides run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
STEPS=2000
BIG_STEPS=6
BIG_SKIP=2
BABY_SKIP=10
DO_BABY=1
DO_BIG=1
ROUNDS=3
ROUND_STEPS=300
OUT=""
PRECISION=f32
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS="$2"; shift 2;;
    --big-steps) BIG_STEPS="$2"; shift 2;;
    --big-skip) BIG_SKIP="$2"; shift 2;;
    --skip-baby) DO_BABY=0; shift;;
    --skip-big) DO_BIG=0; shift;;
    --rounds) ROUNDS="$2"; shift 2;;
    --round-steps) ROUND_STEPS="$2"; shift 2;;
    --out) OUT="$2"; shift 2;;
    --precision) PRECISION="$2"; shift 2;;
    -h|--help) sed -n '2,24p' "$0"; exit 0;;
    *) echo "bench_train.sh: unknown argument $1" >&2; exit 2;;
  esac
done
OUT="${OUT:-$ROOT/runs/bench-$(date +%Y%m%d-%H%M%S)}"
[[ -x "$TANDEM" ]] || { echo "bench_train.sh: tandem binary not found at $TANDEM (build it or set TANDEM_BIN)" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "bench_train.sh: $PY missing: run scripts/python-env.sh (or set PYTHON)" >&2; exit 1; }
(( BABY_SKIP < STEPS )) || BABY_SKIP=$(( STEPS / 10 ))
(( BIG_SKIP < BIG_STEPS )) || { echo "bench_train.sh: --big-skip must be < --big-steps" >&2; exit 2; }
(( ROUND_STEPS > BABY_SKIP )) || { echo "bench_train.sh: --round-steps must be > $BABY_SKIP" >&2; exit 2; }

[[ "$PRECISION" == f32 || "$PRECISION" == bf16 ]] || { echo "bench_train.sh: --precision f32|bf16" >&2; exit 2; }
P_SET=(--set "precision=$PRECISION")  # both sides, every run
mkdir -p "$OUT"
source bench/common.sh

say "output: $OUT (precision $PRECISION on both sides)"
measure_sgemm_ceiling "$OUT"
say "tandem: $TANDEM"
say "torch:  $("$PY" -c 'import torch; print(torch.__version__)') ($THREADS threads)"
say "preparing char data from data/tinyshakespeare.txt"
timed "$OUT/prepare.log" "${CLEAN[@]}" "$TANDEM" prepare --input data/tinyshakespeare.txt \
  --tokenizer char --out "$OUT/data"

if [[ $DO_BABY -eq 1 ]]; then
  say "baby-gpt, $STEPS steps: tandem"
  timed "$OUT/tandem-baby.log" "${CLEAN[@]}" "$TANDEM" train --config baby-gpt --data "$OUT/data" \
    --out "$OUT/tandem-baby" --steps "$STEPS" --seed 1337 "${P_SET[@]}"
  say "baby-gpt, $STEPS steps: torch"
  timed "$OUT/torch-baby.log" "${CLEAN[@]}" "$PY" reference/torch_gpt.py train --config baby-gpt \
    --data "$OUT/data" --steps "$STEPS" --seed 1337 --threads "$THREADS" \
    --skip-steps "$BABY_SKIP" --metrics "$OUT/torch-baby.jsonl" --quiet "${P_SET[@]}"
  for ((r = 1; r <= ROUNDS; r++)); do
    say "baby-gpt round $r/$ROUNDS, $ROUND_STEPS steps, no evaluation: tandem, then torch"
    timed "$OUT/tandem-baby-r$r.log" "${CLEAN[@]}" "$TANDEM" train --config baby-gpt --data "$OUT/data" \
      --out "$OUT/tandem-baby-r$r" --steps "$ROUND_STEPS" --seed 1337 --set eval_interval=1000000 "${P_SET[@]}"
    timed "$OUT/torch-baby-r$r.log" "${CLEAN[@]}" "$PY" reference/torch_gpt.py train --config baby-gpt \
      --data "$OUT/data" --steps "$ROUND_STEPS" --seed 1337 --threads "$THREADS" \
      --skip-steps "$BABY_SKIP" --metrics "$OUT/torch-baby-r$r.jsonl" --quiet --set eval_interval=1000000 "${P_SET[@]}"
  done
fi

if [[ $DO_BIG -eq 1 ]]; then
  BIG_SET=(--set vocab_size=50257 --set batch_size=4 --set block_size=64
           --set eval_interval=100000 --set eval_steps=1 "${P_SET[@]}")
  say "gpt2-124m (vocab 50257), batch 4 x 64, $BIG_STEPS steps: tandem"
  timed "$OUT/tandem-big.log" "${CLEAN[@]}" "$TANDEM" train --config gpt2-124m --data "$OUT/data" \
    --out "$OUT/tandem-big" --steps "$BIG_STEPS" --seed 1337 "${BIG_SET[@]}"
  say "gpt2-124m (vocab 50257), batch 4 x 64, $BIG_STEPS steps: torch"
  timed "$OUT/torch-big.log" "${CLEAN[@]}" "$PY" reference/torch_gpt.py train --config gpt2-124m \
    --data "$OUT/data" --steps "$BIG_STEPS" --seed 1337 --threads "$THREADS" \
    --skip-steps "$BIG_SKIP" --metrics "$OUT/torch-big.jsonl" --quiet "${BIG_SET[@]}"
  for ((r = 1; r <= ROUNDS; r++)); do
    say "gpt2-124m round $r/$ROUNDS, $BIG_STEPS steps: tandem, then torch"
    timed "$OUT/tandem-big-r$r.log" "${CLEAN[@]}" "$TANDEM" train --config gpt2-124m --data "$OUT/data" \
      --out "$OUT/tandem-big-r$r" --steps "$BIG_STEPS" --seed 1337 "${BIG_SET[@]}"
    timed "$OUT/torch-big-r$r.log" "${CLEAN[@]}" "$PY" reference/torch_gpt.py train --config gpt2-124m \
      --data "$OUT/data" --steps "$BIG_STEPS" --seed 1337 --threads "$THREADS" \
      --skip-steps "$BIG_SKIP" --metrics "$OUT/torch-big-r$r.jsonl" --quiet "${BIG_SET[@]}"
  done
fi

BENCH_PRECISION="$PRECISION" "$PY" - "$OUT" "$DO_BABY" "$BABY_SKIP" "$DO_BIG" "$BIG_SKIP" "$ROUNDS" <<'PYEOF'
import json, os, statistics, sys
sys.path.insert(0, "reference")
from torch_gpt import load_config

out, do_baby, baby_skip, do_big, big_skip, rounds = sys.argv[1], *map(int, sys.argv[2:])
# The roofline: the sgemm ceiling, or in bf16 the bf16 GEMM ceiling measured in the same run.
precision = os.environ.get("BENCH_PRECISION", "f32")
if precision == "bf16" and not os.environ.get("BF16_PEAK_GFLOPS"):
    raise SystemExit("bench_train.sh: no bf16 ceiling (unset SGEMM_PEAK_GFLOPS so the run measures both)")
peak = float(os.environ["BF16_PEAK_GFLOPS"] if precision == "bf16" else os.environ["SGEMM_PEAK_GFLOPS"])


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def throughput(recs, skip):
    """tokens/s over the timed steps = harmonic mean of per-step tokens/s (constant step size)."""
    steps = [r for r in recs if "tokens_per_s" in r and r.get("step", 0) > skip]
    if not steps:
        return None, None
    tps = len(steps) / sum(1.0 / r["tokens_per_s"] for r in steps)
    med = sorted(r["tokens_per_s"] for r in steps)[len(steps) // 2]
    return tps, med


def last_val(recs):
    vals = [r["val_loss"] for r in recs if r.get("val_loss") is not None]
    return vals[-1] if vals else None


def summary(log):
    for line in reversed(open(log).read().splitlines()):
        if line.startswith('{"summary"'):
            return json.loads(line)["summary"]
    raise SystemExit(f"no summary line in {log}")


def flops_per_token(cfg):
    """6 * (matmul params incl. the tied lm_head) + attention 12 * L * C * T (fwd+bwd,
    QK^T and AV, counted without the causal halving)."""
    L, C, V, T = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["block_size"]
    return 6 * (12 * L * C * C + V * C) + 12 * L * C * T


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def section(name, preset, sets, tag, skip):
    cfg = load_config(preset, sets)
    if "vocab_size" not in cfg:
        with open(os.path.join(out, "data", "tokenizer.json")) as f:
            tj = json.load(f)
        cfg["vocab_size"] = len(tj["model"]["vocab"]) + len(tj.get("added_tokens") or [])
    t_recs = records(os.path.join(out, f"tandem-{tag}", "metrics.jsonl"))
    p_recs = records(os.path.join(out, f"torch-{tag}.jsonl"))
    t_tps, t_med = throughput(t_recs, skip)
    p_tps, p_med = throughput(p_recs, skip)
    p_sum = summary(os.path.join(out, f"torch-{tag}.log"))
    tokens_per_step = cfg["batch_size"] * cfg["block_size"] * cfg.get("grad_accum", 1)
    fpt = flops_per_token(cfg)
    rows = []
    for side, tps, med, val, wall in (
            ("tandem", t_tps, t_med, last_val(t_recs), open(os.path.join(out, f"tandem-{tag}.log.wall")).read()),
            ("torch", p_tps, p_med, p_sum.get("val_loss"), open(os.path.join(out, f"torch-{tag}.log.wall")).read())):
        gflops = tps * fpt / 1e9 if tps else None
        rows.append((side, tps, tokens_per_step / tps if tps else None, gflops, val, float(wall), med))
    print(f"\n== {name}: batch {cfg['batch_size']} x block {cfg['block_size']}, vocab {cfg['vocab_size']}, "
          f"steps timed after the first {skip} ==")
    print(f"FLOPs/token = 6*(12*L*C^2 + V*C) + 12*L*C*T = {fpt / 1e6:.1f} MFLOP "
          f"({'bf16 GEMM' if precision == 'bf16' else 'sgemm'} ceiling: {peak:.0f} GFLOP/s; precision {precision})")
    print(f"{'side':8} {'tokens/s':>10} {'median':>10} {'s/step':>9} {'GFLOP/s':>8} {'%ceil':>7} "
          f"{'val loss':>9} {'wall s':>8}")
    for side, tps, sps, gf, val, wall, med in rows:
        print(f"{side:8} {fmt(tps):>10} {fmt(med):>10} {fmt(sps, '.3f'):>9} {fmt(gf):>8} "
              f"{fmt(gf and 100 * gf / peak):>7} {fmt(val, '.4f'):>9} {wall:>8.1f}")
    if rows[0][1] and rows[1][1]:
        print(f"ratio tandem/torch (tokens/s): {rows[0][1] / rows[1][1]:.2f}x aggregate, "
              f"{rows[0][6] / rows[1][6]:.2f}x median step")
    # The full runs above plus the short alternating rounds: one tandem/torch ratio of median steps
    # per pair of neighbouring runs; their median is the figure to quote on a noisy machine.
    pairs = [("full", rows[0][6], rows[1][6])]
    for r in range(1, rounds + 1):
        t_med = throughput(records(os.path.join(out, f"tandem-{tag}-r{r}", "metrics.jsonl")), skip)[1]
        p_med = throughput(records(os.path.join(out, f"torch-{tag}-r{r}.jsonl")), skip)[1]
        pairs.append((f"round {r}", t_med, p_med))
    if len(pairs) > 1:
        print("alternating rounds, median-step tokens/s:")
        for label, t_med, p_med in pairs:
            print(f"  {label:8} tandem {fmt(t_med):>9}  torch {fmt(p_med):>9}  ratio {fmt(t_med / p_med, '.2f')}x")
        ratios = sorted(t / p for _, t, p in pairs)
        print(f"median ratio over {len(ratios)} pairs: {statistics.median(ratios):.2f}x "
              f"(range {ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
    # Roofline: if every counted FLOP ran at the sgemm ceiling and nothing else took time (no
    # element-wise ops, no optimizer), a step would take this long; no implementation on this
    # machine can beat torch by more than torch's step time over it.
    floor_s = tokens_per_step * fpt / (peak * 1e9)
    torch_s = statistics.median(tokens_per_step / p for _, _, p in pairs)
    print(f"roofline: {tokens_per_step * fpt / 1e9:.1f} GFLOP/step at {peak:.0f} GFLOP/s = {floor_s:.3f} s/step at "
          f"best; torch's median step {torch_s:.3f} s, so at most {torch_s / floor_s:.2f}x torch on this machine")


if do_baby:
    section("baby-gpt", "baby-gpt", [], "baby", baby_skip)
if do_big:
    section("gpt2-124m", "gpt2-124m", ["vocab_size=50257", "batch_size=4", "block_size=64"],
            "big", big_skip)
PYEOF
say "logs and metrics in $OUT"
