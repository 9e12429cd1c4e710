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
  // after_step: Program::run's hook (data-parallel overlap).
  double run(std::span<const int32_t> input_ids, std::span<const int32_t> labels,
             const std::function<void(size_t)>& after_step = nullptr);
  // The schedule step after which grad(i) is final (Program::npos for parameters not trained).
  size_t grad_written_at(size_t param_index) const;
  // The gradient of parameter i (zeros for parameters that are not trainable).
  const Tensor& grad(size_t param_index) const;
  const Tensor& logits() const;
  // After run(): the reported losses besides `loss` (e.g. mtp_loss).
  std::vector<std::pair<std::string, double>> extra_losses() const;
  const ModelNodes& nodes() const { return nodes_; }
  const Tensor& router_choices(NodeId id) const { return program_->get(id); }
  const Program& program() const { return *program_; }
  int64_t batch() const { return B_; }
  int64_t seq_len() const { return T_; }

 private:
  Graph graph_;
  ModelNodes nodes_;
  Backward backward_;
  std::vector<NodeId> grad_nodes_;  // -1 for parameters that are not trainable
  std::vector<Tensor> no_grad_;     // zeros standing in for their gradients
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

// AdamW with PyTorch's semantics; weight decay only on params whose spec says so; parameters
// that are not trainable (buffers) are left alone.
class AdamW {
 public:
  AdamW(const ParamStore& params, Backend& backend);
  // grads[i] is multiplied by grad_scale first (clipping and accumulation folded in).
  void step(ParamStore& params, const std::vector<const Tensor*>& grads, const TrainConfig& c, double lr,
            int64_t step_number, float grad_scale);
  std::vector<Tensor> exp_avg, exp_avg_sq;
};

// Tokens routed to each expert, per MoE layer (layer name -> one count per expert).
using ExpertLoads = std::vector<std::pair<std::string, std::vector<int64_t>>>;

// The loads of `prog`'s last forward pass, added to `into` (empty: set). The expert count comes
// from each layer's e_score_correction_bias parameter.
void add_expert_loads(const TrainingProgram& prog, const ParamStore& params, ExpertLoads& into);

// DeepSeek's auxiliary-loss-free load balancing, after an optimizer step: for every MoE layer,
// e_score_correction_bias_i += gamma * sign(mean load - load_i) (gamma 0: statistics only), from
// the step's loads (every piece of the global batch). Returns per-layer load statistics for
// metrics.jsonl: max/mean and min/mean, and with `per_expert` each expert's fraction of the
// routed tokens.
nlohmann::json balance_experts(const ExpertLoads& loads, ParamStore& params, double gamma, bool per_expert);

// sqrt(sum of squares) over all gradients, in a fixed order.
double global_norm(Backend& backend, const std::vector<const Tensor*>& grads);

}  // namespace tandem
