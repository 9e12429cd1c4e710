#!/usr/bin/env python3
"""Write a GPT-2 model directory (tandem's checkpoint / `tandem export` layout: config.json with
GPT2Config fields + model.safetensors with GPT2LMHeadModel names, the tied lm_head omitted) as a
GGUF file that llama.cpp runs as its `gpt2` architecture, in f32: the llama.cpp side of
bench/bench_serve.sh.

    gpt2_to_gguf.py MODEL_DIR OUT.gguf

What llama.cpp's GPT-2 expects (the names come from the `gguf` package's tables):
  - metadata: general.architecture = gpt2; gpt2.{context_length, embedding_length,
    feed_forward_length (= 4 * n_embd), block_count, attention.head_count,
    attention.layer_norm_epsilon}; general.file_type = ALL_F32;
  - tensors, in numpy (row-major) shapes, which GGUF stores with the dimensions reversed:
    token_embd [V, C], position_embd [n_positions, C], output_norm, output [V, C] (the tied
    embedding, written out), and per block attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up,
    ffn_down with their biases. transformers' Conv1D keeps weights as [in, out]; llama.cpp wants
    [out, in] like a Linear, so the four projection matrices are transposed.
  - a vocabulary of exactly V tokens (the embedding's row count comes from it). Tokens are fed to
    llama.cpp as ids, so any vocabulary of the right size serves; this one is GPT-2's shape: the
    256 byte-level symbols first (id < 256 decodes to that byte), placeholders, and
    <|endoftext|> as the last id (BOS/EOS). A BPE vocabulary needs at least one merge: "Ġ t".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file


def byte_symbols() -> list[str]:
    """GPT-2's byte-level alphabet: byte b as a printable character, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    # GPT-2's vocabulary lists them in this order: printable bytes first, then the remapped ones.
    return [out[b] for b in keep] + [out[b] for b in range(256) if b not in keep]


def load_model(model_dir: Path) -> tuple[dict, dict[str, np.ndarray]]:
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") != "gpt2":
        sys.exit(f"{model_dir}/config.json: model_type {cfg.get('model_type')!r} is not gpt2")
    raw = load_file(str(model_dir / "model.safetensors"))
    tensors = {}
    for name, t in raw.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older checkpoints
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # the original GPT-2 files have no prefix
        if t.dtype != np.float32:
            sys.exit(f"{model_dir}/model.safetensors: {name} is {t.dtype}; this writer makes f32 GGUF from f32 weights")
        tensors[name] = t
    if "lm_head.weight" in tensors:
        if not np.array_equal(tensors.pop("lm_head.weight"), tensors["transformer.wte.weight"]):
            sys.exit(f"{model_dir}: lm_head.weight differs from transformer.wte.weight (untied GPT-2 is not supported)")
    return cfg, tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    a = ap.parse_args()
    cfg, t = load_model(a.model_dir)
    C, L, H = cfg["n_embd"], cfg["n_layer"], cfg["n_head"]
    V, P = t["transformer.wte.weight"].shape[0], cfg.get("n_positions", cfg.get("n_ctx"))
    if cfg.get("n_inner") not in (None, 4 * C):
        sys.exit("n_inner other than 4 * n_embd is not supported")

    w = gguf.GGUFWriter(str(a.out), "gpt2")
    w.add_name(a.model_dir.name)
    w.add_context_length(P)
    w.add_embedding_length(C)
    w.add_feed_forward_length(4 * C)
    w.add_block_count(L)
    w.add_head_count(H)
    w.add_layer_norm_eps(cfg.get("layer_norm_epsilon", 1e-5))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    syms = byte_symbols()
    tokens = syms + ["Ġt"] + [f"<|tandem_{i}|>" for i in range(257, V - 1)] + ["<|endoftext|>"]
    if len(tokens) != V or V < 258:
        sys.exit(f"vocab_size {V} is too small for a GPT-2-style vocabulary (needs >= 258)")
    types = [gguf.TokenType.NORMAL] * (V - 1) + [gguf.TokenType.CONTROL]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(V - 1)
    w.add_eos_token_id(V - 1)

    name = lambda kind, bid=None: gguf.TENSOR_NAMES[kind].format(bid=bid)  # noqa: E731
    MT = gguf.MODEL_TENSOR
    out: list[tuple[str, np.ndarray]] = [
        (name(MT.TOKEN_EMBD) + ".weight", t["transformer.wte.weight"]),
        (name(MT.POS_EMBD) + ".weight", t["transformer.wpe.weight"]),
    ]
    for l in range(L):
        h = f"transformer.h.{l}."
        for kind, src, transpose in [(MT.ATTN_NORM, "ln_1", False), (MT.ATTN_QKV, "attn.c_attn", True),
                                     (MT.ATTN_OUT, "attn.c_proj", True), (MT.FFN_NORM, "ln_2", False),
                                     (MT.FFN_UP, "mlp.c_fc", True), (MT.FFN_DOWN, "mlp.c_proj", True)]:
            wt = t[h + src + ".weight"]
            out.append((name(kind, l) + ".weight", np.ascontiguousarray(wt.T) if transpose else wt))
            out.append((name(kind, l) + ".bias", t[h + src + ".bias"]))
    out += [(name(MT.OUTPUT_NORM) + ".weight", t["transformer.ln_f.weight"]),
            (name(MT.OUTPUT_NORM) + ".bias", t["transformer.ln_f.bias"]),
            (name(MT.OUTPUT) + ".weight", t["transformer.wte.weight"])]
    used = {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias"}
    used |= {f"transformer.h.{l}.{s}.{p}" for l in range(L)
             for s in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj") for p in ("weight", "bias")}
    if set(t) - used:
        sys.exit(f"{a.model_dir}: tensors this writer does not know: {sorted(set(t) - used)[:5]}")
    for n, arr in out:
        w.add_tensor(n, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}: gpt2, {L} layers, n_embd {C}, vocab {V}, context {P}, f32, "
          f"{sum(x.size for _, x in out) * 4 / 1e6:.0f} MB of tensors")


if __name__ == "__main__":
    main()
