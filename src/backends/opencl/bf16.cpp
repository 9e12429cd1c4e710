// bf16 on the OpenCL backend, as on the CPU (backends/cpu/bf16.cpp): bf16 is 16-bit storage
// (ushort, no extension needed) and arithmetic stays f32. The cast kernel converts with the rule
// of core/dtype.h in integer operations only (f32 -> bf16: round to nearest, ties to even; a NaN
// stays NaN and is made quiet; nothing is flushed: the f32 bits are read as uint, so no float
// load or store can touch a subnormal; bf16 -> f32: a shift). Every other op runs its f32 kernel
// on f32 copies of its bf16 inputs (staging buffers of the backend, reused across ops) and rounds
// its f32 result once into the bf16 output, so a bf16 op is "the f32 op on the bf16 values,
// rounded once". GEMMs stay CLBlast SGEMM on the widened operands: a product of two bf16 values is
// exact in f32 and the accumulation is f32 (CLBlast's half paths are fp16, not bf16).
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
)CLC";

namespace {

// Staging slots (OpenClBackend::staging): one per widened input, one for the f32 result.
constexpr int kSlotOutput = -1;

void convert(OpenClBackend& be, const Tensor& src, const Tensor& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  be.launch(src.dtype == DType::f32 ? "f32_to_bf16" : "bf16_to_f32", static_cast<size_t>(n), {src, dst, n});
}

}  // namespace

void cast(OpenClBackend& be, const Node&, std::span<const Tensor> in, const Tensor& out) {
  if (in[0].dtype == out.dtype) be.copy(out.storage->handle, out.offset, in[0].storage->handle, in[0].offset, out.nbytes());
  else convert(be, in[0], out);
}

void run_widened(OpenClBackend& be, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  std::vector<Tensor> ins(in.begin(), in.end());
  for (size_t i = 0; i < ins.size(); ++i)
    if (ins[i].dtype == DType::bf16) {
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
