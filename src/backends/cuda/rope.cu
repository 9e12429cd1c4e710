// Rotary position embedding (ops/rope.h), as backends/cpu/rope.cpp computes it: inv_freq from
// rope_inv_freq (host, double) rounded to f32, angle = float(position) * inv_freq[p] in f32, then
// cos and sin times attention_factor. inv_freq travels in the kernel's parameters (rot_dim <= 256,
// CudaBackend::supports). One thread per output element; dims outside the window are copied.
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"
#include "ops/rope.h"

namespace tandem::cuda {

namespace {

constexpr int kMaxHalf = 128;

struct RopeArgs {
  float inv[kMaxHalf];
  int64_t T, H, D, rot_offset, half;
  bool interleaved, per_batch;
  float af, sign;
};

__global__ void rope_k(const float* x, const int32_t* pos, float* o, int64_t n, RopeArgs a) {
  TANDEM_GRID_LOOP(g, n) {
    const int64_t d = g % a.D, bt = g / (a.H * a.D);  // bt = b * T + t
    const int64_t w = d - a.rot_offset;
    if (w < 0 || w >= 2 * a.half) {
      o[g] = x[g];
      continue;
    }
    const bool first = a.interleaved ? (w % 2 == 0) : (w < a.half);
    const int64_t k = a.interleaved ? w / 2 : (first ? w : w - a.half);
    const int64_t partner = a.interleaved ? (first ? g + 1 : g - 1) : (first ? g + a.half : g - a.half);
    const float p = static_cast<float>(pos[a.per_batch ? bt : bt % a.T]);
    const float ang = p * a.inv[k];
    const float c = cosf(ang) * a.af, s = a.sign * sinf(ang) * a.af;
    const float x0 = first ? x[g] : x[partner], x1 = first ? x[partner] : x[g];
    o[g] = first ? x0 * c - x1 * s : x1 * c + x0 * s;
  }
}

}  // namespace

void rope(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& at = node.attr<RopeAttrs>();
  RopeArgs a{};
  a.half = at.rot_dim / 2;
  check(a.half <= kMaxHalf, "cuda backend: rope at node '", node.name, "': rot_dim ", at.rot_dim, " > ", 2 * kMaxHalf);
  const std::vector<double> inv = rope_inv_freq(at);
  for (int64_t k = 0; k < a.half; ++k) a.inv[k] = static_cast<float>(inv[static_cast<size_t>(k)]);
  a.T = in[0].shape[1];
  a.H = in[0].shape[2];
  a.D = in[0].shape[3];
  a.rot_offset = at.rot_offset;
  a.interleaved = at.interleaved;
  a.per_batch = in[1].shape.size() == 2;
  a.af = static_cast<float>(at.attention_factor);
  a.sign = at.inverse ? -1.0f : 1.0f;
  const int64_t n = in[0].numel();
  if (n == 0) return;
  rope_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr<int32_t>(in[1]), ptr(out), n, a);
  be.launched("rope", &node);
}

}  // namespace tandem::cuda
