#!/usr/bin/env bash
# README command one: set up, build, prepare the embedded Shakespeare corpus (byte-level BPE),
# train the default model (ds-tiny: DeepSeek-V3 in miniature) on the CPU and print a sample.
# Everything lands in runs/demo/ (data/ and run/). Extra arguments go to `tandem train`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh

OUT=runs/demo
rm -rf "$OUT"
mkdir -p "$OUT"
./build/tandem prepare --input data/tinyshakespeare.txt --tokenizer bpe:1024 --out "$OUT/data"
./build/tandem train --config ds-tiny --data "$OUT/data" --out "$OUT/run" "$@"
./build/tandem eval --model "$OUT/run" --data "$OUT/data"
echo
echo "=== sample (tandem generate --model $OUT/run --prompt 'ROMEO:' --max-tokens 150 --temperature 0.8) ==="
./build/tandem generate --model "$OUT/run" --prompt "ROMEO:" --max-tokens 150 --temperature 0.8 --seed 7
