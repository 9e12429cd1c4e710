// cross_entropy and its backward (ops/cross_entropy.cpp): per-row losses, then one ordered sum.
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const cross_entropy_src = R"CLC(
// Row max and sum of exp(x - max), eight lanes at a time (PoCL runs a scalar exp inside a loop
// ~10x slower than a float8 one), the tail scalar: a fixed order for a given V.
float row_max(__global const float* x, long V) {
  float8 m = (float8)(-INFINITY);
  long c = 0;
  for (; c + 8 <= V; c += 8) m = fmax(m, vload8(0, x + c));
  float mx = fmax(fmax(fmax(m.s0, m.s1), fmax(m.s2, m.s3)), fmax(fmax(m.s4, m.s5), fmax(m.s6, m.s7)));
  for (; c < V; ++c) mx = fmax(mx, x[c]);
  return mx;
}
// sum of exp(x - mx); with y != 0 the exps are also stored in y.
float row_sumexp(__global const float* x, float mx, __global float* y, long V) {
  float8 a = (float8)(0.0f);
  long c = 0;
  for (; c + 8 <= V; c += 8) {
    const float8 e = exp(vload8(0, x + c) - mx);
    if (y) vstore8(e, 0, y + c);
    a += e;
  }
  float s = ((a.s0 + a.s1) + (a.s2 + a.s3)) + ((a.s4 + a.s5) + (a.s6 + a.s7));
  for (; c < V; ++c) {
    const float e = exp(x[c] - mx);
    if (y) y[c] = e;
    s += e;
  }
  return s;
}
float row_lse(__global const float* x, long V) {
  const float mx = row_max(x, V);
  return mx + log(row_sumexp(x, mx, 0, V));
}
__kernel void ce_rows_f32(__global const float* x, long xo, __global const int* t, long to, __global float* loss,
                          long R, long V) {
  long r = get_global_id(0);
  if (r >= R) return;
  int tr = t[to + r];
  loss[r] = tr < 0 ? 0.0f : row_lse(x + xo + r * V, V) - x[xo + r * V + tr];
}
__kernel void ce_total_f32(__global const float* loss, __global const int* t, long to, __global float* o, long oo,
                           long R) {
  if (get_global_id(0) != 0) return;
  float total = 0.0f;
  long valid = 0;
  for (long r = 0; r < R; ++r) {
    total += loss[r];
    valid += t[to + r] >= 0;
  }
  o[oo] = valid ? total / (float)valid : 0.0f;
}
__kernel void ce_grad_f32(__global const float* x, long xo, __global const int* t, long to, __global const float* dl,
                          long dlo, __global float* o, long oo, long R, long V) {
  long r = get_global_id(0);
  if (r >= R) return;
  long valid = 0;
  for (long k = 0; k < R; ++k) valid += t[to + k] >= 0;
  __global float* y = o + oo + r * V;
  int tr = t[to + r];
  if (tr < 0) {
    for (long c = 0; c < V; ++c) y[c] = 0.0f;
    return;
  }
  __global const float* in = x + xo + r * V;
  const float g = dl[dlo] / (float)valid, mx = row_max(in, V), s = row_sumexp(in, mx, y, V);
  for (long c = 0; c < V; ++c) y[c] = g * (y[c] / s - (c == tr ? 1.0f : 0.0f));
}
// token_nll: the per-row loss itself; token_nll_grad: dout[r] * (softmax - onehot).
__kernel void nll_rows_f32(__global const float* x, long xo, __global const int* t, long to, __global float* o, long oo,
                           long R, long V) {
  long r = get_global_id(0);
  if (r >= R) return;
  int tr = t[to + r];
  o[oo + r] = tr < 0 ? 0.0f : row_lse(x + xo + r * V, V) - x[xo + r * V + tr];
}
__kernel void nll_grad_f32(__global const float* x, long xo, __global const int* t, long to, __global const float* dl,
                           long dlo, __global float* o, long oo, long R, long V) {
  long r = get_global_id(0);
  if (r >= R) return;
  __global float* y = o + oo + r * V;
  int tr = t[to + r];
  if (tr < 0) {
    for (long c = 0; c < V; ++c) y[c] = 0.0f;
    return;
  }
  __global const float* in = x + xo + r * V;
  const float g = dl[dlo + r], mx = row_max(in, V), s = row_sumexp(in, mx, y, V);
  for (long c = 0; c < V; ++c) y[c] = g * (y[c] / s - (c == tr ? 1.0f : 0.0f));
}
)CLC";

void cross_entropy(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  cl_mem loss = be.scratch(0, static_cast<size_t>(R) * 4);
  be.launch("ce_rows_f32", static_cast<size_t>(R), {in[0], in[1], loss, R, V});
  be.launch("ce_total_f32", 1, {loss, in[1], out, R});
}
void cross_entropy_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  be.launch("ce_grad_f32", static_cast<size_t>(R), {in[0], in[1], in[2], out, R, V});
}

void token_nll(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  be.launch("nll_rows_f32", static_cast<size_t>(R), {in[0], in[1], out, R, V});
}
void token_nll_grad(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  be.launch("nll_grad_f32", static_cast<size_t>(R), {in[0], in[1], in[2], out, R, V});
}

}  // namespace tandem::opencl
