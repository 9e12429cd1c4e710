#include "train/grpo_step.h"

#include <numeric>

namespace tandem {

namespace {
Tensor positions(Backend& backend, int64_t T) {
  std::vector<int32_t> pos(static_cast<size_t>(T));
  std::iota(pos.begin(), pos.end(), 0);
  return Tensor::from_host_i32(backend, {T}, pos);
}
}  // namespace

WeightedNllNodes add_weighted_nll(Graph& g, NodeId logits, const Shape& rows) {
  WeightedNllNodes w;
  w.labels = g.input("labels", rows, DType::i32);
  w.weights = g.input("token_weights", rows);
  w.nll = g.add(OpKind::token_nll, {logits, w.labels}, NoAttrs{}, "token_nll");
  NodeId weighted = g.add(OpKind::mul, {w.nll, w.weights}, NoAttrs{}, "weighted_nll");
  w.loss = g.add(OpKind::sum, {weighted}, NoAttrs{}, "loss");
  return w;
}

TokenNllProgram::TokenNllProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B, int64_t T) {
  nodes_ = model.build(graph_, B, T, GraphMode::logits);
  NodeId labels = graph_.input("labels", {B, T}, DType::i32);
  nll_ = graph_.add(OpKind::token_nll, {nodes_.logits, labels}, NoAttrs{}, "token_nll");
  program_ = std::make_unique<Program>(graph_, backend, std::set<NodeId>{nll_});
  params.bind(*program_, nodes_);
  ids_ = Tensor::empty(backend, {B, T}, DType::i32);
  labels_ = Tensor::empty(backend, {B, T}, DType::i32);
  program_->bind(nodes_.input_ids, ids_);
  program_->bind(labels, labels_);
  program_->bind(nodes_.position_ids, positions(backend, T));
}

std::vector<float> TokenNllProgram::run(std::span<const int32_t> input_ids, std::span<const int32_t> labels) {
  ids_.copy_from_host_i32(input_ids);
  labels_.copy_from_host_i32(labels);
  program_->run();
  return program_->get(nll_).to_host();
}

WeightedNllProgram::WeightedNllProgram(const Model& model, Backend& backend, const ParamStore& params, int64_t B,
                                       int64_t T) {
  nodes_ = model.build(graph_, B, T, GraphMode::logits);
  w_ = add_weighted_nll(graph_, nodes_.logits, {B, T});
  // Parameters the logits do not depend on (DeepSeek's multi-token-prediction modules, trained by
  // their own loss only) get no gradient here: zeros, so AdamW leaves them as they are.
  std::vector<bool> reaches(graph_.size(), false);
  reaches[static_cast<size_t>(w_.loss)] = true;
  for (NodeId id = w_.loss; id >= 0; --id)
    if (reaches[static_cast<size_t>(id)])
      for (NodeId in : graph_.node(id).inputs) reaches[static_cast<size_t>(in)] = true;
  auto trained = [&](const ParamSpec& s) { return s.trainable && reaches[static_cast<size_t>(nodes_.params.at(s.name))]; };
  std::vector<NodeId> wrt;
  for (const auto& s : params.specs)
    if (trained(s)) wrt.push_back(nodes_.params.at(s.name));
  backward_ = build_backward(graph_, w_.loss, wrt);
  std::set<NodeId> keep{w_.loss, w_.nll};
  for (const auto& s : params.specs) {
    if (!trained(s)) {
      grad_nodes_.push_back(-1);
      no_grad_.push_back(Tensor::zeros(backend, s.shape, DType::f32));
      continue;
    }
    grad_nodes_.push_back(backward_.grad.at(nodes_.params.at(s.name)));
    keep.insert(grad_nodes_.back());
  }
  program_ = std::make_unique<Program>(graph_, backend, keep);
  params.bind(*program_, nodes_);
  ids_ = Tensor::empty(backend, {B, T}, DType::i32);
  labels_ = Tensor::empty(backend, {B, T}, DType::i32);
  weights_ = Tensor::empty(backend, {B, T}, DType::f32);
  program_->bind(nodes_.input_ids, ids_);
  program_->bind(w_.labels, labels_);
  program_->bind(w_.weights, weights_);
  program_->bind(nodes_.position_ids, positions(backend, T));
  std::vector<float> one{1.0f};
  program_->bind(backward_.seed, Tensor::from_host(backend, {}, one));
}

double WeightedNllProgram::run(std::span<const int32_t> input_ids, std::span<const int32_t> labels,
                               std::span<const float> weights) {
  ids_.copy_from_host_i32(input_ids);
  labels_.copy_from_host_i32(labels);
  weights_.copy_from_host(weights);
  program_->run();
  return program_->get(w_.loss).to_host()[0];
}

const Tensor& WeightedNllProgram::grad(size_t i) const {
  if (grad_nodes_.at(i) < 0) {
    size_t k = 0;
    for (size_t j = 0; j < i; ++j) k += grad_nodes_[j] < 0;
    return no_grad_.at(k);
  }
  return program_->get(grad_nodes_[i]);
}

size_t WeightedNllProgram::grad_written_at(size_t i) const {
  return grad_nodes_.at(i) < 0 ? Program::npos : program_->written_at(grad_nodes_[i]);
}

std::vector<float> WeightedNllProgram::nll() const { return program_->get(w_.nll).to_host(); }

}  // namespace tandem
