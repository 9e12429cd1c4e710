#include "models/generator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace tandem {

struct Generator::Pass {
  Graph graph;
  ModelNodes nodes;
  std::unique_ptr<Program> program;
  Tensor ids, positions;
  int64_t T = 0;
};

Generator::Generator(const Model& model, Backend& backend, const ParamStore& params)
    : model_(model), backend_(backend), params_(params) {
  cache_len_ = Tensor::zeros(backend, {1}, DType::i32);
  step_pass_ = make_pass(1);
}

Generator::~Generator() = default;

std::unique_ptr<Generator::Pass> Generator::make_pass(int64_t T) {
  auto p = std::make_unique<Pass>();
  p->T = T;
  p->nodes = model_.build(p->graph, 1, T, GraphMode::decode);
  if (caches_.empty())
    for (size_t l = 0; l < p->nodes.kv_caches.size(); ++l)
      caches_.push_back(Tensor::zeros(backend_, model_.kv_cache_shape(1), DType::f32));
  p->program = std::make_unique<Program>(p->graph, backend_, std::set<NodeId>{p->nodes.logits});
  params_.bind(*p->program, p->nodes);
  for (size_t l = 0; l < caches_.size(); ++l) p->program->bind(p->nodes.kv_caches[l], caches_[l]);
  p->program->bind(p->nodes.cache_len, cache_len_);
  p->ids = Tensor::empty(backend_, {1, T}, DType::i32);
  p->positions = Tensor::empty(backend_, {1, T}, DType::i32);
  p->program->bind(p->nodes.input_ids, p->ids);
  p->program->bind(p->nodes.position_ids, p->positions);
  return p;
}

Tensor last_logits_row(const Tensor& logits, int64_t V) {
  check(logits.numel() >= V && logits.numel() % V == 0, "decode logits of shape ", shape_str(logits.shape),
        " do not hold rows of ", V);
  Tensor row = logits.reshaped({logits.numel() / V, V});
  row.offset += static_cast<size_t>(logits.numel() - V) * dtype_size(logits.dtype);
  row.shape = {V};
  row.strides = {1};
  return row;
}

// Runs `ids` at positions start.. and returns the logits of the last one (only that row leaves
// the backend).
std::vector<float> Generator::run_pass(Pass& pass, std::span<const int32_t> ids, int64_t start) {
  std::vector<int32_t> pos(static_cast<size_t>(pass.T));
  std::iota(pos.begin(), pos.end(), static_cast<int32_t>(start));
  pass.ids.copy_from_host_i32(ids);
  pass.positions.copy_from_host_i32(pos);
  const int32_t len = static_cast<int32_t>(start);
  cache_len_.copy_from_host_i32(std::span(&len, 1));
  pass.program->run();
  return last_logits_row(pass.program->get(pass.nodes.logits), model_.vocab_size()).to_host();
}

int32_t sample_token(std::span<const float> logits, const SamplingOptions& o, std::mt19937_64& rng) {
  const auto V = static_cast<int32_t>(logits.size());
  if (o.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  // Highest logits first; ties by id, so the order is fully determined. With top_k only the first
  // k are ordered (a partial sort: the vocabulary is 50k, k is typically 50).
  auto before = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  size_t keep = idx.size();
  if (o.top_k > 0) keep = std::min(keep, static_cast<size_t>(o.top_k));
  if (keep < idx.size()) std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(keep), idx.end(), before);
  else std::sort(idx.begin(), idx.end(), before);
  std::vector<double> p(keep);
  const double mx = logits[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (p[i] = std::exp((logits[idx[i]] - mx) / o.temperature));
  for (auto& v : p) v /= sum;
  if (o.top_p < 1.0f) {
    double cum = 0;
    size_t n = 0;
    while (n < keep && (n == 0 || cum < o.top_p)) cum += p[n++];
    keep = n;
    p.resize(keep);
  }
  double r = std::uniform_real_distribution<double>(0.0, std::accumulate(p.begin(), p.end(), 0.0))(rng);
  for (size_t i = 0; i < keep; ++i) {
    if (r < p[i]) return idx[i];
    r -= p[i];
  }
  return idx[keep - 1];
}

std::vector<int32_t> Generator::generate(std::span<const int32_t> prompt, int max_tokens, const SamplingOptions& opts,
                                         std::optional<int32_t> stop_token,
                                         const std::function<bool(int32_t)>& on_token) {
  const int64_t ctx = model_.context_length();
  check(!prompt.empty(), "generate: the prompt is empty");
  check(static_cast<int64_t>(prompt.size()) < ctx, "generate: the prompt has ", prompt.size(),
        " tokens; the model's context is ", ctx, " (it must leave room for one new token)");
  for (int32_t id : prompt)
    check(id >= 0 && id < model_.vocab_size(), "generate: prompt token id ", id, " is outside the model's vocabulary (",
          model_.vocab_size(), ")");
  std::mt19937_64 rng(opts.seed);
  auto prefill = make_pass(static_cast<int64_t>(prompt.size()));
  std::vector<float> logits = run_pass(*prefill, prompt, 0);
  std::vector<int32_t> out;
  int64_t pos = static_cast<int64_t>(prompt.size());
  while (static_cast<int>(out.size()) < max_tokens) {
    std::span<const float> row(logits);
    if (opts.vocab_limit > 0 && opts.vocab_limit < static_cast<int64_t>(row.size()))
      row = row.first(static_cast<size_t>(opts.vocab_limit));
    const int32_t next = sample_token(row, opts, rng);
    out.push_back(next);
    if (on_token && !on_token(next)) break;
    if (stop_token && next == *stop_token) break;
    if (pos >= ctx || static_cast<int>(out.size()) == max_tokens) break;
    logits = run_pass(*step_pass_, std::span<const int32_t>(&next, 1), pos);
    ++pos;
  }
  return out;
}

}  // namespace tandem
