#include "models/gpt2.h"

#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "io/json_value.h"
#include "models/deepseek_v3.h"
#include "models/precision.h"

namespace tandem {

GPT2::GPT2(GPT2Config c) : c_(c) {
  check(c_.vocab_size > 0 && c_.n_positions > 0 && c_.n_embd > 0 && c_.n_layer > 0 && c_.n_head > 0,
        "gpt2 config: vocab_size, n_positions, n_embd, n_layer and n_head must be positive");
  check(c_.n_embd % c_.n_head == 0, "gpt2 config: n_embd (", c_.n_embd, ") must be divisible by n_head (",
        c_.n_head, ")");
  // Far beyond any real model, and small enough that no parameter's element count can overflow.
  check(c_.vocab_size <= kMaxModelTokens && c_.n_positions <= kMaxModelTokens, "gpt2 config: vocab_size and n_positions must be at most ",
        kMaxModelTokens);
  check(c_.n_embd <= kMaxModelDim && c_.n_layer <= kMaxModelLayers, "gpt2 config: n_embd must be at most ",
        kMaxModelDim, ", n_layer at most ", kMaxModelLayers);
}

std::unique_ptr<GPT2> GPT2::from_hf(const nlohmann::json& j, const std::string& where) {
  GPT2Config c;
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key)) field = json_value<std::decay_t<decltype(field)>>(j.at(key), where, "field", key);
  };
  get("vocab_size", c.vocab_size);
  get("n_positions", c.n_positions);
  get("n_embd", c.n_embd);
  get("n_layer", c.n_layer);
  get("n_head", c.n_head);
  get("layer_norm_epsilon", c.layer_norm_epsilon);
  auto model = std::make_unique<GPT2>(c);  // checks the sizes first
  if (j.contains("activation_function")) {
    std::string act;
    get("activation_function", act);
    check(act == "gelu_new" || act == "gelu_pytorch_tanh", where, ": activation_function '", act,
          "' is not supported (GPT-2 uses gelu_new)");
  }
  if (j.contains("n_inner") && !j.at("n_inner").is_null()) {
    int64_t inner = 0;
    get("n_inner", inner);
    check(inner == 4 * c.n_embd, where, ": n_inner other than 4 * n_embd is not supported");
  }
  if (j.contains("tie_word_embeddings")) {
    bool tied = true;
    get("tie_word_embeddings", tied);
    check(tied, where, ": untied GPT-2 embeddings are not supported");
  }
  return model;
}

nlohmann::json GPT2::hf_config() const {
  return {{"model_type", "gpt2"},
          {"architectures", {"GPT2LMHeadModel"}},
          {"vocab_size", c_.vocab_size},
          {"n_positions", c_.n_positions},
          {"n_ctx", c_.n_positions},
          {"n_embd", c_.n_embd},
          {"n_layer", c_.n_layer},
          {"n_head", c_.n_head},
          {"n_inner", nullptr},
          {"activation_function", "gelu_new"},
          {"layer_norm_epsilon", c_.layer_norm_epsilon},
          {"resid_pdrop", 0.0},
          {"embd_pdrop", 0.0},
          {"attn_pdrop", 0.0},
          {"initializer_range", 0.02},
          {"scale_attn_weights", true},
          {"tie_word_embeddings", true},
          {"torch_dtype", "float32"}};
}

std::vector<ParamSpec> GPT2::param_specs() const {
  using I = ParamSpec::Init;
  const int64_t C = c_.n_embd;
  // GPT-2's init: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer).
  const float proj_std = 0.02f / std::sqrt(2.0f * static_cast<float>(c_.n_layer));
  std::vector<ParamSpec> p{{"transformer.wte.weight", {c_.vocab_size, C}},
                           {"transformer.wpe.weight", {c_.n_positions, C}}};
  for (int64_t l = 0; l < c_.n_layer; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    p.push_back({h + "ln_1.weight", {C}, I::ones, 0, false});
    p.push_back({h + "ln_1.bias", {C}, I::zeros, 0, false});
    p.push_back({h + "attn.c_attn.weight", {C, 3 * C}});
    p.push_back({h + "attn.c_attn.bias", {3 * C}, I::zeros, 0, false});
    p.push_back({h + "attn.c_proj.weight", {C, C}, I::normal, proj_std});
    p.push_back({h + "attn.c_proj.bias", {C}, I::zeros, 0, false});
    p.push_back({h + "ln_2.weight", {C}, I::ones, 0, false});
    p.push_back({h + "ln_2.bias", {C}, I::zeros, 0, false});
    p.push_back({h + "mlp.c_fc.weight", {C, 4 * C}});
    p.push_back({h + "mlp.c_fc.bias", {4 * C}, I::zeros, 0, false});
    p.push_back({h + "mlp.c_proj.weight", {4 * C, C}, I::normal, proj_std});
    p.push_back({h + "mlp.c_proj.bias", {C}, I::zeros, 0, false});
  }
  p.push_back({"transformer.ln_f.weight", {C}, I::ones, 0, false});
  p.push_back({"transformer.ln_f.bias", {C}, I::zeros, 0, false});
  return p;
}

std::string GPT2::canonical_name(const std::string& name) const {
  auto ends_with = [&](const char* s) { return name.ends_with(s); };
  // The causal-mask buffers of older checkpoints, and the lm_head tied to wte.
  if (ends_with(".attn.bias") || ends_with(".attn.masked_bias") || name == "lm_head.weight") return "";
  // The original GPT-2 checkpoints name parameters without the "transformer." prefix.
  if (!name.starts_with("transformer.")) return "transformer." + name;
  return name;
}

ModelNodes GPT2::build(Graph& g, int64_t B, int64_t T, GraphMode mode) const {
  check(T <= c_.n_positions, "gpt2: sequence length ", T, " exceeds n_positions ", c_.n_positions);
  const int64_t C = c_.n_embd, H = c_.n_head, D = C / H;
  ModelNodes m;
  for (const auto& s : param_specs()) m.params[s.name] = g.param(s.name, s.shape, param_dtype(s));
  auto P = [&](const std::string& n) { return m.params.at(n); };
  Casts cast(g, compute_dtype_);
  m.input_ids = g.input("input_ids", {B, T}, DType::i32);
  // Training shares positions 0..T-1 across the batch; decoding has per-sequence positions.
  m.position_ids = g.input("position_ids", mode == GraphMode::decode ? Shape{B, T} : Shape{T}, DType::i32);
  if (mode == GraphMode::train) m.labels = g.input("labels", {B, T}, DType::i32);
  if (mode == GraphMode::decode) m.cache_len = g.input("cache_len", {B}, DType::i32);

  auto linear = [&](NodeId x, const std::string& prefix, const std::string& name) {
    NodeId y = g.add(OpKind::matmul, {cast.compute(x), cast.compute(P(prefix + ".weight"))}, MatmulAttrs{}, name + ".matmul");
    return g.add(OpKind::add, {y, cast.compute(P(prefix + ".bias"))}, NoAttrs{}, name);
  };
  auto layernorm = [&](NodeId x, const std::string& prefix, const std::string& name) {
    return g.add(OpKind::layernorm, {x, P(prefix + ".weight"), P(prefix + ".bias")},
                 NormAttrs{c_.layer_norm_epsilon}, name);
  };

  auto s = g.scope("transformer");
  NodeId tok = cast.f32(g.add(OpKind::embedding, {m.input_ids, P("transformer.wte.weight")}, NoAttrs{}, "wte"));
  NodeId pos = cast.f32(g.add(OpKind::embedding, {m.position_ids, P("transformer.wpe.weight")}, NoAttrs{}, "wpe"));
  NodeId x = g.add(OpKind::add, {tok, pos}, NoAttrs{}, "embed");
  const AttentionAttrs att{static_cast<int>(H), static_cast<int>(D), static_cast<int>(D),
                           1.0f / std::sqrt(static_cast<float>(D))};
  for (int64_t l = 0; l < c_.n_layer; ++l) {
    const std::string h = "transformer.h." + std::to_string(l) + ".";
    auto ls = g.scope("h." + std::to_string(l));
    NodeId a = layernorm(x, h + "ln_1", "ln_1");
    NodeId qkv = linear(a, h + "attn.c_attn", "attn.c_attn");
    NodeId y;
    if (mode == GraphMode::decode) {
      NodeId cache = g.input("attn.kv_cache", kv_cache_shape(B));
      m.kv_caches.push_back(cache);
      y = g.add(OpKind::attention_cached, {cast.f32(qkv), cache, m.cache_len}, att, "attn.attention");  // f32 cache
    } else {
      y = g.add(OpKind::attention, {qkv}, att, "attn.attention");
    }
    x = g.add(OpKind::add, {x, cast.f32(linear(y, h + "attn.c_proj", "attn.c_proj"))}, NoAttrs{}, "attn.residual");
    NodeId f = linear(layernorm(x, h + "ln_2", "ln_2"), h + "mlp.c_fc", "mlp.c_fc");
    f = g.add(OpKind::gelu, {f}, NoAttrs{}, "mlp.gelu");
    x = g.add(OpKind::add, {x, cast.f32(linear(f, h + "mlp.c_proj", "mlp.c_proj"))}, NoAttrs{}, "mlp.residual");
  }
  if (mode == GraphMode::decode && T > 1) {
    // Decoding samples from the last position only: the final norm and the lm_head (V x C, the
    // largest matmul) run on that row alone, and the logits are [B, 1, V].
    NodeId rows = g.add(OpKind::reshape, {x}, ShapeAttrs{{B, T * C}}, "last.rows");
    NodeId last = g.add(OpKind::slice_last, {rows}, SliceAttrs{(T - 1) * C, C, T * C}, "last.slice");
    x = g.add(OpKind::reshape, {last}, ShapeAttrs{{B, 1, C}}, "last");
  }
  x = layernorm(x, "transformer.ln_f", "ln_f");
  m.logits = cast.f32(g.add(OpKind::matmul, {cast.compute(x), cast.compute(P("transformer.wte.weight"))},
                            MatmulAttrs{false, true}, "lm_head"));
  if (mode == GraphMode::train) m.loss = m.lm_loss = g.add(OpKind::cross_entropy, {m.logits, m.labels}, NoAttrs{}, "loss");
  return m;
}

double GPT2::train_flops_per_token(int64_t T) const {
  // 6 FLOPs per parameter per token for the matmuls (forward 2, backward 4), the tied lm_head
  // included, plus causal attention: QK^T and PV, 2 * 2 * T/2 * C per layer forward, x3.
  const double C = static_cast<double>(c_.n_embd), L = static_cast<double>(c_.n_layer);
  const double matmul_params = L * 12.0 * C * C + static_cast<double>(c_.vocab_size) * C;
  return 6.0 * matmul_params + 3.0 * L * 2.0 * static_cast<double>(T) * C;
}

std::unique_ptr<Model> model_from_hf_config(const nlohmann::json& j, const std::string& where) {
  check(j.is_object(), where, ": config is not a JSON object");
  check(!j.contains("model_type") || j["model_type"].is_string(), where, ": field 'model_type' must be a string, got ",
        j.value("model_type", nlohmann::json()).dump());
  const std::string type = j.value("model_type", "");
  // The architectures' checks say what is wrong; the file is named here. A JSON type mismatch
  // that a field reader did not catch still becomes an error naming the file, never a crash.
  try {
    if (type == "gpt2") return GPT2::from_hf(j, where);
    if (type == "deepseek_v3") return DeepseekV3::from_hf(j, where);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": malformed config: " + e.what());
  } catch (const Error& e) {
    const std::string m = e.what();
    throw Error(m.starts_with(where + ":") ? m : where + ": " + m);
  }
  throw Error(where + ": model_type '" + type + "' is not supported (supported: gpt2, deepseek_v3)");
}

}  // namespace tandem
