// bf16 on the CUDA backend, as on the CPU and OpenCL (backends/{cpu,opencl}/bf16.cpp): bf16 is
// 16-bit storage and arithmetic stays f32. The cast kernel converts with the rule of core/dtype.h
// in integer operations only (f32 -> bf16: round to nearest, ties to even; a NaN stays NaN and is
// made quiet; nothing is flushed: the f32 bits are read as uint32, so no float load or store can
// touch a subnormal; bf16 -> f32: a shift). Every other op runs its f32 kernel on f32 copies of
// its bf16 inputs (the backend's staging buffers, reused across ops) and rounds its f32 result
// once into the bf16 output, so a bf16 op is "the f32 op on the bf16 values, rounded once". The
// matmul is the exception: cuBLAS reads the bf16 operands itself (matmul.cpp: cublasGemmEx with
// CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F) into f32, rounded once here (store_bf16).
// q8_0 weights (GGUF's blocks of an fp16 scale and 32 int8, core/dtype.h) are staged the same way:
// dequantized into an f32 copy (exact: an fp16 times an int8) that the f32 kernel reads. That
// proves a q8_0 model right on this backend; it does not make it faster.
#include <vector>

#include "backends/cuda/device.cuh"
#include "backends/cuda/kernels.h"

namespace tandem::cuda {

namespace {

__global__ void f32_to_bf16_k(const uint32_t* x, uint16_t* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) {
    const uint32_t u = x[i];
    o[i] = (u & 0x7fffffffu) > 0x7f800000u ? static_cast<uint16_t>((u >> 16) | 0x40u)  // NaN: quiet, payload kept
                                           : static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // RNE
  }
}
__global__ void bf16_to_f32_k(const uint16_t* x, uint32_t* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) o[i] = static_cast<uint32_t>(x[i]) << 16;
}

// fp16 bits -> f32, exact, in integer operations (zero and subnormals: m 2^-24; inf and NaN kept).
__device__ __forceinline__ float half_to_f32(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return __uint_as_float(sign | (e == 31 ? 0x7f800000u | (m << 13) : ((e + 112u) << 23) | (m << 13)));
}
// q: q8_0 blocks of 34 bytes (scale little-endian first); o[i] = scale * int8.
__global__ void q8_0_to_f32_k(const uint8_t* q, float* o, int64_t n) {
  TANDEM_GRID_LOOP(i, n) {
    const uint8_t* b = q + (i / 32) * 34;
    o[i] = half_to_f32(static_cast<uint32_t>(b[0]) | (static_cast<uint32_t>(b[1]) << 8)) *
           static_cast<float>(static_cast<int8_t>(b[2 + i % 32]));
  }
}

// Staging slots (CudaBackend::staging): one per widened input, one for the f32 result.
constexpr int kSlotOutput = -1;

void convert(CudaBackend& be, const Node& node, const Tensor& src, const Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  if (src.dtype == DType::q8_0) {
    q8_0_to_f32_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr<const uint8_t>(src), ptr<float>(dst), n);
    be.launched("q8_0_to_f32", &node);
  } else if (src.dtype == DType::f32) {
    f32_to_bf16_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr<const uint32_t>(src), ptr<uint16_t>(dst), n);
    be.launched("f32_to_bf16", &node);
  } else {
    bf16_to_f32_k<<<grid_for(n), kThreads, 0, be.stream()>>>(ptr<const uint16_t>(src), ptr<uint32_t>(dst), n);
    be.launched("bf16_to_f32", &node);
  }
}

}  // namespace

void cast(CudaBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  if (in[0].dtype == out.dtype) return be.copy(out.storage->handle, out.offset, in[0].storage->handle, in[0].offset, out.nbytes());
  if (in[0].dtype != DType::q8_0 || out.dtype == DType::f32) return convert(be, node, in[0], out);
  const Tensor w = be.staging(0, in[0].shape, DType::f32);  // q8_0 -> bf16: dequantize, then round
  convert(be, node, in[0], w);
  convert(be, node, w, out);
}

void store_bf16(CudaBackend& be, const Node& node, const Tensor& f32_src, const Tensor& bf16_dst) {
  convert(be, node, f32_src, bf16_dst);
}

void run_widened(CudaBackend& be, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  std::vector<Tensor> ins(in.begin(), in.end());
  for (size_t i = 0; i < ins.size(); ++i)
    if (ins[i].dtype == DType::bf16 || ins[i].dtype == DType::q8_0) {
      Tensor w = be.staging(static_cast<int>(i), ins[i].shape, DType::f32);
      convert(be, node, ins[i], w);
      ins[i] = std::move(w);
    }
  Node n32 = node;
  if (n32.dtype == DType::bf16) n32.dtype = DType::f32;
  if (out.dtype != DType::bf16) return k(be, n32, ins, out);
  const Tensor o = be.staging(kSlotOutput, out.shape, DType::f32);
  k(be, n32, ins, o);
  convert(be, node, o, out);
}

}  // namespace tandem::cuda
