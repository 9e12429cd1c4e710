// Optimizer kernels: AdamW (PyTorch's formulation, decoupled decay), squared norms, axpy.
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/kernels.h"

namespace tandem {

double CpuBackend::sum_squares(const Tensor& t) {
  const float* x = cpu::f32(t);
  const int64_t n = t.numel();
  // Fixed chunking, then an ordered sum: the same bits whatever the thread count.
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (n > cpu::kParallelMin)
  for (int64_t c = 0; c < chunks; ++c) {
    double acc = 0;
    const int64_t end = std::min(n, (c + 1) * kChunk);
#pragma omp simd reduction(+ : acc)
    for (int64_t i = c * kChunk; i < end; ++i) acc += static_cast<double>(x[i]) * x[i];
    part[static_cast<size_t>(c)] = acc;
  }
  double total = 0;
  for (double p : part) total += p;
  return total;
}

void CpuBackend::adamw(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                       const AdamWStep& s) {
  float* p = cpu::f32(param);
  const float* g = cpu::f32(grad);
  float* mm = cpu::f32(m);
  float* vv = cpu::f32(v);
  const int64_t n = param.numel();
  const float bc1 = 1.0f - std::pow(s.beta1, static_cast<float>(s.step));
  const float bc2_sqrt = std::sqrt(1.0f - std::pow(s.beta2, static_cast<float>(s.step)));
  const float step_size = s.lr / bc1;
  const float decay = 1.0f - s.lr * s.weight_decay;
  const float b1 = s.beta1, b2 = s.beta2, eps = s.eps, gs = s.grad_scale;
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i] * gs;
    float mi = mm[i] + (1.0f - b1) * (gi - mm[i]);  // lerp, as torch
    float vi = vv[i] * b2 + (1.0f - b2) * gi * gi;
    mm[i] = mi;
    vv[i] = vi;
    float denom = std::sqrt(vi) / bc2_sqrt + eps;
    p[i] = p[i] * decay - step_size * (mi / denom);
  }
}

void CpuBackend::axpy(const Tensor& y, float alpha, const Tensor& x) {
  float* yy = cpu::f32(y);
  const float* xx = cpu::f32(x);
  const int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > cpu::kParallelMin)
  for (int64_t i = 0; i < n; ++i) yy[i] += alpha * xx[i];
}

}  // namespace tandem
