#!/usr/bin/env bash
# DeepSeek-V3 training throughput: tandem vs transformers' DeepseekV3ForCausalLM (PyTorch CPU, fp32,
# reference/torch_deepseek.py), ds-tiny and ds-small, in one run, sequentially on the same data dir
# and machine; plus the latent cache's bytes/token against full per-head K/V. See bench/README.md.
#
#   bench/bench_deepseek.sh [--tiny-steps N] [--tiny-skip K] [--small-steps M] [--small-skip J]
#                           [--skip-tiny] [--skip-small] [--out DIR]
#
#   --tiny-steps N   ds-tiny steps per side (default 20); the first --tiny-skip K (default 3) are
#                    left out of the timing as warmup
#   --small-steps M  ds-small steps per side (default 3), the first --small-skip J (default 1) left out
#   --out DIR        where data, runs and logs go (default runs/bench-ds-<timestamp>)
# Environment: TANDEM_BIN (default build/tandem), PYTHON (default .venv/bin/python),
#   THREADS (threads of both sides: OMP_NUM_THREADS for tandem, torch.set_num_threads; default 2),
#   TOKENIZER (default bpe:1024).
# Both sides run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
TOKENIZER="${TOKENIZER:-bpe:1024}"
TINY_STEPS=20
TINY_SKIP=3
SMALL_STEPS=3
SMALL_SKIP=1
DO_TINY=1
DO_SMALL=1
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny-steps) TINY_STEPS="$2"; shift 2;;
    --tiny-skip) TINY_SKIP="$2"; shift 2;;
    --small-steps) SMALL_STEPS="$2"; shift 2;;
    --small-skip) SMALL_SKIP="$2"; shift 2;;
    --skip-tiny) DO_TINY=0; shift;;
    --skip-small) DO_SMALL=0; shift;;
    --out) OUT="$2"; shift 2;;
    -h|--help) sed -n '2,16p' "$0"; exit 0;;
    *) echo "bench_deepseek.sh: unknown argument $1" >&2; exit 2;;
  esac
done
OUT="${OUT:-$ROOT/runs/bench-ds-$(date +%Y%m%d-%H%M%S)}"
[[ -x "$TANDEM" ]] || { echo "bench_deepseek.sh: tandem binary not found at $TANDEM (build it or set TANDEM_BIN)" >&2; exit 1; }
[[ -x "$PY" ]] || { echo "bench_deepseek.sh: $PY missing: run scripts/python-env.sh (or set PYTHON)" >&2; exit 1; }
(( TINY_SKIP < TINY_STEPS )) || { echo "bench_deepseek.sh: --tiny-skip must be < --tiny-steps" >&2; exit 2; }
(( SMALL_SKIP < SMALL_STEPS )) || { echo "bench_deepseek.sh: --small-skip must be < --small-steps" >&2; exit 2; }

mkdir -p "$OUT"
source bench/common.sh

say "output: $OUT"
say "tandem: $TANDEM"
say "torch:  $("$PY" -c 'import torch, transformers; print(torch.__version__, "/ transformers", transformers.__version__)')"
say "threads: $THREADS per side"
say "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
measure_sgemm_ceiling "$OUT"
say "preparing $TOKENIZER data from data/tinyshakespeare.txt"
timed "$OUT/prepare.log" "${CLEAN[@]}" "$TANDEM" prepare --input data/tinyshakespeare.txt \
  --tokenizer "$TOKENIZER" --out "$OUT/data"

# The same computation on both sides: transformers trains no multi-token-prediction module and has
# no routing-bias update, so tandem runs without them (num_nextn_predict_layers=0,
# router_bias_update_rate=0); evaluation is off (it is not timed anyway). Everything else is the
# preset: shapes, batch, schedule, AdamW, clipping.
SAME=(--set num_nextn_predict_layers=0 --set router_bias_update_rate=0 --set eval_interval=100000 --set eval_steps=1)
run_pair() {  # run_pair PRESET TAG STEPS SKIP
  local preset="$1" tag="$2" steps="$3" skip="$4"
  say "$preset, $steps steps: tandem"
  timed "$OUT/tandem-$tag.log" "${CLEAN[@]}" OMP_NUM_THREADS="$THREADS" "$TANDEM" train --config "$preset" --data "$OUT/data" \
    --out "$OUT/tandem-$tag" --steps "$steps" --seed 1337 "${SAME[@]}"
  # transformers starts from tandem's last checkpoint (config.json, model.safetensors and the
  # recipe in trainer_state.json): the same model, shapes and batch.
  say "$preset, $steps steps: transformers"
  timed "$OUT/torch-$tag.log" "${CLEAN[@]}" "$PY" reference/torch_deepseek.py train \
    --checkpoint "$OUT/tandem-$tag/checkpoints/step_$steps" --data "$OUT/data" --steps "$steps" \
    --seed 1337 --threads "$THREADS" --skip-steps "$skip" --metrics "$OUT/torch-$tag.jsonl" --quiet
}
[[ $DO_TINY -eq 1 ]] && run_pair ds-tiny tiny "$TINY_STEPS" "$TINY_SKIP"
[[ $DO_SMALL -eq 1 ]] && run_pair ds-small small "$SMALL_STEPS" "$SMALL_SKIP"
say "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$OUT" "$DO_TINY" "$TINY_STEPS" "$TINY_SKIP" "$DO_SMALL" "$SMALL_STEPS" "$SMALL_SKIP" <<'PYEOF'
import json, os, sys

out = sys.argv[1]
peak = float(os.environ["SGEMM_PEAK_GFLOPS"])
do_tiny, tiny_steps, tiny_skip, do_small, small_steps, small_skip = map(int, sys.argv[2:])


def records(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def throughput(recs, skip):
    """tokens/s over the timed steps = harmonic mean of per-step tokens/s (constant step size),
    and the median step's tokens/s."""
    steps = [r for r in recs if "tokens_per_s" in r and r.get("step", 0) > skip]
    if not steps:
        return None, None
    tps = len(steps) / sum(1.0 / r["tokens_per_s"] for r in steps)
    med = sorted(r["tokens_per_s"] for r in steps)[len(steps) // 2]
    return tps, med


def fmt(x, spec=".1f"):
    return "n/a" if x is None else format(x, spec)


def cache_bytes(c):
    """Per token, all layers, f32: the latent cache (DeepseekV3::kv_cache_bytes_per_token) holds the
    normalised latent and the rotated rope key; full K/V would hold every head's key and value."""
    L, nh = c["num_hidden_layers"], c["num_attention_heads"]
    latent = L * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) * 4
    full = L * nh * (c["qk_nope_head_dim"] + c["qk_rope_head_dim"] + c["v_head_dim"]) * 4
    return latent, full


def flops_per_token(c, T):
    """Training FLOPs per token (forward + backward = 6 x the matmul weights a token passes through,
    plus attention's score and value products, 6 T n_heads (d_qk + d_v) per layer, without the
    causal halving), as bench_train.sh counts GPT-2. Per token: MLA's projections, the dense MLPs of
    the first first_k_dense_replace layers, then the shared and top-k routed experts and the
    router, and the lm_head. Norms, RoPE, routing and the optimizer are not counted."""
    H, L, nh, V = c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"], c["vocab_size"]
    dqk, dv = c["qk_nope_head_dim"] + c["qk_rope_head_dim"], c["v_head_dim"]
    q = H * nh * dqk if not c.get("q_lora_rank") else H * c["q_lora_rank"] + c["q_lora_rank"] * nh * dqk
    attn = q + H * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) + c["kv_lora_rank"] * nh * (c["qk_nope_head_dim"] + dv) \
        + nh * dv * H
    dense = 3 * H * c["intermediate_size"]
    moe = 3 * H * c["moe_intermediate_size"] * (c["n_shared_experts"] + c["num_experts_per_tok"]) + H * c["n_routed_experts"]
    k = c["first_k_dense_replace"]
    weights = L * attn + k * dense + (L - k) * moe + H * V
    return 6 * weights + L * 6 * T * nh * (dqk + dv)


def section(preset, tag, skip):
    ck = os.path.join(out, f"tandem-{tag}", "checkpoints")
    ck = os.path.join(ck, max((d for d in os.listdir(ck) if d.startswith("step_")), key=lambda d: int(d[5:])))
    cfg = json.load(open(os.path.join(ck, "config.json")))
    recipe = json.load(open(os.path.join(ck, "trainer_state.json")))["train_config"]
    t_tps, t_med = throughput(records(os.path.join(out, f"tandem-{tag}", "metrics.jsonl")), skip)
    p_tps, p_med = throughput(records(os.path.join(out, f"torch-{tag}.jsonl")), skip)
    tokens = recipe["batch_size"] * recipe["block_size"] * recipe.get("grad_accum", 1)
    print(f"\n== {preset}: hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers "
          f"({cfg['num_hidden_layers'] - cfg['first_k_dense_replace']} MoE, {cfg['n_routed_experts']} routed experts, "
          f"top-{cfg['num_experts_per_tok']}), vocab {cfg['vocab_size']}, batch {recipe['batch_size']} x "
          f"block {recipe['block_size']}, steps timed after the first {skip} ==")
    print(f"{'side':14} {'tokens/s':>10} {'median':>10} {'s/step':>9} {'wall s':>8}")
    for side, tps, med, log in (("tandem", t_tps, t_med, f"tandem-{tag}.log"),
                                ("transformers", p_tps, p_med, f"torch-{tag}.log")):
        wall = float(open(os.path.join(out, log + ".wall")).read())
        print(f"{side:14} {fmt(tps):>10} {fmt(med):>10} {fmt(tokens / tps if tps else None, '.3f'):>9} {wall:>8.1f}")
    if t_tps and p_tps:
        print(f"ratio tandem/transformers (tokens/s): {t_tps / p_tps:.2f}x aggregate, {t_med / p_med:.2f}x median step "
              f"(target >= 3x)")
    fpt = flops_per_token(cfg, recipe["block_size"])
    floor_s = tokens * fpt / (peak * 1e9)
    if p_med:
        torch_s = tokens / p_med
        print(f"roofline: {tokens * fpt / 1e9:.1f} GFLOP/step (active weights and attention, forward + backward) at the "
              f"{peak:.0f} GFLOP/s sgemm ceiling = {floor_s:.3f} s/step at best; transformers' median step {torch_s:.3f} s, "
              f"so at most {torch_s / floor_s:.2f}x transformers on this machine; tandem runs at "
              f"{tokens * fpt / 1e9 / (tokens / t_med):.0f} GFLOP/s" if t_med else "")
    latent, full = cache_bytes(cfg)
    print(f"decoding cache: {latent} bytes/token latent (num_hidden_layers x (kv_lora_rank + qk_rope_head_dim) "
          f"x 4) vs {full} bytes/token full per-head K/V ({full / latent:.1f}x)")


if do_tiny:
    section("ds-tiny", "tiny", tiny_skip)
if do_small:
    section("ds-small", "small", small_skip)
PYEOF
say "logs and metrics in $OUT"
