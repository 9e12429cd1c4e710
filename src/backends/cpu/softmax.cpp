#include <algorithm>
#include <cmath>

#include "backends/cpu/kernels.h"

namespace tandem::cpu {

// Numerically stable softmax of one row, in place in y (y may alias x). Returns log(sum exp(x - max)) + max.
float softmax_row(const float* x, float* y, int64_t C) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t c = 0; c < C; ++c) mx = std::max(mx, x[c]);
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) y[c] = x[c] - mx;
  exp_inplace(y, C);
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < C; ++c) s += y[c];
  const float inv = 1.0f / s;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) y[c] *= inv;
  return mx + std::log(s);
}

void softmax(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  float* y = f32(out);
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t i = 0; i < R; ++i) softmax_row(x + i * C, y + i * C, C);
}

void softmax_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* y = f32(in[0]);
  const float* g = f32(in[1]);
  float* o = f32(out);
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t i = 0; i < R; ++i) {
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < C; ++c) dot += y[i * C + c] * g[i * C + c];
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) o[i * C + c] = y[i * C + c] * (g[i * C + c] - dot);
  }
}

}  // namespace tandem::cpu
