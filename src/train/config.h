// Training configuration: one flat JSON object holding the model's HF config fields and the
// training recipe. Presets by name (baby-gpt, gpt2-124m) or a JSON file; `--set key=value`
// overrides. Unknown keys are errors.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace tandem {

struct TrainConfig {
  nlohmann::json model;  // HF config fields, model_type included
  int64_t batch_size = 12, block_size = 64, max_steps = 2000, warmup_steps = 100, lr_decay_steps = 2000;
  int64_t grad_accum = 1, eval_interval = 250, eval_steps = 20;
  double learning_rate = 1e-3, min_lr = 1e-4, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.99, adam_eps = 1e-8;
  double grad_clip = 1.0;
  // Training guards (train/guards.h): skip updates with a non-finite loss or gradient norm, or a
  // loss above median + guard_spike_k robust deviations of the last guard_window accepted losses
  // (0: no spike check); roll back after guard_rollback_after bad steps in a row (0: never).
  bool guard = true;
  double guard_spike_k = 8.0;
  int64_t guard_window = 50, guard_rollback_after = 3;
  // DeepSeek: weight of the multi-token-prediction loss (lambda); router bias step gamma of the
  // auxiliary-loss-free balancing (bias_i += gamma * sign(mean load - load_i) after each step; 0: off).
  double mtp_loss_weight = 0.3, router_bias_update_rate = 0.001;
  // Compute precision (models/precision.h): "f32", or "bf16" mixed precision (bf16 matmuls and
  // activations between them; f32 master weights, optimizer, residual stream, norms and loss).
  std::string precision = "f32";

  // `source`: a preset name or a JSON file path; `sets`: "key=value" overrides (value is JSON if it
  // parses as JSON, else a string).
  static TrainConfig load(const std::string& source, const std::vector<std::string>& sets);
  static TrainConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;  // flat, as accepted by from_json
  static std::vector<std::string> preset_names();
};

// The compute dtype of a config's precision.
DType compute_dtype(const TrainConfig& c);

// nanoGPT's schedule for iteration `it` (0-based): linear warmup, cosine decay to min_lr, then flat.
double learning_rate_at(const TrainConfig& c, int64_t it);

}  // namespace tandem
