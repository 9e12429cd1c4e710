"""A float64 forward of a GGUF file (llama.cpp's `gpt2` and `deepseek2` graphs), independent of
tandem and of llama.cpp: the weights are what gguf-py dequantizes the file's tensors to.

Two arithmetics on the same weights:
  - exact: every activation kept (tandem's: it dequantizes q8_0 / widens bf16 weights exactly and
    multiplies with f32 activations);
  - ggml: what llama.cpp's CPU backend does on top of the weights: the input of every matmul whose
    weight is Q8_0 is itself quantized to q8_0 (blocks of 32 along the dot product, an fp16 scale
    amax/127, values rounded to nearest even; ggml's quantize_row_q8_0 for vec_dot_q8_0_q8_0), the
    input of a BF16 weight's matmul rounded to bf16 (vec_dot_bf16), and GELU read from ggml's fp16
    table (GGML_GELU_FP16).
`forward` also records each MoE layer's routing (chosen experts and the scores that chose them), so
two forwards can be compared for tokens whose expert choice flipped.
Used by bench/gguf_interop.py.
"""
from __future__ import annotations

import numpy as np
import gguf

QT = gguf.GGMLQuantizationType


def _f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float64)


def q8_0_activations(x: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_0 along the last axis (a multiple of 32), dequantized, in float64."""
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.max(np.abs(b), axis=1, keepdims=True)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, np.float32(1)), np.float32(0))
    q = np.rint(b * inv.astype(np.float32))  # AVX: _mm256_round_ps(_MM_ROUND_NEAREST), ties to even
    return (q.astype(np.float64) * _f16(amax / np.float32(127))).reshape(x.shape)


def bf16_activations(x: np.ndarray) -> np.ndarray:
    """f32 -> bf16, round to nearest even (GGML_FP32_TO_BF16), back to float64."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)


def _gelu(x):  # the tanh approximation ggml and GPT-2 use
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _silu(x):
    return x / (1 + np.exp(-x))


class Reference:
    def __init__(self, path, arithmetic: str = "exact"):
        assert arithmetic in ("exact", "ggml")
        self.ggml = arithmetic == "ggml"
        r = gguf.GGUFReader(str(path))
        arch_field = r.fields["general.architecture"]
        self.arch = bytes(arch_field.parts[arch_field.data[0]]).decode()
        self.kv = {}
        for f in r.fields.values():
            if f.name.startswith(self.arch + ".") and f.types and f.types[0] != gguf.GGUFValueType.STRING:
                v = f.parts[f.data[0]]
                self.kv[f.name[len(self.arch) + 1:]] = v.tolist()[0]
        self.W, self.type = {}, {}
        for t in r.tensors:
            shape = tuple(int(x) for x in reversed(t.shape))
            self.W[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
            self.type[t.name] = t.tensor_type

    # x [..., in] times the weight named `name` ([out, in]; `w` a slice of it, e.g. one head or expert)
    def mm(self, name, x, w=None):
        if self.ggml and self.type[name] == QT.Q8_0:
            x = q8_0_activations(x)
        elif self.ggml and self.type[name] == QT.BF16:
            x = bf16_activations(x)
        return x @ (self.W[name] if w is None else w).T

    def gelu(self, x):
        if not self.ggml:
            return _gelu(x)
        y = _f16(_gelu(_f16(x)))
        return np.where(x <= -10, 0.0, np.where(x >= 10, x, y))

    def forward(self, ids) -> np.ndarray:
        """Logits [T, vocab] of the prompt `ids` (positions 0..T-1)."""
        self.routes = {}  # MoE layer -> (chosen experts [T, k] sorted, each token's decision margin [T])
        ids = np.asarray(ids)
        return self._gpt2(ids) if self.arch == "gpt2" else self._deepseek2(ids)

    @staticmethod
    def _attention(q, k, v, scale):  # q [h, T, d], k [h|1, T, d], v [h|1, T, dv]
        T = q.shape[1]
        s = q @ np.swapaxes(k, -1, -2) * scale + np.triu(np.full((T, T), -np.inf), 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        return (p / p.sum(-1, keepdims=True)) @ v

    def _gpt2(self, ids):
        W, kv = self.W, self.kv
        eps, nh = kv["attention.layer_norm_epsilon"], kv["attention.head_count"]

        def norm(x, p):
            m = x - x.mean(-1, keepdims=True)
            return m / np.sqrt((m * m).mean(-1, keepdims=True) + eps) * W[p + ".weight"] + W[p + ".bias"]

        def lin(p, x):
            return self.mm(p + ".weight", x) + W[p + ".bias"]

        T = len(ids)
        x = W["token_embd.weight"][ids] + W["position_embd.weight"][:T]
        C = x.shape[1]
        for l in range(kv["block_count"]):
            p = f"blk.{l}."
            qkv = lin(p + "attn_qkv", norm(x, p + "attn_norm"))
            q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, nh, -1).transpose(1, 0, 2) for i in range(3))
            a = self._attention(q, k, v, 1 / np.sqrt(C // nh)).transpose(1, 0, 2).reshape(T, C)
            x = x + lin(p + "attn_output", a)
            x = x + lin(p + "ffn_down", self.gelu(lin(p + "ffn_up", norm(x, p + "ffn_norm"))))
        return self.mm("output.weight", norm(x, "output_norm"))

    def _deepseek2(self, ids):
        W, kv = self.W, self.kv
        eps = kv["attention.layer_norm_rms_epsilon"]

        def rms(x, name):
            return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * W[name]

        def rope(x, pos):  # adjacent pairs (llama.cpp's LLAMA_ROPE_TYPE_NORM for deepseek2)
            d = x.shape[-1]
            theta = pos[:, None] * kv["rope.freq_base"] ** (-np.arange(0, d, 2) / d)
            c, s = np.cos(theta), np.sin(theta)
            out = np.empty_like(x)
            out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
            out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
            return out

        assert "rope.scaling.factor" not in kv, "the reference has no YaRN"
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        nh, r, dk = kv["attention.head_count"], kv["attention.kv_lora_rank"], kv["attention.key_length_mla"]
        nope = dk - kv["rope.dimension_count"]
        x = W["token_embd.weight"][ids]
        for l in range(kv["block_count"]):
            p = f"blk.{l}."
            h = rms(x, p + "attn_norm.weight")
            if p + "attn_q_a.weight" in W:
                q = self.mm(p + "attn_q_b.weight", rms(self.mm(p + "attn_q_a.weight", h), p + "attn_q_a_norm.weight"))
            else:
                q = self.mm(p + "attn_q.weight", h)
            q = q.reshape(T, nh, dk).transpose(1, 0, 2)  # [nh, T, nope + rope]
            ckv = self.mm(p + "attn_kv_a_mqa.weight", h)
            c = rms(ckv[:, :r], p + "attn_kv_a_norm.weight")  # the latent: keys and values of every head
            k_pe = rope(ckv[:, r:], pos)
            # MLA as llama.cpp computes it: q_nope absorbed into the latent through k_b, attention over
            # [latent, rope] keys, the latent output expanded per head through v_b.
            kb, vb = W[p + "attn_k_b.weight"], W[p + "attn_v_b.weight"]  # [nh, r, nope], [nh, vd, r]
            q_lat = np.stack([self.mm(p + "attn_k_b.weight", q[i, :, :nope], kb[i]) for i in range(nh)])
            qk = np.concatenate([q_lat, rope(q[..., nope:], pos)], -1)
            o_lat = self._attention(qk, np.concatenate([c, k_pe], -1)[None], c[None], 1 / np.sqrt(dk))
            o = np.stack([self.mm(p + "attn_v_b.weight", o_lat[i], vb[i]) for i in range(nh)])
            x = x + self.mm(p + "attn_output.weight", o.transpose(1, 0, 2).reshape(T, -1))
            h = rms(x, p + "ffn_norm.weight")
            if p + "ffn_gate_inp.weight" in W:
                y = self._moe(l, h)
            else:
                y = self.mm(p + "ffn_down.weight", _silu(self.mm(p + "ffn_gate.weight", h)) * self.mm(p + "ffn_up.weight", h))
            x = x + y
        return self.mm("output.weight", rms(x, "output_norm.weight"))

    def _moe(self, l, h):
        """Sigmoid gating, selection bias, grouped routing (a group scored by its top two), top-k,
        weights normalized and scaled: llama.cpp's build_moe_ffn for deepseek2."""
        W, kv, p = self.W, self.kv, f"blk.{l}."
        E, k = kv["expert_count"], kv["expert_used_count"]
        G, Gu = kv.get("expert_group_count", 1), kv.get("expert_group_used_count", 1)
        assert kv.get("expert_gating_func") == 2, "the reference gates with sigmoid only"
        probs = 1 / (1 + np.exp(-self.mm(p + "ffn_gate_inp.weight", h)))
        sel = probs + W[p + "exp_probs_b.bias"]
        T, per = h.shape[0], E // G
        chosen, margin = np.zeros((T, k), dtype=int), np.full(T, np.inf)
        for t in range(T):
            masked = np.full(E, -np.inf)
            if G > 1 and Gu < G:
                groups = sel[t].reshape(G, per)
                group_scores = np.sort(groups, 1)[:, -2:].sum(1)
                order = np.argsort(-group_scores, kind="stable")
                for g in order[:Gu]:
                    masked[g * per:(g + 1) * per] = groups[g]
                margin[t] = group_scores[order[Gu - 1]] - group_scores[order[Gu]]
            else:
                masked = sel[t]
            order = np.argsort(-masked, kind="stable")
            chosen[t] = np.sort(order[:k])
            if np.isfinite(masked[order[k]]):
                margin[t] = min(margin[t], masked[order[k - 1]] - masked[order[k]])
        # margin: how far the decision is from a tie (the smaller gap of the last chosen group and
        # expert over the first one left out), in selection-score units
        self.routes[l] = (chosen, margin)
        y = np.zeros_like(h)
        gate, up, down = (W[p + f"ffn_{n}_exps.weight"] for n in ("gate", "up", "down"))
        for t in range(T):
            w = probs[t, chosen[t]]
            if kv.get("expert_weights_norm", False):
                w = w / w.sum()
            w = w * (kv.get("expert_weights_scale", 0.0) or 1.0)
            for j, e in enumerate(chosen[t]):
                a = _silu(self.mm(p + "ffn_gate_exps.weight", h[t], gate[e])) * self.mm(p + "ffn_up_exps.weight", h[t], up[e])
                y[t] += w[j] * self.mm(p + "ffn_down_exps.weight", a, down[e])
        if p + "ffn_gate_shexp.weight" in W:
            y += self.mm(p + "ffn_down_shexp.weight",
                         _silu(self.mm(p + "ffn_gate_shexp.weight", h)) * self.mm(p + "ffn_up_shexp.weight", h))
        return y
