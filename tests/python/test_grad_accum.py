"""Gradient accumulation: `tandem train` with grad_accum 3 x batch_size 4 computes the same step as
one batch of the same 12 rows.

The trainer writes its first step before the update (`--dump-first-step`, hidden, for tests): the
weights, the rows of its three micro-batches in order, the logged loss and grad_norm, and the
step's mean gradient as the optimizer receives it (before clipping). Expected values:
- `tandem grad` on those 12 rows as one batch (no accumulation): loss, grad_norm and every
  gradient within 1e-6, metric max|a - b| / max|b| per tensor. Summing the micro-batches instead
  of averaging them, dropping one, or counting one twice fails by far more.
- PyTorch (reference/torch_gpt.py, checked against transformers in test_parity_torch.py) on the
  same 12 rows: loss within 1e-5, every gradient within 1e-4 (the parity tests' bounds).
"""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file as load_pt

from conftest import max_rel_err
from torch_gpt import GPT, GPTConfig

SETS = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 32, "block_size": 16, "eval_interval": 1000,
        "eval_steps": 1}


def test_grad_accum_3x4_equals_batch_12(tandem, tmp_path, session_tmp, shakespeare_path):
    data = session_tmp / "accum-char"
    if not (data / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", data)
    run, dump = tmp_path / "run", tmp_path / "dump"
    args = ["train", "--config", "baby-gpt", "--data", data, "--out", run, "--steps", "1",
            "--set", "batch_size=4", "--set", "grad_accum=3", "--dump-first-step", dump]
    for k, v in SETS.items():
        args += ["--set", f"{k}={v}"]
    tandem(*args)
    step = load_np(str(dump / "step.safetensors"))
    assert step["input_ids"].shape == (12, 16)
    # Three different micro-batches (else dropping or repeating one would go unnoticed).
    rows = {r.tobytes() for r in step["input_ids"]}
    assert len(rows) == 12
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in l]
    assert len(metrics) == 1 and float(step["loss"][0]) == np.float32(metrics[0]["loss"])

    # The same weights and the same 12 rows as one batch.
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(run / "checkpoints" / "step_1" / "config.json", model / "config.json")
    shutil.copy(dump / "model.safetensors", model / "model.safetensors")
    out = tmp_path / "batch12.safetensors"
    tandem("grad", "--model", model, "--batch", dump / "step.safetensors", "--out", out)
    one = load_np(str(out))
    grads = sorted(k for k in one if k.startswith("grad."))
    assert grads and grads == sorted(k for k in step if k.startswith("grad."))

    loss_err = abs(float(step["loss"][0]) - float(one["loss"][0])) / abs(float(one["loss"][0]))
    errors = {k: max_rel_err(step[k], one[k]) for k in grads}
    norm12 = math.sqrt(sum(float(np.sum(one[k].astype(np.float64) ** 2)) for k in grads))
    norm_err = abs(metrics[0]["grad_norm"] - norm12) / norm12
    worst = max(errors, key=errors.get)
    print(f"accum 3x4 vs batch 12: loss {loss_err:.2e}, grad_norm {norm_err:.2e}, worst gradient {worst} {errors[worst]:.2e}")
    assert loss_err <= 1e-6
    assert norm_err <= 1e-6
    bad = {k: e for k, e in errors.items() if e > 1e-6}
    assert not bad, "gradients beyond 1e-6 max-rel: " + ", ".join(f"{k}={e:.3g}" for k, e in bad.items())

    # The independent reference on the same rows.
    cfg = json.loads((model / "config.json").read_text())
    ref = GPT(GPTConfig(vocab_size=cfg["vocab_size"], n_positions=cfg["n_positions"], n_embd=cfg["n_embd"],
                        n_layer=cfg["n_layer"], n_head=cfg["n_head"], layer_norm_epsilon=cfg["layer_norm_epsilon"]))
    missing, unexpected = ref.load_state_dict(load_pt(str(model / "model.safetensors")), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    x = torch.from_numpy(step["input_ids"].astype(np.int64))
    y = torch.from_numpy(step["labels"].astype(np.int64))
    _, loss = ref(x, y)
    loss.backward()
    assert abs(float(step["loss"][0]) - loss.item()) <= 1e-5 * loss.item()
    for name, p in ref.named_parameters():
        err = max_rel_err(step["grad." + name], p.grad.numpy())
        assert err <= 1e-4, f"{name}: {err:.3g} against PyTorch"
