#include <algorithm>
#include <cstring>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/error.h"

namespace tandem::cpu {

float softmax_row(const float* x, float* y, int64_t C);  // softmax.cpp

void mla_qkv(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<MlaAttrs>();
  const int64_t H = a.n_head, dn = a.d_nope, dr = a.d_rope, dv = a.d_v, dqk = dn + dr;
  const int64_t rows = in[0].shape[0] * in[0].shape[1], wq = H * dqk, wkv = H * (dn + dv), wo = 2 * wq + H * dv;
  const float* q = f32(in[0]);
  const float* kv = f32(in[1]);
  const float* kr = f32(in[2]);
  float* o = f32(out);
#pragma omp parallel for schedule(static) if (rows * wo > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    float* orow = o + r * wo;
    std::memcpy(orow, q + r * wq, static_cast<size_t>(wq) * 4);
    for (int64_t h = 0; h < H; ++h) {
      const float* kvh = kv + r * wkv + h * (dn + dv);
      std::memcpy(orow + wq + h * dqk, kvh, static_cast<size_t>(dn) * 4);
      std::memcpy(orow + wq + h * dqk + dn, kr + r * dr, static_cast<size_t>(dr) * 4);
      std::memcpy(orow + 2 * wq + h * dv, kvh + dn, static_cast<size_t>(dv) * 4);
    }
  }
}

void mla_qkv_grad(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<MlaAttrs>();
  const int64_t H = a.n_head, dn = a.d_nope, dr = a.d_rope, dv = a.d_v, dqk = dn + dr;
  const int64_t rows = in[0].shape[0] * in[0].shape[1], wq = H * dqk, wkv = H * (dn + dv), wo = 2 * wq + H * dv;
  const float* g = f32(in[0]);
  float* o = f32(out);
#pragma omp parallel for schedule(static) if (rows * wo > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = g + r * wo;
    if (a.part == 0) {
      std::memcpy(o + r * wq, gr, static_cast<size_t>(wq) * 4);
    } else if (a.part == 1) {
      for (int64_t h = 0; h < H; ++h) {
        std::memcpy(o + r * wkv + h * (dn + dv), gr + wq + h * dqk, static_cast<size_t>(dn) * 4);
        std::memcpy(o + r * wkv + h * (dn + dv) + dn, gr + 2 * wq + h * dv, static_cast<size_t>(dv) * 4);
      }
    } else {
      float* orow = o + r * dr;
      std::fill(orow, orow + dr, 0.0f);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t c = 0; c < dr; ++c) orow[c] += gr[wq + h * dqk + dn + c];
    }
  }
}

// Absorbed MLA decoding. Per head h: q_lat = W_UK_h^T q_nope (the key up-projection folded into
// the query), score_j = scale (q_lat . c_j + q_rope . r_j) over cached latents c_j and rope keys
// r_j, o_lat = sum_j p_j c_j, out_h = W_UV_h o_lat. Per-head keys and values are never formed.
void attention_latent(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<MlaAttrs>();
  const int64_t B = in[0].shape[0], Tn = in[0].shape[1], H = a.n_head, dn = a.d_nope, dr = a.d_rope, dv = a.d_v;
  const int64_t We = in[1].shape[2], L = We - dr, Tmax = in[2].shape[1], wq = H * (dn + dr);
  const float* q = f32(in[0]);
  const float* entries = f32(in[1]);
  float* cache = f32(in[2]);  // state: written in place
  const float* Wb = f32(in[3]);
  const int32_t* lens = i32(in[4]);
  float* o = f32(out);
  int64_t longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    check(lens[b] >= 0 && lens[b] + Tn <= Tmax, "attention_latent at node '", node.name, "': sequence ", b, " needs ",
          lens[b] + Tn, " cache positions, the cache holds ", Tmax);
    longest = std::max<int64_t>(longest, lens[b]);
    std::memcpy(cache + (b * Tmax + lens[b]) * We, entries + b * Tn * We, static_cast<size_t>(Tn * We) * 4);
  }
#pragma omp parallel
  {
    std::vector<float> qlat(static_cast<size_t>(L)), olat(static_cast<size_t>(L)), p(static_cast<size_t>(longest + Tn));
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const float* WUK = Wb + h * (dn + dv) * L;  // [dn, L]
        const float* WUV = WUK + dn * L;            // [dv, L]
        const float* cb = cache + b * Tmax * We;
        for (int64_t i = 0; i < Tn; ++i) {
          const float* qh = q + (b * Tn + i) * wq + h * (dn + dr);
          std::fill(qlat.begin(), qlat.end(), 0.0f);
          for (int64_t j = 0; j < dn; ++j)
#pragma omp simd
            for (int64_t l = 0; l < L; ++l) qlat[static_cast<size_t>(l)] += qh[j] * WUK[j * L + l];
          const int64_t n = lens[b] + i + 1;
          for (int64_t t = 0; t < n; ++t) {
            const float* row = cb + t * We;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t l = 0; l < L; ++l) s += qlat[static_cast<size_t>(l)] * row[l];
            for (int64_t c = 0; c < dr; ++c) s += qh[dn + c] * row[L + c];
            p[static_cast<size_t>(t)] = a.scale * s;
          }
          softmax_row(p.data(), p.data(), n);
          std::fill(olat.begin(), olat.end(), 0.0f);
          for (int64_t t = 0; t < n; ++t) {
            const float* row = cb + t * We;
            const float pt = p[static_cast<size_t>(t)];
#pragma omp simd
            for (int64_t l = 0; l < L; ++l) olat[static_cast<size_t>(l)] += pt * row[l];
          }
          float* orow = o + (b * Tn + i) * H * dv + h * dv;
          for (int64_t c = 0; c < dv; ++c) {
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t l = 0; l < L; ++l) s += WUV[c * L + l] * olat[static_cast<size_t>(l)];
            orow[c] = s;
          }
        }
      }
  }
}

}  // namespace tandem::cpu
