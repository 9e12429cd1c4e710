// softmax over the last dim; softmax_grad(y, dy) = y * (dy - sum(dy * y)) uses the forward output.
#include <cmath>

#include "ops/op.h"

namespace tandem {
namespace {

Shape sm_shape(const Node& n, std::span<const Node* const> in) {
  expect_rank_at_least(n, *in[0], 1);
  return in[0]->shape;
}
Shape sm_grad_shape(const Node& n, std::span<const Node* const> in) {
  expect_same_shape(n, *in[0], *in[1]);
  return in[0]->shape;
}

void sm_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  int64_t C = in[0]->shape.back(), R = in[0]->numel() / C;
  for (int64_t i = 0; i < R; ++i) {
    const double* x = in[0]->data.data() + i * C;
    double* y = out.data.data() + i * C;
    double mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < C; ++c) mx = std::max(mx, x[c]);
    for (int64_t c = 0; c < C; ++c) s += (y[c] = std::exp(x[c] - mx));
    for (int64_t c = 0; c < C; ++c) y[c] /= s;
  }
}
void sm_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::softmax_grad, {b.node().id, b.grad_out()}, NoAttrs{}, "x"));
}
void sm_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  int64_t C = in[0]->shape.back(), R = in[0]->numel() / C;
  for (int64_t i = 0; i < R; ++i) {
    const double* y = in[0]->data.data() + i * C;
    const double* dy = in[1]->data.data() + i * C;
    double dot = 0;
    for (int64_t c = 0; c < C; ++c) dot += y[c] * dy[c];
    for (int64_t c = 0; c < C; ++c) out.data[static_cast<size_t>(i * C + c)] = y[c] * (dy[c] - dot);
  }
}

}  // namespace

extern const OpDef softmax_def{"softmax", 1, sm_shape, sm_ref, sm_bwd};
extern const OpDef softmax_grad_def{"softmax_grad", 2, sm_grad_shape, sm_grad_ref, nullptr};

}  // namespace tandem
