// cross_entropy and its backward (ops/cross_entropy.cpp): per-row losses, then one ordered sum.
#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const cross_entropy_src = R"CLC(
float row_lse(__global const float* x, long V) {
  float mx = -INFINITY, s = 0.0f;
  for (long c = 0; c < V; ++c) mx = fmax(mx, x[c]);
  for (long c = 0; c < V; ++c) s += exp(x[c] - mx);
  return mx + log(s);
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
  float g = dl[dlo] / (float)valid, mx = -INFINITY, s = 0.0f;
  for (long c = 0; c < V; ++c) mx = fmax(mx, in[c]);
  for (long c = 0; c < V; ++c) s += (y[c] = exp(in[c] - mx));
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

}  // namespace tandem::opencl
