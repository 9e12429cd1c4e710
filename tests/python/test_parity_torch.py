"""Numerical parity of tandem with the PyTorch reference (reference/torch_gpt.py), fp32.

Metric everywhere: max|tandem - reference| / max|reference| (per tensor).
  logits, loss:            <= 1e-5
  every parameter grad:    <= 1e-4
  10 AdamW steps, losses:  <= 1e-5 (same batch, constant LR)

The reference itself is checked against transformers' GPT2LMHeadModel and against a literal
implementation of the optimizer spec, so these tests do not need the tandem binary. The
tandem-driven tests need build/tandem (or $TANDEM_BIN) and fail when it is missing.
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
from torch_gpt import (GPT, GPTConfig, Batches, clip_grads, get_lr, load_config, make_adamw,
                       read_shard)

CFG = GPTConfig(vocab_size=65, n_positions=32, n_embd=64, n_layer=2, n_head=4)
B, T = 3, 16
OPT = dict(learning_rate=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.99, adam_eps=1e-8,
           grad_clip=1.0)
N_STEPS = 10


def random_model(cfg: GPTConfig = CFG, seed: int = 0) -> GPT:
    """Random init, std 0.02 for weights, and nonzero biases / LayerNorm params so that every
    gradient path is exercised."""
    g = torch.Generator().manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if ".ln_" in name or "ln_f" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.02 * noise)
            else:
                p.copy_(0.02 * noise)
    return model


def random_batch(cfg: GPTConfig = CFG, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def hf_config_json(cfg: GPTConfig) -> dict:
    return dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=cfg.vocab_size,
                n_positions=cfg.n_positions, n_ctx=cfg.n_positions, n_embd=cfg.n_embd,
                n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=None,
                activation_function="gelu_new", layer_norm_epsilon=cfg.layer_norm_epsilon,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.02,
                bos_token_id=0, eos_token_id=0, tie_word_embeddings=True, torch_dtype="float32")


def save_model_dir(model: GPT, path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf_config_json(model.config), indent=2))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              str(path / "model.safetensors"), metadata={"format": "pt"})


def reference_grads(model: GPT, x, y):
    model.zero_grad(set_to_none=True)
    logits, loss = model(x, y)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return logits.detach(), loss.detach(), grads


def reference_losses(model: GPT, x, y, opt_cfg: dict, steps: int) -> list[float]:
    """`tandem grad --steps N` semantics: N AdamW updates on one batch, constant LR, clipping
    before each update; returns the loss before each update."""
    cfg = dict(opt_cfg)
    opt = make_adamw(model, cfg)
    model.zero_grad(set_to_none=True)
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        loss.backward()
        losses.append(loss.item())
        clip_grads(model, cfg["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
    return losses


# ---------------------------------------------------------------------------------------------
# The reference on its own

def test_reference_matches_transformers():
    from transformers import GPT2Config, GPT2LMHeadModel
    model = random_model()
    hc = hf_config_json(CFG)
    hc.pop("model_type"), hc.pop("architectures"), hc.pop("torch_dtype")
    hf = GPT2LMHeadModel(GPT2Config(**hc)).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" or k.endswith(".attn.bias") or "masked_bias" in k
               for k in missing), missing
    hf.tie_weights()
    x, y = random_batch()
    logits, loss, grads = reference_grads(model, x, y)
    out = hf(x)
    hf_loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, CFG.vocab_size),
                                                y.reshape(-1))
    hf_loss.backward()
    assert max_rel_err(logits, out.logits.detach()) <= 1e-5
    assert abs(loss.item() - hf_loss.item()) <= 1e-5 * abs(hf_loss.item())
    hf_params = dict(hf.named_parameters())
    assert set(grads) == set(hf_params), set(grads) ^ set(hf_params)
    for name, g in grads.items():
        err = max_rel_err(g, hf_params[name].grad)
        assert err <= 1e-4, f"{name}: {err:.3g}"


def _spec_adamw_steps(model: GPT, x, y, c: dict, steps: int) -> list[float]:
    """Literal transcription of tandem's optimizer spec, for checking the reference."""
    params = dict(model.named_parameters())
    m = {n: torch.zeros_like(p) for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    losses = []
    for t in range(1, steps + 1):
        model.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        losses.append(loss.item())
        with torch.no_grad():
            norm = math.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in params.values()))
            scale = min(1.0, c["grad_clip"] / (norm + 1e-6)) if c["grad_clip"] > 0 else 1.0
            lr = c["learning_rate"]
            for n, p in params.items():
                g = p.grad * scale
                if p.dim() >= 2:
                    p.mul_(1 - lr * c["weight_decay"])
                m[n].mul_(c["beta1"]).add_(g, alpha=1 - c["beta1"])
                v[n].mul_(c["beta2"]).addcmul_(g, g, value=1 - c["beta2"])
                mhat = m[n] / (1 - c["beta1"] ** t)
                vhat = v[n] / (1 - c["beta2"] ** t)
                p.sub_(lr * mhat / (vhat.sqrt() + c["adam_eps"]))
    return losses


@pytest.mark.parametrize("grad_clip", [1.0, 0.05, 0.0])
def test_reference_adamw_matches_spec(grad_clip):
    c = dict(OPT, grad_clip=grad_clip, learning_rate=3e-3)
    x, y = random_batch()
    a, b = random_model(), random_model()
    got = reference_losses(a, x, y, c, N_STEPS)
    want = _spec_adamw_steps(b, x, y, c, N_STEPS)
    assert max_rel_err(got, want) <= 1e-5, (got, want)
    C = CFG.n_embd
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        p, q = p.detach(), q.detach()
        if n.endswith("attn.c_attn.bias"):
            # The key bias has a mathematically zero gradient (softmax is shift invariant), so
            # Adam turns rounding noise into arbitrary updates there; it cannot affect the loss.
            p, q = torch.cat([p[:C], p[2 * C:]]), torch.cat([q[:C], q[2 * C:]])
        assert max_rel_err(p, q) <= 1e-4, n
    assert got[-1] < got[0]


def test_lr_schedule_is_nanogpt():
    c = dict(learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, lr_decay_steps=2000)
    assert get_lr(0, c) == pytest.approx(1e-3 / 101)
    assert get_lr(99, c) == pytest.approx(1e-3 * 100 / 101)
    assert get_lr(100, c) == pytest.approx(1e-3)
    assert get_lr(1050, c) == pytest.approx(0.55e-3)
    assert get_lr(2000, c) == pytest.approx(1e-4)
    assert get_lr(2001, c) == 1e-4


def test_config_presets_and_overrides():
    c = load_config("baby-gpt", ["n_layer=2", "learning_rate=0.002"])
    assert (c["n_layer"], c["n_embd"], c["block_size"], c["batch_size"]) == (2, 128, 64, 12)
    assert c["learning_rate"] == 0.002 and c["adam_eps"] == 1e-8 and c["grad_accum"] == 1
    with pytest.raises(SystemExit):
        load_config("baby-gpt", ["no_such_key=1"])


def _write_shard(path, tokens, vocab, dtype_code=1, version=1, magic=b"TANDEMTK"):
    toks = np.asarray(tokens, dtype="<u2" if dtype_code == 1 else "<u4")
    head = bytearray(64)
    head[0:8] = magic
    head[8:12] = np.uint32(version).tobytes()
    head[12:16] = np.uint32(dtype_code).tobytes()
    head[16:24] = np.uint64(len(toks)).tobytes()
    head[32:36] = np.uint32(vocab).tobytes()
    path.write_bytes(bytes(head) + toks.tobytes())


def test_shard_reader_validates(tmp_path):
    good = tmp_path / "good.bin"
    _write_shard(good, np.arange(200) % 65, 65)
    toks, vocab = read_shard(str(good))
    assert vocab == 65 and len(toks) == 200 and int(toks[70]) == 5
    wide = tmp_path / "wide.bin"
    _write_shard(wide, [70000, 1, 2], 80000, dtype_code=2)
    assert list(read_shard(str(wide))[0]) == [70000, 1, 2]
    bad = tmp_path / "bad.bin"
    _write_shard(bad, [1, 2, 3], 65, magic=b"NOTATOKN")
    with pytest.raises(ValueError, match="magic"):
        read_shard(str(bad))
    _write_shard(bad, [1, 2, 3], 65, dtype_code=7)
    with pytest.raises(ValueError, match="dtype"):
        read_shard(str(bad))
    bad.write_bytes(good.read_bytes()[:-2])
    with pytest.raises(ValueError, match="size"):
        read_shard(str(bad))
    b = Batches(toks, 4, 8, seed=0)
    x, y = b.next()
    assert x.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])


# ---------------------------------------------------------------------------------------------
# tandem vs the reference

def _tandem_grad(tandem, tmp_path, model: GPT, x, y, *extra, ids_dtype=torch.int32):
    mdir = tmp_path / "model"
    save_model_dir(model, mdir)
    batch = tmp_path / "batch.safetensors"
    save_file({"input_ids": x.to(ids_dtype).contiguous(), "labels": y.to(ids_dtype).contiguous()},
              str(batch))
    out = tmp_path / "out.safetensors"
    tandem("grad", "--model", mdir, "--batch", batch, "--out", out, *extra)
    return load_np(str(out))


@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64])
def test_tandem_forward_backward_parity(tandem, tmp_path, ids_dtype):
    model = random_model()
    x, y = random_batch()
    res = _tandem_grad(tandem, tmp_path, model, x, y, ids_dtype=ids_dtype)
    logits, loss, grads = reference_grads(model, x, y)

    assert res["logits"].dtype == np.float32 and res["logits"].shape == (B, T, CFG.vocab_size)
    assert res["loss"].shape == (1,)
    err = max_rel_err(res["logits"], logits.numpy())
    assert err <= 1e-5, f"logits max-rel error {err:.3g}"
    err = max_rel_err(res["loss"], loss.reshape(1).numpy())
    assert err <= 1e-5, f"loss {res['loss'][0]} vs reference {loss.item()} ({err:.3g})"

    got = {k[len("grad."):] for k in res if k.startswith("grad.")}
    assert got == set(grads), f"grad tensors differ: missing {set(grads) - got}, extra {got - set(grads)}"
    errors = {n: max_rel_err(res["grad." + n], g.numpy()) for n, g in grads.items()}
    bad = {n: e for n, e in errors.items() if e > 1e-4}
    assert not bad, "gradients beyond 1e-4 max-rel: " + ", ".join(f"{n}={e:.3g}" for n, e in bad.items())


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_tandem_adamw_steps_parity(tandem, tmp_path, grad_clip):
    model = random_model()
    x, y = random_batch()
    c = dict(OPT, grad_clip=grad_clip)
    sets = [a for k in ("learning_rate", "weight_decay", "beta1", "beta2", "adam_eps", "grad_clip")
            for a in ("--set", f"{k}={c[k]!r}")]
    res = _tandem_grad(tandem, tmp_path, model, x, y, "--steps", str(N_STEPS), *sets)
    # Forward/backward outputs are on the initial weights, before any update.
    _, loss0, _ = reference_grads(model, x, y)
    assert max_rel_err(res["loss"], loss0.reshape(1).numpy()) <= 1e-5
    want = reference_losses(model, x, y, c, N_STEPS)
    assert "losses" in res and res["losses"].shape == (N_STEPS,)
    err = max_rel_err(res["losses"], np.array(want))
    assert err <= 1e-5, f"losses max-rel {err:.3g}\n tandem    {res['losses'].tolist()}\n reference {want}"
    assert want[-1] < want[0]
