// Fused causal self-attention on a packed projection, shared by shape rule, reference and kernels.
// qkv: [B, T, W] with W = H*d_qk (queries) + H*d_qk (keys) + H*d_v (values), head-major inside
// each part (GPT-2's c_attn layout; MLA concatenates its parts into it). out: [B, T, H*d_v].
// attention_grad(qkv, dout) returns d(qkv) in the same packed layout.
// attention_cached(qkv [B, Tn, W], cache [B, Tmax, H*(d_qk+d_v)], cache_len [B] i32) is the
// decoding form: sequence b's Tn new tokens sit at positions cache_len[b].. and attend to its
// cached keys and values and to each other (causally). It is a state op: besides its output it
// writes the new keys and values into cache rows [cache_len[b], cache_len[b] + Tn) of sequence b.
// Sequences of one batch may have different lengths (continuous batching). Inference only.
#pragma once
#include "core/graph.h"

namespace tandem {

struct AttentionDims {
  int64_t B, T, H, dqk, dv, W;
  int64_t q_off(int64_t h) const { return h * dqk; }
  int64_t k_off(int64_t h) const { return H * dqk + h * dqk; }
  int64_t v_off(int64_t h) const { return 2 * H * dqk + h * dv; }
};

AttentionDims attention_dims(const Node& node, const Shape& qkv);

}  // namespace tandem
