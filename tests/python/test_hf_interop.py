"""Interoperability of tandem with Hugging Face transformers / tokenizers.

(a) a random-init transformers.GPT2LMHeadModel saved with save_pretrained (safetensors) loads in
    `tandem grad --model DIR` and gives the same logits (max-rel <= 1e-4);
(b) a checkpoint written by `tandem train` loads with GPT2LMHeadModel.from_pretrained and gives
    the same logits as `tandem grad` on that checkpoint; its tokenizer.json loads with
    tokenizers.Tokenizer.from_file.
Metric: max|tandem - hf| / max|hf|. All tests here need the tandem binary (build/tandem or
$TANDEM_BIN) and fail when it is missing.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file

from conftest import max_rel_err

TOL = 1e-4
TRAIN_STEPS = 20
SLICE_CHARS = 60_000


def _small_hf_model(seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=97, n_positions=48, n_embd=64, n_layer=2, n_head=4,
                     activation_function="gelu_new", layer_norm_epsilon=1e-5,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # nonzero biases / LayerNorm params so that every path matters
        for name, p in model.named_parameters():
            if ".ln_" in name or "ln_f" in name or name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
    return model


def _hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids.astype(np.int64))).logits.float().numpy()


def _tandem_logits(tandem, model_dir, ids: np.ndarray, tmp_path) -> dict:
    batch = tmp_path / "batch.safetensors"
    labels = np.roll(ids, -1, axis=1)
    save_file({"input_ids": torch.from_numpy(ids.astype(np.int32)),
               "labels": torch.from_numpy(labels.astype(np.int32))}, str(batch))
    out = tmp_path / "out.safetensors"
    tandem("grad", "--model", model_dir, "--batch", batch, "--out", out)
    return load_np(str(out))


def test_hf_save_pretrained_loads_in_tandem(tandem, tmp_path):
    model = _small_hf_model()
    mdir = tmp_path / "hf"
    model.save_pretrained(str(mdir), safe_serialization=True)
    assert (mdir / "model.safetensors").is_file()
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.config.vocab_size, size=(2, 40))
    res = _tandem_logits(tandem, mdir, ids, tmp_path)
    want = _hf_logits(model, ids)
    assert res["logits"].shape == want.shape
    err = max_rel_err(res["logits"], want)
    assert err <= TOL, f"logits max-rel error {err:.3g}"
    # loss with the labels we passed (the next token, the last position wraps around)
    labels = np.roll(ids, -1, axis=1)
    ref_loss = torch.nn.functional.cross_entropy(torch.from_numpy(want).reshape(-1, want.shape[-1]),
                                                 torch.from_numpy(labels).reshape(-1)).item()
    assert abs(float(res["loss"][0]) - ref_loss) <= TOL * abs(ref_loss)


@pytest.fixture(scope="module")
def trained_run(tandem, shakespeare_path, tmp_path_factory):
    """prepare (char tokenizer) on a slice of tinyshakespeare, then 20 steps of a small baby-gpt."""
    root = tmp_path_factory.mktemp("hf-interop")
    text = shakespeare_path.read_text(encoding="utf-8")[:SLICE_CHARS]
    src = root / "slice.txt"
    src.write_text(text, encoding="utf-8")
    data = root / "data"
    tandem("prepare", "--input", src, "--tokenizer", "char", "--out", data)
    for f in ("tokenizer.json", "train.bin", "val.bin"):
        assert (data / f).is_file(), f"prepare did not write {f}"
    run = root / "run"
    tandem("train", "--config", "baby-gpt", "--data", data, "--out", run,
           "--steps", str(TRAIN_STEPS), "--set", "n_layer=2", "--set", "n_embd=64",
           "--set", "eval_interval=10", "--set", "eval_steps=2",
           "--checkpoint-every", str(TRAIN_STEPS), "--seed", "7")
    ckpt = run / "checkpoints" / f"step_{TRAIN_STEPS}"
    assert ckpt.is_dir(), f"no checkpoint dir {ckpt}; have {sorted(p.name for p in (run / 'checkpoints').glob('*'))}"
    return dict(root=root, text=text, data=data, run=run, ckpt=ckpt)


def test_train_metrics_jsonl(trained_run):
    lines = (trained_run["run"] / "metrics.jsonl").read_text().splitlines()
    recs = [json.loads(l) for l in lines if l.strip()]
    steps = [r for r in recs if "loss" in r]
    assert len(steps) == TRAIN_STEPS, f"{len(steps)} step records"
    for r in steps:
        for key in ("step", "loss", "lr", "grad_norm", "tokens_per_s"):
            assert key in r, f"metrics record lacks {key}: {r}"
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
    assert any("val_loss" in r for r in recs), "no val_loss record"
    assert steps[-1]["loss"] < steps[0]["loss"]


def test_checkpoint_layout(trained_run):
    ckpt = trained_run["ckpt"]
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (ckpt / f).is_file(), f"checkpoint lacks {f}"
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["model_type"] == "gpt2"
    assert cfg["activation_function"] == "gelu_new"
    assert (cfg["n_layer"], cfg["n_embd"], cfg["n_head"]) == (2, 64, 4)
    names = set(load_np(str(ckpt / "model.safetensors")))
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names
    assert "transformer.h.1.mlp.c_proj.bias" in names


def test_checkpoint_tokenizer_loads_in_hf(trained_run):
    from tokenizers import Tokenizer
    ckpt, text = trained_run["ckpt"], trained_run["text"]
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    cfg = json.loads((ckpt / "config.json").read_text())
    assert tok.get_vocab_size() <= cfg["vocab_size"]
    sample = text[1000:1400]
    enc = tok.encode(sample)
    assert enc.ids and max(enc.ids) < cfg["vocab_size"]
    assert tok.decode(enc.ids) == sample
    # the char tokenizer maps each character to one token
    assert len(enc.ids) == len(sample)


def test_checkpoint_loads_in_transformers(tandem, trained_run, tmp_path):
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel
    ckpt, text = trained_run["ckpt"], trained_run["text"]
    model = GPT2LMHeadModel.from_pretrained(str(ckpt)).eval()
    assert torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
    T = 48
    ids = np.stack([np.array(tok.encode(text[o:o + 400]).ids[:T]) for o in (2000, 9000, 17000)])
    assert ids.shape == (3, T)
    want = _hf_logits(model, ids)
    res = _tandem_logits(tandem, ckpt, ids, tmp_path)
    err = max_rel_err(res["logits"], want)
    assert err <= TOL, f"logits max-rel error {err:.3g}"
