#!/usr/bin/env python3
"""The measurements of bench/bench_decode.sh (see bench/README.md); run through that script, which
makes the model, the GGUFs and the environment.

    decode_bench.py TANDEM OUT TOKENS ROUNDS WEIGHTS READ_GBS

OUT holds export/ (the f32 model, tandem's layout, with its tokenizer) and gpt2-<w>.gguf for each
format w in WEIGHTS (comma-separated). READ_GBS is the read rate bench_gemv.sh measured in this run.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
tandem, out = sys.argv[1], Path(sys.argv[2])
tokens, rounds = int(sys.argv[3]), int(sys.argv[4])
formats = sys.argv[5].split(",")
read_gbs = float(sys.argv[6])
model = out / "export"
tok = Tokenizer.from_file(str(model / "tokenizer.json"))
THREADS = os.environ.get("OMP_NUM_THREADS", "2")
PROMPT = "ROMEO:"

# Bytes one decode step reads: every matrix once (the 12 blocks' attention and MLP matrices and the
# tied lm_head); 1-D parameters and one position-embedding row are below 0.1% and left out.
cfg = json.loads((model / "config.json").read_text())
L, C, V = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
params = L * (C * 3 * C + C * C + C * 4 * C + 4 * C * C) + V * C
BYTES_PER_WEIGHT = {"f32": 4.0, "bf16": 2.0, "q8_0": 34 / 32}  # q8_0: 32 int8 + one fp16 scale per block


def ours(w: str) -> tuple[float, str]:
    r = subprocess.run([tandem, "generate", "--model", str(model), "--weights", w, "--prompt", PROMPT,
                        "--max-tokens", str(tokens), "--temperature", "0", "--stats"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"tandem generate --weights {w} failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stderr.strip().splitlines()[-1])["decode_tokens_per_s"], r.stdout


def theirs(w: str) -> dict:
    ids = ",".join(map(str, tok.encode(PROMPT).ids))
    r = subprocess.run([sys.executable, str(HERE / "llama_side.py"), "speed", "--gguf", str(out / f"gpt2-{w}.gguf"),
                        "--threads", THREADS, "--vocab-limit", str(tok.get_vocab_size()), "--prompt-ids", ids,
                        "--prefill-ids", ids, "--tokens", str(tokens)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llama_side.py speed ({w}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def same_greedy(text: str, llama_tokens: list[int]) -> bool:
    """tandem's greedy continuation is llama.cpp's token sequence (re-encoded, or decoded to the same text)."""
    cont = text[len(PROMPT):] if text.startswith(PROMPT) else text
    cont = cont.rstrip("\n")
    return tok.encode(cont).ids == llama_tokens or cont == tok.decode(llama_tokens)


res: dict[str, list[dict]] = {w: [] for w in formats}
for r in range(rounds):
    for w in formats:
        t, text = ours(w)
        l = theirs(w)
        res[w].append({"tandem": t, "llama": l["decode_tps"], "same": same_greedy(text, l["tokens"])})
        print(f"  round {r + 1}/{rounds} {w:5}: tandem {t:6.1f} tokens/s | llama.cpp {l['decode_tps']:6.1f} "
              f"({l['llama_cpp']}) | greedy tokens {'identical' if res[w][-1]['same'] else 'differ'}", flush=True)

print(f"single-stream decode, gpt2-124m shape (random weights), {tokens} tokens greedy, {THREADS} threads, "
      f"{rounds} rounds (medians); read rate {read_gbs:.1f} GB/s (bench_gemv.sh read-only, this run)")
print(f"  {'weights':7} {'MB read':>8} {'roofline':>9} {'tandem':>8} {'%roof':>6} {'llama.cpp':>9} {'%roof':>6} "
      f"{'tandem/llama':>12} {'tandem/f32':>10}  greedy = llama.cpp")
med = {w: statistics.median(x["tandem"] for x in res[w]) for w in formats}
for w in formats:
    mb = params * BYTES_PER_WEIGHT[w] / 1e6
    roof = read_gbs * 1e3 / mb
    t, l = med[w], statistics.median(x["llama"] for x in res[w])
    per_round = statistics.median(x["tandem"] / x["llama"] for x in res[w])
    vs_f32 = f"{t / med['f32']:9.2f}x" if "f32" in med else f"{'-':>10}"
    print(f"  {w:7} {mb:8.0f} {roof:9.1f} {t:8.1f} {100 * t / roof:5.0f}% {l:9.1f} {100 * l / roof:5.0f}% "
          f"{per_round:11.2f}x {vs_f32}  {sum(x['same'] for x in res[w])}/{rounds} rounds")
print("  roofline = read rate / bytes of the weights one token reads; tandem/llama = median of the per-round "
      "ratios; tandem/f32 = ratio of tandem's medians")
