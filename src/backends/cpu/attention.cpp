// Fused causal attention, one (batch, head) pair per task. The backward pass recomputes the
// probabilities instead of storing them.
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

}  // namespace

// Blocks of kQueryBlock query rows: S = scale Q K^T over the keys the block can see, masked and
// softmaxed in place, then O = P V. GEMMs read q, k and v straight out of the packed qkv rows
// (leading dimension W): no gathers. Scratch is kQueryBlock x T per thread, never T x T.
constexpr int64_t kQueryBlock = 64;

namespace {
// P[r, 0..kend) for query rows i0..i0+rows: causal mask, row softmax, zeros past the diagonal.
void block_probs(const AttentionDims& d, float scale, const float* base, int64_t h, int64_t i0, int64_t rows,
                 int64_t kend, float* P) {
  gemm(false, true, rows, kend, d.dqk, scale, base + i0 * d.W + d.q_off(h), d.W, base + d.k_off(h), d.W, 0.0f, P, kend);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = P + r * kend;
    const int64_t n = i0 + r + 1;
    softmax_row(row, row, n);
    std::fill(row + n, row + kend, 0.0f);
  }
}
}  // namespace

void attention(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const float* qkv = f32(in[0]);
  float* o = f32(out);
  const int64_t Wo = d.H * d.dv;
#pragma omp parallel
  {
    std::vector<float> P(static_cast<size_t>(std::min(d.T, kQueryBlock) * d.T));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* base = qkv + b * d.T * d.W;
        for (int64_t i0 = 0; i0 < d.T; i0 += kQueryBlock) {
          const int64_t rows = std::min(kQueryBlock, d.T - i0), kend = i0 + rows;
          block_probs(d, scale, base, h, i0, rows, kend, P.data());
          gemm(false, false, rows, d.dv, kend, 1.0f, P.data(), kend, base + d.v_off(h), d.W, 0.0f,
               o + (b * d.T + i0) * Wo + h * d.dv, Wo);
        }
      }
  }
}

// Per query block, with P recomputed: dP = dO V^T, dS = P (dP - rowsum(P dP)) scale,
// dQ = dS K, dK += dS^T Q, dV += P^T dO.
void attention_grad(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const float* qkv = f32(in[0]);
  const float* dO = f32(in[1]);
  float* g = f32(out);
  const int64_t Wo = d.H * d.dv;
#pragma omp parallel
  {
    const size_t scratch = static_cast<size_t>(std::min(d.T, kQueryBlock) * d.T);
    std::vector<float> P(scratch), dP(scratch);
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* base = qkv + b * d.T * d.W;
        float* gb = g + b * d.T * d.W;
        const float* dob = dO + b * d.T * Wo + h * d.dv;
        for (int64_t t = 0; t < d.T; ++t) {  // dK and dV accumulate over query blocks
          std::fill_n(gb + t * d.W + d.k_off(h), d.dqk, 0.0f);
          std::fill_n(gb + t * d.W + d.v_off(h), d.dv, 0.0f);
        }
        for (int64_t i0 = 0; i0 < d.T; i0 += kQueryBlock) {
          const int64_t rows = std::min(kQueryBlock, d.T - i0), kend = i0 + rows;
          block_probs(d, scale, base, h, i0, rows, kend, P.data());
          gemm(false, true, rows, kend, d.dv, 1.0f, dob + i0 * Wo, Wo, base + d.v_off(h), d.W, 0.0f, dP.data(), kend);
          for (int64_t r = 0; r < rows; ++r) {
            float* pr = P.data() + r * kend;
            float* dpr = dP.data() + r * kend;
            float rowdot = 0;
#pragma omp simd reduction(+ : rowdot)
            for (int64_t j = 0; j < kend; ++j) rowdot += pr[j] * dpr[j];
#pragma omp simd
            for (int64_t j = 0; j < kend; ++j) dpr[j] = pr[j] * (dpr[j] - rowdot) * scale;
          }
          gemm(false, false, rows, d.dqk, kend, 1.0f, dP.data(), kend, base + d.k_off(h), d.W, 0.0f,
               gb + i0 * d.W + d.q_off(h), d.W);
          gemm(true, false, kend, d.dqk, rows, 1.0f, dP.data(), kend, base + i0 * d.W + d.q_off(h), d.W, 1.0f,
               gb + d.k_off(h), d.W);
          gemm(true, false, kend, d.dv, rows, 1.0f, P.data(), kend, dob + i0 * Wo, Wo, 1.0f, gb + d.v_off(h), d.W);
        }
      }
  }
}

void attention_cached(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const AttentionDims d = attention_dims(node, in[0].shape);
  const float scale = node.attr<AttentionAttrs>().scale;
  const float* qkv = f32(in[0]);
  float* cache = f32(in[1]);  // state: written in place
  const int32_t* lens = i32(in[2]);
  const int64_t Tmax = in[1].shape[1], Wc = d.H * (d.dqk + d.dv);
  float* o = f32(out);
  int64_t longest = 0;
  for (int64_t b = 0; b < d.B; ++b) {
    check(lens[b] >= 0 && lens[b] + d.T <= Tmax, "attention_cached at node '", node.name, "': sequence ", b,
          " needs ", lens[b] + d.T, " cache positions, the cache holds ", Tmax);
    longest = std::max<int64_t>(longest, lens[b]);
    // Append the new keys and values: cache row = [k (H*dqk) | v (H*dv)].
    for (int64_t t = 0; t < d.T; ++t)
      std::memcpy(cache + (b * Tmax + lens[b] + t) * Wc, qkv + (b * d.T + t) * d.W + d.H * d.dqk,
                  static_cast<size_t>(Wc) * sizeof(float));
  }
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(longest + d.T));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < d.B; ++b)
      for (int64_t h = 0; h < d.H; ++h) {
        const float* cb = cache + b * Tmax * Wc;
        for (int64_t i = 0; i < d.T; ++i) {
          const float* q = qkv + (b * d.T + i) * d.W + d.q_off(h);
          const int64_t n = lens[b] + i + 1;
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
