#include <cmath>
#include <vector>

#include "backends/cpu/kernels.h"

namespace tandem::cpu {

namespace {

// Row statistics: mean (0 for rmsnorm) and r = 1/sqrt(var + eps), accumulated in double.
void row_stats(const float* x, int64_t C, float eps, bool centre, float& mean, float& r) {
  double s = 0, ss = 0;
  if (centre) {
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < C; ++c) s += x[c];
    s /= static_cast<double>(C);
  }
  const float m = static_cast<float>(s);
#pragma omp simd reduction(+ : ss)
  for (int64_t c = 0; c < C; ++c) ss += static_cast<double>((x[c] - m) * (x[c] - m));
  mean = m;
  r = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(C) + eps));
}

void norm_fwd(const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const float eps = node.attr<NormAttrs>().eps;
  const float* x = f32(in[0]);
  const float* w = f32(in[1]);
  const float* b = centre ? f32(in[2]) : nullptr;
  float* o = f32(out);
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t i = 0; i < R; ++i) {
    float mean, r;
    row_stats(x + i * C, C, eps, centre, mean, r);
    const float* xr = x + i * C;
    float* orow = o + i * C;
    if (centre) {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) orow[c] = (xr[c] - mean) * r * w[c] + b[c];
    } else {
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) orow[c] = xr[c] * r * w[c];
    }
  }
}

void norm_grad_x(const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const float eps = node.attr<NormAttrs>().eps;
  const float* x = f32(in[0]);
  const float* w = f32(in[1]);
  const float* g = f32(in[2]);
  float* o = f32(out);
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t i = 0; i < R; ++i) {
    float mean, r;
    const float* xr = x + i * C;
    const float* gr = g + i * C;
    row_stats(xr, C, eps, centre, mean, r);
    float m1 = 0, m2 = 0;
#pragma omp simd reduction(+ : m1, m2)
    for (int64_t c = 0; c < C; ++c) {
      float dxh = gr[c] * w[c];
      m1 += dxh;
      m2 += dxh * (xr[c] - mean) * r;
    }
    m1 = centre ? m1 / static_cast<float>(C) : 0.0f;
    m2 /= static_cast<float>(C);
    float* orow = o + i * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) orow[c] = r * (gr[c] * w[c] - m1 - (xr[c] - mean) * r * m2);
  }
}

// dw[c] = sum_rows g * xh: statistics per row first, then column blocks summed in row order.
void norm_grad_w(const Node& node, std::span<const Tensor> in, const Tensor& out, bool centre) {
  const float eps = node.attr<NormAttrs>().eps;
  const float* x = f32(in[0]);
  const float* g = f32(in[1]);
  float* o = f32(out);
  const int64_t C = in[0].shape.back(), R = in[0].numel() / C;
  std::vector<float> mean(static_cast<size_t>(R)), r(static_cast<size_t>(R));
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t i = 0; i < R; ++i) row_stats(x + i * C, C, eps, centre, mean[static_cast<size_t>(i)], r[static_cast<size_t>(i)]);
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    float acc[kBlock] = {};
    for (int64_t i = 0; i < R; ++i) {
      const float mu = mean[static_cast<size_t>(i)], ri = r[static_cast<size_t>(i)];
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += g[i * C + c] * ((x[i * C + c] - mu) * ri);
    }
    for (int64_t c = c0; c < c1; ++c) o[c] = acc[c - c0];
  }
}

}  // namespace

void layernorm(const Node& n, std::span<const Tensor> in, const Tensor& out) { norm_fwd(n, in, out, true); }
void rmsnorm(const Node& n, std::span<const Tensor> in, const Tensor& out) { norm_fwd(n, in, out, false); }
void layernorm_grad_x(const Node& n, std::span<const Tensor> in, const Tensor& out) { norm_grad_x(n, in, out, true); }
void rmsnorm_grad_x(const Node& n, std::span<const Tensor> in, const Tensor& out) { norm_grad_x(n, in, out, false); }
void layernorm_grad_w(const Node& n, std::span<const Tensor> in, const Tensor& out) { norm_grad_w(n, in, out, true); }
void rmsnorm_grad_w(const Node& n, std::span<const Tensor> in, const Tensor& out) { norm_grad_w(n, in, out, false); }

}  // namespace tandem::cpu
