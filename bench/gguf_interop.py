#!/usr/bin/env python3
"""llama.cpp loads what `tandem export --format gguf` writes: the interop check of GGUF export.

    scripts/llama-wheel.sh                       # once: llama-cpp-python built for this CPU (cached)
    .venv/bin/python bench/gguf_interop.py [--work DIR] [--steps N] [--tokens K]

Not in CI: llama-cpp-python compiles llama.cpp from source (about half an hour on 2 cores on a
fresh machine); CI checks the files with the `gguf` package instead (tests/python/test_gguf.py).

On a byte-level BPE tokenizer trained on the Shakespeare corpus, trains a gpt2-shaped model
(baby-gpt) and a ds-tiny model for N steps, exports each as GGUF in f32, bf16 and q8_0, loads each
file in llama.cpp (f32 KV cache) and checks, against tandem on the same weights:
  - logits at every position of a (64 - K)-token prompt (the models have 64 positions), metric
    max|a - b| / max|b| (the repo's metric). tandem's side is `tandem grad` on the model imported
    back from the same GGUF (both sides hold the same rounded or quantized weights). Both engines
    are also compared with an independent float64 forward of the file (bench/ggml_reference.py,
    weights as gguf-py dequantizes them) in two arithmetics: "exact" (f32 activations, what tandem
    computes) and "ggml" (what llama.cpp's CPU backend computes: the input of a Q8_0 weight's
    matmul quantized to q8_0 itself, a BF16 weight's rounded to bf16, GELU from ggml's fp16 table).
    Checks:
      tandem vs float64 exact <= 1e-3 (f32 summation order only), every file;
      tandem vs llama.cpp <= the format's bound at every position where the two float64 forwards
        route every MoE layer alike: f32 1e-3; bf16 and q8_0 3e-2 (llama.cpp's rounding of the
        activations: unit roundoff 2^-8, or 1/254 of a 32-value block's max, over a few layers);
      llama.cpp vs float64 ggml <= the same bound at every position, flips included.
    A routing flip: llama.cpp's rounded activations move a token's router scores (ds-tiny q8_0: by
    4e-4 to 7e-4), and where two experts (or two expert groups) are closer than that, the token
    takes another expert; its logits then differ by far more than the rounding itself (ds-tiny
    q8_0: 7e-2 against 3e-3 elsewhere). Flips are listed (position, layer, how close the tie was)
    with the difference they cause, and are not held to the rounding bound: the check there is that
    llama.cpp's logits are the ones the simulated ggml arithmetic predicts;
  - K greedy tokens after the prompt are identical (tandem's by repeated `tandem grad`);
  - llama.cpp's tokenizer on the embedded vocabulary gives `tandem tokenize`'s ids on the whole
    corpus (every 2000-character piece).
Prints one line per model x dtype and exits non-zero when a check fails.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import llama_cpp

from ggml_reference import Reference

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = {"f32": 1e-3, "bf16": 3e-2, "q8_0": 3e-2}
GGML_TYPE_F32 = 0


def sh(*args) -> str:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, args))}\n{r.stderr[-3000:]}")
    return r.stdout


def tandem_logits(tandem: Path, model: Path, ids: list[int], work: Path) -> np.ndarray:
    arr = np.asarray([ids], dtype=np.int32)
    save_file({"input_ids": arr, "labels": np.roll(arr, -1, axis=1)}, str(work / "batch.safetensors"))
    sh(tandem, "grad", "--model", model, "--batch", work / "batch.safetensors", "--out", work / "grad.safetensors")
    return load_file(str(work / "grad.safetensors"))["logits"].reshape(len(ids), -1).astype(np.float64)


def rel_err(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> float:
    """max|a - b| over the rows given, divided by max|scale| over all positions."""
    return float(np.max(np.abs(a - b), initial=0.0) / np.max(np.abs(scale)))


def llama_load(gguf: Path, n_ctx: int) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=2,
                           type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, logits_all=True, verbose=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--tandem", type=Path, default=ROOT / "build" / "tandem")
    a = ap.parse_args()
    if not 0 < a.tokens < 64:
        ap.error("--tokens must be in 1..63 (the models have 64 positions)")
    work = a.work or Path(tempfile.mkdtemp(prefix="tandem-gguf-interop."))
    work.mkdir(parents=True, exist_ok=True)
    T = a.tandem
    corpus = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    if not (work / "data" / "tokenizer.json").exists():
        sh(T, "prepare", "--input", ROOT / "data" / "tinyshakespeare.txt", "--tokenizer", "bpe:1024", "--out", work / "data")
    common = ["--data", work / "data", "--steps", a.steps, "--checkpoint-every", a.steps, "--seed", "1",
              "--set", f"eval_interval={a.steps}", "--set", "eval_steps=2"]
    models = {"gpt2": ["--config", "baby-gpt"], "ds-tiny": ["--config", "ds-tiny"]}
    for name, cfg in models.items():
        if not (work / name / "checkpoints").exists():
            sh(T, "train", *cfg, "--out", work / name, *common)

    prompt_text = corpus[:2000]
    failed = False
    for name in models:
        # both models have 64 positions: the prompt and the greedy continuation must fit in them
        ids = [int(x) for x in sh(T, "tokenize", "--tokenizer", work / "data", "--text", prompt_text).split()][:64 - a.tokens]
        for dtype in ("f32", "bf16", "q8_0"):
            d = work / f"{name}-{dtype}"
            d.mkdir(exist_ok=True)
            gguf = d / "model.gguf"
            if not gguf.exists():
                sh(T, "export", "--model", work / name, "--format", "gguf", "--dtype", dtype, "--out", gguf)
            if not (d / "imported").exists():
                sh(T, "import", "--from", gguf, "--out", d / "imported")
            ours = tandem_logits(T, d / "imported", ids, d)
            llm = llama_load(gguf, 64)
            llm.eval(ids)
            theirs = np.asarray(llm.scores[:len(ids)], dtype=np.float64)[:, :ours.shape[1]]
            # Against the float64 forwards: each engine's own arithmetic, and where routing flips.
            exact, ggml = Reference(gguf, "exact"), Reference(gguf, "ggml")
            want_exact, want_ggml = (r.forward(ids)[:, :ours.shape[1]] for r in (exact, ggml))
            flips = {}  # position -> [(layer, margin)]
            for layer, (chosen, margin) in exact.routes.items():
                for t in np.nonzero(np.any(chosen != ggml.routes[layer][0], axis=1))[0]:
                    flips.setdefault(int(t), []).append((layer, float(min(margin[t], ggml.routes[layer][1][t]))))
            kept = [t for t in range(len(ids)) if t not in flips]
            err = rel_err(theirs[kept], ours[kept], ours)
            err_all = rel_err(theirs, ours, ours)
            err_tandem = rel_err(ours, want_exact, want_exact)
            err_llama = rel_err(theirs, want_ggml, want_ggml)
            predicted = rel_err(want_ggml[kept], want_exact[kept], want_exact)
            # Greedy continuations.
            theirs_greedy, tok = [], int(np.argmax(theirs[-1]))
            for _ in range(a.tokens):
                theirs_greedy.append(tok)
                llm.eval([tok])
                tok = int(np.argmax(np.asarray(llm.scores[llm.n_tokens - 1])[:ours.shape[1]]))
            seq, ours_greedy = list(ids), []
            for _ in range(a.tokens):
                nxt = int(np.argmax(tandem_logits(T, d / "imported", seq, d)[-1]))
                ours_greedy.append(nxt)
                seq.append(nxt)
            # Tokenizer on the corpus, piece by piece.
            mismatched = 0
            pieces = [corpus[i:i + 2000] for i in range(0, len(corpus), 2000)] if dtype == "f32" else []
            for piece in pieces:
                want = [int(x) for x in sh(T, "tokenize", "--tokenizer", work / "data", "--text", piece).split()]
                got = llm.tokenize(piece.encode("utf-8"), add_bos=False, special=False)
                mismatched += got != want
            bound = BOUNDS[dtype]
            ok = (err_tandem <= BOUNDS["f32"] and err <= bound and err_llama <= bound
                  and ours_greedy == theirs_greedy and mismatched == 0)
            failed |= not ok
            tok_note = f"; tokenizer: {len(pieces) - mismatched}/{len(pieces)} corpus pieces identical" if pieces else ""
            flip_note = ""
            if flips:
                flip_note = (f"; {len(flips)} routing flip(s) (position: layer/margin "
                             + ", ".join(f"{t}: " + " ".join(f"{l}/{m:.0e}" for l, m in flips[t]) for t in sorted(flips))
                             + f") where tandem vs llama.cpp is {err_all:.2e}")
            print(f"{name:8s} {dtype:5s} logits max rel err: tandem vs llama.cpp {err:.2e} (bound {bound:g}; "
                  f"float64 predicts {predicted:.2e}){flip_note}; tandem vs float64 exact {err_tandem:.2e} "
                  f"(bound {BOUNDS['f32']:g}); llama.cpp vs float64 ggml {err_llama:.2e} (bound {bound:g}); "
                  f"{a.tokens} greedy tokens {'identical' if ours_greedy == theirs_greedy else 'DIFFER'}{tok_note}"
                  f"  {'ok' if ok else 'FAIL'}  (llama-cpp-python {llama_cpp.__version__})", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
