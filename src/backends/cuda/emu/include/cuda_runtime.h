// The slice of the CUDA runtime that tandem's CUDA backend uses, for running its kernels on the
// CPU (backends/cuda/emu, README.md there): the execution-space keywords compile away, __shared__
// variables become statics (blocks run one at a time), threadIdx & co. read the current fiber's
// indices, barriers and shuffles go through the fiber scheduler (emu.cpp), atomics are plain
// read-modify-writes (one OS thread), launches check their configuration as the driver does
// (block size, grid limits, dynamic shared memory above 48 KiB needing cudaFuncSetAttribute) and
// set cudaGetLastError. The "device" is sm_90 with 227 KiB of shared memory per block
// (EMU_SMEM=<bytes> lowers it, to exercise smaller tiles); EMU_NO_DEVICE=1 makes
// cudaGetDeviceCount fail as on a machine without a driver.
#pragma once
#include <math.h>
#include <stdint.h>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>
#include <atomic>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 { unsigned x = 0, y = 0, z = 0; };
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float2 { float x, y; };
inline float2 make_float2(float a, float b) { return {a, b}; }

enum cudaError_t {
  cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2, cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35, cudaErrorInvalidDeviceFunction = 98, cudaErrorLaunchFailure = 719,
  cudaErrorIllegalAddress = 700, cudaErrorMisalignedAddress = 716, cudaErrorIllegalInstruction = 715, cudaErrorInvalidPc = 718,
  cudaErrorHardwareStackError = 714, cudaErrorAssert = 710, cudaErrorLaunchTimeout = 702,
  cudaErrorCudartUnloading = 4, cudaErrorContextIsDestroyed = 709,
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01
struct CUstream_st { int dummy; };
typedef CUstream_st* cudaStream_t;
struct cudaDeviceProp {
  char name[256];
  int major, minor, multiProcessorCount;
  size_t totalGlobalMem, sharedMemPerBlockOptin;
};
struct cudaFuncAttributes { int dummy; };

namespace emu {
struct FiberState;
extern FiberState* g_cur;
extern uint3 g_block_idx;
extern dim3 g_block_dim, g_grid_dim;
const uint3& cur_tid();
void syncthreads();
void syncwarp();
void exchange(const void* mine, void* out, int partner, size_t bytes);
void* dyn_smem();
cudaError_t& last_error();
std::map<const void*, int>& func_smem();
size_t smem_optin();
void run_grid(dim3 grid, dim3 block, size_t smem, const std::function<void()>& body, const char* name);

template <class... P>
struct Launch {
  void (*k)(P...);
  dim3 grid, block;
  size_t smem;
  const char* name;
  template <class... A>
  void operator()(A&&... a) {
    if (block.x * block.y * block.z == 0 || block.x * block.y * block.z > 1024 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0 || grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) {
      std::fprintf(stderr, "emu: invalid launch configuration for %s: grid (%u,%u,%u) block (%u,%u,%u)\n", name, grid.x,
                   grid.y, grid.z, block.x, block.y, block.z);
      last_error() = cudaErrorInvalidConfiguration;
      return;
    }
    if (smem > 48 * 1024) {
      auto it = func_smem().find(reinterpret_cast<const void*>(k));
      if (it == func_smem().end() || static_cast<size_t>(it->second) < smem || smem > smem_optin()) {
        std::fprintf(stderr, "emu: %s launched with %zu bytes of dynamic shared memory without the attribute\n", name, smem);
        last_error() = cudaErrorInvalidValue;
        return;
      }
    }
    std::tuple<P...> args{static_cast<P>(a)...};
    run_grid(grid, block, smem, [&] { std::apply(k, args); }, name);
  }
};
template <class... P>
Launch<P...> launch(void (*k)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, const char* name) {
  return Launch<P...>{k, grid, block, smem, name};
}
}  // namespace emu

#define threadIdx (emu::cur_tid())
#define blockIdx (emu::g_block_idx)
#define blockDim (emu::g_block_dim)
#define gridDim (emu::g_grid_dim)

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::syncwarp(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int o) {
  T out;
  emu::exchange(&v, &out, o, sizeof(T));
  return out;
}
inline int atomicAdd(int* p, int v) { int old = *p; *p += v; return old; }
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  unsigned long long old = *p; if (v < old) *p = v; return old;
}
template <class T> inline T min(T a, T b) { return a < b ? a : b; }
template <class T> inline T max(T a, T b) { return a < b ? b : a; }

cudaError_t cudaGetDeviceCount(int*);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp*, int);
cudaError_t cudaSetDevice(int);
cudaError_t cudaGetDevice(int*);
cudaError_t cudaFree(void*);
cudaError_t cudaMalloc(void**, size_t);
cudaError_t cudaMemGetInfo(size_t*, size_t*);
cudaError_t cudaMemcpyAsync(void*, const void*, size_t, cudaMemcpyKind, cudaStream_t = nullptr);
cudaError_t cudaMemcpy(void*, const void*, size_t, cudaMemcpyKind);
cudaError_t cudaMemsetAsync(void*, int, size_t, cudaStream_t = nullptr);
cudaError_t cudaMemset(void*, int, size_t);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t*, unsigned);
cudaError_t cudaStreamDestroy(cudaStream_t);
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t);
const char* cudaGetErrorName(cudaError_t);
template <class... P>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes*, void (*)(P...)) { return cudaSuccess; }
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*k)(P...), cudaFuncAttribute, int v) {
  if (static_cast<size_t>(v) > emu::smem_optin()) return cudaErrorInvalidValue;
  emu::func_smem()[reinterpret_cast<const void*>(k)] = v;
  return cudaSuccess;
}
