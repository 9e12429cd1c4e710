// DeepSeek-V3: multi-head latent attention (MLA), DeepSeekMoE (shared + fine-grained routed
// experts, sigmoid group-limited routing with a selection-only bias), multi-token prediction.
// Config fields are transformers' DeepseekV3Config; parameter names are DeepseekV3ForCausalLM's
// (experts fused as mlp.experts.gate_up_proj [E, 2I, H] and mlp.experts.down_proj [E, H, I], as
// transformers holds them; checkpoint files carry one matrix per expert, as DeepSeek ships them).
// Where DeepSeek's reference code and transformers differ, this follows transformers
// (docs/deepseek.md lists the differences).
#pragma once
#include <optional>

#include "models/model.h"
#include "models/precision.h"

namespace tandem {

struct DeepseekV3Config {
  int64_t vocab_size = 129280, hidden_size = 7168, intermediate_size = 18432, moe_intermediate_size = 2048;
  int64_t num_hidden_layers = 61, num_attention_heads = 128;
  int64_t q_lora_rank = 1536;  // 0: no query compression (q_proj), as a null q_lora_rank
  int64_t kv_lora_rank = 512, qk_nope_head_dim = 128, qk_rope_head_dim = 64, v_head_dim = 128;
  int64_t n_routed_experts = 256, n_shared_experts = 1, num_experts_per_tok = 8, first_k_dense_replace = 3;
  int64_t n_group = 8, topk_group = 4, num_nextn_predict_layers = 1, max_position_embeddings = 4096;
  double routed_scaling_factor = 2.5, rms_norm_eps = 1e-6, rope_theta = 10000.0, initializer_range = 0.02;
  bool norm_topk_prob = true, tie_word_embeddings = false, rope_interleave = true;
  // YaRN (rope_scaling / rope_parameters with rope_type "yarn"); factor 1 means plain RoPE.
  double yarn_factor = 1.0, yarn_beta_fast = 32.0, yarn_beta_slow = 1.0, yarn_mscale = 0.0, yarn_mscale_all_dim = 0.0;
  int64_t yarn_original_max_position = 0;
  std::optional<int64_t> bos_token_id, eos_token_id;
  // tandem's training knob, not a transformers field: alpha of DeepSeek-V3's sequence-wise balance
  // loss (eqs. 17-20), summed over the MoE layers into the training objective; 0 leaves it out of
  // the graph. Written to config.json only when non-zero (transformers ignores it).
  double seq_aux_loss_alpha = 0.0;
};

class DeepseekV3 final : public Model {
 public:
  explicit DeepseekV3(DeepseekV3Config c);
  static std::unique_ptr<DeepseekV3> from_hf(const nlohmann::json& j, const std::string& where);
  const DeepseekV3Config& config() const { return c_; }
  // Weight of the multi-token-prediction loss in the objective (DeepSeek-V3's lambda); 0 leaves
  // the MTP modules out of the training graph.
  void set_mtp_loss_weight(double w) override { mtp_weight_ = w; }
  void set_expert_parallel(int ranks, int rank) override;

  std::string type() const override { return "deepseek_v3"; }
  nlohmann::json hf_config() const override;
  int64_t vocab_size() const override { return c_.vocab_size; }
  int64_t context_length() const override { return c_.max_position_embeddings; }
  std::vector<ParamSpec> param_specs() const override;
  ModelNodes build(Graph& g, int64_t B, int64_t T, GraphMode mode) const override;
  Shape kv_cache_shape(int64_t B) const override { return {B, c_.max_position_embeddings, c_.kv_lora_rank + c_.qk_rope_head_dim}; }
  std::string canonical_name(const std::string& name) const override;
  double train_flops_per_token(int64_t T) const override;
  void from_checkpoint_layout(std::map<std::string, HostTensor>& tensors) const override;
  void to_checkpoint_layout(std::map<std::string, HostTensor>& tensors) const override;
  int64_t kv_cache_bytes_per_token() const override;
  // What full per-head K/V would take per token (for the latent cache's report).
  int64_t full_kv_bytes_per_token() const;
  // Parameters a token activates (shared parts + top-k experts), for the presets' report.
  int64_t active_params_per_token() const;

 private:
  int ep_ranks_ = 1;  // expert parallelism: each rank holds n_routed_experts / ep_ranks_ experts
  bool is_moe_layer(int64_t layer) const { return layer >= c_.first_k_dense_replace; }
  int64_t qk_head_dim() const { return c_.qk_nope_head_dim + c_.qk_rope_head_dim; }
  void block_params(const std::string& prefix, int64_t layer, std::vector<ParamSpec>& out) const;
  // `balance`: where an MoE layer adds its summed per-sequence balance loss (train mode with alpha > 0).
  NodeId block(Graph& g, Casts& cast, ModelNodes& m, NodeId x, int64_t layer, int64_t B, int64_t T, GraphMode mode,
               std::vector<NodeId>& balance) const;
  // The multi-token-prediction modules on the main model's last hidden state (train mode).
  void add_mtp(Graph& g, Casts& cast, ModelNodes& m, NodeId hidden, int64_t B, int64_t T, std::vector<NodeId>& balance) const;
  RopeAttrs rope_attrs(int64_t rot_offset) const;
  float softmax_scale() const;

  DeepseekV3Config c_;
  double mtp_weight_ = 0.3;
};

}  // namespace tandem
