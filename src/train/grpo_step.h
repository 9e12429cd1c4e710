// The graphs a GRPO step runs, on the model's logits: per-token NLL (forward only, for the current,
// old and reference log-probabilities) and the weighted token loss sum_t w_t * nll_t with its
// parameter gradients (train/grpo_loss.h computes the weights). Both bind the ParamStore's tensors,
// so they see every optimizer step in place.
#pragma once
#include <memory>
#include <span>

#include "core/autodiff.h"
#include "core/program.h"
#include "models/params.h"

namespace tandem {

// Appends token_nll(logits, labels) [B, T], mul by weights [B, T], sum -> []: the weighted loss.
struct WeightedNllNodes {
  NodeId labels = -1, weights = -1, nll = -1, loss = -1;
};
WeightedNllNodes add_weighted_nll(Graph& g, NodeId logits, const Shape& rows);

// nll[b, t] = -log p(labels[b, t] | ids[b, <= t]); 0 where labels < 0.
class TokenNllProgram {
 public:
  TokenNllProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T);
  std::vector<float> run(std::span<const int32_t> input_ids, std::span<const int32_t> labels);

 private:
  Graph graph_;
  ModelNodes nodes_;
  NodeId nll_ = -1;
  std::unique_ptr<Program> program_;
  Tensor ids_, labels_;
};

// Forward and backward of sum_t weights[t] * nll[t]; grad(i) as TrainingProgram's.
class WeightedNllProgram {
 public:
  WeightedNllProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T);
  // Returns the surrogate's value (the objective's value comes from the host, train/grpo_loss.h).
  double run(std::span<const int32_t> input_ids, std::span<const int32_t> labels, std::span<const float> weights);
  const Tensor& grad(size_t param_index) const;
  size_t grad_written_at(size_t param_index) const;
  // The per-token NLL of the last run (the "current" log-probabilities, negated).
  std::vector<float> nll() const;

 private:
  Graph graph_;
  ModelNodes nodes_;
  WeightedNllNodes w_;
  Backward backward_;
  std::vector<NodeId> grad_nodes_;
  std::vector<Tensor> no_grad_;
  std::unique_ptr<Program> program_;
  Tensor ids_, labels_, weights_;
};

}  // namespace tandem
