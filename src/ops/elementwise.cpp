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

namespace tandem {
namespace {

// sigmoid(x) = 1 / (1 + e^-x); sigmoid_grad(y, dy) = dy * y * (1 - y) from the output y.
void sigmoid_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  for (size_t i = 0; i < out.data.size(); ++i) out.data[i] = 1.0 / (1.0 + std::exp(-in[0]->data[i]));
}
void sigmoid_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::sigmoid_grad, {b.node().id, b.grad_out()}, NoAttrs{}, "x"));
}
void sigmoid_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  for (size_t i = 0; i < out.data.size(); ++i) {
    const double y = in[0]->data[i];
    out.data[i] = in[1]->data[i] * y * (1.0 - y);
  }
}

// swiglu(x [..., 2I]) = silu(x[..., :I]) * x[..., I:]: the gate half first, as HF's fused
// gate_up_proj. swiglu_grad(x, dy) -> [..., 2I].
Shape swiglu_shape(const Node& n, std::span<const Node* const> in) {
  expect_rank_at_least(n, *in[0], 1);
  check(in[0]->shape.back() % 2 == 0, "swiglu at node '", n.name, "': last dim ", in[0]->shape.back(), " must be even");
  Shape s = in[0]->shape;
  s.back() /= 2;
  return s;
}
void swiglu_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  const int64_t I = out.shape.back(), rows = out.numel() / I;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < I; ++c) {
      const double g = in[0]->data[static_cast<size_t>(r * 2 * I + c)], u = in[0]->data[static_cast<size_t>(r * 2 * I + I + c)];
      out.data[static_cast<size_t>(r * I + c)] = g / (1.0 + std::exp(-g)) * u;
    }
}
void swiglu_bwd(GradBuilder& b) { b.to(0, b.add(OpKind::swiglu_grad, {b.in(0), b.grad_out()}, NoAttrs{}, "x")); }
Shape swiglu_grad_shape(const Node& n, std::span<const Node* const> in) {
  Shape s = swiglu_shape(n, in.first(1));
  check(in[1]->shape == s, "swiglu_grad at node '", n.name, "': dout shape ", shape_str(in[1]->shape), " != ", shape_str(s));
  return in[0]->shape;
}
void swiglu_grad_ref(const Node&, std::span<const RefTensor* const> in, RefTensor& out) {
  const int64_t I = in[1]->shape.back(), rows = in[1]->numel() / I;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < I; ++c) {
      const size_t gi = static_cast<size_t>(r * 2 * I + c), ui = gi + static_cast<size_t>(I);
      const double g = in[0]->data[gi], u = in[0]->data[ui], dy = in[1]->data[static_cast<size_t>(r * I + c)];
      const double s = 1.0 / (1.0 + std::exp(-g));
      out.data[gi] = dy * u * s * (1.0 + g * (1.0 - s));
      out.data[ui] = dy * g * s;
    }
}

}  // namespace

extern const OpDef sigmoid_def{"sigmoid", 1, unary_shape, sigmoid_ref, sigmoid_bwd};
extern const OpDef sigmoid_grad_def{"sigmoid_grad", 2, unary_grad_shape, sigmoid_grad_ref, nullptr};
extern const OpDef swiglu_def{"swiglu", 1, swiglu_shape, swiglu_ref, swiglu_bwd};
extern const OpDef swiglu_grad_def{"swiglu_grad", 2, swiglu_grad_shape, swiglu_grad_ref, nullptr};

}  // namespace tandem
