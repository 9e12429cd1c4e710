// One model, one batch shape, one backend: the training graph (forward, loss, backward) placed
// on the backend, plus AdamW. Used by `tandem train` and `tandem grad`.
#pragma once
#include <memory>

#include "core/autodiff.h"
#include "core/program.h"
#include "models/params.h"
#include "train/config.h"

namespace tandem {

class TrainingProgram {
 public:
  // keep_logits: also capture the logits (for `tandem grad`); costs B*T*V floats of memory.
  TrainingProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T,
                  bool keep_logits = false);
  // Forward and backward on one batch (B*T ids and labels, host memory); returns the loss.
  double run(std::span<const int32_t> input_ids, std::span<const int32_t> labels);
  const Tensor& grad(size_t param_index) const;
  const Tensor& logits() const;
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }

 private:
  Graph graph_;
  ModelNodes nodes_;
  Backward backward_;
  std::vector<NodeId> grad_nodes_;
  std::unique_ptr<Program> program_;
  Tensor ids_, labels_;
  int64_t B_, T_;
  bool keep_logits_;
};

// Forward-only loss on batches (validation).
class EvalProgram {
 public:
  EvalProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T);
  double run(std::span<const int32_t> input_ids, std::span<const int32_t> labels);

 private:
  Graph graph_;
  ModelNodes nodes_;
  std::unique_ptr<Program> program_;
  Tensor ids_, labels_;
};

// AdamW with PyTorch's semantics; weight decay only on params whose spec says so.
class AdamW {
 public:
  AdamW(const ParamStore& params, Backend& backend);
  // grads[i] is multiplied by grad_scale first (clipping and accumulation folded in).
  void step(ParamStore& params, const std::vector<const Tensor*>& grads, const TrainConfig& c, double lr,
            int64_t step_number, float grad_scale);
  std::vector<Tensor> exp_avg, exp_avg_sq;
};

// sqrt(sum of squares) over all gradients, in a fixed order.
double global_norm(Backend& backend, const std::vector<const Tensor*>& grads);

}  // namespace tandem
