#!/usr/bin/env bash
# Serving soak: `tandem serve` under a bounded loopback client mix for M minutes (not in CI).
#   bench/soak_serve.sh [--minutes M] [--clients N] [--model DIR]
# Without --model it trains a tiny character-level GPT-2 for 10 steps (as tests/python/test_serve.py
# does). The mix (bench/soak_serve.py): non-streaming completions, streaming chat, cancellations
# mid-stream, malformed bodies, oversized prompts and bodies, slow readers. Prints requests, errors
# by class, p50/p99 latency per interval, and the server's RSS at start, after one minute and at
# the end. TANDEM_BIN picks the binary (default build/tandem; a build-sanitize/tandem soaks under
# ASan + UBSan). Exit status 1 on a dead server, a 5xx for a valid request or a non-4xx for a bad one.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MINUTES=5 CLIENTS=8 MODEL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak_serve.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
TANDEM="${TANDEM_BIN:-$ROOT/build/tandem}"
WORK="$(mktemp -d)"
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"' EXIT
CONTEXT=256
if [[ -z "$MODEL" ]]; then
  head -c 200000 "$ROOT/data/tinyshakespeare.txt" >"$WORK/text.txt"
  "$TANDEM" prepare --input "$WORK/text.txt" --tokenizer char --out "$WORK/data" >/dev/null
  "$TANDEM" train --config baby-gpt --data "$WORK/data" --out "$WORK/run" --steps 10 --set n_layer=2 \
    --set n_embd=64 --set n_positions=$CONTEXT --set eval_interval=100 --set eval_steps=1 >/dev/null 2>&1
  MODEL="$WORK/run"
fi
"$TANDEM" serve --model "$MODEL" --port 0 --model-name soak --max-batch 8 >"$WORK/ready" 2>"$WORK/server.log" &
SERVER=$!
for _ in $(seq 600); do grep -q "http://" "$WORK/ready" 2>/dev/null && break; sleep 0.1; done
PORT="$(grep -o '127\.0\.0\.1:[0-9]*' "$WORK/ready" | head -1 | cut -d: -f2)"
[[ -n "$PORT" ]] || { echo "soak: the server did not start"; cat "$WORK/server.log"; exit 1; }
echo "soak: $TANDEM serve pid $SERVER on port $PORT ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
set +e
"$ROOT/.venv/bin/python" "$ROOT/bench/soak_serve.py" --port "$PORT" --pid "$SERVER" --model soak \
  --context "$CONTEXT" --minutes "$MINUTES" --clients "$CLIENTS"
rc=$?
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:|LeakSanitizer" "$WORK/server.log"; then
  echo "soak: sanitizer report in the server log:"; grep -m5 -E "ERROR|runtime error" "$WORK/server.log"; rc=1
fi
exit $rc
