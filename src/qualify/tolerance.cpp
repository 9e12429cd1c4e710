#include "qualify/tolerance.h"

namespace tandem::qualify {

namespace {

enum class Klass { move, index, elementwise, transcendental, reduction, row, matmul };

Klass klass_of(OpKind op) {
  switch (op) {
    case OpKind::embedding: case OpKind::broadcast: case OpKind::reshape: case OpKind::slice_last: case OpKind::pad_last:
    case OpKind::concat_last: case OpKind::mla_qkv: case OpKind::moe_dispatch: case OpKind::ep_dispatch:
    case OpKind::ep_combine: return Klass::move;
    case OpKind::topk_route: case OpKind::shift_tokens: case OpKind::ep_ids: return Klass::index;
    case OpKind::add: case OpKind::mul: case OpKind::scale: case OpKind::moe_combine_grad_y: return Klass::elementwise;
    case OpKind::gelu: case OpKind::gelu_grad: case OpKind::silu: case OpKind::silu_grad: case OpKind::sigmoid:
    case OpKind::sigmoid_grad: case OpKind::swiglu: case OpKind::swiglu_grad: case OpKind::rope:
      return Klass::transcendental;
    case OpKind::sum: case OpKind::sum_to: case OpKind::embedding_grad: case OpKind::layernorm_grad_w:
    case OpKind::rmsnorm_grad_w: case OpKind::mla_qkv_grad: case OpKind::moe_dispatch_grad: case OpKind::moe_combine:
    case OpKind::seq_balance_loss:
      return Klass::reduction;
    case OpKind::matmul: case OpKind::attention: case OpKind::attention_grad: case OpKind::attention_cached:
    case OpKind::attention_latent: case OpKind::grouped_matmul: case OpKind::grouped_matmul_grad_w:
    case OpKind::moe_combine_grad_w:
      return Klass::matmul;
    default: return Klass::row;  // softmax, norms, cross-entropy, routing weights, the balance loss's gradient
  }
}

}  // namespace

Tolerance tolerance_for(OpKind op, DType dtype) {
  const Klass k = klass_of(op);
  if (k == Klass::move)
    return {0.0, "move",
            "values are only copied (rows, windows, heads, tokens grouped per expert): they must arrive bit-identical"};
  if (k == Klass::index)
    return {0.0, "index",
            "integer outputs (expert ids, shifted token ids): a different id is a different computation, never a "
            "rounding error"};
  if (dtype == DType::bf16) {
    // One bf16 rounding of the output is 2^-9 relative (NMSE ~ 1.3e-6 on average, 4e-6 worst);
    // operands are bf16 but accumulation is f32, so reductions add little on top.
    if (k == Klass::elementwise || k == Klass::transcendental)
      return {1e-5, "bf16 elementwise", "one bf16 rounding of the output: relative error <= 2^-9, NMSE <= 4e-6"};
    return {5e-5, "bf16 accumulating", "bf16 operands, f32 accumulation, bf16 output: output rounding dominates"};
  }
  switch (k) {
    case Klass::elementwise:
      return {1e-13, "elementwise", "one f32 rounding per element: relative error <= 2^-24, NMSE <= 3.6e-15"};
    case Klass::transcendental:
      return {1e-11, "transcendental",
              "f32 exp/tanh/cos/sin within a few ulp (OpenCL allows 4 ulp for exp), cancellation near gelu' = 0; RoPE "
              "angles formed in f32 as transformers does (position * inv_freq: ~1e-7 relative)"};
    case Klass::reduction:
      return {1e-10, "reduction", "f32 sums over up to thousands of random-sign terms in any order: error ~ sqrt(n) eps"};
    case Klass::row:
      return {1e-10, "row", "per-row f32 max/sum/mean then a normalisation: a few accumulated roundings per element"};
    case Klass::matmul:
      return {1e-9, "matmul-like",
              "f32 dot products of length K in a blocked order with FMA, then softmax for attention; cancellation "
              "on random-sign data"};
    case Klass::move: case Klass::index: break;
  }
  return {0.0, "move", ""};
}

}  // namespace tandem::qualify
