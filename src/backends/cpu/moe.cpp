#include <cstring>
#include <vector>

#include "backends/cpu/gemm_bf16.h"
#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "ops/moe.h"

namespace tandem::cpu {

namespace {
// Expert segments and row positions of ids [N, K] (checked: ids come from outside in conformance runs).
void order(const Node& node, const Tensor& ids, int64_t E, std::vector<int64_t>& off, std::vector<int64_t>& pos) {
  const int32_t* id = i32(ids);
  const int64_t N = ids.shape[0], K = ids.shape[1];
  for (int64_t f = 0; f < N * K; ++f)
    check(id[f] >= 0 && id[f] < E, op_name(node.op), " at node '", node.name, "': expert id ", id[f], " out of range [0, ", E, ")");
  expert_order(id, N, K, E, off, pos);
}
}  // namespace

void topk_route(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const float* s = f32(in[0]);
  const float* bias = f32(in[1]);
  int32_t* o = i32(out);
  const int64_t N = in[0].shape[0];
#pragma omp parallel if (N * a.n_experts > kParallelMin)
  {
    RouteScratch<float> scratch;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < N; ++r) route_row(s + r * a.n_experts, bias, a, o + r * a.top_k, scratch);
  }
}

void route_weights(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const float* s = f32(in[0]);
  const int32_t* id = i32(in[1]);
  float* w = f32(out);
  const int64_t N = in[0].shape[0], K = a.top_k, E = a.n_experts;
  for (int64_t r = 0; r < N; ++r) {
    float sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += (w[r * K + k] = s[r * E + id[r * K + k]]);
    const float f = a.routed_scaling_factor / (a.norm_topk_prob ? sum + 1e-20f : 1.0f);
    for (int64_t k = 0; k < K; ++k) w[r * K + k] *= f;
  }
}

void route_weights_grad(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const float* s = f32(in[0]);
  const int32_t* id = i32(in[1]);
  const float* g = f32(in[2]);
  float* o = f32(out);
  const int64_t N = in[0].shape[0], K = a.top_k, E = a.n_experts;
  std::memset(o, 0, static_cast<size_t>(N * E) * 4);
  for (int64_t r = 0; r < N; ++r) {
    float S = 0, gs = 0;
    for (int64_t k = 0; k < K; ++k) {
      const float sk = s[r * E + id[r * K + k]];
      S += sk;
      gs += g[r * K + k] * sk;
    }
    S += 1e-20f;
    for (int64_t k = 0; k < K; ++k)
      o[r * E + id[r * K + k]] += a.routed_scaling_factor * (a.norm_topk_prob ? g[r * K + k] / S - gs / (S * S) : g[r * K + k]);
  }
}

void moe_dispatch(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  std::vector<int64_t> off, pos;
  order(node, in[1], a.n_experts, off, pos);
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t NK = in[1].numel(), H = in[0].shape[1], K = a.top_k;
#pragma omp parallel for schedule(static) if (NK * H > kParallelMin)
  for (int64_t f = 0; f < NK; ++f) std::memcpy(o + pos[static_cast<size_t>(f)] * H, x + (f / K) * H, static_cast<size_t>(H) * 4);
}

void moe_dispatch_grad(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  std::vector<int64_t> off, pos;
  order(node, in[1], a.n_experts, off, pos);
  const float* g = f32(in[0]);
  float* o = f32(out);
  const int64_t N = in[1].shape[0], K = a.top_k, H = in[0].shape[1];
#pragma omp parallel for schedule(static) if (N * K * H > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* row = o + n * H;
    std::memset(row, 0, static_cast<size_t>(H) * 4);
    for (int64_t k = 0; k < K; ++k) {
      const float* gr = g + pos[static_cast<size_t>(n * K + k)] * H;
#pragma omp simd
      for (int64_t c = 0; c < H; ++c) row[c] += gr[c];
    }
  }
}

// All experts' GEMMs as one grouped job (gemm.h), rows already sorted by expert. bf16 operands:
// vdpbf16ps into an f32 scratch, rounded once into the bf16 output (like matmul).
void grouped_matmul(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const bool tw = node.attr<GroupedMatmulAttrs>().transpose_w;
  const int64_t E = in[1].shape[0], O = in[1].shape[1], I = in[1].shape[2];
  std::vector<int64_t> off, pos;
  order(node, in[2], E, off, pos);
  const int64_t xin = in[0].shape[1], yout = out.shape[1];
  const int64_t N = tw ? I : O, K = tw ? O : I;
  if (out.dtype == DType::bf16) {
    float* y = scratch(0, out.numel());
    grouped_bgemm(!tw, E, off.data(), N, K, bf16(in[0]), xin, bf16(in[1]), I, O * I, y, yout);
    return to_bf16(y, bf16(out), out.numel());
  }
  grouped_gemm(!tw, E, off.data(), N, K, f32(in[0]), xin, f32(in[1]), I, O * I, f32(out), yout);
}

// dW_e = g_e^T a_e: a [M, I], g [M, O] -> [E, O, I]; experts without tokens get zeros.
void grouped_matmul_grad_w(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t E = out.shape[0], O = out.shape[1], I = out.shape[2];
  std::vector<int64_t> off, pos;
  order(node, in[2], E, off, pos);
  if (out.dtype == DType::bf16) {
    float* dW = scratch(0, out.numel());
    grouped_bgemm_tn(E, off.data(), O, I, bf16(in[1]), O, bf16(in[0]), I, dW);
    return to_bf16(dW, bf16(out), out.numel());
  }
  grouped_gemm_tn(E, off.data(), O, I, f32(in[1]), O, f32(in[0]), I, f32(out));
}

void moe_combine(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  std::vector<int64_t> off, pos;
  order(node, in[2], a.n_experts, off, pos);
  const float* ys = f32(in[0]);
  const float* w = f32(in[1]);
  float* o = f32(out);
  const int64_t N = in[2].shape[0], K = a.top_k, H = in[0].shape[1];
#pragma omp parallel for schedule(static) if (N * K * H > kParallelMin)
  for (int64_t n = 0; n < N; ++n) {
    float* row = o + n * H;
    std::memset(row, 0, static_cast<size_t>(H) * 4);
    for (int64_t k = 0; k < K; ++k) {
      const float wk = w[n * K + k];
      const float* yr = ys + pos[static_cast<size_t>(n * K + k)] * H;
#pragma omp simd
      for (int64_t c = 0; c < H; ++c) row[c] += wk * yr[c];
    }
  }
}

void moe_combine_grad_y(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  std::vector<int64_t> off, pos;
  order(node, in[2], a.n_experts, off, pos);
  const float* g = f32(in[0]);
  const float* w = f32(in[1]);
  float* o = f32(out);
  const int64_t N = in[2].shape[0], K = a.top_k, H = in[0].shape[1];
#pragma omp parallel for schedule(static) if (N * K * H > kParallelMin)
  for (int64_t f = 0; f < N * K; ++f) {
    float* row = o + pos[static_cast<size_t>(f)] * H;
    const float* gr = g + (f / K) * H;
    const float wf = w[f];
#pragma omp simd
    for (int64_t c = 0; c < H; ++c) row[c] = wf * gr[c];
  }
}

void moe_combine_grad_w(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  std::vector<int64_t> off, pos;
  order(node, in[2], a.n_experts, off, pos);
  const float* g = f32(in[0]);
  const float* ys = f32(in[1]);
  float* o = f32(out);
  const int64_t N = in[2].shape[0], K = a.top_k, H = in[0].shape[1];
#pragma omp parallel for schedule(static) if (N * K * H > kParallelMin)
  for (int64_t f = 0; f < N * K; ++f) {
    const float* gr = g + (f / K) * H;
    const float* yr = ys + pos[static_cast<size_t>(f)] * H;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < H; ++c) s += gr[c] * yr[c];
    o[f] = s;
  }
}

namespace {
// f_i of one sequence (ids [T, K]): E / (K T) per time expert i was chosen.
void balance_fractions(const Node& node, const int32_t* id, int64_t T, int64_t K, int64_t E, std::vector<double>& f) {
  f.assign(static_cast<size_t>(E), 0.0);
  const double unit = static_cast<double>(E) / static_cast<double>(K * T);
  for (int64_t j = 0; j < T * K; ++j) {
    check(id[j] >= 0 && id[j] < E, op_name(node.op), " at node '", node.name, "': expert id ", id[j], " out of range [0, ", E, ")");
    f[static_cast<size_t>(id[j])] += unit;
  }
}
}  // namespace

// Per sequence: sum_i f_i P_i = 1/T sum_t (sum_i f_i s_ti) / S_t; sums in double (the op is a few
// E-wide passes over the router scores: negligible next to the experts).
void seq_balance_loss(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const float* s = f32(in[0]);
  const int32_t* id = i32(in[1]);
  float* o = f32(out);
  const int64_t B = in[0].shape[0], T = in[0].shape[1], E = in[0].shape[2], K = in[1].shape[2];
  std::vector<double> f;
  for (int64_t b = 0; b < B; ++b) {
    balance_fractions(node, id + b * T * K, T, K, E, f);
    double L = 0;
    for (int64_t t = 0; t < T; ++t) {
      const float* row = s + (b * T + t) * E;
      double S = 0, fs = 0;
      for (int64_t j = 0; j < E; ++j) {
        S += row[j];
        fs += f[static_cast<size_t>(j)] * row[j];
      }
      L += fs / S;
    }
    o[b] = static_cast<float>(L / static_cast<double>(T));
  }
}

void seq_balance_loss_grad(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const float* s = f32(in[0]);
  const int32_t* id = i32(in[1]);
  const float* g = f32(in[2]);
  float* o = f32(out);
  const int64_t B = in[0].shape[0], T = in[0].shape[1], E = in[0].shape[2], K = in[1].shape[2];
  std::vector<double> f;
  for (int64_t b = 0; b < B; ++b) {
    balance_fractions(node, id + b * T * K, T, K, E, f);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = s + (b * T + t) * E;
      double S = 0, fs = 0;
      for (int64_t j = 0; j < E; ++j) {
        S += row[j];
        fs += f[static_cast<size_t>(j)] * row[j];
      }
      const double c = static_cast<double>(g[b]) / (static_cast<double>(T) * S), mean = fs / S;
      for (int64_t j = 0; j < E; ++j) o[(b * T + t) * E + j] = static_cast<float>(c * (f[static_cast<size_t>(j)] - mean));
    }
  }
}

void shift_tokens(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<ShiftAttrs>();
  const int32_t* x = i32(in[0]);
  int32_t* o = i32(out);
  const int64_t B = in[0].shape[0], T = in[0].shape[1];
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) o[b * T + t] = t + a.shift < T ? x[b * T + t + a.shift] : a.fill;
}

}  // namespace tandem::cpu
