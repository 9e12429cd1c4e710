"""Training DeepSeek-V3 (ds-tiny shape, smaller): MTP loss logged beside the loss, expert-load
statistics in metrics.jsonl, and auxiliary-loss-free balancing doing its job: with gamma > 0 the
max/mean expert load over the last 100 steps stays <= 1.5, and is worse with gamma = 0."""
from __future__ import annotations

import json

import numpy as np
import pytest

STEPS = 250
SMALL = ["--set", "hidden_size=64", "--set", "num_hidden_layers=3", "--set", "eval_interval=50", "--set", "eval_steps=2",
         "--set", "batch_size=8", "--set", "block_size=32"]


@pytest.fixture(scope="module")
def bpe_data(tandem, session_tmp, shakespeare_path):
    out = session_tmp / "ds-train-bpe"
    if not (out / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "bpe:512", "--out", out)
    return out


def run(tandem, data, out, gamma):
    tandem("train", "--config", "ds-tiny", "--data", data, "--out", out, "--steps", str(STEPS), *SMALL,
           "--set", f"router_bias_update_rate={gamma}", timeout=900)
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in l and '"loss"' in l]


def imbalance(metrics):
    # Mean over the last 100 steps and over MoE layers of max load / mean load.
    vals = [s["max_over_mean"] for m in metrics[-100:] for s in m["moe"].values()]
    return float(np.mean(vals))


def test_balancing_and_mtp(tandem, tmp_path, bpe_data):
    balanced = run(tandem, bpe_data, tmp_path / "g", 0.01)
    free = run(tandem, bpe_data, tmp_path / "g0", 0.0)
    assert len(balanced) == STEPS
    m = balanced[-1]
    assert "mtp_loss" in m and "val_loss" in m and m["loss"] < balanced[0]["loss"] - 0.5
    layers = m["moe"]
    # layers 1 and 2 (first_k_dense_replace = 1) and the MTP module's block (layer 3)
    assert sorted(layers) == [f"model.layers.{i}.mlp" for i in (1, 2, 3)]
    # The last step evaluates: per-expert token fractions come with it.
    assert all(len(s["fraction"]) == 8 and abs(sum(s["fraction"]) - 1) < 1e-9 for s in layers.values())
    with_gamma, without = imbalance(balanced), imbalance(free)
    print(f"max/mean expert load over the last 100 steps: gamma=0.01 {with_gamma:.3f}, gamma=0 {without:.3f}")
    assert with_gamma <= 1.5
    assert with_gamma < without
