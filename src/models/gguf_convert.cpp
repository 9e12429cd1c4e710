#include "models/gguf_convert.h"

#include <cstring>
#include <map>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "io/gguf.h"
#include "models/deepseek_v3.h"
#include "models/gpt2.h"

namespace fs = std::filesystem;

namespace tandem {

namespace {

using gguf::TensorType;
using gguf::Value;

// How a GGUF tensor is made from a tandem parameter (and back).
enum class Kind {
  copy,       // same values, same row-major shape
  transpose,  // 2-D transposed: transformers' Conv1D [in, out] -> llama.cpp's [out, in]
  k_b,        // DeepSeek kv_b_proj [nh * (nope + v), r] -> attn_k_b [nh, r, nope] (the K half, transposed per head)
  v_b,        //                                         -> attn_v_b [nh, v, r]   (the V half)
  gate_exps,  // fused experts gate_up_proj [E, 2I, H] -> ffn_gate_exps [E, I, H] (first half of each expert)
  up_exps,    //                                       -> ffn_up_exps [E, I, H]   (second half)
  tied,       // the output head written out from the tied embedding; on import it must equal it
};

struct Entry {
  std::string gguf;  // GGUF tensor name
  std::string param;  // tandem parameter (HF name)
  Shape shape;        // row-major shape in the GGUF file
  Kind kind = Kind::copy;
  int64_t split = 0;  // k_b/v_b: qk_nope_head_dim; gate/up: moe_intermediate_size
};

struct Arch {
  std::string name;
  std::vector<std::pair<std::string, Value>> keys;
  std::vector<Entry> entries;
};

std::string blk(int64_t l, const char* name) { return "blk." + std::to_string(l) + "." + name; }

Arch gpt2_arch(const GPT2& m) {
  const GPT2Config& c = m.config();
  const int64_t C = c.n_embd, V = c.vocab_size;
  Arch a{"gpt2", {}, {}};
  auto key = [&](const std::string& k, Value v) { a.keys.emplace_back("gpt2." + k, std::move(v)); };
  key("context_length", Value::u32(static_cast<uint32_t>(c.n_positions)));
  key("embedding_length", Value::u32(static_cast<uint32_t>(C)));
  key("feed_forward_length", Value::u32(static_cast<uint32_t>(4 * C)));
  key("block_count", Value::u32(static_cast<uint32_t>(c.n_layer)));
  key("attention.head_count", Value::u32(static_cast<uint32_t>(c.n_head)));
  key("attention.layer_norm_epsilon", Value::f32(c.layer_norm_epsilon));
  auto& e = a.entries;
  e.push_back({"token_embd.weight", "transformer.wte.weight", {V, C}});
  e.push_back({"position_embd.weight", "transformer.wpe.weight", {c.n_positions, C}});
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    e.push_back({blk(l, "attn_norm.weight"), h + "ln_1.weight", {C}});
    e.push_back({blk(l, "attn_norm.bias"), h + "ln_1.bias", {C}});
    e.push_back({blk(l, "attn_qkv.weight"), h + "attn.c_attn.weight", {3 * C, C}, Kind::transpose});
    e.push_back({blk(l, "attn_qkv.bias"), h + "attn.c_attn.bias", {3 * C}});
    e.push_back({blk(l, "attn_output.weight"), h + "attn.c_proj.weight", {C, C}, Kind::transpose});
    e.push_back({blk(l, "attn_output.bias"), h + "attn.c_proj.bias", {C}});
    e.push_back({blk(l, "ffn_norm.weight"), h + "ln_2.weight", {C}});
    e.push_back({blk(l, "ffn_norm.bias"), h + "ln_2.bias", {C}});
    e.push_back({blk(l, "ffn_up.weight"), h + "mlp.c_fc.weight", {4 * C, C}, Kind::transpose});
    e.push_back({blk(l, "ffn_up.bias"), h + "mlp.c_fc.bias", {4 * C}});
    e.push_back({blk(l, "ffn_down.weight"), h + "mlp.c_proj.weight", {C, 4 * C}, Kind::transpose});
    e.push_back({blk(l, "ffn_down.bias"), h + "mlp.c_proj.bias", {C}});
  }
  e.push_back({"output_norm.weight", "transformer.ln_f.weight", {C}});
  e.push_back({"output_norm.bias", "transformer.ln_f.bias", {C}});
  // Older llama.cpp loaders require `output` even when it is the tied embedding.
  e.push_back({"output.weight", "transformer.wte.weight", {V, C}, Kind::tied});
  return a;
}

Arch deepseek2_arch(const DeepseekV3& m) {
  const DeepseekV3Config& c = m.config();
  // llama.cpp takes a deepseek2 model with 26 or 27 layers for DeepSeek-V2-Lite, which has no query
  // compression: it then ignores q_lora_rank and loads attn_q; any other layer count loads
  // attn_q_a/attn_q_b. A model that disagrees would be misread, so it is refused here.
  const bool lite_layers = c.num_hidden_layers == 26 || c.num_hidden_layers == 27;
  check(lite_layers == (c.q_lora_rank == 0), "deepseek2 GGUF: llama.cpp reads a model with ",
        c.num_hidden_layers, " layers as ", lite_layers ? "the \"lite\" variant without" : "having",
        " query compression, but this model has q_lora_rank ", c.q_lora_rank,
        " (num_hidden_layers 26 or 27 go with q_lora_rank 0, other counts with q_lora_rank > 0)");
  check(c.rope_interleave, "deepseek2 GGUF: rope_interleave false is not expressible (llama.cpp rotates adjacent pairs)");
  check(c.yarn_factor <= 1.0 || c.yarn_mscale == c.yarn_mscale_all_dim, "deepseek2 GGUF: YaRN mscale (", c.yarn_mscale,
        ") must equal mscale_all_dim (", c.yarn_mscale_all_dim, "): llama.cpp has one yarn_log_multiplier");
  const int64_t H = c.hidden_size, nh = c.num_attention_heads, V = c.vocab_size, r = c.kv_lora_rank;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t E = c.n_routed_experts, Im = c.moe_intermediate_size, Is = Im * c.n_shared_experts;
  Arch a{"deepseek2", {}, {}};
  auto key = [&](const std::string& k, Value v) { a.keys.emplace_back("deepseek2." + k, std::move(v)); };
  auto u32 = [](int64_t v) { return Value::u32(static_cast<uint32_t>(v)); };
  key("block_count", u32(c.num_hidden_layers));
  key("context_length", u32(c.max_position_embeddings));
  key("embedding_length", u32(H));
  key("feed_forward_length", u32(c.intermediate_size));
  key("attention.head_count", u32(nh));
  key("attention.head_count_kv", u32(1));  // MLA as multi-query attention over the latent
  key("rope.freq_base", Value::f32(static_cast<float>(c.rope_theta)));
  key("attention.layer_norm_rms_epsilon", Value::f32(static_cast<float>(c.rms_norm_eps)));
  key("expert_used_count", u32(c.num_experts_per_tok));
  key("expert_group_count", u32(c.n_group));
  key("expert_group_used_count", u32(c.topk_group));
  key("vocab_size", u32(V));
  if (c.q_lora_rank > 0) key("attention.q_lora_rank", u32(c.q_lora_rank));
  key("attention.kv_lora_rank", u32(r));
  key("attention.key_length", u32(r + rope));
  key("attention.value_length", u32(r));
  key("attention.key_length_mla", u32(nope + rope));
  key("attention.value_length_mla", u32(vd));
  key("leading_dense_block_count", u32(c.first_k_dense_replace));
  key("expert_feed_forward_length", u32(Im));
  key("expert_count", u32(E));
  key("expert_shared_count", u32(c.n_shared_experts));
  key("expert_weights_scale", Value::f32(static_cast<float>(c.routed_scaling_factor)));
  key("expert_weights_norm", Value::boolean(c.norm_topk_prob));
  key("expert_gating_func", u32(2));  // LLAMA_EXPERT_GATING_FUNC_TYPE_SIGMOID (llama.cpp's default is softmax)
  key("rope.dimension_count", u32(rope));
  if (c.yarn_factor > 1.0) {
    key("rope.scaling.type", Value::str("yarn"));
    key("rope.scaling.factor", Value::f32(static_cast<float>(c.yarn_factor)));
    key("rope.scaling.original_context_length", u32(c.yarn_original_max_position));
    key("rope.scaling.yarn_log_multiplier", Value::f32(static_cast<float>(0.1 * c.yarn_mscale_all_dim)));
    key("rope.scaling.yarn_beta_fast", Value::f32(static_cast<float>(c.yarn_beta_fast)));
    key("rope.scaling.yarn_beta_slow", Value::f32(static_cast<float>(c.yarn_beta_slow)));
  }
  auto& e = a.entries;
  e.push_back({"token_embd.weight", "model.embed_tokens.weight", {V, H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {  // the MTP layers after them are left out
    const std::string p = "model.layers." + std::to_string(l) + ".";
    e.push_back({blk(l, "attn_norm.weight"), p + "input_layernorm.weight", {H}});
    if (c.q_lora_rank > 0) {
      e.push_back({blk(l, "attn_q_a.weight"), p + "self_attn.q_a_proj.weight", {c.q_lora_rank, H}});
      e.push_back({blk(l, "attn_q_a_norm.weight"), p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}});
      e.push_back({blk(l, "attn_q_b.weight"), p + "self_attn.q_b_proj.weight", {nh * (nope + rope), c.q_lora_rank}});
    } else {
      e.push_back({blk(l, "attn_q.weight"), p + "self_attn.q_proj.weight", {nh * (nope + rope), H}});
    }
    e.push_back({blk(l, "attn_kv_a_mqa.weight"), p + "self_attn.kv_a_proj_with_mqa.weight", {r + rope, H}});
    e.push_back({blk(l, "attn_kv_a_norm.weight"), p + "self_attn.kv_a_layernorm.weight", {r}});
    e.push_back({blk(l, "attn_k_b.weight"), p + "self_attn.kv_b_proj.weight", {nh, r, nope}, Kind::k_b, nope});
    e.push_back({blk(l, "attn_v_b.weight"), p + "self_attn.kv_b_proj.weight", {nh, vd, r}, Kind::v_b, nope});
    e.push_back({blk(l, "attn_output.weight"), p + "self_attn.o_proj.weight", {H, nh * vd}});
    e.push_back({blk(l, "ffn_norm.weight"), p + "post_attention_layernorm.weight", {H}});
    if (l < c.first_k_dense_replace) {
      e.push_back({blk(l, "ffn_gate.weight"), p + "mlp.gate_proj.weight", {c.intermediate_size, H}});
      e.push_back({blk(l, "ffn_up.weight"), p + "mlp.up_proj.weight", {c.intermediate_size, H}});
      e.push_back({blk(l, "ffn_down.weight"), p + "mlp.down_proj.weight", {H, c.intermediate_size}});
      continue;
    }
    e.push_back({blk(l, "ffn_gate_inp.weight"), p + "mlp.gate.weight", {E, H}});
    e.push_back({blk(l, "exp_probs_b.bias"), p + "mlp.gate.e_score_correction_bias", {E}});
    e.push_back({blk(l, "ffn_gate_exps.weight"), p + "mlp.experts.gate_up_proj", {E, Im, H}, Kind::gate_exps, Im});
    e.push_back({blk(l, "ffn_up_exps.weight"), p + "mlp.experts.gate_up_proj", {E, Im, H}, Kind::up_exps, Im});
    e.push_back({blk(l, "ffn_down_exps.weight"), p + "mlp.experts.down_proj", {E, H, Im}});
    if (c.n_shared_experts > 0) {
      e.push_back({blk(l, "ffn_gate_shexp.weight"), p + "mlp.shared_experts.gate_proj.weight", {Is, H}});
      e.push_back({blk(l, "ffn_up_shexp.weight"), p + "mlp.shared_experts.up_proj.weight", {Is, H}});
      e.push_back({blk(l, "ffn_down_shexp.weight"), p + "mlp.shared_experts.down_proj.weight", {H, Is}});
    }
  }
  e.push_back({"output_norm.weight", "model.norm.weight", {H}});
  if (c.tie_word_embeddings) e.push_back({"output.weight", "model.embed_tokens.weight", {V, H}, Kind::tied});
  else e.push_back({"output.weight", "lm_head.weight", {V, H}});
  return a;
}

Arch arch_of(const Model& model) {
  if (const auto* g = dynamic_cast<const GPT2*>(&model)) return gpt2_arch(*g);
  if (const auto* d = dynamic_cast<const DeepseekV3*>(&model)) return deepseek2_arch(*d);
  throw Error("GGUF: model type '" + model.type() + "' has no GGUF mapping (gpt2 and deepseek_v3 do)");
}

// The GGUF tensor's values from its parameter's (`p`, shaped `ps`).
std::vector<float> gather(const Entry& e, const std::vector<float>& p, const Shape& ps) {
  if (e.kind == Kind::copy || e.kind == Kind::tied) return p;
  std::vector<float> out(static_cast<size_t>(numel(e.shape)));
  if (e.kind == Kind::transpose) {
    const int64_t rows = ps[0], cols = ps[1];
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) out[j * rows + i] = p[i * cols + j];
  } else if (e.kind == Kind::k_b || e.kind == Kind::v_b) {
    const int64_t nh = e.shape[0], r = ps[1], per_head = ps[0] / nh, nope = e.split;
    for (int64_t h = 0; h < nh; ++h) {
      const float* kv = p.data() + h * per_head * r;
      if (e.kind == Kind::k_b) {
        for (int64_t j = 0; j < r; ++j)
          for (int64_t i = 0; i < nope; ++i) out[(h * r + j) * nope + i] = kv[i * r + j];
      } else {
        std::copy(kv + nope * r, kv + per_head * r, out.begin() + h * (per_head - nope) * r);
      }
    }
  } else {  // gate_exps / up_exps
    const int64_t E = ps[0], half = e.split * ps[2], start = e.kind == Kind::gate_exps ? 0 : half;
    for (int64_t x = 0; x < E; ++x)
      std::copy(p.begin() + x * 2 * half + start, p.begin() + x * 2 * half + start + half, out.begin() + x * half);
  }
  return out;
}

// Inverse of gather: writes the GGUF tensor's values `g` into their place in the parameter `p`.
void scatter(const Entry& e, const std::vector<float>& g, float* p, const Shape& ps) {
  if (e.kind == Kind::copy) {
    std::copy(g.begin(), g.end(), p);
  } else if (e.kind == Kind::transpose) {
    const int64_t rows = ps[0], cols = ps[1];
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) p[i * cols + j] = g[j * rows + i];
  } else if (e.kind == Kind::k_b || e.kind == Kind::v_b) {
    const int64_t nh = e.shape[0], r = ps[1], per_head = ps[0] / nh, nope = e.split;
    for (int64_t h = 0; h < nh; ++h) {
      float* kv = p + h * per_head * r;
      if (e.kind == Kind::k_b) {
        for (int64_t j = 0; j < r; ++j)
          for (int64_t i = 0; i < nope; ++i) kv[i * r + j] = g[(h * r + j) * nope + i];
      } else {
        std::copy(g.begin() + h * (per_head - nope) * r, g.begin() + (h + 1) * (per_head - nope) * r, kv + nope * r);
      }
    }
  } else if (e.kind == Kind::gate_exps || e.kind == Kind::up_exps) {
    const int64_t E = ps[0], half = e.split * ps[2], start = e.kind == Kind::gate_exps ? 0 : half;
    for (int64_t x = 0; x < E; ++x) std::copy(g.begin() + x * half, g.begin() + (x + 1) * half, p + x * 2 * half + start);
  }
}

// The type a tensor is stored in, as llama.cpp's converter chooses it.
TensorType pick_type(const std::string& dtype, const Entry& e) {
  const bool keep_f32 = e.shape.size() < 2 || !e.gguf.ends_with(".weight") || e.gguf.ends_with("ffn_gate_inp.weight") ||
                        e.gguf == "position_embd.weight";
  if (dtype == "f32" || keep_f32) return TensorType::f32;
  if (dtype == "bf16") return TensorType::bf16;
  return e.shape.back() % kQ8Block == 0 ? TensorType::q8_0 : TensorType::f32;
}

std::vector<char> encode(const std::vector<float>& v, TensorType t) {
  std::vector<char> out(gguf::tensor_bytes(t, static_cast<int64_t>(v.size())));
  if (t == TensorType::f32) std::memcpy(out.data(), v.data(), out.size());
  else if (t == TensorType::bf16) f32_to_bf16(v.data(), reinterpret_cast<uint16_t*>(out.data()), v.size());
  else quantize_q8_0(v.data(), reinterpret_cast<uint8_t*>(out.data()), static_cast<int64_t>(v.size()));
  return out;
}

constexpr int32_t kTokenUnused = 5;

}  // namespace

uint64_t export_gguf(const Model& model, SafetensorsFile weights, const Tokenizer* tokenizer, const std::string& dtype,
                     const fs::path& out) {
  check(dtype == "f32" || dtype == "bf16" || dtype == "q8_0", "--dtype '", dtype, "': GGUF export writes f32, bf16 or q8_0");
  check(tokenizer != nullptr, out.string(), ": GGUF embeds the tokenizer, and the model directory has no tokenizer.json");
  const Arch arch = arch_of(model);
  // The file's tensors by parameter name, checked against the config as ParamStore::load does.
  model.from_checkpoint_layout(weights.tensors);
  std::map<std::string, const HostTensor*> index;
  for (const auto& [name, t] : weights.tensors)
    if (std::string canon = model.canonical_name(name); !canon.empty()) index[canon] = &t;
  for (const auto& spec : model.param_specs()) {
    auto it = index.find(spec.name);
    check(it != index.end(), "GGUF export: missing tensor '", spec.name, "'");
    check(it->second->shape == spec.shape, "GGUF export: tensor '", spec.name, "' has shape ",
          shape_str(it->second->shape), ", the model's config needs ", shape_str(spec.shape));
  }

  gguf::Writer w(out);
  w.add("general.architecture", Value::str(arch.name));
  for (const auto& [k, v] : arch.keys) w.add(k, v);
  // LLAMA_FTYPE_ALL_F32 / MOSTLY_BF16 / MOSTLY_Q8_0.
  w.add("general.file_type", Value::u32(dtype == "f32" ? 0 : dtype == "bf16" ? 32 : 7));
  if (dtype == "q8_0") w.add("general.quantization_version", Value::u32(2));

  Tokenizer::GgufVocab vocab = tokenizer->to_gguf();
  const int64_t V = model.vocab_size();
  check(static_cast<int64_t>(vocab.tokens.size()) <= V, "tokenizer: ", vocab.tokens.size(),
        " tokens do not fit the model's vocab_size ", V);
  // The embedding's rows beyond the tokenizer's vocabulary: unused padding tokens, spelled as
  // llama.cpp's converter spells them.
  for (int64_t id = static_cast<int64_t>(vocab.tokens.size()); id < V; ++id) {
    vocab.tokens.push_back("[PAD" + std::to_string(id) + "]");
    vocab.types.push_back(kTokenUnused);
  }
  w.add("tokenizer.ggml.model", Value::str("gpt2"));
  w.add("tokenizer.ggml.pre", Value::str(vocab.pre));
  w.add("tokenizer.ggml.tokens", Value::str_array(std::move(vocab.tokens)));
  w.add("tokenizer.ggml.token_type", Value::i32_array({vocab.types.begin(), vocab.types.end()}));
  w.add("tokenizer.ggml.merges", Value::str_array(std::move(vocab.merges)));
  if (vocab.bos) w.add("tokenizer.ggml.bos_token_id", Value::u32(static_cast<uint32_t>(*vocab.bos)));
  if (vocab.eos) w.add("tokenizer.ggml.eos_token_id", Value::u32(static_cast<uint32_t>(*vocab.eos)));

  for (const Entry& e : arch.entries) w.declare(e.gguf, e.shape, pick_type(dtype, e));
  // One parameter on the host at a time (k_b/v_b and gate/up read the same one twice in a row).
  std::string cached_name;
  std::vector<float> cached;
  uint64_t bytes = 0;
  for (const Entry& e : arch.entries) {
    const HostTensor& t = *index.at(e.param);
    const TensorType type = pick_type(dtype, e);
    if ((e.kind == Kind::copy || e.kind == Kind::tied) && t.dtype == "F32" && type == TensorType::f32) {
      w.write(e.gguf, t.bytes.data(), t.bytes.size());  // already the file's bytes
      bytes += t.bytes.size();
      continue;
    }
    if (cached_name != e.param) {
      cached = t.to_f32(e.param);
      cached_name = e.param;
    }
    // Copies encode the cached values directly: one f32 copy of a tensor at a time, plus its encoding.
    const bool same = e.kind == Kind::copy || e.kind == Kind::tied;
    const std::vector<char> data = same ? encode(cached, type) : encode(gather(e, cached, t.shape), type);
    w.write(e.gguf, data.data(), data.size());
    bytes += data.size();
  }
  w.finish();
  return bytes;
}

namespace {

nlohmann::json gpt2_config(const gguf::Reader& r, int64_t vocab) {
  const int64_t C = r.get_int("gpt2.embedding_length");
  if (r.find("gpt2.feed_forward_length"))
    check(r.get_int("gpt2.feed_forward_length") == 4 * C, r.path().string(), ": key 'gpt2.feed_forward_length' = ",
          r.get_int("gpt2.feed_forward_length"), ": tandem's GPT-2 has 4 * embedding_length = ", 4 * C);
  return {{"model_type", "gpt2"},
          {"vocab_size", vocab},
          {"n_positions", r.get_int("gpt2.context_length")},
          {"n_embd", C},
          {"n_layer", r.get_int("gpt2.block_count")},
          {"n_head", r.get_int("gpt2.attention.head_count")},
          {"layer_norm_epsilon", static_cast<float>(r.get_float("gpt2.attention.layer_norm_epsilon"))}};
}

nlohmann::json deepseek2_config(const gguf::Reader& r, int64_t vocab, bool tied) {
  const std::string p = r.path().string();
  auto i = [&](const std::string& k) { return r.get_int("deepseek2." + k); };
  auto f = [&](const std::string& k) { return r.get_float("deepseek2." + k); };
  auto has = [&](const std::string& k) { return r.find("deepseek2." + k) != nullptr; };
  check(i("expert_gating_func") == 2, p, ": key 'deepseek2.expert_gating_func' = ", i("expert_gating_func"),
        ": tandem implements sigmoid gating (2) only");
  check(i("attention.head_count_kv") == 1, p, ": key 'deepseek2.attention.head_count_kv' = ", i("attention.head_count_kv"),
        ": tandem reads the split MLA layout (head_count_kv 1, attn_k_b/attn_v_b)");
  check(has("attention.key_length_mla") && has("attention.value_length_mla"), p,
        ": missing key 'deepseek2.attention.key_length_mla' (files from before llama.cpp's split k_b/v_b layout are not supported)");
  const int64_t rope = i("rope.dimension_count"), r_kv = i("attention.kv_lora_rank");
  check(i("attention.key_length") == r_kv + rope && i("attention.value_length") == r_kv, p,
        ": keys 'deepseek2.attention.key_length'/'value_length' do not match kv_lora_rank + rope and kv_lora_rank");
  nlohmann::json j = {{"model_type", "deepseek_v3"},
                      {"vocab_size", vocab},
                      {"hidden_size", i("embedding_length")},
                      {"intermediate_size", i("feed_forward_length")},
                      {"moe_intermediate_size", i("expert_feed_forward_length")},
                      {"num_hidden_layers", i("block_count")},
                      {"num_attention_heads", i("attention.head_count")},
                      {"q_lora_rank", has("attention.q_lora_rank") ? nlohmann::json(i("attention.q_lora_rank")) : nlohmann::json(nullptr)},
                      {"kv_lora_rank", r_kv},
                      {"qk_nope_head_dim", i("attention.key_length_mla") - rope},
                      {"qk_rope_head_dim", rope},
                      {"v_head_dim", i("attention.value_length_mla")},
                      {"n_routed_experts", i("expert_count")},
                      {"n_shared_experts", i("expert_shared_count")},
                      {"num_experts_per_tok", i("expert_used_count")},
                      {"first_k_dense_replace", i("leading_dense_block_count")},
                      {"n_group", has("expert_group_count") ? i("expert_group_count") : 1},
                      {"topk_group", has("expert_group_used_count") ? i("expert_group_used_count") : 1},
                      {"num_nextn_predict_layers", 0},
                      {"max_position_embeddings", i("context_length")},
                      {"routed_scaling_factor", static_cast<float>(f("expert_weights_scale"))},
                      {"norm_topk_prob", has("expert_weights_norm") && r.at("deepseek2.expert_weights_norm").i != 0},
                      {"rms_norm_eps", static_cast<float>(f("attention.layer_norm_rms_epsilon"))},
                      {"tie_word_embeddings", tied},
                      {"rope_interleave", true}};
  nlohmann::json rope_params = {{"rope_type", "default"},
                                {"rope_theta", has("rope.freq_base") ? static_cast<float>(f("rope.freq_base")) : 10000.0f}};
  if (has("rope.scaling.type")) {
    const std::string type = r.get_string("deepseek2.rope.scaling.type");
    check(type == "yarn" || type == "none", p, ": key 'deepseek2.rope.scaling.type' = '", type, "' (tandem reads yarn)");
    if (type == "yarn") {
      const double mscale = (has("rope.scaling.yarn_log_multiplier") ? f("rope.scaling.yarn_log_multiplier") : 0.0) / 0.1;
      rope_params.update({{"rope_type", "yarn"},
                          {"factor", static_cast<float>(f("rope.scaling.factor"))},
                          {"original_max_position_embeddings", i("rope.scaling.original_context_length")},
                          {"mscale", static_cast<float>(mscale)},
                          {"mscale_all_dim", static_cast<float>(mscale)},
                          {"beta_fast", has("rope.scaling.yarn_beta_fast") ? static_cast<float>(f("rope.scaling.yarn_beta_fast")) : 32.0f},
                          {"beta_slow", has("rope.scaling.yarn_beta_slow") ? static_cast<float>(f("rope.scaling.yarn_beta_slow")) : 1.0f}});
    }
  }
  j["rope_parameters"] = rope_params;
  return j;
}

std::optional<Tokenizer> read_tokenizer(const gguf::Reader& r) {
  if (!r.find("tokenizer.ggml.model")) return std::nullopt;
  const std::string p = r.path().string();
  const std::string model = r.get_string("tokenizer.ggml.model");
  check(model == "gpt2", p, ": key 'tokenizer.ggml.model' = '", model, "': tandem reads byte-level BPE ('gpt2') vocabularies");
  Tokenizer::GgufVocab v;
  v.pre = r.find("tokenizer.ggml.pre") ? r.get_string("tokenizer.ggml.pre") : "default";
  const Value& tokens = r.at("tokenizer.ggml.tokens");
  check(tokens.type == gguf::ValueType::array && tokens.elem == gguf::ValueType::string, p,
        ": key 'tokenizer.ggml.tokens' is not an array of strings");
  v.tokens = tokens.strings;
  if (const Value* t = r.find("tokenizer.ggml.token_type")) {
    check(t->type == gguf::ValueType::array && t->ints.size() == v.tokens.size(), p,
          ": key 'tokenizer.ggml.token_type' is not an integer array with one entry per token");
    v.types.assign(t->ints.begin(), t->ints.end());
    // Trailing unused ids are the embedding's padding, not vocabulary.
    while (!v.types.empty() && v.types.back() == kTokenUnused) {
      v.types.pop_back();
      v.tokens.pop_back();
    }
  }
  if (const Value* m = r.find("tokenizer.ggml.merges")) {
    check(m->type == gguf::ValueType::array && m->elem == gguf::ValueType::string, p,
          ": key 'tokenizer.ggml.merges' is not an array of strings");
    v.merges = m->strings;
  }
  if (r.find("tokenizer.ggml.bos_token_id")) v.bos = static_cast<int32_t>(r.get_int("tokenizer.ggml.bos_token_id"));
  if (r.find("tokenizer.ggml.eos_token_id")) v.eos = static_cast<int32_t>(r.get_int("tokenizer.ggml.eos_token_id"));
  return Tokenizer::from_gguf(v, p);
}

}  // namespace

GgufModel import_gguf(const fs::path& file) {
  const gguf::Reader r(file);
  const std::string p = file.string();
  GgufModel out;
  out.arch = r.get_string("general.architecture");
  check(out.arch == "gpt2" || out.arch == "deepseek2", p, ": key 'general.architecture' = '", out.arch,
        "' is not supported (gpt2, deepseek2)");
  const gguf::TensorInfo& embd = r.tensor("token_embd.weight");
  check(embd.shape.size() == 2, p, ": tensor 'token_embd.weight' has shape ", shape_str(embd.shape), ", expected 2-D");
  // The output head is tied when the file has none or when it holds exactly the embedding.
  const gguf::TensorInfo* head = r.find_tensor("output.weight");
  const bool tied = !head || (head->type == embd.type && head->shape == embd.shape && r.read(*head) == r.read(embd));
  const nlohmann::json config = out.arch == "gpt2" ? gpt2_config(r, embd.shape[0]) : deepseek2_config(r, embd.shape[0], tied);
  out.model = model_from_hf_config(config, p);
  if (out.arch == "gpt2") check(tied, p, ": tensor 'output.weight' differs from 'token_embd.weight' (untied GPT-2 is not supported)");
  const Arch arch = arch_of(*out.model);

  std::map<std::string, Shape> shapes;
  for (const auto& s : out.model->param_specs()) shapes[s.name] = s.shape;
  auto& values = out.checkpoint.tensors;  // f32, filled in place
  std::set<std::string> types, used;
  for (const Entry& e : arch.entries) {
    used.insert(e.gguf);
    if (e.kind == Kind::tied && !head) continue;
    const gguf::TensorInfo& t = r.tensor(e.gguf);
    check(t.shape == e.shape, p, ": tensor '", e.gguf, "' has shape ", shape_str(t.shape), ", the keys make it ", shape_str(e.shape));
    types.insert(gguf::tensor_type_name(t.type));
    if (e.kind == Kind::tied) continue;  // checked equal to the embedding above
    const Shape& ps = shapes.at(e.param);
    auto [it, fresh] = values.try_emplace(e.param);
    if (fresh) it->second = HostTensor{"F32", ps, std::vector<char>(static_cast<size_t>(numel(ps)) * 4)};
    scatter(e, r.read_f32(t), reinterpret_cast<float*>(it->second.bytes.data()), ps);
  }
  for (const auto& t : r.tensors())
    check(used.contains(t.name), p, ": unexpected tensor '", t.name, "' for this ", out.arch,
          " configuration (MTP layers, rope_freqs and older layouts are not read)");
  // Parameters no GGUF tensor holds: none for these two architectures (MTP is off on import).
  for (const auto& [name, s] : shapes)
    check(out.checkpoint.tensors.contains(name), p, ": no tensor provides parameter '", name, "'");
  out.model->to_checkpoint_layout(out.checkpoint.tensors);
  out.checkpoint.metadata["format"] = "pt";
  for (const auto& t : types) out.file_types += (out.file_types.empty() ? "" : "+") + t;
  out.tokenizer = read_tokenizer(r);
  return out;
}

}  // namespace tandem
