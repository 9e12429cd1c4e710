// Column sums in a fixed order (sum_to, the norm weight gradients): out[c] = sum over rows r of
// f(r, c). Rows are cut into chunks of kColChunk; each chunk is summed in row order, then the
// chunk sums in chunk order. The chunking depends on the shape only, never on the device.
#pragma once
#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

constexpr int64_t kColChunk = 256;

template <typename F>
__global__ void colsum_partial_k(F f, int64_t R, int64_t C, int64_t chunks, float* part) {
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    const int64_t r0 = chunk * kColChunk, r1 = min(R, r0 + kColChunk);
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < C;
         c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      float acc = 0.0f;
      for (int64_t r = r0; r < r1; ++r) acc += f(r, c);
      part[chunk * C + c] = acc;
    }
  }
}

template <typename T>
__global__ void colsum_final_k(const T* part, int64_t chunks, int64_t C, T* out) {
  TANDEM_GRID_LOOP(c, C) {
    T acc = 0;
    for (int64_t k = 0; k < chunks; ++k) acc += part[k * C + c];
    out[c] = acc;
  }
}

template <typename F>
void colsum(CudaBackend& be, const Node& node, const F& f, int64_t R, int64_t C, float* out) {
  if (C == 0) return;
  const int64_t chunks = std::max<int64_t>(1, (R + kColChunk - 1) / kColChunk);
  float* part = chunks == 1 ? out : static_cast<float*>(be.scratch(kSlotPartial, static_cast<size_t>(chunks * C) * 4));
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((C + kThreads - 1) / kThreads, 1024)),
                  static_cast<unsigned>(std::min<int64_t>(chunks, 65535)));
  colsum_partial_k<F><<<grid, kThreads, 0, be.stream()>>>(f, R, C, chunks, part);
  be.launched("colsum_partial", &node);
  if (chunks == 1) return;
  colsum_final_k<float><<<grid_for(C), kThreads, 0, be.stream()>>>(part, chunks, C, out);
  be.launched("colsum_final", &node);
}

}  // namespace tandem::cuda
