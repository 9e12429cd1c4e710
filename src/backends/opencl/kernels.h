// OpenCL kernels: one OpenCL C source and one host launcher per op, grouped in files named like
// the op definitions and the CPU kernels (ops/<family>.cpp <-> backends/{cpu,opencl}/<family>.cpp);
// GEMMs go to CLBlast. Inputs and outputs are contiguous f32 (ids i32). Every kernel overwrites its
// whole output. bf16 nodes run these f32 kernels through run_widened (bf16.cpp); cast is the one
// kernel that sees bf16 itself.
#pragma once
#include <span>
#include <string>

#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

using Kernel = void (*)(OpenClBackend&, const Node&, std::span<const Tensor>, const Tensor&);

// OpenCL C sources, concatenated into one program.
extern const char* const elementwise_src;
extern const char* const embedding_src;
extern const char* const norm_src;
extern const char* const softmax_src;
extern const char* const attention_src;
extern const char* const cross_entropy_src;
extern const char* const optimizer_src;
extern const char* const slice_src;
extern const char* const rope_src;
extern const char* const mla_src;
extern const char* const moe_src;
extern const char* const bf16_src;

// The GEMM entry point (matmul.cpp, CLBlast on the backend's queue): row-major C = op(A) op(B),
// M x N, C's rows N apart, over `batch` matrices `sa`, `sb`, `sc` elements apart; *_extra are
// element offsets added to the tensors' own.
void gemm(OpenClBackend& be, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const Tensor& A, int64_t a_extra,
          int64_t lda, const Tensor& B, int64_t b_extra, int64_t ldb, const Tensor& C, int64_t c_extra, int64_t batch = 1,
          int64_t sa = 0, int64_t sb = 0, int64_t sc = 0);

// bf16 storage and q8_0 weights (bf16.cpp): runs the f32 kernel `k` on f32 copies of node's bf16
// and q8_0 inputs and rounds its f32 result into a bf16 output (RNE, core/dtype.h); f32 and i32
// tensors pass through as they are.
void run_widened(OpenClBackend& be, Kernel k, const Node& node, std::span<const Tensor> in, const Tensor& out);

#define TANDEM_OCL_KERNEL(name) void name(OpenClBackend& be, const Node& node, std::span<const Tensor> in, const Tensor& out);
TANDEM_OCL_KERNEL(embedding)
TANDEM_OCL_KERNEL(embedding_grad)
TANDEM_OCL_KERNEL(matmul)
TANDEM_OCL_KERNEL(add)
TANDEM_OCL_KERNEL(mul)
TANDEM_OCL_KERNEL(scale)
TANDEM_OCL_KERNEL(sum_to)
TANDEM_OCL_KERNEL(sum)
TANDEM_OCL_KERNEL(broadcast)
TANDEM_OCL_KERNEL(layernorm)
TANDEM_OCL_KERNEL(layernorm_grad_x)
TANDEM_OCL_KERNEL(layernorm_grad_w)
TANDEM_OCL_KERNEL(rmsnorm)
TANDEM_OCL_KERNEL(rmsnorm_grad_x)
TANDEM_OCL_KERNEL(rmsnorm_grad_w)
TANDEM_OCL_KERNEL(gelu)
TANDEM_OCL_KERNEL(gelu_grad)
TANDEM_OCL_KERNEL(silu)
TANDEM_OCL_KERNEL(silu_grad)
TANDEM_OCL_KERNEL(softmax)
TANDEM_OCL_KERNEL(softmax_grad)
TANDEM_OCL_KERNEL(attention)
TANDEM_OCL_KERNEL(attention_grad)
TANDEM_OCL_KERNEL(attention_cached)
TANDEM_OCL_KERNEL(cross_entropy)
TANDEM_OCL_KERNEL(cross_entropy_grad)
TANDEM_OCL_KERNEL(token_nll)
TANDEM_OCL_KERNEL(token_nll_grad)
TANDEM_OCL_KERNEL(slice_last)
TANDEM_OCL_KERNEL(pad_last)
TANDEM_OCL_KERNEL(concat_last)
TANDEM_OCL_KERNEL(sigmoid)
TANDEM_OCL_KERNEL(sigmoid_grad)
TANDEM_OCL_KERNEL(swiglu)
TANDEM_OCL_KERNEL(swiglu_grad)
TANDEM_OCL_KERNEL(rope)
TANDEM_OCL_KERNEL(mla_qkv)
TANDEM_OCL_KERNEL(mla_qkv_grad)
TANDEM_OCL_KERNEL(attention_latent)
TANDEM_OCL_KERNEL(topk_route)
TANDEM_OCL_KERNEL(route_weights)
TANDEM_OCL_KERNEL(route_weights_grad)
TANDEM_OCL_KERNEL(moe_dispatch)
TANDEM_OCL_KERNEL(moe_dispatch_grad)
TANDEM_OCL_KERNEL(grouped_matmul)
TANDEM_OCL_KERNEL(grouped_matmul_grad_w)
TANDEM_OCL_KERNEL(moe_combine)
TANDEM_OCL_KERNEL(moe_combine_grad_y)
TANDEM_OCL_KERNEL(moe_combine_grad_w)
TANDEM_OCL_KERNEL(seq_balance_loss)
TANDEM_OCL_KERNEL(seq_balance_loss_grad)
TANDEM_OCL_KERNEL(shift_tokens)
TANDEM_OCL_KERNEL(ep_dispatch)
TANDEM_OCL_KERNEL(ep_combine)
TANDEM_OCL_KERNEL(ep_ids)
TANDEM_OCL_KERNEL(cast)
#undef TANDEM_OCL_KERNEL

}  // namespace tandem::opencl
