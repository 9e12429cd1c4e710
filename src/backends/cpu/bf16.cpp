// bf16 on the CPU backend: the cast kernel, and bf16 storage for every op with f32 arithmetic
// inside (the way PyTorch's CPU kernels treat bf16: widen, compute in f32, round once on the way
// out). Matmul has its own bf16 kernel (matmul.cpp, gemm_bf16.h); every other op runs its f32
// kernel on widened copies of its bf16 inputs and rounds its f32 result to the bf16 output, so a
// bf16 op is exactly "the f32 op on the bf16 values, rounded once" and its error against the
// float64 reference is one bf16 rounding of the output.
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <vector>

#include "backends/cpu/kernels.h"
#include "core/error.h"

namespace tandem::cpu {

namespace {
// Converts n values, split across the OpenMP threads in fixed chunks when large.
template <typename Src, typename Dst>
void convert(const Src* src, Dst* dst, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const bool par = n >= 4 * kChunk && !omp_in_parallel();
#pragma omp parallel for schedule(static) if (par)
  for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
    const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
    if constexpr (std::is_same_v<Src, float>) f32_to_bf16(src + i0, dst + i0, static_cast<size_t>(len));
    else bf16_to_f32(src + i0, dst + i0, static_cast<size_t>(len));
  }
}
}  // namespace

void to_bf16(const float* src, uint16_t* dst, int64_t n) { convert(src, dst, n); }
void to_f32(const uint16_t* src, float* dst, int64_t n) { convert(src, dst, n); }

void cast(const Node& node, std::span<const Tensor> in, const Tensor& out) {
  const int64_t n = out.numel();
  if (in[0].dtype == out.dtype) std::copy_n(static_cast<const char*>(in[0].storage->handle) + in[0].offset, out.nbytes(),
                                            static_cast<char*>(out.storage->handle) + out.offset);
  else if (out.dtype == DType::bf16) to_bf16(f32(in[0]), bf16(out), n);
  else to_f32(bf16(in[0]), f32(out), n);
}

float* scratch(int slot, int64_t floats) {
  // Grow-only, per thread and slot: a training step widens the same shapes every time, and fresh
  // allocations of this size would be mapped and faulted in on every call.
  struct Buffer {
    float* p = nullptr;
    size_t cap = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buffers[kScratchSlots];
  Buffer& b = buffers[slot];
  const auto n = static_cast<size_t>(std::max<int64_t>(floats, 1));
  if (n > b.cap) {
    std::free(b.p);
    b.cap = (n + 15) / 16 * 16;
    b.p = static_cast<float*>(std::aligned_alloc(64, b.cap * sizeof(float)));
    check(b.p != nullptr, "cpu backend: out of memory for ", n, " floats of bf16 scratch");
  }
  return b.p;
}

namespace {
// An f32 tensor over scratch slot `slot`, shaped like t.
Tensor scratch_tensor(const Tensor& t, int slot) {
  Tensor w;
  w.shape = t.shape;
  w.strides = contiguous_strides(t.shape);
  w.dtype = DType::f32;
  w.storage = std::make_shared<Storage>(&t.backend(), scratch(slot, t.numel()), static_cast<size_t>(t.numel()) * 4);
  return w;
}
}  // namespace

void run_widened(Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out) {
  check(in.size() < kScratchSlots, "cpu backend: op ", op_name(node.op), " has too many inputs for bf16 staging");
  std::vector<Tensor> ins(in.begin(), in.end());
  for (size_t i = 0; i < ins.size(); ++i)
    if (ins[i].dtype == DType::bf16) {
      Tensor w = scratch_tensor(ins[i], static_cast<int>(i) + 1);
      to_f32(bf16(ins[i]), f32(w), ins[i].numel());
      ins[i] = std::move(w);
    }
  Node n32 = node;
  if (n32.dtype == DType::bf16) n32.dtype = DType::f32;
  if (out.dtype != DType::bf16) return k(n32, ins, out);
  Tensor o = scratch_tensor(out, 0);
  k(n32, ins, o);
  to_bf16(f32(o), bf16(out), out.numel());
}

}  // namespace tandem::cpu
