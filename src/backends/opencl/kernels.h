// OpenCL kernels: one OpenCL C source and one host launcher per op, grouped in files named like
// the op definitions and the CPU kernels (ops/<family>.cpp <-> backends/{cpu,opencl}/<family>.cpp).
// Inputs and outputs are contiguous f32 (ids i32). Every kernel overwrites its whole output.
#pragma once
#include <span>
#include <string>

#include "backends/opencl/opencl_backend.h"

namespace tandem::opencl {

using Kernel = void (*)(OpenClBackend&, const Node&, std::span<const Tensor>, const Tensor&);

// OpenCL C sources, concatenated into one program.
extern const char* const elementwise_src;
extern const char* const embedding_src;
extern const char* const matmul_src;
extern const char* const norm_src;
extern const char* const softmax_src;
extern const char* const attention_src;
extern const char* const cross_entropy_src;
extern const char* const optimizer_src;

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
#undef TANDEM_OCL_KERNEL

}  // namespace tandem::opencl
