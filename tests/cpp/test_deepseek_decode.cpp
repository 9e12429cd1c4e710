// Decoding DeepSeek-V3 on its latent KV cache (one token at a time, absorbed MLA) gives the same
// logits as recomputing the whole sequence with full attention: 64 steps, relative error <= 1e-5
// (max |a - b| / max |b| per step).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "core/backend.h"
#include "core/program.h"
#include "models/deepseek_v3.h"
#include "models/params.h"

using namespace tandem;

TEST(DeepseekDecode, LatentCacheMatchesFullRecomputation) {
  DeepseekV3Config c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.moe_intermediate_size = 16;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 2;
  c.q_lora_rank = 12;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 6;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 5;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.first_k_dense_replace = 1;
  c.n_group = 4;
  c.topk_group = 2;
  c.num_nextn_predict_layers = 0;
  c.max_position_embeddings = 80;
  c.yarn_factor = 2.0;  // exercise YaRN's frequencies and softmax scale on the decode path too
  c.yarn_original_max_position = 40;
  c.yarn_mscale = 1.0;
  c.yarn_mscale_all_dim = 1.0;
  DeepseekV3 model(c);
  auto cpu = make_backend("cpu");
  ParamStore params = ParamStore::init(model, *cpu, 7);
  constexpr int64_t T = 65;
  std::mt19937 rng(3);
  std::vector<int32_t> ids(T);
  for (auto& v : ids) v = static_cast<int32_t>(rng() % c.vocab_size);

  // Full recomputation: one causal pass over all T tokens.
  Graph full;
  ModelNodes fn = model.build(full, 1, T, GraphMode::logits);
  Program fp(full, *cpu, {fn.logits});
  params.bind(fp, fn);
  std::vector<int32_t> pos(T);
  std::iota(pos.begin(), pos.end(), 0);
  fp.bind(fn.input_ids, Tensor::from_host_i32(*cpu, {1, T}, ids));
  fp.bind(fn.position_ids, Tensor::from_host_i32(*cpu, {T}, pos));
  fp.run();
  const std::vector<float> want = fp.get(fn.logits).to_host();

  // Token by token on the latent cache.
  Graph dec;
  ModelNodes dn = model.build(dec, 1, 1, GraphMode::decode);
  Program dp(dec, *cpu, {dn.logits});
  params.bind(dp, dn);
  for (NodeId cache : dn.kv_caches) dp.bind(cache, Tensor::zeros(*cpu, model.kv_cache_shape(1), DType::f32));
  Tensor tok = Tensor::zeros(*cpu, {1, 1}, DType::i32), p = Tensor::zeros(*cpu, {1, 1}, DType::i32),
         len = Tensor::zeros(*cpu, {1}, DType::i32);
  dp.bind(dn.input_ids, tok);
  dp.bind(dn.position_ids, p);
  dp.bind(dn.cache_len, len);
  const int64_t V = c.vocab_size;
  double worst = 0;
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> one{ids[static_cast<size_t>(t)]}, at{static_cast<int32_t>(t)};
    tok.copy_from_host_i32(one);
    p.copy_from_host_i32(at);
    len.copy_from_host_i32(at);
    dp.run();
    const std::vector<float> got = dp.get(dn.logits).to_host();
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < V; ++v) {
      diff = std::max(diff, static_cast<double>(std::abs(got[static_cast<size_t>(v)] - want[static_cast<size_t>(t * V + v)])));
      scale = std::max(scale, static_cast<double>(std::abs(want[static_cast<size_t>(t * V + v)])));
    }
    worst = std::max(worst, diff / scale);
  }
  EXPECT_LE(worst, 1e-5);
  RecordProperty("max_rel_error", std::to_string(worst));
  // The latent cache is the point: (kv_lora_rank + rope dim) floats per layer and token instead of
  // per-head keys and values.
  EXPECT_EQ(model.kv_cache_bytes_per_token(), 3 * (8 + 4) * 4);
  EXPECT_EQ(model.full_kv_bytes_per_token(), 3 * 2 * (10 + 5) * 4);
}

// Serving with --weights bf16 | q8_0 converts the weight matrices at load, except the MoE router
// (kept f32, as llama.cpp keeps ffn_gate_inp): rounding it tips near-tied expert choices.
TEST(DeepseekWeights, RouterStaysF32UnderConvertedWeights) {
  tandem::DeepseekV3Config c;
  c.hidden_size = 64;
  c.intermediate_size = 64;
  c.moe_intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.first_k_dense_replace = 1;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  c.n_group = 1;
  c.topk_group = 1;
  c.num_nextn_predict_layers = 0;  // (an MTP module would add a second router)
  tandem::DeepseekV3 model(c);
  for (tandem::DType dt : {tandem::DType::bf16, tandem::DType::q8_0}) {
    model.set_weight_dtype(dt);
    int routers = 0, converted = 0;
    for (const auto& s : model.param_specs()) {
      const tandem::DType got = model.param_dtype(s);
      if (s.name.ends_with("mlp.gate.weight")) {
        ++routers;
        EXPECT_EQ(got, tandem::DType::f32) << s.name;
      } else if (s.name.ends_with("mlp.gate_proj.weight")) {  // the dense layer's [64, 64]
        ++converted;
        EXPECT_EQ(got, dt) << s.name;
      }
    }
    EXPECT_EQ(routers, 1);
    EXPECT_EQ(converted, 1);
  }
}
