// bf16 on the OpenCL backend, as on the CPU (backends/cpu/bf16.cpp): bf16 is 16-bit storage
// (ushort, no extension needed) and arithmetic stays f32. The cast kernel converts with the rule
// of core/dtype.h in integer operations only (f32 -> bf16: round to nearest, ties to even; a NaN
// stays NaN and is made quiet; nothing is flushed: the f32 bits are read as uint, so no float
// load or store can touch a subnormal; bf16 -> f32: a shift). Every other op runs its f32 kernel
// on f32 copies of its bf16 inputs (staging buffers of the backend, reused across ops) and rounds
// its f32 result once into the bf16 output, so a bf16 op is "the f32 op on the bf16 values,
// rounded once". GEMMs stay CLBlast SGEMM on the widened operands: a product of two bf16 values is
// exact in f32 and the accumulation is f32 (CLBlast's half paths are fp16, not bf16).
// q8_0 weights (GGUF's blocks of an fp16 scale and 32 int8, core/dtype.h) are staged the same way:
// dequantized into an f32 copy (exact: an fp16 times an int8) that the f32 kernel reads. That proves
// a q8_0 model right on this backend; it does not make it faster (the CPU has the fast q8_0 path).
#include <algorithm>
#include <vector>

#include "backends/opencl/kernels.h"
#include "core/error.h"

namespace tandem::opencl {

const char* const bf16_src = R"CLC(
__kernel void f32_to_bf16(__global const uint* x, long xo, __global ushort* o, long oo, long n) {
  long i = get_global_id(0);
  if (i >= n) return;
  uint u = x[xo + i];
  if ((u & 0x7fffffffu) > 0x7f800000u) o[oo + i] = (ushort)((u >> 16) | 0x40u);  // NaN: quiet, payload kept
  else o[oo + i] = (ushort)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);            // RNE (inf and overflow included)
}
__kernel void bf16_to_f32(__global const ushort* x, long xo, __global uint* o, long oo, long n) {
  long i = get_global_id(0);
  if (i < n) o[oo + i] = (uint)x[xo + i] << 16;
}
// q: q8_0 blocks at byte offset qo (even: blocks are 34 bytes, so every scale is 2-byte aligned).
__kernel void q8_0_to_f32(__global const uchar* q, long qo, __global float* o, long oo, long n) {
  long i = get_global_id(0);
  if (i >= n) return;
  __global const uchar* block = q + qo + (i / 32) * 34;
  o[oo + i] = vload_half(0, (__global const half*)block) * (float)(char)block[2 + i % 32];
}
)CLC";

namespace {

// Staging slots (OpenClBackend::staging): one per widened input, one for the f32 result.
constexpr int kSlotOutput = -1;

// src -> dst: f32 -> bf16, bf16 -> f32 or q8_0 -> f32.
void convert(OpenClBackend& be, const Tensor& src, const Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const char* k = src.dtype == DType::q8_0 ? "q8_0_to_f32" : src.dtype == DType::f32 ? "f32_to_bf16" : "bf16_to_f32";
  be.launch(k, static_cast<size_t>(n), {src, dst, n});
}

}  // namespace

void cast(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  if (in[0].dtype == out.dtype) return be.copy(out.storage->handle, out.offset, in[0].storage->handle, in[0].offset, out.nbytes());
  if (in[0].dtype != DType::q8_0 || out.dtype == DType::f32) return convert(be, in[0], out);
  const Tensor w = be.staging(0, in[0].shape, DType::f32);  // q8_0 -> bf16: dequantize, then round
  convert(be, in[0], w);
  convert(be, w, out);
}

void run_widened(OpenClBackend& be, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  std::vector<Tensor> ins(in.begin(), in.end());
  for (size_t i = 0; i < ins.size(); ++i)
    if (ins[i].dtype == DType::bf16 || ins[i].dtype == DType::q8_0) {
      Tensor w = be.staging(static_cast<int>(i), ins[i].shape, DType::f32);
      convert(be, ins[i], w);
      ins[i] = std::move(w);
    }
  Node n32 = node;
  if (n32.dtype == DType::bf16) n32.dtype = DType::f32;
  if (out.dtype != DType::bf16) return k(be, n32, ins, out);
  const Tensor o = be.staging(kSlotOutput, out.shape, DType::f32);
  k(be, n32, ins, o);
  convert(be, o, out);
}

}  // namespace tandem::opencl
