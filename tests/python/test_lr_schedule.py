"""The learning rate tandem trains with, step by step, against nanoGPT's schedule driven through
PyTorch's own scheduler machinery.

Reference: nanoGPT's `get_lr` (train.py: linear warmup over `warmup_iters` as
lr * (it + 1) / (warmup_iters + 1), cosine decay to `min_lr` until `lr_decay_iters`, then `min_lr`),
written here as the multiplier of a `torch.optim.lr_scheduler.LambdaLR` on a dummy SGD optimizer,
and read back from the optimizer's param group before each update. nanoGPT's iteration 0 is the
first update, i.e. tandem's step 1. Nothing of tandem's code is used.

Checked: the `lr` of every step line of metrics.jsonl, over a run that goes through warmup, the
cosine and past `lr_decay_steps` (min_lr), interrupted twice (once inside the warmup, once inside
the cosine) and resumed. Tolerance: relative 1e-12 (both sides compute in float64).
"""
from __future__ import annotations

import json
import math

import pytest
import torch

LR, MIN_LR, WARMUP, DECAY, TOTAL = 2e-3, 3e-4, 8, 30, 40
STOPS = [5, 19, TOTAL]  # two interruptions, then the end


def nanogpt_multiplier(it: int) -> float:
    """nanoGPT's get_lr(it) / learning_rate."""
    if it < WARMUP:
        return (it + 1) / (WARMUP + 1)
    if it > DECAY:
        return MIN_LR / LR
    decay_ratio = (it - WARMUP) / (DECAY - WARMUP)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return (MIN_LR + coeff * (LR - MIN_LR)) / LR


def torch_schedule(n: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, nanogpt_multiplier)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_reference_shape():
    lrs = torch_schedule(TOTAL)
    assert lrs[0] == pytest.approx(LR / (WARMUP + 1)) and lrs[WARMUP] == pytest.approx(LR)
    assert all(a < b for a, b in zip(lrs[:WARMUP], lrs[1:WARMUP + 1]))
    assert all(a > b for a, b in zip(lrs[WARMUP:DECAY], lrs[WARMUP + 1:DECAY + 1]))
    assert lrs[DECAY] == pytest.approx(MIN_LR) and lrs[-1] == pytest.approx(MIN_LR)


def test_metrics_lr_equals_reference_schedule_across_resumes(tandem, tmp_path, session_tmp, shakespeare_path):
    data = session_tmp / "lr-char"
    if not (data / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "char", "--out", data)
    run = tmp_path / "run"
    sets = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 16, "batch_size": 2, "eval_interval": 1000,
            "eval_steps": 1, "learning_rate": LR, "min_lr": MIN_LR, "warmup_steps": WARMUP, "lr_decay_steps": DECAY,
            "max_steps": TOTAL}
    args = ["train", "--config", "baby-gpt", "--data", data, "--out", run]
    for k, v in sets.items():
        args += ["--set", f"{k}={v!r}"]
    for i, stop in enumerate(STOPS):
        tandem(*args, "--steps", str(stop), *(["--resume"] if i else []))
    steps = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in steps if "event" not in m]
    assert [m["step"] for m in steps] == list(range(1, TOTAL + 1))
    want = torch_schedule(TOTAL)
    bad = [(m["step"], m["lr"], w) for m, w in zip(steps, want) if abs(m["lr"] - w) > 1e-12 * w]
    assert not bad, "steps whose lr differs from nanoGPT's schedule (step, tandem, reference): " + repr(bad[:10])
