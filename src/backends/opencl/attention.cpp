// Fused causal attention, its backward and the KV-cached decoding form (ops/attention.h).
// Forward: one work-item per (b, h, query row). Backward without atomics: a first kernel per
// query row writes dQ and the row's probabilities P and score gradients dS; a second per key row
// reads them and writes dK and dV. Every element of d(qkv) is written once. While P fits a
// scratch bound it is stored (each score computed once); beyond it the kernels recompute scores
// from per-row statistics (max, sum, rowsum(dO * O)) instead.
#include <vector>

#include "backends/opencl/kernels.h"
#include "core/error.h"
#include "ops/attention.h"

namespace tandem::opencl {

const char* const attention_src = R"CLC(
// Dot products and row updates eight lanes at a time (explicit vectors: PoCL does not vectorise
// these inner loops across work-items), the tail scalar; a fixed order for a given n.
float dotp(__global const float* a, __global const float* b, long n) {
  float8 v = (float8)(0.0f);
  long c = 0;
  for (; c + 8 <= n; c += 8) v = fma(vload8(0, a + c), vload8(0, b + c), v);
  float s = ((v.s0 + v.s1) + (v.s2 + v.s3)) + ((v.s4 + v.s5) + (v.s6 + v.s7));
  for (; c < n; ++c) s = fma(a[c], b[c], s);
  return s;
}
// y[0:n] = y * keep + p * x (keep = 1: y += p x).
void row_axpy(__global float* y, float keep, float p, __global const float* x, long n) {
  long c = 0;
  for (; c + 8 <= n; c += 8) vstore8(fma((float8)(p), vload8(0, x + c), vload8(0, y + c) * keep), 0, y + c);
  for (; c < n; ++c) y[c] = fma(p, x[c], y[c] * keep);
}
void row_zero(__global float* y, long n) {
  long c = 0;
  for (; c + 8 <= n; c += 8) vstore8((float8)(0.0f), 0, y + c);
  for (; c < n; ++c) y[c] = 0.0f;
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
  row_zero(out, dv);
  for (long j = 0; j <= i; ++j) {
    float p = exp(scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk) - mx) / l;
    row_axpy(out, 1.0f, p, base + j * W + 2 * H * dqk + h * dv, dv);
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
  row_zero(out, dqk);
  for (long j = 0; j <= i; ++j) {
    __global const float* k = base + j * W + H * dqk + h * dqk;
    float p = exp(scale * dotp(q, k, dqk) - mx) / l;
    float ds = p * (dotp(d, base + j * W + 2 * H * dqk + h * dv, dv) - rowdot) * scale;
    row_axpy(out, 1.0f, ds, k, dqk);
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
  row_zero(dk, dqk);
  row_zero(dvv, dv);
  for (long i = j; i < T; ++i) {
    const long si = 3 * (g - j + i);
    __global const float* q = base + i * W + h * dqk;
    __global const float* d = dO + dOo + (b * T + i) * H * dv + h * dv;
    float p = exp(scale * dotp(q, k, dqk) - st[si]) / st[si + 1];
    float ds = p * (dotp(d, v, dv) - st[si + 2]) * scale;
    row_axpy(dk, 1.0f, ds, q, dqk);
    row_axpy(dvv, 1.0f, p, d, dv);
  }
}
// The same with the probabilities kept: P [B*H*T, T] (row g = (b*H + h)*T + i, columns j <= i),
// each score computed once instead of three or five times. Used while P fits kMaxStoredP.
void softmax_row_store(__global const float* base, __global const float* q, __global float* p, long i, long W, long H,
                       long h, long dqk, float scale) {
  float mx = -INFINITY, l = 0.0f;
  for (long j = 0; j <= i; ++j) mx = fmax(mx, p[j] = scale * dotp(q, base + j * W + H * dqk + h * dqk, dqk));
  for (long j = 0; j <= i; ++j) l += (p[j] = exp(p[j] - mx));
  for (long j = 0; j <= i; ++j) p[j] /= l;
}
__kernel void attention_p_f32(__global const float* x, long xo, __global float* o, long oo, __global float* P, long B,
                              long T, long H, long dqk, long dv, float scale) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long i = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv);
  __global const float* base = x + xo + b * T * W;
  __global float* p = P + g * T;
  softmax_row_store(base, base + i * W + h * dqk, p, i, W, H, h, dqk, scale);
  __global float* out = o + oo + (b * T + i) * H * dv + h * dv;
  row_zero(out, dv);
  for (long j = 0; j <= i; ++j) row_axpy(out, 1.0f, p[j], base + j * W + 2 * H * dqk + h * dv, dv);
}
// Per query row: P, dS_ij = scale P_ij (dO_i . V_j - rowdot_i) into D, and dQ_i = sum_j dS_ij K_j.
__kernel void attention_grad_rows_f32(__global const float* x, long xo, __global const float* dO, long dOo,
                                      __global float* gq, long go, __global float* P, __global float* D, long B, long T,
                                      long H, long dqk, long dv, float scale) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long i = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv);
  __global const float* base = x + xo + b * T * W;
  __global const float* d = dO + dOo + (b * T + i) * H * dv + h * dv;
  __global float* p = P + g * T;
  __global float* ds = D + g * T;
  softmax_row_store(base, base + i * W + h * dqk, p, i, W, H, h, dqk, scale);
  float rowdot = 0.0f;
  for (long j = 0; j <= i; ++j) rowdot += p[j] * (ds[j] = dotp(d, base + j * W + 2 * H * dqk + h * dv, dv));
  __global float* out = gq + go + (b * T + i) * W + h * dqk;
  row_zero(out, dqk);
  for (long j = 0; j <= i; ++j) {
    ds[j] = p[j] * (ds[j] - rowdot) * scale;
    row_axpy(out, 1.0f, ds[j], base + j * W + H * dqk + h * dqk, dqk);
  }
}
// Per key row: dK_j = sum_{i >= j} dS_ij Q_i, dV_j = sum_{i >= j} P_ij dO_i.
__kernel void attention_grad_cols_f32(__global const float* x, long xo, __global const float* dO, long dOo,
                                      __global float* gkv, long go, __global const float* P, __global const float* D,
                                      long B, long T, long H, long dqk, long dv) {
  long g = get_global_id(0);
  if (g >= B * H * T) return;
  const long j = g % T, h = (g / T) % H, b = g / (T * H), W = H * (2 * dqk + dv);
  __global const float* base = x + xo + b * T * W;
  __global float* dk = gkv + go + (b * T + j) * W + H * dqk + h * dqk;
  __global float* dvv = gkv + go + (b * T + j) * W + 2 * H * dqk + h * dv;
  row_zero(dk, dqk);
  row_zero(dvv, dv);
  for (long i = j; i < T; ++i) {
    const long at = (g - j + i) * T + j;
    row_axpy(dk, 1.0f, D[at], base + i * W + h * dqk, dqk);
    row_axpy(dvv, 1.0f, P[at], dO + dOo + (b * T + i) * H * dv + h * dv, dv);
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
  row_zero(out, dv);
  for (long j = 0; j < n; ++j) {
    float p = exp(scale * dotp(q, cb + j * Wc + h * dqk, dqk) - mx) / l;
    row_axpy(out, 1.0f, p, cb + j * Wc + H * dqk + h * dv, dv);
  }
}
)CLC";

namespace {
// Scratch for the probabilities (and, in the backward, dS): B*H*T*T floats each. Beyond this the
// kernels recompute scores instead (gpt2-124m at T = 1024, batch 4, needs 2 x 192 MiB: kept).
constexpr size_t kMaxStoredP = size_t{512} << 20;
size_t p_bytes(const AttentionDims& d) { return static_cast<size_t>(d.B * d.H * d.T * d.T) * 4; }
}  // namespace

void attention(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const size_t rows = static_cast<size_t>(d.B * d.H * d.T);
  if (p_bytes(d) <= kMaxStoredP) {
    cl_mem P = be.scratch(0, p_bytes(d));
    be.launch("attention_p_f32", rows, {in[0], out, P, d.B, d.T, d.H, d.dqk, d.dv, scale});
    return;
  }
  be.launch("attention_f32", rows, {in[0], out, d.B, d.T, d.H, d.dqk, d.dv, scale});
}

void attention_grad(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const size_t rows = static_cast<size_t>(d.B * d.H * d.T);
  if (p_bytes(d) <= kMaxStoredP) {
    cl_mem P = be.scratch(0, p_bytes(d)), D = be.scratch(1, p_bytes(d));
    be.launch("attention_grad_rows_f32", rows, {in[0], in[1], out, P, D, d.B, d.T, d.H, d.dqk, d.dv, scale});
    be.launch("attention_grad_cols_f32", rows, {in[0], in[1], out, P, D, d.B, d.T, d.H, d.dqk, d.dv});
    return;
  }
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
