// cross_entropy(logits [..., V], targets [...] i32) -> []: mean over rows whose target is >= 0 of
// logsumexp(row) - row[target]. Rows with a negative target are ignored (padding, prompts).
// cross_entropy_grad(logits, targets, dloss) = dloss * (softmax(row) - onehot(target)) / n_valid.
// token_nll(logits [..., V], targets [...] i32) -> [...]: the same per-row loss, one value per row (0
// where the target is negative). Its negation is the per-token log-probability GRPO needs, and a
// weighted token loss is sum(mul(token_nll, weights)): the weights (advantages, clip and KL terms,
// computed on the host) stay data, so there is no second autodiff path.
// token_nll_grad(logits, targets, dout [...]) = dout[row] * (softmax(row) - onehot(target)).
#include <cmath>

#include "ops/op.h"

namespace tandem {
namespace {

Shape ce_shape(const Node& n, std::span<const Node* const> in) {
  expect_rank_at_least(n, *in[0], 1);
  expect_dtype(n, *in[1], DType::i32);
  Shape rows(in[0]->shape.begin(), in[0]->shape.end() - 1);
  check(in[1]->shape == rows, "cross_entropy at node '", n.name, "': targets '", in[1]->name, "' ",
        shape_str(in[1]->shape), " must be ", shape_str(rows));
  return {};
}
Shape ce_grad_shape(const Node& n, std::span<const Node* const> in) {
  ce_shape(n, in.first(2));
  check(in[2]->shape.empty(), "cross_entropy_grad at node '", n.name, "': dloss must be a scalar");
  return in[0]->shape;
}

int64_t count_valid(const RefTensor& t) {
  int64_t n = 0;
  for (double v : t.data) n += v >= 0;
  return n;
}

void ce_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  int64_t V = in[0]->shape.back(), R = in[0]->numel() / V, valid = count_valid(*in[1]);
  double total = 0;
  for (int64_t i = 0; i < R; ++i) {
    auto t = static_cast<int64_t>(in[1]->data[static_cast<size_t>(i)]);
    if (t < 0) continue;
    check(t < V, "cross_entropy at node '", n.name, "': target ", t, " >= vocab ", V);
    const double* x = in[0]->data.data() + i * V;
    double mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < V; ++c) mx = std::max(mx, x[c]);
    for (int64_t c = 0; c < V; ++c) s += std::exp(x[c] - mx);
    total += mx + std::log(s) - x[t];
  }
  out.data[0] = valid ? total / static_cast<double>(valid) : 0.0;
}

void ce_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  int64_t V = in[0]->shape.back(), R = in[0]->numel() / V, valid = count_valid(*in[1]);
  double g = valid ? in[2]->data[0] / static_cast<double>(valid) : 0.0;
  for (int64_t i = 0; i < R; ++i) {
    auto t = static_cast<int64_t>(in[1]->data[static_cast<size_t>(i)]);
    if (t < 0) continue;
    const double* x = in[0]->data.data() + i * V;
    double* y = out.data.data() + i * V;
    double mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < V; ++c) mx = std::max(mx, x[c]);
    for (int64_t c = 0; c < V; ++c) s += (y[c] = std::exp(x[c] - mx));
    for (int64_t c = 0; c < V; ++c) y[c] = g * (y[c] / s - (c == t ? 1.0 : 0.0));
  }
}

void ce_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::cross_entropy_grad, {b.in(0), b.in(1), b.grad_out()}, NoAttrs{}, "logits"));
}

Shape nll_shape(const Node& n, std::span<const Node* const> in) {
  ce_shape(n, in);
  return in[1]->shape;
}
Shape nll_grad_shape(const Node& n, std::span<const Node* const> in) {
  ce_shape(n, in.first(2));
  check(in[2]->shape == in[1]->shape, "token_nll_grad at node '", n.name, "': dout '", in[2]->name, "' ",
        shape_str(in[2]->shape), " must be ", shape_str(in[1]->shape));
  return in[0]->shape;
}

void nll_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  int64_t V = in[0]->shape.back(), R = in[0]->numel() / V;
  for (int64_t i = 0; i < R; ++i) {
    auto t = static_cast<int64_t>(in[1]->data[static_cast<size_t>(i)]);
    if (t < 0) continue;
    check(t < V, "token_nll at node '", n.name, "': target ", t, " >= vocab ", V);
    const double* x = in[0]->data.data() + i * V;
    double mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < V; ++c) mx = std::max(mx, x[c]);
    for (int64_t c = 0; c < V; ++c) s += std::exp(x[c] - mx);
    out.data[static_cast<size_t>(i)] = mx + std::log(s) - x[t];
  }
}

void nll_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  int64_t V = in[0]->shape.back(), R = in[0]->numel() / V;
  for (int64_t i = 0; i < R; ++i) {
    auto t = static_cast<int64_t>(in[1]->data[static_cast<size_t>(i)]);
    if (t < 0) continue;
    const double g = in[2]->data[static_cast<size_t>(i)];
    const double* x = in[0]->data.data() + i * V;
    double* y = out.data.data() + i * V;
    double mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < V; ++c) mx = std::max(mx, x[c]);
    for (int64_t c = 0; c < V; ++c) s += (y[c] = std::exp(x[c] - mx));
    for (int64_t c = 0; c < V; ++c) y[c] = g * (y[c] / s - (c == t ? 1.0 : 0.0));
  }
}

void nll_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::token_nll_grad, {b.in(0), b.in(1), b.grad_out()}, NoAttrs{}, "logits"));
}

}  // namespace

extern const OpDef token_nll_def{"token_nll", 2, nll_shape, nll_ref, nll_bwd};
extern const OpDef token_nll_grad_def{"token_nll_grad", 3, nll_grad_shape, nll_grad_ref, nullptr};
extern const OpDef cross_entropy_def{"cross_entropy", 2, ce_shape, ce_ref, ce_bwd};
extern const OpDef cross_entropy_grad_def{"cross_entropy_grad", 3, ce_grad_shape, ce_grad_ref, nullptr};

}  // namespace tandem
