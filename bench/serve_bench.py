#!/usr/bin/env python3
"""The measurements of bench/bench_serve.sh (see bench/README.md); run through that script, which
makes the model, the GGUF and the environment.

    serve_bench.py TANDEM OUT TOKENS PROMPT_LEN STREAMS ROUNDS LLAMA(0|1) BATCH(0|1)

OUT holds export/ (the model, tandem's export layout, with its tokenizer) and, when LLAMA is 1,
gpt2-f32.gguf (the same weights for llama.cpp).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
tandem, out = sys.argv[1], Path(sys.argv[2])
tokens, prompt_len, streams, rounds, with_llama, with_batch = map(int, sys.argv[3:9])
model = out / "export"
gguf = out / "gpt2-f32.gguf"
tok = Tokenizer.from_file(str(model / "tokenizer.json"))
THREADS = os.environ.get("OMP_NUM_THREADS", "2")  # both sides (bench_serve.sh sets it)
vocab_limit = tok.get_vocab_size()  # `tandem serve` samples only ids its tokenizer has
DECODE_PROMPT = "ROMEO:"
PREFILL_PROMPT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)[:prompt_len]
CHECK_PROMPT = "MENENIUS:\nEither you must confess yourselves wondrous malicious,"
CHECK_TOKENS = 32
# Logits bounds (max|a - b| / max|b|). tandem vs transformers: both f32 throughout (1e-4 as in the
# HF interop tests; measured ~1e-6). tandem vs llama.cpp: llama.cpp's CPU GELU rounds its f32
# input to f16 and reads a table (GGML_GELU_FP16 in ggml-cpu's vec.h, ~4e-3 relative per value),
# which puts its logits ~4e-4 from transformers' on this model.
BOUND_TANDEM, BOUND_LLAMA = 1e-4, 2e-3


def start(max_batch: int):
    log = open(out / f"serve-b{max_batch}.log", "w")
    p = subprocess.Popen([tandem, "serve", "--model", str(model), "--port", "0", "--model-name", "m",
                          "--max-batch", str(max_batch)], stdout=subprocess.PIPE, stderr=log, text=True)
    port = int(re.search(r":(\d+)/", p.stdout.readline()).group(1))
    return p, port


def generate_decode() -> float:
    """Decode tokens/s of `tandem generate --stats` (in-process, like llama_side.py's Llama.eval loop:
    no HTTP, no client process), greedy from DECODE_PROMPT."""
    r = subprocess.run([tandem, "generate", "--model", str(model), "--prompt", DECODE_PROMPT, "--max-tokens",
                        str(tokens), "--temperature", "0", "--stats"], capture_output=True, text=True, check=True)
    return json.loads(r.stderr.strip().splitlines()[-1])["decode_tokens_per_s"]


def stop(p) -> None:
    p.send_signal(signal.SIGTERM)
    p.wait()


def stream(port, prompt, n, result, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", json.dumps({"model": "m", "prompt": prompt, "max_tokens": n,
              "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    first = last = None
    count, text = 0, ""
    for line in r:
        if not line.startswith(b"data: {"):
            continue
        j = json.loads(line[6:])
        if j.get("usage"):
            count = j["usage"]["completion_tokens"]
        elif j["choices"][0]["text"]:
            text += j["choices"][0]["text"]
            last = time.perf_counter()
            first = first or last
    result[i] = (t0, first, last, count, text)


def run(port, n_streams, n):
    res = [None] * n_streams
    ts = [threading.Thread(target=stream, args=(port, DECODE_PROMPT + " " * (i % 4), n, res, i)) for i in range(n_streams)]
    t0 = time.perf_counter()
    for t in ts: t.start()
    for t in ts: t.join()
    wall = time.perf_counter() - t0
    total = sum(r[3] for r in res)
    single = (res[0][3] - 1) / (res[0][2] - res[0][1])
    return total / wall, single, res[0][4]


def prefill(port):
    best = 1e9
    for _ in range(3):
        res = [None]
        stream(port, PREFILL_PROMPT, 1, res, 0)
        best = min(best, res[0][1] - res[0][0])
    return prompt_len / best


def ids(text: str) -> list[int]:
    return tok.encode(text).ids


def same_greedy(text: str, llama_tokens: list[int]) -> bool:
    """tandem's greedy completion (text over HTTP) is llama.cpp's token sequence: its ids re-encoded
    equal llama.cpp's, or llama.cpp's ids decode to exactly the same text (a random model can pick a
    token sequence that re-encoding would merge differently)."""
    return ids(text) == llama_tokens or text == tok.decode(llama_tokens)


def llama(mode: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, str(HERE / "llama_side.py"), mode, "--gguf", str(gguf), "--threads", THREADS,
                        "--vocab-limit", str(vocab_limit), *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"llama_side.py {mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def csv(xs) -> str:
    return ",".join(map(str, xs))


def same_model_check(port) -> None:
    """The GGUF is the same model: the logits of every position of a prompt from tandem (`tandem
    grad`, the training graph), llama.cpp and transformers (the independent reference), and 32
    greedy tokens of tandem (the server's KV-cached decoding) and llama.cpp."""
    import torch
    from transformers import GPT2LMHeadModel
    prompt = ids(CHECK_PROMPT)
    arr = np.asarray([prompt], dtype=np.int32)
    save_file({"input_ids": arr, "labels": np.roll(arr, -1, axis=1)}, str(out / "check-batch.safetensors"))
    subprocess.run([tandem, "grad", "--model", str(model), "--batch", str(out / "check-batch.safetensors"),
                    "--out", str(out / "check-tandem.safetensors")], check=True, capture_output=True)
    ours = load_file(str(out / "check-tandem.safetensors"))["logits"].reshape(len(prompt), -1).astype(np.float64)
    theirs_run = llama("check", "--prompt-ids", csv(prompt), "--tokens", str(CHECK_TOKENS),
                       "--logits-out", str(out / "check-llama.npy"))
    theirs = np.load(out / "check-llama.npy").astype(np.float64)
    with torch.no_grad():
        ref = GPT2LMHeadModel.from_pretrained(str(model)).eval()(torch.tensor([prompt])).logits[0].double().numpy()

    def err(a, b):  # the repo's metric: max|a - b| / max|b|
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    e_ours, e_theirs, e_both = err(ours, ref), err(theirs, ref), err(ours, theirs)
    argmax_same = int(np.sum(ours.argmax(-1) == theirs.argmax(-1)))
    res = [None]
    stream(port, CHECK_PROMPT, CHECK_TOKENS, res, 0)
    ours_greedy, theirs_greedy = ids(res[0][4]), theirs_run["tokens"]
    first_diff = next((i for i, (a, b) in enumerate(zip(ours_greedy, theirs_greedy)) if a != b),
                      None if len(ours_greedy) == len(theirs_greedy) else min(len(ours_greedy), len(theirs_greedy)))
    if same_greedy(res[0][4], theirs_greedy):
        first_diff = None
    print(f"same model ({len(prompt)}-token prompt, all {ours.shape[1]} logits of every position; max|a-b|/max|b|):")
    print(f"  tandem vs transformers {e_ours:.1e} (bound {BOUND_TANDEM:g}); llama.cpp {theirs_run['llama_cpp']} vs "
          f"transformers {e_theirs:.1e}; tandem vs llama.cpp {e_both:.1e} (bound {BOUND_LLAMA:g})")
    print(f"  argmax equal at {argmax_same}/{len(prompt)} positions; {CHECK_TOKENS} greedy tokens "
          + ("identical" if first_diff is None else f"differ from token {first_diff}"))
    if not (e_ours <= BOUND_TANDEM and e_both <= BOUND_LLAMA and argmax_same == len(prompt)):
        sys.exit("bench_serve.sh: tandem and the GGUF do not compute the same model: stopping")
    if first_diff is not None:
        sys.exit(f"bench_serve.sh: tandem serve's {CHECK_TOKENS} greedy tokens differ from llama.cpp's on the same "
                 f"weights from token {first_diff}: stopping")


# ---- single stream, side by side ----
rows = []
p, port = start(1)
try:
    run(port, 1, 8)  # warm-up: builds the programs
    if with_llama:
        same_model_check(port)
    decode_ids = ids(DECODE_PROMPT)
    for r in range(rounds):
        _, dec, text = run(port, 1, tokens)
        pre = prefill(port)
        row = {"tandem_decode": dec, "tandem_prefill": pre, "tandem_inproc": generate_decode()}
        if with_llama:
            l = llama("speed", "--prompt-ids", csv(decode_ids), "--prefill-ids", csv(ids(PREFILL_PROMPT)),
                      "--tokens", str(tokens))
            row.update(llama_decode=l["decode_tps"], llama_prefill=l["prefill_tps"],
                       same_tokens=same_greedy(text, l["tokens"]))
        rows.append(row)
        print(f"  round {r + 1}/{rounds}: tandem decode {dec:6.1f} (in-process {row['tandem_inproc']:5.1f}) "
              f"prefill {pre:7.1f}"
              + (f" | llama.cpp decode {row['llama_decode']:6.1f} prefill {row['llama_prefill']:7.1f}"
                 f" | same greedy tokens: {'yes' if row['same_tokens'] else 'no'}" if with_llama else ""), flush=True)
finally:
    stop(p)

keys = [k for k in rows[0] if k != "same_tokens"]
med = {k: statistics.median(r[k] for r in rows) for k in keys}
best = {k: max(r[k] for r in rows) for k in keys}
print(f"single stream, gpt2-124m shape (random f32 weights), greedy, {THREADS} threads, {rounds} rounds "
      f"(median, and best in brackets: the least disturbed round on a shared machine):")
print(f"  {'':18} {'tandem':>17} " + (f"{'llama.cpp':>17} {'ratio':>15}" if with_llama else ""))
for name, key, unit in [("decode tokens/s", "decode", f"({tokens} tokens)"),
                        ("prefill tokens/s", "prefill", f"({prompt_len}-token prompt)")]:
    t, tb = med["tandem_" + key], best["tandem_" + key]
    line = f"  {name:18} {t:8.1f} [{tb:6.1f}] "
    if with_llama:
        l, lb = med["llama_" + key], best["llama_" + key]
        line += f"{l:8.1f} [{lb:6.1f}] {t / l:6.2f}x [{tb / lb:5.2f}x]"
    print(line + f"  {unit}")
    if key == "decode":  # the same decode without HTTP: `tandem generate` against Llama.eval, both in-process
        t, tb = med["tandem_inproc"], best["tandem_inproc"]
        line = f"  {'  in-process':18} {t:8.1f} [{tb:6.1f}] "
        if with_llama:
            line += f"{l:8.1f} [{lb:6.1f}] {t / l:6.2f}x [{tb / lb:5.2f}x]"
        print(line + "  (tandem generate --stats, no HTTP)")
if with_llama:
    print("  ratio = tandem / llama.cpp (issue 6's target: decode >= 1.3x); greedy tokens identical in "
          f"{sum(r['same_tokens'] for r in rows)}/{rounds} rounds")
    # Each round runs both sides back to back: the median of the per-round ratios is less exposed to
    # the machine's drift than the ratio of the two medians.
    for name, t_key, l_key in [("decode (HTTP)", "tandem_decode", "llama_decode"),
                               ("decode (in-process)", "tandem_inproc", "llama_decode"),
                               ("prefill", "tandem_prefill", "llama_prefill")]:
        ratios = sorted(r[t_key] / r[l_key] for r in rows)
        print(f"  per-round ratio, {name}: median {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")
if os.environ.get("DECODE_READ_MS"):
    read_ms = float(os.environ["DECODE_READ_MS"])
    roof = 1e3 / read_ms
    line = (f"  decode roofline: reading the weights once (bench_gemv.sh, read-only, this run) takes {read_ms:.2f} ms, "
            f"so at most {roof:.1f} tokens/s; tandem in-process at {100 * med['tandem_inproc'] / roof:.0f}% of it")
    if with_llama:
        line += (f", llama.cpp at {100 * med['llama_decode'] / roof:.0f}%; 1.3x llama.cpp would be "
                 f"{1.3 * med['llama_decode']:.1f} tokens/s ({1.3 * med['llama_decode'] / roof:.2f}x the roofline)")
    print(line)
spread = {k: max(r[k] for r in rows) / min(r[k] for r in rows) for k in keys}
if max(spread.values()) > 1.5:
    worst = max(spread, key=spread.get)
    print(f"  WARNING: the rounds disagree (best/worst {worst} = {spread[worst]:.1f}x): other processes took the "
          "cores; the medians and their ratio are not meaningful. Rerun on an idle machine, or compare per thread "
          "with OMP_NUM_THREADS=1.")

# ---- continuous batching: S streams vs 1 ----
if with_batch:
    p, port = start(streams)
    try:
        run(port, streams, 8)
        agg1, _, _ = run(port, 1, tokens)
        aggS, _, _ = run(port, streams, tokens)
    finally:
        stop(p)
    print(f"--max-batch {streams}: 1 stream {agg1:7.1f} tokens/s, {streams} concurrent streams {aggS:7.1f} tokens/s aggregate"
          f" -> {aggS / agg1:.2f}x (target >= 4x)")

# Greedy decoding is part of the claim: a round whose greedy tokens differ from llama.cpp's fails
# the benchmark (after everything above is printed).
if with_llama and not all(r["same_tokens"] for r in rows):
    bad = [i + 1 for i, r in enumerate(rows) if not r["same_tokens"]]
    sys.exit(f"bench_serve.sh: greedy tokens differ from llama.cpp's on the same weights in round(s) {bad}")
