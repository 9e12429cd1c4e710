// Fused causal attention, its backward and the KV-cached decoding form (ops/attention.h).
// Forward: one work-item per (b, h, query row). Backward without atomics: a first kernel per
// query row writes dQ and the row's softmax statistics (max, sum, rowsum(dO * O)); a second per
// key row recomputes P from them and writes dK and dV. Every element of d(qkv) is written once.
#include <vector>

#include "backends/opencl/kernels.h"
#include "core/error.h"
#include "ops/attention.h"

namespace tandem::opencl {

const char* const attention_src = R"CLC(
float dotp(__global const float* a, __global const float* b, long n) {
  float s = 0.0f;
  for (long c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}
__kernel void attention_f32(__global const float* x, long xo, __global float* o, long oo, long B, long T, long H,
                            long dqk, long dv, float scale) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long i = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv);
  __global const float* base = x + xo + b * T * W;
  __global const float* q = base + i * W + h * dqk;
  float mx = -INFINITY, l = 0.0f;
  for (long j = 0; j <= i; ++j) mx = fmax(mx, scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk));
  for (long j = 0; j <= i; ++j) l += exp(scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk) - mx);
  __global float* out = o + oo + (b * T + i) * H * dv + h * dv;
  for (long c = 0; c < dv; ++c) out[c] = 0.0f;
  for (long j = 0; j <= i; ++j) {
    float p = exp(scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk) - mx) / l;
    __global const float* v = base + j * W + 2 * H * dqk + h * dv;
    for (long c = 0; c < dv; ++c) out[c] += p * v[c];
  }
}
// dQ_i = scale * sum_j P_ij (dP_ij - rowdot_i) K_j, with dP_ij = dO_i . V_j; stats = (max, sum, rowdot).
__kernel void attention_grad_q_f32(__global const float* x, long xo, __global const float* dO, long dOo,
                                   __global float* gq, long go, __global float* st, long B, long T, long H, long dqk,
                                   long dv, float scale) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long i = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv);
  __global const float* base = x + xo + b * T * W;
  __global const float* q = base + i * W + h * dqk;
  __global const float* d = dO + dOo + (b * T + i) * H * dv + h * dv;
  float mx = -INFINITY, l = 0.0f, rowdot = 0.0f;
  for (long j = 0; j <= i; ++j) mx = fmax(mx, scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk));
  for (long j = 0; j <= i; ++j) l += exp(scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk) - mx);
  for (long j = 0; j <= i; ++j) {
    float p = exp(scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk) - mx) / l;
    rowdot += p * dotp(d, base + j * W + 2 * H * dqk + h * dv, dv);
  }
  __global float* out = gq + go + (b * T + i) * W + h * dqk;
  for (long c = 0; c < dqk; ++c) out[c] = 0.0f;
  for (long j = 0; j <= i; ++j) {
    __global const float* k = base + j * W + H * dqk + h * dqk;
    float p = exp(scale * dotp(q, k, dqk) - mx) / l;
    float ds = p * (dotp(d, base + j * W + 2 * H * dqk + h * dv, dv) - rowdot) * scale;
    for (long c = 0; c < dqk; ++c) out[c] += ds * k[c];
  }
  st[3 * g] = mx;
  st[3 * g + 1] = l;
  st[3 * g + 2] = rowdot;
}
// dK_j = scale * sum_{i >= j} P_ij (dP_ij - rowdot_i) Q_i,  dV_j = sum_{i >= j} P_ij dO_i.
__kernel void attention_grad_kv_f32(__global const float* x, long xo, __global const float* dO, long dOo,
                                    __global float* gkv, long go, __global const float* st, long B, long T, long H,
                                    long dqk, long dv, float scale) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long j = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv);
  __global const float* base = x + xo + b * T * W;
  __global const float* k = base + j * W + H * dqk + h * dqk;
  __global const float* v = base + j * W + 2 * H * dqk + h * dv;
  __global float* dk = gkv + go + (b * T + j) * W + H * dqk + h * dqk;
  __global float* dvv = gkv + go + (b * T + j) * W + 2 * H * dqk + h * dv;
  for (long c = 0; c < dqk; ++c) dk[c] = 0.0f;
  for (long c = 0; c < dv; ++c) dvv[c] = 0.0f;
  for (long i = j; i < T; ++i) {
    const long si = 3 * (g - j + i);
    __global const float* q = base + i * W + h * dqk;
    __global const float* d = dO + dOo + (b * T + i) * H * dv + h * dv;
    float p = exp(scale * dotp(q, k, dqk) - st[si]) / st[si + 1];
    float ds = p * (dotp(d, v, dv) - st[si + 2]) * scale;
    for (long c = 0; c < dqk; ++c) dk[c] += ds * q[c];
    for (long c = 0; c < dv; ++c) dvv[c] += p * d[c];
  }
}
// Appends the new keys and values: cache row = [k (H*dqk) | v (H*dv)].
__kernel void cache_append_f32(__global const float* x, long xo, __global float* cache, long co,
                               __global const int* lens, long lo, long B, long T, long H, long dqk, long dv,
                               long Tmax) {
  long g = get_global_id(0);
  const long Wc = H * (dqk + dv), W = H * (2 * dqk + dv);
  if (g >= B * T * Wc) return;
  const long c = g % Wc, t = (g / Wc) % T, b = g / (Wc * T);
  cache[co + (b * Tmax + lens[lo + b] + t) * Wc + c] = x[xo + (b * T + t) * W + H * dqk + c];
}
__kernel void attention_cached_f32(__global const float* x, long xo, __global const float* cache, long co,
                                   __global const int* lens, long lo, __global float* o, long oo, long B, long T,
                                   long H, long dqk, long dv, long Tmax, float scale) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long i = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv), Wc = H * (dqk + dv);
  __global const float* q = x + xo + (b * T + i) * W + h * dqk;
  __global const float* cb = cache + co + b * Tmax * Wc;
  const long n = lens[lo + b] + i + 1;
  float mx = -INFINITY, l = 0.0f;
  for (long j = 0; j < n; ++j) mx = fmax(mx, scale * dotp(q, cb + j * Wc + h * dqk, dqk));
  for (long j = 0; j < n; ++j) l += exp(scale * dotp(q, cb + j * Wc + h * dqk, dqk) - mx);
  __global float* out = o + oo + (b * T + i) * H * dv + h * dv;
  for (long c = 0; c < dv; ++c) out[c] = 0.0f;
  for (long j = 0; j < n; ++j) {
    float p = exp(scale * dotp(q, cb + j * Wc + h * dqk, dqk) - mx) / l;
    __global const float* v = cb + j * Wc + H * dqk + h * dv;
    for (long c = 0; c < dv; ++c) out[c] += p * v[c];
  }
}
)CLC";

void attention(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  be.launch("attention_f32", static_cast<size_t>(d.B * d.H * d.T),
            {in[0], out, d.B, d.T, d.H, d.dqk, d.dv, node.attr<AttentionAttrs>().scale});
}

void attention_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const size_t rows = static_cast<size_t>(d.B * d.H * d.T);
  cl_mem st = be.scratch(0, rows * 3 * 4);
  be.launch("attention_grad_q_f32", rows, {in[0], in[1], out, st, d.B, d.T, d.H, d.dqk, d.dv, scale});
  be.launch("attention_grad_kv_f32", rows, {in[0], in[1], out, st, d.B, d.T, d.H, d.dqk, d.dv, scale});
}

void attention_cached(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const int64_t Tmax = in[1].shape[1];
  std::vector<int32_t> lens(static_cast<size_t>(d.B));
  be.download(lens.data(), in[2].storage->handle, in[2].offset, lens.size() * 4);
  for (int64_t b = 0; b < d.B; ++b)
    check(lens[static_cast<size_t>(b)] >= 0 && lens[static_cast<size_t>(b)] + d.T <= Tmax, "attention_cached at node '",
          node.name, "': sequence ", b, " needs ", lens[static_cast<size_t>(b)] + d.T, " cache positions, the cache holds ",
          Tmax);
  be.launch("cache_append_f32", static_cast<size_t>(d.B * d.T * d.H * (d.dqk + d.dv)),
            {in[0], in[1], in[2], d.B, d.T, d.H, d.dqk, d.dv, Tmax});
  be.launch("attention_cached_f32", static_cast<size_t>(d.B * d.H * d.T),
            {in[0], in[1], in[2], out, d.B, d.T, d.H, d.dqk, d.dv, Tmax, node.attr<AttentionAttrs>().scale});
}

}  // namespace tandem::opencl
