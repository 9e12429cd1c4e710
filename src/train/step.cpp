#include "train/step.h"

#include <cmath>
#include <numeric>

#include "core/error.h"

namespace tandem {

namespace {
Tensor positions(Backend& backend, int64_t T) {
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  return Tensor::from_host_i32(backend, {T}, pos);
}
}  // namespace

TrainingProgram::TrainingProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B,
                                 int64_t T, bool keep_logits)
    : B_(B), T_(T), keep_logits_(keep_logits) {
  nodes_ = model.build(graph_, B, T, GraphMode::train);
  std::vector<NodeId> wrt;
  for (const auto& s : params.specs) wrt.push_back(nodes_.params.at(s.name));
  backward_ = build_backward(graph_, nodes_.loss, wrt);
  std::set<NodeId> keep{nodes_.loss};
  for (NodeId w : wrt) {
    grad_nodes_.push_back(backward_.grad.at(w));
    keep.insert(grad_nodes_.back());
  }
  if (keep_logits) keep.insert(nodes_.logits);
  program_ = std::make_unique<Program>(graph_, backend, keep);
  params.bind(*program_, nodes_);
  ids_ = Tensor::empty(backend, {B, T}, DType::i32);
  labels_ = Tensor::empty(backend, {B, T}, DType::i32);
  program_->bind(nodes_.input_ids, ids_);
  program_->bind(nodes_.labels, labels_);
  program_->bind(nodes_.position_ids, positions(backend, T));
  std::vector<float> one{1.0f};
  program_->bind(backward_.seed, Tensor::from_host(backend, {}, one));
}

double TrainingProgram::run(std::span<const int32_t> input_ids, std::span<const int32_t> labels) {
  ids_.copy_from_host_i32(input_ids);
  labels_.copy_from_host_i32(labels);
  program_->run();
  return program_->get(nodes_.loss).to_host()[0];
}

const Tensor& TrainingProgram::grad(size_t i) const { return program_->get(grad_nodes_.at(i)); }

const Tensor& TrainingProgram::logits() const {
  check(keep_logits_, "TrainingProgram: logits were not kept");
  return program_->get(nodes_.logits);
}

EvalProgram::EvalProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T) {
  nodes_ = model.build(graph_, B, T, GraphMode::train);
  program_ = std::make_unique<Program>(graph_, backend, std::set<NodeId>{nodes_.loss});
  params.bind(*program_, nodes_);
  ids_ = Tensor::empty(backend, {B, T}, DType::i32);
  labels_ = Tensor::empty(backend, {B, T}, DType::i32);
  program_->bind(nodes_.input_ids, ids_);
  program_->bind(nodes_.labels, labels_);
  program_->bind(nodes_.position_ids, positions(backend, T));
}

double EvalProgram::run(std::span<const int32_t> input_ids, std::span<const int32_t> labels) {
  ids_.copy_from_host_i32(input_ids);
  labels_.copy_from_host_i32(labels);
  program_->run();
  return program_->get(nodes_.loss).to_host()[0];
}

AdamW::AdamW(const ParamStore& params, Backend& backend)
    : exp_avg(params.zeros_like(backend)), exp_avg_sq(params.zeros_like(backend)) {}

void AdamW::step(ParamStore& params, const std::vector<const Tensor*>& grads, const TrainConfig& c, double lr,
                 int64_t step_number, float grad_scale) {
  for (size_t i = 0; i < params.tensors.size(); ++i) {
    AdamWStep s{static_cast<float>(lr), static_cast<float>(c.beta1), static_cast<float>(c.beta2),
                static_cast<float>(c.adam_eps), params.specs[i].decay ? static_cast<float>(c.weight_decay) : 0.0f,
                step_number, grad_scale};
    params.tensors[i].backend().adamw(params.tensors[i], *grads[i], exp_avg[i], exp_avg_sq[i], s);
  }
}

double global_norm(Backend& backend, const std::vector<const Tensor*>& grads) {
  double ss = 0;
  for (const Tensor* g : grads) ss += backend.sum_squares(*g);
  return std::sqrt(ss);
}

}  // namespace tandem
