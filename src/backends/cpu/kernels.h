// CPU kernels: one function per op, grouped in files named like the op definitions
// (ops/<family>.cpp <-> backends/cpu/<family>.cpp). Inputs and outputs are contiguous f32 (ids
// i32) host memory. Every kernel overwrites its whole output. Reductions use a fixed order
// independent of the thread count, so a run is bit-reproducible.
#pragma once
#include <span>

#include "core/graph.h"
#include "core/tensor.h"

namespace tandem::cpu {

inline float* f32(const Tensor& t) { return reinterpret_cast<float*>(static_cast<char*>(t.storage->handle) + t.offset); }
inline int32_t* i32(const Tensor& t) {
  return reinterpret_cast<int32_t*>(static_cast<char*>(t.storage->handle) + t.offset);
}

inline uint16_t* bf16(const Tensor& t) {
  return reinterpret_cast<uint16_t*>(static_cast<char*>(t.storage->handle) + t.offset);
}

using Kernel = void (*)(const Node&, std::span<const Tensor>, const Tensor&);

#define TANDEM_CPU_KERNEL(name) void name(const Node& node, std::span<const Tensor> in, const Tensor& out);
TANDEM_CPU_KERNEL(embedding)
TANDEM_CPU_KERNEL(embedding_grad)
TANDEM_CPU_KERNEL(matmul)
TANDEM_CPU_KERNEL(add)
TANDEM_CPU_KERNEL(mul)
TANDEM_CPU_KERNEL(scale)
TANDEM_CPU_KERNEL(sum_to)
TANDEM_CPU_KERNEL(sum)
TANDEM_CPU_KERNEL(broadcast)
TANDEM_CPU_KERNEL(layernorm)
TANDEM_CPU_KERNEL(layernorm_grad_x)
TANDEM_CPU_KERNEL(layernorm_grad_w)
TANDEM_CPU_KERNEL(rmsnorm)
TANDEM_CPU_KERNEL(rmsnorm_grad_x)
TANDEM_CPU_KERNEL(rmsnorm_grad_w)
TANDEM_CPU_KERNEL(gelu)
TANDEM_CPU_KERNEL(gelu_grad)
TANDEM_CPU_KERNEL(silu)
TANDEM_CPU_KERNEL(silu_grad)
TANDEM_CPU_KERNEL(softmax)
TANDEM_CPU_KERNEL(softmax_grad)
TANDEM_CPU_KERNEL(attention)
TANDEM_CPU_KERNEL(attention_grad)
TANDEM_CPU_KERNEL(attention_cached)
TANDEM_CPU_KERNEL(cross_entropy)
TANDEM_CPU_KERNEL(cross_entropy_grad)
TANDEM_CPU_KERNEL(token_nll)
TANDEM_CPU_KERNEL(token_nll_grad)
TANDEM_CPU_KERNEL(slice_last)
TANDEM_CPU_KERNEL(pad_last)
TANDEM_CPU_KERNEL(concat_last)
TANDEM_CPU_KERNEL(sigmoid)
TANDEM_CPU_KERNEL(sigmoid_grad)
TANDEM_CPU_KERNEL(swiglu)
TANDEM_CPU_KERNEL(swiglu_grad)
TANDEM_CPU_KERNEL(rope)
TANDEM_CPU_KERNEL(mla_qkv)
TANDEM_CPU_KERNEL(mla_qkv_grad)
TANDEM_CPU_KERNEL(attention_latent)
TANDEM_CPU_KERNEL(topk_route)
TANDEM_CPU_KERNEL(route_weights)
TANDEM_CPU_KERNEL(route_weights_grad)
TANDEM_CPU_KERNEL(moe_dispatch)
TANDEM_CPU_KERNEL(moe_dispatch_grad)
TANDEM_CPU_KERNEL(grouped_matmul)
TANDEM_CPU_KERNEL(grouped_matmul_grad_w)
TANDEM_CPU_KERNEL(moe_combine)
TANDEM_CPU_KERNEL(moe_combine_grad_y)
TANDEM_CPU_KERNEL(moe_combine_grad_w)
TANDEM_CPU_KERNEL(seq_balance_loss)
TANDEM_CPU_KERNEL(seq_balance_loss_grad)
TANDEM_CPU_KERNEL(ep_dispatch)
TANDEM_CPU_KERNEL(ep_combine)
TANDEM_CPU_KERNEL(ep_ids)
TANDEM_CPU_KERNEL(shift_tokens)
TANDEM_CPU_KERNEL(cast)
#undef TANDEM_CPU_KERNEL

// The one GEMM entry point of the CPU kernels (row-major, cblas conventions). Inside an OpenMP
// parallel region it runs on the calling thread only.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
// The grouped GEMMs of the MoE kernels, contracts as grouped_sgemm / grouped_sgemm_tn (gemm.h).
void grouped_gemm(bool trans_b, int64_t E, const int64_t* off, int64_t N, int64_t K, const float* A, int64_t lda,
                  const float* B, int64_t ldb, int64_t b_stride, float* C, int64_t ldc);
void grouped_gemm_tn(int64_t E, const int64_t* off, int64_t M, int64_t N, const float* A, int64_t lda, const float* B,
                     int64_t ldb, float* C);

// bf16 storage (bf16.cpp): conversions split across threads, and any f32 kernel run on bf16
// inputs / output (widened copies in, one rounding out).
void to_bf16(const float* src, uint16_t* dst, int64_t n);
void to_f32(const uint16_t* src, float* dst, int64_t n);
void run_widened(Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out);
// Ops with a q8_0 input (q8_0.cpp): matmul (the weight), embedding (the table), cast (dequantize).
void run_q8_0(const Node& node, std::span<const Tensor> in, const Tensor& out);
// Per-thread f32 scratch that bf16 staging reuses across calls (slot 0: the output, 1..: inputs;
// matmul's f32 result uses slot 0 too). Valid until the next call with the same slot.
constexpr int kScratchSlots = 8;
float* scratch(int slot, int64_t floats);

// Vectorised exp over a span (glibc's libmvec under AVX-512, scalar elsewhere).
void exp_inplace(float* x, int64_t n);

// Work below this many elements runs on one thread: forking costs more than it saves.
constexpr int64_t kParallelMin = 1 << 14;

}  // namespace tandem::cpu
