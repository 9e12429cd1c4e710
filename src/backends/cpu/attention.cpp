// Fused causal attention, one (batch, head) pair per task, one query row at a time: the T x T
// score matrix is never materialised (a row of T scores is the only scratch). The backward pass
// recomputes each row's probabilities instead of storing them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/error.h"
#include "ops/attention.h"

namespace tandem::cpu {

float softmax_row(const float* x, float* y, int64_t C);  // softmax.cpp

namespace {
inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}
inline void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) y[c] += a * x[c];
}

// Row i's probabilities over keys 0..i into p[0..i].
inline void row_probs(const AttentionDims& d, float scale, const float* base, int64_t h, int64_t i, float* p) {
  const float* q = base + i * d.W + d.q_off(h);
  for (int64_t j = 0; j <= i; ++j) p[j] = scale * dot(q, base + j * d.W + d.k_off(h), d.dqk);
  softmax_row(p, p, i + 1);
}
}  // namespace

void attention(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const float* qkv = f32(in[0]);
  float* o = f32(out);
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(d.T));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* base = qkv + b * d.T * d.W;
        for (int64_t i = 0; i < d.T; ++i) {
          row_probs(d, scale, base, h, i, p.data());
          float* orow = o + (b * d.T + i) * d.H * d.dv + h * d.dv;
          std::fill(orow, orow + d.dv, 0.0f);
          for (int64_t j = 0; j <= i; ++j) axpy(orow, p[static_cast<size_t>(j)], base + j * d.W + d.v_off(h), d.dv);
        }
      }
  }
}

void attention_grad(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const float* qkv = f32(in[0]);
  const float* dO = f32(in[1]);
  float* g = f32(out);
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(d.T)), dp(static_cast<size_t>(d.T));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* base = qkv + b * d.T * d.W;
        float* gb = g + b * d.T * d.W;
        for (int64_t t = 0; t < d.T; ++t) {  // this task owns head h's q, k and v columns of batch b
          std::fill(gb + t * d.W + d.q_off(h), gb + t * d.W + d.q_off(h) + d.dqk, 0.0f);
          std::fill(gb + t * d.W + d.k_off(h), gb + t * d.W + d.k_off(h) + d.dqk, 0.0f);
          std::fill(gb + t * d.W + d.v_off(h), gb + t * d.W + d.v_off(h) + d.dv, 0.0f);
        }
        for (int64_t i = 0; i < d.T; ++i) {
          row_probs(d, scale, base, h, i, p.data());
          const float* doi = dO + (b * d.T + i) * d.H * d.dv + h * d.dv;
          float rowdot = 0;
          for (int64_t j = 0; j <= i; ++j) {
            dp[static_cast<size_t>(j)] = dot(doi, base + j * d.W + d.v_off(h), d.dv);
            rowdot += p[static_cast<size_t>(j)] * dp[static_cast<size_t>(j)];
          }
          const float* qi = base + i * d.W + d.q_off(h);
          float* dqi = gb + i * d.W + d.q_off(h);
          for (int64_t j = 0; j <= i; ++j) {
            const float pj = p[static_cast<size_t>(j)];
            const float ds = pj * (dp[static_cast<size_t>(j)] - rowdot) * scale;
            axpy(dqi, ds, base + j * d.W + d.k_off(h), d.dqk);
            axpy(gb + j * d.W + d.k_off(h), ds, qi, d.dqk);
            axpy(gb + j * d.W + d.v_off(h), pj, doi, d.dv);
          }
        }
      }
  }
}

void attention_cached(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const float* qkv = f32(in[0]);
  float* cache = f32(in[1]);  // state: written in place
  const int64_t len = i32(in[2])[0], Tmax = in[1].shape[1], Wc = d.H * (d.dqk + d.dv);
  float* o = f32(out);
  check(len >= 0 && len + d.T <= Tmax, "attention_cached at node '", node.name, "': cache holds ", Tmax,
        " positions, ", len + d.T, " needed");
  // Append the new keys and values: cache row = [k (H*dqk) | v (H*dv)].
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.T; ++t)
      std::memcpy(cache + (b * Tmax + len + t) * Wc, qkv + (b * d.T + t) * d.W + d.H * d.dqk,
                  static_cast<size_t>(Wc) * sizeof(float));
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(len + d.T));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* cb = cache + b * Tmax * Wc;
        for (int64_t i = 0; i < d.T; ++i) {
          const float* q = qkv + (b * d.T + i) * d.W + d.q_off(h);
          const int64_t n = len + i + 1;
          for (int64_t j = 0; j < n; ++j) p[static_cast<size_t>(j)] = scale * dot(q, cb + j * Wc + h * d.dqk, d.dqk);
          softmax_row(p.data(), p.data(), n);
          float* orow = o + (b * d.T + i) * d.H * d.dv + h * d.dv;
          std::fill(orow, orow + d.dv, 0.0f);
          for (int64_t j = 0; j < n; ++j) axpy(orow, p[static_cast<size_t>(j)], cb + j * Wc + d.H * d.dqk + h * d.dv, d.dv);
        }
      }
  }
}

}  // namespace tandem::cpu
