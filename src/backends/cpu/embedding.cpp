#include <cstring>

#include "backends/cpu/kernels.h"

namespace tandem::cpu {

// Ids are validated when batches are loaded (data loader, generate); here they index directly.
// A bf16 table (serving with --weights bf16, GPT-2's tied wte) is read natively: only the gathered
// rows are touched (copied, or widened exactly to f32), never the whole table.
void embedding(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int32_t* ids = i32(in[0]);
  const int64_t n = in[0].numel(), C = in[1].shape[1];
  if (in[1].dtype == DType::bf16) {
    const uint16_t* table = bf16(in[1]);
    if (out.dtype == DType::bf16) {
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(bf16(out) + i * C, table + ids[i] * C, static_cast<size_t>(C) * sizeof(uint16_t));
    } else {
      for (int64_t i = 0; i < n; ++i) to_f32(table + ids[i] * C, f32(out) + i * C, C);
    }
    return;
  }
  const float* table = f32(in[1]);
  float* o = f32(out);
#pragma omp parallel for schedule(static) if (n * C > kParallelMin)
  for (int64_t i = 0; i < n; ++i) std::memcpy(o + i * C, table + ids[i] * C, static_cast<size_t>(C) * sizeof(float));
}

// Scatter-add without races or order dependence: threads own column blocks, rows go in order.
void embedding_grad(const Node&, std::span<const Tensor> in, const Tensor& out) {
  const int32_t* ids = i32(in[0]);
  const float* g = f32(in[1]);
  float* o = f32(out);
  const int64_t n = in[0].numel(), V = out.shape[0], C = out.shape[1];
  std::memset(o, 0, static_cast<size_t>(V * C) * sizeof(float));
  constexpr int64_t kBlock = 64;
#pragma omp parallel for schedule(static) if (n * C > kParallelMin)
  for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
    const int64_t c1 = std::min(C, c0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      float* row = o + ids[i] * C;
      const float* gr = g + i * C;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) row[c] += gr[c];
    }
  }
}

}  // namespace tandem::cpu
