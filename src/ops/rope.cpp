#include "ops/rope.h"

#include <algorithm>
#include <cmath>

#include "ops/op.h"

namespace tandem {

std::vector<double> rope_inv_freq(const RopeAttrs& a) {
  const int64_t half = a.rot_dim / 2;
  const double dim = static_cast<double>(a.rot_dim);
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t p = 0; p < half; ++p) inv[static_cast<size_t>(p)] = 1.0 / std::pow(a.theta, 2.0 * static_cast<double>(p) / dim);
  if (a.yarn_factor <= 1.0) return inv;
  // YaRN (transformers' _compute_yarn_parameters): interpolate low frequencies by 1/factor,
  // keep high ones, blend linearly between the correction dims of beta_fast and beta_slow rotations.
  const double two_pi = 2.0 * M_PI;
  auto correction_dim = [&](double rotations) {
    return dim * std::log(static_cast<double>(a.yarn_original_max_position) / (rotations * two_pi)) / (2.0 * std::log(a.theta));
  };
  double low = std::max(std::floor(correction_dim(a.yarn_beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(a.yarn_beta_slow)), dim - 1);
  if (low == high) high += 0.001;
  for (int64_t p = 0; p < half; ++p) {
    const double ramp = std::clamp((static_cast<double>(p) - low) / (high - low), 0.0, 1.0);
    const double extrapolation = 1.0 - ramp;
    const double e = inv[static_cast<size_t>(p)], i = e / a.yarn_factor;
    inv[static_cast<size_t>(p)] = i * (1.0 - extrapolation) + e * extrapolation;
  }
  return inv;
}

namespace {

Shape rope_shape(const Node& n, std::span<const Node* const> in) {
  const auto& a = n.attr<RopeAttrs>();
  check(in[0]->shape.size() == 4, "rope at node '", n.name, "': x must be [B, T, H, D], got ", shape_str(in[0]->shape));
  const int64_t B = in[0]->shape[0], T = in[0]->shape[1], D = in[0]->shape[3];
  check(a.rot_dim > 0 && a.rot_dim % 2 == 0 && a.rot_offset >= 0 && a.rot_offset + a.rot_dim <= D, "rope at node '",
        n.name, "': rotated window [", a.rot_offset, ", ", a.rot_offset + a.rot_dim, ") does not fit head dim ", D);
  check(a.yarn_factor <= 1.0 || a.yarn_original_max_position > 0, "rope at node '", n.name,
        "': YaRN needs original_max_position_embeddings");
  expect_dtype(n, *in[1], DType::i32);
  check(in[1]->shape == Shape{T} || in[1]->shape == Shape{B, T}, "rope at node '", n.name, "': positions ",
        shape_str(in[1]->shape), " must be [T] or [B, T]");
  return in[0]->shape;
}

void rope_ref(const Node& n, std::span<const RefTensor* const> in, RefTensor& out) {
  const auto& a = n.attr<RopeAttrs>();
  const auto inv = rope_inv_freq(a);
  const int64_t B = in[0]->shape[0], T = in[0]->shape[1], H = in[0]->shape[2], D = in[0]->shape[3];
  const int64_t half = a.rot_dim / 2;
  const bool per_batch = in[1]->shape.size() == 2;
  out.data = in[0]->data;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const double pos = in[1]->data[static_cast<size_t>(per_batch ? b * T + t : t)];
      for (int64_t h = 0; h < H; ++h) {
        const size_t base = static_cast<size_t>(((b * T + t) * H + h) * D + a.rot_offset);
        for (int64_t p = 0; p < half; ++p) {
          const double ang = pos * inv[static_cast<size_t>(p)];
          const double c = std::cos(ang) * a.attention_factor, s = (a.inverse ? -1.0 : 1.0) * std::sin(ang) * a.attention_factor;
          const size_t i0 = base + static_cast<size_t>(a.interleaved ? 2 * p : p);
          const size_t i1 = base + static_cast<size_t>(a.interleaved ? 2 * p + 1 : p + half);
          const double x0 = in[0]->data[i0], x1 = in[0]->data[i1];
          out.data[i0] = x0 * c - x1 * s;
          out.data[i1] = x1 * c + x0 * s;
        }
      }
    }
}

void rope_bwd(GradBuilder& b) {
  RopeAttrs a = b.node().attr<RopeAttrs>();
  a.inverse = !a.inverse;
  b.to(0, b.add(OpKind::rope, {b.grad_out(), b.in(1)}, a, "x"));
}

}  // namespace

extern const OpDef rope_def{"rope", 2, rope_shape, rope_ref, rope_bwd};

}  // namespace tandem
