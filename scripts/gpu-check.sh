#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU, in one go (about 5-8 minutes):
#   1. build build-gpu/ with the CUDA backend (tandem only)
#   2. tandem backends: the cuda line must list a usable device
#   3. tandem conform --backend cuda (f32): every case must PASS
#   4. tandem parity cpu,cuda: baby-gpt (char data) and ds-tiny (BPE data: MLA, MoE, MTP)
#   5. greedy decoding cpu vs cuda (attention_cached for GPT-2, attention_latent for DeepSeek)
#   6. a training benchmark on cuda: gpt2-124m, batch 16 x 1024: tokens/s and MFU (counted FLOPs
#      against the GPU's FP32 peak), plus a per-op profile of a few steps
# and writes a markdown report, REPORT.md, into $OUT (or gpu-check-report/), with every log beside it.
# Exit status: 0 when every check passed; 1 when one failed; 2 when there is no NVIDIA GPU or nvcc.
#
# Environment: OUT (report dir), JOBS (build parallelism, default nproc), BENCH_STEPS (default 25),
# BENCH_BATCH (default 16), BENCH_CONFIG (default gpt2-124m; any GPT-2 config), PARITY_STEPS
# (default 100), DS_PARITY_STEPS (default 30), DECODE_STEPS (training steps before decoding, default
# 30), TANDEM_BIN (use this binary instead of building build-gpu/).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="${OUT:-gpu-check-report}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
JOBS="${JOBS:-$(nproc)}"
BENCH_STEPS="${BENCH_STEPS:-25}"
BENCH_BATCH="${BENCH_BATCH:-16}"
PARITY_STEPS="${PARITY_STEPS:-100}"
BENCH_CONFIG="${BENCH_CONFIG:-gpt2-124m}"
DS_PARITY_STEPS="${DS_PARITY_STEPS:-30}"
DECODE_STEPS="${DECODE_STEPS:-30}"
WORK="$OUT/work"
BIN="${TANDEM_BIN:-$ROOT/build-gpu/tandem}"
REPORT="$OUT/REPORT.md"
START=$(date +%s)
FAILED=0

die_no_gpu() {
  echo "gpu-check: $1" >&2
  printf '# gpu-check: not run\n\n%s\n' "$1" > "$REPORT"
  exit 2
}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  die_no_gpu "no NVIDIA GPU on this machine (nvidia-smi is missing or lists no GPU); run this where one is."
fi
GPU_LINE="$(nvidia-smi -L | head -1)"
if ! command -v nvcc >/dev/null 2>&1 && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  die_no_gpu "nvcc not found (install the CUDA toolkit, or put /usr/local/cuda/bin on PATH)."
fi
command -v nvcc >/dev/null 2>&1 || export PATH="/usr/local/cuda/bin:$PATH"

rm -rf "$WORK"
mkdir -p "$WORK"
: > "$OUT/summary.txt"
elapsed() { echo $(( $(date +%s) - START )); }
# step NAME TIMEOUT_S CMD...: runs CMD with its output in $OUT/NAME.log; records PASS/FAIL/TIMEOUT.
step() {
  local name="$1" limit="$2"
  shift 2
  local t0=$(date +%s) rc
  echo "[gpu-check] $name ($(elapsed) s elapsed)"
  timeout -k 20 "$limit" bash -c '"$@"' _ "$@" > "$OUT/$name.log" 2>&1  # bash -c: the exported functions work too
  rc=$?
  local dt=$(( $(date +%s) - t0 )) status=PASS
  if (( rc == 124 )); then status="TIMEOUT (${limit} s)"; FAILED=1
  elif (( rc != 0 )); then status="FAIL (exit $rc)"; FAILED=1; fi
  printf '| %s | %s | %d s |\n' "$name" "$status" "$dt" >> "$OUT/summary.txt"
  echo "[gpu-check] $name: $status in ${dt} s"
  return $rc
}

# 1. build
export BIN WORK JOBS
build() {
  local launch=()
  if command -v ccache >/dev/null 2>&1; then
    launch=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  cmake -B build-gpu -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON -DTANDEM_TESTS=OFF -DTANDEM_BENCH=OFF "${launch[@]}" &&
    grep -q "TANDEM_HAVE_CUDA" build-gpu/CMakeFiles/tandem_lib.dir/flags.make &&
    cmake --build build-gpu -j"$JOBS" --target tandem
}
export -f build
BUILT=1
if [[ -n "${TANDEM_BIN:-}" ]]; then
  echo "[gpu-check] using $BIN (TANDEM_BIN): no build"
elif ! step build 420 build; then
  echo "gpu-check: the build failed; see $OUT/build.log" >&2
  BUILT=0
fi

if [[ $BUILT == 1 && -x "$BIN" ]]; then
  # 2. devices
  step backends 60 bash -c "'$BIN' backends && '$BIN' backends | grep -A1 '^cuda$' | grep -q 'device 0: '"

  # 3. conformance, every op in isolation (TANDEM_CUDA_SYNC=1: a kernel fault is pinned to its node)
  step conform 240 env TANDEM_CUDA_SYNC=1 "$BIN" conform --backend cuda --dtype f32 --json "$OUT/conform.json"

  # 4. parity against the CPU: same init, same batches
  step prepare_char 60 "$BIN" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$WORK/shk"
  step prepare_bpe 180 "$BIN" prepare --input data/tinyshakespeare.txt --tokenizer bpe:1024 --out "$WORK/shk-bpe"
  # Two backends in one process: idle OpenMP workers must not spin on the cores the GPU's host thread needs.
  export OMP_WAIT_POLICY=passive
  step parity_baby_gpt 240 "$BIN" parity --config baby-gpt --data "$WORK/shk" --backends cpu,cuda --steps "$PARITY_STEPS"
  step parity_ds_tiny 240 "$BIN" parity --config ds-tiny --data "$WORK/shk-bpe" --backends cpu,cuda \
    --steps "$DS_PARITY_STEPS" --set batch_size=4 --set block_size=64

  # 5. decoding: train briefly on cuda, then greedy samples on both backends must agree
  decode_check() {  # config data tag
    local cfg="$1" data="$2" tag="$3"
    "$BIN" train --config "$cfg" --data "$data" --out "$WORK/run-$tag" --steps "$DECODE_STEPS" --backend cuda \
      --set batch_size=4 || return 1
    "$BIN" generate --model "$WORK/run-$tag" --prompt "ROMEO:" --max-tokens 64 --temperature 0 --backend cpu > "$WORK/gen-$tag-cpu.txt" || return 1
    "$BIN" generate --model "$WORK/run-$tag" --prompt "ROMEO:" --max-tokens 64 --temperature 0 --backend cuda > "$WORK/gen-$tag-cuda.txt" || return 1
    echo "--- cpu:"; cat "$WORK/gen-$tag-cpu.txt"; echo; echo "--- cuda:"; cat "$WORK/gen-$tag-cuda.txt"; echo
    cmp -s "$WORK/gen-$tag-cpu.txt" "$WORK/gen-$tag-cuda.txt" || { echo "greedy outputs differ"; return 1; }
  }
  export -f decode_check
  step decode_gpt2 180 decode_check baby-gpt "$WORK/shk" gpt2
  step decode_deepseek 180 decode_check ds-tiny "$WORK/shk-bpe" ds

  # 5b. NCCL smoke run: one rank under mpirun, gradients through NCCL on the GPU (src/dist).
  if command -v mpirun >/dev/null; then
    step nccl_smoke 180 mpirun --allow-run-as-root -np 1 "$BIN" train --config baby-gpt --data "$WORK/shk" \
      --out "$WORK/nccl" --steps 5 --backend cuda --comm nccl
  fi

  # 6. benchmark: gpt2-124m (char tokens are all < 50257), batch BENCH_BATCH x block_size (1024)
  step bench 300 "$BIN" train --config "$BENCH_CONFIG" --data "$WORK/shk" --out "$WORK/bench" --steps "$BENCH_STEPS" \
    --backend cuda --set batch_size="$BENCH_BATCH" --set eval_interval=100000 --set warmup_steps=10
  step profile 180 env TANDEM_PROFILE=1 "$BIN" train --config "$BENCH_CONFIG" --data "$WORK/shk" --out "$WORK/profile" \
    --steps 4 --backend cuda --set batch_size="$BENCH_BATCH" --set eval_interval=100000
fi

# The report.
SMS="$("$BIN" backends 2>/dev/null | grep -A1 '^cuda$' | sed -n 's/.*sm_\([0-9]*\), \([0-9]*\) SMs.*/\1 \2/p' | head -1)"
CLOCK="$(nvidia-smi --query-gpu=clocks.max.sm --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' ')"
python3 - "$OUT" "$WORK" "$BENCH_BATCH" "${SMS:-0 0}" "${CLOCK:-0}" "$GPU_LINE" > "$OUT/bench.md" <<'PY'
import json, os, re, sys
out, work, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
sm, sms = (int(x) for x in sys.argv[4].split())
clock_mhz, gpu = float(sys.argv[5] or 0), sys.argv[6]
print("## Training benchmark (cuda)\n")
path = os.path.join(work, "bench", "metrics.jsonl")
rows = []
if os.path.exists(path):
    for line in open(path):
        r = json.loads(line)
        if "tokens_per_s" in r and "event" not in r:
            rows.append(r)
if len(rows) < 3:
    print("no benchmark metrics (see bench.log)")
    sys.exit(0)
timed = rows[5:] if len(rows) > 8 else rows[1:]
tok = [r["tokens_per_s"] for r in timed]
hmean = len(tok) / sum(1.0 / t for t in tok)
# The model's shape from the run's last checkpoint (GPT-2 fields), the sequence length from its recipe.
try:
    ckpts = sorted((d for d in os.listdir(os.path.join(work, "bench", "checkpoints")) if d.startswith("step_")),
                   key=lambda d: int(d[5:]))
    ck = os.path.join(work, "bench", "checkpoints", ckpts[-1])
    cfg = json.load(open(os.path.join(ck, "config.json")))
    T = int(json.load(open(os.path.join(ck, "trainer_state.json")))["train_config"]["block_size"])
    L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
except (OSError, KeyError, IndexError, ValueError):
    L, C, V, T = 12, 768, 50257, 1024  # no checkpoint to read: the gpt2-124m preset
    print("- (no checkpoint of the benchmark run: FLOPs counted for the gpt2-124m preset)")
flops_tok = 6 * (12 * L * C * C + V * C) + 12 * L * C * T  # bench/README.md's count
# FP32 lanes per SM: 64 on sm_80 (A100), 128 on sm_86/89/90; peak = SMs x lanes x 2 x max clock.
lanes = 64 if sm == 80 else 128
peak = sms * lanes * 2 * clock_mhz * 1e6
print(f"- GPU: {gpu}; sm_{sm}, {sms} SMs, max SM clock {clock_mhz:.0f} MHz")
print(f"- model: {L} layers, {C} wide, vocab {V}")
print(f"- batch {batch} x {T} tokens, {len(rows)} steps, the first {len(rows) - len(timed)} left out of the timing")
print(f"- tokens/s: **{hmean:,.0f}** (harmonic mean over {len(timed)} steps; median {sorted(tok)[len(tok)//2]:,.0f}); "
      f"step {batch * T / hmean * 1000:.0f} ms")
print(f"- counted FLOPs/token: {flops_tok / 1e6:.1f} M (6 x (12 L C^2 + V C) + 12 L C T); achieved {hmean * flops_tok / 1e12:.2f} TFLOP/s")
if peak > 0:
    print(f"- MFU: **{100 * hmean * flops_tok / peak:.1f}%** of the FP32 (non-tensor-core) peak {peak / 1e12:.1f} TFLOP/s "
          "(the backend computes in f32: cuBLAS's default math mode, no TF32)")
losses = [r["loss"] for r in rows]
print(f"- loss: {losses[0]:.3f} -> {losses[-1]:.3f}")
prof = os.path.join(out, "profile.log")
if os.path.exists(prof):
    lines = [l.rstrip() for l in open(prof) if re.match(r"\s+[0-9.]+ s ", l) or l.startswith("op profile")]
    if lines:
        print("\nPer-op profile (TANDEM_PROFILE=1, 4 steps, synchronised after every op; top 15):\n\n```")
        print("\n".join(lines[:16]))
        print("```")
PY

CONFORM_LINE="$(grep -E '^ *f32 ' "$OUT/conform.log" 2>/dev/null | tail -1)"
{
  echo "# gpu-check report"
  echo
  echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(hostname), $GPU_LINE"
  echo "- driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1), $(nvcc --version | tail -2 | head -1)"
  echo "- total $(elapsed) s; verdict: $([[ $FAILED == 0 ]] && echo '**PASS**' || echo '**FAIL**')"
  echo
  echo "| step | status | time |"
  echo "|---|---|---|"
  cat "$OUT/summary.txt"
  echo
  echo "## Devices"
  echo
  echo '```'
  "$BIN" backends 2>&1 | sed -n '/^cuda$/,/^faulty/p' | grep -v '^faulty'
  echo '```'
  echo
  echo "## Conformance"
  echo
  echo '```'
  grep -E '^ +(f32|bf16) +[0-9]+ PASS|failing ops|error' "$OUT/conform.log" 2>/dev/null
  [[ -n "$CONFORM_LINE" ]] || echo "(no summary; see conform.log)"
  echo '```'
  echo
  echo "Failing rows (first 20):"
  echo
  echo '```'
  grep -E ' FAIL[: ]' "$OUT/conform.log" 2>/dev/null | head -20
  echo '```'
  echo
  for p in parity_baby_gpt parity_ds_tiny; do
    echo "## ${p/parity_/parity cpu,cuda: }"
    echo
    echo '```'
    tail -6 "$OUT/$p.log" 2>/dev/null
    echo '```'
    echo
  done
  for d in decode_gpt2 decode_deepseek; do
    echo "## ${d/decode_/greedy decoding cpu vs cuda: }"
    echo
    echo '```'
    tail -8 "$OUT/$d.log" 2>/dev/null
    echo '```'
    echo
  done
  cat "$OUT/bench.md"
  echo
  echo "Logs: $OUT/*.log"
} > "$REPORT"
echo "[gpu-check] report: $REPORT ($(elapsed) s)"
exit $FAILED
