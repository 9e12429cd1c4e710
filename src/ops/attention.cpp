// Causal self-attention (see ops/attention.h for the packed layout). Per batch b and head h:
//   S = scale * Q K^T with S[i][j] = -inf for j > i,  P = softmax(S),  O = P V
// Backward (attention_grad), with dO the output gradient:
//   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),  dQ = scale dS K,  dK = scale dS^T Q
#include "ops/attention.h"

#include <cmath>

#include "ops/op.h"

namespace tandem {

AttentionDims attention_dims(const Node& n, const Shape& qkv) {
  const auto& a = n.attr<AttentionAttrs>();
  check(a.n_head > 0 && a.d_qk > 0 && a.d_v > 0, "attention at node '", n.name,
        "': n_head, d_qk and d_v must be positive");
  AttentionDims d{};
  check(qkv.size() == 3, "attention at node '", n.name, "': qkv must be [B, T, W], got ", shape_str(qkv));
  d.B = qkv[0];
  d.T = qkv[1];
  d.W = qkv[2];
  d.H = a.n_head;
  d.dqk = a.d_qk;
  d.dv = a.d_v;
  check(d.W == d.H * (2 * d.dqk + d.dv), "attention at node '", n.name, "': width ", d.W,
        " != n_head * (2 d_qk + d_v) = ", d.H * (2 * d.dqk + d.dv));
  return d;
}

namespace {

Shape att_shape(const Node& n, std::span<const Node* const> in) {
  auto d = attention_dims(n, in[0]->shape);
  return {d.B, d.T, d.H * d.dv};
}
Shape att_grad_shape(const Node& n, std::span<const Node* const> in) {
  auto d = attention_dims(n, in[0]->shape);
  check(in[1]->shape == Shape{d.B, d.T, d.H * d.dv}, "attention_grad at node '", n.name,
        "': dout shape ", shape_str(in[1]->shape), " does not match");
  return in[0]->shape;
}

// P for one (b, h): T x T, zero above the diagonal.
std::vector<double> probs(const AttentionDims& d, double scale, const double* qkv, int64_t b, int64_t h) {
  std::vector<double> P(static_cast<size_t>(d.T * d.T), 0.0);
  for (int64_t i = 0; i < d.T; ++i) {
    const double* q = qkv + (b * d.T + i) * d.W + d.q_off(h);
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      const double* k = qkv + (b * d.T + j) * d.W + d.k_off(h);
      double s = 0;
      for (int64_t c = 0; c < d.dqk; ++c) s += q[c] * k[c];
      P[static_cast<size_t>(i * d.T + j)] = s * scale;
      mx = std::max(mx, s * scale);
    }
    double sum = 0;
    for (int64_t j = 0; j <= i; ++j) sum += (P[static_cast<size_t>(i * d.T + j)] = std::exp(P[static_cast<size_t>(i * d.T + j)] - mx));
    for (int64_t j = 0; j <= i; ++j) P[static_cast<size_t>(i * d.T + j)] /= sum;
  }
  return P;
}

void att_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  auto d = attention_dims(n, in[0]->shape);
  double scale = n.attr<AttentionAttrs>().scale;
  const double* qkv = in[0]->data.data();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      auto P = probs(d, scale, qkv, b, h);
      for (int64_t i = 0; i < d.T; ++i)
        for (int64_t c = 0; c < d.dv; ++c) {
          double acc = 0;
          for (int64_t j = 0; j <= i; ++j) acc += P[static_cast<size_t>(i * d.T + j)] * qkv[(b * d.T + j) * d.W + d.v_off(h) + c];
          out.data[static_cast<size_t>((b * d.T + i) * d.H * d.dv + h * d.dv + c)] = acc;
        }
    }
}

void att_grad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  auto d = attention_dims(n, in[0]->shape);
  double scale = n.attr<AttentionAttrs>().scale;
  const double* qkv = in[0]->data.data();
  const double* dO = in[1]->data.data();
  auto at = [&](auto* base, int64_t b, int64_t t, int64_t off) { return base + (b * d.T + t) * d.W + off; };
  auto dout = [&](int64_t b, int64_t t, int64_t h) { return dO + (b * d.T + t) * d.H * d.dv + h * d.dv; };
  double* g = out.data.data();
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      auto P = probs(d, scale, qkv, b, h);
      for (int64_t i = 0; i < d.T; ++i) {
        std::vector<double> dP(static_cast<size_t>(i + 1));
        double rowdot = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double s = 0;
          for (int64_t c = 0; c < d.dv; ++c) s += dout(b, i, h)[c] * at(qkv, b, j, d.v_off(h))[c];
          dP[static_cast<size_t>(j)] = s;
          rowdot += s * P[static_cast<size_t>(i * d.T + j)];
        }
        for (int64_t j = 0; j <= i; ++j) {
          double p = P[static_cast<size_t>(i * d.T + j)];
          double ds = p * (dP[static_cast<size_t>(j)] - rowdot) * scale;
          for (int64_t c = 0; c < d.dqk; ++c) {
            at(g, b, i, d.q_off(h))[c] += ds * at(qkv, b, j, d.k_off(h))[c];
            at(g, b, j, d.k_off(h))[c] += ds * at(qkv, b, i, d.q_off(h))[c];
          }
          for (int64_t c = 0; c < d.dv; ++c) at(g, b, j, d.v_off(h))[c] += p * dout(b, i, h)[c];
        }
      }
    }
}

void att_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::attention_grad, {b.in(0), b.grad_out()}, b.node().attrs, "qkv"));
}

Shape cached_shape(const Node& n, std::span<const Node* const> in) {
  auto d = attention_dims(n, in[0]->shape);
  const Shape& c = in[1]->shape;
  check(c.size() == 3 && c[0] == d.B && c[2] == d.H * (d.dqk + d.dv) && c[1] >= d.T, "attention_cached at node '",
        n.name, "': cache '", in[1]->name, "' ", shape_str(c), " does not fit qkv ", shape_str(in[0]->shape));
  expect_dtype(n, *in[2], DType::i32);
  check(in[2]->shape == Shape{d.B}, "attention_cached at node '", n.name, "': cache_len must be [", d.B, "]");
  return {d.B, d.T, d.H * d.dv};
}

// Reference: per sequence, assembles [cached rows, new rows] as one packed qkv sequence (the
// queries of the cached rows are unused) and runs plain causal attention, keeping the last Tn rows.
void cached_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  auto d = attention_dims(n, in[0]->shape);
  const int64_t Tmax = in[1]->shape[1], Wc = d.H * (d.dqk + d.dv), Wo = d.H * d.dv;
  for (int64_t b = 0; b < d.B; ++b) {
    const auto len = static_cast<int64_t>(in[2]->data[static_cast<size_t>(b)]);
    const int64_t L = len + d.T;
    check(len >= 0 && L <= Tmax, "attention_cached at node '", n.name, "': cache overflow (", L, " > ", Tmax, ")");
    RefTensor full(Shape{1, L, d.W});
    for (int64_t t = 0; t < L; ++t) {
      double* row = full.data.data() + t * d.W;
      if (t < len) {
        const double* c = in[1]->data.data() + (b * Tmax + t) * Wc;
        std::copy(c, c + Wc, row + d.H * d.dqk);  // cache row = [k | v], the packed k and v parts
      } else {
        const double* q = in[0]->data.data() + (b * d.T + (t - len)) * d.W;
        std::copy(q, q + d.W, row);
      }
    }
    RefTensor all(Shape{1, L, Wo});
    att_ref(n, std::vector<const RefTensor*>{&full}, all);
    std::copy(all.data.begin() + len * Wo, all.data.end(), out.data.begin() + b * d.T * Wo);
  }
}

}  // namespace

extern const OpDef attention_cached_def{"attention_cached", 3, cached_shape, cached_ref, nullptr};
extern const OpDef attention_def{"attention", 1, att_shape, att_ref, att_bwd};
extern const OpDef attention_grad_def{"attention_grad", 2, att_grad_shape, att_grad_ref, nullptr};

}  // namespace tandem
