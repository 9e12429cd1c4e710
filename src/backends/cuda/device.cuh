// Device-side helpers shared by the .cu files: grid-stride loops, warp and block reductions in a
// fixed order (so a result never depends on scheduling), the status-word error report.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

__device__ __forceinline__ int64_t global_id() { return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t global_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// for (int64_t i = ...; i < n; i += stride): one index per thread, striding over the whole grid.
#define TANDEM_GRID_LOOP(i, n) for (int64_t i = global_id(); i < (n); i += global_stride())

// Butterfly (xor) reductions over a full warp: every lane ends with the same bits, and the
// association order is fixed, so results are reproducible.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions for blocks of a multiple of 32 threads (at most 1024); every thread must
// call them. Warps reduce, then warp 0 reduces the warp results; the value is returned to all.
// `red` is shared scratch of at least 33 elements.
template <typename T>
__device__ T block_sum(T v, T* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // `red` may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? red[lane] : T(0);
    w = warp_sum(w);
    if (lane == 0) red[32] = w;
  }
  __syncthreads();
  return red[32];
}
__device__ inline float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? red[lane] : -INFINITY;
    w = warp_max(w);
    if (lane == 0) red[32] = w;
  }
  __syncthreads();
  return red[32];
}

// Records a data error found on the device: the smallest (tag, value) wins, so the report names
// the first offending op enqueued (CudaBackend::error_tag).
__device__ __forceinline__ void report_error(unsigned long long* status, uint32_t tag, int64_t value) {
  const auto v = static_cast<uint32_t>(static_cast<int32_t>(value < INT32_MIN ? INT32_MIN : value > INT32_MAX ? INT32_MAX : value));
  atomicMin(status, (static_cast<unsigned long long>(tag) << 32) | v);
}

}  // namespace tandem::cuda
