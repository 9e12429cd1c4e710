#include <cmath>
#include <vector>

#include "backends/cpu/kernels.h"

namespace tandem::cpu {

float softmax_row(const float* x, float* y, int64_t C);  // softmax.cpp

namespace {
int64_t count_valid(const int32_t* t, int64_t n) {
  int64_t v = 0;
  for (int64_t i = 0; i < n; ++i) v += t[i] >= 0;
  return v;
}
}  // namespace

void cross_entropy(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const int32_t* t = i32(in[1]);
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  std::vector<double> row_loss(static_cast<size_t>(R), 0.0);
#pragma omp parallel
  {
    std::vector<float> scratch(static_cast<size_t>(V));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < R; ++i) {
      if (t[i] < 0) continue;
      float lse = softmax_row(x + i * V, scratch.data(), V);
      row_loss[static_cast<size_t>(i)] = static_cast<double>(lse) - x[i * V + t[i]];
    }
  }
  double total = 0;
  for (double l : row_loss) total += l;
  const int64_t valid = count_valid(t, R);
  f32(out)[0] = valid ? static_cast<float>(total / static_cast<double>(valid)) : 0.0f;
}

namespace {
// One row of a negative log-likelihood's gradient, scale * (softmax(x) - onehot(t)); zeros for an
// ignored target (t < 0). Shared by cross_entropy_grad (scale: dloss / valid rows) and token_nll_grad
// (scale: the row's own upstream gradient).
void nll_grad_row(const float* x, int32_t t, float scale, float* y, int64_t V) {
  if (t < 0) {
    std::fill(y, y + V, 0.0f);
    return;
  }
  softmax_row(x, y, V);
#pragma omp simd
  for (int64_t c = 0; c < V; ++c) y[c] *= scale;
  y[t] -= scale;
}
}  // namespace

void cross_entropy_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const int32_t* t = i32(in[1]);
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  const int64_t valid = count_valid(t, R);
  const float scale = valid ? f32(in[2])[0] / static_cast<float>(valid) : 0.0f;
  float* o = f32(out);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < R; ++i) nll_grad_row(x + i * V, t[i], scale, o + i * V, V);
}

void token_nll(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const int32_t* t = i32(in[1]);
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  float* o = f32(out);
#pragma omp parallel
  {
    std::vector<float> scratch(static_cast<size_t>(V));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < R; ++i)
      o[i] = t[i] < 0 ? 0.0f : softmax_row(x + i * V, scratch.data(), V) - x[i * V + t[i]];
  }
}

void token_nll_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const int32_t* t = i32(in[1]);
  const float* g = f32(in[2]);
  const int64_t V = in[0].shape.back(), R = in[0].numel() / V;
  float* o = f32(out);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < R; ++i) nll_grad_row(x + i * V, t[i], g[i], o + i * V, V);
}

}  // namespace tandem::cpu
