"""Training DeepSeek-V3 (ds-tiny shape, smaller): MTP loss logged beside the loss, expert-load
statistics in metrics.jsonl, and both balancing mechanisms doing their job against the same run
without either (gamma = 0, alpha = 0): auxiliary-loss-free balancing (gamma > 0) keeps the max/mean
expert load over the last 100 steps <= 1.5; the sequence-wise balance loss (alpha > 0, gamma = 0)
lowers it too, and its balance_loss is logged."""
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


def run(tandem, data, out, gamma, alpha=0.0):
    tandem("train", "--config", "ds-tiny", "--data", data, "--out", out, "--steps", str(STEPS), *SMALL,
           "--set", f"router_bias_update_rate={gamma}", "--set", f"seq_aux_loss_alpha={alpha}", timeout=900)
    return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in l and '"loss"' in l]


@pytest.fixture(scope="module")
def unbalanced(tandem, bpe_data, tmp_path_factory):
    """The run without any balancing (gamma = 0, alpha = 0)."""
    return run(tandem, bpe_data, tmp_path_factory.mktemp("ds-train") / "free", 0.0)


def imbalance(metrics):
    # Mean over the last 100 steps and over MoE layers of max load / mean load.
    vals = [s["max_over_mean"] for m in metrics[-100:] for s in m["moe"].values()]
    return float(np.mean(vals))


def test_balancing_and_mtp(tandem, tmp_path, bpe_data, unbalanced):
    balanced = run(tandem, bpe_data, tmp_path / "g", 0.01)
    free = unbalanced
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


def test_sequence_balance_loss_balances(tandem, tmp_path, bpe_data, unbalanced):
    alpha = run(tandem, bpe_data, tmp_path / "a", 0.0, alpha=0.01)
    assert "balance_loss" not in unbalanced[-1]  # alpha = 0: nothing in the graph
    # 3 MoE layers (the MTP block's included): sum_i f_i P_i is 1 per layer when balanced, more when not.
    assert all(2.9 < m["balance_loss"] < 4.0 for m in alpha)
    with_alpha, without = imbalance(alpha), imbalance(unbalanced)
    print(f"max/mean expert load over the last 100 steps: alpha=0.01 {with_alpha:.3f}, alpha=0 {without:.3f} (gamma=0)")
    assert with_alpha < 0.8 * without
    # The language-model loss does not pay for it at this alpha.
    assert abs(np.mean([m["loss"] for m in alpha[-50:]]) - np.mean([m["loss"] for m in unbalanced[-50:]])) < 0.05


def test_mtp_weight_zero_leaves_mtp_out(tandem, tmp_path, bpe_data):
    """lambda = 0: the MTP modules are not trained (no gradient reaches them) but stay in the
    checkpoint, unchanged from their initial values across steps."""
    import safetensors.numpy
    args = ["train", "--config", "ds-tiny", "--data", bpe_data, "--out", tmp_path, *SMALL,
            "--set", "mtp_loss_weight=0", "--checkpoint-every", "2"]
    tandem(*args, "--steps", "4")
    a = safetensors.numpy.load_file(str(tmp_path / "checkpoints" / "step_2" / "model.safetensors"))
    b = safetensors.numpy.load_file(str(tmp_path / "checkpoints" / "step_4" / "model.safetensors"))
    mtp = [k for k in a if k.startswith("model.layers.3.")]  # SMALL has 3 main layers; layer 3 is MTP
    assert mtp and all(np.array_equal(a[k], b[k]) for k in mtp)
    assert not np.array_equal(a["model.embed_tokens.weight"], b["model.embed_tokens.weight"])
    metrics = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("mtp_loss" not in m for m in metrics)
