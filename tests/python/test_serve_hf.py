"""`tandem serve` against an independent model: greedy completions over HTTP equal transformers'
greedy generation (`generate(do_sample=False)`, its own KV cache) on the same weights.

Two models, each trained briefly by tandem on the character-level Shakespeare corpus (one token
per character, so prompt lengths are exact), exported with `tandem export --format hf`, served
from the export and loaded from it by transformers (GPT2LMHeadModel, DeepseekV3ForCausalLM; the
prompt ids come from HF `tokenizers` on the exported tokenizer.json):
- prompts of 1, 7, 8, 9, 63, 64, 65, 511, 512 and 513 tokens: the server prefills in power-of-two
  chunks of at most 512 tokens, so these sit on both sides of chunk edges (8 is one chunk, 9 is 8 + 1,
  513 is 512 + 1);
- all ten requests in flight at once against --max-batch 4: requests queue, are admitted while
  others decode, and prefill while others' decode steps run; half stream (SSE), half do not.
Check: the completion text (12 tokens, finish_reason "length") equals transformers' decoded greedy
tokens, exactly. A greedy step whose top-2 logits in transformers are within 1e-4 of each other
is a tie that f32 rounding may break either way: comparison stops there (reported), and the test
requires at least 90% of all generated tokens to have been compared.
"""
from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from test_serve import Server, sse_events

LENGTHS = [1, 7, 8, 9, 63, 64, 65, 511, 512, 513]
NEW = 12
CONTEXT = 576
TIE = 1e-4

MODELS = {
    "gpt2": ["--config", "baby-gpt", "--set", "n_layer=2", "--set", "n_embd=64", "--set", "n_head=4",
             "--set", f"n_positions={CONTEXT}"],
    "deepseek_v3": ["--config", "ds-tiny", "--set", "hidden_size=64", "--set", "num_hidden_layers=2",
                    "--set", f"max_position_embeddings={CONTEXT}"],
}


@pytest.fixture(scope="module")
def char_data(tandem, session_tmp, shakespeare_path):
    data = session_tmp / "serve-hf-char"
    if not (data / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", data)
    return data


def complete(port: int, prompt: str, stream: bool) -> tuple[str, str]:
    """(text, finish_reason) of one greedy completion."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("POST", "/v1/completions", json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": NEW,
                                                         "temperature": 0, "stream": stream}),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert r.status == 200, body
    if not stream:
        c = json.loads(body)["choices"][0]
        return c["text"], c["finish_reason"]
    text, finish = "", None
    for event in sse_events(body):
        if event != "[DONE]":
            c = json.loads(event)["choices"][0]
            text += c["text"]
            finish = c["finish_reason"] or finish
    return text, finish


def hf_greedy(model, ids: list[int]) -> tuple[list[int], list[float]]:
    """transformers' greedy tokens and, per step, the gap between its two largest logits."""
    from transformers import GenerationConfig
    # No EOS (the character vocabulary has none; tandem's server stops only at its tokenizer's EOS),
    # and an explicit attention mask: without one, generate masks every id equal to pad_token_id.
    gen = GenerationConfig(do_sample=False, max_new_tokens=NEW, eos_token_id=None, pad_token_id=0, bos_token_id=None,
                           output_logits=True, return_dict_in_generate=True)
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gen)
    tokens = out.sequences[0, len(ids):].tolist()
    gaps = [float(t[0].topk(2).values[0] - t[0].topk(2).values[1]) for t in out.logits]
    return tokens, gaps


@pytest.mark.parametrize("arch", list(MODELS))
def test_serve_greedy_equals_transformers(arch, tandem, tandem_bin, char_data, tmp_path, shakespeare_path):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    run, export = tmp_path / "run", tmp_path / "export"
    tandem("train", *MODELS[arch], "--data", char_data, "--out", run, "--steps", "60", "--set", "block_size=64",
           "--set", "batch_size=8", "--set", "eval_interval=1000", "--set", "eval_steps=1", "--set", "warmup_steps=10")
    tandem("export", "--model", run, "--format", "hf", "--out", export)
    assert json.loads((export / "config.json").read_text())["model_type"] == arch

    tok = Tokenizer.from_file(str(export / "tokenizer.json"))
    text = shakespeare_path.read_text(encoding="utf-8")
    prompts = [text[1000 + 997 * i:][:n] for i, n in enumerate(LENGTHS)]
    ids = [tok.encode(p, add_special_tokens=False).ids for p in prompts]
    assert [len(i) for i in ids] == LENGTHS

    server = Server(tandem_bin, export, tmp_path / "serve.log", "--max-batch", "4", "--max-context", str(CONTEXT))
    try:
        with ThreadPoolExecutor(len(prompts)) as pool:
            got = list(pool.map(lambda a: complete(server.port, *a), [(p, i % 2 == 1) for i, p in enumerate(prompts)]))
    finally:
        assert server.stop() == 0, server.stderr()

    model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    compared, report = 0, []
    for n, p_ids, (have, finish) in zip(LENGTHS, ids, got):
        assert finish == "length", (n, finish)
        want_ids, gaps = hf_greedy(model, p_ids)
        want = tok.decode(want_ids)
        assert len(have) == len(want) == NEW, (n, have, want)  # one character per token
        k = next((j for j, gap in enumerate(gaps) if gap < TIE), NEW)
        if k < NEW:
            report.append(f"{n}-token prompt: near-tie at generated token {k} (gap {gaps[k]:.1e})")
        assert have[:k] == want[:k], f"{arch}, {n}-token prompt: tandem serve {have!r}, transformers {want!r}"
        compared += k
    print(f"{arch}: {compared}/{NEW * len(LENGTHS)} greedy tokens compared", *report, sep="\n  ")
    assert compared >= 0.9 * NEW * len(LENGTHS), report
