// A language model architecture: its HF config, its parameters (HF names) and how it builds its
// graph. Every architecture (GPT-2 now, DeepSeek-V3 next) implements this interface; training,
// generation, evaluation and checkpoints only talk to it.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/graph.h"
#include "io/safetensors.h"

namespace tandem {

// Bounds on the sizes a config may ask for (files come from anywhere): far beyond any real model,
// and small enough that no parameter's element count (at most three widths multiplied) overflows.
inline constexpr int64_t kMaxModelDim = int64_t{1} << 20;      // widths, heads, experts, ranks
inline constexpr int64_t kMaxModelTokens = int64_t{1} << 24;   // vocab_size, positions
inline constexpr int64_t kMaxModelLayers = 1024;

struct ParamSpec {
  enum class Init { normal, zeros, ones };
  std::string name;  // the HF state-dict name
  Shape shape;
  Init init = Init::normal;
  float std = 0.02f;  // for Init::normal
  bool decay = true;  // AdamW weight decay applies (matrices and embeddings, not norms or biases)
  bool trainable = true;  // false: a buffer updated outside the gradient (MoE routing bias)
  // Stays f32 when serving converts weights (--weights bf16|q8_0): the MoE router, whose top-k
  // choice flips on near-ties that rounding its weights would tip (llama.cpp keeps it f32 too).
  bool keep_f32 = false;
};

enum class GraphMode {
  train,   // input_ids, labels -> loss (logits kept as an intermediate)
  logits,  // input_ids -> logits
  decode,  // input_ids [B, T] at position_ids [B, T], with per-layer KV caches and per-sequence
           // cache_len [B] -> logits [B, T, V], or [B, 1, V] (the last position only) where the
           // model computes no more (GPT-2); the generator reads the last row either way
};

struct ModelNodes {
  NodeId input_ids = -1, position_ids = -1, labels = -1, logits = -1, cache_len = -1;
  NodeId loss = -1;     // the training objective (backward starts here)
  NodeId lm_loss = -1;  // next-token cross-entropy: what `loss` and `val_loss` report
  std::map<std::string, NodeId> params;  // by HF name
  std::vector<NodeId> kv_caches;         // decode mode: one per layer
  std::vector<std::pair<std::string, NodeId>> extra_losses;  // reported beside the loss (e.g. mtp_loss)
  std::vector<std::pair<std::string, NodeId>> router_choices;  // MoE layer prefix -> expert ids [N, K]
};

class Model {
 public:
  virtual ~Model() = default;
  virtual std::string type() const = 0;  // HF model_type
  virtual nlohmann::json hf_config() const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t context_length() const = 0;
  virtual std::vector<ParamSpec> param_specs() const = 0;
  // Builds the graph for a batch of B sequences of T tokens.
  virtual ModelNodes build(Graph& g, int64_t B, int64_t T, GraphMode mode) const = 0;
  // Shape of one layer's KV cache for B sequences (decode mode).
  virtual Shape kv_cache_shape(int64_t B) const = 0;
  // Maps a tensor name found in a checkpoint to our parameter name; "" means "ignore it"
  // (buffers such as GPT-2's attn.bias mask, or a tied lm_head).
  virtual std::string canonical_name(const std::string& name) const { return name; }
  // Training FLOPs per token (forward + backward) at sequence length T, for throughput reports.
  virtual double train_flops_per_token(int64_t T) const = 0;
  // Checkpoint layout <-> parameter layout, for architectures whose files split what the model
  // holds fused (DeepSeek's per-expert matrices): applied after loading / before saving tensors.
  virtual void from_checkpoint_layout(std::map<std::string, HostTensor>& tensors) const {}
  virtual void to_checkpoint_layout(std::map<std::string, HostTensor>& tensors) const {}
  // Weight of auxiliary prediction losses in the training objective (DeepSeek's multi-token
  // prediction); architectures without them ignore it.
  virtual void set_mtp_loss_weight(double) {}
  // Expert parallelism over `ranks` ranks (ops/expert_parallel.h): this rank's instance holds
  // only its share of every routed-expert tensor (dim 0 split evenly) and its graphs exchange
  // tokens with the other ranks. Architectures without routed experts refuse ranks > 1.
  virtual void set_expert_parallel(int ranks, int rank);
  // Bytes one token occupies in the decoding cache (all layers).
  virtual int64_t kv_cache_bytes_per_token() const = 0;

  // Precision of the graphs build() makes (models/precision.h): f32, or bf16 mixed precision.
  void set_compute_dtype(DType dt) { compute_dtype_ = dt; }
  DType compute_dtype() const { return compute_dtype_; }
  // The dtype weights are bound in: f32 (the master) for training; serving may bind matrices
  // (parameters of rank >= 2, except those marked keep_f32) converted at load: bf16, or q8_0 for
  // 2-D matrices whose rows are whole blocks of 32 (3-D expert stacks and odd widths stay f32 under
  // q8_0).
  void set_weight_dtype(DType dt) { weight_dtype_ = dt; }
  DType param_dtype(const ParamSpec& s) const {
    if (s.shape.size() < 2 || s.keep_f32) return DType::f32;
    if (weight_dtype_ == DType::q8_0) return s.shape.size() == 2 && s.shape.back() % kQ8Block == 0 ? DType::q8_0 : DType::f32;
    return weight_dtype_;
  }

 protected:
  DType compute_dtype_ = DType::f32, weight_dtype_ = DType::f32;
};

inline void Model::set_expert_parallel(int ranks, int) {
  check(ranks == 1, "--expert-parallel ", ranks, ": model type '", type(), "' has no routed experts");
}

// Builds the model described by an HF config.json object; errors name `where` and the field.
std::unique_ptr<Model> model_from_hf_config(const nlohmann::json& config, const std::string& where);

}  // namespace tandem
