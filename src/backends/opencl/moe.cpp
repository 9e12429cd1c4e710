// DeepSeekMoE (ops/moe.h): routing, dispatch, grouped matmul, combine, the sequence-wise balance
// loss, and shift_tokens. The expert order (each expert's rows one contiguous segment, stable in
// n*K + k) is computed on the host from the ids with the CPU's expert_order, after checking every
// id (as the CPU kernels do); the copy kernels read it from a device table, grouped_matmul runs one
// CLBlast GEMM per expert segment. No atomics: every output element is written by one work-item,
// and sums run in a fixed order (k, then rows of a segment).
#include <vector>

#include "backends/opencl/kernels.h"
#include "core/error.h"
#include "ops/moe.h"

namespace tandem::opencl {

const char* const moe_src = R"CLC(
// A strict total order on (value, index): larger value first, then lower index (ops/moe.h).
int route_better(float v, long i, float w, long j) { return v > w || (v == w && i < j); }
float group_rating(__global const float* s, __global const float* bias, long g, long per) {
  float best = -INFINITY, second = -INFINITY;
  for (long e = g * per; e < (g + 1) * per; ++e) {
    const float v = s[e] + bias[e];
    if (v > best) {
      second = best;
      best = v;
    } else if (v > second) {
      second = v;
    }
  }
  return per >= 2 ? best + second : best;
}
// One work-item per row. The best topk_group groups, then the best top_k experts among theirs, each
// found by selection in the total order (the i-th pick is the best one after the (i-1)-th): the
// same set and order as the CPU's partial_sort with the same comparator.
__kernel void topk_route_f32(__global const float* sc, long so, __global const float* bias, long bo, __global int* o,
                             long oo, long N, long E, long K, long G, long TG) {
  long r = get_global_id(0);
  if (r >= N) return;
  __global const float* s = sc + so + r * E;
  __global const float* b = bias + bo;
  const long per = E / G;
  ulong groups = 0;  // G <= 64 (supports() checks)
  float pv = 0.0f;
  long pg = -1;
  for (long i = 0; i < TG; ++i) {
    float bv = 0.0f;
    long bg = -1;
    for (long g = 0; g < G; ++g) {
      const float v = group_rating(s, b, g, per);
      if ((pg < 0 || route_better(pv, pg, v, g)) && (bg < 0 || route_better(v, g, bv, bg))) {
        bv = v;
        bg = g;
      }
    }
    if (bg < 0) break;  // only with NaN ratings
    groups |= 1ul << bg;
    pv = bv;
    pg = bg;
  }
  pg = -1;
  for (long k = 0; k < K; ++k) {
    float bv = 0.0f;
    long be = -1;
    for (long e = 0; e < E; ++e) {
      if (!((groups >> (e / per)) & 1ul)) continue;
      const float v = s[e] + b[e];
      if ((pg < 0 || route_better(pv, pg, v, e)) && (be < 0 || route_better(v, e, bv, be))) {
        bv = v;
        be = e;
      }
    }
    o[oo + r * K + k] = (int)be;
    pv = bv;
    pg = be;
  }
}
// w[n, k] = s[n, idx] * c / (sum_k s[n, idx] + 1e-20 if norm); an id out of range gives NaN.
__kernel void route_weights_f32(__global const float* s, long so, __global const int* id, long io, __global float* w,
                                long wo, long N, long E, long K, long norm, float c) {
  long r = get_global_id(0);
  if (r >= N) return;
  float sum = 0.0f;
  for (long k = 0; k < K; ++k) {
    const int e = id[io + r * K + k];
    const float v = e >= 0 && e < E ? s[so + r * E + e] : NAN;
    w[wo + r * K + k] = v;
    sum += v;
  }
  const float f = c / (norm ? sum + 1e-20f : 1.0f);
  for (long k = 0; k < K; ++k) w[wo + r * K + k] *= f;
}
__kernel void route_weights_grad_f32(__global const float* s, long so, __global const int* id, long io,
                                     __global const float* dw, long dwo, __global float* o, long oo, long N, long E,
                                     long K, long norm, float c) {
  long r = get_global_id(0);
  if (r >= N) return;
  __global float* row = o + oo + r * E;
  for (long e = 0; e < E; ++e) row[e] = 0.0f;
  float S = 0.0f, gs = 0.0f;
  for (long k = 0; k < K; ++k) {
    const int e = id[io + r * K + k];
    const float sk = e >= 0 && e < E ? s[so + r * E + e] : NAN;
    S += sk;
    gs += dw[dwo + r * K + k] * sk;
  }
  S += 1e-20f;
  for (long k = 0; k < K; ++k) {
    const int e = id[io + r * K + k];
    const float g = dw[dwo + r * K + k];
    if (e >= 0 && e < E) row[e] += c * (norm ? g / S - gs / (S * S) : g);
  }
}
// pos[f]: the row of pair f = n*K + k in expert order.
__kernel void moe_dispatch_f32(__global const float* x, long xo, __global const int* pos, __global float* o, long oo,
                               long n, long H, long K) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long f = g / H, c = g % H;
  o[oo + (long)pos[f] * H + c] = x[xo + (f / K) * H + c];
}
__kernel void moe_dispatch_grad_f32(__global const float* dy, long dyo, __global const int* pos, __global float* o,
                                    long oo, long n, long H, long K) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long r = g / H, c = g % H;
  float acc = 0.0f;
  for (long k = 0; k < K; ++k) acc += dy[dyo + (long)pos[r * K + k] * H + c];
  o[oo + g] = acc;
}
__kernel void moe_combine_f32(__global const float* ys, long yso, __global const float* w, long wo,
                              __global const int* pos, __global float* o, long oo, long n, long H, long K) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long r = g / H, c = g % H;
  float acc = 0.0f;
  for (long k = 0; k < K; ++k) acc += w[wo + r * K + k] * ys[yso + (long)pos[r * K + k] * H + c];
  o[oo + g] = acc;
}
__kernel void moe_combine_grad_y_f32(__global const float* dy, long dyo, __global const float* w, long wo,
                                     __global const int* pos, __global float* o, long oo, long n, long H, long K) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long f = g / H, c = g % H;
  o[oo + (long)pos[f] * H + c] = w[wo + f] * dy[dyo + (f / K) * H + c];
}
__kernel void moe_combine_grad_w_f32(__global const float* dy, long dyo, __global const float* ys, long yso,
                                     __global const int* pos, __global float* o, long oo, long n, long H, long K) {
  long f = get_global_id(0);
  if (f >= n) return;
  __global const float* d = dy + dyo + (f / K) * H;
  __global const float* y = ys + yso + (long)pos[f] * H;
  float acc = 0.0f;
  for (long c = 0; c < H; ++c) acc += d[c] * y[c];
  o[oo + f] = acc;
}
// Sequence-wise balance loss (ops/moe.h), with f [B, E] from the host. Sums in double where the
// device has it, as the CPU kernel.
#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double bal_t;
#else
typedef float bal_t;
#endif
// (S_t, sum_i f_i s_ti) of one token's E scores.
void balance_sums(__global const float* row, __global const float* f, long E, bal_t* S, bal_t* fs) {
  bal_t a = 0, b = 0;
  for (long j = 0; j < E; ++j) {
    a += row[j];
    b += (bal_t)f[j] * row[j];
  }
  *S = a;
  *fs = b;
}
__kernel void seq_balance_loss_f32(__global const float* s, long so, __global const float* f, __global float* o, long oo,
                                   long B, long T, long E) {
  long b = get_global_id(0);
  if (b >= B) return;
  bal_t L = 0, S, fs;
  for (long t = 0; t < T; ++t) {
    balance_sums(s + so + (b * T + t) * E, f + b * E, E, &S, &fs);
    L += fs / S;
  }
  o[oo + b] = (float)(L / (bal_t)T);
}
__kernel void seq_balance_loss_grad_f32(__global const float* s, long so, __global const float* f,
                                        __global const float* dl, long dlo, __global float* o, long oo, long n, long T,
                                        long E) {
  long bt = get_global_id(0);
  if (bt >= n) return;
  const long b = bt / T;
  __global const float* fb = f + b * E;
  bal_t S, fs;
  balance_sums(s + so + bt * E, fb, E, &S, &fs);
  const bal_t c = (bal_t)dl[dlo + b] / ((bal_t)T * S), mean = fs / S;
  for (long j = 0; j < E; ++j) o[oo + bt * E + j] = (float)(c * ((bal_t)fb[j] - mean));
}
__kernel void shift_tokens_i32(__global const int* x, long xo, __global int* o, long oo, long n, long T, long shift,
                               long fill) {
  long g = get_global_id(0);
  if (g >= n) return;
  const long t = g % T;
  o[oo + g] = t + shift < T ? x[xo + g + shift] : (int)fill;
}
)CLC";

namespace {

// The expert order of ids [N, K], after checking every id: offsets [E+1] (segment starts) and
// pos [N*K] (the row of each pair), on the host.
void expert_order_host(OpenClBackend& be, const Node& node, const Tensor& ids, int64_t E, std::vector<int64_t>& off,
                       std::vector<int64_t>& pos) {
  const int64_t N = ids.shape[0], K = ids.shape[1], NK = N * K;
  std::vector<int32_t> id(static_cast<size_t>(NK));
  be.download(id.data(), ids.storage->handle, ids.offset, id.size() * 4);
  for (int64_t f = 0; f < NK; ++f)
    check(id[static_cast<size_t>(f)] >= 0 && id[static_cast<size_t>(f)] < E, op_name(node.op), " at node '", node.name,
          "': expert id ", id[static_cast<size_t>(f)], " out of range [0, ", E, ")");
  expert_order(id.data(), N, K, E, off, pos);
}
std::vector<int64_t> expert_offsets(OpenClBackend& be, const Node& node, const Tensor& ids, int64_t E) {
  std::vector<int64_t> off, pos;
  expert_order_host(be, node, ids, E, off, pos);
  return off;
}
// pos on the device (scratch slot 0).
cl_mem expert_pos(OpenClBackend& be, const Node& node, const Tensor& ids, int64_t E) {
  std::vector<int64_t> off, pos;
  expert_order_host(be, node, ids, E, off, pos);
  const std::vector<int32_t> pos32(pos.begin(), pos.end());
  cl_mem m = be.scratch(0, std::max<size_t>(pos32.size() * 4, 4));
  be.upload(m, 0, pos32.data(), pos32.size() * 4);
  return m;
}

// f [B, E] of the balance loss: E / (K T) per time a sequence chose expert i; scratch slot 0.
cl_mem balance_fractions(OpenClBackend& be, const Node& node, const Tensor& ids, int64_t E) {
  const int64_t B = ids.shape[0], TK = ids.shape[1] * ids.shape[2];
  std::vector<int32_t> id(static_cast<size_t>(B * TK));
  be.download(id.data(), ids.storage->handle, ids.offset, id.size() * 4);
  const double unit = static_cast<double>(E) / static_cast<double>(TK);
  std::vector<double> f(static_cast<size_t>(B * E), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < TK; ++j) {
      const int32_t e = id[static_cast<size_t>(b * TK + j)];
      check(e >= 0 && e < E, op_name(node.op), " at node '", node.name, "': expert id ", e, " out of range [0, ", E, ")");
      f[static_cast<size_t>(b * E + e)] += unit;
    }
  const std::vector<float> f32(f.begin(), f.end());
  cl_mem m = be.scratch(0, f32.size() * 4);
  be.upload(m, 0, f32.data(), f32.size() * 4);
  return m;
}

}  // namespace

void seq_balance_loss(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t B = in[0].shape[0], T = in[0].shape[1], E = in[0].shape[2];
  cl_mem f = balance_fractions(be, node, in[1], E);
  be.launch("seq_balance_loss_f32", static_cast<size_t>(B), {in[0], f, out, B, T, E});
}

void seq_balance_loss_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t B = in[0].shape[0], T = in[0].shape[1], E = in[0].shape[2];
  cl_mem f = balance_fractions(be, node, in[1], E);
  be.launch("seq_balance_loss_grad_f32", static_cast<size_t>(B * T), {in[0], f, in[2], out, B * T, T, E});
}

void topk_route(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[0].shape[0];
  be.launch("topk_route_f32", static_cast<size_t>(N),
            {in[0], in[1], out, N, a.n_experts, a.top_k, a.n_group, a.topk_group});
}

void route_weights(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[0].shape[0];
  be.launch("route_weights_f32", static_cast<size_t>(N),
            {in[0], in[1], out, N, a.n_experts, a.top_k, int64_t{a.norm_topk_prob}, a.routed_scaling_factor});
}

void route_weights_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  const int64_t N = in[0].shape[0];
  be.launch("route_weights_grad_f32", static_cast<size_t>(N),
            {in[0], in[1], in[2], out, N, a.n_experts, a.top_k, int64_t{a.norm_topk_prob}, a.routed_scaling_factor});
}

void moe_dispatch(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  cl_mem pos = expert_pos(be, node, in[1], a.n_experts);
  const int64_t H = in[0].shape[1];
  be.launch("moe_dispatch_f32", static_cast<size_t>(out.numel()), {in[0], pos, out, out.numel(), H, a.top_k});
}

void moe_dispatch_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  cl_mem pos = expert_pos(be, node, in[1], a.n_experts);
  const int64_t H = in[0].shape[1];
  be.launch("moe_dispatch_grad_f32", static_cast<size_t>(out.numel()), {in[0], pos, out, out.numel(), H, a.top_k});
}

// One GEMM per expert segment (gemm(): CLBlast), in expert order.
void grouped_matmul(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const bool tw = node.attr<GroupedMatmulAttrs>().transpose_w;
  const int64_t E = in[1].shape[0], O = in[1].shape[1], I = in[1].shape[2], xin = in[0].shape[1], yout = out.shape[1];
  const std::vector<int64_t> off = expert_offsets(be, node, in[2], E);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = off[static_cast<size_t>(e)], m = off[static_cast<size_t>(e + 1)] - r0;
    if (!tw) gemm(be, false, true, m, O, I, in[0], r0 * xin, xin, in[1], e * O * I, I, out, r0 * yout);
    else gemm(be, false, false, m, I, O, in[0], r0 * xin, xin, in[1], e * O * I, I, out, r0 * yout);
  }
}

// dW_e = g_e^T a_e ([O, I]); zeros for an expert without rows.
void grouped_matmul_grad_w(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t E = out.shape[0], O = out.shape[1], I = out.shape[2];
  const std::vector<int64_t> off = expert_offsets(be, node, in[2], E);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = off[static_cast<size_t>(e)], m = off[static_cast<size_t>(e + 1)] - r0;
    gemm(be, true, false, O, I, m, in[1], r0 * O, O, in[0], r0 * I, I, out, e * O * I);
  }
}

void moe_combine(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  cl_mem pos = expert_pos(be, node, in[2], a.n_experts);
  be.launch("moe_combine_f32", static_cast<size_t>(out.numel()),
            {in[0], in[1], pos, out, out.numel(), in[0].shape[1], a.top_k});
}

void moe_combine_grad_y(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  cl_mem pos = expert_pos(be, node, in[2], a.n_experts);
  be.launch("moe_combine_grad_y_f32", static_cast<size_t>(out.numel()),
            {in[0], in[1], pos, out, out.numel(), in[0].shape[1], a.top_k});
}

void moe_combine_grad_w(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RouteAttrs>();
  cl_mem pos = expert_pos(be, node, in[2], a.n_experts);
  be.launch("moe_combine_grad_w_f32", static_cast<size_t>(out.numel()),
            {in[0], in[1], pos, out, out.numel(), in[0].shape[1], a.top_k});
}

void shift_tokens(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<ShiftAttrs>();
  be.launch("shift_tokens_i32", static_cast<size_t>(out.numel()),
            {in[0], out, out.numel(), in[0].shape[1], a.shift, int64_t{a.fill}});
}

}  // namespace tandem::opencl
