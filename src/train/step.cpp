#include "train/step.h"

#include <cmath>
#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace tandem {

namespace {
Tensor positions(Backend& backend, int64_t T) {
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  return Tensor::from_host_i32(backend, {T}, pos);
}

// The batch leaves every training-mode graph reads: ids and labels (refilled per batch) and the
// positions 0..T-1.
void bind_batch_inputs(Program& program, const ModelNodes& nodes, Backend& backend, int64_t B, int64_t T, Tensor& ids,
                       Tensor& labels) {
  ids = Tensor::empty(backend, {B, T}, DType::i32);
  labels = Tensor::empty(backend, {B, T}, DType::i32);
  program.bind(nodes.input_ids, ids);
  program.bind(nodes.labels, labels);
  program.bind(nodes.position_ids, positions(backend, T));
}

// Loads one batch, runs the program and returns the next-token loss.
double run_batch(Program& program, const ModelNodes& nodes, Tensor& ids, Tensor& labels,
                 std::span<const int32_t> input_ids, std::span<const int32_t> label_ids,
                 const std::function<void(size_t)>& after_step = nullptr) {
  ids.copy_from_host_i32(input_ids);
  labels.copy_from_host_i32(label_ids);
  program.run(after_step);
  return program.get(nodes.lm_loss).to_host()[0];
}
}  // namespace

TrainingProgram::TrainingProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B,
                                 int64_t T, bool keep_logits)
    : B_(B), T_(T), keep_logits_(keep_logits) {
  nodes_ = model.build(graph_, B, T, GraphMode::train);
  std::vector<NodeId> wrt;
  for (const auto& s : params.specs)
    if (s.trainable) wrt.push_back(nodes_.params.at(s.name));
  backward_ = build_backward(graph_, nodes_.loss, wrt);
  std::set<NodeId> keep{nodes_.loss, nodes_.lm_loss};
  for (const auto& s : params.specs) {
    if (!s.trainable) {
      grad_nodes_.push_back(-1);
      no_grad_.push_back(Tensor::zeros(backend, s.shape, DType::f32));
      continue;
    }
    grad_nodes_.push_back(backward_.grad.at(nodes_.params.at(s.name)));
    keep.insert(grad_nodes_.back());
  }
  for (const auto& [name, id] : nodes_.extra_losses) keep.insert(id);
  for (const auto& [name, id] : nodes_.router_choices) keep.insert(id);
  if (keep_logits) keep.insert(nodes_.logits);
  program_ = std::make_unique<Program>(graph_, backend, keep);
  params.bind(*program_, nodes_);
  bind_batch_inputs(*program_, nodes_, backend, B, T, ids_, labels_);
  std::vector<float> one{1.0f};
  program_->bind(backward_.seed, Tensor::from_host(backend, {}, one));
}

double TrainingProgram::run(std::span<const int32_t> input_ids, std::span<const int32_t> labels,
                            const std::function<void(size_t)>& after_step) {
  return run_batch(*program_, nodes_, ids_, labels_, input_ids, labels, after_step);
}

size_t TrainingProgram::grad_written_at(size_t i) const {
  return grad_nodes_.at(i) < 0 ? Program::npos : program_->written_at(grad_nodes_[i]);
}

const Tensor& TrainingProgram::grad(size_t i) const {
  if (grad_nodes_.at(i) < 0) {
    size_t k = 0;  // index among the non-trainable parameters
    for (size_t j = 0; j < i; ++j) k += grad_nodes_[j] < 0;
    return no_grad_.at(k);
  }
  return program_->get(grad_nodes_[i]);
}

std::vector<std::pair<std::string, double>> TrainingProgram::extra_losses() const {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [name, id] : nodes_.extra_losses) out.emplace_back(name, program_->get(id).to_host()[0]);
  return out;
}

const Tensor& TrainingProgram::logits() const {
  check(keep_logits_, "TrainingProgram: logits were not kept");
  return program_->get(nodes_.logits);
}

EvalProgram::EvalProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T) {
  nodes_ = model.build(graph_, B, T, GraphMode::train);
  program_ = std::make_unique<Program>(graph_, backend, std::set<NodeId>{nodes_.lm_loss});
  params.bind(*program_, nodes_);
  bind_batch_inputs(*program_, nodes_, backend, B, T, ids_, labels_);
}

double EvalProgram::run(std::span<const int32_t> input_ids, std::span<const int32_t> labels) {
  return run_batch(*program_, nodes_, ids_, labels_, input_ids, labels);
}

AdamW::AdamW(const ParamStore& params, Backend& backend)
    : exp_avg(params.zeros_like(backend)), exp_avg_sq(params.zeros_like(backend)) {}

void AdamW::step(ParamStore& params, const std::vector<const Tensor*>& grads, const TrainConfig& c, double lr,
                 int64_t step_number, float grad_scale) {
  for (size_t i = 0; i < params.tensors.size(); ++i) {
    if (!params.specs[i].trainable) continue;
    AdamWStep s{static_cast<float>(lr), static_cast<float>(c.beta1), static_cast<float>(c.beta2),
                static_cast<float>(c.adam_eps), params.specs[i].decay ? static_cast<float>(c.weight_decay) : 0.0f,
                step_number, grad_scale};
    params.tensors[i].backend().adamw(params.tensors[i], *grads[i], exp_avg[i], exp_avg_sq[i], s);
  }
}

namespace {
size_t param_index(const ParamStore& params, const std::string& name) {
  for (size_t i = 0; i < params.specs.size(); ++i)
    if (params.specs[i].name == name) return i;
  throw Error("balance_experts: no parameter '" + name + "'");
}
}  // namespace

void add_expert_loads(const TrainingProgram& prog, const ParamStore& params, ExpertLoads& into) {
  const bool fresh = into.empty();
  size_t k = 0;
  for (const auto& [layer, id] : prog.nodes().router_choices) {
    const int64_t E = params.specs[param_index(params, layer + ".gate.e_score_correction_bias")].shape.at(0);
    if (fresh) into.emplace_back(layer, std::vector<int64_t>(static_cast<size_t>(E), 0));
    std::vector<int64_t>& load = into.at(k++).second;
    for (int32_t e : prog.router_choices(id).to_host_i32()) ++load.at(static_cast<size_t>(e));
  }
}

nlohmann::json balance_experts(const ExpertLoads& loads, ParamStore& params, double gamma, bool per_expert) {
  nlohmann::json stats = nlohmann::json::object();
  for (const auto& [layer, load] : loads) {
    const size_t bi = param_index(params, layer + ".gate.e_score_correction_bias");
    const auto E = static_cast<int64_t>(load.size());
    double total = 0;
    for (int64_t l : load) total += static_cast<double>(l);
    const double mean = total / static_cast<double>(E);
    const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
    nlohmann::json s = {{"max_over_mean", static_cast<double>(*hi) / mean}, {"min_over_mean", static_cast<double>(*lo) / mean}};
    if (per_expert) {
      std::vector<double> frac;
      for (int64_t l : load) frac.push_back(static_cast<double>(l) / total);
      s["fraction"] = frac;
    }
    stats[layer] = s;
    if (gamma > 0) {
      std::vector<float> bias = params.tensors[bi].to_host();
      for (int64_t e = 0; e < E; ++e) {
        const double d = mean - static_cast<double>(load[static_cast<size_t>(e)]);
        bias[static_cast<size_t>(e)] += static_cast<float>(gamma * (d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0));
      }
      params.tensors[bi].copy_from_host(bias);
    }
  }
  return stats;
}

double global_norm(Backend& backend, const std::vector<const Tensor*>& grads) {
  double ss = 0;
  for (const Tensor* g : grads) ss += backend.sum_squares(*g);
  return std::sqrt(ss);
}

}  // namespace tandem
