#!/usr/bin/env python3
"""The llama.cpp side of bench/bench_serve.sh, through llama-cpp-python (scripts/llama-wheel.sh).

    llama_side.py speed --gguf F --prompt-ids IDS --prefill-ids IDS --tokens N --vocab-limit K [--threads 2]
    llama_side.py check --gguf F --prompt-ids IDS --tokens N --vocab-limit K --logits-out FILE.npy

IDS are comma-separated token ids. Prints one JSON object.

speed: measured like the tandem side (bench_serve.sh), with llama.cpp's f32 weights, an f32 KV
cache (llama.cpp's default is f16; tandem's cache is f32) and `--threads` threads for both
decoding and batches:
  - decode tokens/s: evaluate the prompt, take the greedy token (argmax over the first K logits,
    as `tandem serve` samples only ids its tokenizer has), then N - 1 single-token steps; (N - 1) /
    (time of the last token - time of the first);
  - prefill tokens/s: len(prefill ids) / time to evaluate them in one batch (n_batch = n_ubatch =
    512) from an empty cache and pick the first token, best of 3.
check: the logits of every prompt position (saved to FILE.npy) and N greedy tokens (argmax over
the first K logits), for comparison with tandem's.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

import llama_cpp

GGML_TYPE_F32 = 0


def ids(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x]


def load(path: str, threads: int, n_ctx: int, logits_all: bool) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                           n_threads_batch=threads, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32,
                           logits_all=logits_all, verbose=False)


def greedy(llm: llama_cpp.Llama, limit: int) -> int:
    """Argmax over the first `limit` logits of the last evaluated token (read in place: without
    logits_all, llama-cpp-python's eval does not copy them)."""
    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    return int(np.argmax(row[:limit]))


def speed(a) -> dict:
    prompt, prefill = ids(a.prompt_ids), ids(a.prefill_ids)
    llm = load(a.gguf, a.threads, max(len(prompt) + a.tokens, len(prefill)) + 8, False)
    llm.eval(prompt[:8])  # warm-up: buffers, threads, page cache
    llm.reset()
    llm.eval(prompt)
    tok = greedy(llm, a.vocab_limit)
    first = time.perf_counter()
    out = [tok]
    for _ in range(a.tokens - 1):
        llm.eval([tok])
        tok = greedy(llm, a.vocab_limit)
        out.append(tok)
    decode = (a.tokens - 1) / (time.perf_counter() - first)
    best = float("inf")
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prefill)
        greedy(llm, a.vocab_limit)
        best = min(best, time.perf_counter() - t0)
    return {"decode_tps": decode, "prefill_tps": len(prefill) / best, "tokens": out,
            "llama_cpp": llama_cpp.__version__, "threads": a.threads}


def check(a) -> dict:
    prompt = ids(a.prompt_ids)
    llm = load(a.gguf, a.threads, len(prompt) + a.tokens + 8, True)
    llm.eval(prompt)
    np.save(a.logits_out, np.asarray(llm.scores[:len(prompt)], dtype=np.float32))
    out = []
    for _ in range(a.tokens):
        tok = greedy(llm, a.vocab_limit)
        out.append(tok)
        llm.eval([tok])
    return {"tokens": out, "llama_cpp": llama_cpp.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["speed", "check"])
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--prompt-ids", required=True)
    ap.add_argument("--prefill-ids", default="")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--vocab-limit", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--logits-out", default="")
    a = ap.parse_args()
    print(json.dumps(speed(a) if a.mode == "speed" else check(a)))


if __name__ == "__main__":
    main()
