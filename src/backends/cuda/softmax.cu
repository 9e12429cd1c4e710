// softmax over the last dim and its backward (ops/softmax.cpp): one block per row, reductions in
// a fixed tree order (device.cuh).
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

__global__ void softmax_k(const float* x, float* y, int64_t R, int64_t C) {
  __shared__ float red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    float mx = -INFINITY;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) mx = fmaxf(mx, xr[c]);
    mx = block_max(mx, red);
    float s = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += expf(xr[c] - mx);
    const float inv = 1.0f / block_sum(s, red);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) yr[c] = expf(xr[c] - mx) * inv;
  }
}

__global__ void softmax_grad_k(const float* y, const float* g, float* o, int64_t R, int64_t C) {
  __shared__ float red[33];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* yr = y + r * C;
    const float* gr = g + r * C;
    float dot = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += yr[c] * gr[c];
    dot = block_sum(dot, red);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[r * C + c] = yr[c] * (gr[c] - dot);
  }
}

unsigned row_blocks(int64_t R) { return static_cast<unsigned>(std::clamp<int64_t>(R, 1, int64_t{1} << 20)); }

}  // namespace

void softmax(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t C = in[0].shape.back(), R = C ? in[0].numel() / C : 0;
  if (R == 0) return;
  softmax_k<<<row_blocks(R), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(out), R, C);
  be.launched("softmax", &node);
}
void softmax_grad(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t C = in[0].shape.back(), R = C ? in[0].numel() / C : 0;
  if (R == 0) return;
  softmax_grad_k<<<row_blocks(R), kThreads, 0, be.stream()>>>(ptr(in[0]), ptr(in[1]), ptr(out), R, C);
  be.launched("softmax_grad", &node);
}

}  // namespace tandem::cuda
