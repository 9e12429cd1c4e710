"""DeepSeek-V3 against transformers' DeepseekV3ForCausalLM (fp32, CPU), both directions.

Metric: max|tandem - hf| / max|hf| per tensor. Logits 1e-4, every parameter gradient 1e-3
(torch autograd on the same batch), expert selections identical (as sets per token).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file

from conftest import max_rel_err


def tiny_config(**over):
    from transformers import DeepseekV3Config
    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
              num_attention_heads=2, num_key_value_heads=2, q_lora_rank=12, kv_lora_rank=8, qk_nope_head_dim=6,
              qk_rope_head_dim=4, v_head_dim=5, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
              first_k_dense_replace=1, n_group=4, topk_group=2, max_position_embeddings=64, routed_scaling_factor=2.5,
              num_nextn_predict_layers=0, rms_norm_eps=1e-6)
    kw.update(over)
    return DeepseekV3Config(**kw)


def hf_model(cfg, seed=0):
    from transformers import DeepseekV3ForCausalLM
    torch.manual_seed(seed)
    model = DeepseekV3ForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms and a routing bias that changes choices
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn_like(b))
    return model


def capture_routes(model):
    routes = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None:
            continue
        def hook(mod, args, out, i=i):
            routes[f"model.layers.{i}.mlp"] = out[2].detach().numpy()
        hooks.append(gate.register_forward_hook(hook))
    return routes, hooks


def run_tandem_grad(tandem, model_dir, ids, tmp_path):
    batch = tmp_path / "batch.safetensors"
    labels = np.roll(ids, -1, axis=1)
    save_file({"input_ids": torch.from_numpy(ids.astype(np.int32)), "labels": torch.from_numpy(labels.astype(np.int32))},
              str(batch))
    out = tmp_path / "out.safetensors"
    tandem("grad", "--model", model_dir, "--batch", batch, "--out", out)
    return load_np(str(out)), labels


@pytest.mark.parametrize("rope", ["default", "yarn"])
def test_transformers_checkpoint_in_tandem(tandem, tmp_path, rope):
    over = {}
    if rope == "yarn":
        over = dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                     "original_max_position_embeddings": 16, "beta_fast": 32.0, "beta_slow": 1.0,
                                     "mscale": 1.0, "mscale_all_dim": 0.8})
    cfg = tiny_config(**over)
    model = hf_model(cfg)
    model.save_pretrained(tmp_path / "hf")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, size=(2, 24))
    got, labels = run_tandem_grad(tandem, tmp_path / "hf", ids, tmp_path)

    routes, hooks = capture_routes(model)
    model.train()  # dropout is 0; train mode only enables autograd bookkeeping
    out = model(torch.from_numpy(ids), labels=None)
    logits = out.logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(labels).reshape(-1))
    loss.backward()
    for h in hooks:
        h.remove()

    assert max_rel_err(got["logits"], logits.detach().numpy()) < 1e-4
    assert abs(float(got["loss"][0]) - loss.item()) / loss.item() < 1e-5
    assert len(routes) == 2
    for name, want in routes.items():
        have = got["experts." + name]
        assert [set(r) for r in have.tolist()] == [set(r) for r in want.tolist()], name
    checked = 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        err = max_rel_err(got["grad." + name], p.grad.numpy())
        assert err < 1e-3, f"{name}: {err}"
        checked += 1
    assert checked == sum(1 for _ in model.parameters())


def test_tandem_checkpoint_in_transformers(tandem, tmp_path, session_tmp, shakespeare_path):
    from transformers import DeepseekV3ForCausalLM
    data = session_tmp / "ds-bpe"
    if not (data / "val.bin").exists():
        tandem("prepare", "--input", shakespeare_path, "--tokenizer", "bpe:300", "--out", data)
    run = tmp_path / "run"
    tandem("train", "--config", "ds-tiny", "--data", data, "--out", run, "--steps", "3", "--set", "hidden_size=32",
           "--set", "num_hidden_layers=3", "--set", "eval_interval=100", "--set", "eval_steps=1", "--set", "batch_size=2")
    ck = run / "checkpoints" / "step_3"
    cfg = json.loads((ck / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_v3" and cfg["num_nextn_predict_layers"] == 1
    model = DeepseekV3ForCausalLM.from_pretrained(ck).eval()
    ids = np.random.default_rng(1).integers(0, cfg["vocab_size"], size=(2, 20))
    got, _ = run_tandem_grad(tandem, ck, ids, tmp_path)
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    assert max_rel_err(got["logits"], want) < 1e-4
    assert "mtp_loss" in got


def test_unsupported_config_and_bad_tensors(tandem, tmp_path):
    cfg = tiny_config()
    model = hf_model(cfg)
    d = tmp_path / "hf"
    model.save_pretrained(d)
    ids = np.zeros((1, 4), dtype=np.int64)
    j = json.loads((d / "config.json").read_text())
    j["scoring_func"] = "softmax"
    (d / "config.json").write_text(json.dumps(j))
    batch = tmp_path / "b.safetensors"
    save_file({"input_ids": torch.zeros(1, 4, dtype=torch.int32), "labels": torch.zeros(1, 4, dtype=torch.int32)}, str(batch))
    r = tandem.run("grad", "--model", d, "--batch", batch, "--out", tmp_path / "o.safetensors")
    assert r.returncode != 0 and "scoring_func" in r.stderr, r.describe()
    j["scoring_func"] = "sigmoid"
    j["kv_lora_rank"] = 10  # tensors no longer fit
    (d / "config.json").write_text(json.dumps(j))
    r = tandem.run("grad", "--model", d, "--batch", batch, "--out", tmp_path / "o.safetensors")
    assert r.returncode != 0 and "kv_a_proj_with_mqa" in r.stderr, r.describe()


@pytest.mark.parametrize("arch", ["deepseek_v3", "gpt2"])
def test_import_export_round_trip(tandem, tmp_path, arch):
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=61, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
        cls = GPT2LMHeadModel
    else:
        from transformers import DeepseekV3ForCausalLM as cls
        model = hf_model(tiny_config())
    model.save_pretrained(tmp_path / "hf")
    r = tandem("import", "--from", tmp_path / "hf", "--out", tmp_path / "imported")
    assert "imported" in r.stdout
    tandem("export", "--model", tmp_path / "imported", "--format", "hf", "--out", tmp_path / "exported")
    back = cls.from_pretrained(tmp_path / "exported").eval()
    ids = torch.from_numpy(np.random.default_rng(2).integers(0, model.config.vocab_size, size=(1, 16)))
    with torch.no_grad():
        assert max_rel_err(back(ids).logits.numpy(), model(ids).logits.numpy()) < 1e-6
    # A directory that already holds files is never overwritten.
    r = tandem.run("export", "--model", tmp_path / "imported", "--out", tmp_path / "exported")
    assert r.returncode != 0 and "not empty" in r.stderr


def test_import_missing_or_misshapen_tensor(tandem, tmp_path):
    from safetensors.torch import load_file, save_file as save_pt
    model = hf_model(tiny_config())
    model.save_pretrained(tmp_path / "hf")
    f = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(str(f))
    name = "model.layers.1.mlp.experts.3.up_proj.weight"
    del tensors[name]
    save_pt(tensors, str(f))
    r = tandem.run("import", "--from", tmp_path / "hf", "--out", tmp_path / "x")
    assert r.returncode != 0 and name in r.stderr, r.describe()
    assert not (tmp_path / "x").exists()


def torch_balance_loss(router_logits, topk_indices, B, T, E, K):
    """DeepSeek-V3's sequence-wise balance loss (eqs. 17-20) before alpha, mean over the sequences:
    f_i = E/(K T) * #{t: i in top-K of token t}, P_i = 1/T sum_t s_it / sum_j s_jt, L = sum_i f_i P_i."""
    s = router_logits.sigmoid().view(B, T, E)
    P = (s / s.sum(-1, keepdim=True)).mean(1)
    counts = torch.zeros(B, E).scatter_add_(1, topk_indices.view(B, T * K), torch.ones(B, T * K))
    f = counts * E / (K * T)
    return (f * P).sum(-1).mean()


def test_balance_loss_matches_torch(tandem, tmp_path):
    """seq_aux_loss_alpha: tandem's balance_loss and every gradient of CE + alpha * L_bal against torch
    autograd on transformers' model, with L_bal written from the paper's formula on the router logits
    and top-k choices transformers computes. Bounds: the loss 1e-5 relative (f32 sums over B*T*E
    terms), gradients 1e-3 (as the other parity tests)."""
    alpha = 0.3
    cfg = tiny_config()
    model = hf_model(cfg)
    d = tmp_path / "hf"
    model.save_pretrained(d)
    j = json.loads((d / "config.json").read_text())
    j["seq_aux_loss_alpha"] = alpha
    (d / "config.json").write_text(json.dumps(j))
    B, T, E, K = 3, 16, cfg.n_routed_experts, cfg.num_experts_per_tok
    ids = np.random.default_rng(3).integers(0, cfg.vocab_size, size=(B, T))
    got, labels = run_tandem_grad(tandem, d, ids, tmp_path)

    router = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None:
            hooks.append(gate.register_forward_hook(lambda mod, args, out, i=i: router.__setitem__(i, out)))
    model.train()
    logits = model(torch.from_numpy(ids)).logits
    for h in hooks:
        h.remove()
    assert sorted(router) == [1, 2]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), torch.from_numpy(labels).reshape(-1))
    bal = sum(torch_balance_loss(out[0], out[2], B, T, E, K) for out in router.values())
    for i, out in router.items():
        have = got[f"experts.model.layers.{i}.mlp"]
        assert [set(r) for r in have.tolist()] == [set(r) for r in out[2].tolist()]

    # The balance term must matter to the gradients compared below (else the check proves nothing).
    gate_w = model.model.layers[1].mlp.gate.weight
    g_bal = torch.autograd.grad(alpha * bal, gate_w, retain_graph=True)[0]
    g_ce = torch.autograd.grad(ce, gate_w, retain_graph=True)[0]
    assert g_bal.abs().max() > 0.1 * g_ce.abs().max(), (g_bal.abs().max(), g_ce.abs().max())

    (ce + alpha * bal).backward()
    print(f"balance_loss: tandem {float(got['balance_loss'][0]):.7f}, torch {bal.item():.7f}")
    assert abs(float(got["balance_loss"][0]) - bal.item()) / bal.item() < 1e-5
    assert abs(float(got["loss"][0]) - ce.item()) / ce.item() < 1e-5
    for name, p in model.named_parameters():
        err = max_rel_err(got["grad." + name], p.grad.numpy())
        assert err < 1e-3, f"{name}: {err}"
