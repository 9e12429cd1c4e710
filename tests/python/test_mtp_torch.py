"""DeepSeek-V3 multi-token prediction (MTP) against an independent PyTorch implementation.

transformers has no MTP training, so the reference is written here from the DeepSeek-V3 report
(section 2.2, eqs. 21-25), on top of transformers' own DeepSeek-V3 pieces:

- the main model is transformers' DeepseekV3ForCausalLM; h^0 is its last hidden state, taken
  before its final norm (a hook on `model.norm`);
- module k (k = 1..D) works on positions i = 1..T-k of the sequence t_1..t_{T+1} (the batch's
  input_ids followed by the last label): h'_i = M_k [RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k-1}_i)]
  (eq. 21), h^k_{1:T-k} = TRM_k(h'_{1:T-k}) (eq. 22: the block runs on the truncated sequence,
  where tandem pads and masks), P^k = OutHead(h^k) (eq. 23) with the embedding and output head
  shared with the main model and the module's own norm before the head (`shared_head.norm`);
  TRM_k is a transformers DeepseekV3Model of one MoE layer fed `inputs_embeds`, whose final norm
  is that `shared_head.norm`;
- L^k = cross-entropy of P^k against t_{i+k+1}, averaged over the T-k predicted positions of every
  sequence (eq. 24 writes a 1/T factor in front of the T-k terms; tandem, like Megatron-LM's MTP,
  averages over the positions that have a target), L_MTP = lambda / D * sum_k L^k (eq. 25), and the
  objective is L_main + L_MTP.
- Where the report leaves a choice open, the reference follows DeepSeek's released checkpoints as
  vLLM and SGLang load them (docs/deepseek.md): the concatenation is [enorm(embedding) ;
  hnorm(hidden)] (eq. 21 writes the hidden state first; the eh_proj columns of the released
  weights put the embedding first).

The reference runs in float64. Checked (metric max|tandem - ref| / max|ref| per tensor): the main
loss and mtp_loss within 1e-5, logits within 1e-5, every parameter gradient (the MTP modules'
included) within 1e-4, and the MTP blocks' expert choices identical (as sets per token).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file as load_np
from safetensors.torch import load_file, save_file

from conftest import max_rel_err

LAMBDA = 0.5
B, T = 2, 12
L = 2  # main layers: layer 0 dense, layer 1 MoE


def config(**over):
    from transformers import DeepseekV3Config
    kw = dict(vocab_size=97, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=L,
              num_attention_heads=2, num_key_value_heads=2, q_lora_rank=12, kv_lora_rank=8, qk_nope_head_dim=6,
              qk_rope_head_dim=4, v_head_dim=5, n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
              first_k_dense_replace=1, n_group=4, topk_group=2, max_position_embeddings=64, routed_scaling_factor=2.5,
              rms_norm_eps=1e-6, tie_word_embeddings=False)
    kw.update(over)
    return DeepseekV3Config(**kw)


def perturb(module, g):
    """Non-trivial norms and a routing bias that changes choices."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))


class MTPModule(torch.nn.Module):
    """One MTP module: enorm, hnorm, eh_proj (M_k), the block TRM_k with its shared_head.norm."""

    def __init__(self, main_cfg, g):
        super().__init__()
        from transformers import DeepseekV3Model
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3RMSNorm
        H = main_cfg.hidden_size
        self.enorm = DeepseekV3RMSNorm(H, eps=main_cfg.rms_norm_eps)
        self.hnorm = DeepseekV3RMSNorm(H, eps=main_cfg.rms_norm_eps)
        self.eh_proj = torch.nn.Linear(2 * H, H, bias=False)
        with torch.no_grad():
            self.eh_proj.weight.copy_(0.1 * torch.randn(H, 2 * H, generator=g))
        block_cfg = config(num_hidden_layers=1, first_k_dense_replace=0)
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
        self.trm = DeepseekV3Model(block_cfg)  # one MoE layer; its `norm` is shared_head.norm
        perturb(self, g)

    def tandem_tensors(self, layer: int) -> dict[str, torch.Tensor]:
        pre = f"model.layers.{layer}."
        out = {pre + "enorm.weight": self.enorm.weight, pre + "hnorm.weight": self.hnorm.weight,
               pre + "eh_proj.weight": self.eh_proj.weight, pre + "shared_head.norm.weight": self.trm.norm.weight}
        for name, t in self.trm.layers[0].state_dict().items():
            out[pre + name] = t
        return out

    def tandem_params(self, layer: int) -> dict[str, torch.nn.Parameter]:
        pre = f"model.layers.{layer}."
        out = {pre + "enorm.weight": self.enorm.weight, pre + "hnorm.weight": self.hnorm.weight,
               pre + "eh_proj.weight": self.eh_proj.weight, pre + "shared_head.norm.weight": self.trm.norm.weight}
        for name, p in self.trm.layers[0].named_parameters():
            out[pre + name] = p
        return out


def reference(main, mtps, seq):
    """(logits, main loss, mtp loss, objective, expert choices of each MTP block) in float64."""
    ids, labels = seq[:, :-1], seq[:, 1:]
    V = main.config.vocab_size
    seen = {}
    hook = main.model.norm.register_forward_hook(lambda mod, args, out: seen.__setitem__("h", args[0]))
    logits = main(input_ids=ids).logits
    hook.remove()
    main_loss = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1))
    h_prev, losses, choices = seen["h"], [], []
    for k, mod in enumerate(mtps, start=1):
        n = T - k                                        # positions i = 1..T-k
        emb = main.model.embed_tokens(seq[:, k:k + n])   # t_{i+k}
        x = mod.eh_proj(torch.cat([mod.enorm(emb), mod.hnorm(h_prev[:, :n])], dim=-1))
        got = {}
        hooks = [mod.trm.norm.register_forward_hook(lambda m_, a, o: got.__setitem__("h", a[0])),
                 mod.trm.layers[0].mlp.gate.register_forward_hook(lambda m_, a, o: got.__setitem__("route", o[2]))]
        normed = mod.trm(inputs_embeds=x).last_hidden_state  # shared_head.norm(TRM_k(x))
        for h in hooks:
            h.remove()
        logits_k = main.lm_head(normed)                  # the shared output head
        losses.append(F.cross_entropy(logits_k.reshape(-1, V), seq[:, k + 1:k + 1 + n].reshape(-1)))
        choices.append(got["route"].reshape(B, n, -1))
        h_prev = got["h"]
    mtp_loss = sum(losses) / len(losses)
    return logits, main_loss, mtp_loss, main_loss + LAMBDA * mtp_loss, choices


@pytest.mark.parametrize("depth", [1, 2])
def test_mtp_loss_and_gradients_match_reference(tandem, tmp_path, depth):
    from transformers import DeepseekV3ForCausalLM
    g = torch.Generator().manual_seed(depth)
    cfg = config(num_nextn_predict_layers=depth)
    torch.manual_seed(depth)
    main = DeepseekV3ForCausalLM(cfg)
    perturb(main, g)
    mtps = [MTPModule(cfg, g) for _ in range(depth)]

    d = tmp_path / "model"
    main.save_pretrained(d)
    tensors = load_file(str(d / "model.safetensors"))
    for k, mod in enumerate(mtps):
        tensors.update({n: t.detach().contiguous() for n, t in mod.tandem_tensors(L + k).items()})
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    assert json.loads((d / "config.json").read_text())["num_nextn_predict_layers"] == depth

    seq = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)
    batch = tmp_path / "batch.safetensors"
    save_file({"input_ids": seq[:, :-1].to(torch.int32).contiguous(), "labels": seq[:, 1:].to(torch.int32).contiguous()},
              str(batch))
    out = tmp_path / "out.safetensors"
    tandem("grad", "--model", d, "--batch", batch, "--out", out, "--set", f"mtp_loss_weight={LAMBDA}")
    got = load_np(str(out))

    # float64 throughout: the experts' eager loop (torch's grouped_mm has no float64 kernel).
    for m in [main, *(mod.trm for mod in mtps)]:
        m.config._experts_implementation = "eager"
    main.double().train()  # dropout is 0; train mode only enables autograd bookkeeping
    for mod in mtps:
        mod.double().train()
    logits, main_loss, mtp_loss, objective, choices = reference(main, mtps, seq)
    objective.backward()

    assert max_rel_err(got["logits"], logits.detach().numpy()) <= 1e-5
    assert abs(float(got["loss"][0]) - main_loss.item()) <= 1e-5 * main_loss.item()
    print(f"depth {depth}: mtp_loss tandem {float(got['mtp_loss'][0]):.7f}, reference {mtp_loss.item():.7f}")
    assert abs(float(got["mtp_loss"][0]) - mtp_loss.item()) <= 1e-5 * mtp_loss.item()
    for k, want in enumerate(choices):
        have = got[f"experts.model.layers.{L + k}.mlp"].reshape(B, T, -1)[:, :T - k - 1]
        assert [set(r) for r in have.reshape(-1, have.shape[-1]).tolist()] == \
               [set(r) for r in want.reshape(-1, want.shape[-1]).tolist()], f"MTP block {k + 1} routing"

    params = dict(main.named_parameters())
    for k, mod in enumerate(mtps):
        params.update(mod.tandem_params(L + k))
    expected = {n for n in got if n.startswith("grad.")}
    assert expected == {"grad." + n for n in params}, expected ^ {"grad." + n for n in params}
    errors = {n: max_rel_err(got["grad." + n], p.grad.numpy()) for n, p in params.items()}
    worst = max(errors, key=errors.get)
    print(f"depth {depth}: worst gradient {worst} {errors[worst]:.2e}")
    bad = {n: e for n, e in errors.items() if e > 1e-4}
    assert not bad, "gradients beyond 1e-4 max-rel: " + ", ".join(f"{n}={e:.3g}" for n, e in bad.items())
    # The MTP modules carry real gradient (the check above is not comparing zeros with zeros).
    assert all(np.abs(got[f"grad.model.layers.{L + k}.eh_proj.weight"]).max() > 0 for k in range(depth))
