// Element-wise ops. Binary ops broadcast b over a's leading dims: b's shape must be a suffix of
// a's (a bias [C] added to activations [B, T, C]); the output has a's shape.
#include <cmath>

#include "ops/op.h"

namespace tandem {
namespace {

Shape binary_shape(const Node& n, std::span<const Node* const> in) {
  check(is_suffix(in[1]->shape, in[0]->shape), op_name(n.op), " at node '", n.name, "': '", in[1]->name,
        "' ", shape_str(in[1]->shape), " does not broadcast to '", in[0]->name, "' ", shape_str(in[0]->shape));
  return in[0]->shape;
}

template <typename F>
void binary_ref(std::span<const RefTensor* const> in, RefTensor& out, F f) {
  size_t nb = in[1]->data.size();
  for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = f(in[0]->data[i], in[1]->data[i % nb]);
}

// Gradient for the broadcast operand: reduce over the broadcast dims.
NodeId reduce_to_b(GradBuilder& b, NodeId g, const std::string& what) {
  if (b.graph().node(g).shape == b.input(1).shape) return g;
  return b.add(OpKind::sum_to, {g}, ShapeAttrs{b.input(1).shape}, what);
}

void add_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  binary_ref(in, out, [](double x, double y) { return x + y; });
}
void add_bwd(GradBuilder& b) {
  b.to(0, b.grad_out());
  b.to(1, reduce_to_b(b, b.grad_out(), "b"));
}

void mul_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  binary_ref(in, out, [](double x, double y) { return x * y; });
}
void mul_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::mul, {b.grad_out(), b.in(1)}, NoAttrs{}, "a"));
  b.to(1, reduce_to_b(b, b.add(OpKind::mul, {b.grad_out(), b.in(0)}, NoAttrs{}, "b.full"), "b"));
}

Shape unary_shape(const Node&, std::span<const Node* const> in) { return in[0]->shape; }
Shape unary_grad_shape(const Node& n, std::span<const Node* const> in) {
  expect_same_shape(n, *in[0], *in[1]);
  return in[0]->shape;
}

void scale_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  double s = n.attr<ScaleAttrs>().scale;
  for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = in[0]->data[i] * s;
}
void scale_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::scale, {b.grad_out()}, b.node().attrs, "x"));
}

// GELU, tanh approximation (GPT-2's "gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
void gelu_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  for (size_t i = 0; i < out.data.size(); ++i) {
    double x = in[0]->data[i];
    out.data[i] = 0.5 * x * (1.0 + std::tanh(kGeluC * (x + 0.044715 * x * x * x)));
  }
}
void gelu_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::gelu_grad, {b.in(0), b.grad_out()}, NoAttrs{}, "x")); }
// gelu_grad(x, dout) = dout * d gelu / dx
void gelu_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  for (size_t i = 0; i < out.data.size(); ++i) {
    double x = in[0]->data[i];
    double t = std::tanh(kGeluC * (x + 0.044715 * x * x * x));
    double dt = kGeluC * (1.0 + 3.0 * 0.044715 * x * x) * (1.0 - t * t);
    out.data[i] = in[1]->data[i] * (0.5 * (1.0 + t) + 0.5 * x * dt);
  }
}

// SiLU: x * sigmoid(x).
void silu_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  for (size_t i = 0; i < out.data.size(); ++i) {
    double x = in[0]->data[i];
    out.data[i] = x / (1.0 + std::exp(-x));
  }
}
void silu_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::silu_grad, {b.in(0), b.grad_out()}, NoAttrs{}, "x")); }
void silu_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  for (size_t i = 0; i < out.data.size(); ++i) {
    double x = in[0]->data[i];
    double s = 1.0 / (1.0 + std::exp(-x));
    out.data[i] = in[1]->data[i] * (s * (1.0 + x * (1.0 - s)));
  }
}

}  // namespace

extern const OpDef add_def{"add", 2, binary_shape, add_ref, add_bwd};
extern const OpDef mul_def{"mul", 2, binary_shape, mul_ref, mul_bwd};
extern const OpDef scale_def{"scale", 1, unary_shape, scale_ref, scale_bwd};
extern const OpDef gelu_def{"gelu", 1, unary_shape, gelu_ref, gelu_bwd};
extern const OpDef gelu_grad_def{"gelu_grad", 2, unary_grad_shape, gelu_grad_ref, nullptr};
extern const OpDef silu_def{"silu", 1, unary_shape, silu_ref, silu_bwd};
extern const OpDef silu_grad_def{"silu_grad", 2, unary_grad_shape, silu_grad_ref, nullptr};

}  // namespace tandem
