#include <cstring>

#include "backends/cpu/kernels.h"

namespace tandem::cpu {

void slice_last(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<SliceAttrs>();
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t rows = in[0].numel() / a.full;
#pragma omp parallel for schedule(static) if (rows * a.len > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) std::memcpy(o + r * a.len, x + r * a.full + a.start, static_cast<size_t>(a.len) * 4);
}

void pad_last(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<SliceAttrs>();
  const float* x = f32(in[0]);
  float* o = f32(out);
  const int64_t rows = in[0].numel() / a.len;
#pragma omp parallel for schedule(static) if (rows * a.full > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = o + r * a.full;
    std::memset(row, 0, static_cast<size_t>(a.full) * 4);
    std::memcpy(row + a.start, x + r * a.len, static_cast<size_t>(a.len) * 4);
  }
}

void concat_last(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const float* a = f32(in[0]);
  const float* b = f32(in[1]);
  float* o = f32(out);
  const int64_t la = in[0].shape.back(), lb = in[1].shape.back(), rows = in[0].numel() / la;
#pragma omp parallel for schedule(static) if (rows * (la + lb) > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    std::memcpy(o + r * (la + lb), a + r * la, static_cast<size_t>(la) * 4);
    std::memcpy(o + r * (la + lb) + la, b + r * lb, static_cast<size_t>(lb) * 4);
  }
}

}  // namespace tandem::cpu
