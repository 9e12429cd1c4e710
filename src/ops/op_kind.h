// The op set. Each op has exactly one definition (ops/<family>.cpp): shape rule, float64
// reference and backward rule; backends implement kernels for it or say they do not.
// Ops named *_grad are the backward kernels that are ops themselves.
#pragma once
#include <cstdint>

namespace tandem {

#define TANDEM_OPS(X)                                                                       \
  X(input) X(param)                                   /* leaves: bound from outside */      \
  X(reshape)                                          /* view: same memory, new shape */    \
  X(embedding) X(embedding_grad)                      /* table[ids], scatter-add back */    \
  X(matmul)                                           /* 2-D or batched, transposed ops */  \
  X(add) X(mul) X(scale)                              /* element-wise, suffix broadcast */  \
  X(sum_to) X(sum) X(broadcast)                       /* reductions and their adjoint */    \
  X(layernorm) X(layernorm_grad_x) X(layernorm_grad_w)                                      \
  X(rmsnorm) X(rmsnorm_grad_x) X(rmsnorm_grad_w)                                            \
  X(gelu) X(gelu_grad) X(silu) X(silu_grad)                                                 \
  X(softmax) X(softmax_grad)                                                                \
  X(attention) X(attention_grad)                      /* fused causal attention */          \
  X(attention_cached)                                 /* decoding with a KV cache */        \
  X(cross_entropy) X(cross_entropy_grad)

enum class OpKind : uint8_t {
#define TANDEM_ENUM(name) name,
  TANDEM_OPS(TANDEM_ENUM)
#undef TANDEM_ENUM
};

const char* op_name(OpKind op);

}  // namespace tandem
