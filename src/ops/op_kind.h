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
  X(cross_entropy) X(cross_entropy_grad)                                                    \
  X(token_nll) X(token_nll_grad)                      /* per-row NLL (weighted losses) */   \
  X(slice_last) X(pad_last) X(concat_last)            /* windows of the last dim */         \
  X(sigmoid) X(sigmoid_grad) X(swiglu) X(swiglu_grad)                                       \
  X(rope)                                             /* rotary embedding (self-adjoint) */ \
  X(mla_qkv) X(mla_qkv_grad)                          /* MLA heads -> attention's layout */ \
  X(attention_latent)                                 /* MLA decoding on a latent cache */  \
  X(topk_route) X(route_weights) X(route_weights_grad) /* DeepSeekMoE routing */            \
  X(moe_dispatch) X(moe_dispatch_grad)                /* token rows grouped by expert */    \
  X(grouped_matmul) X(grouped_matmul_grad_w)          /* one weight matrix per expert */    \
  X(moe_combine) X(moe_combine_grad_y) X(moe_combine_grad_w)                                \
  X(seq_balance_loss) X(seq_balance_loss_grad)        /* sequence-wise balance loss */      \
  X(shift_tokens)                                     /* labels for multi-token prediction */ \
  X(ep_dispatch) X(ep_combine) X(ep_ids)              /* expert parallelism: token exchange */ \
  X(cast)                                             /* f32 <-> bf16 (mixed precision) */

enum class OpKind : uint8_t {
#define TANDEM_ENUM(name) name,
  TANDEM_OPS(TANDEM_ENUM)
#undef TANDEM_ENUM
};

const char* op_name(OpKind op);

}  // namespace tandem
