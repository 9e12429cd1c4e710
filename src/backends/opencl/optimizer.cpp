// Optimizer kernels: AdamW (PyTorch's formulation, as backends/cpu/optimizer.cpp), squared norms
// (fixed chunks summed in double, in order), axpy.
#include <cmath>
#include <vector>

#include "backends/opencl/kernels.h"

namespace tandem::opencl {

const char* const optimizer_src = R"CLC(
__kernel void adamw_f32(__global float* p, long po, __global const float* g, long go, __global float* m, long mo,
                        __global float* v, long vo, long n, float b1, float b2, float eps, float gs, float bc2_sqrt,
                        float step_size, float decay) {
  long i = get_global_id(0);
  if (i >= n) return;
  float gi = g[go + i] * gs;
  float mi = m[mo + i] + (1.0f - b1) * (gi - m[mo + i]);
  float vi = v[vo + i] * b2 + (1.0f - b2) * gi * gi;
  m[mo + i] = mi;
  v[vo + i] = vi;
  float denom = sqrt(vi) / bc2_sqrt + eps;
  p[po + i] = p[po + i] * decay - step_size * (mi / denom);
}
__kernel void axpy_f32(__global float* y, long yo, __global const float* x, long xo, long n, float alpha) {
  long i = get_global_id(0);
  if (i < n) y[yo + i] += alpha * x[xo + i];
}
#ifdef cl_khr_fp64
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double acc_t;
#else
typedef float acc_t;
#endif
__kernel void sum_squares_f32(__global const float* x, long xo, __global float* part, long n, long chunk) {
  long c = get_global_id(0);
  if (c * chunk >= n) return;
  acc_t acc = 0;
  long end = min(n, (c + 1) * chunk);
  for (long i = c * chunk; i < end; ++i) acc += (acc_t)x[xo + i] * x[xo + i];
  part[c] = (float)acc;
}
)CLC";

}  // namespace tandem::opencl

namespace tandem {

double OpenClBackend::sum_squares(const Tensor& t) {
  constexpr int64_t kChunk = 1 << 12;
  const int64_t n = t.numel(), chunks = (n + kChunk - 1) / kChunk;
  if (n == 0) return 0;
  cl_mem part = scratch(0, static_cast<size_t>(chunks) * 4);
  launch("sum_squares_f32", static_cast<size_t>(chunks), {t, part, n, kChunk});
  std::vector<float> host(static_cast<size_t>(chunks));
  download(host.data(), part, 0, host.size() * 4);
  double total = 0;
  for (float p : host) total += p;
  return total;
}

void OpenClBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                          const AdamWStep& s) {
  const float bc1 = 1.0f - std::pow(s.beta1, static_cast<float>(s.step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(s.beta2, static_cast<float>(s.step)));
  launch("adamw_f32", static_cast<size_t>(param.numel()),
         {param, grad, m, v, param.numel(), s.beta1, s.beta2, s.eps, s.grad_scale, bc2_sqrt, s.lr / bc1,
          1.0f - s.lr * s.weight_decay});
}

void OpenClBackend::axpy(const Tensor& y, float alpha, const Tensor& x) {
  launch("axpy_f32", static_cast<size_t>(y.numel()), {y, x, y.numel(), alpha});
}

}  // namespace tandem
