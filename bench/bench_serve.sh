#!/usr/bin/env bash
# Serving throughput of `tandem serve` on a gpt2-124m-shaped model (random weights: speed does not
# depend on them). See bench/README.md.
#
#   bench/bench_serve.sh [--tokens N] [--prompt-len P] [--streams S] [--out DIR]
#
#   --tokens N      tokens per decode request (default 128)
#   --prompt-len P  prompt tokens for the prefill measurement (default 512)
#   --streams S     concurrent streams for the batched measurement (default 8)
#   --out DIR       where the model and logs go (default runs/bench-serve-<timestamp>)
# Environment: TANDEM_BIN (default build/tandem), PYTHON (default .venv/bin/python: transformers
#   writes the random model, the client is the standard library).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TOKENS=128
PROMPT_LEN=512
STREAMS=8
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tokens) TOKENS="$2"; shift 2 ;;
    --prompt-len) PROMPT_LEN="$2"; shift 2 ;;
    --streams) STREAMS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench_serve.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
OUT="${OUT:-runs/bench-serve-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
[[ -x "$TANDEM" ]] || { echo "bench_serve.sh: $TANDEM not found: build it first" >&2; exit 1; }

# 1. The model: GPT-2 124M's shape (vocab 50257, context 1024) with transformers' random init, and
#    the Shakespeare character tokenizer (its ids are all < 50257; the lm_head still computes all
#    50257 logits, so the work per token is GPT-2 124M's).
if [[ ! -f "$OUT/model/model.safetensors" ]]; then
  "$TANDEM" prepare --input data/tinyshakespeare.txt --tokenizer char --out "$OUT/data" >/dev/null
  "$PY" - "$OUT/model" <<'EOF'
import sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
GPT2LMHeadModel(GPT2Config()).save_pretrained(sys.argv[1], safe_serialization=True)
EOF
  cp "$OUT/data/tokenizer.json" "$OUT/model/tokenizer.json"
fi

# 2. Measure against a live server. Decode tokens/s of one stream = (tokens - 1) / (last token -
#    first token); aggregate tokens/s of S concurrent streams = all tokens / wall time; prefill
#    tokens/s = prompt tokens / time to the first token of a 1-token completion (best of 3).
"$PY" - "$TANDEM" "$OUT" "$TOKENS" "$PROMPT_LEN" "$STREAMS" <<'EOF'
import http.client, json, re, signal, subprocess, sys, threading, time
tandem, out, tokens, prompt_len, streams = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])

def start(max_batch):
    log = open(f"{out}/serve-b{max_batch}.log", "w")
    p = subprocess.Popen([tandem, "serve", "--model", f"{out}/model", "--port", "0", "--model-name", "m",
                          "--max-batch", str(max_batch)], stdout=subprocess.PIPE, stderr=log, text=True)
    port = int(re.search(r":(\d+)/", p.stdout.readline()).group(1))
    return p, port

def stream(port, prompt, n, result, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps({"model": "m", "prompt": prompt, "max_tokens": n,
              "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    first = last = None
    count = 0
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        j = json.loads(line[6:])
        if j.get("usage"):
            count = j["usage"]["completion_tokens"]
        elif j["choices"][0]["text"]:
            last = time.perf_counter()
            first = first or last
    result[i] = (t0, first, last, count)

def run(port, n_streams, n):
    res = [None] * n_streams
    ts = [threading.Thread(target=stream, args=(port, "ROMEO:" + " " * (i % 4), n, res, i)) for i in range(n_streams)]
    t0 = time.perf_counter()
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.perf_counter() - t0
    total = sum(r[3] for r in res)
    single = (res[0][3] - 1) / (res[0][2] - res[0][1])
    return total / wall, single

def prefill(port):
    prompt = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)[:prompt_len]
    best = 1e9
    for _ in range(3):
        res = [None]
        stream(port, prompt, 1, res, 0)
        best = min(best, res[0][1] - res[0][0])
    return prompt_len / best

rows = []
p, port = start(1)
try:
    run(port, 1, 8)  # warm-up: builds the programs
    _, dec1 = run(port, 1, tokens)
    pre = prefill(port)
finally:
    p.send_signal(signal.SIGTERM); p.wait()
p, port = start(streams)
try:
    run(port, streams, 8)
    agg1, _ = run(port, 1, tokens)
    aggS, _ = run(port, streams, tokens)
finally:
    p.send_signal(signal.SIGTERM); p.wait()
print(f"tandem serve, gpt2-124m shape (random f32 weights), {tokens} tokens per request, greedy")
print(f"  single stream (--max-batch 1): decode {dec1:7.1f} tokens/s, prefill {pre:7.1f} tokens/s ({prompt_len}-token prompt)")
print(f"  --max-batch {streams}: 1 stream {agg1:7.1f} tokens/s, {streams} concurrent streams {aggS:7.1f} tokens/s aggregate"
      f" -> {aggS / agg1:.2f}x (target >= 4x)")
EOF
