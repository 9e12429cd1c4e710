#include "models/deepseek_v3.h"

#include <cmath>
#include <cstring>
#include <regex>
#include <type_traits>

#include "core/error.h"
#include "io/json_value.h"

namespace tandem {

namespace {

double yarn_get_mscale(double scale, double mscale) { return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

std::string layer_prefix(int64_t l) { return "model.layers." + std::to_string(l) + "."; }

}  // namespace

DeepseekV3::DeepseekV3(DeepseekV3Config c) : c_(c) {
  auto positive = [](int64_t v) { return v > 0; };
  check(positive(c_.vocab_size) && positive(c_.hidden_size) && positive(c_.num_hidden_layers) &&
            positive(c_.num_attention_heads) && positive(c_.kv_lora_rank) && positive(c_.qk_rope_head_dim) &&
            positive(c_.v_head_dim) && c_.qk_nope_head_dim >= 0 && c_.q_lora_rank >= 0 && positive(c_.max_position_embeddings),
        "deepseek_v3 config: sizes must be positive");
  check(c_.vocab_size <= kMaxModelTokens && c_.max_position_embeddings <= kMaxModelTokens,
        "deepseek_v3 config: vocab_size and max_position_embeddings must be at most ", kMaxModelTokens);
  for (int64_t v : {c_.hidden_size, c_.intermediate_size, c_.moe_intermediate_size, c_.num_attention_heads, c_.q_lora_rank,
                    c_.kv_lora_rank, c_.qk_nope_head_dim, c_.qk_rope_head_dim, c_.v_head_dim, c_.n_routed_experts,
                    c_.n_shared_experts, c_.num_experts_per_tok, c_.n_group, c_.topk_group})
    check(v <= kMaxModelDim, "deepseek_v3 config: widths, heads, ranks and expert counts must be at most ", kMaxModelDim,
          " (got ", v, ")");
  check(c_.num_hidden_layers <= kMaxModelLayers && c_.num_nextn_predict_layers <= kMaxModelLayers &&
            c_.first_k_dense_replace <= kMaxModelLayers,
        "deepseek_v3 config: layer counts must be at most ", kMaxModelLayers);
  check(c_.qk_rope_head_dim % 2 == 0, "deepseek_v3 config: qk_rope_head_dim must be even");
  check(c_.first_k_dense_replace >= 0 && c_.num_nextn_predict_layers >= 0, "deepseek_v3 config: first_k_dense_replace and ",
        "num_nextn_predict_layers must be >= 0");
  if (c_.first_k_dense_replace < c_.num_hidden_layers + c_.num_nextn_predict_layers) {
    check(positive(c_.n_routed_experts) && positive(c_.num_experts_per_tok) && positive(c_.moe_intermediate_size) &&
              c_.n_shared_experts >= 0,
          "deepseek_v3 config: MoE layers need n_routed_experts, num_experts_per_tok and moe_intermediate_size");
    check(c_.n_group > 0 && c_.n_routed_experts % c_.n_group == 0, "deepseek_v3 config: n_routed_experts (",
          c_.n_routed_experts, ") must be divisible by n_group (", c_.n_group, ")");
    check(c_.topk_group > 0 && c_.topk_group <= c_.n_group, "deepseek_v3 config: topk_group must be in [1, n_group]");
    check(c_.num_experts_per_tok <= c_.topk_group * (c_.n_routed_experts / c_.n_group),
          "deepseek_v3 config: num_experts_per_tok exceeds the experts of topk_group groups");
    check(c_.n_group == 1 || c_.n_routed_experts / c_.n_group >= 2,
          "deepseek_v3 config: group scores sum the top-2 experts of a group; groups need >= 2 experts");
  }
  if (c_.first_k_dense_replace > 0 || c_.num_hidden_layers == 0)
    check(positive(c_.intermediate_size), "deepseek_v3 config: dense layers need intermediate_size");
  check(c_.seq_aux_loss_alpha >= 0 && std::isfinite(c_.seq_aux_loss_alpha),
        "deepseek_v3 config: seq_aux_loss_alpha must be a non-negative number");
  if (c_.yarn_factor > 1.0)
    check(c_.yarn_original_max_position > 0, "deepseek_v3 config: rope_scaling.original_max_position_embeddings is required for yarn");
}

std::unique_ptr<DeepseekV3> DeepseekV3::from_hf(const nlohmann::json& j, const std::string& where) {
  DeepseekV3Config c;
  auto field = [&](const char* key) -> const nlohmann::json* { return j.contains(key) ? &j.at(key) : nullptr; };
  auto get = [&](const char* key, auto& out) {
    const nlohmann::json* v = field(key);
    if (v && !v->is_null()) out = json_value<std::decay_t<decltype(out)>>(*v, where, "field", key);
  };
  get("vocab_size", c.vocab_size);
  get("hidden_size", c.hidden_size);
  get("intermediate_size", c.intermediate_size);
  get("moe_intermediate_size", c.moe_intermediate_size);
  get("num_hidden_layers", c.num_hidden_layers);
  get("num_attention_heads", c.num_attention_heads);
  if (const auto* v = field("q_lora_rank"); v && v->is_null()) c.q_lora_rank = 0;
  else get("q_lora_rank", c.q_lora_rank);
  get("kv_lora_rank", c.kv_lora_rank);
  get("qk_nope_head_dim", c.qk_nope_head_dim);
  get("qk_rope_head_dim", c.qk_rope_head_dim);
  get("v_head_dim", c.v_head_dim);
  get("n_routed_experts", c.n_routed_experts);
  get("n_shared_experts", c.n_shared_experts);
  get("num_experts_per_tok", c.num_experts_per_tok);
  get("first_k_dense_replace", c.first_k_dense_replace);
  get("n_group", c.n_group);
  get("topk_group", c.topk_group);
  get("num_nextn_predict_layers", c.num_nextn_predict_layers);
  get("max_position_embeddings", c.max_position_embeddings);
  get("routed_scaling_factor", c.routed_scaling_factor);
  get("rms_norm_eps", c.rms_norm_eps);
  get("initializer_range", c.initializer_range);
  get("norm_topk_prob", c.norm_topk_prob);
  get("tie_word_embeddings", c.tie_word_embeddings);
  get("rope_interleave", c.rope_interleave);
  get("seq_aux_loss_alpha", c.seq_aux_loss_alpha);
  if (const auto* v = field("bos_token_id"); v && v->is_number_integer()) c.bos_token_id = v->get<int64_t>();
  if (const auto* v = field("eos_token_id"); v && v->is_number_integer()) c.eos_token_id = v->get<int64_t>();

  auto require = [&](const char* key, const std::string& want) {
    const nlohmann::json* v = field(key);
    if (!v || v->is_null()) return;
    const std::string got = v->is_string() ? v->get<std::string>() : v->dump();
    check(got == want, where, ": field '", key, "' = '", got, "' is not supported (tandem implements '", want, "')");
  };
  require("hidden_act", "silu");
  require("scoring_func", "sigmoid");
  require("topk_method", "noaux_tc");
  if (const auto* v = field("attention_bias"); v && v->is_boolean())
    check(!v->get<bool>(), where, ": field 'attention_bias' = true is not supported (DeepSeek-V3 has no attention biases)");
  if (const auto* v = field("num_key_value_heads"); v && !v->is_null())
    check(v->is_number_integer() && v->get<int64_t>() == c.num_attention_heads, where, ": field 'num_key_value_heads' must equal num_attention_heads");

  // RoPE: transformers 5 writes rope_parameters {rope_theta, rope_type, ...}; older files write
  // rope_theta and rope_scaling {type | rope_type, factor, ...}.
  get("rope_theta", c.rope_theta);
  nlohmann::json rope = nlohmann::json::object();
  if (const auto* v = field("rope_scaling"); v && v->is_object()) rope = *v;
  if (const auto* v = field("rope_parameters"); v && v->is_object()) rope.update(*v);
  if (rope.contains("rope_theta")) c.rope_theta = rope["rope_theta"].get<double>();
  const std::string rope_type = rope.value("rope_type", rope.value("type", std::string("default")));
  if (rope_type == "yarn") {
    auto num = [&](const char* k, double dflt) { return rope.contains(k) && !rope[k].is_null() ? rope[k].get<double>() : dflt; };
    c.yarn_factor = num("factor", 1.0);
    c.yarn_beta_fast = num("beta_fast", 32.0);
    c.yarn_beta_slow = num("beta_slow", 1.0);
    c.yarn_mscale = num("mscale", 0.0);
    c.yarn_mscale_all_dim = num("mscale_all_dim", 0.0);
    const double original = num("original_max_position_embeddings", 0.0);
    check(original >= 0 && original <= static_cast<double>(kMaxModelTokens), where,
          ": rope_parameters.original_max_position_embeddings must be in [0, ", kMaxModelTokens, "]");
    c.yarn_original_max_position = static_cast<int64_t>(original);
    check(!rope.contains("attention_factor") || rope["attention_factor"].is_null(), where,
          ": rope_parameters.attention_factor is not supported (it is derived from mscale)");
  } else {
    check(rope_type == "default", where, ": rope type '", rope_type, "' is not supported (default, yarn)");
  }
  return std::make_unique<DeepseekV3>(c);
}

nlohmann::json DeepseekV3::hf_config() const {
  nlohmann::json rope = {{"rope_theta", c_.rope_theta}, {"rope_type", "default"}};
  if (c_.yarn_factor > 1.0) {
    rope = {{"rope_theta", c_.rope_theta},
            {"rope_type", "yarn"},
            {"factor", c_.yarn_factor},
            {"beta_fast", c_.yarn_beta_fast},
            {"beta_slow", c_.yarn_beta_slow},
            {"mscale", c_.yarn_mscale},
            {"mscale_all_dim", c_.yarn_mscale_all_dim},
            {"original_max_position_embeddings", c_.yarn_original_max_position}};
  }
  nlohmann::json j = {{"model_type", "deepseek_v3"},
                      {"architectures", {"DeepseekV3ForCausalLM"}},
                      {"vocab_size", c_.vocab_size},
                      {"hidden_size", c_.hidden_size},
                      {"intermediate_size", c_.intermediate_size},
                      {"moe_intermediate_size", c_.moe_intermediate_size},
                      {"num_hidden_layers", c_.num_hidden_layers},
                      {"num_attention_heads", c_.num_attention_heads},
                      {"num_key_value_heads", c_.num_attention_heads},
                      {"q_lora_rank", c_.q_lora_rank > 0 ? nlohmann::json(c_.q_lora_rank) : nlohmann::json(nullptr)},
                      {"kv_lora_rank", c_.kv_lora_rank},
                      {"qk_nope_head_dim", c_.qk_nope_head_dim},
                      {"qk_rope_head_dim", c_.qk_rope_head_dim},
                      {"v_head_dim", c_.v_head_dim},
                      {"head_dim", c_.qk_rope_head_dim},
                      {"n_routed_experts", c_.n_routed_experts},
                      {"n_shared_experts", c_.n_shared_experts},
                      {"num_experts_per_tok", c_.num_experts_per_tok},
                      {"first_k_dense_replace", c_.first_k_dense_replace},
                      {"n_group", c_.n_group},
                      {"topk_group", c_.topk_group},
                      {"routed_scaling_factor", c_.routed_scaling_factor},
                      {"norm_topk_prob", c_.norm_topk_prob},
                      {"scoring_func", "sigmoid"},
                      {"topk_method", "noaux_tc"},
                      {"hidden_act", "silu"},
                      {"rms_norm_eps", c_.rms_norm_eps},
                      {"max_position_embeddings", c_.max_position_embeddings},
                      {"rope_parameters", rope},
                      {"rope_interleave", c_.rope_interleave},
                      {"num_nextn_predict_layers", c_.num_nextn_predict_layers},
                      {"tie_word_embeddings", c_.tie_word_embeddings},
                      {"attention_bias", false},
                      {"attention_dropout", 0.0},
                      {"initializer_range", c_.initializer_range},
                      {"torch_dtype", "float32"}};
  if (c_.seq_aux_loss_alpha > 0) j["seq_aux_loss_alpha"] = c_.seq_aux_loss_alpha;
  if (c_.bos_token_id) j["bos_token_id"] = *c_.bos_token_id;
  if (c_.eos_token_id) j["eos_token_id"] = *c_.eos_token_id;
  return j;
}

void DeepseekV3::block_params(const std::string& p, int64_t layer, std::vector<ParamSpec>& out) const {
  using I = ParamSpec::Init;
  const int64_t H = c_.hidden_size, nh = c_.num_attention_heads, dqk = qk_head_dim();
  const float std = static_cast<float>(c_.initializer_range);
  auto linear = [&](const std::string& name, int64_t o, int64_t i) { out.push_back({p + name, {o, i}, I::normal, std}); };
  auto norm = [&](const std::string& name, int64_t n) { out.push_back({p + name, {n}, I::ones, 0, false}); };
  norm("input_layernorm.weight", H);
  if (c_.q_lora_rank > 0) {
    linear("self_attn.q_a_proj.weight", c_.q_lora_rank, H);
    norm("self_attn.q_a_layernorm.weight", c_.q_lora_rank);
    linear("self_attn.q_b_proj.weight", nh * dqk, c_.q_lora_rank);
  } else {
    linear("self_attn.q_proj.weight", nh * dqk, H);
  }
  linear("self_attn.kv_a_proj_with_mqa.weight", c_.kv_lora_rank + c_.qk_rope_head_dim, H);
  norm("self_attn.kv_a_layernorm.weight", c_.kv_lora_rank);
  linear("self_attn.kv_b_proj.weight", nh * (c_.qk_nope_head_dim + c_.v_head_dim), c_.kv_lora_rank);
  linear("self_attn.o_proj.weight", H, nh * c_.v_head_dim);
  norm("post_attention_layernorm.weight", H);
  if (!is_moe_layer(layer)) {
    linear("mlp.gate_proj.weight", c_.intermediate_size, H);
    linear("mlp.up_proj.weight", c_.intermediate_size, H);
    linear("mlp.down_proj.weight", H, c_.intermediate_size);
    return;
  }
  const int64_t E = c_.n_routed_experts, Im = c_.moe_intermediate_size;
  linear("mlp.gate.weight", E, H);
  out.back().keep_f32 = true;  // the router
  out.push_back({p + "mlp.gate.e_score_correction_bias", {E}, I::zeros, 0, false, false});
  const int64_t El = E / ep_ranks_;  // this rank's experts (all of them without expert parallelism)
  out.push_back({p + "mlp.experts.gate_up_proj", {El, 2 * Im, H}, I::normal, std});
  out.push_back({p + "mlp.experts.down_proj", {El, H, Im}, I::normal, std});
  if (c_.n_shared_experts > 0) {
    linear("mlp.shared_experts.gate_proj.weight", Im * c_.n_shared_experts, H);
    linear("mlp.shared_experts.up_proj.weight", Im * c_.n_shared_experts, H);
    linear("mlp.shared_experts.down_proj.weight", H, Im * c_.n_shared_experts);
  }
}

std::vector<ParamSpec> DeepseekV3::param_specs() const {
  using I = ParamSpec::Init;
  const int64_t H = c_.hidden_size;
  const float std = static_cast<float>(c_.initializer_range);
  std::vector<ParamSpec> p{{"model.embed_tokens.weight", {c_.vocab_size, H}, I::normal, std}};
  for (int64_t l = 0; l < c_.num_hidden_layers; ++l) block_params(layer_prefix(l), l, p);
  p.push_back({"model.norm.weight", {H}, I::ones, 0, false});
  if (!c_.tie_word_embeddings) p.push_back({"lm_head.weight", {c_.vocab_size, H}, I::normal, std});
  // Multi-token prediction modules, named as DeepSeek-V3's checkpoints (layers after the main ones;
  // the embedding and output head are shared with the main model).
  for (int64_t k = 0; k < c_.num_nextn_predict_layers; ++k) {
    const int64_t l = c_.num_hidden_layers + k;
    const std::string pre = layer_prefix(l);
    p.push_back({pre + "enorm.weight", {H}, I::ones, 0, false});
    p.push_back({pre + "hnorm.weight", {H}, I::ones, 0, false});
    p.push_back({pre + "eh_proj.weight", {H, 2 * H}, I::normal, std});
    block_params(pre, l, p);
    p.push_back({pre + "shared_head.norm.weight", {H}, I::ones, 0, false});
  }
  // With lambda = 0 the MTP modules are not in the training graph: they are kept (checkpoints
  // carry them) but not trained, as PyTorch skips parameters without a gradient.
  if (mtp_weight_ == 0)
    for (ParamSpec& s : p)
      if (s.name.starts_with("model.layers.") && std::stoll(s.name.substr(13)) >= c_.num_hidden_layers) s.trainable = false;
  return p;
}

std::string DeepseekV3::canonical_name(const std::string& name) const {
  // The MTP modules' copies of the shared embedding and head (DeepSeek's files store them).
  static const std::regex shared(R"(model\.layers\.\d+\.(embed_tokens|shared_head\.head)\.weight)");
  if (std::regex_match(name, shared)) return "";
  if (c_.tie_word_embeddings && name == "lm_head.weight") return "";
  return name;
}

// Files hold model.layers.L.mlp.experts.E.{gate,up,down}_proj.weight; the model holds them fused.
void DeepseekV3::from_checkpoint_layout(std::map<std::string, HostTensor>& t) const {
  const int64_t E = c_.n_routed_experts, Im = c_.moe_intermediate_size, H = c_.hidden_size;
  for (int64_t l = 0; l < c_.num_hidden_layers + c_.num_nextn_predict_layers; ++l) {
    if (!is_moe_layer(l)) continue;
    const std::string p = layer_prefix(l) + "mlp.experts.";
    if (t.contains(p + "gate_up_proj") || !t.contains(p + "0.gate_proj.weight")) continue;
    std::vector<float> gate_up(static_cast<size_t>(E * 2 * Im * H)), down(static_cast<size_t>(E * H * Im));
    for (int64_t e = 0; e < E; ++e) {
      const std::string pe = p + std::to_string(e) + ".";
      auto take = [&](const std::string& name, const Shape& shape) {
        auto it = t.find(pe + name);
        check(it != t.end(), "checkpoint: missing tensor '", pe + name, "'");
        check(it->second.shape == shape, "checkpoint: tensor '", pe + name, "' has shape ", shape_str(it->second.shape),
              ", the config needs ", shape_str(shape));
        std::vector<float> v = it->second.to_f32(pe + name);
        t.erase(it);
        return v;
      };
      auto g = take("gate_proj.weight", {Im, H});
      auto u = take("up_proj.weight", {Im, H});
      auto d = take("down_proj.weight", {H, Im});
      std::copy(g.begin(), g.end(), gate_up.begin() + e * 2 * Im * H);
      std::copy(u.begin(), u.end(), gate_up.begin() + e * 2 * Im * H + Im * H);
      std::copy(d.begin(), d.end(), down.begin() + e * H * Im);
    }
    t[p + "gate_up_proj"] = HostTensor::f32({E, 2 * Im, H}, gate_up);
    t[p + "down_proj"] = HostTensor::f32({E, H, Im}, down);
  }
}

void DeepseekV3::to_checkpoint_layout(std::map<std::string, HostTensor>& t) const {
  const int64_t E = c_.n_routed_experts, Im = c_.moe_intermediate_size, H = c_.hidden_size;
  for (int64_t l = 0; l < c_.num_hidden_layers + c_.num_nextn_predict_layers; ++l) {
    if (!is_moe_layer(l)) continue;
    const std::string p = layer_prefix(l) + "mlp.experts.";
    auto gu = t.find(p + "gate_up_proj");
    auto dn = t.find(p + "down_proj");
    if (gu == t.end() || dn == t.end()) continue;
    const std::vector<float> gate_up = gu->second.to_f32(p + "gate_up_proj"), down = dn->second.to_f32(p + "down_proj");
    t.erase(gu);
    t.erase(dn);
    for (int64_t e = 0; e < E; ++e) {
      const std::string pe = p + std::to_string(e) + ".";
      auto slice = [&](const std::vector<float>& v, int64_t start, int64_t n) {
        return std::vector<float>(v.begin() + start, v.begin() + start + n);
      };
      t[pe + "gate_proj.weight"] = HostTensor::f32({Im, H}, slice(gate_up, e * 2 * Im * H, Im * H));
      t[pe + "up_proj.weight"] = HostTensor::f32({Im, H}, slice(gate_up, e * 2 * Im * H + Im * H, Im * H));
      t[pe + "down_proj.weight"] = HostTensor::f32({H, Im}, slice(down, e * H * Im, H * Im));
    }
  }
}

RopeAttrs DeepseekV3::rope_attrs(int64_t rot_offset) const {
  RopeAttrs a;
  a.rot_offset = rot_offset;
  a.rot_dim = c_.qk_rope_head_dim;
  a.theta = c_.rope_theta;
  a.interleaved = c_.rope_interleave;
  if (c_.yarn_factor > 1.0) {
    a.yarn_factor = c_.yarn_factor;
    a.yarn_beta_fast = c_.yarn_beta_fast;
    a.yarn_beta_slow = c_.yarn_beta_slow;
    a.yarn_original_max_position = c_.yarn_original_max_position;
    // transformers: attention_factor = mscale(f, mscale) / mscale(f, mscale_all_dim) when both are
    // given, else mscale(f, 1); it scales cos and sin.
    a.attention_factor = c_.yarn_mscale != 0.0 && c_.yarn_mscale_all_dim != 0.0
                             ? yarn_get_mscale(c_.yarn_factor, c_.yarn_mscale) / yarn_get_mscale(c_.yarn_factor, c_.yarn_mscale_all_dim)
                             : yarn_get_mscale(c_.yarn_factor, 1.0);
  }
  return a;
}

float DeepseekV3::softmax_scale() const {
  double s = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (c_.yarn_factor > 1.0 && c_.yarn_mscale_all_dim != 0.0) {
    const double m = yarn_get_mscale(c_.yarn_factor, c_.yarn_mscale_all_dim);
    s *= m * m;
  }
  return static_cast<float>(s);
}

NodeId DeepseekV3::block(Graph& g, Casts& cast, ModelNodes& m, NodeId x, int64_t layer, int64_t B, int64_t T, GraphMode mode,
                         std::vector<NodeId>& balance) const {
  const std::string pre = layer_prefix(layer);
  auto s = g.scope("layers." + std::to_string(layer));
  auto P = [&](const std::string& n) { return m.params.at(pre + n); };
  const float eps = static_cast<float>(c_.rms_norm_eps);
  const int64_t H = c_.hidden_size, nh = c_.num_attention_heads, dn = c_.qk_nope_head_dim, dr = c_.qk_rope_head_dim;
  const int64_t dv = c_.v_head_dim, L = c_.kv_lora_rank, dqk = qk_head_dim();
  auto linear = [&](NodeId in, const std::string& w, const std::string& name) {
    return g.add(OpKind::matmul, {cast.compute(in), cast.compute(P(w))}, MatmulAttrs{false, true}, name);
  };
  auto rmsnorm = [&](NodeId in, const std::string& w, const std::string& name) {
    return g.add(OpKind::rmsnorm, {in, P(w)}, NormAttrs{eps}, name);
  };
  auto reshape = [&](NodeId in, Shape shape, const std::string& name) {
    return g.add(OpKind::reshape, {in}, ShapeAttrs{std::move(shape)}, name);
  };

  // --- MLA
  NodeId a = rmsnorm(x, "input_layernorm.weight", "input_layernorm");
  NodeId q = c_.q_lora_rank > 0
                 ? linear(rmsnorm(cast.f32(linear(a, "self_attn.q_a_proj.weight", "self_attn.q_a_proj")), "self_attn.q_a_layernorm.weight",
                                  "self_attn.q_a_layernorm"),
                          "self_attn.q_b_proj.weight", "self_attn.q_b_proj")
                 : linear(a, "self_attn.q_proj.weight", "self_attn.q_proj");
  q = g.add(OpKind::rope, {reshape(q, {B, T, nh, dqk}, "self_attn.q_heads"), m.position_ids}, rope_attrs(dn), "self_attn.q_rope");
  q = reshape(q, {B, T, nh * dqk}, "self_attn.q");
  NodeId ckv = linear(a, "self_attn.kv_a_proj_with_mqa.weight", "self_attn.kv_a_proj_with_mqa");
  NodeId latent = rmsnorm(cast.f32(g.add(OpKind::slice_last, {ckv}, SliceAttrs{0, L, L + dr}, "self_attn.kv_latent")),
                          "self_attn.kv_a_layernorm.weight", "self_attn.kv_a_layernorm");
  NodeId kr = g.add(OpKind::slice_last, {ckv}, SliceAttrs{L, dr, L + dr}, "self_attn.k_rope_raw");
  kr = g.add(OpKind::rope, {reshape(kr, {B, T, 1, dr}, "self_attn.k_rope_heads"), m.position_ids}, rope_attrs(0), "self_attn.k_rope_rot");
  kr = reshape(kr, {B, T, dr}, "self_attn.k_rope");
  NodeId attn;
  if (mode == GraphMode::decode) {
    NodeId cache = g.input("self_attn.latent_cache", kv_cache_shape(B));
    m.kv_caches.push_back(cache);
    // The latent cache and its attention stay f32.
    NodeId entries = g.add(OpKind::concat_last, {latent, cast.f32(kr)}, NoAttrs{}, "self_attn.cache_entries");
    attn = g.add(OpKind::attention_latent, {cast.f32(q), entries, cache, cast.f32(P("self_attn.kv_b_proj.weight")), m.cache_len},
                 MlaAttrs{nh, dn, dr, dv, softmax_scale()}, "self_attn.attention");
  } else {
    NodeId kv = linear(latent, "self_attn.kv_b_proj.weight", "self_attn.kv_b_proj");
    NodeId qkv = g.add(OpKind::mla_qkv, {q, kv, kr}, MlaAttrs{nh, dn, dr, dv}, "self_attn.qkv");
    attn = g.add(OpKind::attention, {qkv},
                 AttentionAttrs{static_cast<int>(nh), static_cast<int>(dqk), static_cast<int>(dv), softmax_scale()},
                 "self_attn.attention");
  }
  x = g.add(OpKind::add, {x, cast.f32(linear(attn, "self_attn.o_proj.weight", "self_attn.o_proj"))}, NoAttrs{}, "attn_residual");

  // --- MLP: dense SwiGLU, or shared + routed experts
  NodeId h = rmsnorm(x, "post_attention_layernorm.weight", "post_attention_layernorm");
  auto swiglu_mlp = [&](NodeId in, const std::string& p, const std::string& name) {
    NodeId gate = g.add(OpKind::silu, {linear(in, p + "gate_proj.weight", name + ".gate_proj")}, NoAttrs{}, name + ".act");
    NodeId up = linear(in, p + "up_proj.weight", name + ".up_proj");
    return linear(g.add(OpKind::mul, {gate, up}, NoAttrs{}, name + ".gated"), p + "down_proj.weight", name + ".down_proj");
  };
  NodeId mlp;
  if (!is_moe_layer(layer)) {
    mlp = cast.f32(swiglu_mlp(h, "mlp.", "mlp"));
  } else {
    const RouteAttrs route{c_.n_routed_experts, c_.num_experts_per_tok, c_.n_group, c_.topk_group, c_.norm_topk_prob,
                           static_cast<float>(c_.routed_scaling_factor)};
    NodeId flat = reshape(h, {B * T, H}, "mlp.tokens");
    // The router stays f32 (DeepSeek-V3 keeps its gating in high precision).
    NodeId router = g.add(OpKind::matmul, {flat, cast.f32(P("mlp.gate.weight"))}, MatmulAttrs{false, true}, "mlp.gate");
    NodeId scores = g.add(OpKind::sigmoid, {router}, NoAttrs{}, "mlp.scores");
    NodeId idx = g.add(OpKind::topk_route, {scores, P("mlp.gate.e_score_correction_bias")}, route, "mlp.route");
    m.router_choices.emplace_back(pre + "mlp", idx);
    if (mode == GraphMode::train && c_.seq_aux_loss_alpha > 0) {
      // Sequence-wise balance loss over this layer's affinities and choices, summed over sequences.
      const int64_t E = c_.n_routed_experts, K = c_.num_experts_per_tok;
      NodeId per_seq = g.add(OpKind::seq_balance_loss,
                             {reshape(scores, {B, T, E}, "mlp.balance_scores"), reshape(idx, {B, T, K}, "mlp.balance_ids")},
                             NoAttrs{}, "mlp.balance");
      balance.push_back(g.add(OpKind::sum, {per_seq}, NoAttrs{}, "mlp.balance_sum"));
    }
    NodeId w = g.add(OpKind::route_weights, {scores, idx}, route, "mlp.route_weights");
    NodeId xs = g.add(OpKind::moe_dispatch, {cast.compute(flat), idx}, route, "mlp.dispatch");
    // Expert parallelism: the rows travel to their experts' owners and back (ops/expert_parallel.h).
    const ExpertParallelAttrs ep{ep_ranks_, c_.n_routed_experts, c_.num_experts_per_tok};
    NodeId ids = idx;
    if (ep_ranks_ > 1) {
      xs = g.add(OpKind::ep_dispatch, {xs, idx}, ep, "mlp.ep_dispatch");
      ids = g.add(OpKind::ep_ids, {idx}, ep, "mlp.ep_ids");
    }
    NodeId gu = g.add(OpKind::grouped_matmul, {xs, cast.compute(P("mlp.experts.gate_up_proj")), ids}, GroupedMatmulAttrs{},
                      "mlp.experts.gate_up");
    NodeId act = g.add(OpKind::swiglu, {gu}, NoAttrs{}, "mlp.experts.act");
    NodeId ys = g.add(OpKind::grouped_matmul, {act, cast.compute(P("mlp.experts.down_proj")), ids}, GroupedMatmulAttrs{},
                      "mlp.experts.down");
    if (ep_ranks_ > 1) ys = g.add(OpKind::ep_combine, {ys, idx}, ep, "mlp.ep_combine");
    NodeId routed = g.add(OpKind::moe_combine, {cast.f32(ys), w, idx}, route, "mlp.combine");
    if (c_.n_shared_experts > 0)
      routed = g.add(OpKind::add, {routed, cast.f32(swiglu_mlp(flat, "mlp.shared_experts.", "mlp.shared_experts"))}, NoAttrs{}, "mlp.sum");
    mlp = reshape(routed, {B, T, H}, "mlp.out");
  }
  return g.add(OpKind::add, {x, mlp}, NoAttrs{}, "mlp_residual");
}

ModelNodes DeepseekV3::build(Graph& g, int64_t B, int64_t T, GraphMode mode) const {
  check(T <= c_.max_position_embeddings, "deepseek_v3: sequence length ", T, " exceeds max_position_embeddings ",
        c_.max_position_embeddings);
  ModelNodes m;
  for (const auto& s : param_specs()) m.params[s.name] = g.param(s.name, s.shape, param_dtype(s));
  Casts cast(g, compute_dtype_);
  m.input_ids = g.input("input_ids", {B, T}, DType::i32);
  m.position_ids = g.input("position_ids", mode == GraphMode::decode ? Shape{B, T} : Shape{T}, DType::i32);
  if (mode == GraphMode::train) m.labels = g.input("labels", {B, T}, DType::i32);
  if (mode == GraphMode::decode) m.cache_len = g.input("cache_len", {B}, DType::i32);
  const float eps = static_cast<float>(c_.rms_norm_eps);
  const NodeId embed = m.params.at("model.embed_tokens.weight");
  const NodeId head = m.params.at(c_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");

  auto s = g.scope("model");
  NodeId x = cast.f32(g.add(OpKind::embedding, {m.input_ids, embed}, NoAttrs{}, "embed_tokens"));
  std::vector<NodeId> balance;  // per MoE layer: the balance loss summed over the batch's sequences
  for (int64_t l = 0; l < c_.num_hidden_layers; ++l) x = block(g, cast, m, x, l, B, T, mode, balance);
  const NodeId hidden = x;
  x = g.add(OpKind::rmsnorm, {x, m.params.at("model.norm.weight")}, NormAttrs{eps}, "norm");
  m.logits = cast.f32(g.add(OpKind::matmul, {cast.compute(x), cast.compute(head)}, MatmulAttrs{false, true}, "lm_head"));
  if (mode != GraphMode::train) return m;
  m.loss = m.lm_loss = g.add(OpKind::cross_entropy, {m.logits, m.labels}, NoAttrs{}, "loss");
  if (c_.num_nextn_predict_layers > 0 && mtp_weight_ > 0) add_mtp(g, cast, m, hidden, B, T, balance);
  if (balance.empty()) return m;

  // Sequence-wise balance loss: per MoE layer (the MTP modules' included) the mean over the batch's
  // sequences of sum_i f_i P_i; reported summed over layers (1 per layer when balanced), weighted
  // by alpha in the objective.
  NodeId total = balance[0];
  for (size_t i = 1; i < balance.size(); ++i)
    total = g.add(OpKind::add, {total, balance[i]}, NoAttrs{}, "balance_loss_sum." + std::to_string(i));
  NodeId bal = g.add(OpKind::scale, {total}, ScaleAttrs{static_cast<float>(1.0 / static_cast<double>(B))}, "balance_loss");
  m.extra_losses.emplace_back("balance_loss", bal);
  m.loss = g.add(OpKind::add,
                 {m.loss, g.add(OpKind::scale, {bal}, ScaleAttrs{static_cast<float>(c_.seq_aux_loss_alpha)}, "balance_weighted")},
                 NoAttrs{}, "balanced_objective");
  return m;
}

void DeepseekV3::add_mtp(Graph& g, Casts& cast, ModelNodes& m, NodeId hidden, int64_t B, int64_t T, std::vector<NodeId>& balance) const {
  const GraphMode mode = GraphMode::train;
  const float eps = static_cast<float>(c_.rms_norm_eps);
  const NodeId embed = m.params.at("model.embed_tokens.weight");
  const NodeId head = m.params.at(c_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");

  // Multi-token prediction: depth k combines the previous depth's hidden state at position i with
  // the embedding of token i+k and predicts token i+k+1 (DeepSeek-V3 section 2.2):
  //   h_k = block_k(eh_proj([enorm(emb(t_{i+k})) ; hnorm(h_{k-1})])), logits_k = head(norm_k(h_k)).
  NodeId prev = hidden, mtp_sum = -1;
  for (int64_t k = 1; k <= c_.num_nextn_predict_layers; ++k) {
    const int64_t l = c_.num_hidden_layers + k - 1;
    const std::string pre = layer_prefix(l);
    auto ks = g.scope("mtp." + std::to_string(k));
    // labels hold token i+1; token i+k is labels shifted by k-1 (token 0 past the end: its
    // prediction target is ignored, and causal attention keeps it from earlier positions).
    NodeId toks = k == 1 ? m.labels : g.add(OpKind::shift_tokens, {m.labels}, ShiftAttrs{k - 1, 0}, "input_ids");
    NodeId targets = g.add(OpKind::shift_tokens, {m.labels}, ShiftAttrs{k, -1}, "labels");
    NodeId e = g.add(OpKind::rmsnorm, {cast.f32(g.add(OpKind::embedding, {toks, embed}, NoAttrs{}, "embed")), m.params.at(pre + "enorm.weight")},
                     NormAttrs{eps}, "enorm");
    NodeId hn = g.add(OpKind::rmsnorm, {prev, m.params.at(pre + "hnorm.weight")}, NormAttrs{eps}, "hnorm");
    NodeId h = cast.f32(g.add(OpKind::matmul,
                              {cast.compute(g.add(OpKind::concat_last, {e, hn}, NoAttrs{}, "concat")),
                               cast.compute(m.params.at(pre + "eh_proj.weight"))},
                              MatmulAttrs{false, true}, "eh_proj"));
    h = block(g, cast, m, h, l, B, T, mode, balance);
    NodeId normed = g.add(OpKind::rmsnorm, {h, m.params.at(pre + "shared_head.norm.weight")}, NormAttrs{eps}, "shared_head.norm");
    NodeId logits = cast.f32(
        g.add(OpKind::matmul, {cast.compute(normed), cast.compute(head)}, MatmulAttrs{false, true}, "shared_head.head"));
    NodeId loss = g.add(OpKind::cross_entropy, {logits, targets}, NoAttrs{}, "loss");
    mtp_sum = mtp_sum < 0 ? loss : g.add(OpKind::add, {mtp_sum, loss}, NoAttrs{}, "loss_sum");
    prev = h;
  }
  const double D = static_cast<double>(c_.num_nextn_predict_layers);
  NodeId mtp = g.add(OpKind::scale, {mtp_sum}, ScaleAttrs{static_cast<float>(1.0 / D)}, "mtp_loss");
  m.extra_losses.emplace_back("mtp_loss", mtp);
  m.loss = g.add(OpKind::add, {m.lm_loss, g.add(OpKind::scale, {mtp}, ScaleAttrs{static_cast<float>(mtp_weight_)}, "mtp_weighted")},
                 NoAttrs{}, "objective");
}

double DeepseekV3::train_flops_per_token(int64_t T) const {
  // 6 FLOPs per active matmul parameter per token, plus attention (QK^T and PV, causal: T/2 keys on
  // average) forward 2 * 2 * T/2 * H * (dqk + dv) / 2 ... counted as 3 * 2 * T * H * (dqk + dv) / 2.
  const double nh = static_cast<double>(c_.num_attention_heads);
  const double attn = 3.0 * static_cast<double>(T) * nh * static_cast<double>(qk_head_dim() + c_.v_head_dim);
  return 6.0 * static_cast<double>(active_params_per_token()) + attn * static_cast<double>(c_.num_hidden_layers);
}

void DeepseekV3::set_expert_parallel(int ranks, int rank) {
  check(ranks >= 1 && c_.n_routed_experts % ranks == 0, "--expert-parallel ", ranks, ": n_routed_experts (",
        c_.n_routed_experts, ") must split evenly over the ranks");
  check(ranks == 1 || c_.num_hidden_layers > c_.first_k_dense_replace, "--expert-parallel ", ranks,
        ": the model has no MoE layers");
  ep_ranks_ = ranks;  // which share (rank) only matters to whoever slices the weights
}

int64_t DeepseekV3::active_params_per_token() const {
  int64_t n = 0;
  for (const auto& s : param_specs()) {
    if (s.shape.size() < 2 || !s.trainable) continue;  // norms, biases
    if (s.name == "model.embed_tokens.weight") continue;  // a lookup, not a matmul
    if (s.name.find(".mlp.experts.") != std::string::npos) {
      n += numel(s.shape) / s.shape[0] * c_.num_experts_per_tok;
      continue;
    }
    if (s.name.find("model.layers.") == 0 && std::stoll(s.name.substr(13)) >= c_.num_hidden_layers) continue;  // MTP
    n += numel(s.shape);
  }
  if (c_.tie_word_embeddings) n += c_.vocab_size * c_.hidden_size;
  return n;
}

int64_t DeepseekV3::kv_cache_bytes_per_token() const {
  return c_.num_hidden_layers * (c_.kv_lora_rank + c_.qk_rope_head_dim) * 4;
}

int64_t DeepseekV3::full_kv_bytes_per_token() const {
  return c_.num_hidden_layers * c_.num_attention_heads * (qk_head_dim() + c_.v_head_dim) * 4;
}

}  // namespace tandem
