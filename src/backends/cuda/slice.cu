// Windows of the last dim (ops/slice.cpp): slice_last, pad_last (its adjoint: zeros outside the
// window), concat_last. One thread per output element; values are only moved.
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

__global__ void slice_last_k(const float* x, float* o, int64_t rows, int64_t start, int64_t len, int64_t full) {
  TANDEM_GRID_LOOP(g, rows * len) o[g] = x[(g / len) * full + start + g % len];
}
__global__ void pad_last_k(const float* x, float* o, int64_t rows, int64_t start, int64_t len, int64_t full) {
  TANDEM_GRID_LOOP(g, rows * full) {
    const int64_t r = g / full, c = g % full - start;
    o[g] = c >= 0 && c < len ? x[r * len + c] : 0.0f;
  }
}
__global__ void concat_last_k(const float* a, const float* b, float* o, int64_t rows, int64_t la, int64_t lb) {
  TANDEM_GRID_LOOP(g, rows * (la + lb)) {
    const int64_t r = g / (la + lb), c = g % (la + lb);
    o[g] = c < la ? a[r * la + c] : b[r * lb + c - la];
  }
}

}  // namespace

void slice_last(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<SliceAttrs>();
  const int64_t rows = in[0].numel() / a.full;
  if (rows * a.len == 0) return;
  slice_last_k<<<grid_for(rows * a.len), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), rows, a.start, a.len, a.full);
  be.launched("slice_last", &node);
}
void pad_last(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const auto& a = node.attr<SliceAttrs>();
  const int64_t rows = in[0].numel() / a.len;
  if (rows * a.full == 0) return;
  pad_last_k<<<grid_for(rows * a.full), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), rows, a.start, a.len, a.full);
  be.launched("pad_last", &node);
}
void concat_last(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t la = in[0].shape.back(), lb = in[1].shape.back();
  const int64_t rows = la + lb ? out.numel() / (la + lb) : 0;
  if (rows * (la + lb) == 0) return;
  concat_last_k<<<grid_for(rows * (la + lb)), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), rows, la, lb);
  be.launched("concat_last", &node);
}

}  // namespace tandem::cuda
