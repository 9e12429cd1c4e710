"""KV-cached generation against transformers: greedy decoding of a model saved by
`GPT2LMHeadModel.save_pretrained` gives exactly the token ids that transformers' own greedy
`generate` gives (which recomputes or caches on its side independently of ours)."""
from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer



def test_greedy_generation_matches_transformers(tandem, tmp_path, session_tmp, shakespeare_path):
    data = session_tmp / "gen-char"
    if not (data / "tokenizer.json").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", data)
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(3)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=48, n_embd=64, n_layer=2, n_head=4,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    # Sharpen the distribution so that greedy choices are far from ties.
    with torch.no_grad():
        model.transformer.wte.weight.mul_(8.0)
    model_dir = tmp_path / "hf"
    model.save_pretrained(model_dir)
    (model_dir / "tokenizer.json").write_text((data / "tokenizer.json").read_text())

    prompt = "ROMEO: Is the day so young?"
    ids = tok.encode(prompt).ids
    new = model.config.n_positions - len(ids)  # fill the context: the cache's last slot is used
    with torch.no_grad():
        hf = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False,
                            attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
    want = hf[0, len(ids):].tolist()
    r = tandem("generate", "--model", model_dir, "--prompt", prompt, "--max-tokens", str(new),
               "--temperature", "0")
    got_text = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
    want_text = tok.decode(want)
    assert got_text == want_text, f"tandem: {got_text!r}\nhf:     {want_text!r}"


def test_greedy_generation_matches_transformers_on_a_wider_model(tandem, tmp_path, session_tmp, shakespeare_path):
    """The same check on a model wide enough (n_embd 256) that the decode matmuls take the
    threaded skinny-GEMM path (src/backends/cpu/gemv.h) and a 7-token prompt is prefilled through
    it too, while the 40-token prompt's prefill goes through OpenBLAS; the lm_head runs on the last
    position only in both."""
    data = session_tmp / "gen-char"
    if not (data / "tokenizer.json").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", data)
    tok = Tokenizer.from_file(str(data / "tokenizer.json"))
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(5)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=96, n_embd=256, n_layer=2, n_head=4,
                     activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.transformer.wte.weight.mul_(8.0)
    model_dir = tmp_path / "hf"
    model.save_pretrained(model_dir)
    (model_dir / "tokenizer.json").write_text((data / "tokenizer.json").read_text())
    for prompt in ["KING RI", "ROMEO: Is the day so young? JULIET: But "]:
        ids = tok.encode(prompt).ids
        new = 40
        with torch.no_grad():
            hf = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False,
                                attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=0)
        want_text = tok.decode(hf[0, len(ids):].tolist())
        r = tandem("generate", "--model", model_dir, "--prompt", prompt, "--max-tokens", str(new),
                   "--temperature", "0")
        got_text = r.stdout[:-1] if r.stdout.endswith("\n") else r.stdout
        assert got_text == want_text, f"prompt {prompt!r}\ntandem: {got_text!r}\nhf:     {want_text!r}"
