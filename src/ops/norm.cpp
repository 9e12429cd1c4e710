// Normalisations over the last dim.
//   layernorm(x, w, b) = (x - mean) * rstd * w + b,   rstd = 1 / sqrt(var + eps)
//   rmsnorm(x, w)      = x * rrms * w,                rrms = 1 / sqrt(mean(x^2) + eps)
// Backward kernels recompute the row statistics from x instead of saving them: one cheap pass
// over x buys single-output ops and no saved state.
//   layernorm_grad_x(x, w, dy) = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)),  dxh = dy * w
//   layernorm_grad_w(x, dy)    = sum over rows of dy * xh
//   rmsnorm_grad_x(x, w, dy)   = rrms * (dxh - xh * mean(dxh * xh))
//   rmsnorm_grad_w(x, dy)      = sum over rows of dy * xh
#include <cmath>

#include "ops/op.h"

namespace tandem {
namespace {

Shape check_weight(const Node& n, const Node& x, const Node& w) {
  expect_rank_at_least(n, x, 1);
  check(w.shape == Shape{x.shape.back()}, op_name(n.op), " at node '", n.name, "': weight '", w.name,
        "' ", shape_str(w.shape), " must be [", x.shape.back(), "]");
  return x.shape;
}

Shape ln_shape(const Node& n, std::span<const Node* const> in) {
  check_weight(n, *in[0], *in[2]);
  return check_weight(n, *in[0], *in[1]);
}
Shape rms_shape(const Node& n, std::span<const Node* const> in) { return check_weight(n, *in[0], *in[1]); }
Shape grad_x_shape(const Node& n, std::span<const Node* const> in) {
  expect_same_shape(n, *in[0], *in[2]);
  return check_weight(n, *in[0], *in[1]);
}
Shape grad_w_shape(const Node& n, std::span<const Node* const> in) {
  expect_same_shape(n, *in[0], *in[1]);
  return {in[0]->shape.back()};
}

// Normalised rows: xh = (x - mean) * r, with mean = 0 for rmsnorm. Returns r per row.
std::vector<double> normalise(const RefTensor& x, double eps, bool centre, std::vector<double>& xh) {
  int64_t C = x.shape.back(), R = x.numel() / C;
  std::vector<double> r(static_cast<size_t>(R));
  xh.resize(x.data.size());
  for (int64_t i = 0; i < R; ++i) {
    const double* row = x.data.data() + i * C;
    double mean = 0, var = 0;
    if (centre) {
      for (int64_t c = 0; c < C; ++c) mean += row[c];
      mean /= static_cast<double>(C);
    }
    for (int64_t c = 0; c < C; ++c) var += (row[c] - mean) * (row[c] - mean);
    var /= static_cast<double>(C);
    r[static_cast<size_t>(i)] = 1.0 / std::sqrt(var + eps);
    for (int64_t c = 0; c < C; ++c) xh[static_cast<size_t>(i * C + c)] = (row[c] - mean) * r[static_cast<size_t>(i)];
  }
  return r;
}

void norm_fwd_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out, bool centre) {
  std::vector<double> xh;
  normalise(*in[0], n.attr<NormAttrs>().eps, centre, xh);
  size_t C = static_cast<size_t>(in[0]->shape.back());
  for (size_t i = 0; i < xh.size(); ++i)
    out.data[i] = xh[i] * in[1]->data[i % C] + (centre ? in[2]->data[i % C] : 0.0);
}
void ln_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) { norm_fwd_ref(n, in, out, true); }
void rms_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) { norm_fwd_ref(n, in, out, false); }

void grad_x_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out, bool centre) {
  std::vector<double> xh;
  auto r = normalise(*in[0], n.attr<NormAttrs>().eps, centre, xh);
  int64_t C = in[0]->shape.back(), R = in[0]->numel() / C;
  for (int64_t i = 0; i < R; ++i) {
    double m1 = 0, m2 = 0;
    for (int64_t c = 0; c < C; ++c) {
      size_t k = static_cast<size_t>(i * C + c);
      double dxh = in[2]->data[k] * in[1]->data[static_cast<size_t>(c)];
      m1 += dxh;
      m2 += dxh * xh[k];
    }
    m1 = centre ? m1 / static_cast<double>(C) : 0.0;
    m2 /= static_cast<double>(C);
    for (int64_t c = 0; c < C; ++c) {
      size_t k = static_cast<size_t>(i * C + c);
      double dxh = in[2]->data[k] * in[1]->data[static_cast<size_t>(c)];
      out.data[k] = r[static_cast<size_t>(i)] * (dxh - m1 - xh[k] * m2);
    }
  }
}
void ln_grad_x_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) { grad_x_ref(n, in, out, true); }
void rms_grad_x_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) { grad_x_ref(n, in, out, false); }

void grad_w_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out, bool centre) {
  std::vector<double> xh;
  normalise(*in[0], n.attr<NormAttrs>().eps, centre, xh);
  size_t C = static_cast<size_t>(in[0]->shape.back());
  for (size_t i = 0; i < xh.size(); ++i) out.data[i % C] += in[1]->data[i] * xh[i];
}
void ln_grad_w_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) { grad_w_ref(n, in, out, true); }
void rms_grad_w_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) { grad_w_ref(n, in, out, false); }

void ln_bwd(GradBuilder& b) {
  const Attrs& a = b.node().attrs;
  b.to(0, b.add(OpKind::layernorm_grad_x, {b.in(0), b.in(1), b.grad_out()}, a, "x"));
  b.to(1, b.add(OpKind::layernorm_grad_w, {b.in(0), b.grad_out()}, a, "w"));
  b.to(2, b.add(OpKind::sum_to, {b.grad_out()}, ShapeAttrs{b.input(2).shape}, "b"));
}
void rms_bwd(GradBuilder& b) {
  const Attrs& a = b.node().attrs;
  b.to(0, b.add(OpKind::rmsnorm_grad_x, {b.in(0), b.in(1), b.grad_out()}, a, "x"));
  b.to(1, b.add(OpKind::rmsnorm_grad_w, {b.in(0), b.grad_out()}, a, "w"));
}

}  // namespace

extern const OpDef layernorm_def{"layernorm", 3, ln_shape, ln_ref, ln_bwd};
extern const OpDef layernorm_grad_x_def{"layernorm_grad_x", 3, grad_x_shape, ln_grad_x_ref, nullptr};
extern const OpDef layernorm_grad_w_def{"layernorm_grad_w", 2, grad_w_shape, ln_grad_w_ref, nullptr};
extern const OpDef rmsnorm_def{"rmsnorm", 2, rms_shape, rms_ref, rms_bwd};
extern const OpDef rmsnorm_grad_x_def{"rmsnorm_grad_x", 3, grad_x_shape, rms_grad_x_ref, nullptr};
extern const OpDef rmsnorm_grad_w_def{"rmsnorm_grad_w", 2, grad_w_shape, rms_grad_w_ref, nullptr};

}  // namespace tandem
