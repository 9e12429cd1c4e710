#include "ops/moe.h"

#include "ops/op.h"

namespace tandem {
namespace {

DType i32_out(const Node&, std::span<const Node* const>) { return DType::i32; }

void check_route(const Node& n, const RouteAttrs& a) {
  check(a.n_experts > 0 && a.top_k > 0 && a.n_group > 0 && a.topk_group > 0 && a.topk_group <= a.n_group &&
            a.n_experts % a.n_group == 0 && a.top_k <= a.topk_group * (a.n_experts / a.n_group),
        op_name(n.op), " at node '", n.name, "': routing needs n_experts divisible by n_group, topk_group <= n_group and ",
        "num_experts_per_tok <= topk_group * experts per group (got E=", a.n_experts, ", groups=", a.n_group,
        ", topk_group=", a.topk_group, ", k=", a.top_k, ")");
}

// idx [N, K] i32 for N rows of `a.n_experts` experts.
void check_idx(const Node& n, const Node& idx, int64_t N, const RouteAttrs& a) {
  expect_dtype(n, idx, DType::i32);
  check(idx.shape == Shape{N, a.top_k}, op_name(n.op), " at node '", n.name, "': expert ids '", idx.name, "' ",
        shape_str(idx.shape), " must be [", N, ", ", a.top_k, "]");
}

void check_ids_ref(const Node& n, const RefTensor& idx, int64_t E) {
  for (double v : idx.data) check(v >= 0 && v < static_cast<double>(E), op_name(n.op), " at node '", n.name, "': expert id ", v, " out of range");
}

// --- routing
Shape route_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  check_route(n, a);
  check(in[0]->shape.size() == 2 && in[0]->shape[1] == a.n_experts && in[1]->shape == Shape{a.n_experts}, "topk_route at node '",
        n.name, "': scores ", shape_str(in[0]->shape), " and bias ", shape_str(in[1]->shape), " must be [N, ", a.n_experts,
        "] and [", a.n_experts, "]");
  return {in[0]->shape[0], a.top_k};
}
void route_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  std::vector<int32_t> ids(static_cast<size_t>(a.top_k));
  RouteScratch<double> scratch;
  for (int64_t r = 0; r < in[0]->shape[0]; ++r) {
    route_row(in[0]->data.data() + r * a.n_experts, in[1]->data.data(), a, ids.data(), scratch);
    for (int64_t k = 0; k < a.top_k; ++k) out.data[static_cast<size_t>(r * a.top_k + k)] = ids[static_cast<size_t>(k)];
  }
}

Shape weights_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  check(in[0]->shape.size() == 2 && in[0]->shape[1] == a.n_experts, "route_weights at node '", n.name, "': scores must be [N, ",
        a.n_experts, "]");
  check_idx(n, *in[1], in[0]->shape[0], a);
  return in[1]->shape;
}
void weights_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  check_ids_ref(n, *in[1], a.n_experts);
  for (int64_t r = 0; r < in[0]->shape[0]; ++r) {
    double sum = 0;
    for (int64_t k = 0; k < a.top_k; ++k) {
      const auto e = static_cast<int64_t>(in[1]->data[static_cast<size_t>(r * a.top_k + k)]);
      sum += (out.data[static_cast<size_t>(r * a.top_k + k)] = in[0]->data[static_cast<size_t>(r * a.n_experts + e)]);
    }
    const double f = a.routed_scaling_factor / (a.norm_topk_prob ? sum + 1e-20 : 1.0);
    for (int64_t k = 0; k < a.top_k; ++k) out.data[static_cast<size_t>(r * a.top_k + k)] *= f;
  }
}
void weights_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::route_weights_grad, {b.in(0), b.in(1), b.grad_out()}, b.node().attrs, "scores"));
}
// d scores[n, e_k] = c (g_k / S - sum_j g_j s_j / S^2) with S = sum_j s_j + 1e-20 (norm), else c g_k.
Shape weights_grad_shape(const Node& n, std::span<const Node* const> in) {
  weights_shape(n, in.first(2));
  check(in[2]->shape == in[1]->shape, "route_weights_grad at node '", n.name, "': dout must match the expert ids");
  return in[0]->shape;
}
void weights_grad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  const int64_t K = a.top_k, E = a.n_experts;
  for (int64_t r = 0; r < in[0]->shape[0]; ++r) {
    double S = 0, gs = 0;
    for (int64_t k = 0; k < K; ++k) {
      const auto e = static_cast<int64_t>(in[1]->data[static_cast<size_t>(r * K + k)]);
      const double s = in[0]->data[static_cast<size_t>(r * E + e)];
      S += s;
      gs += in[2]->data[static_cast<size_t>(r * K + k)] * s;
    }
    S += 1e-20;
    for (int64_t k = 0; k < K; ++k) {
      const auto e = static_cast<int64_t>(in[1]->data[static_cast<size_t>(r * K + k)]);
      const double g = in[2]->data[static_cast<size_t>(r * K + k)];
      out.data[static_cast<size_t>(r * E + e)] +=
          a.routed_scaling_factor * (a.norm_topk_prob ? g / S - gs / (S * S) : g);
    }
  }
}

// --- dispatch
Shape dispatch_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  check(in[0]->shape.size() == 2, "moe_dispatch at node '", n.name, "': x must be [N, H]");
  check_idx(n, *in[1], in[0]->shape[0], a);
  return {in[0]->shape[0] * a.top_k, in[0]->shape[1]};
}
void dispatch_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  check_ids_ref(n, *in[1], a.n_experts);
  const int64_t N = in[0]->shape[0], H = in[0]->shape[1];
  std::vector<int64_t> off, pos;
  expert_order(in[1]->data.data(), N, a.top_k, a.n_experts, off, pos);
  for (int64_t f = 0; f < N * a.top_k; ++f)
    std::copy_n(in[0]->data.begin() + (f / a.top_k) * H, H, out.data.begin() + pos[static_cast<size_t>(f)] * H);
}
void dispatch_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::moe_dispatch_grad, {b.grad_out(), b.in(1)}, b.node().attrs, "x"));
}
Shape dispatch_grad_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  const int64_t N = in[1]->shape.empty() ? 0 : in[1]->shape[0];
  check_idx(n, *in[1], N, a);
  check(in[0]->shape.size() == 2 && in[0]->shape[0] == N * a.top_k, "moe_dispatch_grad at node '", n.name, "': dout ",
        shape_str(in[0]->shape), " must have N*K rows");
  return {N, in[0]->shape[1]};
}
void dispatch_grad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  const int64_t N = in[1]->shape[0], H = in[0]->shape[1];
  std::vector<int64_t> off, pos;
  expert_order(in[1]->data.data(), N, a.top_k, a.n_experts, off, pos);
  for (int64_t f = 0; f < N * a.top_k; ++f)
    for (int64_t c = 0; c < H; ++c)
      out.data[static_cast<size_t>((f / a.top_k) * H + c)] += in[0]->data[static_cast<size_t>(pos[static_cast<size_t>(f)] * H + c)];
}

// --- grouped matmul
Shape gmm_shape(const Node& n, std::span<const Node* const> in) {
  const bool tw = n.attr<GroupedMatmulAttrs>().transpose_w;
  const Shape& x = in[0]->shape;
  const Shape& w = in[1]->shape;
  check(x.size() == 2 && w.size() == 3 && in[2]->shape.size() == 2 && x[0] == numel(in[2]->shape), "grouped_matmul at node '",
        n.name, "': x ", shape_str(x), ", W ", shape_str(w), ", ids ", shape_str(in[2]->shape), " do not fit");
  expect_dtype(n, *in[2], DType::i32);
  check(x[1] == (tw ? w[1] : w[2]), "grouped_matmul at node '", n.name, "': x width ", x[1], " does not match W ", shape_str(w),
        tw ? " (transposed)" : "");
  return {x[0], tw ? w[2] : w[1]};
}
void gmm_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const bool tw = n.attr<GroupedMatmulAttrs>().transpose_w;
  const int64_t E = in[1]->shape[0], O = in[1]->shape[1], I = in[1]->shape[2];
  check_ids_ref(n, *in[2], E);
  const int64_t N = in[2]->shape[0], K = in[2]->shape[1];
  const int64_t xin = in[0]->shape[1], yout = out.shape[1];
  std::vector<int64_t> off, pos;
  expert_order(in[2]->data.data(), N, K, E, off, pos);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = off[static_cast<size_t>(e)]; r < off[static_cast<size_t>(e + 1)]; ++r)
      for (int64_t j = 0; j < yout; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < xin; ++c) {
          const double w = tw ? in[1]->data[static_cast<size_t>((e * O + c) * I + j)] : in[1]->data[static_cast<size_t>((e * O + j) * I + c)];
          acc += in[0]->data[static_cast<size_t>(r * xin + c)] * w;
        }
        out.data[static_cast<size_t>(r * yout + j)] = acc;
      }
}
void gmm_bwd(GradBuilder& b) {
  const bool tw = b.node().attr<GroupedMatmulAttrs>().transpose_w;
  b.to(0, b.add(OpKind::grouped_matmul, {b.grad_out(), b.in(1), b.in(2)}, GroupedMatmulAttrs{!tw}, "x"));
  // dW_e = dout_e^T x_e ([out, in]); with transpose_w the roles of x and dout swap.
  std::vector<NodeId> ops = tw ? std::vector<NodeId>{b.grad_out(), b.in(0), b.in(2)} : std::vector<NodeId>{b.in(0), b.grad_out(), b.in(2)};
  b.to(1, b.add(OpKind::grouped_matmul_grad_w, ops, ShapeAttrs{b.input(1).shape}, "w"));
}
// grouped_matmul_grad_w(a [M, in], g [M, out], ids) -> [E, out, in]: g_e^T a_e per expert.
Shape gmm_grad_w_shape(const Node& n, std::span<const Node* const> in) {
  const Shape& s = n.attr<ShapeAttrs>().shape;
  check(s.size() == 3 && in[0]->shape.size() == 2 && in[1]->shape.size() == 2 && in[0]->shape[0] == in[1]->shape[0] &&
            in[0]->shape[1] == s[2] && in[1]->shape[1] == s[1] && in[0]->shape[0] == numel(in[2]->shape),
        "grouped_matmul_grad_w at node '", n.name, "': operands ", shape_str(in[0]->shape), ", ", shape_str(in[1]->shape),
        " do not fit W ", shape_str(s));
  expect_dtype(n, *in[2], DType::i32);
  return s;
}
void gmm_grad_w_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const int64_t E = out.shape[0], O = out.shape[1], I = out.shape[2];
  check_ids_ref(n, *in[2], E);
  std::vector<int64_t> off, pos;
  expert_order(in[2]->data.data(), in[2]->shape[0], in[2]->shape[1], E, off, pos);
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = off[static_cast<size_t>(e)]; r < off[static_cast<size_t>(e + 1)]; ++r)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i)
          out.data[static_cast<size_t>((e * O + o) * I + i)] += in[1]->data[static_cast<size_t>(r * O + o)] * in[0]->data[static_cast<size_t>(r * I + i)];
}

// --- combine
Shape combine_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  const int64_t N = in[2]->shape.empty() ? 0 : in[2]->shape[0];
  check_idx(n, *in[2], N, a);
  check(in[0]->shape.size() == 2 && in[0]->shape[0] == N * a.top_k && in[1]->shape == in[2]->shape, "moe_combine at node '",
        n.name, "': ys ", shape_str(in[0]->shape), " and weights ", shape_str(in[1]->shape), " do not fit ids ",
        shape_str(in[2]->shape));
  return {N, in[0]->shape[1]};
}
void combine_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  check_ids_ref(n, *in[2], a.n_experts);
  const int64_t N = in[2]->shape[0], K = a.top_k, H = in[0]->shape[1];
  std::vector<int64_t> off, pos;
  expert_order(in[2]->data.data(), N, K, a.n_experts, off, pos);
  for (int64_t f = 0; f < N * K; ++f)
    for (int64_t c = 0; c < H; ++c)
      out.data[static_cast<size_t>((f / K) * H + c)] +=
          in[1]->data[static_cast<size_t>(f)] * in[0]->data[static_cast<size_t>(pos[static_cast<size_t>(f)] * H + c)];
}
void combine_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::moe_combine_grad_y, {b.grad_out(), b.in(1), b.in(2)}, b.node().attrs, "ys"));
  b.to(1, b.add(OpKind::moe_combine_grad_w, {b.grad_out(), b.in(0), b.in(2)}, b.node().attrs, "w"));
}
// moe_combine_grad_y(g [N, H], w, ids) -> [N*K, H]: row pos(n, k) = w[n, k] g[n].
Shape combine_grad_y_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  check_idx(n, *in[2], in[0]->shape[0], a);
  check(in[1]->shape == in[2]->shape, "moe_combine_grad_y at node '", n.name, "': weights must match the ids");
  return {in[0]->shape[0] * a.top_k, in[0]->shape[1]};
}
void combine_grad_y_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  const int64_t N = in[0]->shape[0], K = a.top_k, H = in[0]->shape[1];
  std::vector<int64_t> off, pos;
  expert_order(in[2]->data.data(), N, K, a.n_experts, off, pos);
  for (int64_t f = 0; f < N * K; ++f)
    for (int64_t c = 0; c < H; ++c)
      out.data[static_cast<size_t>(pos[static_cast<size_t>(f)] * H + c)] = in[1]->data[static_cast<size_t>(f)] * in[0]->data[static_cast<size_t>((f / K) * H + c)];
}
// moe_combine_grad_w(g [N, H], ys [N*K, H], ids) -> [N, K]: g[n] . ys[pos(n, k)].
Shape combine_grad_w_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RouteAttrs>();
  check_idx(n, *in[2], in[0]->shape[0], a);
  check(in[1]->shape == Shape{in[0]->shape[0] * a.top_k, in[0]->shape[1]}, "moe_combine_grad_w at node '", n.name,
        "': ys does not fit");
  return in[2]->shape;
}
void combine_grad_w_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RouteAttrs>();
  const int64_t N = in[0]->shape[0], K = a.top_k, H = in[0]->shape[1];
  std::vector<int64_t> off, pos;
  expert_order(in[2]->data.data(), N, K, a.n_experts, off, pos);
  for (int64_t f = 0; f < N * K; ++f) {
    double acc = 0;
    for (int64_t c = 0; c < H; ++c)
      acc += in[0]->data[static_cast<size_t>((f / K) * H + c)] * in[1]->data[static_cast<size_t>(pos[static_cast<size_t>(f)] * H + c)];
    out.data[static_cast<size_t>(f)] = acc;
  }
}

// --- sequence-wise balance loss
Shape balance_shape(const Node& n, std::span<const Node* const> in) {
  const Shape& s = in[0]->shape;
  const Shape& id = in[1]->shape;
  expect_dtype(n, *in[1], DType::i32);
  check(s.size() == 3 && id.size() == 3 && s[0] == id[0] && s[1] == id[1] && s[1] > 0 && s[2] > 0 && id[2] > 0,
        op_name(n.op), " at node '", n.name, "': scores ", shape_str(s), " and expert ids ", shape_str(id),
        " must be [B, T, E] and [B, T, K]");
  return {s[0]};
}
// f_i of sequence b: E / (K T) times the number of times expert i was chosen.
std::vector<double> balance_fractions(const Node& n, const RefTensor& idx, int64_t b, int64_t E) {
  const int64_t T = idx.shape[1], K = idx.shape[2];
  std::vector<double> f(static_cast<size_t>(E), 0.0);
  for (int64_t j = 0; j < T * K; ++j) {
    const double e = idx.data[static_cast<size_t>(b * T * K + j)];
    check(e >= 0 && e < static_cast<double>(E), op_name(n.op), " at node '", n.name, "': expert id ", e, " out of range");
    f[static_cast<size_t>(e)] += static_cast<double>(E) / static_cast<double>(K * T);
  }
  return f;
}
void balance_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const int64_t B = in[0]->shape[0], T = in[0]->shape[1], E = in[0]->shape[2];
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<double> f = balance_fractions(n, *in[1], b, E);
    std::vector<double> P(static_cast<size_t>(E), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const double* s = in[0]->data.data() + (b * T + t) * E;
      double S = 0;
      for (int64_t j = 0; j < E; ++j) S += s[j];
      for (int64_t i = 0; i < E; ++i) P[static_cast<size_t>(i)] += s[i] / S / static_cast<double>(T);
    }
    double L = 0;
    for (int64_t i = 0; i < E; ++i) L += f[static_cast<size_t>(i)] * P[static_cast<size_t>(i)];
    out.data[static_cast<size_t>(b)] = L;
  }
}
void balance_bwd(GradBuilder& b) {
  b.to(0, b.add(OpKind::seq_balance_loss_grad, {b.in(0), b.in(1), b.grad_out()}, NoAttrs{}, "scores"));
}
Shape balance_grad_shape(const Node& n, std::span<const Node* const> in) {
  const Shape l = balance_shape(n, in.first(2));
  check(in[2]->shape == l, "seq_balance_loss_grad at node '", n.name, "': dout ", shape_str(in[2]->shape), " must be ",
        shape_str(l));
  return in[0]->shape;
}
void balance_grad_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const int64_t B = in[0]->shape[0], T = in[0]->shape[1], E = in[0]->shape[2];
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<double> f = balance_fractions(n, *in[1], b, E);
    const double dout = in[2]->data[static_cast<size_t>(b)];
    for (int64_t t = 0; t < T; ++t) {
      const double* s = in[0]->data.data() + (b * T + t) * E;
      double S = 0, fs = 0;
      for (int64_t j = 0; j < E; ++j) {
        S += s[j];
        fs += f[static_cast<size_t>(j)] * s[j];
      }
      for (int64_t j = 0; j < E; ++j)
        out.data[static_cast<size_t>((b * T + t) * E + j)] = dout / (static_cast<double>(T) * S) * (f[static_cast<size_t>(j)] - fs / S);
    }
  }
}

// --- shift_tokens(ids [B, T]) -> [B, T]: ids[b, t + shift], `fill` past the end.
Shape shift_shape(const Node& n, std::span<const Node* const> in) {
  expect_dtype(n, *in[0], DType::i32);
  check(in[0]->shape.size() == 2, "shift_tokens at node '", n.name, "': ids must be [B, T]");
  return in[0]->shape;
}
void shift_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<ShiftAttrs>();
  const int64_t B = in[0]->shape[0], T = in[0]->shape[1];
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      out.data[static_cast<size_t>(b * T + t)] = t + a.shift < T ? in[0]->data[static_cast<size_t>(b * T + t + a.shift)] : a.fill;
}

}  // namespace

extern const OpDef topk_route_def{"topk_route", 2, route_shape, route_ref, nullptr, i32_out};
extern const OpDef route_weights_def{"route_weights", 2, weights_shape, weights_ref, weights_bwd};
extern const OpDef route_weights_grad_def{"route_weights_grad", 3, weights_grad_shape, weights_grad_ref, nullptr};
extern const OpDef moe_dispatch_def{"moe_dispatch", 2, dispatch_shape, dispatch_ref, dispatch_bwd};
extern const OpDef moe_dispatch_grad_def{"moe_dispatch_grad", 2, dispatch_grad_shape, dispatch_grad_ref, nullptr};
extern const OpDef grouped_matmul_def{"grouped_matmul", 3, gmm_shape, gmm_ref, gmm_bwd};
extern const OpDef grouped_matmul_grad_w_def{"grouped_matmul_grad_w", 3, gmm_grad_w_shape, gmm_grad_w_ref, nullptr};
extern const OpDef moe_combine_def{"moe_combine", 3, combine_shape, combine_ref, combine_bwd};
extern const OpDef moe_combine_grad_y_def{"moe_combine_grad_y", 3, combine_grad_y_shape, combine_grad_y_ref, nullptr};
extern const OpDef moe_combine_grad_w_def{"moe_combine_grad_w", 3, combine_grad_w_shape, combine_grad_w_ref, nullptr};
extern const OpDef seq_balance_loss_def{"seq_balance_loss", 2, balance_shape, balance_ref, balance_bwd};
extern const OpDef seq_balance_loss_grad_def{"seq_balance_loss_grad", 3, balance_grad_shape, balance_grad_ref, nullptr};
extern const OpDef shift_tokens_def{"shift_tokens", 1, shift_shape, shift_ref, nullptr, i32_out};

}  // namespace tandem
