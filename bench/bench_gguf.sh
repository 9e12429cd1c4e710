#!/usr/bin/env bash
# GGUF export and import of a GPT-2 124M-shaped model (random weights, a small BPE tokenizer padded
# to the 50257-token embedding): wall time and peak resident memory of each `tandem` command, and
# the peak against the model's f32 size (the target: below 2x, as both sides stream tensor by
# tensor). See bench/README.md.
#
#   bench/bench_gguf.sh [WORKDIR]       (default: a fresh ${TMPDIR:-/tmp}/tandem-bench-gguf.XXXX)
#
# Needs build/tandem (or $TANDEM) and .venv (transformers writes the model directory).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TANDEM="${TANDEM:-$ROOT/build/tandem}"
W="${1:-$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench-gguf.XXXX")}"
mkdir -p "$W"
say() { printf '[bench_gguf] %s\n' "$*"; }

if [[ ! -f "$W/hf/model.safetensors" ]]; then
  say "writing a random GPT-2 124M (transformers) to $W/hf"
  "$ROOT/.venv/bin/python" - "$W/hf" <<'PY'
import sys, torch, transformers
torch.manual_seed(0)
transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(sys.argv[1], safe_serialization=True)
PY
  head -c 200000 "$ROOT/data/tinyshakespeare.txt" > "$W/text.txt"
  "$TANDEM" prepare --input "$W/text.txt" --tokenizer bpe:1000 --out "$W/data" > /dev/null
  cp "$W/data/tokenizer.json" "$W/hf/"
  rm -rf "$W/model" && "$TANDEM" import --from "$W/hf" --out "$W/model" > /dev/null
fi
model_mb=$(stat -c %s "$W/model/model.safetensors" | awk '{ printf "%.0f", $1 / 1e6 }')
say "model: $W/model ($model_mb MB of f32 safetensors); CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"

# measure NAME cmd... : runs cmd under /usr/bin/time, prints seconds, peak RSS and RSS / model size.
measure() {
  local name="$1"; shift
  /usr/bin/time -f "%e %M" -o "$W/time.txt" "$@" > "$W/$name.log" 2>&1 || { cat "$W/$name.log" >&2; exit 1; }
  read -r secs kb < "$W/time.txt"
  awk -v n="$name" -v s="$secs" -v kb="$kb" -v m="$model_mb" \
    'BEGIN { printf "[bench_gguf] %-22s %6.2f s   peak RSS %6.0f MB = %.2fx the f32 model (%d MB)\n", n, s, kb / 1000, kb / 1000 / m, m }'
}
for dt in f32 q8_0; do
  rm -rf "$W/$dt.gguf" "$W/imported-$dt"
  measure "export gguf $dt" "$TANDEM" export --model "$W/model" --format gguf --dtype "$dt" --out "$W/$dt.gguf"
  measure "import gguf $dt" "$TANDEM" import --from "$W/$dt.gguf" --out "$W/imported-$dt"
done
