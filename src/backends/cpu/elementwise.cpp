#include <cmath>
#include <cstring>
#include <vector>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "backends/cpu/kernels.h"

#if defined(__AVX512F__)
// glibc's libmvec vector math (accurate to a few ulp), called explicitly so that we do not need
// -ffast-math to get a vectorised exp.
extern "C" __m512 _ZGVeN16v_expf(__m512);
#endif

namespace tandem::cpu {

namespace {
template <typename VecF, typename ScalarF>
void map_inplace(float* x, int64_t n, VecF vf, ScalarF sf) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, vf(_mm512_loadu_ps(x + i)));
  if (i < n) {
    __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, m, vf(_mm512_maskz_loadu_ps(m, x + i)));
  }
#else
  for (; i < n; ++i) x[i] = sf(x[i]);
#endif
  (void)vf;
  (void)sf;
}
}  // namespace

void exp_inplace(float* x, int64_t n) {
#if defined(__AVX512F__)
  map_inplace(x, n, [](__m512 v) { return _ZGVeN16v_expf(v); }, [](float v) { return std::exp(v); });
#else
  map_inplace(x, n, 0, [](float v) { return std::exp(v); });
#endif
}

void add(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* a = f32(in[0]);
  const float* b = f32(in[1]);
  float* o = f32(out);
  const int64_t n = out.numel(), nb = in[1].numel(), rows = n / nb;
  if (rows == 1) {  // same shapes (residual adds, gradient sums): split the elements, not the rows
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] + b[i];
    return;
  }
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t r = 0; r < rows; ++r)
#pragma omp simd
    for (int64_t j = 0; j < nb; ++j) o[r * nb + j] = a[r * nb + j] + b[j];
}

void mul(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* a = f32(in[0]);
  const float* b = f32(in[1]);
  float* o = f32(out);
  const int64_t n = out.numel(), nb = in[1].numel(), rows = n / nb;
  if (rows == 1) {  // same shapes (residual adds, gradient sums): split the elements, not the rows
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) o[i] = a[i] * b[i];
    return;
  }
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t r = 0; r < rows; ++r)
#pragma omp simd
    for (int64_t j = 0; j < nb; ++j) o[r * nb + j] = a[r * nb + j] * b[j];
}

void scale(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const float s = node.attr<ScaleAttrs>().scale;
  const float* a = f32(in[0]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) o[i] = a[i] * s;
}

void broadcast(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* a = f32(in[0]);
  float* o = f32(out);
  const int64_t n = out.numel(), na = in[0].numel();
  for (int64_t r = 0; r < n / na; ++r) std::memcpy(o + r * na, a, static_cast<size_t>(na) * sizeof(float));
}

// Column-parallel: each thread owns a block of output columns and adds rows in order.
void sum_to(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* a = f32(in[0]);
  float* o = f32(out);
  const int64_t C = out.numel(), R = in[0].numel() / C;
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static) if (R * C > kParallelMin)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    float acc[kBlock] = {};
    for (int64_t r = 0; r < R; ++r)
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += a[r * C + c];
    for (int64_t c = c0; c < c1; ++c) o[c] = acc[c - c0];
  }
}

void sum(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* a = f32(in[0]);
  const int64_t n = in[0].numel();
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += a[i];
  f32(out)[0] = static_cast<float>(acc);
}

// gelu(x) = 0.5 x (1 + tanh(u)), u = c (x + 0.044715 x^3), evaluated as x sigmoid(2u) =
// x / (1 + exp(-2u)): the same function (1 + tanh(u) = 2 / (1 + exp(-2u))) with one vector exp
// instead of tanh, and no cancellation in 1 + tanh for negative u. (libmvec's tanhf made gelu's
// backward 5% of a baby-gpt step.) Blocks of 1024 so the exp input stays in L1.
constexpr float kGeluC = 0.7978845608028654f;
constexpr int64_t kBlockElems = 1024;

void gelu(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < n; b += kBlockElems) {
    const int64_t e = std::min(n, b + kBlockElems);
    float t[kBlockElems];
#pragma omp simd
    for (int64_t i = b; i < e; ++i) t[i - b] = -2.0f * kGeluC * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
    exp_inplace(t, e - b);
#pragma omp simd
    for (int64_t i = b; i < e; ++i) o[i] = x[i] / (1.0f + t[i - b]);
  }
}

// d gelu / dx = s + 2 x u'(x) s (1 - s) with s = sigmoid(2u) = 1 / (1 + E), E = exp(-2u):
// s (1 - s) = E / (1 + E)^2 (no 1 - s cancellation), u' = c (1 + 3 * 0.044715 x^2).
void gelu_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const float* g = f32(in[1]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < n; b += kBlockElems) {
    const int64_t e = std::min(n, b + kBlockElems);
    float t[kBlockElems];
#pragma omp simd
    for (int64_t i = b; i < e; ++i) t[i - b] = -2.0f * kGeluC * (x[i] + 0.044715f * x[i] * x[i] * x[i]);
    exp_inplace(t, e - b);
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      const float xi = x[i], E = t[i - b], r = 1.0f / (1.0f + E);
      const float du = kGeluC * (1.0f + 3.0f * 0.044715f * xi * xi);
      // E * r * r is 0 when E overflows to inf (r = 0): the limit, not inf * 0
      const float s1s = E == INFINITY ? 0.0f : E * r * r;
      o[i] = g[i] * (r + 2.0f * xi * du * s1s);
    }
  }
}

void silu(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < n; b += kBlockElems) {
    const int64_t e = std::min(n, b + kBlockElems);
    float t[kBlockElems];
    for (int64_t i = b; i < e; ++i) t[i - b] = -x[i];
    exp_inplace(t, e - b);
#pragma omp simd
    for (int64_t i = b; i < e; ++i) o[i] = x[i] / (1.0f + t[i - b]);
  }
}

void silu_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const float* g = f32(in[1]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < n; b += kBlockElems) {
    const int64_t e = std::min(n, b + kBlockElems);
    float t[kBlockElems];
    for (int64_t i = b; i < e; ++i) t[i - b] = -x[i];
    exp_inplace(t, e - b);
#pragma omp simd
    for (int64_t i = b; i < e; ++i) {
      float s = 1.0f / (1.0f + t[i - b]);
      o[i] = g[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
  }
}

}  // namespace tandem::cpu

namespace tandem::cpu {

void sigmoid(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (int64_t b = 0; b < n; b += kBlockElems) {
    const int64_t e = std::min(n, b + kBlockElems);
    float t[kBlockElems];
    for (int64_t i = b; i < e; ++i) t[i - b] = -x[i];
    exp_inplace(t, e - b);
#pragma omp simd
    for (int64_t i = b; i < e; ++i) o[i] = 1.0f / (1.0f + t[i - b]);
  }
}

void sigmoid_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* y = f32(in[0]);
  const float* g = f32(in[1]);
  float* o = f32(out);
  const int64_t n = out.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] * y[i] * (1.0f - y[i]);
}

void swiglu(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t I = out.shape.back(), rows = out.numel() / I;
#pragma omp parallel
  {
    std::vector<float> t(static_cast<size_t>(I));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* gate = x + r * 2 * I;
      const float* up = gate + I;
      for (int64_t c = 0; c < I; ++c) t[static_cast<size_t>(c)] = -gate[c];
      exp_inplace(t.data(), I);
#pragma omp simd
      for (int64_t c = 0; c < I; ++c) o[r * I + c] = gate[c] / (1.0f + t[static_cast<size_t>(c)]) * up[c];
    }
  }
}

void swiglu_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* x = f32(in[0]);
  const float* dy = f32(in[1]);
  float* o = f32(out);
  const int64_t I = in[1].shape.back(), rows = in[1].numel() / I;
#pragma omp parallel
  {
    std::vector<float> t(static_cast<size_t>(I));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* gate = x + r * 2 * I;
      const float* up = gate + I;
      for (int64_t c = 0; c < I; ++c) t[static_cast<size_t>(c)] = -gate[c];
      exp_inplace(t.data(), I);
#pragma omp simd
      for (int64_t c = 0; c < I; ++c) {
        const float s = 1.0f / (1.0f + t[static_cast<size_t>(c)]), g = dy[r * I + c];
        o[r * 2 * I + c] = g * up[c] * s * (1.0f + gate[c] * (1.0f - s));
        o[r * 2 * I + I + c] = g * gate[c] * s;
      }
    }
  }
}

}  // namespace tandem::cpu
