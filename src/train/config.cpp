#include "train/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <type_traits>

#include "core/error.h"
#include "io/json_value.h"

namespace tandem {

namespace {

const std::map<std::string, std::string>& presets() {
  // nanoGPT's CPU Shakespeare recipe (char vocab), and GPT-2 small.
  static const std::map<std::string, std::string> p{
      {"baby-gpt", R"({"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 64,
        "block_size": 64, "batch_size": 12, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_steps": 100,
        "lr_decay_steps": 2000, "max_steps": 2000, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99,
        "grad_clip": 1.0, "eval_interval": 250, "eval_steps": 20})"},
      {"gpt2-124m", R"({"model_type": "gpt2", "n_layer": 12, "n_head": 12, "n_embd": 768, "n_positions": 1024,
        "vocab_size": 50257, "block_size": 1024, "batch_size": 4, "learning_rate": 6e-4, "min_lr": 6e-5,
        "warmup_steps": 200, "lr_decay_steps": 5000, "max_steps": 5000, "weight_decay": 0.1, "beta1": 0.9,
        "beta2": 0.95, "grad_clip": 1.0, "eval_interval": 500, "eval_steps": 20})"},
      // DeepSeek-V3 in miniature: MLA with query compression, 3 of 4 layers MoE (8 routed experts in 4
      // groups, top-2 from 2 groups, 1 shared), one MTP module. Sized for README command one.
      {"ds-tiny", R"({"model_type": "deepseek_v3", "hidden_size": 128, "intermediate_size": 384,
        "moe_intermediate_size": 96, "num_hidden_layers": 4, "num_attention_heads": 4, "q_lora_rank": 64,
        "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16, "n_routed_experts": 8,
        "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2,
        "routed_scaling_factor": 1.0, "num_nextn_predict_layers": 1, "max_position_embeddings": 64,
        "block_size": 64, "batch_size": 12, "learning_rate": 2e-3, "min_lr": 2e-4, "warmup_steps": 100,
        "lr_decay_steps": 1500, "max_steps": 1500, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0,
        "eval_interval": 250, "eval_steps": 20, "mtp_loss_weight": 0.3, "router_bias_update_rate": 0.001})"},
      // About 100M parameters, about 20M active per token.
      {"ds-small", R"({"model_type": "deepseek_v3", "hidden_size": 512, "intermediate_size": 1536,
        "moe_intermediate_size": 256, "num_hidden_layers": 8, "num_attention_heads": 8, "q_lora_rank": 192,
        "kv_lora_rank": 128, "qk_nope_head_dim": 32, "qk_rope_head_dim": 32, "v_head_dim": 32, "n_routed_experts": 32,
        "n_shared_experts": 1, "num_experts_per_tok": 4, "first_k_dense_replace": 1, "n_group": 4, "topk_group": 2,
        "routed_scaling_factor": 2.5, "num_nextn_predict_layers": 1, "max_position_embeddings": 1024,
        "block_size": 256, "batch_size": 8, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_steps": 200,
        "lr_decay_steps": 5000, "max_steps": 5000, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
        "eval_interval": 500, "eval_steps": 20, "mtp_loss_weight": 0.3, "router_bias_update_rate": 0.001})"},
  };
  return p;
}

// Model fields accepted per model_type (HF config names).
const std::map<std::string, std::set<std::string>>& model_keys() {
  static const std::map<std::string, std::set<std::string>> k{
      {"gpt2", {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "layer_norm_epsilon"}},
      {"deepseek_v3",
       {"vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
        "n_routed_experts", "n_shared_experts", "num_experts_per_tok", "first_k_dense_replace", "n_group", "topk_group",
        "routed_scaling_factor", "norm_topk_prob", "rope_theta", "rope_scaling", "rms_norm_eps", "num_nextn_predict_layers",
        "tie_word_embeddings", "max_position_embeddings", "rope_interleave", "initializer_range",
        // tandem's, not transformers': alpha of the sequence-wise balance loss (DeepseekV3Config
        // carries it, so it reaches the training graph and the checkpoint's config.json).
        "seq_aux_loss_alpha"}},
  };
  return k;
}

template <typename T>
void take(const nlohmann::json& j, const char* key, T& field, const std::string& where) {
  if (j.contains(key)) field = json_value<T>(j.at(key), where, "config key", key);
}

}  // namespace

std::vector<std::string> TrainConfig::preset_names() {
  std::vector<std::string> n;
  for (const auto& [k, v] : presets()) n.push_back(k);
  return n;
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j, const std::string& where) {
  check(j.is_object(), where, ": config must be a JSON object");
  TrainConfig c;
  check(!j.contains("model_type") || j["model_type"].is_string(), where, ": config key 'model_type' must be a string, got ",
        j.value("model_type", nlohmann::json()).dump());
  const std::string type = j.value("model_type", "gpt2");
  auto mk = model_keys().find(type);
  check(mk != model_keys().end(), where, ": model_type '", type, "' is not supported (supported: gpt2, deepseek_v3)");
  static const std::set<std::string> train_keys{
      "batch_size", "block_size", "max_steps", "warmup_steps", "lr_decay_steps", "grad_accum", "eval_interval",
      "eval_steps", "learning_rate", "min_lr", "weight_decay", "beta1", "beta2", "adam_eps", "grad_clip",
      "guard", "guard_spike_k", "guard_window", "guard_rollback_after", "mtp_loss_weight", "router_bias_update_rate", "precision"};
  c.model = {{"model_type", type}};
  for (const auto& [k, v] : j.items()) {
    if (k == "model_type" || train_keys.contains(k)) continue;
    check(mk->second.contains(k), where, ": unknown config key '", k, "'");
    c.model[k] = v;
  }
  take(j, "batch_size", c.batch_size, where);
  take(j, "block_size", c.block_size, where);
  take(j, "max_steps", c.max_steps, where);
  take(j, "warmup_steps", c.warmup_steps, where);
  take(j, "lr_decay_steps", c.lr_decay_steps, where);
  take(j, "grad_accum", c.grad_accum, where);
  take(j, "eval_interval", c.eval_interval, where);
  take(j, "eval_steps", c.eval_steps, where);
  take(j, "learning_rate", c.learning_rate, where);
  take(j, "min_lr", c.min_lr, where);
  take(j, "weight_decay", c.weight_decay, where);
  take(j, "beta1", c.beta1, where);
  take(j, "beta2", c.beta2, where);
  take(j, "adam_eps", c.adam_eps, where);
  take(j, "grad_clip", c.grad_clip, where);
  take(j, "guard", c.guard, where);
  take(j, "guard_spike_k", c.guard_spike_k, where);
  take(j, "guard_window", c.guard_window, where);
  take(j, "guard_rollback_after", c.guard_rollback_after, where);
  take(j, "mtp_loss_weight", c.mtp_loss_weight, where);
  take(j, "router_bias_update_rate", c.router_bias_update_rate, where);
  take(j, "precision", c.precision, where);
  check(c.precision == "f32" || c.precision == "bf16", where, ": precision '", c.precision, "' is not f32 or bf16");
  check(c.mtp_loss_weight >= 0 && c.router_bias_update_rate >= 0, where,
        ": mtp_loss_weight and router_bias_update_rate must be non-negative");
  check(c.batch_size > 0 && c.block_size > 0 && c.grad_accum > 0 && c.max_steps > 0, where,
        ": batch_size, block_size, grad_accum and max_steps must be positive");
  check(c.eval_interval > 0 && c.eval_steps > 0, where, ": eval_interval and eval_steps must be positive");
  check(c.warmup_steps >= 0 && c.learning_rate > 0 && c.min_lr >= 0, where,
        ": warmup_steps, learning_rate and min_lr must be non-negative (learning_rate positive)");
  check(c.beta1 >= 0 && c.beta1 < 1 && c.beta2 >= 0 && c.beta2 < 1, where, ": beta1 and beta2 must be in [0, 1)");
  check(c.guard_spike_k >= 0 && c.guard_window > 0 && c.guard_rollback_after >= 0, where,
        ": guard_spike_k and guard_rollback_after must be non-negative, guard_window positive");
  return c;
}

TrainConfig TrainConfig::load(const std::string& source, const std::vector<std::string>& sets) {
  nlohmann::json j;
  std::string where;
  if (auto it = presets().find(source); it != presets().end()) {
    j = nlohmann::json::parse(it->second);
    where = "preset " + source;
  } else {
    std::ifstream f(source);
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    check(f.good(), "--config '", source, "' is neither a preset (", names, ") nor a readable file");
    try {
      j = nlohmann::json::parse(f);
    } catch (const std::exception& e) {
      throw Error(source + ": not valid JSON: " + e.what());
    }
    where = source;
  }
  check(j.is_object(), where, ": config must be a JSON object");
  for (const auto& s : sets) {
    auto eq = s.find('=');
    check(eq != std::string::npos && eq > 0, "--set '", s, "': expected key=value");
    const std::string key = s.substr(0, eq), val = s.substr(eq + 1);
    try {
      (void)nlohmann::json(s).dump();  // JSON strings must be UTF-8: configs are written back as JSON
    } catch (const nlohmann::json::exception&) {
      throw Error("--set " + nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
                  ": not valid UTF-8");
    }
    try {
      j[key] = nlohmann::json::parse(val);
    } catch (const std::exception&) {
      j[key] = val;
    }
    where += " + --set " + key;
  }
  return from_json(j, where);
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = model;
  j["batch_size"] = batch_size;
  j["block_size"] = block_size;
  j["max_steps"] = max_steps;
  j["warmup_steps"] = warmup_steps;
  j["lr_decay_steps"] = lr_decay_steps;
  j["grad_accum"] = grad_accum;
  j["eval_interval"] = eval_interval;
  j["eval_steps"] = eval_steps;
  j["learning_rate"] = learning_rate;
  j["min_lr"] = min_lr;
  j["weight_decay"] = weight_decay;
  j["beta1"] = beta1;
  j["beta2"] = beta2;
  j["adam_eps"] = adam_eps;
  j["grad_clip"] = grad_clip;
  j["guard"] = guard;
  j["guard_spike_k"] = guard_spike_k;
  j["guard_window"] = guard_window;
  j["guard_rollback_after"] = guard_rollback_after;
  j["mtp_loss_weight"] = mtp_loss_weight;
  j["router_bias_update_rate"] = router_bias_update_rate;
  j["precision"] = precision;
  return j;
}

DType compute_dtype(const TrainConfig& c) { return c.precision == "bf16" ? DType::bf16 : DType::f32; }

double learning_rate_at(const TrainConfig& c, int64_t it) {
  if (it < c.warmup_steps)
    return c.learning_rate * static_cast<double>(it + 1) / static_cast<double>(c.warmup_steps + 1);
  if (it > c.lr_decay_steps) return c.min_lr;
  const double span = static_cast<double>(c.lr_decay_steps - c.warmup_steps);
  const double ratio = span > 0 ? static_cast<double>(it - c.warmup_steps) / span : 1.0;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * ratio));
  return c.min_lr + coeff * (c.learning_rate - c.min_lr);
}

}  // namespace tandem
