#include <cmath>
#include <cstring>

#include "backends/cpu/kernels.h"
#include "ops/rope.h"

namespace tandem::cpu {

// Angles are formed as transformers does: float(position) * float(inv_freq) in f32, then cos/sin.
void rope(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<RopeAttrs>();
  const std::vector<double> inv64 = rope_inv_freq(a);
  std::vector<float> inv(inv64.begin(), inv64.end());
  const float* x = f32(in[0]);
  const int32_t* pos = i32(in[1]);
  float* o = f32(out);
  const int64_t B = in[0].shape[0], T = in[0].shape[1], H = in[0].shape[2], D = in[0].shape[3], half = a.rot_dim / 2;
  const bool per_batch = in[1].shape.size() == 2;
  const float af = static_cast<float>(a.attention_factor), sign = a.inverse ? -1.0f : 1.0f;
  if (o != x) std::memcpy(o, x, static_cast<size_t>(in[0].numel()) * 4);
  // cos/sin once per position row: positions [T] are shared by the whole batch.
  const int64_t P = per_batch ? B * T : T;
  std::vector<float> c(static_cast<size_t>(P * half)), s(static_cast<size_t>(P * half));
#pragma omp parallel for schedule(static) if (P * half > 4096)
  for (int64_t r = 0; r < P; ++r) {
    const float p = static_cast<float>(pos[r]);
    for (int64_t k = 0; k < half; ++k) {
      const float ang = p * inv[static_cast<size_t>(k)];
      c[static_cast<size_t>(r * half + k)] = std::cos(ang) * af;
      s[static_cast<size_t>(r * half + k)] = sign * std::sin(ang) * af;
    }
  }
#pragma omp parallel for schedule(static) collapse(2) if (B * T * H * half > kParallelMin)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const float* cr = c.data() + (per_batch ? b * T + t : t) * half;
      const float* sr = s.data() + (per_batch ? b * T + t : t) * half;
      for (int64_t h = 0; h < H; ++h) {
        const float* xr = x + ((b * T + t) * H + h) * D + a.rot_offset;
        float* orow = o + ((b * T + t) * H + h) * D + a.rot_offset;
        for (int64_t k = 0; k < half; ++k) {
          const int64_t i0 = a.interleaved ? 2 * k : k, i1 = a.interleaved ? 2 * k + 1 : k + half;
          const float x0 = xr[i0], x1 = xr[i1];
          orow[i0] = x0 * cr[k] - x1 * sr[k];
          orow[i1] = x1 * cr[k] + x0 * sr[k];
        }
      }
    }
}

}  // namespace tandem::cpu
