// GPT-2: pre-LN transformer, learned positions, tied input/output embeddings, GELU (tanh), biases
// everywhere. Parameter names and layouts are transformers' GPT2LMHeadModel (Conv1D weights are
// [in, out], so a projection is x . W + b).
#pragma once
#include "models/model.h"

namespace tandem {

struct GPT2Config {
  int64_t vocab_size = 50257, n_positions = 1024, n_embd = 768, n_layer = 12, n_head = 12;
  float layer_norm_epsilon = 1e-5f;
};

class GPT2 final : public Model {
 public:
  explicit GPT2(GPT2Config c);
  static std::unique_ptr<GPT2> from_hf(const nlohmann::json& j, const std::string& where);
  const GPT2Config& config() const { return c_; }

  std::string type() const override { return "gpt2"; }
  nlohmann::json hf_config() const override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t context_length() const override { return c_.n_positions; }
  std::vector<ParamSpec> param_specs() const override;
  ModelNodes build(Graph& g, int64_t B, int64_t T, GraphMode mode) const override;
  Shape kv_cache_shape(int64_t B) const override { return {B, c_.n_positions, 2 * c_.n_embd}; }
  std::string canonical_name(const std::string& name) const override;
  double train_flops_per_token(int64_t T) const override;
  int64_t kv_cache_bytes_per_token() const override { return c_.n_layer * 2 * c_.n_embd * 4; }

 private:
  GPT2Config c_;
};

}  // namespace tandem
